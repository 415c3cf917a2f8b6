"""A run before anything is sent: each row's :class:`Disposition` and call (:class:`Prepared`),
and what it will do as plain data (:func:`plan_facts`)."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonar_bulk.api.endpoints import Param
from sonar_bulk.connection import Connection
from sonar_bulk.engine.journal import (
    Entry,
    Journal,
)
from sonar_bulk.engine.ledger import Identity, Ledger
from sonar_bulk.engine.options import (
    BulkOptions,
)
from sonar_bulk.plan import Call, Operation, row_values
from sonar_bulk.validation import Validation


class Disposition(enum.IntEnum):
    """What :func:`~sonar_bulk.engine.prepare.prepare` decided for a row (the values of
    :attr:`Prepared.disposition`). HIDDEN: hidden in the sheet; GUARDED: a recipient this
    journal's lineage sent to (or may have), whose row changed since; PAST: a campaign row of
    a resumed run whose send_at has passed (asked whether to send it now)."""

    RUN = 0
    INVALID = 1
    DONE_BEFORE = 2
    HELD = 3
    SENT_BEFORE = 4
    LIMITED = 5
    QUIET_SKIP = 6
    UNCHANGED = 7
    HIDDEN = 8
    GUARDED = 9
    PAST = 10
    DUPLICATE = 11
    NO_CONSENT = 12
    #: A customer Sonar does not have, on a run told to touch existing ones only.
    ABSENT = 13
    #: A recipient who unsubscribed (a STOP reply, Sonar's ``unsubscribed`` answer): never
    #: texted again, whatever the run is told.
    UNSUBSCRIBED = 14


# the members' values by name, plain ints for the arrays of dispositions (a numpy value
# compared with an IntEnum member looks up numpy's hooks on the enum class: 1 µs a comparison)
RUN, INVALID, DONE_BEFORE, HELD = (
    Disposition.RUN.value,
    Disposition.INVALID.value,
    Disposition.DONE_BEFORE.value,
    Disposition.HELD.value,
)
SENT_BEFORE, LIMITED, QUIET_SKIP = (
    Disposition.SENT_BEFORE.value,
    Disposition.LIMITED.value,
    Disposition.QUIET_SKIP.value,
)
UNCHANGED, HIDDEN, GUARDED, PAST = (
    Disposition.UNCHANGED.value,
    Disposition.HIDDEN.value,
    Disposition.GUARDED.value,
    Disposition.PAST.value,
)
DUPLICATE, NO_CONSENT, ABSENT = (
    Disposition.DUPLICATE.value,
    Disposition.NO_CONSENT.value,
    Disposition.ABSENT.value,
)
UNSUBSCRIBED = Disposition.UNSUBSCRIBED.value


@dataclass
class Prepared:
    """Every row's call and fate before anything is sent."""

    operation: Operation
    validation: Validation
    connection: Connection
    options: BulkOptions
    disposition: np.ndarray
    keys: list[str]
    reasons: dict[int, str] = field(default_factory=dict)
    previous: dict[int, Entry] = field(default_factory=dict)
    #: Quiet hours: the zone per row, and the hold (wall-clock seconds) of held rows.
    zones: dict[int, str] = field(default_factory=dict)
    holds: dict[int, float] = field(default_factory=dict)
    #: Quiet hours: each checked recipient's zones, and campaign rows whose send_at quiet
    #: hours moved to the window's end.
    quiet_zones: dict[int, tuple[str, ...]] = field(default_factory=dict)
    moved: dict[int, str] = field(default_factory=dict)
    #: Each row's call as prepare() built it (None: a row it built none for), for a sheet of
    #: up to :data:`KEPT_CALLS` rows; :func:`runnable` builds the others again from their rows.
    calls: list[Call | None] = field(default_factory=list, repr=False)
    #: --diff: what each row would change, and recipients Sonar has as unsubscribed.
    changes: dict[int, str] = field(default_factory=dict)
    unsubscribed: int | None = None
    journal_path: Path | None = None
    results_path: Path | None = None
    failed_path: Path | None = None
    #: Outputs not written where named, because a file there is the user's (edited since
    #: sonar-bulk wrote it, or never its own): (what, the name, the name used instead).
    kept: list[tuple[str, Path, Path]] = field(default_factory=list)
    #: The journal, opened and held (locked) from before the first check to the run's end.
    journal: Journal | None = None
    #: The send ledger, once opened (:meth:`ledger`).
    _ledger: Ledger | None = field(default=None, repr=False)
    #: Sends: who gets what per row, and the row's key in the send ledger.
    who: list[Identity | None] = field(default_factory=list)
    ledger_keys: list[str] = field(default_factory=list)
    #: Rows that may write over another run's send in the ledger (--resend, --retry-unknown),
    #: and rows a sheet hides that the user asked for (--include-hidden).
    forced: set[int] = field(default_factory=set)
    unhidden: set[int] = field(default_factory=set)
    #: The input's SHA-256, once read (the journal keeps it; a resume compares it).
    input_sha: str = ""
    #: The journal's lineage (the ledger's owner of this run's sends).
    journal_lineage: str = ""
    #: Sends of unknown outcome --retry-unknown sends again.
    retried_unknown: int = 0
    #: Upserts: the key of the thing each row sets, and its request's fingerprint
    #: (--changed-only compares it with the last one applied).
    applied_keys: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def to_run(self) -> int:
        return int((self.disposition == RUN).sum())

    @property
    def sent_before(self) -> int:
        return int((self.disposition == SENT_BEFORE).sum())

    @property
    def guarded(self) -> int:
        return int((self.disposition == GUARDED).sum())

    @property
    def past(self) -> int:
        return int((self.disposition == PAST).sum())

    def allow(self, which: int) -> int:
        """Send the rows of disposition ``which`` after all (the user said so: --resend, yes
        at the prompt); they may write over earlier sends in the ledger. How many."""
        rows = np.flatnonzero(self.disposition == which)
        self.disposition[rows] = RUN
        self.forced.update(rows.tolist())
        for i in rows.tolist():
            self.previous.pop(i, None)
        return int(rows.size)

    def described(self, which: int, limit: int = 10) -> list[str]:
        """Lines for people: the first ``limit`` rows of disposition ``which`` and why."""
        numbers = self.validation.sheet.row_numbers
        out = []
        for i in np.flatnonzero(self.disposition == which)[:limit].tolist():
            out.append(f"row {int(numbers[i])}: {self.reasons.get(i, '')}")
        return out

    def ledger(self) -> Ledger:
        """The send ledger: opened when first needed, then kept for the rest of the run (one
        connection for the look-ups, the guard at send time and the records after)."""
        if self._ledger is None:
            self._ledger = Ledger()
        return self._ledger

    def close(self) -> None:
        """Let go of the journal and the ledger (once; a second call does nothing)."""
        journal, self.journal = self.journal, None
        ledger, self._ledger = self._ledger, None
        try:
            if journal is not None:
                journal.close()
        finally:
            if ledger is not None:
                ledger.close()


