"""Read CSV and Excel sheets into columns of text, keeping Excel's row numbers.

This is the only module that parses input files. Every cell comes out as text: a phone number
never becomes a float, never loses its ``+`` or its leading zeros. Row numbers are the ones a
person sees when the file is opened in Excel (the header is row 1), also when a quoted CSV
field spans several lines.

CSV is parsed by pyarrow's multithreaded reader when the file is regular (the common case) and
by Python's :mod:`csv` module otherwise (blank lines, ragged rows); both give the same result.

Workbooks are read with python-calamine, which does not say which rows are hidden; for .xlsx,
.xlsm and .ods that is read from the worksheet's XML in the zip (:func:`hidden_row_ranges`).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import html
import io
import math
import posixpath
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sonar_bulk.errors import InputError
from sonar_bulk.workbook import WorkbookSource

#: Excel's own limit on the characters in one cell; a longer cell is not a spreadsheet value.
MAX_CELL_CHARS = 32_767

DELIMITED_SUFFIXES = (".csv", ".tsv", ".txt")
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods")
#: Workbook formats stored as zip archives (all but the old binary .xls).
ZIP_WORKBOOK_SUFFIXES = tuple(s for s in WORKBOOK_SUFFIXES if s != ".xls")
DELIMITERS = (",", ";", "\t", "|")


@dataclass
class Sheet:
    """A sheet read as text.

    ``data`` has one string column per header, in header order (headers may repeat or be
    blank, so columns are addressed by position), one row per non-empty data row.
    ``row_numbers[i]`` is the Excel row of ``data``'s row ``i``.
    """

    path: Path
    headers: list[str]
    data: pa.Table
    row_numbers: np.ndarray
    header_row: int = 1
    empty_rows: int = 0
    format: str = "csv"
    sheet_name: str | None = None
    #: The codec the text was read with (never one that adds or strips a BOM itself), whether
    #: the file began with a byte-order mark, and its line ending: split files are written back
    #: in the same shape.
    encoding: str | None = None
    bom: bool = False
    newline: str = "\r\n"
    delimiter: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: Per column position: which rows held a number cell in the workbook (xlsx only).
    numeric: dict[int, np.ndarray] = field(default_factory=dict)
    #: The header cells exactly as typed (``headers`` is them stripped), and the rows above the
    #: header (a title, notes), so split files can be written back in the same shape.
    header_cells: list[str] = field(default_factory=list)
    preamble: list[list[str]] = field(default_factory=list)
    #: (row number, column index, lines) of quoted CSV cells holding lines shaped like whole
    #: rows: most likely rows swallowed by a stray quote.
    swallowed: list[tuple[int, int, int]] = field(default_factory=list)
    #: Formula cells of a workbook with no computed value (a workbook a program wrote and
    #: Excel never opened): ``(Excel row, column index, the formula)``. Read, they are blank.
    uncomputed: list[tuple[int, int, str]] = field(default_factory=list)
    #: (row number, values) of rows with more cells than headers: the cells beyond the last
    #: header, in place (blanks between them kept, trailing blanks dropped).
    extra_cells: list[tuple[int, list[str]]] = field(default_factory=list)
    #: Per data row: hidden in the workbook (by hand, by an AutoFilter or in a collapsed
    #: outline group). None when the format carries no such thing (CSV) or it is not read
    #: (.xls, .xlsb).
    hidden: np.ndarray | None = None
    #: The workbook the cells were read from (None for CSV): .xlsx outputs copy its cells, with
    #: their types and formats (:mod:`sonar_bulk.workbook`).
    workbook: WorkbookSource | None = None

    @property
    def hidden_rows(self) -> int:
        """How many data rows are hidden in the workbook."""
        return 0 if self.hidden is None else int(self.hidden.sum())

    def __len__(self) -> int:
        return int(self.data.num_rows)

    def column(self, index: int) -> pa.Array:
        """The text cells of the column at ``index`` (one contiguous Arrow array)."""
        col = self.data.column(index)
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)

    def iter_rows(
        self, mask: np.ndarray | None = None, chunk: int = 20_000
    ) -> Iterator[tuple[str, ...]]:
        """Data rows (those where ``mask`` is true) as tuples of cell texts, a chunk at a time."""
        table = self.data if mask is None else self.data.filter(pa.array(mask))
        for batch in table.to_batches(max_chunksize=chunk):
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            yield from zip(*cols, strict=True)


def read_sheet(
    path: str | Path,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    header_row: int | None = None,
) -> Sheet:
    """Read a CSV or workbook file as text cells.

    The header is the first non-empty row, or row ``header_row`` (as Excel numbers it) when
    given; rows above it are not data.

    Raises InputError with a one-line message naming the file when it is missing, a directory,
    empty, binary, corrupt, encrypted, of an unsupported type, has no data rows, or holds a cell
    longer than Excel's limit.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a sheet")
    suffix = p.suffix.lower()
    if suffix not in DELIMITED_SUFFIXES + WORKBOOK_SUFFIXES:
        raise InputError(
            f"{p}: unsupported file type {suffix or '(none)'!r}; use .csv, .tsv or .xlsx"
        )
    raw = _read_capped(p)
    if not raw[:65536].strip() and not raw.strip():
        raise InputError(f"{p}: the file is empty")
    if header_row is not None and header_row < 1:
        raise InputError(f"--header-row must be 1 or more, got {header_row}")
    if suffix in WORKBOOK_SUFFIXES:
        result = _read_workbook(p, raw, sheet, header_row)
    else:
        if sheet is not None:
            raise InputError(f"{p}: --sheet applies to workbooks, not to {suffix} files")
        result = _read_delimited(p, raw, encoding, delimiter, header_row)
    if result.format == "csv":
        _restore_neutralized(result)
    _check_cell_sizes(result)
    if result.format == "csv":
        _find_swallowed_rows(result)
    _drop_empty_rows(result)
    if len(result) == 0:
        raise InputError(f"{p}: has a header row but no data rows")
    return result


