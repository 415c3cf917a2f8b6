"""Check every row of a sheet against its kind's schema; issues are data, not exceptions.

:func:`validate_sheet` returns a :class:`Validation`: the issues (one row per problem, with a
stable ``code``), which rows are valid, and the normalized values that the API layers send.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sonar_bulk import normalize as nz
from sonar_bulk.phonemeta import region_country_code
from sonar_bulk.schema import (
    CONSENT_HELP,
    KINDS,
    PROPERTY_TYPES,
    Column,
    HeaderMap,
    SheetKind,
    header_key,
    match_headers,
)
from sonar_bulk.sheets import Sheet

Severity = Literal["error", "warning"]
ISSUE_COLUMNS = ["row", "column", "value", "code", "severity", "message"]

#: Every issue code: its severity and what it means. The docs' table is codes_table().
CODES: dict[str, tuple[str, str]] = {
    "required.missing": (
        "error",
        "a required value is blank",
    ),
    "phone.invalid": (
        "error",
        "not a valid phone number",
    ),
    "phone.ambiguous_region": (
        "error",
        "no country code and not valid for `--default-region`, but valid with one (the "
        "message suggests it)",
    ),
    "phone.extension": (
        "warning",
        "an extension was given; SMS goes to the main number",
    ),
    "email.invalid": (
        "error",
        "not a valid email address",
    ),
    "url.invalid": (
        "error",
        "not an http(s) URL",
    ),
    "bool.invalid": (
        "error",
        "not true/false, yes/no or 1/0; in the SMS-consent column (`subscribed`), not one of "
        f"{CONSENT_HELP}",
    ),
    "number.invalid": (
        "error",
        "a property typed `number` holds something else",
    ),
    "timezone.invalid": (
        "error",
        "not an IANA time-zone name",
    ),
    "zip.invalid": (
        "warning",
        "doesn't look like a ZIP or postal code",
    ),
    "duplicate.key": (
        "error or warning",
        'same key as an earlier row ("duplicate of row N", compared after normalization). '
        "An error for `messages` (same `to` and text) and `campaign_recipients` (same "
        "`to` and campaign), where it would send twice. A warning elsewhere, where the "
        "later row wins",
    ),
    "datetime.invalid": (
        "error",
        "not a date or date-time this tool can read",
    ),
    "datetime.past": (
        "error",
        "`send_at` is not in the future",
    ),
    "datetime.no_timezone": (
        "error",
        "`send_at` has no offset, and there is no `timezone` column and no `--timezone`",
    ),
    "datetime.ambiguous": (
        "warning",
        "day and month could be swapped (`03/04/2030`); read month first",
    ),
    "datetime.no_time": (
        "error",
        "`send_at` is a date with no time (it would go out at midnight); add a time, or give "
        "`--default-send-time HH:MM`",
    ),
    "datetime.dst_gap": (
        "error",
        "`send_at` is a local time that does not exist in its zone: the clocks jump over it "
        "(daylight saving time starts); the message names the gap",
    ),
    "datetime.dst_repeated": (
        "warning",
        "`send_at` is a local time that happens twice in its zone (the clocks go back); read as "
        "the first, and the message names the offset chosen",
    ),
    "merge.syntax": (
        "error",
        "a broken merge tag: an unclosed `{{`, a stray `}}` or an empty `{{}}` (the message "
        "gives its position)",
    ),
    "merge.unknown_field": (
        "error",
        "a `{{field}}` names no column of the sheet",
    ),
    "merge.empty_value": (
        "warning",
        "a `{{field}}` is blank on this row",
    ),
    "property.type_invalid": (
        "error",
        "a `type` cell is not string/number/boolean/date/datetime",
    ),
    "excel.damaged_number": (
        "error",
        "Excel turned the number into scientific notation and lost digits",
    ),
    "excel.lost_leading_zero": (
        "error for phones, warning for ZIP codes",
        "Excel dropped a leading zero",
    ),
    "column.unknown": (
        "warning",
        "a column this kind doesn't use (ignored)",
    ),
    "column.missing": (
        "error",
        "a required column is not in the sheet (every row is invalid)",
    ),
    "column.duplicate": (
        "error",
        "two columns map to the same field",
    ),
    "column.property_type": (
        "error",
        "unknown type in a `property:name:type` header",
    ),
    "map.unknown_header": (
        "error",
        "a `--map` source header is not in the sheet (the message lists the headers, closest "
        "first; every row is invalid)",
    ),
    "column.unnamed": (
        "warning",
        "values in a column that has no header (ignored)",
    ),
    "row.example": (
        "error",
        "the row is still the template's example row (phone +13105550100, a number reserved "
        "for fiction); replace or delete it",
    ),
    "csv.unbalanced_quote": (
        "error",
        'a quoted value holds lines shaped like whole rows: a stray `"` merged the rows below '
        "into one cell (a quote still open at the end of the file is refused outright)",
    ),
    "row.extra_cells": (
        "error",
        "values beyond the last header column",
    ),
}


def codes_table() -> str:
    """The table of issue codes in sonar_bulk/docs/sheets.md, in Markdown."""
    lines = ["| code | severity | meaning |", "|---|---|---|"]
    lines += [f"| `{code}` | {sev} | {meaning} |" for code, (sev, meaning) in CODES.items()]
    return "\n".join(lines)


class Issues:
    """Issues as columns (``ISSUE_COLUMNS``), in row order, then column order.

    ``row`` is a NumPy array, the text columns are Arrow arrays: a million-row sheet can have
    half a million issues, and nothing should turn them into Python objects until they are
    written out.
    """

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["row"])

    def column(self, name: str) -> list[Any]:
        """One column as a Python list."""
        col = self.columns[name]
        out: list[Any] = col.tolist() if isinstance(col, np.ndarray) else col.to_pylist()
        return out

    def rows(self, limit: int | None = None) -> list[tuple[Any, ...]]:
        """Issues as (row, column, value, code, severity, message) tuples."""
        stop = len(self) if limit is None else min(limit, len(self))
        cols = [self.columns["row"][:stop].tolist()]
        cols += [self.columns[c].slice(0, stop).to_pylist() for c in ISSUE_COLUMNS[1:]]
        return list(zip(*cols, strict=True))

    def first(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` issues, errors before warnings (each in row order): what a person
        should see first of a long list."""
        import pyarrow as pa
        import pyarrow.compute as pc

        errors = np.asarray(pc.equal(self.columns["severity"], "error"), dtype=bool)
        order = np.concatenate([np.flatnonzero(errors), np.flatnonzero(~errors)])[:limit]
        take = pa.array(order, pa.int64())
        cols = [np.asarray(self.columns["row"])[order].tolist()]
        cols += [self.columns[c].take(take).to_pylist() for c in ISSUE_COLUMNS[1:]]
        return list(zip(*cols, strict=True))

    def iter_rows(self, chunk: int = 20_000) -> Iterator[tuple[Any, ...]]:
        """All issues as tuples, materialized ``chunk`` at a time (bounded memory)."""
        for start in range(0, len(self), chunk):
            cols = [self.columns["row"][start : start + chunk].tolist()]
            cols += [self.columns[c].slice(start, chunk).to_pylist() for c in ISSUE_COLUMNS[1:]]
            yield from zip(*cols, strict=True)

    def count(self, severity: str) -> int:
        """Number of issues of ``severity``."""
        if len(self) == 0:
            return 0
        return int(pc.sum(pc.equal(self.columns["severity"], severity)).as_py() or 0)

    def by_code(self) -> dict[str, int]:
        """Issue counts by code, most frequent first, then by code."""
        if len(self) == 0:
            return {}
        counts = pc.value_counts(self.columns["code"]).to_pylist()
        pairs = sorted(((c["values"], c["counts"]) for c in counts), key=lambda p: (-p[1], p[0]))
        return dict(pairs)