def plan_facts(p: Prepared) -> dict[str, Any]:
    """What a prepared run will do, as plain data (the CLI's dry-run lines, the web page's
    plan step): rows, rows to run, the --diff classification, unchanged rows, and for sends
    the recipients, known unsubscribed, SMS segments, the first message, the send window
    (seconds at --rate, scheduled times) and rows held by quiet hours."""
    from collections import Counter

    kinds = Counter(text.split(":")[0].split(" (")[0] for text in p.changes.values())
    facts: dict[str, Any] = {
        "command": p.operation.command,
        "target": p.connection.label,
        "rows": p.validation.rows,
        "to_run": p.to_run,
        "diff": dict(kinds.most_common()),
        "unchanged": int((p.disposition == UNCHANGED).sum()),
        "sends": p.operation.sends,
        "unsubscribed_before": int((p.disposition == UNSUBSCRIBED).sum()),
    }
    facts["first_rows"], facts["texts"] = as_sent(p) if p.operation.writes else ([], {})
    if not p.operation.sends:
        return facts
    first = first_to_run(p)
    sample: Mapping[str, Any] = first.params if first is not None else {}
    schedule = p.validation.normalized.get("send_at")
    # the send times of the rows that will go out (found by a trial: a skipped row's counted)
    going = (
        schedule.take(np.flatnonzero(p.disposition == RUN)).to_pylist()
        if schedule is not None
        else []
    )
    times = sorted({t for t in going if t})
    segments = p.validation.segments
    facts.update(
        recipients=p.to_run,
        unsubscribed=p.unsubscribed,
        segments=segments.get("segments", 0) if segments.get("messages") else 0,
        max_segments=segments.get("max_segments", 0),
        first_text=str(sample.get("text") or ""),
        first_to=str(sample.get("to") or ""),
        first_campaign=str(sample.get("campaign_id") or ""),
        rate=p.options.rate,
        seconds=p.to_run / p.options.rate if p.options.rate else 0.0,
        scheduled=(times[0], times[-1]) if times else None,
        held=len(p.holds),
        moved=len(p.moved),
        now=_unscheduled(p) if times else 0,
    )
    return facts


