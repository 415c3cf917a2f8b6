"""XLSX outputs made from the input workbook itself, so every cell keeps its type and format.

A sheet is read as text (:mod:`sonar_bulk.sheets`), and that text is what is checked and sent.
An ``.xlsx`` output of a workbook input (results, failed rows, split files, the page's fixed
sheet) is not written from that text: it is the input workbook with its data worksheet
rewritten. Each of the user's cells is the workbook's own cell moved to its new place, so a
number stays a number with its number format (``0.00``, ``#,##0.00``, a percentage, a
currency), a date stays a date with its date format, a boolean a boolean, text text (leading
zeros and all), and the cell keeps its font, fill and border. The tool's ``sonar__`` columns
are added as new cells. Every other part of the workbook (its other worksheets with their
formulas, styles, merged cells and column widths, the shared strings, the styles, the theme)
is copied byte for byte.

The data worksheet is streamed (its XML is read and written a few MB at a time), so a
million-row sheet costs no more memory than a small one. What changes in it:

- rows are renumbered (the output's rows are consecutive under the header, a subset for a
  failed or split file) and columns follow the output's order;
- a formula cell keeps its cached value, typed, and loses its formula (a formula moved to
  another row would compute something else; and no output of this tool holds a formula it did
  not write); a formula never computed (no cached value: a workbook a program wrote) is kept
  as its text (``=HYPERLINK(...)``), a text cell. Nothing the tool writes becomes a formula:
  text is written as text;
- rows stay hidden only in files meant to be fed back in (split files, the fixed sheet);
- what refers to cell ranges of the data worksheet and would be wrong once rows move is left
  out: merged cells, conditional formats, data validations, hyperlinks, comments, tables
  and the AutoFilter. Column widths, hidden columns, frozen panes, page setup, drawings
  and protection are kept;
- the data worksheet becomes the first one and is renamed as the output says ("Results");
  formulas and names in the rest of the workbook that named it are renamed with it.

The workbook is used only when it is still the file that was read (same SHA-256); otherwise
the caller writes the text. ``.xls``, ``.xlsb`` and ``.ods`` workbooks can't be copied into an
``.xlsx``: their outputs get the cells' types from the workbook (:func:`typed_cells`), with a
date format for dates and the General format for numbers, and no other worksheets.
"""

from __future__ import annotations

import datetime as dt
import functools
import posixpath
import re
import zipfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sonar_bulk.sheets import Sheet

#: Workbook formats whose outputs are copies of the workbook.
COPIED_SUFFIXES = (".xlsx", ".xlsm")

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_WORKSHEET_TYPE = _REL_NS + "/worksheet"
_WORKSHEET_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_XLSX_MAIN_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
#: Relationship types of a workbook that go: the formula chain (Excel rebuilds it; the data
#: sheet's formulas are gone) and macros (an .xlsx holds none).
_DROPPED_BOOK_RELS = ("/calcChain", "/vbaProject")
#: The worksheet elements after ``sheetData`` that are kept (the rest name cell ranges).
_KEPT_TAIL = (
    "sheetCalcPr",
    "sheetProtection",
    "printOptions",
    "pageMargins",
    "pageSetup",
    "headerFooter",
    "drawing",
    "legacyDrawingHF",
    "picture",
)
_CHUNK = 1 << 22
_P = rb"(?:[A-Za-z_][\w.-]*:)?"  # an optional namespace prefix
_ROW = re.compile(rb"<" + _P + rb"row\b([^>]*?)(?:/>|>(.*?)</" + _P + rb"row>)", re.S)
_CELL = re.compile(rb"<" + _P + rb"c\b([^>]*?)(?:/>|>(.*?)</" + _P + rb"c>)", re.S)
_FORMULA = re.compile(rb"<" + _P + rb"f\b[^>]*?(?:/>|>.*?</" + _P + rb"f>)", re.S)
_FORMULA_TEXT = re.compile(rb">(.*?)</" + _P + rb"f>", re.S)
_VALUE = re.compile(rb"<(" + _P + rb")v\b[^>]*>(.*?)</" + _P + rb"v>", re.S)
_EMPTY = re.compile(rb"\s*(?:<" + _P + rb"v\s*/>|<" + _P + rb"v>\s*</" + _P + rb"v>)?\s*")
_ATTR = re.compile(rb"""([A-Za-z_][\w.:-]*)\s*=\s*("[^"]*"|'[^']*')""")
_REF = re.compile(rb"""(?:^|\s)r\s*=\s*["']([A-Za-z]*)(\d*)["']""")
_TYPE = re.compile(rb"""(?:^|\s)t\s*=\s*["']([^"']*)["']""")
_STYLE = re.compile(rb"""(?:^|\s)s\s*=\s*["']([^"']*)["']""")
_SHEET_DATA = re.compile(rb"<(" + _P + rb")sheetData\b[^>]*?(/?)>")
_SHEET_DATA_END = re.compile(rb"</" + _P + rb"sheetData>")
#: Characters XML 1.0 can't hold; Excel writes them as _xHHHH_.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|_(?=x[0-9A-Fa-f]{4}_)")