@dataclass
class ValidateOptions:
    """Knobs of :func:`validate_sheet` (CLI options map onto these one to one)."""

    default_region: str = "US"
    mapping: dict[str, str] = field(default_factory=dict)
    extra_columns: str = "warn"
    campaign_id: str | None = None
    timezone: str | None = None
    now: dt.datetime | None = None
    #: messages send --text: the message template of every row without its own text.
    text: str | None = None
    #: campaigns send --send-at: when to send rows without their own send_at.
    send_at: str | None = None
    #: --default-send-time HH:MM: the time of a send_at that is a date alone (else an error).
    default_send_time: str | None = None

    def all_rows_value(self, col: Column) -> str | None:
        """The value ``col.all_rows_option`` gives every row; None when it was not given."""
        given = {"--campaign-id": self.campaign_id, "--text": self.text, "--send-at": self.send_at}
        return given.get(col.all_rows_option) if col.all_rows_option else None


@dataclass(frozen=True)
class ConsentCounts:
    """The rows of a sheet's SMS-consent column (``subscribed``), by what they say."""

    #: The field (``subscribed``) and the header it was read from, as written.
    field: str
    column: str
    #: Yes (sent as subscribed=true) and no (sent as subscribed=false).
    consented: int
    not_consented: int
    #: Blank: the field is not sent, so Sonar keeps what it has.
    unknown: int
    #: Not a consent value: those rows have an error (``bool.invalid``).
    invalid: int = 0


@dataclass
class Validation:
    """What validation found, and the normalized values of every row."""

    kind: SheetKind
    sheet: Sheet
    headers: HeaderMap
    issues: Issues
    #: Per data row: True when the row has at least one error.
    invalid: np.ndarray
    #: Normalized value per field, one entry per data row ('' for blank).
    normalized: dict[str, pa.Array]
    #: Custom properties: name → (type, values per row).
    properties: dict[str, tuple[str, pa.Array]] = field(default_factory=dict)
    #: Messages only: SMS segment statistics.
    segments: dict[str, int] = field(default_factory=dict)
    options: ValidateOptions = field(default_factory=lambda: ValidateOptions())
    #: Sheets with an SMS-consent column: its rows counted by consent.
    consent: ConsentCounts | None = None

    @property
    def rows(self) -> int:
        """Data rows read (entirely empty rows are not counted)."""
        return len(self.sheet)

    @property
    def invalid_rows(self) -> int:
        """Rows with at least one error."""
        return int(self.invalid.sum())

    @property
    def valid_rows(self) -> int:
        """Rows without errors (warnings allowed)."""
        return self.rows - self.invalid_rows

    @property
    def warnings(self) -> int:
        """Number of warning issues."""
        return self.issues.count("warning")

    @property
    def errors(self) -> int:
        """Number of error issues."""
        return self.issues.count("error")

    def by_code(self) -> dict[str, int]:
        """Issue counts by code, most frequent first."""
        return self.issues.by_code()


def column_letter(index: int) -> str:
    """Excel column letter of a 0-based index (0 → A, 26 → AA)."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


class _Collector:
    """Accumulates issues column-wise so a million-row sheet costs little."""

    def __init__(self, sheet: Sheet) -> None:
        self.sheet = sheet
        self.parts: list[dict[str, np.ndarray]] = []
        self.invalid = np.zeros(len(sheet), dtype=bool)
        self.lock = threading.Lock()

    def label(self, index: int | None, fallback: str = "") -> str:
        if index is None:
            return fallback
        header = self.sheet.headers[index]
        return header if header.strip() else f"(column {column_letter(index)})"

    def add(
        self,
        positions: np.ndarray,
        col: int | None,
        values: pa.Array | np.ndarray | list[str] | str,
        code: str,
        severity: Severity,
        message: pa.Array | np.ndarray | list[str] | str,
        column_name: str = "",
    ) -> None:
        """Add one issue per position (0-based data rows)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return
        part = {
            "row": self.sheet.row_numbers[positions],
            "column": _texts(self.label(col, column_name), len(positions)),
            "value": _texts(values, len(positions), positions),
            "code": _texts(code, len(positions)),
            "severity": _texts(severity, len(positions)),
            "message": _texts(message, len(positions)),
            "_col": np.full(len(positions), -1 if col is None else col, dtype=np.int64),
        }
        with self.lock:
            self.parts.append(part)
            if severity == "error":
                self.invalid[positions] = True

    def add_header(
        self,
        col: int | None,
        code: str,
        severity: Severity,
        message: str,
        column_name: str = "",
        all_rows_invalid: bool = False,
    ) -> None:
        """Add one issue on the header row."""
        value = self.sheet.headers[col] if col is not None else ""
        self.parts.append(
            {
                "row": np.array([self.sheet.header_row], dtype=np.int64),
                "column": _texts(self.label(col, column_name), 1),
                "value": _texts(value, 1),
                "code": _texts(code, 1),
                "severity": _texts(severity, 1),
                "message": _texts(message, 1),
                "_col": np.array([-1 if col is None else col], dtype=np.int64),
            }
        )
        if all_rows_invalid:
            self.invalid[:] = True

    def frame(self) -> Issues:
        """All issues, in row order then column order."""
        if not self.parts:
            empty = {c: pa.array([], pa.large_string()) for c in ISSUE_COLUMNS}
            empty["row"] = np.empty(0, dtype=np.int64)
            return Issues(empty)
        rows = np.concatenate([p["row"] for p in self.parts])
        cols = np.concatenate([p["_col"] for p in self.parts])
        order = np.lexsort((cols, rows))
        in_order = bool(np.all(order[1:] > order[:-1]))
        out: dict[str, Any] = {"row": rows[order]}
        take = pa.array(order)
        # Column by column, letting go of each part as it is merged: a million issues hold
        # hundreds of MB of messages, and three copies at once would be too many.
        parts, self.parts = self.parts, []
        for c in ISSUE_COLUMNS[1:]:
            pieces = [p.pop(c) for p in parts]
            merged = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
            del pieces
            out[c] = merged if in_order else pc.take(merged, take)
            del merged
        return Issues(out)