#: A cell :func:`sonar_bulk.outputs.neutralize` may have quoted.
_QUOTED = r"^'+[=+\-@\t\r]"


def _restore_neutralized(sheet: Sheet) -> None:
    """A CSV sonar-bulk wrote to be fed back in (results, failed rows, split files, a
    customers backup: it has a ``sonar__row`` column) had its formula-like cells quoted
    against formula injection; read back, each is the cell as typed again."""
    from sonar_bulk.outputs import restore

    if not any(h.strip().casefold() == "sonar__row" for h in sheet.headers):
        return
    columns = []
    for index in range(sheet.data.num_columns):
        column = sheet.column(index)
        if pc.any(pc.match_substring_regex(column, _QUOTED)).as_py():
            values = [restore(v) if isinstance(v, str) else v for v in column.to_pylist()]
            column = pa.array(values, type=column.type)
        columns.append(column)
    sheet.data = pa.Table.from_arrays(columns, names=sheet.data.column_names)
    sheet.header_cells = [restore(h) for h in sheet.header_cells]
    sheet.headers = [restore(h) for h in sheet.headers]
    sheet.preamble = [[restore(v) for v in line] for line in sheet.preamble]
    sheet.extra_cells = [(row, [restore(v) for v in cells]) for row, cells in sheet.extra_cells]


#: The largest input read (bytes): a million-row sheet is a few hundred MB; a file larger
#: than this, or one that never ends (a link to /dev/zero), is refused with its size rather
#: than read into memory. ``SONAR_BULK_MAX_INPUT_MB`` changes it.
MAX_INPUT_BYTES = 2 << 30


def _read_capped(p: Path) -> bytes:
    """The file's bytes, at most :data:`MAX_INPUT_BYTES` (InputError beyond, or for a device)."""
    import os
    import stat

    cap = MAX_INPUT_BYTES
    given = os.environ.get("SONAR_BULK_MAX_INPUT_MB", "").strip()
    if given:
        try:
            megabytes = float(given)
            if not 0 < megabytes < 1 << 30:
                raise ValueError
        except ValueError:
            raise InputError(
                f"SONAR_BULK_MAX_INPUT_MB={given!r}: expected a number of MiB, such as 4096"
            ) from None
        cap = int(megabytes * (1 << 20))

    def size(n: float) -> str:
        return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n:,.0f} bytes"

    try:
        with p.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                raise InputError(f"{p}: is a device, not a sheet")
            if stat.S_ISREG(st.st_mode) and st.st_size > cap:
                raise InputError(
                    f"{p}: {size(st.st_size)}, more than the {size(cap)} sonar-bulk reads "
                    "(split the sheet, or set SONAR_BULK_MAX_INPUT_MB)"
                )
            # in pieces: the whole cap is never set aside at once (a small file, a small
            # memory limit)
            pieces: list[bytes] = []
            got = 0
            while got <= cap:
                piece = fh.read(min(1 << 24, cap + 1 - got))
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            raw = b"".join(pieces)
            del pieces
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > cap:
        raise InputError(
            f"{p}: more than {size(cap)} and still going (a pipe or a file that never ends?); "
            "sonar-bulk reads at most that"
        )
    return raw


# ---------------------------------------------------------------------------------------------
# CSV


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _plain_codec(encoding: str, raw: bytes) -> tuple[str, bool]:
    """(codec that neither adds nor strips a BOM, whether ``raw`` starts with a BOM).

    ``utf-8-sig`` becomes ``utf-8`` and ``utf-16`` the byte order its BOM names, so that
    writing with the codec plus a BOM when the input had one gives back the input's bytes.
    """
    name = codecs.lookup(encoding).name
    for bom, codec in _BOMS:
        if raw.startswith(bom) and codec.startswith(name.removesuffix("-sig")):
            return codec, True
    base = {"utf-8-sig": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}
    return base.get(name, name), False


def utf16_without_bom(raw: bytes) -> str | None:
    """``utf-16-le``/``utf-16-be`` when ``raw`` looks like UTF-16 text without a BOM (every
    other byte NUL, as Latin text is), else None."""
    sample = raw[:8192]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) >= 0.8 * len(odd) and even.count(0) <= 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) >= 0.8 * len(even) and odd.count(0) <= 0.1 * len(odd):
        return "utf-16-be"
    return None


def _not_binary(p: Path, raw: bytes) -> None:
    """InputError for a file with NUL bytes near its start (a hint for BOM-less UTF-16)."""
    if b"\x00" not in raw[:8192]:
        return
    guess = utf16_without_bom(raw)
    if guess is not None:
        raise InputError(f"{p}: looks like UTF-16 without a BOM; pass --encoding {guess}")
    raise InputError(f"{p}: looks like a binary file, not CSV text")