class NotCopyable(Exception):
    """The workbook can't be copied (parts this module can't follow); nothing was written and
    no row was taken, so the caller writes the sheet another way."""


@dataclass(frozen=True)
class WorkbookSource:
    """The workbook a sheet was read from: its path, the worksheet, the SHA-256 of the bytes
    read, and the cells (data row index, column) whose text replaced the workbook's (the web
    page's edits)."""

    path: Path
    sheet_name: str
    digest: str
    edited: frozenset[tuple[int, int]] = frozenset()


@dataclass(frozen=True)
class Typed:
    """Which cells of an output are the workbook's: output row ``k`` is the data row
    ``indexes[k]`` (all data rows, in order, when None), and its first ``len(columns)`` cells
    are the cells of the worksheet's ``columns`` (0-based, the header's width and beyond); the
    cells after them are the tool's. Added columns named in ``numbers`` hold numbers (their
    integer text is written as a number)."""

    source: WorkbookSource
    row_numbers: np.ndarray
    header_row: int
    indexes: np.ndarray | None
    columns: Sequence[int]
    numbers: frozenset[str] = field(default_factory=frozenset)

    def source_rows(self) -> np.ndarray:
        """The worksheet row (Excel's number) of each output row, in order."""
        if self.indexes is None:
            return self.row_numbers
        picked: np.ndarray = self.row_numbers[self.indexes]
        return picked

    def data_indexes(self) -> np.ndarray:
        if self.indexes is None:
            return np.arange(len(self.row_numbers), dtype=np.int64)
        return self.indexes


def typed_for(
    sheet: Sheet,
    indexes: np.ndarray | None,
    columns: Sequence[int],
    numbers: Collection[str] = (),
) -> Typed | None:
    """The :class:`Typed` of an output of ``sheet`` (None when it was not read from a
    workbook): its data rows ``indexes`` (all when None, else increasing) and its
    ``columns``."""
    if sheet.workbook is None:
        return None
    if indexes is not None:
        indexes = np.asarray(indexes, dtype=np.int64)
    return Typed(
        sheet.workbook,
        sheet.row_numbers,
        sheet.header_row,
        indexes,
        list(columns),
        frozenset(numbers),
    )


def usable(typed: Typed) -> bool:
    """Whether the source workbook is still the file that was read."""
    from sonar_bulk.owned import file_sha256

    try:
        return file_sha256(typed.source.path) == typed.source.digest
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Small helpers


@functools.lru_cache(maxsize=4096)
def column_index(letters: bytes) -> int:
    """0-based index of a column's letters (``A`` → 0, ``AA`` → 26)."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ch - 64
    return n - 1


@functools.lru_cache(maxsize=4096)
def column_letters(index: int) -> bytes:
    """Letters of a 0-based column index."""
    out = b""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        out = bytes([65 + rest]) + out
    return out


def xml_text(value: str) -> bytes:
    """``value`` escaped for XML element text, characters XML can't hold written as Excel
    does (``_x0001_``)."""
    value = _NOT_XML.sub(
        lambda m: "_x005F" if m.group() == "_" else f"_x{ord(m.group()):04X}_", value
    )
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode("utf-8")


def xml_attr(value: str) -> bytes:
    return xml_text(value).replace(b'"', b"&quot;")


def _attrs(tag: bytes) -> list[tuple[bytes, bytes]]:
    """A tag's attributes (qualified name, quoted value), in order."""
    return [(m.group(1), m.group(2)) for m in _ATTR.finditer(tag)]


def _local(name: bytes) -> bytes:
    return name.rsplit(b":", 1)[-1]


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        piece = stream.read(_CHUNK)
        if not piece:
            return
        yield piece


# ---------------------------------------------------------------------------------------------
# Cells


def _text_cell(prefix: bytes, ref: bytes, text: str, style: bytes | None) -> bytes:
    s = b' s="' + style + b'"' if style else b""
    c = prefix + b"c"
    return (
        b"<" + c + b' r="' + ref + b'"' + s + b' t="inlineStr"><' + prefix + b"is><" + prefix
        + b't xml:space="preserve">' + xml_text(text) + b"</" + prefix + b"t></" + prefix
        + b"is></" + c + b">"
    )  # fmt: skip


def _number_cell(prefix: bytes, ref: bytes, number: str, style: bytes | None) -> bytes:
    s = b' s="' + style + b'"' if style else b""
    c = prefix + b"c"
    return (
        b"<"
        + c
        + b' r="'
        + ref
        + b'"'
        + s
        + b"><"
        + prefix
        + b"v>"
        + number.encode("ascii")
        + b"</"
        + prefix
        + b"v></"
        + c
        + b">"
    )