def _texts(values: Any, n: int, positions: np.ndarray | None = None) -> pa.Array:
    """``values`` as a large_string Arrow array of length ``n``: a scalar is repeated, a list is
    one value per issue, and an Arrow column is the whole sheet column to take ``positions``
    from (or, without ``positions``, one value per issue)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if positions is not None:
            values = pc.take(values, pa.array(positions))
        return values if values.type == pa.large_string() else pc.cast(values, pa.large_string())
    if isinstance(values, str):
        return pa.repeat(nz.lit(values), n)
    return pa.array([str(v) for v in values], pa.large_string())


def _blank(arr: pa.Array) -> np.ndarray:
    out: np.ndarray = pc.equal(arr, "").to_numpy(zero_copy_only=False)
    return out


def validate_sheet(
    sheet: Sheet, kind: SheetKind, options: ValidateOptions | None = None
) -> Validation:
    """Validate every row of ``sheet`` as ``kind``.

    Raises ValueError for options that cannot apply (an unknown ``--map`` target, region or
    time zone); every problem with the data itself is returned as an issue.
    """
    opts = options or ValidateOptions()
    region_country_code(opts.default_region)
    if opts.timezone is not None and not nz.canonical_timezone(opts.timezone):
        hint = nz.suggest_timezone(opts.timezone)
        raise ValueError(
            f"--timezone {opts.timezone!r} is not an IANA time zone name"
            + (f"; did you mean {hint}?" if hint else " (such as America/New_York)")
        )
    _default_send_time(opts)
    hmap = match_headers(
        kind, sheet.headers, mapping=opts.mapping, extra_columns=opts.extra_columns
    )
    out = _Collector(sheet)
    n = len(sheet)
    raw: dict[str, pa.Array] = {}
    for name, idx in hmap.fields.items():
        raw[name] = nz.strip(nz.to_arrow(sheet.column(idx)))
    normalized: dict[str, pa.Array] = {}

    for problem in hmap.problems:
        out.add_header(
            problem.index,
            problem.code,
            problem.severity,
            problem.message,
            column_name=problem.header,
            all_rows_invalid=problem.code in ("column.duplicate", "map.unknown_header"),
        )
    _check_shape(sheet, hmap, kind, out, opts)

    for col in kind.columns:
        given = opts.all_rows_value(col)
        if given is None:
            continue
        fill = pa.array([given.strip()] * n, pa.large_string())
        raw[col.name] = (
            pc.if_else(pc.equal(raw[col.name], ""), fill, raw[col.name])
            if col.name in raw
            else fill
        )

    def check_column(col: Column) -> pa.Array:
        values = raw[col.name]
        idx = hmap.fields.get(col.name)
        blank = _blank(values)
        if col.required:
            missing = np.flatnonzero(blank)
            why = col.missing_hint or f"{col.name} is required"
            out.add(missing, idx, values, "required.missing", "error", why, col.name)
        checker = _CHECKS.get(col.type)
        if checker is None:
            return values
        return checker(_Cell(values, blank, idx, col.name, out, sheet, opts))

    # Arrow kernels release the GIL, so columns are checked side by side on every core.
    present = [c for c in kind.columns if c.name in raw]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        prop_future = (
            pool.submit(_check_property_columns, sheet, hmap, out)
            if kind.allows_properties
            else None
        )
        for col, result in zip(present, pool.map(check_column, present), strict=True):
            normalized[col.name] = result
        properties = prop_future.result() if prop_future is not None else {}

    if kind.one_of:
        for group in kind.one_of:
            present = [raw[g] for g in group if g in raw]
            if not present:
                continue
            none = np.ones(n, dtype=bool)
            for arr in present:
                none &= _blank(arr)
            first = hmap.fields.get(group[0], hmap.fields.get(group[-1]))
            out.add(
                np.flatnonzero(none),
                first,
                "",
                "required.missing",
                "error",
                f"give {' or '.join(group)}",
                group[0],
            )

    if kind.long_properties:
        _check_long_properties(raw, hmap, out, normalized)
    schedule, zone = kind.schedule_column, kind.schedule_zone_column
    if schedule is not None and schedule in raw:
        zones = normalized.get(zone) if zone is not None else None
        normalized[schedule] = _check_send_at(schedule, raw[schedule], zones, hmap, out, opts)
    segments: dict[str, int] = {}
    text = kind.merge_text
    if text is not None and text in raw:
        normalized[text], segments = _check_messages(sheet, text, raw[text], hmap, out)

    _check_example_row(sheet, kind, hmap, out)
    _check_duplicates(kind, normalized, raw, hmap, out)
    return Validation(
        kind,
        sheet,
        hmap,
        out.frame(),
        out.invalid,
        normalized,
        properties,
        segments,
        opts,
        _consent_counts(sheet, kind, hmap, raw, normalized),
    )


def _consent_counts(
    sheet: Sheet,
    kind: SheetKind,
    hmap: HeaderMap,
    raw: dict[str, pa.Array],
    normalized: dict[str, pa.Array],
) -> ConsentCounts | None:
    """The SMS-consent column's rows counted by consent; None when the sheet has none."""
    col = next((c for c in kind.columns if c.type == "consent" and c.name in hmap.fields), None)
    if col is None:
        return None
    values = normalized[col.name]
    yes = int(pc.sum(pc.equal(values, "true")).as_py() or 0)
    no = int(pc.sum(pc.equal(values, "false")).as_py() or 0)
    blank = int(_blank(raw[col.name]).sum())
    return ConsentCounts(
        col.name,
        sheet.headers[hmap.fields[col.name]],
        yes,
        no,
        blank,
        len(values) - yes - no - blank,
    )