def _decode(p: Path, raw: bytes, encoding: str | None) -> tuple[str, str, bool, list[str]]:
    """Bytes → (text, codec used without BOM handling, had a BOM, warnings)."""
    if encoding is not None:
        try:
            info = codecs.lookup(encoding)
        except LookupError as exc:
            raise InputError(f"{p}: unknown encoding {encoding!r}") from exc
        if not getattr(info, "_is_text_encoding", True):
            raise InputError(f"{p}: {encoding!r} is not a text encoding; try utf-8 or cp1252")
        try:
            text = raw.decode(encoding)
        except UnicodeError as exc:
            if not isinstance(exc, UnicodeDecodeError):
                raise InputError(f"{p}: cannot be read as {encoding}: {exc}") from exc
            raise InputError(
                f"{p}: cannot be read as {encoding}: byte {exc.start:,} is not valid"
            ) from exc
        codec, bom = _plain_codec(encoding, raw)
        if raw.startswith(codecs.BOM_UTF8) and not bom:
            # a UTF-8 BOM read through a one-byte codec ("ï»¿"): it is not part of the header
            text = raw[3:].decode(encoding)
        return text.removeprefix("\ufeff"), codec, bom or text.startswith("\ufeff"), []
    if raw.startswith(codecs.BOM_UTF8):
        enc = "utf-8-sig"
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        enc = "utf-16"
    else:
        enc = "utf-8"
    if enc == "utf-8":
        _not_binary(p, raw)
    try:
        text = raw.decode(enc).removeprefix("\ufeff")
        codec, bom = _plain_codec(enc, raw)
        return text, codec, bom, []
    except UnicodeDecodeError as exc:
        if enc not in ("utf-8", "utf-8-sig"):
            raise InputError(f"{p}: is not valid {enc} text (byte {exc.start:,})") from exc
        first_bad = exc.start
    bom = raw.startswith(codecs.BOM_UTF8)  # a UTF-8 BOM on Windows-1252 text happens too
    try:
        text = raw[3 if bom else 0 :].decode("cp1252")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{p}: is not UTF-8, UTF-16 or Windows-1252 text (looks binary); "
            "give the encoding with --encoding"
        ) from exc
    if "\x00" in text[:8192]:
        raise InputError(f"{p}: looks like a binary file, not CSV text")
    line = raw.count(b"\n", 0, first_bad) + 1
    warning = (
        f"{p}: not valid UTF-8 (first bad byte on line {line}); read as Windows-1252 (cp1252). "
        "If accents look wrong, pass --encoding"
    )
    return text, "cp1252", False, [warning]  # the stray BOM is not written back


def sniff_delimiter(sample: str) -> str:
    """Pick the delimiter among , ; tab | that splits the first records most consistently."""
    best: tuple[float, int, int] = (-1.0, 0, 0)
    choice = ","
    for rank, cand in enumerate(DELIMITERS):
        try:
            rows = list(_take(csv.reader(io.StringIO(sample, newline=""), delimiter=cand), 50))
        except csv.Error:
            continue
        counts = [len(r) for r in rows if r]
        if len(counts) > 1 and not sample.endswith(("\n", "\r")):
            counts = counts[:-1]  # the sample may have cut the last record short
        if not counts or max(counts) < 2:
            continue
        mode = max(set(counts), key=counts.count)
        consistency = counts.count(mode) / len(counts)
        score = (consistency, mode, -rank)
        if score > best:
            best, choice = score, cand
    return choice


def _take(it: Iterator[list[str]], n: int) -> list[list[str]]:
    out = []
    for i, row in enumerate(it):
        if i >= n:
            break
        out.append(row)
    return out


def _read_delimited(
    p: Path, raw: bytes, encoding: str | None, delimiter: str | None, header_row: int | None
) -> Sheet:
    if delimiter is not None:
        delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise InputError(f"--delimiter must be one character, got {delimiter!r}")
    sep = _SEP_LINE.match(raw[:16])
    if sep is not None:
        # Excel's "sep=;" first line names the delimiter; the header is the line below it
        delimiter = delimiter or sep.group(1).decode("ascii")
        header_row = header_row or 2
    sheet: Sheet | None = None
    fast = header_row is None or header_row == 1
    if fast and encoding is None and not raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Fast path: Arrow checks UTF-8 itself, so the text is decoded in Python only when
        # the file is not plain UTF-8 or needs the exact reader.
        _not_binary(p, raw)
        body = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        delim = delimiter or sniff_delimiter(body[:65536].decode("utf-8", "ignore"))
        sheet = _read_csv_arrow(p, body, delim)
        if sheet is not None:
            sheet.encoding, sheet.bom = "utf-8", body is not raw
            sheet.delimiter, sheet.newline = delim, _line_ending(body[:65536].decode("latin-1"))
            return sheet
    text, used, bom, warnings = _decode(p, raw, encoding)
    delim = delimiter or sniff_delimiter(text[:65536])
    if fast and used not in ("utf-8", "utf-8-sig"):
        sheet = _read_csv_arrow(p, text.encode("utf-8"), delim)
    if sheet is None:
        sheet = _read_csv_python(p, text, delim, header_row)
    sheet.encoding, sheet.bom = used, bom
    sheet.delimiter, sheet.newline = delim, _line_ending(text[:65536])
    sheet.warnings.extend(warnings)
    return sheet