_NUMBER = re.compile(r"-?(?:0|[1-9]\d{0,14})(?:\.\d{1,15})?")


def _new_cell(prefix: bytes, ref: bytes, value: Any, style: bytes | None, number: bool) -> bytes:
    """A cell the tool writes: a number for int/float values (and for integer text when
    ``number``), else text; b"" for an empty value."""
    if value is None or value == "":
        return b"<" + prefix + b'c r="' + ref + b'" s="' + style + b'"/>' if style else b""
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_cell(prefix, ref, repr(value), style)
    text = str(value)
    if number and _NUMBER.fullmatch(text):
        return _number_cell(prefix, ref, text, style)
    return _text_cell(prefix, ref, text, style)


def _copied_cell(prefix: bytes, attrs: bytes, inner: bytes | None, ref: bytes) -> bytes:
    """A workbook cell at its new reference: type and style kept, a formula dropped for its
    cached value (a string result becomes text)."""
    style = _STYLE.search(attrs)
    kind = _TYPE.search(attrs)
    t = kind.group(1) if kind else b"n"
    head = (
        b"<" + prefix + b'c r="' + ref + b'"' + (b' s="' + style.group(1) + b'"' if style else b"")
    )
    if inner and b"f" in inner and (formula := _FORMULA.search(inner)):
        inner = _FORMULA.sub(b"", inner)
        text = _FORMULA_TEXT.search(formula.group(0))
        if _VALUE.search(inner) is None and text is not None and text.group(1).strip():
            # never computed (a workbook written by a program, not saved by a spreadsheet):
            # no value to keep, so the formula as text (inert: a text cell), not a blank
            return (
                head + b' t="inlineStr"><' + prefix + b'is><' + prefix
                + b't xml:space="preserve">=' + text.group(1) + b"</" + prefix + b"t></"
                + prefix + b"is></" + prefix + b"c>"
            )  # fmt: skip
        if t == b"str":
            value = _VALUE.search(inner)
            if value is None:
                inner = b""
            else:
                return (
                    head + b' t="inlineStr"><' + prefix + b'is><' + prefix
                    + b't xml:space="preserve">' + value.group(2) + b"</" + prefix + b"t></"
                    + prefix + b"is></" + prefix + b"c>"
                )  # fmt: skip
    elif t == b"str":  # a formula's string without its formula: text
        value = _VALUE.search(inner or b"")
        if value is not None:
            return (
                head + b' t="inlineStr"><' + prefix + b'is><' + prefix
                + b't xml:space="preserve">' + value.group(2) + b"</" + prefix + b"t></"
                + prefix + b"is></" + prefix + b"c>"
            )  # fmt: skip
    if not inner or _EMPTY.fullmatch(inner):
        return head + b"/>" if style else b""
    if t != b"n":
        head += b' t="' + t + b'"'
    return head + b">" + inner + b"</" + prefix + b"c>"


def _edited_cell(
    prefix: bytes, attrs: bytes | None, ref: bytes, text: str
) -> bytes:  # the page's edit of a cell: a number where the cell was one, else text
    style = _STYLE.search(attrs) if attrs else None
    kind = _TYPE.search(attrs) if attrs else None
    was_number = attrs is not None and (kind is None or kind.group(1) == b"n")
    s = style.group(1) if style else None
    if was_number and _NUMBER.fullmatch(text.strip()):
        return _number_cell(prefix, ref, text.strip(), s)
    if not text:
        return b"<" + prefix + b'c r="' + ref + b'" s="' + s + b'"/>' if s else b""
    return _text_cell(prefix, ref, text, s)


def _row_cells(body: bytes | None) -> dict[int, tuple[bytes, bytes | None]]:
    """A row's cells by 0-based column: (attributes, inner XML)."""
    cells: dict[int, tuple[bytes, bytes | None]] = {}
    if not body:
        return cells
    at = -1
    for m in _CELL.finditer(body):
        attrs = m.group(1)
        ref = _REF.search(attrs)
        at = column_index(ref.group(1)) if ref and ref.group(1) else at + 1
        cells[at] = (attrs, m.group(2))
    return cells


_ROW_KEEP = frozenset(
    {b"ht", b"customHeight", b"s", b"customFormat", b"outlineLevel", b"thickBot", b"thickTop",
     b"dyDescent", b"hidden", b"collapsed"}
)  # fmt: skip


def _row_tag(prefix: bytes, number: int, attrs: bytes, keep_hidden: bool) -> bytes:
    kept = []
    for name, value in _attrs(attrs):
        local = _local(name)
        if local not in _ROW_KEEP:
            continue
        if not keep_hidden and local in (b"hidden", b"collapsed"):
            continue
        kept.append(b" " + name + b"=" + value)
    return b"<" + prefix + b'row r="' + str(number).encode() + b'"' + b"".join(kept) + b">"


