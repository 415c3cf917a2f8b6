"""Every sheet sonar-bulk writes goes through here: one writer for CSV and XLSX, the rule that
keeps a spreadsheet from running a cell as a formula, and the rule that never overwrites a
file the tool did not write.

Formula injection (OWASP's "CSV injection"): a CSV cell that begins with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return may be run as a formula when the file is opened in a
spreadsheet. :func:`neutralize` prefixes such a cell with a single quote, unless it is a plain
number or phone number (``+13105550101``, ``-12.5``, ``+1 (310) 555-0101``), which no
spreadsheet can turn into a call. XLSX cells are always written as text, never as formulas.
Every CSV sonar-bulk writes is neutralized, those meant to be fixed and fed back in too (a
run's results and failed rows, the ``--split`` files, a customers backup): each has a
``sonar__row`` column, and reading a CSV with one takes the quote off again (:func:`restore`),
so fixing and re-feeding the file changes nothing but what the user fixed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sonar_bulk.errors import UsageError
from sonar_bulk.owned import Written

if TYPE_CHECKING:
    from sonar_bulk.workbook import Typed

TABLE_SUFFIXES = (".csv", ".xlsx")
XLSX_MAX_ROWS = 1_048_576

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: A cell that only a number or a phone can be: a sign, digits and phone punctuation.
_INERT = re.compile(r"[+-]?[\d ().,-]*\d[\d ().,-]*(?:\s*(?:ext\.?|x|#)\s*\d+)?", re.IGNORECASE)


def neutralize(value: Any) -> Any:
    """``value`` made safe for a spreadsheet: text that would start a formula gets a leading
    single quote; numbers and phone numbers stay as they are. A cell that already looks like
    one this made (``'=x`` as the user typed it) gets one more, so :func:`restore` gives back
    exactly what was typed.

    >>> neutralize("=HYPERLINK(\\"http://x\\")"), neutralize("+13105550101"), neutralize("-5")
    ('\\'=HYPERLINK("http://x")', '+13105550101', '-5')
    >>> neutralize("'=x"), neutralize("'+13105550101"), neutralize("'hello")
    ("''=x", "'+13105550101", "'hello")
    """
    if not isinstance(value, str) or not value or value[0] not in _QUOTED_START:
        return value
    return "'" + value if _formula_after_quotes(value) else value


def restore(value: str) -> str:
    """The cell :func:`neutralize` made ``value`` from: ``'=HYPERLINK(...)`` reads as
    ``=HYPERLINK(...)`` again, ``''=x`` as ``'=x``. A cell neutralize can't have written stays
    as it is (``'+13105550101``, ``'02134``, ``'hello``).

    >>> restore("'=SUM(A1)"), restore("'+13105550101"), restore("'-5"), restore("'@ana")
    ('=SUM(A1)', "'+13105550101", "'-5", '@ana')
    >>> restore("''=x"), restore("''hello")
    ("'=x", "''hello")
    """
    if len(value) > 1 and value[0] == "'" and _formula_after_quotes(value):
        return value[1:]
    return value


_QUOTED_START = (*_FORMULA_START, "'")


def _formula_after_quotes(value: str) -> bool:
    """Whether ``value``, past its leading single quotes, would start a formula (a number or
    a phone number never does)."""
    rest = value.lstrip("'")
    if not rest or rest[0] not in _FORMULA_START:
        return False
    return not (rest[0] in "+-" and _INERT.fullmatch(rest))


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is written. The default is UTF-8 with a BOM (so Excel shows accents),
    commas and CRLF; split files copy the input's own format instead."""

    delimiter: str = ","
    encoding: str = "utf-8"
    bom: bool = True
    newline: str = "\r\n"


def write_table(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    sheet_title: str = "Sheet1",
    text_columns: Sequence[int] = (),
    *,
    csv_format: CsvFormat | None = None,
    as_typed: bool = False,
    preamble: Sequence[Sequence[str]] = (),
    into: Path | None = None,
    more_sheets: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]] = (),
    hidden: Sequence[bool] | None = None,
    typed: Typed | None = None,
) -> None:
    """Write rows as CSV or XLSX, by the extension of ``path`` (anything but .xlsx is CSV).

    CSV cells are neutralized (:func:`neutralize`) unless ``as_typed``: then every cell is
    written back exactly as given (a file to be fed back in). In XLSX every value is written as
    given and strings stay text (phones keep their ``+``, ``=...`` is no formula);
    ``text_columns`` are also formatted as Text so new entries typed by hand stay text.
    ``preamble`` rows (a title above the header, copied from an input) come first.

    The file is written whole or not at all (:func:`atomic_path`); pass ``into`` (a temporary
    file from :func:`atomic_path`) to write several files that appear together.
    ``more_sheets`` (title, headers, rows) follow the first sheet in an XLSX file (a results
    file's Summary); a CSV has no room for them. ``hidden`` (per row) keeps rows hidden in an
    XLSX, as they were in the workbook they came from.

    ``typed`` says which cells of the rows are a workbook's (:class:`~sonar_bulk.workbook.Typed`):
    an XLSX is then that workbook with those cells as they were there (types, number formats,
    the other worksheets; :func:`~sonar_bulk.workbook.copy_workbook`), while the text rows
    give the cells the tool adds.
    """
    if into is None:
        with atomic_path(path) as partial:
            write_table(
                path,
                headers,
                rows,
                sheet_title,
                text_columns,
                csv_format=csv_format,
                as_typed=as_typed,
                preamble=preamble,
                into=partial,
                more_sheets=more_sheets,
                hidden=hidden,
                typed=typed,
            )
        return
    if path.suffix.lower() == ".xlsx":
        if typed is not None:
            from sonar_bulk import workbook

            if not workbook.usable(typed):
                typed = None  # the workbook changed since it was read: its text, as read
            elif typed.source.path.suffix.lower() in workbook.COPIED_SUFFIXES:
                try:
                    workbook.copy_workbook(
                        into,
                        typed,
                        headers,
                        rows,
                        sheet_title,
                        keep_hidden=hidden is not None,
                        more_sheets=more_sheets,
                    )
                    return
                except workbook.NotCopyable:
                    pass  # parts it can't follow: the cells' types, without the workbook
        _write_xlsx(
            into, headers, rows, sheet_title, text_columns, preamble, more_sheets, hidden, typed
        )
    else:
        _write_csv(into, headers, rows, csv_format or CsvFormat(), as_typed, preamble)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary file beside ``path`` to write; renamed onto ``path`` when the block
    ends without error, removed otherwise. An interrupted run never leaves half a file where a
    complete one is expected, and the temporary file is created new (never through a link
    someone left in its place)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    partial = Path(name)
    os.chmod(partial, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        if exc.filename == str(partial) or exc.filename == name:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_csv(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fmt: CsvFormat,
    as_typed: bool,
    preamble: Sequence[Sequence[str]] = (),
) -> None:
    with path.open("w", encoding=fmt.encoding, errors="replace", newline="") as fh:
        if fmt.bom:
            fh.write("\ufeff")
        writer = csv.writer(fh, delimiter=fmt.delimiter, lineterminator=fmt.newline)
        if fmt.newline != "\r\n":
            # Python's writer quotes a cell holding \r or \n only when the line ending holds
            # it: rows with such a cell go through a CRLF writer, then get the file's ending.
            buffer = io.StringIO()
            crlf = csv.writer(buffer, delimiter=fmt.delimiter, lineterminator="\r\n")

            def write(row: Sequence[Any]) -> None:
                if any(isinstance(v, str) and ("\r" in v or "\n" in v) for v in row):
                    buffer.seek(0)
                    buffer.truncate()
                    crlf.writerow(row)
                    fh.write(buffer.getvalue()[:-2] + fmt.newline)
                else:
                    writer.writerow(row)
        else:
            write = writer.writerow
        for line in preamble:
            write(line if as_typed else [neutralize(v) for v in line])
        write(headers if as_typed else [neutralize(h) for h in headers])
        for row in rows:
            write(row if as_typed else [neutralize(v) for v in row])


def _write_xlsx(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    sheet_title: str,
    text_columns: Sequence[int],
    preamble: Sequence[Sequence[str]] = (),
    more_sheets: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]] = (),
    hidden: Sequence[bool] | None = None,
    typed: Typed | None = None,
) -> None:
    import xlsxwriter

    # Cell text must stay exactly as given: no formulas from "=...", no hyperlinks, no numbers
    # from digit strings (that is how phones lose their + and ZIP codes their 0).
    wb = xlsxwriter.Workbook(
        str(path),
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    try:
        ws = wb.add_worksheet(sheet_title[:31])
        text = wb.add_format({"num_format": "@"})
        for i in text_columns:
            ws.set_column(i, i, None, text)
        for r, line in enumerate(preamble):
            ws.write_row(r, 0, list(line))
        top = len(preamble)
        ws.write_row(top, 0, list(headers), wb.add_format({"bold": True}))
        if typed is not None:  # a workbook that can't be copied: its cells' types
            rows = _typed_rows(wb, typed, rows)
        for r, row in enumerate(rows, start=top + 1):
            if r >= XLSX_MAX_ROWS:
                raise UsageError(
                    f"more than {XLSX_MAX_ROWS - 1:,} rows do not fit in an .xlsx sheet; write "
                    "a .csv instead"
                )
            if hidden is not None and hidden[r - top - 1]:
                ws.set_row(r, None, None, {"hidden": True})
            if typed is not None:
                for c, value in enumerate(row):
                    if isinstance(value, _Dated):
                        ws.write_datetime(r, c, value.value, value.fmt)
                    elif isinstance(value, bool):
                        ws.write_boolean(r, c, value)
                    else:
                        ws.write(r, c, value)
            else:
                ws.write_row(r, 0, row)
        for title, names, lines in more_sheets:
            more = wb.add_worksheet(title[:31])
            more.write_row(0, 0, list(names), wb.add_format({"bold": True}))
            for r, row in enumerate(lines, start=1):
                more.write_row(r, 0, list(row))
    finally:
        try:
            wb.close()
        except xlsxwriter.exceptions.FileCreateError as exc:
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], OSError) else None
            raise OSError(
                cause.errno if cause else 0, cause.strerror if cause else str(exc), str(path)
            ) from None