_SEP_LINE = re.compile(rb"^(?:\xef\xbb\xbf)?sep=([,;\t|])\r?\n", re.IGNORECASE)


def _line_ending(sample: str) -> str:
    """The line ending most lines of ``sample`` end with: CRLF, LF or a bare CR."""
    crlf = sample.count("\r\n")
    lf, cr = sample.count("\n") - crlf, sample.count("\r") - crlf
    best = max((crlf, "\r\n"), (lf, "\n"), (cr, "\r"))
    return best[1] if best[0] else "\r\n"


def _check_quotes_closed(p: Path, text: str, delim: str) -> None:
    """InputError when a quoted value is still open at the end of the file: it would swallow
    every line after its opening quote into one cell (and those rows would never be seen)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, strict=True)
    records = 0
    try:
        for _ in reader:
            records += 1
    except csv.Error as exc:
        if "unexpected end of data" not in str(exc):
            return  # other malformations are read leniently, as Excel does
        raise InputError(
            f'{p}: row {records + 1}: a quoted value is never closed (a " with no closing "), '
            "so it would swallow every line after it; close the quote or remove it"
        ) from exc


def _read_csv_arrow(p: Path, body: bytes, delim: str) -> Sheet | None:
    """Fast path; None when the file needs the exact Python reader (blank or ragged rows)."""
    try:
        header = next(
            csv.reader(
                io.StringIO(body[:1_048_576].decode("utf-8", "ignore"), newline=""), delimiter=delim
            )
        )
    except (StopIteration, csv.Error):
        return None
    n = len(header)
    if n == 0 or not any(h.strip() for h in header):
        return None  # a blank first line: the exact reader finds the header below it
    names = [f"c{i}" for i in range(n)]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=pacsv.ParseOptions(
                delimiter=delim, newlines_in_values=True, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.large_string() for c in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException):
        return None
    if table.num_rows == 0:
        return None
    table = table.slice(1)
    rows = np.arange(2, table.num_rows + 2, dtype=np.int64)
    if b'"' in body and body.count(b'"') % 2:
        _check_quotes_closed(p, body.decode("utf-8", "replace"), delim)
    return Sheet(
        p, [h.strip() for h in header], table, rows, format="csv", header_cells=list(header)
    )


def _read_csv_python(p: Path, text: str, delim: str, header_row: int | None = None) -> Sheet:
    """Exact reader: one record is one Excel row, blank lines included, ragged rows padded."""
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    header: list[str] | None = None
    found_at = 1
    records: list[list[str]] = []
    numbers: list[int] = []
    extra: list[tuple[int, list[str]]] = []
    preamble: list[list[str]] = []
    try:
        for rownum, record in enumerate(reader, start=1):
            if header is None:
                if not _is_header(p, rownum, [c.strip() for c in record], header_row):
                    preamble.append(record)
                    continue
                header, found_at = record, rownum
                continue
            n = len(header)
            if len(record) > n:
                spill = _trim_spill(record[n:])
                if spill:
                    extra.append((rownum, spill))
                record = record[:n]
            elif len(record) < n:
                record = record + [""] * (n - len(record))
            records.append(record)
            numbers.append(rownum)
    except csv.Error as exc:
        raise InputError(f"{p}: row {reader.line_num}: malformed CSV: {exc}") from exc
    if text.count('"') % 2:  # an even count can't leave a quote open
        _check_quotes_closed(p, text, delim)
    if header is None:
        raise InputError(
            f"{p}: the file has no header row"
            + (f" (it has fewer than {header_row} rows)" if header_row else "")
        )
    sheet = Sheet(
        p,
        [h.strip() for h in header],
        _table(records, len(header)),
        np.asarray(numbers, dtype=np.int64),
        header_row=found_at,
        format="csv",
        extra_cells=extra,
        header_cells=list(header),
        preamble=preamble,
    )
    return sheet


# ---------------------------------------------------------------------------------------------
# Workbooks


def excel_number_text(value: float) -> str:
    """Text of a number cell as a person expects it: no ``.0``, no scientific notation.

    >>> excel_number_text(13105550101.0), excel_number_text(3.5), excel_number_text(1e20)
    ('13105550101', '3.5', '100000000000000000000')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    # Excel keeps 15 significant digits: 0.1+0.2 shows as 0.3, not 0.30000000000000004
    text = format(Decimal(format(value, ".15g")), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _cell_text(value: object) -> tuple[str, bool]:
    """(text, was_a_number_cell) for one workbook cell."""
    if isinstance(value, str):
        return value, False
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, int | float):
        return excel_number_text(value), True
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds"), False
    if isinstance(value, dt.date):
        return value.isoformat(), False
    if isinstance(value, dt.time):
        return value.isoformat(timespec="seconds"), False
    if isinstance(value, dt.timedelta):
        return str(value), False
    if value is None:
        return "", False
    return str(value), False


def _workbook_problem(p: Path, raw: bytes) -> str | None:
    if raw.startswith(b"\xd0\xcf\x11\xe0"):
        if "EncryptedPackage".encode("utf-16-le") in raw or b"EncryptedPackage" in raw:
            return "is password-protected (encrypted); remove the password in Excel and save again"
        if p.suffix.lower() != ".xls":
            return "is an old-style Excel (.xls) file with the wrong extension; save it as .xlsx"
        return None
    if p.suffix.lower() in ZIP_WORKBOOK_SUFFIXES and not zipfile.is_zipfile(io.BytesIO(raw)):
        head = raw[:2048]
        if b"\x00" not in head and head.decode("utf-8", "ignore").count(",") > 0:
            return "is not a workbook (it looks like CSV text); rename it to .csv"
        return "is not a valid workbook (corrupt, or not an Excel file)"
    return None