# ---------------------------------------------------------------------------------------------
# The data worksheet


@dataclass
class _Plan:
    """What the data worksheet becomes."""

    typed: Typed
    headers: Sequence[str]
    rows: Iterator[Sequence[Any]]
    keep_hidden: bool
    width: int  # columns of the output (user's + the tool's)


def _write_data_sheet(src: IO[bytes], out: IO[bytes], plan: _Plan) -> set[bytes]:
    """Stream the data worksheet ``src`` into ``out`` as ``plan`` says; the relationship ids
    the written worksheet still names."""
    typed = plan.typed
    columns = list(typed.columns)
    edited = typed.source.edited
    wanted = typed.source_rows()
    indexes = typed.data_indexes()
    header_row = typed.header_row
    added_names = list(plan.headers[len(columns) :])
    numbers = [name in typed.numbers for name in added_names]
    buffer = b""
    pieces = _chunks(src)
    # -- everything before <sheetData>
    for piece in pieces:
        buffer += piece
        if _SHEET_DATA.search(buffer):
            break
    start = _SHEET_DATA.search(buffer)
    if start is None:
        raise ValueError("the worksheet has no sheetData")
    prefix = start.group(1)
    last_row = header_row + len(wanted)
    head = _rewrite_head(buffer[: start.start()], prefix, columns, plan.width, last_row)
    out.write(head)
    out.write(b"<" + prefix + b"sheetData>")
    buffer = b"" if start.group(2) else buffer[start.end() :]
    closed = bool(start.group(2))
    k = 0  # the next output data row
    header_style: bytes | None = None
    text_rows = plan.rows

    def emit_data(cells: dict[int, tuple[bytes, bytes | None]], row_attrs: bytes) -> None:
        nonlocal k
        number = header_row + 1 + k
        index = int(indexes[k])
        texts = next(text_rows)
        n = str(number).encode()
        parts = [_row_tag(prefix, number, row_attrs, plan.keep_hidden)]
        for j, c in enumerate(columns):
            ref = column_letters(j) + n
            cell = cells.get(c)
            if (index, c) in edited:
                parts.append(_edited_cell(prefix, cell[0] if cell else None, ref, str(texts[j])))
            elif cell is not None:
                parts.append(_copied_cell(prefix, cell[0], cell[1], ref))
        for a, value in enumerate(texts[len(columns) :]):
            j = len(columns) + a
            parts.append(_new_cell(prefix, column_letters(j) + n, value, None, numbers[a]))
        parts.append(b"</" + prefix + b"row>")
        out.write(b"".join(parts))
        k += 1

    def emit_row(number: int, attrs: bytes, body: bytes | None) -> None:
        nonlocal header_style
        if number < header_row:  # a title or notes above the header: as it was
            cells = _row_cells(body)
            n = str(number).encode()
            parts = [_row_tag(prefix, number, attrs, plan.keep_hidden)]
            for c in sorted(cells):
                parts.append(_copied_cell(prefix, *cells[c], column_letters(c) + n))
            parts.append(b"</" + prefix + b"row>")
            out.write(b"".join(parts))
            return
        if number == header_row:
            cells = _row_cells(body)
            n = str(number).encode()
            parts = [_row_tag(prefix, number, attrs, plan.keep_hidden)]
            for j, c in enumerate(columns):
                cell = cells.get(c)
                if cell is not None:
                    found = _STYLE.search(cell[0])
                    header_style = found.group(1) if found else header_style
                    parts.append(_copied_cell(prefix, cell[0], cell[1], column_letters(j) + n))
                elif j < len(plan.headers) and plan.headers[j]:
                    parts.append(
                        _new_cell(prefix, column_letters(j) + n, plan.headers[j], None, False)
                    )
            for a, name in enumerate(added_names):
                j = len(columns) + a
                parts.append(_new_cell(prefix, column_letters(j) + n, name, header_style, False))
            parts.append(b"</" + prefix + b"row>")
            out.write(b"".join(parts))
            return
        while k < len(wanted) and int(wanted[k]) < number:  # not in the XML: text only
            emit_data({}, b"")
        if k < len(wanted) and int(wanted[k]) == number:
            emit_data(_row_cells(body), attrs)

    counter = 0
    header_done = False
    while True:
        end = _SHEET_DATA_END.search(buffer) if not closed else None
        limit = end.start() if end else len(buffer)
        consumed = 0
        for m in _ROW.finditer(buffer, 0, limit):
            attrs = m.group(1)
            ref = _REF.search(attrs)
            counter = int(ref.group(2)) if ref and ref.group(2) else counter + 1
            if counter > header_row and not header_done:
                emit_row(header_row, b"", None)  # no header row in the XML (can't be)
            header_done = header_done or counter >= header_row
            emit_row(counter, attrs, m.group(2))
            consumed = m.end()
        if end is not None or closed:
            tail_start = end.end() if end else 0
            buffer = buffer[tail_start:]
            break
        buffer = buffer[consumed:]
        more = next(pieces, None)
        if more is None:
            raise ValueError("the worksheet ends inside sheetData")
        buffer += more
    while k < len(wanted):
        emit_data({}, b"")
    out.write(b"</" + prefix + b"sheetData>")
    tail = buffer + b"".join(pieces)
    kept_tail = _rewrite_tail(tail, prefix)
    out.write(kept_tail)
    return set(re.findall(rb"""\bid\s*=\s*["']([^"']+)["']""", head + kept_tail))