def _unscheduled(p: Prepared) -> int:
    """Rows to run with no send_at of their own (sent at once), in a scheduled campaign."""
    schedule = p.validation.normalized.get("send_at")
    if schedule is None:
        return 0
    import pyarrow.compute as pc

    blank = np.asarray(pc.equal(schedule, ""), dtype=bool)
    return int((blank & (p.disposition == RUN)).sum()) - len(p.moved)


#: The most rows of a sheet whose calls prepare() keeps for the run, each built once (a call
#: is about 700 bytes: 35 MB at 50,000 rows). A bigger sheet's calls are built again from its
#: rows as they are sent, so a million-row run holds no million calls (its memory target).
KEPT_CALLS = 50_000


def runnable(p: Prepared, *, release: bool = False) -> Iterator[tuple[int, Call]]:
    """(index, call) of every row still to run, in order: the call as it will be sent (a
    send_at quiet hours moved included). ``release``: each kept call is let go once handed
    out (the run's own pass: its memory is back by the time the results are written)."""
    kept = p.calls
    for index, built in enumerate(kept):
        if release:
            kept[index] = None
        if p.disposition[index] != RUN:
            continue
        if built is None:  # prepare() made it no call (no consent, then --resend...)
            _, row, props = next(row_values(p.validation, index, 1))
            built = _call(p, row, props)
        yield index, _moved(p, index, built)
    for index, row, props in row_values(p.validation, len(kept)):
        if p.disposition[index] != RUN:
            continue
        yield index, _moved(p, index, _call(p, row, props))


def first_to_run(p: Prepared) -> Call | None:
    """The call of the first row that will go out, as it will (not a row a journal or the
    ledger shows as sent, nor one held back): what a send's question shows."""
    return next((built for _, built in runnable(p)), None)


def _call(p: Prepared, row: dict[str, str], props: dict[str, str]) -> Call:
    built = p.operation.call(row, props)
    assert not isinstance(built, str)  # prepare() made such rows INVALID
    return built


def _moved(p: Prepared, index: int, built: Call) -> Call:
    if index in p.moved:
        return Call(built.endpoint, {**built.params, Param.SEND_AT: p.moved[index]})
    return built


#: How many rows a plan shows on screen as they will be sent (the plan file has them all).
SHOWN_ROWS = 3


def as_sent(p: Prepared, limit: int = SHOWN_ROWS) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """What the rows to run will send, as plain data: the first ``limit`` rows (their sheet
    row, the form fields decoded, and for a message its final text, segments and encoding),
    and for messages the totals over every row to run (``texts``, ``segments``,
    ``max_segments`` and one count per encoding, ``GSM-7`` and ``UCS-2``)."""
    from sonar_bulk.sms import sms_segments

    numbers = p.validation.sheet.row_numbers
    shown: list[dict[str, Any]] = []
    texts: dict[str, int] = {}
    for index, built in runnable(p):
        text = built.params.get(Param.TEXT) if built.endpoint == "send_message" else None
        item: dict[str, Any] | None = None
        if len(shown) < limit:
            item = {"row": int(numbers[index]), "fields": [list(f) for f in built.fields()]}
            shown.append(item)
        elif text is None:
            break  # no texts to count: the first rows are all there is to show
        if text is None:
            continue
        s = sms_segments(str(text))
        if item is not None:
            item.update(text=str(text), segments=s.segments, encoding=s.encoding)
        texts["texts"] = texts.get("texts", 0) + 1
        texts["segments"] = texts.get("segments", 0) + s.segments
        texts["max_segments"] = max(texts.get("max_segments", 0), s.segments)
        texts[s.encoding] = texts.get(s.encoding, 0) + 1
    return shown, texts