def _typed_rows(wb: Any, typed: Typed, rows: Iterable[Sequence[Any]]) -> Iterator[list[Any]]:
    """``rows`` with the workbook's cells as the workbook typed them: numbers, booleans, and
    dates, times and date-times with a date format (calamine does not give the cells' own
    number formats); text, and a cell the page edited, as the text."""
    import datetime as dt

    from sonar_bulk.workbook import typed_cells

    dates = {
        dt.datetime: wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
        dt.date: wb.add_format({"num_format": "yyyy-mm-dd"}),
        dt.time: wb.add_format({"num_format": "hh:mm:ss"}),
    }
    width = len(typed.columns)
    for values, row in zip(typed_cells(typed), rows, strict=True):
        out: list[Any] = list(row)
        for j, value in enumerate(values[:width]):
            if isinstance(value, bool | int | float) or value is None or isinstance(value, str):
                if isinstance(value, bool | int | float):
                    out[j] = value
                continue
            for kind, fmt in dates.items():
                if isinstance(value, kind):
                    out[j] = _Dated(value, fmt)
                    break
        yield out


@dataclass(frozen=True)
class _Dated:
    value: Any
    fmt: Any


def check_output_path(
    path: str | Path,
    what: str,
    *,
    force: bool = False,
    ours: Sequence[str] | None = None,
    suffixes: Sequence[str] = TABLE_SUFFIXES,
    noted: bool = False,
) -> Path:
    """An output path that may be written; UsageError otherwise.

    An existing file is replaced only with ``force``, or when ``ours`` is given and the file's
    first row is exactly those headers (a file this tool wrote before, such as an earlier
    report); with ``noted``, when sonar-bulk wrote it and it is unchanged since (:class:`Written`).
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        names = " or ".join(suffixes)
        raise UsageError(f"{what} {p}: use a {names} file name")
    if p.is_dir():
        raise UsageError(f"{what} {p}: is a directory")
    if p.exists() and not p.is_file():
        raise UsageError(f"{what} {p}: is not a regular file")
    if not p.parent.exists():
        raise UsageError(f"{what} {p}: folder {p.parent} does not exist")
    if (
        p.exists()
        and not force
        and not (ours is not None and head_rows(p, 1) == [list(ours)])
        and not (noted and Written().ours(p))
    ):
        raise UsageError(
            f"{what} {p}: the file exists and sonar-bulk did not write it; pass --force to "
            "replace it"
        )
    return p


def head_rows(path: Path, count: int, fmt: CsvFormat | None = None) -> list[list[str]]:
    """The first ``count`` rows of a CSV (written as ``fmt`` says) or XLSX file as text; []
    when it can't be read as a sheet."""
    try:
        if path.suffix.lower() == ".xlsx":
            from python_calamine import CalamineWorkbook

            got = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
            return [[str(v) for v in row] for row in got.to_python(nrows=count)]
        fmt = fmt or CsvFormat()
        with path.open(encoding=fmt.encoding, errors="replace", newline="") as fh:
            text = fh.read(1 << 20).removeprefix("\ufeff")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=fmt.delimiter)
        return [row for _, row in zip(range(count), reader, strict=False)]
    except Exception:  # unreadable, not a sheet: not ours
        return []