def _read_workbook(
    p: Path, raw: bytes, sheet_name: str | None, header_row: int | None = None
) -> Sheet:
    from python_calamine import CalamineWorkbook, SheetVisibleEnum

    problem = _workbook_problem(p, raw)
    if problem is not None:
        raise InputError(f"{p}: {problem}")
    try:
        wb = CalamineWorkbook.from_filelike(io.BytesIO(raw))
    except Exception as exc:  # calamine raises its own error types for every kind of damage
        raise InputError(f"{p}: cannot read workbook: {_short(exc)}") from exc
    meta = wb.sheets_metadata
    if sheet_name is None:
        visible = [m.name for m in meta if m.visible == SheetVisibleEnum.Visible]
        if not visible:
            raise InputError(f"{p}: the workbook has no visible sheet")
        sheet_name = visible[0]
    elif sheet_name not in wb.sheet_names:
        folded = [
            n for n in wb.sheet_names if n.strip().casefold() == sheet_name.strip().casefold()
        ]
        if len(folded) != 1:
            names = ", ".join(repr(n) for n in wb.sheet_names)
            raise InputError(f"{p}: no sheet named {sheet_name!r} (sheets: {names})")
        sheet_name = folded[0]
    # before calamine lays the sheet out: a stray cell far away (XFD1048576) or a reference
    # beyond any sheet would make it ask for more memory than there is (an abort, no error)
    formulas: dict[tuple[int, int], str] = {}
    ranges = hidden_row_ranges(p, raw, sheet_name, formulas)
    try:
        rows = wb.get_sheet_by_name(sheet_name).to_python(skip_empty_area=False)
    except Exception as exc:
        raise InputError(f"{p}: cannot read sheet {sheet_name!r}: {_short(exc)}") from exc
    header: list[str] | None = None
    found_at = 0
    preamble: list[list[str]] = []
    for rownum, row in enumerate(rows, start=1):
        cells = [_cell_text(v)[0].strip() for v in row]
        if _is_header(p, rownum, cells, header_row):
            header = [_cell_text(v)[0] for v in row]
            found_at = rownum
            break
        preamble.append(_trim_spill([_cell_text(v)[0] for v in row]))
    if header is None:
        raise InputError(f"{p}: sheet {sheet_name!r} is empty")
    while header and not header[-1].strip():
        header.pop()
    width = len(header)
    body = rows[found_at:]
    # Column by column: calamine gives equal-length rows, so zip() transposes at C speed and
    # most cells are already str.
    columns = list(zip(*body, strict=False)) if body else []
    data: dict[str, pa.Array] = {}
    numeric: dict[int, np.ndarray] = {}
    for i in range(width):
        col = columns[i] if i < len(columns) else ("",) * len(body)
        if set(map(type, col)) <= {str}:
            texts = list(col)
        else:
            converted = [_cell_text(v) for v in col]
            texts = [t for t, _ in converted]
            flags = np.fromiter((n for _, n in converted), dtype=bool, count=len(converted))
            if flags.any():
                numeric[i] = flags
        data[f"c{i}"] = pa.array(texts, pa.large_string())
    extra: list[tuple[int, list[str]]] = []
    if len(columns) > width:
        for offset, row in enumerate(body):
            spill = _trim_spill([_cell_text(v)[0] for v in row[width:]])
            if spill:
                extra.append((found_at + 1 + offset, spill))
    numbers = np.arange(found_at + 1, found_at + 1 + len(body), dtype=np.int64)
    return Sheet(
        p,
        [h.strip() for h in header],
        pa.table(data) if data else _table([], 0),
        numbers,
        header_row=found_at,
        format="xlsx",
        sheet_name=sheet_name,
        numeric=numeric,
        extra_cells=extra,
        header_cells=list(header),
        preamble=preamble,
        hidden=None if ranges is None else _in_ranges(numbers, ranges),
        workbook=WorkbookSource(p, sheet_name, hashlib.sha256(raw).hexdigest()),
        uncomputed=[(row, col, text) for (row, col), text in sorted(formulas.items())],
    )


def _trim_spill(cells: list[str]) -> list[str]:
    """Cells beyond the last header, without the trailing blank ones ([] when all blank)."""
    end = len(cells)
    while end and not cells[end - 1].strip():
        end -= 1
    return cells[:end]


def _is_header(p: Path, rownum: int, cells: list[str], wanted: int | None) -> bool:
    """Whether row ``rownum`` is the header: the first non-empty row, or row ``wanted``."""
    if wanted is None:
        return any(cells)
    if rownum < wanted:
        return False
    if not any(cells):
        raise InputError(f"{p}: row {rownum} (--header-row) is empty")
    return True