def _rewrite_head(head: bytes, prefix: bytes, columns: list[int], width: int, last: int) -> bytes:
    """The worksheet before ``sheetData``: its dimension, its columns' widths for the output's
    columns, its first view selected, no filter mode."""
    dimension = b"A1:" + column_letters(max(width, 1) - 1) + str(max(last, 1)).encode()
    head = re.sub(
        rb"<(" + _P + rb")dimension\b[^>]*/>",
        lambda m: b"<" + m.group(1) + b'dimension ref="' + dimension + b'"/>',
        head,
        count=1,
    )
    head = re.sub(
        rb"(<" + _P + rb"sheetPr\b[^>]*?)\s+filterMode\s*=\s*[\"'][^\"']*[\"']", rb"\1", head
    )
    head = re.sub(rb"\s+tabSelected\s*=\s*[\"'][^\"']*[\"']", b"", head)
    head = re.sub(rb"(<" + _P + rb"sheetView\b)", rb'\1 tabSelected="1"', head, count=1)
    specs: list[tuple[int, int, list[tuple[bytes, bytes]]]] = []
    cols = re.search(rb"<(" + _P + rb")cols\b[^>]*>(.*?)</" + _P + rb"cols>", head, re.S)
    if cols is not None:
        for m in re.finditer(rb"<" + _P + rb"col\b([^>]*?)/?>", cols.group(2)):
            attrs = _attrs(m.group(1))
            named = {_local(n): v.strip(b"\"'") for n, v in attrs}
            try:
                low, high = int(named.get(b"min", b"0")), int(named.get(b"max", b"0"))
            except ValueError:
                continue
            specs.append(
                (low - 1, high - 1, [(n, v) for n, v in attrs if _local(n) not in (b"min", b"max")])
            )
        lines = []
        for j, c in enumerate(columns):
            for low, high, rest in specs:
                if low <= c <= high:
                    bound = str(j + 1).encode()
                    lines.append(
                        b"<" + prefix + b'col min="' + bound + b'" max="' + bound + b'"'
                        + b"".join(b" " + n + b"=" + v for n, v in rest) + b"/>"
                    )  # fmt: skip
                    break
        new = (
            b"<" + prefix + b"cols>" + b"".join(lines) + b"</" + prefix + b"cols>" if lines else b""
        )
        head = head[: cols.start()] + new + head[cols.end() :]
    return head


def _rewrite_tail(tail: bytes, prefix: bytes) -> bytes:
    """The elements after ``sheetData`` that are kept, and the worksheet's end tag."""
    kept = []
    for name in _KEPT_TAIL:
        n = name.encode()
        m = re.search(rb"<" + _P + n + rb"\b[^>]*?(?:/>|>.*?</" + _P + n + rb">)", tail, re.S)
        if m is not None:
            kept.append(m.group())
    end = re.search(rb"</" + _P + rb"worksheet\s*>", tail)
    return b"".join(kept) + (end.group() if end else b"</" + prefix + b"worksheet>")


# ---------------------------------------------------------------------------------------------
# The workbook around it


def _read_rels(data: bytes) -> list[dict[str, str]]:
    import xml.etree.ElementTree as ET

    return [dict(rel.attrib) for rel in ET.fromstring(data)]


def _rels_xml(rels: Iterable[dict[str, str]]) -> bytes:
    lines = [
        b"<Relationship"
        + b"".join(b" " + k.encode() + b'="' + xml_attr(v) + b'"' for k, v in rel.items())
        + b"/>"
        for rel in rels
    ]
    return (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + b"".join(lines)
        + b"</Relationships>"
    )


def _rels_of(part: str) -> str:
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def _target(part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(part), target))