# ---------------------------------------------------------------------------------------------
# Sheet shape


def _check_shape(
    sheet: Sheet, hmap: HeaderMap, kind: SheetKind, out: _Collector, opts: ValidateOptions
) -> None:
    header_hint: str | None = None
    for col in kind.columns:
        if not col.required or col.name in hmap.fields:
            continue
        if opts.all_rows_value(col):
            continue
        if header_hint is None:
            header_hint = _header_row_hint(sheet, kind, opts) or _other_kind_hint(sheet, kind)
        hint = ""
        if col.aliases:
            hint = f" (also accepted: {', '.join(repr(a) for a in col.aliases[:4])}; or --map)"
        unmatched = [sheet.headers[i] for i in hmap.unknown if sheet.headers[i].strip()]
        if unmatched and not header_hint:
            listing = ", ".join(repr(h) for h in unmatched[:6])
            hint += f'; unmatched headers: {listing}; pass --map "Header={col.name}"'
        out.add_header(
            None,
            "column.missing",
            "error",
            f"the sheet has no {col.name} column{hint}{header_hint}",
            col.name,
            all_rows_invalid=True,
        )
    for group in kind.one_of:
        if not any(g in hmap.fields for g in group):
            out.add_header(
                None,
                "column.missing",
                "error",
                f"the sheet needs a {' or '.join(group)} column",
                group[0],
                all_rows_invalid=True,
            )
    used_by_merge: set[str] = set()
    if kind.merge_text is not None:
        given = opts.all_rows_value(kind.column(kind.merge_text))
        idx = hmap.fields.get(kind.merge_text)
        texts = (
            nz.to_arrow(sheet.column(idx))
            if idx is not None
            else pa.array([given or ""], pa.large_string())
        )
        if given is not None:
            texts = pa.concat_arrays([texts, pa.array([given], pa.large_string())])
        for t in pc.unique(texts).to_pylist():
            used_by_merge.update(header_key(f) for f in nz.merge_fields(t or ""))
    for index in hmap.unknown:
        header = sheet.headers[index]
        if header_key(header) in used_by_merge or opts.extra_columns == "ignore":
            continue
        if kind.allows_properties:
            hint = "; name it property:<name> or pass --extra-columns properties to import it"
        elif kind.merge_text is not None:
            hint = "; use it as a {{merge field}} or remove it"
        else:
            hint = ""
        out.add_header(
            index,
            "column.unknown",
            "warning",
            f"{kind.name} sheets have no column {header!r}; ignored{hint}",
        )
    named = set(hmap.fields.values()) | {p.index for p in hmap.properties} | set(hmap.unknown)
    for index, header in enumerate(sheet.headers):
        if index in named or header.strip():
            continue
        arr = nz.to_arrow(sheet.column(index))
        filled = int(pc.sum(pc.greater(pc.utf8_length(nz.strip(arr)), 0)).as_py() or 0)
        if filled:
            out.add_header(
                index,
                "column.unnamed",
                "warning",
                f"{filled:,} values in column {column_letter(index)} have no header; "
                "they are ignored (give the column a header)",
            )
    _check_extra_cells(sheet, hmap, out)
    for rownum, col_index, lines in sheet.swallowed:
        at = int(np.searchsorted(sheet.row_numbers, rownum))
        out.add(
            np.array([at]),
            col_index,
            nz.to_arrow(sheet.column(col_index)),
            "csv.unbalanced_quote",
            "error",
            f"this quoted value runs over {lines} lines, some shaped like whole rows: a stray "
            '" probably merged the rows below into this cell. Check the quotes on this row',
        )


