"""Issues are data, not exceptions: every issue code (:data:`CODES`), the issues of a sheet as
columns (:class:`Issues`), and the :class:`Collector` the checks report them to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sonar_bulk import normalize as nz
from sonar_bulk.schema import CONSENT_HELP
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
    "country.unknown": (
        "warning",
        "a country column's cell (`CC`, `Country`...) names no country with a phone numbering "
        "plan; the row's phones are read in `--default-region`",
    ),
    "email.invalid": (
        "error",
        "not a valid email address (the message says why); internationalized addresses "
        "(`élif@example.com`, RFC 6531) are valid",
    ),
    "email.typo": (
        "warning",
        "the domain is one slip away from a big provider's (`gmial.com`, `gmail.con`); the "
        "message gives the likely address. Sent as written unless fixed",
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
    "column.consent_unread": (
        "error",
        "a column that looks like SMS consent (a header such as `SMS Subscription Status`, "
        "yes/no or subscribed/unsubscribed values) that is not one sonar-bulk reads: map it "
        "(`--map 'Header=subscribed'`, or `=opted_out` when a yes means opted out), or rename "
        "or remove it; never read as nothing, which could text someone who said no",
    ),
    "consent.conflict": (
        "error",
        "rows of one customer disagree on SMS consent (a yes and a no): each of them is an "
        "error, as the later row can't be trusted to win (rows go out concurrently) and the "
        "wrong one must not be sent",
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
        "a broken merge tag: an unclosed `{{`, a stray `}}`, an empty `{{}}` or `{{|x}}` (the "
        "message gives its position)",
    ),
    "merge.unknown_field": (
        "error",
        "a `{{field}}` names no column of the sheet",
    ),
    "merge.blank": (
        "error",
        "a `{{field}}` is blank on this row, so the text would have a gap (`Hi , ...`); the "
        "message names the field and its column. Fill it in, give a fallback "
        "(`{{field|fallback}}`), or pass `--allow-blank-merge`",
    ),
    "merge.empty_value": (
        "warning",
        "with `--allow-blank-merge`: a `{{field}}` is blank on this row, and the text is sent "
        "with a gap",
    ),
    "property.type_invalid": (
        "error",
        "a `type` cell is not string/number/boolean/date/datetime",
    ),
    "excel.damaged_number": (
        "error",
        "Excel turned the number into scientific notation and lost digits",
    ),
    "excel.formula_not_computed": (
        "error",
        "a formula the workbook holds no value for (a program wrote it; Excel never computed "
        "it): read, it is blank",
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
    lines += [
        f"| `{code}` | {sev} | {meaning.replace('|', chr(92) + '|')} |"
        for code, (sev, meaning) in CODES.items()
    ]
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


def column_letter(index: int) -> str:
    """Excel column letter of a 0-based index (0 → A, 26 → AA)."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


class Collector:
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