def _sheet_reference(name: str) -> str:
    """How a formula names sheet ``name`` (quoted when it must be)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) and not re.fullmatch(
        r"[A-Za-z]{1,3}\d+|R\d*C\d*", name, re.IGNORECASE
    ):
        return name
    return "'" + name.replace("'", "''") + "'"


def _renamer(old: str, new: str) -> re.Pattern[bytes] | None:
    """A pattern of the references to sheet ``old`` in formula text (as XML text)."""
    if old == new:
        return None
    quoted = re.escape(xml_text("'" + old.replace("'", "''") + "'!"))
    plain = re.escape(xml_text(old + "!"))
    return re.compile(rb"(?<![\w.'\]])(?:" + quoted + rb"|" + plain + rb")", re.IGNORECASE)


def _rename_formulas(data: bytes, pattern: re.Pattern[bytes] | None, new: str) -> bytes:
    if pattern is None:
        return data
    replacement = xml_text(_sheet_reference(new) + "!")

    def fix(m: re.Match[bytes]) -> bytes:
        return m.group(1) + pattern.sub(lambda _: replacement, m.group(2))

    # cell formulas, names, and the formulas of data validations and conditional formats
    element = rb"(?:f|definedName|formula|formula1|formula2)"
    return re.sub(rb"(<" + _P + element + rb"\b[^>]*>)([^<]*)", fix, data)


def _summary_sheet(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    lines = []
    for r, row in enumerate([list(headers), *(list(x) for x in rows)], start=1):
        n = str(r).encode()
        cells = b"".join(
            _new_cell(b"", column_letters(j) + n, v, None, False) for j, v in enumerate(row)
        )
        lines.append(b'<row r="' + n + b'">' + cells + b"</row>")
    return (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="'
        + _MAIN_NS.encode()
        + b'"><sheetData>'
        + b"".join(lines)
        + b"</sheetData></worksheet>"
    )


def _unique(name: str, taken: Collection[str]) -> str:
    folded = {t.casefold() for t in taken}
    if name.casefold() not in folded:
        return name
    for n in range(2, 1000):
        candidate = f"{name[:26]} ({n})"
        if candidate.casefold() not in folded:
            return candidate
    return name  # pragma: no cover - a thousand sheets of one name


def _first_row_is(path: Path, sheet: str, expected: Sequence[str]) -> bool:
    from python_calamine import CalamineWorkbook

    try:
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name(sheet).to_python(nrows=1)
    except Exception:  # noqa: BLE001 - unreadable: not one of ours
        return False
    return bool(rows) and [str(v) for v in rows[0]][: len(expected)] == list(expected)


def copy_workbook(
    out: Path,
    typed: Typed,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str,
    *,
    keep_hidden: bool,
    more_sheets: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]] = (),
) -> None:
    """Write ``out``: the source workbook with its data worksheet made of ``rows`` (each the
    output's text row: the workbook's cells first, then the tool's) under ``headers``, named
    ``title`` and first, and ``more_sheets`` (title, headers, rows) added at the end (an
    earlier sheet of that name whose first row is the same headers is replaced)."""
    import xml.etree.ElementTree as ET

    from sonar_bulk.sheets import _xlsx_sheet_part

    source = typed.source
    try:
        zin = zipfile.ZipFile(source.path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise NotCopyable(str(exc)) from exc
    with zin:
        try:
            names = zin.namelist()
            book_part = "xl/workbook.xml"
            for rel in _read_rels(zin.read("_rels/.rels")):
                if rel.get("Type", "").endswith("/officeDocument") and rel.get("Target"):
                    book_part = rel["Target"].lstrip("/")
            data_part = _xlsx_sheet_part(zin, source.sheet_name)
            book = zin.read(book_part)
            book_rels_part = _rels_of(book_part)
            book_rels = _read_rels(zin.read(book_rels_part))
            by_id = {rel["Id"]: rel for rel in book_rels}
            sheets_block = re.search(
                rb"<(" + _P + rb")sheets\b[^>]*>(.*?)</" + _P + rb"sheets>", book, re.S
            )
            if sheets_block is None:
                raise ValueError("the workbook lists no sheets")
            sheet_tags = [
                m.group()
                for m in re.finditer(rb"<" + _P + rb"sheet\b[^>]*?/?>", sheets_block.group(2))
            ]
            entries = []  # (tag, name, rel id, part)
            for tag in sheet_tags:
                attrs = {_local(n): v[1:-1] for n, v in _attrs(tag)}
                name = ET.fromstring(b"<a v=" + b'"' + attrs.get(b"name", b"") + b'"/>').get(
                    "v", ""
                )
                rid = attrs.get(b"id", b"").decode()
                found_rel = by_id.get(rid)
                part = _target(book_part, found_rel["Target"]) if found_rel else ""
                entries.append((tag, name, rid, part))
            data_at = next(i for i, e in enumerate(entries) if e[3] == data_part)
            others = [e for i, e in enumerate(entries) if i != data_at]
            # sheets this output adds replace an earlier one of theirs (a results file fed back)
            dropped: list[tuple[bytes, str, str, str]] = []
            added_titles: list[str] = []
            for more_title, more_headers, _ in more_sheets:
                same = [e for e in others if e[1].casefold() == more_title[:31].casefold()]
                if same and _first_row_is(source.path, same[0][1], more_headers):
                    dropped.append(same[0])
                    others.remove(same[0])
            taken = [e[1] for e in others]
            new_title = _unique(title[:31], taken)
            taken.append(new_title)
            for more_title, _, _ in more_sheets:
                added_titles.append(_unique(more_title[:31], taken))
                taken.append(added_titles[-1])
            old_order = [e[2] for e in entries]
            new_order = [entries[data_at], *others]
            renamer = _renamer(entries[data_at][1], new_title)

            # -- the workbook part
            p = sheets_block.group(1)
            id_attr = next((n for n, _ in _attrs(sheet_tags[0]) if _local(n) == b"id"), b"r:id")
            data_tag = entries[data_at][0]
            data_tag = re.sub(rb"\s+state\s*=\s*[\"'][^\"']*[\"']", b"", data_tag)
            data_tag = re.sub(
                rb"""(\sname\s*=\s*)(?:"[^"]*"|'[^']*')""",
                lambda m: m.group(1) + b'"' + xml_attr(new_title) + b'"',
                data_tag,
            )
            sheet_ids = [
                int(v[1:-1])
                for e in entries
                for n, v in _attrs(e[0])
                if _local(n) == b"sheetId" and v[1:-1].isdigit()
            ]
            next_id = max(sheet_ids, default=0) + 1
            rel_ids = {rel["Id"] for rel in book_rels}
            new_parts: list[tuple[str, str, bytes]] = []  # (part, rel id, content)
            added_tags = []
            for n, (_title, more_headers, more_rows) in enumerate(more_sheets):
                rid = "rIdSonarBulk" + str(n + 1)
                while rid in rel_ids:
                    rid += "x"
                part = f"xl/worksheets/sonar_bulk_{n + 1}.xml"
                while part in names:
                    part = part.replace(".xml", "x.xml")
                new_parts.append((part, rid, _summary_sheet(more_headers, more_rows)))
                added_tags.append(
                    b"<" + p + b'sheet name="' + xml_attr(added_titles[n]) + b'" sheetId="'
                    + str(next_id + n).encode() + b'" ' + id_attr + b'="' + rid.encode() + b'"/>'
                )  # fmt: skip
            tags = [data_tag, *(e[0] for e in others), *added_tags]
            book = book[: sheets_block.start(2)] + b"".join(tags) + book[sheets_block.end(2) :]
            book = re.sub(rb"\s+(?:activeTab|firstSheet)\s*=\s*[\"'][^\"']*[\"']", b"", book)
            remap = {old_order.index(e[2]): i for i, e in enumerate(new_order)}

            def local_id(m: re.Match[bytes]) -> bytes:
                tag = m.group(0)
                found = re.search(rb"""localSheetId\s*=\s*["'](\d+)["']""", tag)
                if found is None:
                    return tag
                new = remap.get(int(found.group(1)))
                if new is None:
                    return b""
                return tag[: found.start(1)] + str(new).encode() + tag[found.end(1) :]

            book = re.sub(
                rb"<" + _P + rb"definedName\b[^>]*?(?:/>|>.*?</" + _P + rb"definedName>)",
                local_id,
                book,
                flags=re.S,
            )
            book = _rename_formulas(book, renamer, new_title)

            # -- relationships and content types
            dropped_parts = {e[3] for e in dropped}
            kept_rels = []
            for rel in book_rels:
                kind = rel.get("Type", "")
                if kind.endswith(_DROPPED_BOOK_RELS) or rel["Id"] in {e[2] for e in dropped}:
                    if rel.get("TargetMode") != "External":
                        dropped_parts.add(_target(book_part, rel.get("Target", "")))
                    continue
                kept_rels.append(rel)
            for part, rid, _ in new_parts:
                kept_rels.append(
                    {
                        "Id": rid,
                        "Type": _WORKSHEET_TYPE,
                        "Target": posixpath.relpath(part, posixpath.dirname(book_part)),
                    }
                )
            data_rels_part = _rels_of(data_part)
            data_rels = _read_rels(zin.read(data_rels_part)) if data_rels_part in names else []
        except (KeyError, ValueError, StopIteration, IndexError, ET.ParseError) as exc:
            raise NotCopyable(str(exc) or type(exc).__name__) from exc

        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
            with zin.open(data_part) as src, zout.open(data_part, "w", force_zip64=True) as dst:
                plan = _Plan(typed, headers, iter(rows), keep_hidden, len(headers))
                named = _write_data_sheet(src, dst, plan)
            kept_data_rels = [r for r in data_rels if r.get("Id", "").encode() in named]
            for rel in data_rels:
                if rel not in kept_data_rels and rel.get("TargetMode") != "External":
                    gone = _target(data_part, rel.get("Target", ""))
                    if rel.get("Type", "").endswith(
                        ("/table", "/comments", "/vmlDrawing", "/threadedComment")
                    ):
                        dropped_parts.add(gone)
            dropped_parts |= {_rels_of(part) for part in dropped_parts}
            for name in names:
                if name in dropped_parts or name == data_part:
                    continue
                if name == book_part:
                    zout.writestr(name, book)
                elif name == book_rels_part:
                    zout.writestr(name, _rels_xml(kept_rels))
                elif name == data_rels_part:
                    if kept_data_rels:
                        zout.writestr(name, _rels_xml(kept_data_rels))
                elif name == "[Content_Types].xml":
                    zout.writestr(
                        name,
                        _content_types(
                            zin.read(name), book_part, dropped_parts, [p for p, _, _ in new_parts]
                        ),
                    )
                elif (
                    renamer is not None
                    and name.endswith(".xml")
                    and (name.startswith(("xl/worksheets/", "xl/charts/")))
                ):
                    with zin.open(name) as src, zout.open(name, "w", force_zip64=True) as dst:
                        _copy_renamed(
                            src, dst, renamer, new_title, unselect=name.startswith("xl/worksheets/")
                        )
                elif name.startswith("xl/worksheets/") and name.endswith(".xml"):
                    with zin.open(name) as src, zout.open(name, "w", force_zip64=True) as dst:
                        _copy_renamed(src, dst, None, new_title, unselect=True)
                else:
                    with zin.open(name) as src, zout.open(name, "w", force_zip64=True) as dst:
                        for piece in _chunks(src):
                            dst.write(piece)
            for part, _, content in new_parts:
                zout.writestr(part, content)


