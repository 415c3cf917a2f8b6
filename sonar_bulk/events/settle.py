"""Unknown sends settled with evidence: a send whose outcome is unknown (a 500 after the
request may have been processed, a timeout) becomes ``queued`` only when Sonar's own
``outbound_message`` webhook event says the message went out.

The match (:func:`match`, pure):

- a row with an external message id matches the event with that id, whenever it came;
- else the same recipient (E.164) and the same text (:func:`normalize_text`), or for a
  campaign send the same campaign, with the event received inside the row's window: from the
  start of its run to the end of the collection;
- each event settles at most one row, and an event whose external id belongs to a send Sonar
  answered (a ``queued`` row) settles none: two unknown rows to the same phone with the same
  text need two events.

No event, no change: a row is never taken as sent on anything less.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: The event that proves a message went out.
OUTBOUND = "outbound_message"
#: What a settled send becomes.
SETTLED_STATUS = "queued"
#: The journal's ``error`` of a settled row starts with this, then the proof.
PROOF_PREFIX = "settled by "


def normalize_text(text: str) -> str:
    """A text as compared: NFC, CRLF (and a lone CR) as LF, no-break spaces as spaces,
    stripped, and a leading ``'`` a spreadsheet or a CSV writer put there against formulas
    removed.

    >>> normalize_text("\\u00a0'Caf\\u0065\\u0301 ok\\r\\n")
    'Café ok'
    """
    out = unicodedata.normalize("NFC", text)
    out = out.replace("\r\n", "\n").replace("\r", "\n")
    out = out.replace("\u00a0", " ").replace("\u202f", " ").strip()
    if out.startswith("'"):
        out = out[1:].lstrip()
    return out


@dataclass(frozen=True)
class Unknown:
    """A send whose outcome is unknown: its row index, recipient (E.164), what it sent (the
    text of a message, the campaign of a campaign send), the external id if the answer had
    one, and the start of its window (epoch seconds)."""

    index: int
    phone: str
    text: str = ""
    campaign: str = ""
    external_id: str = ""
    since: float = 0.0


@dataclass(frozen=True)
class Outbound:
    """One ``outbound_message`` event: its uuid, when it was received (epoch seconds), the
    customer's phone (E.164), and the message's text, external id and campaign (if any)."""

    uuid: str
    at: float
    phone: str
    text: str = ""
    external_id: str = ""
    campaign: str = ""


@dataclass(frozen=True)
class Settled:
    """A row proved sent, and the event that proved it."""

    index: int
    event: Outbound

    @property
    def proof(self) -> str:
        """``outbound_message event <uuid> at <time>`` (UTC, to the millisecond)."""
        return f"{OUTBOUND} event {self.event.uuid} at {iso_utc(self.event.at)}"


def iso_utc(ts: float) -> str:
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def match(
    rows: Sequence[Unknown],
    events: Iterable[Outbound],
    until: float | None = None,
    answered_ids: Collection[str] = (),
) -> dict[int, Settled]:
    """Which unknown rows the events prove sent, by row index (see the module docstring).
    ``until`` ends every window (None: no end); ``answered_ids`` are the external ids of
    sends Sonar answered, whose events prove nothing about another row."""
    pool = sorted(events, key=lambda e: (e.at, e.uuid))
    used: set[str] = set()
    out: dict[int, Settled] = {}
    by_id = {e.external_id: e for e in pool if e.external_id}
    for row in rows:
        event = by_id.get(row.external_id) if row.external_id else None
        if event is not None and event.uuid not in used:
            used.add(event.uuid)
            out[row.index] = Settled(row.index, event)
    # an event whose id belongs to a known send (or a row with an id) proves nothing else
    reserved = set(answered_ids) | {r.external_id for r in rows if r.external_id}
    for row in sorted(rows, key=lambda r: r.index):
        if row.index in out or row.external_id or not row.phone:
            continue
        want = normalize_text(row.text) if row.text else ""
        if not want and not row.campaign:
            continue  # nothing to compare: no evidence is possible
        for event in pool:
            if event.uuid in used or event.phone != row.phone:
                continue
            if event.external_id and event.external_id in reserved:
                continue
            if event.at < row.since or (until is not None and event.at > until):
                continue
            if want and normalize_text(event.text) != want:
                continue
            if row.campaign and event.campaign != row.campaign:
                continue
            used.add(event.uuid)
            out[row.index] = Settled(row.index, event)
            break
    return out


# -- reading the events and the rows (not pure: a store, a validation) ----------------------


def _campaign_of(raw: str) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        return ""
    value = payload.get("campaign_id") if isinstance(payload, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""


def _epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def outbound_events(store: Any, since: float | None = None) -> Iterator[Outbound]:
    """The ``outbound_message`` events of an :class:`~sonar_bulk.events.store.EventStore`
    received since ``since``."""
    from sonar_bulk.events.store import EXPORT_COLUMNS, Filter, e164

    at = {name: n for n, name in enumerate(EXPORT_COLUMNS)}
    for row in store.rows(Filter(since=since, events=(OUTBOUND,))):
        yield Outbound(
            uuid=str(row[at["uuid"]]),
            at=_epoch(str(row[at["received_at"]])),
            phone=e164(str(row[at["phone"]])),
            text=str(row[at["text"]]),
            external_id=str(row[at["external_id"]]),
            campaign=_campaign_of(str(row[at["raw_json"]])),
        )


def unknown_rows(
    validation: Any, indices: Iterable[int], external_ids: dict[int, str], since: float
) -> list[Unknown]:
    """The :class:`Unknown` of these rows of a validated sheet: the recipient and the text as
    sent (normalized as for the request), the campaign, the external id if any."""
    norm = validation.normalized

    def cell(name: str, index: int) -> str:
        return str(norm[name][index].as_py() or "") if name in norm else ""

    return [
        Unknown(
            index,
            cell("to", index),
            cell("text", index),
            cell("campaign_id", index),
            external_ids.get(index, ""),
            since,
        )
        for index in indices
    ]


def apply(results: Any, settled: Iterable[Settled]) -> int:
    """Each settled row becomes ``queued`` in ``results`` (a RowResults; its answer, attempts
    and time kept) with the proof in ``sonar__settled_by``; how many."""
    from sonar_bulk.results import Outcome

    count = 0
    for item in settled:
        _, http, error, attempts, finished = results.row(item.index)
        outcome = Outcome(
            SETTLED_STATUS, int(http) if http else None, error, int(attempts or 0), finished
        )
        results.set(item.index, outcome)
        results.note(item.index, "settled_by", item.proof)
        count += 1
    return count


def settle_journal(path: Any, keys: Sequence[str], settled: Iterable[Settled]) -> int:
    """The journal learns what was settled (so ``--retry-unknown`` never sends it again):
    each row's entry found by its key, in whichever run wrote it; how many changed."""
    from sonar_bulk.engine.journal import Journal

    items = [s for s in settled if keys[s.index]]
    if not items:
        return 0
    journal = Journal(path)
    try:
        journal.lock()
        entries = journal.lookup([keys[s.index] for s in items])
        by_run: dict[int, dict[int, tuple[str, str]]] = {}
        for s in items:
            entry = entries.get(keys[s.index])
            if entry is not None and entry.status == "unknown":
                proof = PROOF_PREFIX + s.proof
                by_run.setdefault(entry.run, {})[entry.row] = (SETTLED_STATUS, proof)
        return sum(journal.settle(run, rows) for run, rows in by_run.items())
    finally:
        journal.close()


