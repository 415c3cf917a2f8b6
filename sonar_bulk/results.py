"""What happened to each row, and the sheets that say so.

:class:`RowResults` keeps one outcome per input row in compact arrays (a million rows cost a
few tens of megabytes). :func:`write_results` writes them beside the user's own columns, one
output row per input row in input order, in the input's format:
``<stem>.<op>.results.<ext>`` (an XLSX one with a Summary sheet), plus
``<stem>.<op>.failed.<ext>`` with only the failed and invalid rows and the input's headers as
typed, to fix and run again (names: :mod:`sonar_bulk.run_files`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sonar_bulk.errors import UsageError
from sonar_bulk.outputs import (
    CsvFormat,
    atomic_path,
    check_output_path,
    head_rows,
    neutralize,
    write_table,
)
from sonar_bulk.plan import BAD, STATUSES
from sonar_bulk.schema import EXTRA_COLUMN_PREFIX, ROW_COLUMN, is_extra_column, is_tool_column
from sonar_bulk.sheets import Sheet
from sonar_bulk.workbook import typed_for

_CODE = {s: i for i, s in enumerate(STATUSES)}
#: The columns every results file has, after the user's.
BASE_COLUMNS = (
    ROW_COLUMN,
    "sonar__status",
    "sonar__http_status",
    "sonar__error",
    "sonar__attempts",
    "sonar__finished_at",
)
#: Output columns holding ids Sonar made. A base64url id may begin with "-", which the formula
#: rule (:func:`~sonar_bulk.outputs.neutralize`) would prefix with a quote, so the id copied
#: from a results file would name no message: it is written as it is. Letters, digits, "-",
#: "_" and a trailing "=" make no formula a spreadsheet could run.
ID_COLUMNS = frozenset({"external_message_id"})
#: Columns an .xlsx results file holds as numbers.
NUMBER_COLUMNS = frozenset({ROW_COLUMN, "sonar__http_status", "sonar__attempts"})
_SONAR_ID = re.compile(r"-[A-Za-z0-9_-]*={0,2}")


@dataclass
class Outcome:
    """What became of one row."""

    status: str
    http_status: int | None = None
    error: str = ""
    attempts: int = 0
    finished_at: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


class RowResults:
    """One outcome per row, ``planned`` status until set. ``extra`` columns (``sonar__<name>``)
    hold per-row values such as an external message id or the zone quiet hours used."""

    def __init__(self, rows: int, extra: Sequence[str] = ()) -> None:
        self.rows = rows
        self._status = np.full(rows, -1, dtype=np.int8)
        self._http = np.zeros(rows, dtype=np.int16)
        self._attempts = np.zeros(rows, dtype=np.int16)
        #: Rows not failed but to fix all the same (skipped as a condemned value's: an unknown
        #: campaign id's): they go to the failed rows' file with the failed ones.
        self.to_fix = np.zeros(rows, dtype=bool)
        # finished_at as a code into the distinct stamps (one a second): 4 bytes a row
        self._finished = np.full(rows, -1, dtype=np.int32)
        self._stamps: list[str] = []
        self._stamp_codes: dict[str, int] = {}
        self._error: dict[int, str] = {}
        self.extra: dict[str, dict[int, str]] = {name: {} for name in extra}

    def set(self, index: int, outcome: Outcome) -> None:
        self._status[index] = _CODE[outcome.status]
        self._http[index] = outcome.http_status or 0
        self._attempts[index] = outcome.attempts
        if outcome.finished_at:
            code = self._stamp_codes.get(outcome.finished_at)
            if code is None:
                code = self._stamp_codes[outcome.finished_at] = len(self._stamps)
                self._stamps.append(outcome.finished_at)
            self._finished[index] = code
        if outcome.error:
            self._error[index] = outcome.error
        else:
            self._error.pop(index, None)
        for name, value in outcome.outputs.items():
            self.note(index, name, value)

    def note(self, index: int, name: str, value: str) -> None:
        """A value of the ``sonar__<name>`` column for one row."""
        self.extra.setdefault(name, {})[index] = value

    def has(self, index: int) -> bool:
        return bool(self._status[index] >= 0)

    def status(self, index: int) -> str | None:
        code = int(self._status[index])
        return STATUSES[code] if code >= 0 else None

    def http_status(self, index: int) -> int:
        return int(self._http[index])

    def fill(self, status: str, error: str) -> int:
        """Give rows without an outcome this one (rows a stopped run never started)."""
        missing = np.flatnonzero(self._status < 0)
        self._status[missing] = _CODE[status]
        for i in missing.tolist():
            self._error[int(i)] = error
        return int(missing.size)

    def with_error(self, text: str) -> int:
        """How many rows have exactly this ``sonar__error``."""
        return sum(1 for e in self._error.values() if e == text)

    def counts(self) -> dict[str, int]:
        """Rows by status, in :data:`STATUSES` order (absent statuses left out)."""
        values, counts = np.unique(self._status[self._status >= 0], return_counts=True)
        found = {STATUSES[int(v)]: int(c) for v, c in zip(values, counts, strict=True)}
        return {s: found[s] for s in STATUSES if s in found}

    def bad_mask(self, statuses: Iterable[str] = BAD) -> np.ndarray:
        codes = [_CODE[s] for s in statuses]
        out: np.ndarray = np.isin(self._status, codes)
        return out

    def row(self, index: int) -> list[str]:
        """The base columns after ``sonar__row`` for one row, as text."""
        http = int(self._http[index])
        stamp = int(self._finished[index])
        return [
            self.status(index) or "",
            str(http) if http else "",
            self._error.get(index, ""),
            str(int(self._attempts[index])),
            self._stamps[stamp] if stamp >= 0 else "",
        ]


def results_paths(
    source: Path, short: str, results: Path | None = None, out_dir: Path | None = None
) -> tuple[Path, Path]:
    """``<stem>.<short>.results.<ext>`` (or ``results``) and the failed rows' file beside it
    (``<stem>.<short>.failed.<ext>``; ``<name>.failed.<ext>`` beside a ``--results`` name),
    beside the input or in ``out_dir`` (see :mod:`sonar_bulk.run_files`)."""
    from sonar_bulk.run_files import output_ext, run_file

    ext = output_ext(source)
    if results is None:
        return run_file(source, short, "results", out_dir), run_file(
            source, short, "failed", out_dir
        )
    failed_ext = ".xlsx" if results.suffix.lower() == ".xlsx" else ext
    stem = results.name[: -len(results.suffix)] if results.suffix else results.name
    return results, results.with_name(f"{stem.removesuffix('.results')}.failed{failed_ext}")


def _csv_format(sheet: Sheet, path: Path) -> CsvFormat | None:
    if path.suffix.lower() == ".xlsx" or sheet.format != "csv":
        return None
    return CsvFormat(sheet.delimiter or ",", sheet.encoding or "utf-8", sheet.bom, sheet.newline)


def _user_columns(sheet: Sheet, width: int | None) -> tuple[list[str], list[int]]:
    """The input's headers as typed and the columns to keep (a stale results column from a
    results file fed back in is dropped)."""
    headers = list(sheet.header_cells or sheet.headers)[: width or None]
    keep = [i for i, h in enumerate(headers) if not is_tool_column(h) or is_extra_column(h)]
    return headers, keep


def check_results_paths(paths: Sequence[Path], force: bool, inputs: Sequence[Path]) -> None:
    """UsageError unless each output may be written: not an input, and either absent, one
    sonar-bulk wrote and nobody changed since (:class:`~sonar_bulk.owned.Written`; a results
    file the registry does not know, from an older sonar-bulk, by its ``sonar__status``
    header), or ``force``."""
    from sonar_bulk.owned import Written

    written = Written()
    for path in paths:
        for source in inputs:
            if path.exists() and source.exists() and path.samefile(source):
                raise UsageError(f"{path}: that is the input file; pick another --results")
        check_output_path(path, "results", force=True, suffixes=(path.suffix.lower(),))
        if not os.access(path.parent, os.W_OK):
            raise UsageError(f"{path}: its folder can't be written; pick another --results")
        if not path.exists() or force:
            continue
        state = written.state(path)
        if state == "edited":
            raise UsageError(
                f"{path} was edited since sonar-bulk wrote it; move it away or pass --force"
            )
        if state == "unknown" and not _written_by_us(path):
            raise UsageError(
                f"{path} exists and sonar-bulk did not write it; move it away or pass --force"
            )


def _written_by_us(path: Path) -> bool:
    try:
        rows = head_rows(path, 40)
    except Exception:  # noqa: BLE001 - any unreadable file is not ours
        return False
    return any("sonar__status" in row or ROW_COLUMN in row for row in rows)


@dataclass
class RunSummary:
    """The numbers of a run, for people (stderr, the Summary sheet) and machines (--json)."""

    command: str
    input: str
    target: str
    counts: dict[str, int]
    started: float
    finished: float
    requests: int = 0
    #: Rows this run took to the API (not those an earlier run finished).
    processed: int = 0
    journal: str = ""
    results: str = ""
    failed: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started)

    @property
    def rate(self) -> float:
        """Rows this run finished (through the API) a second."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "input": self.input,
            "target": self.target,
            "rows": sum(self.counts.values()),
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rate, 1),
            "requests": self.requests,
            "journal": self.journal or None,
            "results": self.results or None,
            "failed": self.failed or None,
            **self.extra,
        }

    def lines(self) -> list[tuple[str, str]]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        out = [
            ("command", f"sonar-bulk {self.command}"),
            ("input", self.input),
            ("api", self.target),
            ("started", started),
            ("seconds", f"{self.seconds:.1f}"),
            ("rows per second", f"{self.rate:.1f}"),
        ]
        out += [(f"rows {status}", str(n)) for status, n in self.counts.items()]
        if self.journal:
            out.append(("journal", self.journal))
        for key, value in self.extra.items():
            out.append((key, json.dumps(value) if not isinstance(value, str) else value))
        return out