def _table(records: list[list[str]], width: int) -> pa.Table:
    """Row lists → an Arrow table of ``width`` large_string columns named c0, c1, ..."""
    cols = list(zip(*records, strict=True)) if records else [() for _ in range(width)]
    return pa.table({f"c{i}": pa.array(list(c), pa.large_string()) for i, c in enumerate(cols)})


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Hidden rows
#
# The worksheet XML of a big workbook is large (a 200,000-row sheet of inline strings is about
# 100 MB), and only the row tags matter. Parsing it whole with xml.etree's iterparse took 6.7 s
# for 200,000 rows (calamine reads the same sheet in 1.6 s), so the XML is streamed from the zip
# in chunks and only row start tags are looked at: their attributes are read by a small
# pattern. The workbook's small parts (which file is which sheet) are parsed with xml.etree.


#: Read the worksheet XML this many bytes at a time (memory stays flat whatever its size).
_CHUNK = 1 << 22
_XLSX_ROW = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row[\s/>]")
_ODS_TAG = re.compile(rb"<(/?)(?:[A-Za-z_][\w.-]*:)?(table|table-row)[\s/>]")
_ATTR = re.compile(rb"""([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


#: A cell whose formula has no value after it: ``<c r="B2"><f>1+1</f></c>``, or an empty
#: ``<v/>`` (openpyxl writes that), or a shared formula's ``<f .../>``; calamine reads a blank.
_UNCOMPUTED = re.compile(
    rb'<c\b[^>]*?\br="([A-Z]{1,3})(\d+)"[^>]*>\s*(?:<f\b[^>]*/>|<f\b[^>]*>([^<]*)</f>)'
    rb"\s*(?:<v\s*/>|<v>\s*</v>)?\s*</c>"
)
#: How much of the previous piece of a sheet's XML a search looks at again (a cell cut in two).
_FORMULA_OVERLAP = 1 << 16


def _noting_formulas(chunks: Iterator[bytes], found: dict[tuple[int, int], str]) -> Iterator[bytes]:
    """``chunks`` of a worksheet's XML, passed on as they come, noting in ``found`` each
    formula cell that holds no computed value, by (Excel row, column index): read, it is
    blank, though the workbook shows a value once Excel computes it."""
    from sonar_bulk.workbook import column_index

    tail = b""
    for body in chunks:
        window = tail + body
        if b"<f" in window:
            for m in _UNCOMPUTED.finditer(window):  # a cell cut in two is whole in the next
                text = html.unescape((m.group(3) or b"").decode("utf-8", "replace"))
                found.setdefault((int(m.group(2)), column_index(m.group(1))), text)
        tail = window[-_FORMULA_OVERLAP:]
        yield body


def hidden_row_ranges(
    p: Path,
    raw: bytes,
    sheet_name: str,
    formulas: dict[tuple[int, int], str] | None = None,
) -> list[tuple[int, int]] | None:
    """Rows of sheet ``sheet_name`` hidden in the workbook, as (first, end) Excel row numbers
    (end excluded), in order; None for a format whose hidden rows are not read (.xls, .xlsb).

    .xlsx/.xlsm: ``<row r=".." hidden="1">`` (a row hidden by hand, filtered out by an
    AutoFilter, or inside a collapsed outline group: Excel saves each as hidden). .ods:
    ``table:visibility="collapsed"`` or ``"filter"`` on a ``table:table-row``, which may stand
    for ``table:number-rows-repeated`` rows. InputError when the workbook's parts can't be
    followed (calamine read them, so this is damage of an unusual kind). The same pass over an
    .xlsx sheet's XML notes in ``formulas`` its formula cells with no computed value
    (:func:`_noting_formulas`).
    """
    suffix = p.suffix.lower()
    if suffix not in (".xlsx", ".xlsm", ".ods"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            if suffix == ".ods":
                with zf.open("content.xml") as stream:
                    return _ods_hidden(_tag_chunks(stream), sheet_name)
            part = _xlsx_sheet_part(zf, sheet_name)
            for count in (False, True):  # counting every row tag only when a hidden row
                with zf.open(part) as stream:  # does not give its number
                    chunks = _tag_chunks(stream)
                    if formulas is not None:
                        chunks = _noting_formulas(chunks, formulas)
                    rows = _xlsx_hidden(_within_bounds(p, sheet_name, chunks), count=count)
                if rows is not None:
                    break
            assert rows is not None
            return [(r, r + 1) for r in sorted(set(rows))]
    except (KeyError, ValueError, ET.ParseError, zipfile.BadZipFile, OSError) as exc:
        raise InputError(
            f"{p}: cannot tell which rows of sheet {sheet_name!r} are hidden ({_short(exc)}); "
            "open it in Excel and save it again"
        ) from exc


#: The most cells a sheet's used range may span (calamine lays it out whole: about 32 bytes a
#: cell): a million rows of 100 columns. More is a stray cell far from the data.
MAX_RANGE_CELLS = 100_000_000
#: A reference with a column of 3 letters or more (AAA: beyond 702 columns, rare), and one
#: with a row beyond 1,048,576 (8 digits or more, or 7 from 1,048,577). Each starts with the
#: literal ``r="``, which the search finds fast; a hit counts only inside a tag.
_WIDE = re.compile(rb"""r=["']([A-Za-z]{3,})(\d*)["']""")
_ROW_BEYOND = (
    rb"(?:\d{8,}|[2-9]\d{6}"
    rb"|1(?:[1-9]\d{5}|0(?:[5-9]\d{4}|4(?:9\d{3}|8(?:[6-9]\d\d|5(?:[89]\d|7[7-9]))))))"
)
_TALL = re.compile(rb"""r=["'][A-Za-z]*""" + _ROW_BEYOND + rb"""["']""")
_LAST_ROW = re.compile(rb"""\br\s*=\s*["'](\d+)["']""")
_MAX_COLUMN = 16_383  # XFD, 0-based


def _within_bounds(p: Path, sheet_name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` of a worksheet's XML, as they come; InputError before the last one is
    passed on for a reference beyond the largest sheet (XFD1048576), or a used range too
    large to lay out (a cell far from the data). Only tags are read (a cell's text may say
    anything), and only the rare wide references one by one: a sheet of up to 702 columns
    costs a few searches a chunk."""
    from sonar_bulk.workbook import column_index

    widest, last_row = -1, 0
    for body in chunks:
        for tall in _TALL.finditer(body):
            if _in_tag(body, tall.start()):
                _beyond(p, sheet_name, tall.group(0))
        for wide in _WIDE.finditer(body):
            if not _in_tag(body, wide.start()):
                continue
            column = column_index(wide.group(1).upper()) if len(wide.group(1)) <= 3 else -2
            if column == -2 or column > _MAX_COLUMN:
                _beyond(p, sheet_name, wide.group(0))
            widest = max(widest, column)
        at = body.rfind(b"<row")
        if at == -1:
            at = body.rfind(b":row ")
        if at != -1:
            end = body.find(b">", at)
            found = _LAST_ROW.search(body, at, end if end != -1 else len(body))
            if found is not None:
                last_row = max(last_row, int(found.group(1)))
        yield body
    if widest >= 0 and (widest + 1) * max(last_row, 1) > MAX_RANGE_CELLS:
        from sonar_bulk.workbook import column_letters

        corner = column_letters(widest).decode() + str(max(last_row, 1))
        raise InputError(
            f"{p}: sheet {sheet_name!r} spans A1:{corner}: a cell far from the data (Ctrl+End "
            "in Excel shows it); delete those rows and columns, or save the data as CSV"
        )


def _in_tag(body: bytes, at: int) -> bool:
    """Whether ``at`` is inside a tag's attributes (after a ``<``, before its ``>``), not in
    a cell's text; and after a space, as an attribute ``r`` is."""
    return body.rfind(b"<", 0, at) > body.rfind(b">", 0, at) and body[at - 1 : at].isspace()


def _beyond(p: Path, sheet_name: str, tag: bytes) -> None:
    found = re.search(rb"""r=["']([^"']*)["']""", tag)
    ref = found.group(1).decode(errors="replace") if found else "?"
    raise InputError(
        f"{p}: sheet {sheet_name!r} has a cell reference beyond the largest sheet ({ref}); "
        "open it in Excel and save it again"
    )


def _tag_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's bytes in pieces cut just before a ``<``, so no tag spans two pieces."""
    rest = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            if rest:
                yield rest
            return
        buf = rest + chunk
        cut = buf.rfind(b"<")
        if cut <= 0:
            rest = buf
            continue
        yield buf[:cut]
        rest = buf[cut:]


def _attrs(tag: bytes) -> dict[bytes, bytes]:
    """A start tag's attributes by local name (``table:visibility`` → ``visibility``)."""
    out: dict[bytes, bytes] = {}
    for m in _ATTR.finditer(tag):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        out[m.group(1).rsplit(b":", 1)[-1]] = value
    return out


def _is_true(value: bytes | None) -> bool:
    return value is not None and value.strip() in (b"1", b"true")


def _xlsx_hidden(chunks: Iterator[bytes], *, count: bool) -> list[int] | None:
    """Excel row numbers of the hidden ``<row>`` tags. Without ``count`` only the tags with a
    ``hidden`` attribute are looked at (fast: most of a sheet is cells), and a hidden row that
    does not give its number ``r`` (optional in the format) returns None; with ``count`` every
    row tag is numbered, as Excel does when ``r`` is left out."""
    rows: list[int] = []
    number = 0
    for body in chunks:
        if count:
            for m in _XLSX_ROW.finditer(body):
                end = body.find(b">", m.start())
                attrs = _attrs(body[m.start() : end])
                given = attrs.get(b"r")
                number = int(given) if given else number + 1
                if _is_true(attrs.get(b"hidden")):
                    rows.append(number)
            continue
        at = body.find(b"hidden")
        while at != -1:
            start = body.rfind(b"<", 0, at)
            end = body.find(b">", at)
            if end == -1:
                break
            if start != -1 and _XLSX_ROW.match(body, start):
                attrs = _attrs(body[start:end])
                if _is_true(attrs.get(b"hidden")):
                    given = attrs.get(b"r")
                    if not given:
                        return None
                    rows.append(int(given))
            at = body.find(b"hidden", end)
    return rows


def _ods_hidden(chunks: Iterator[bytes], sheet_name: str) -> list[tuple[int, int]]:
    """Hidden row ranges of the ``table:table`` named ``sheet_name`` in an ODS content.xml."""
    wanted = sheet_name.encode("utf-8")
    ranges: list[tuple[int, int]] = []
    inside = False
    number = 1
    for body in chunks:
        for m in _ODS_TAG.finditer(body):
            closing, name = m.group(1), m.group(2)
            if name == b"table":
                if closing:
                    if inside:
                        return ranges
                    continue
                end = body.find(b">", m.start())
                inside = _xml_text(_attrs(body[m.start() : end]).get(b"name")) == wanted
                continue
            if not inside or closing:
                continue
            end = body.find(b">", m.start())
            attrs = _attrs(body[m.start() : end])
            repeat = int(attrs.get(b"number-rows-repeated") or 1)
            if attrs.get(b"visibility") in (b"collapsed", b"filter"):
                ranges.append((number, number + repeat))
            number += repeat
    return ranges


def _xml_text(value: bytes | None) -> bytes | None:
    """An attribute value with its character references resolved."""
    if value is None or b"&" not in value:
        return value
    text: str = ET.fromstring(b"<a v='" + value.replace(b"'", b"&apos;") + b"'/>").get("v", "")
    return text.encode("utf-8")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xlsx_sheet_part(zf: zipfile.ZipFile, sheet_name: str) -> str:
    """The zip member holding worksheet ``sheet_name``: the workbook part (from the package's
    relationships), its ``<sheet name r:id>``, and that relationship's target."""
    workbook = "xl/workbook.xml"
    for rel in ET.fromstring(zf.read("_rels/.rels")):
        if rel.get("Type", "").endswith("/officeDocument") and rel.get("Target"):
            workbook = rel.get("Target", "").lstrip("/")
    rel_id = None
    for element in ET.fromstring(zf.read(workbook)).iter():
        if _local(element.tag) == "sheet" and element.get("name") == sheet_name:
            rel_id = next((v for k, v in element.attrib.items() if _local(k) == "id"), None)
            break
    if rel_id is None:
        raise ValueError(f"no sheet {sheet_name!r} in {workbook}")
    folder, base = posixpath.split(workbook)
    for rel in ET.fromstring(zf.read(posixpath.join(folder, "_rels", base + ".rels"))):
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            if target.startswith("/"):
                return target.lstrip("/")
            return posixpath.normpath(posixpath.join(folder, target))
    raise ValueError(f"sheet {sheet_name!r} has no part in the workbook's relationships")


def _in_ranges(numbers: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Per row number: whether it falls in one of ``ranges`` (sorted, not overlapping)."""
    if not ranges:
        return np.zeros(len(numbers), dtype=bool)
    starts = np.fromiter((a for a, _ in ranges), dtype=np.int64, count=len(ranges))
    ends = np.fromiter((b for _, b in ranges), dtype=np.int64, count=len(ranges))
    at = np.searchsorted(starts, numbers, side="right") - 1
    inside: np.ndarray = (at >= 0) & (numbers < ends[np.maximum(at, 0)])
    return inside


# ---------------------------------------------------------------------------------------------
# Shared checks


def _check_cell_sizes(sheet: Sheet) -> None:
    if len(sheet) == 0:
        return
    for i in range(len(sheet.headers)):
        arr = sheet.column(i)
        lengths = pc.utf8_length(arr)
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > MAX_CELL_CHARS:
            pos = int(np.argmax(lengths.to_numpy(zero_copy_only=False)))
            raise InputError(
                f"{sheet.path}: row {int(sheet.row_numbers[pos])}, column "
                f"{sheet.headers[i]!r}: cell has {longest:,} characters, more than Excel's "
                f"limit of {MAX_CELL_CHARS:,}; is this really a spreadsheet?"
            )
    for h in sheet.headers:
        if len(h) > MAX_CELL_CHARS:
            raise InputError(f"{sheet.path}: row {sheet.header_row}: a header cell is too long")


def _find_swallowed_rows(sheet: Sheet) -> None:
    """Find quoted cells with a line as long as a whole row: a stray quote that merged the
    rows after it into one cell, which would otherwise pass unseen."""
    width = len(sheet.headers)
    if width < 2 or len(sheet) == 0:
        return
    delim = sheet.delimiter or ","
    for i in range(width):
        arr = sheet.column(i)
        hits = pc.match_substring(arr, "\n")
        if not pc.any(hits).as_py():  # (to_numpy here would import pandas: 0.2 s)
            continue
        for pos in np.flatnonzero(hits.to_numpy(zero_copy_only=False)).tolist():
            lines = str(arr[pos].as_py()).splitlines()
            if any(line.count(delim) >= width - 1 for line in lines[1:]):
                sheet.swallowed.append((int(sheet.row_numbers[pos]), i, len(lines)))


def _drop_empty_rows(sheet: Sheet) -> None:
    """Remove rows whose every cell is empty, counting them (a cell with a space is not empty)."""
    if len(sheet) == 0:
        return
    keep = np.zeros(len(sheet), dtype=bool)
    if sheet.extra_cells:  # a row whose only values are beyond the last header is not empty
        keep |= np.isin(sheet.row_numbers, [r for r, _ in sheet.extra_cells])
    for i in range(len(sheet.headers)):
        arr = sheet.column(i)
        filled = pc.greater(pc.binary_length(arr), 0)
        keep |= filled.to_numpy(zero_copy_only=False)
    empty = int((~keep).sum())
    if empty:
        sheet.empty_rows += empty
        sheet.data = sheet.data.filter(pa.array(keep))
        sheet.row_numbers = sheet.row_numbers[keep]
        if sheet.hidden is not None:
            sheet.hidden = sheet.hidden[keep]
        for k, flags in list(sheet.numeric.items()):
            sheet.numeric[k] = flags[keep]
