"""The events sheet: one row per event, CSV or XLSX (an "All" sheet plus one per event type).

Cells come from Sonar's payloads, so in a CSV every cell is neutralized against formula
injection (:func:`sonar_bulk.outputs.neutralize`); an XLSX cell is always text. An XLSX cell
holds at most 32,767 characters: a longer ``raw_json`` is cut there and says so (the CSV
export keeps it whole).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sonar_bulk.events.store import EXPORT_COLUMNS, EventStore, Filter
from sonar_bulk.outputs import check_output_path, write_table

XLSX_CELL_MAX = 32_767
#: Per-event sheets at most (event names come from payloads; every event is on "All").
MAX_EVENT_SHEETS = 50
_TRUNCATED = "… [cut at 32,767 characters: export to .csv for the whole text]"
_BAD_TITLE = re.compile(r"[\[\]:*?/\\']")


def check_export_path(path: Path | str, force: bool, what: str = "-o") -> Path:
    """An export path that may be written: a new file, one this tool exported before, or
    anything with ``force``."""
    return check_output_path(path, what, force=force, ours=list(EXPORT_COLUMNS))


def _fit(row: Sequence[Any]) -> list[Any]:
    out = list(row)
    for i, value in enumerate(out):
        if isinstance(value, str) and len(value) > XLSX_CELL_MAX:
            out[i] = value[: XLSX_CELL_MAX - len(_TRUNCATED)] + _TRUNCATED
    return out


def _units(text: str) -> int:
    """Length as Excel counts it: UTF-16 code units (an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, units: int) -> str:
    while _units(text) > units:
        text = text[:-1]
    return text


def sheet_titles(events: Sequence[str]) -> dict[str, str]:
    """A valid, distinct worksheet title per event type: at most 31 UTF-16 units, none of
    ``[]:*?/\\'`` or control characters, never "All" or Excel's reserved "History"."""
    used = {"all", "history"}
    titles: dict[str, str] = {}
    for event in events[:MAX_EVENT_SHEETS]:
        clean = "".join(c if c.isprintable() else "_" for c in event)
        base = _BAD_TITLE.sub("_", clean).strip() or "(no event)"
        title, n = _cut(base, 31), 1
        while title.lower() in used:
            n += 1
            title = f"{_cut(base, 31 - len(str(n)) - 1)}~{n}"
        used.add(title.lower())
        titles[event] = title
    return titles


def write_export(store: EventStore, path: Path, where: Filter | None = None) -> int:
    """Write the events matching ``where`` to ``path`` (written whole or not at all); how
    many were written."""
    where = where or Filter()
    count = store.counts(where)[0]
    if path.suffix.lower() == ".xlsx":

        def rows(flt: Filter) -> Iterator[list[Any]]:
            for row in store.rows(flt):
                yield _fit(row)

        titles = sheet_titles(store.event_types(where))
        more = [
            (
                title,
                list(EXPORT_COLUMNS),
                rows(Filter(where.since, where.until, (event,))),
            )
            for event, title in titles.items()
        ]
        write_table(path, EXPORT_COLUMNS, rows(where), "All", more_sheets=more)
    else:  # write_table neutralizes every CSV cell
        write_table(path, EXPORT_COLUMNS, store.rows(where))
    return count