class Spill:
    """The cells of a sheet beyond its last header (each row's is a ``row.extra_cells``
    error): kept in the results and the failed rows as ``sonar__extra_N`` columns, so no cell
    the user typed is lost (and fed back, such a row is still to be fixed)."""

    def __init__(self, sheet: Sheet, headers: Sequence[str], keep: Sequence[int]) -> None:
        self._by_row = dict(sheet.extra_cells)
        self.width = max((len(v) for v in self._by_row.values()), default=0)
        # numbered after the sheet's own sonar__extra_N columns (a failed rows file fed back)
        taken = max(
            (
                int(headers[i].strip()[len(EXTRA_COLUMN_PREFIX) :])
                for i in keep
                if is_extra_column(headers[i])
            ),
            default=0,
        )
        self.names = [f"{EXTRA_COLUMN_PREFIX}{taken + k + 1}" for k in range(self.width)]
        #: Where they stand in a workbook: right after the last header.
        self.columns = [len(sheet.headers) + k for k in range(self.width)]

    def cells(self, rownum: int) -> list[str]:
        """Row ``rownum``'s cells beyond the last header, padded to :attr:`width`."""
        if not self.width:
            return []
        cells = self._by_row.get(rownum, [])
        return cells + [""] * (self.width - len(cells))