def settle_run(
    store: Any,
    prepared: Any,
    report: Any,
    until: float,
    notice: Callable[[str], None] = lambda text: None,
) -> list[Settled]:
    """After a run whose events were collected: settle its unknown sends from ``store``
    (events from the run's start to ``until``), the journal first, then ``report`` (its
    results, counts, columns and exit code). The rows settled."""
    import numpy as np

    from sonar_bulk.errors import ExitCode, SonarBulkError
    from sonar_bulk.plan import BAD

    results = report.results
    if not prepared.operation.sends:
        return []
    indices = np.flatnonzero(results.bad_mask(("unknown",))).tolist()
    if not indices:
        return []
    since = report.summary.started
    ids = dict(results.extra.get("external_message_id", {}))
    rows = unknown_rows(prepared.validation, indices, ids, since)
    answered = [v for i, v in ids.items() if v and results.status(i) != "unknown"]
    found = match(rows, outbound_events(store, since), until, answered)
    settled = [found[i] for i in sorted(found)]
    if not settled:
        return []
    journal = prepared.journal_path
    if journal is not None and journal.exists():
        try:
            settle_journal(journal, prepared.keys, settled)
        except (SonarBulkError, sqlite3.Error) as exc:
            notice(
                f"the journal {journal} could not learn the {len(settled)} settled sends "
                f"({exc}): do not --retry-unknown before sonar-bulk settle has run"
            )
    apply(results, settled)
    counts = results.counts()
    report.summary.counts = counts
    report.summary.extra["settled"] = report.summary.extra.get("settled", 0) + len(settled)
    if "settled_by" not in report.extra_columns:
        report.extra_columns.append("settled_by")
    bad = any(counts.get(s) for s in BAD)
    if report.exit_code == ExitCode.ROWS and not report.stopped and not bad:
        report.exit_code = ExitCode.OK
    return settled