def _check_extra_cells(sheet: Sheet, hmap: HeaderMap, out: _Collector) -> None:
    """Cells beyond the last header would be lost: one ``row.extra_cells`` error per row. So
    are cells left in the ``sonar__extra_N`` columns where a split file keeps them."""
    spill: dict[int, list[str]] = {}
    for rownum, cells in sheet.extra_cells:
        pos = int(np.searchsorted(sheet.row_numbers, rownum))
        if pos < len(sheet.row_numbers) and sheet.row_numbers[pos] == rownum:
            spill[pos] = [c for c in cells if c.strip()]
    if spill:
        if sheet.format == "csv":
            why = "a delimiter inside an unquoted value?"
        else:
            why = "give the column a header, or move the values into the right column"
        positions = sorted(spill)
        out.add(
            np.asarray(positions),
            None,
            [" | ".join(spill[p]) for p in positions],
            "row.extra_cells",
            "error",
            [
                f"{nz.plural(len(spill[p]), 'value')} beyond the last header column would be "
                f"lost; {why}"
                for p in positions
            ],
            "(extra cells)",
        )
    for index in hmap.extra:
        values = nz.strip(nz.to_arrow(sheet.column(index)))
        filled = pc.greater(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
        out.add(
            np.flatnonzero(filled),
            index,
            values,
            "row.extra_cells",
            "error",
            "this cell stood beyond the last header column of the original file; move it into "
            "the right column or clear it",
        )


def _check_example_row(sheet: Sheet, kind: SheetKind, hmap: HeaderMap, out: _Collector) -> None:
    """A row that is still the template's example row (every template column present holds its
    example value) is an error, so a template filled in below its example never sends it."""
    from sonar_bulk.templates import template_example, template_headers

    by_key = {header_key(h): i for i, h in enumerate(sheet.headers)}
    for name, index in hmap.fields.items():
        by_key[header_key(name)] = index
    same: np.ndarray | None = None
    compared: set[str] = set()
    for header, example in zip(template_headers(kind), template_example(kind), strict=True):
        idx = by_key.get(header_key(header))
        if idx is None or not example:
            continue
        equal = pc.equal(nz.strip(nz.to_arrow(sheet.column(idx))), example)
        hit = equal.to_numpy(zero_copy_only=False)
        same = hit if same is None else same & hit
        compared.add(header)
    if not all(c.name in compared for c in kind.columns if c.required):
        return  # the example's key is not in this sheet: no row can be the example
    if same is None or not same.any():
        return
    key = next(c.name for c in kind.columns if c.required)
    idx = by_key[header_key(key)]
    out.add(
        np.flatnonzero(same),
        idx,
        nz.to_arrow(sheet.column(idx)),
        "row.example",
        "error",
        "this is the template's example row; replace it with real data or delete it",
        key,
    )


def _other_kind_hint(sheet: Sheet, kind: SheetKind) -> str:
    """When the headers hold every required column of another kind, name that kind."""
    best: tuple[int, str] | None = None
    for other in KINDS.values():
        if other.name == kind.name:
            continue
        found = match_headers(other, sheet.headers).fields
        needed = [c.name for c in other.columns if c.required and not c.all_rows_option]
        groups_ok = all(any(g in found for g in group) for group in other.one_of)
        if needed and all(n in found for n in needed) and groups_ok:
            if best is None or len(found) > best[0]:
                best = (len(found), other.name)
    if best is None:
        return ""
    article = "an" if best[1][0] in "aeiou" else "a"
    return f"; this looks like {article} {best[1]} sheet (--kind {best[1]})"


def _header_row_hint(sheet: Sheet, kind: SheetKind, opts: ValidateOptions) -> str:
    """When a row below holds the kind's required headers (an export with a title line on top),
    say which one to pass as --header-row."""
    head = sheet.data.slice(0, 10).to_pylist()
    for position, row in enumerate(head):
        cells = [str(v or "") for v in row.values()]
        found = match_headers(kind, cells, mapping=opts.mapping).fields
        if all(c.name in found for c in kind.columns if c.required and not c.all_rows_option):
            return (
                f"; row {int(sheet.row_numbers[position])} looks like the header: pass "
                f"--header-row {int(sheet.row_numbers[position])}"
            )
    return ""


# ---------------------------------------------------------------------------------------------
# Per type checks: (values, blank, col index, out, sheet, opts, field) → normalized values


@dataclass(frozen=True)
class _Cell:
    """What a per-type check gets: one column's stripped values and where to report."""

    values: pa.Array
    blank: np.ndarray
    idx: int | None
    name: str
    out: _Collector
    sheet: Sheet
    opts: ValidateOptions

    def report(
        self, positions: np.ndarray, code: str, message: Any, severity: Severity = "error"
    ) -> None:
        self.out.add(positions, self.idx, self.values, code, severity, message, self.name)


def _check_phone(c: _Cell) -> pa.Array:
    flags = c.sheet.numeric.get(c.idx) if c.idx is not None else None
    result = nz.phones_column(c.values, c.opts.default_region, flags)
    problems = result.problems
    e164 = result.e164
    if flags is not None and flags.any():
        # A workbook number cell of 10+ digits with at most 6 significant ones is what Excel
        # keeps of a phone it showed as 1.31056E+10: the last digits are gone.
        rounded = flags & pc.match_substring_regex(c.values, r"^\d{1,6}0{4,}$").to_numpy(
            zero_copy_only=False
        )
        rounded &= pc.utf8_length(c.values).to_numpy(zero_copy_only=False) >= 10
        for at in np.flatnonzero(rounded).tolist():
            text = c.values[at].as_py()
            shown = f"{text[0]}.{text[1:6].rstrip('0') or '0'}E+{len(text) - 1}"
            problems[at] = nz.PhoneResult(
                code="excel.damaged_number",
                message=f"{text} looks like a number Excel rounded (shown as {shown}); its last "
                "digits are lost. Format the column as Text and type the full number",
            )
        if rounded.any():
            e164 = pc.if_else(pa.array(rounded), nz.lit(""), e164)
    bad = np.flatnonzero(problems != None)  # noqa: E711 - elementwise on an object array
    groups: dict[tuple[str, str], list[int]] = {}
    for pos in bad:
        groups.setdefault((problems[pos].code, problems[pos].severity), []).append(int(pos))
    for (code, severity), positions in groups.items():
        # Messages go to Arrow a chunk at a time, and each row's result is let go once copied:
        # a million unique messages should not be held twice.
        chunks = []
        for start in range(0, len(positions), 50_000):
            part = positions[start : start + 50_000]
            chunks.append(pa.array([problems[p].message for p in part], pa.large_string()))
            problems[part] = None
        messages = pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
        c.report(np.asarray(positions), code, messages, severity)  # type: ignore[arg-type]
    return e164


def _check_pattern(pattern: str, code: str, message: str) -> Callable[[_Cell], pa.Array]:
    """A check that non-blank values match ``pattern`` (Arrow's RE2, vectorized)."""

    def check(c: _Cell) -> pa.Array:
        ok = pc.match_substring_regex(c.values, pattern).to_numpy(zero_copy_only=False)
        c.report(np.flatnonzero(~ok & ~c.blank), code, message)
        return c.values

    return check


def _check_mapped(
    func: Callable[[str], str | None], code: str, message: str
) -> Callable[[_Cell], pa.Array]:
    """A check that normalizes each distinct value with ``func`` (None: invalid)."""

    def check(c: _Cell) -> pa.Array:
        parsed, failed = nz.map_distinct_text(c.values, func)
        c.report(np.flatnonzero(failed), code, message)
        return parsed

    return check


def _bool_text(text: str) -> str | None:
    try:
        value = nz.parse_bool(text)
    except ValueError:
        return None
    return "" if value is None else ("true" if value else "false")


def _consent_text(text: str) -> str | None:
    try:
        value = nz.parse_consent(text)
    except ValueError:
        return None
    return "" if value is None else ("true" if value else "false")


def _check_zip(c: _Cell) -> pa.Array:
    four = pc.match_substring_regex(c.values, r"^\d{4}$").to_numpy(zero_copy_only=False)
    us_like = region_country_code(c.opts.default_region) == 1
    if us_like and four.any():
        pos = np.flatnonzero(four)
        fixed = pc.binary_join_element_wise(
            nz.lit("0"), pc.take(c.values, pa.array(pos)), nz.lit("")
        )
        msg = pc.binary_join_element_wise(
            nz.lit("looks like ZIP "),
            fixed,
            nz.lit(" lost its leading 0 in Excel; format the column as Text and re-enter it"),
            nz.lit(""),
        )
        c.report(pos, "excel.lost_leading_zero", msg, "warning")
    ok = pc.match_substring_regex(c.values, nz.POSTAL_PATTERN).to_numpy(zero_copy_only=False)
    c.report(
        np.flatnonzero(~ok & ~c.blank & ~(four & us_like)),
        "zip.invalid",
        "does not look like a ZIP or postal code",
        "warning",
    )
    return c.values


def _check_tags(c: _Cell) -> pa.Array:
    def split(text: str) -> str:
        parts = [t.strip() for t in text.replace(";", ",").split(",")]
        return ",".join(dict.fromkeys(t for t in parts if t))

    return pa.array(nz.map_distinct(c.values, split), pa.large_string())


def _check_property_type(c: _Cell) -> pa.Array:
    lowered = pc.utf8_lower(c.values)
    ok = pc.is_in(lowered, pa.array(PROPERTY_TYPES, pa.large_string()))
    c.report(
        np.flatnonzero(~ok.to_numpy(zero_copy_only=False) & ~c.blank),
        "property.type_invalid",
        f"use one of {', '.join(PROPERTY_TYPES)}, or leave blank to infer",
    )
    return lowered


_CHECKS: dict[str, Callable[[_Cell], pa.Array]] = {
    "phone": _check_phone,
    "email": _check_pattern(
        nz.EMAIL_PATTERN, "email.invalid", "not a valid email address (expected name@example.com)"
    ),
    "url": _check_pattern(
        nz.URL_PATTERN,
        "url.invalid",
        "not an http(s) URL (expected https://example.com/picture.png)",
    ),
    "bool": _check_mapped(
        _bool_text, "bool.invalid", "use true/false, yes/no or 1/0 (blank leaves it as is)"
    ),
    "consent": _check_mapped(
        _consent_text,
        "bool.invalid",
        f"not an SMS-consent value; use {CONSENT_HELP} (blank leaves it as is)",
    ),
    "timezone": _check_mapped(
        nz.canonical_timezone,
        "timezone.invalid",
        "use an IANA time zone name such as America/New_York",
    ),
    "zip": _check_zip,
    "tags": _check_tags,
    "property_type": _check_property_type,
}


# ---------------------------------------------------------------------------------------------
# Properties


def _property_code(ptype: str) -> str:
    """The issue code of a property value that is not a valid ``ptype``."""
    return {"number": "number.invalid", "boolean": "bool.invalid"}.get(ptype, "datetime.invalid")


_GROUPED_THREE = re.compile(r"[+-]?\d{1,3}[.,]\d{3}")


def _coerce(text: str, ptype: str, sheet: Sheet) -> str:
    """:func:`normalize.coerce_property`, except that in a ``;``-separated file (as a European
    Excel saves it) ``12,500`` or ``1.234`` could be read two ways, so it is refused."""
    if ptype == "number" and sheet.delimiter == ";" and _GROUPED_THREE.fullmatch(text.strip()):
        value = text.strip()
        grouped = value.replace(",", "").replace(".", "")
        decimal = value.replace(".", "").replace(",", ".") if "," in value else value
        raise ValueError(
            f"{value!r} could be {grouped} or {decimal} in a ;-separated file (Europe writes "
            f"decimals with a comma); write {grouped} for thousands or {decimal} for decimals"
        )
    return nz.coerce_property(text, ptype)


def _coerce_column(values: pa.Array, ptype: str, idx: int, name: str, out: _Collector) -> pa.Array:
    if ptype == "string":
        return values
    errors: dict[str, str] = {}

    def coerce(text: str) -> str | None:
        try:
            return _coerce(text, ptype, out.sheet)
        except ValueError as exc:
            errors[text] = str(exc)
            return None

    coerced, failed = nz.map_distinct_text(values, coerce)
    bad = np.flatnonzero(failed)
    code = _property_code(ptype)
    if len(bad):
        texts = pc.take(values, pa.array(bad)).to_pylist()
        out.add(
            bad,
            idx,
            values,
            code,
            "error",
            [f"property {name} is a {ptype}: {errors[t]}" for t in texts],
            name,
        )
    return coerced


def _check_property_columns(
    sheet: Sheet, hmap: HeaderMap, out: _Collector
) -> dict[str, tuple[str, pa.Array]]:
    props: dict[str, tuple[str, pa.Array]] = {}
    for p in hmap.properties:
        values = nz.strip(nz.to_arrow(sheet.column(p.index)))
        ptype = p.type or nz.infer_property_type(pc.unique(values).to_pylist())
        props[p.name] = (ptype, _coerce_column(values, ptype, p.index, p.name, out))
    return props


def _check_long_properties(
    raw: dict[str, pa.Array], hmap: HeaderMap, out: _Collector, normalized: dict[str, pa.Array]
) -> None:
    if "value" not in raw:
        return
    values = raw["value"]
    types = normalized.get("type")
    n = len(values)
    names = raw.get("property_name", pa.array([""] * n, pa.large_string()))
    if types is None:
        types = pa.array([""] * n, pa.large_string())
    # infer per property name over the whole sheet, so one property gets one type
    name_list = names.to_pylist()
    type_list = types.to_pylist()
    value_list = values.to_pylist()
    untyped: dict[str, set[str]] = {}
    for pname, ptype, value in zip(name_list, type_list, value_list, strict=True):
        if ptype == "":
            untyped.setdefault(pname, set()).add(value)
    inferred = {pname: nz.infer_property_type(vals) for pname, vals in untyped.items()}
    result = []
    bad_pos: list[int] = []
    bad_msg: list[str] = []
    bad_code: list[str] = []
    for i, (pname, ptype, value) in enumerate(zip(name_list, type_list, value_list, strict=True)):
        t = ptype if ptype in PROPERTY_TYPES else inferred.get(pname, "string")
        try:
            result.append(_coerce(value, t, out.sheet))
        except ValueError as exc:
            result.append("")
            bad_pos.append(i)
            bad_msg.append(f"property {pname} is a {t}: {exc}")
            bad_code.append(_property_code(t))
        type_list[i] = t
    for code in set(bad_code):
        sel = [j for j, c in enumerate(bad_code) if c == code]
        out.add(
            np.asarray([bad_pos[j] for j in sel]),
            hmap.fields["value"],
            values,
            code,
            "error",
            [bad_msg[j] for j in sel],
            "value",
        )
    normalized["value"] = pa.array(result, pa.large_string())
    normalized["type"] = pa.array(type_list, pa.large_string())


# ---------------------------------------------------------------------------------------------
# Campaign scheduling


def utc_now() -> dt.datetime:
    """The time now, UTC (one place, so a test can move it)."""
    return dt.datetime.now(dt.UTC)


def _check_send_at(
    name: str,
    values: pa.Array,
    zones: pa.Array | None,
    hmap: HeaderMap,
    out: _Collector,
    opts: ValidateOptions,
) -> pa.Array:
    """Check the schedule column ``name``: each date-time must read, have a time, exist in its
    zone, and be in the future. ``zones`` (normalized time zones per row) reads a value without
    a UTC offset."""
    idx = hmap.fields.get(name)
    now = opts.now or utc_now()
    default_zone = nz.canonical_timezone(opts.timezone) if opts.timezone else None
    default_time = _default_send_time(opts)
    parsed = nz.map_distinct(values, _safe_parse)
    result: list[str] = []
    issues: dict[str, tuple[list[int], list[str], Severity]] = {}

    def note(code: str, pos: int, message: str, severity: Severity = "error") -> None:
        entry = issues.setdefault(code, ([], [], severity))
        entry[0].append(pos)
        entry[1].append(message)

    zone_list = zones.to_pylist() if zones is not None else None
    for pos, item in enumerate(parsed):
        if item is None:
            result.append("")
            continue
        if isinstance(item, str):
            note(
                "datetime.invalid",
                pos,
                f"{item}; use ISO 8601 like 2030-12-01T09:30:00-08:00 or 12/01/2030 9:30 AM",
            )
            result.append("")
            continue
        zone = (zone_list[pos] if zone_list and zone_list[pos] else None) or default_zone
        text = "" if item.has_time else str(values[pos].as_py())  # named by no_time only
        when, problems = _read_send_at(item, zone, default_time, text)
        for code, message, severity in problems:
            note(code, pos, message, severity)
        if when is None:
            result.append("")
            continue
        if item.ambiguous:
            note(
                "datetime.ambiguous",
                pos,
                f"read as {when:%B} {when.day}, {when.year} (month first); write "
                f"{when.date().isoformat()} to be sure",
                "warning",
            )
        if when <= now:
            note(
                "datetime.past",
                pos,
                f"{when.isoformat(timespec='minutes')} is in the past; Sonar would send now "
                "or not at all. Fix the date or leave send_at blank to send now",
            )
            result.append("")
            continue
        result.append(when.isoformat(timespec="seconds"))
    for code, (positions, messages, severity) in issues.items():
        out.add(np.asarray(positions), idx, values, code, severity, messages, name)
    return pa.array(result, pa.large_string())


def _default_send_time(opts: ValidateOptions) -> dt.time | None:
    """``--default-send-time`` as a time of day; ValueError (a usage error) when it is not one."""
    if opts.default_send_time is None:
        return None
    try:
        return nz.parse_clock_time(opts.default_send_time)
    except ValueError as exc:
        raise ValueError(f"--default-send-time: {exc}") from None


def _read_send_at(
    item: nz.ParsedDateTime,
    zone: str | None,
    default_time: dt.time | None,
    text: str,
) -> tuple[dt.datetime | None, list[tuple[str, str, Severity]]]:
    """The instant one send_at cell means, out loud: a date alone takes ``default_time`` (else
    ``datetime.no_time``); a value without an offset is read in ``zone`` (else
    ``datetime.no_timezone``), where a time the clocks skip is ``datetime.dst_gap`` and one
    they repeat is read as the first (``datetime.dst_repeated``). None when it can't be sent.
    ``text`` is the cell as written, for the messages."""
    problems: list[tuple[str, str, Severity]] = []
    when = item.value
    if not item.has_time:
        if default_time is None:
            problems.append(
                (
                    "datetime.no_time",
                    f"{text} is a date with no time (it would go out at 00:00, midnight); add a "
                    f"time, such as {when:%Y-%m-%d} 09:00, or give --default-send-time HH:MM",
                    "error",
                )
            )
        else:
            when = dt.datetime.combine(when.date(), default_time, when.tzinfo)
    if when.tzinfo is None:
        if not zone:
            problems.append(
                (
                    "datetime.no_timezone",
                    "no UTC offset in the value; add one (…-08:00), a timezone column, "
                    "or --timezone",
                    "error",
                )
            )
            return None, problems
        local = nz.read_local(when, zone)
        if local.missing and local.jump is not None:
            start, end = (nz.wall_text(j, when) for j in local.jump)
            fix = (
                "pick a time outside the gap, or write the UTC offset"
                if item.has_time
                else "give this row a time, or another --default-send-time"
            )
            problems.append(
                (
                    "datetime.dst_gap",
                    f"{nz.wall_text(when)} does not exist in {zone} (clocks jump from {start} "
                    f"to {end}); {fix}",
                    "error",
                )
            )
            return None, problems
        if local.second is not None and local.jump is not None:
            start, end = (nz.wall_text(j, when) for j in local.jump)
            problems.append(
                (
                    "datetime.dst_repeated",
                    f"{nz.wall_text(when)} happens twice in {zone} (clocks go back from {start} "
                    f"to {end}); read as the first, {nz.offset_text(local.value)}; for the "
                    f"second write {local.second.isoformat(timespec='minutes')}",
                    "warning",
                )
            )
        when = local.value
    if any(severity == "error" for _c, _m, severity in problems):
        return None, problems
    return when, problems


def _safe_parse(text: str) -> nz.ParsedDateTime | str | None:
    if text.strip() == "":
        return None
    try:
        return nz.parse_datetime(text)
    except ValueError as exc:
        return str(exc)


# ---------------------------------------------------------------------------------------------
# Messages


_SINGLE_BRACES = re.compile(r"(?<!\{)\{([^{}\n]{1,64})\}(?!\})")


def _single_braces(text: str, keys: dict[str, int]) -> tuple[str, ...]:
    """``{first_name}`` where ``{{first_name}}`` was meant: single braces around a column name."""
    return tuple(
        f"{{{m.group(1)}}} at character {m.start() + 1} has single braces; write "
        f"{{{{{m.group(1).strip()}}}}}"
        for m in _SINGLE_BRACES.finditer(text)
        if header_key(m.group(1)) in keys
    )[:3]


def _check_messages(
    sheet: Sheet, name: str, texts: pa.Array, hmap: HeaderMap, out: _Collector
) -> tuple[pa.Array, dict[str, int]]:
    """Check the merge fields of the message-text column ``name`` and render each row's text."""
    idx = hmap.fields.get(name)
    keys: dict[str, int] = {}
    for i, h in enumerate(sheet.headers):
        keys.setdefault(header_key(h), i)
    for name, i in hmap.fields.items():
        keys.setdefault(header_key(name), i)
    templates = {t: nz.parse_merge(t) for t in pc.unique(texts).to_pylist()}
    needed = {header_key(f) for tpl in templates.values() for f in tpl.fields}
    # Fields resolve like headers do: {{First Name}} and {{ first_name }} are one column.
    columns: dict[str, list[str]] = {
        key: nz.strip(nz.to_arrow(sheet.column(keys[key]))).to_pylist()
        for key in sorted(needed)
        if key in keys
    }
    text_list = texts.to_pylist()
    rendered: list[str] = []
    syntax_pos: list[int] = []
    syntax_msg: list[str] = []
    unknown_pos: list[int] = []
    unknown_msg: list[str] = []
    empty_pos: list[int] = []
    empty_msg: list[str] = []
    single = {t: _single_braces(t, keys) for t in templates}
    for pos, text in enumerate(text_list):
        tpl = templates[text]
        if tpl.errors or single[text]:
            syntax_pos.append(pos)
            problems = tpl.errors + single[text]
            syntax_msg.append("; ".join(problems) + "; a broken merge tag would be sent as typed")
            rendered.append("")
            continue
        fields = tpl.fields
        if not fields:
            rendered.append(text)
            continue
        missing = [f for f in fields if header_key(f) not in columns]
        if missing:
            unknown_pos.append(pos)
            names = ", ".join("{{" + f + "}}" for f in missing)
            unknown_msg.append(
                f"{names} names no column of this sheet; add the column or fix the spelling"
            )
            rendered.append("")
            continue
        values = {header_key(f): columns[header_key(f)][pos] for f in fields}
        blanks = [f for f in fields if values[header_key(f)] == ""]
        if blanks:
            empty_pos.append(pos)
            names = ", ".join("{{" + f + "}}" for f in blanks)
            empty_msg.append(f"{names} is blank on this row; the text will have a gap")
        rendered.append(tpl.render(values, header_key))
    out.add(np.asarray(syntax_pos), idx, texts, "merge.syntax", "error", syntax_msg, name)
    out.add(np.asarray(unknown_pos), idx, texts, "merge.unknown_field", "error", unknown_msg, name)
    out.add(np.asarray(empty_pos), idx, texts, "merge.empty_value", "warning", empty_msg, name)
    seg = Counter[str]()
    total = 0
    longest = 0
    for text in rendered:
        if not text:
            continue
        s = nz.sms_segments(text)
        seg[s.encoding] += 1
        total += s.segments
        longest = max(longest, s.segments)
    stats = {
        "messages": sum(seg.values()),
        "segments": total,
        "gsm7": seg["GSM-7"],
        "ucs2": seg["UCS-2"],
        "max_segments": longest,
    }
    return pa.array(rendered, pa.large_string()), stats


# ---------------------------------------------------------------------------------------------
# Duplicates


def _check_duplicates(
    kind: SheetKind,
    normalized: dict[str, pa.Array],
    raw: dict[str, pa.Array],
    hmap: HeaderMap,
    out: _Collector,
) -> None:
    present = [k for k in kind.key if k in normalized]
    names = {c.name for c in kind.columns}
    if not present:
        return
    if kind.long_properties:
        who = [k for k in ("phone_number", "email") if k in normalized]
        if "property_name" not in normalized or not who:
            return
        ident = normalized[who[0]]
        if len(who) == 2:
            ident = pc.if_else(
                pc.equal(ident, ""),
                pc.binary_join_element_wise(
                    nz.lit("email:"), pc.utf8_lower(normalized["email"]), nz.lit("")
                ),
                ident,
            )
        keys = [ident, normalized["property_name"]]
    else:
        if len(present) != len(kind.key):
            return
        keys = [normalized[k] for k in present]
    n = len(keys[0])
    usable = np.ones(n, dtype=bool)
    for k in keys:
        usable &= ~_blank(k)
    if not usable.any():
        return
    pos = np.flatnonzero(usable)
    sub = [pc.take(k, pa.array(pos)) for k in keys]
    phone_keys = tuple(
        kind.column(k).type == "phone" and not kind.long_properties if k in names else False
        for k in present
    )
    first = nz.first_occurrence(*sub, e164=phone_keys)
    dup = first != np.arange(len(pos))
    if not dup.any():
        return
    rows = out.sheet.row_numbers[pos[first[dup]]]
    key_vals = sub[0].filter(pa.array(dup))
    what = "customer + property_name" if kind.long_properties else " + ".join(present)
    if kind.duplicate_severity == "error":
        tail = f"; sending it again would send twice. Remove the repeat (same {what})"
    else:
        tail = f"; the later row wins (same {what})"
    messages = pc.binary_join_element_wise(
        nz.lit("duplicate of row "),
        pc.cast(pa.array(rows), pa.large_string()),
        nz.lit(" ("),
        pc.cast(key_vals, pa.large_string()),
        nz.lit(")" + tail),
        nz.lit(""),
    )
    col = hmap.fields.get(kind.key[0])
    values = raw[kind.key[0]] if kind.key[0] in raw else key_vals.to_pylist()
    out.add(pos[dup], col, values, "duplicate.key", kind.duplicate_severity, messages, kind.key[0])