def _copy_renamed(
    src: IO[bytes], dst: IO[bytes], renamer: re.Pattern[bytes] | None, new: str, unselect: bool
) -> None:
    """Copy another part, its formulas naming the renamed data sheet by its new name, its
    sheet views not selected (one selected sheet: the data sheet)."""
    rest = b""
    first = True
    for piece in _chunks(src):
        buf = rest + piece
        cut = buf.rfind(b"<")
        if cut <= 0:
            rest = buf
            continue
        body, rest = buf[:cut], buf[cut:]
        if first and unselect:
            body = re.sub(rb"\s+tabSelected\s*=\s*[\"'][^\"']*[\"']", b"", body)
            first = b"sheetData" not in body
        dst.write(_rename_formulas(body, renamer, new))
    if unselect and first:
        rest = re.sub(rb"\s+tabSelected\s*=\s*[\"'][^\"']*[\"']", b"", rest)
    dst.write(_rename_formulas(rest, renamer, new))


def _content_types(data: bytes, book_part: str, dropped: set[str], added: list[str]) -> bytes:
    def keep(m: re.Match[bytes]) -> bytes:
        tag = m.group(0)
        part = re.search(rb"""PartName\s*=\s*["']/?([^"']+)["']""", tag)
        if part is None:
            return tag
        name = part.group(1).decode()
        if name in dropped:
            return b""
        if name == book_part:
            return re.sub(
                rb"""ContentType\s*=\s*["'][^"']*["']""",
                b'ContentType="' + _XLSX_MAIN_CT.encode() + b'"',
                tag,
            )
        return tag

    data = re.sub(rb"<(?:[A-Za-z_][\w.-]*:)?Override\b[^>]*?/>", keep, data)
    overrides = b"".join(
        b'<Override PartName="/'
        + part.encode()
        + b'" ContentType="'
        + _WORKSHEET_CT.encode()
        + b'"/>'
        for part in added
    )
    return re.sub(
        rb"(</(?:[A-Za-z_][\w.-]*:)?Types\s*>)",
        overrides.replace(b"\\", b"\\\\") + rb"\1",
        data,
        count=1,
    )


# ---------------------------------------------------------------------------------------------
# Workbooks that can't be copied (.xls, .xlsb, .ods)


def typed_cells(typed: Typed) -> Iterator[list[Any]]:
    """The workbook's own values of ``typed``'s cells, output row by output row (float, int,
    bool, date, datetime, time or str; None when empty; a web page edit as its text)."""
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(typed.source.path))
    grid = book.get_sheet_by_name(typed.source.sheet_name).to_python(skip_empty_area=False)
    edited = typed.source.edited
    for index, number in zip(
        typed.data_indexes().tolist(), typed.source_rows().tolist(), strict=True
    ):
        line = grid[number - 1] if number - 1 < len(grid) else []
        out: list[Any] = []
        for c in typed.columns:
            value = line[c] if c < len(line) else None
            out.append(None if (index, c) in edited else (value if value != "" else None))
        yield out


def is_date_value(value: Any) -> bool:
    return isinstance(value, dt.date | dt.time)