def _result_rows(
    sheet: Sheet,
    results: RowResults,
    keep: Sequence[int],
    extras: Sequence[str],
    spill: Spill,
) -> Iterator[list[str]]:
    """Each row of the results: the user's cells (and those beyond the last header), the
    base columns, the extra ones."""
    numbers = sheet.row_numbers
    for index, cells in enumerate(sheet.iter_rows()):
        rownum = int(numbers[index])
        yield (
            [cells[i] for i in keep]
            + spill.cells(rownum)
            + [str(rownum)]
            + results.row(index)
            + [results.extra[e].get(index, "") for e in extras]
        )


def results_table(
    sheet: Sheet,
    results: RowResults,
    *,
    extra_columns: Sequence[str] = (),
    width: int | None = None,
) -> pa.Table:
    """The results sheet as a table of text (the columns and rows :func:`write_results`
    writes, with cells as they are: never neutralized for a spreadsheet program)."""
    headers, keep = _user_columns(sheet, width)
    extras = [name for name in extra_columns if results.extra.get(name)]
    spill = Spill(sheet, headers, keep)
    user = [headers[i] for i in keep] + spill.names
    names = user + list(BASE_COLUMNS) + [f"sonar__{e}" for e in extras]
    columns: list[list[str]] = [[] for _ in names]
    for row in _result_rows(sheet, results, keep, extras, spill):
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], names=names)


def write_results(
    sheet: Sheet,
    results: RowResults,
    path: Path,
    failed_path: Path | None,
    summary: RunSummary,
    *,
    extra_columns: Sequence[str] = (),
    width: int | None = None,
    phone_columns: Sequence[int] = (),
) -> tuple[Path, Path | None]:
    """Write the results (and, when any row failed, the failed file; else remove a stale one
    sonar-bulk wrote). Both appear together, or neither. ``width`` leaves out columns added
    to the sheet after reading (``--text``); ``phone_columns`` stay text in a workbook."""
    headers, keep = _user_columns(sheet, width)
    extras = [name for name in extra_columns if results.extra.get(name)]
    spill = Spill(sheet, headers, keep)
    user = [headers[i] for i in keep] + spill.names
    names = user + list(BASE_COLUMNS) + [f"sonar__{e}" for e in extras]
    numbers = sheet.row_numbers
    phone_like = [n for n, i in enumerate(keep) if i in set(phone_columns)]
    # a CSV's cells are neutralized here, not by write_table, to leave Sonar's ids as they are
    as_csv = path.suffix.lower() != ".xlsx"
    ids = {len(user) + len(BASE_COLUMNS) + n for n, e in enumerate(extras) if e in ID_COLUMNS}

    def safe(row: Sequence[str]) -> list[str]:
        return [
            v if n in ids and _SONAR_ID.fullmatch(v) else neutralize(v) for n, v in enumerate(row)
        ]

    def all_rows() -> Iterator[list[str]]:
        for row in _result_rows(sheet, results, keep, extras, spill):
            yield safe(row) if as_csv else row

    # Only rows to fix and run again: an unknown send may have gone out, so it is never
    # offered for a re-run (a resume holds it; --retry-unknown sends it on purpose).
    bad = results.bad_mask(("failed", "invalid")) | results.to_fix

    def failed_rows() -> Iterator[list[str]]:
        rows = np.flatnonzero(bad).tolist()
        for index, cells in zip(rows, sheet.iter_rows(bad), strict=True):
            base = results.row(index)
            rownum = int(numbers[index])
            yield ([cells[i] for i in keep] + spill.cells(rownum) + [str(rownum), base[0], base[2]])

    summary_rows: list[Sequence[Any]] = [list(item) for item in summary.lines()]
    with contextlib.ExitStack() as stack:
        write_table(
            path,
            safe(names) if as_csv else names,
            all_rows(),
            "Results",
            text_columns=phone_like,
            csv_format=_csv_format(sheet, path),
            as_typed=as_csv,
            preamble=[[neutralize(v) for v in line] for line in sheet.preamble]
            if as_csv
            else sheet.preamble,
            into=stack.enter_context(atomic_path(path)),
            more_sheets=(("Summary", ["item", "value"], summary_rows),),
            typed=typed_for(sheet, None, keep + spill.columns, NUMBER_COLUMNS),
        )
        wrote_failed: Path | None = None
        if failed_path is not None and bool(bad.any()):
            write_table(
                failed_path,
                user + [ROW_COLUMN, "sonar__status", "sonar__error"],
                failed_rows(),
                "Failed",
                text_columns=phone_like,
                csv_format=_csv_format(sheet, failed_path),
                # neutralized too: read back (it has a sonar__row), each cell is as typed
                preamble=sheet.preamble,
                into=stack.enter_context(atomic_path(failed_path)),
                typed=typed_for(sheet, np.flatnonzero(bad), keep + spill.columns, NUMBER_COLUMNS),
            )
            wrote_failed = failed_path
    from sonar_bulk.owned import Written

    written = Written()
    for done in (path, wrote_failed):
        if done is not None:
            written.note(done)  # ours to write again while nobody changes it
    if wrote_failed is None and failed_path is not None and failed_path.exists():
        if written.ours(failed_path):
            failed_path.unlink()  # stale: from an earlier run (one the user fixed stays)
    return path, wrote_failed


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
