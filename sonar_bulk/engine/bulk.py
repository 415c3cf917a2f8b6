"""A whole bulk run, from a validated sheet to the results sheet: the library under every bulk
command (the CLI only parses flags and talks to people through :class:`Ui`).

Steps: :func:`prepare` turns every row into a call (or the reason it is not made), looks each
call up in the journal (resume, already sent), applies ``--limit`` and quiet hours; then
:func:`execute` runs the calls (or, for a dry run, only plans them) and writes the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import numpy as np

from sonar_bulk import normalize as nz
from sonar_bulk.api.client import SonarClient
from sonar_bulk.api.endpoints import Param, canonical_target
from sonar_bulk.connection import Connection
from sonar_bulk.engine.hidden import HIDDEN_REASON, hidden_mask
from sonar_bulk.engine.journal import (
    Entry,
    Journal,
    file_sha256,
    journal_path_for,
    key_scope,
    now_iso,
    row_key,
)
from sonar_bulk.engine.ledger import (
    Identity,
    Ledger,
    Record,
    applied_key,
    digest,
    identity_of,
    kind_of,
    ledger_key,
)
from sonar_bulk.engine.limiter import Limiter, RateController
from sonar_bulk.engine.runner import GuardFailure, Job, Runner, Settings, Stats
from sonar_bulk.errors import (
    ApiError,
    ExitCode,
    InvalidRows,
    UnsendableRows,
    UsageError,
    exit_code_for,
)
from sonar_bulk.plan import BAD, DONE, SENT, Call, Operation, row_values
from sonar_bulk.results import (
    Outcome,
    RowResults,
    RunSummary,
    check_results_paths,
    results_paths,
    write_results,
)
from sonar_bulk.validate import Validation

#: Requests per second unless --rate says otherwise. Sonar documents no rate limit; its
#: official client sends one request at a time (a few a second). Ten a second stays close to
#: that while a 10,000-row sheet still takes minutes, not hours; raise it with --rate once you
#: know your account's limits (429s slow the run down by themselves).
DEFAULT_RATE = 10.0
DEFAULT_CONCURRENCY = 16

# What prepare decided for each row. HIDDEN: hidden in the sheet; GUARDED: a recipient this
# journal's lineage sent to (or may have), whose row changed since; PAST: a campaign row of a
# resumed run whose send_at has passed (asked whether to send it now).
RUN, INVALID, DONE_BEFORE, HELD, SENT_BEFORE, LIMITED, QUIET_SKIP, UNCHANGED, HIDDEN = range(9)
GUARDED, PAST, DUPLICATE, NO_CONSENT = 9, 10, 11, 12


@dataclass
class BulkOptions:
    """Every knob of a bulk run (the CLI's flags, one to one)."""

    rate: float = DEFAULT_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = 5
    timeout: float = 30.0
    limit: int | None = None
    skip_invalid: bool = False
    dry_run: bool = False
    diff: bool = False
    resume: bool = False
    retry_unknown: bool = False
    #: send again rows the journal shows as sent: None asks, True sends, False skips them
    resend: bool | None = None
    journal: Path | None = None
    results: Path | None = None
    force: bool = False
    quiet_hours: tuple[dt.time, dt.time] | None = None
    quiet_policy: Literal["hold", "skip"] = "hold"
    #: The command line to print for a resume (without any token).
    command_line: str = ""
    #: Columns of the sheet as read (more were added for --text): the results keep these.
    width: int | None = None
    #: Stops the run from another thread as Ctrl-C does (the web page's Stop button).
    stop: StopSignal | None = None
    #: Consult and keep the send ledger (off for a throwaway emulator: the demo's).
    ledger: bool = True
    #: --changed-only (customers upsert, properties set): rows whose request was applied
    #: before to the same target are unchanged, not sent.
    changed_only: bool = False
    #: Run rows the sheet hides too (by default they are skipped and their errors ignored).
    include_hidden: bool = False


def parse_quiet_hours(text: str | None) -> tuple[dt.time, dt.time] | None:
    """``21:00-08:00`` as (start, end) local times; UsageError for anything else."""
    if text is None or not text.strip():
        return None
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        a = dt.datetime.strptime(start.strip(), "%H:%M").time()
        b = dt.datetime.strptime(end.strip(), "%H:%M").time()
    except ValueError:
        raise UsageError(
            f"--quiet-hours {text!r}: expected HH:MM-HH:MM, such as 21:00-08:00"
        ) from None
    if a == b:
        raise UsageError(f"--quiet-hours {text!r}: the window is empty")
    return a, b


class StopSignal:
    """A graceful stop asked from another thread: the run's Ctrl-C, without a terminal.
    :meth:`request` once stops starting new requests (those in flight finish, the journal
    and results are written); twice, it stops at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None
        self.requested = 0

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        with self._lock:
            self._target = (loop, callback)
            for _ in range(self.requested):
                loop.call_soon_threadsafe(callback)

    def detach(self) -> None:
        with self._lock:
            self._target = None

    def request(self) -> None:
        with self._lock:
            self.requested += 1
            if self._target is not None:
                loop, callback = self._target
                loop.call_soon_threadsafe(callback)


class Ui(Protocol):
    """How a run talks to people (the CLI implements it; tests can too)."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def confirm(self, question: str) -> bool: ...

    def progress(self, total: int, stats: Stats, throttled: Callable[[], bool]) -> Any: ...


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
    sample: Call | None = None
    #: --diff: what each row would change, and recipients Sonar has as unsubscribed.
    changes: dict[int, str] = field(default_factory=dict)
    unsubscribed: int | None = None
    journal_path: Path | None = None
    results_path: Path | None = None
    failed_path: Path | None = None
    #: The journal, opened and held (locked) from before the first check to the run's end.
    journal: Journal | None = None
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

    def close(self) -> None:
        """Let go of the journal (once; a second call does nothing)."""
        journal, self.journal = self.journal, None
        if journal is not None:
            journal.close()


# -- prepare ------------------------------------------------------------------------------------


def prepare(
    operation: Operation,
    validation: Validation,
    connection: Connection,
    options: BulkOptions,
    ui: Ui,
) -> Prepared:
    """Decide each row's fate (see the module docstring). UsageError when the run can't
    start: invalid rows without --skip-invalid, a journal of another operation."""
    source = validation.sheet.path
    journal_path: Path | None = options.journal
    if journal_path is None and (not options.dry_run or journal_path_for(source).exists()):
        journal_path = journal_path_for(source)
    if options.resume and (journal_path is None or not journal_path.exists()):
        raise UsageError(f"--resume {journal_path}: no such journal")
    if options.retry_unknown and not options.resume:
        raise UsageError("--retry-unknown goes with --resume JOURNAL (the run it continues)")
    results_at, failed = results_paths(source, options.results)
    failed_at: Path | None = failed
    if options.dry_run and options.results is None:
        results_at, failed_at = source.with_name(f"{source.stem}.plan{results_at.suffix}"), None
    # before any file is made: a run that can't write its results does not start
    _check_outputs(results_at, failed_at, validation, options)
    # The journal is held from here to the run's end: two runs of one sheet never both check
    # who was sent to, and a second one waiting at a prompt can't start sending.
    journal: Journal | None = None
    if journal_path is not None and (journal_path.exists() or not options.dry_run):
        journal = Journal(journal_path)
        try:
            if not options.dry_run:
                journal.lock()
            if journal.legacy and operation.sends:
                raise UsageError(
                    f"journal {journal_path}: written by an older sonar-bulk, which knew a "
                    "send by its exact request; to be sure nobody is texted twice, check Sonar "
                    "and start a new journal (--journal NEW.sqlite)"
                )
        except BaseException:
            journal.close()
            raise
    try:
        prepared = _prepare(operation, validation, connection, options, ui, journal)
        prepared.results_path, prepared.failed_path = results_at, failed_at
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    prepared.journal_path = journal_path
    return prepared


def _past_only(operation: Operation, validation: Validation) -> np.ndarray:
    """Rows whose only errors say their send_at has passed (a campaign resumed late)."""
    mask = np.zeros(validation.rows, dtype=bool)
    if not operation.sends or "send_at" not in validation.normalized or not validation.errors:
        return mask
    cols = validation.issues.columns
    rows = np.asarray(cols["row"])
    errors = np.asarray(cols["severity"].to_numpy(zero_copy_only=False) == "error")
    past = np.asarray(cols["code"].to_numpy(zero_copy_only=False) == "datetime.past")
    only_past = np.setdiff1d(rows[errors & past], rows[errors & ~past])
    mask[np.isin(validation.sheet.row_numbers, only_past)] = True
    return mask


def _no_consent(validation: Validation, disposition: np.ndarray, reasons: dict[int, str]) -> None:
    """A send sheet's SMS-consent column (an export's "Accepts SMS Marketing", "SMS Marketing
    Consent"...) saying no: never texted, whatever else the run is told."""
    consent = validation.normalized.get("subscribed")
    if consent is None:
        return
    import pyarrow.compute as pc

    said_no = np.asarray(pc.fill_null(pc.equal(consent, "false"), False), dtype=bool)
    rows = np.flatnonzero(said_no & np.isin(disposition, (RUN, PAST)))
    if not rows.size:
        return
    header = validation.sheet.headers[validation.headers.fields["subscribed"]]
    disposition[rows] = NO_CONSENT
    for i in rows.tolist():
        reasons[i] = f"not sent: no consent to SMS ({header!r} says no)"


def _prepare(
    operation: Operation,
    validation: Validation,
    connection: Connection,
    options: BulkOptions,
    ui: Ui,
    journal: Journal | None,
) -> Prepared:
    n = validation.rows
    disposition = np.full(n, RUN, dtype=np.int8)
    invalid = np.asarray(validation.invalid, dtype=bool)
    past = np.zeros(n, dtype=bool)
    if journal is not None and any(r.operation == operation.command for r in journal.runs()):
        past = _past_only(operation, validation)  # a campaign resumed after its send_at
    disposition[invalid & ~past] = INVALID
    disposition[invalid & past] = PAST
    hidden = hidden_mask(validation, options.include_hidden)
    if hidden is not None:
        disposition[hidden] = HIDDEN
    if _blocking(validation, options, past):
        raise InvalidRows(validation)
    reasons: dict[int, str] = {}
    if operation.sends:
        _no_consent(validation, disposition, reasons)
    keys: list[str] = [""] * n
    sends = operation.sends
    resync = operation.command in RESYNC and options.ledger
    applied: list[str] = [""] * n if resync else []
    requests: list[str] = [""] * n if resync else []
    who: list[Identity | None] = [None] * n if sends else []
    ledger_keys: list[str] = [""] * n if sends else []
    target = connection.target
    seen: dict[str, int] = {}
    sample: Call | None = None
    numbers = validation.sheet.row_numbers
    for index, row, props in row_values(validation):
        if disposition[index] in (INVALID, NO_CONSENT):
            continue
        hidden_row = disposition[index] == HIDDEN
        built = operation.call(row, props)
        if isinstance(built, str):
            if not hidden_row:
                disposition[index] = INVALID
                reasons[index] = built
            continue
        ident = identity_of(built.endpoint, built.params) if sends else None
        fp = digest(ident.recipient, ident.content) if ident else built.fingerprint()
        occurrence = 0
        if ident is not None:
            # one message to one person once: a second row of the same send is not sent
            if not hidden_row:
                first = seen.get(fp)
                if first is not None:
                    disposition[index] = DUPLICATE
                    reasons[index] = (
                        f"not sent: row {int(numbers[first])} sends the same {ident.kind} "
                        f"to {ident.recipient}"
                    )
                    continue
                seen[fp] = index
        else:
            occurrence = seen.get(fp, 0)
            seen[fp] = occurrence + 1
        keys[index] = row_key(operation.command, target, fp, occurrence)
        if resync:
            applied[index] = applied_key(target, _thing(operation.command, built))
            requests[index] = fp
        if ident is not None:
            who[index] = ident
            ledger_keys[index] = ledger_key(target, operation.command, ident, occurrence)
        if sample is None and disposition[index] == RUN:
            sample = built
    del seen
    unsendable = [i for i in reasons if disposition[i] == INVALID]
    if unsendable and not options.skip_invalid:
        first = min(unsendable)
        raise UnsendableRows(
            f"{len(unsendable):,} rows can't be sent by {operation.command} (row "
            f"{int(validation.sheet.row_numbers[first])}: {reasons[first]}); nothing was sent. "
            "Pass --skip-invalid to send the other rows and report these as invalid",
        )
    prepared = Prepared(operation, validation, connection, options, disposition, keys, reasons)
    prepared.sample = sample
    prepared.journal = journal
    prepared.who, prepared.ledger_keys = who, ledger_keys
    prepared.applied_keys, prepared.requests = applied, requests
    if options.include_hidden:  # the rows this sheet, or another, hides: asked for
        prepared.unhidden.update(np.flatnonzero(disposition == RUN).tolist())
    if journal is not None:
        _look_up_journal(prepared, ui, journal)
    if sends and options.ledger:
        _look_up_ledger(prepared, journal.lineage if journal is not None else "")
    if options.changed_only:
        _leave_out_applied(prepared, journal)
    for i in np.flatnonzero(disposition == PAST).tolist():
        reasons[i] = "not sent: its send_at has passed"
    if options.resend is True:
        prepared.allow(SENT_BEFORE)
        prepared.allow(GUARDED)
    if options.limit is not None:
        runnable = np.flatnonzero(disposition == RUN)
        beyond = runnable[options.limit :]
        disposition[beyond] = LIMITED
    if options.quiet_hours is not None and operation.sends:
        _apply_quiet_hours(prepared)
    return prepared


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
    }
    if not p.operation.sends:
        return facts
    sample: Mapping[str, Any] = {}
    runnable = np.flatnonzero(p.disposition == RUN)
    if runnable.size:  # the first row that will go out (not one a journal shows as sent)
        first = int(runnable[0])
        _, row, props = next(row_values(p.validation, first, 1))
        built = p.operation.call(row, props)
        sample = built.params if not isinstance(built, str) else {}
    schedule = p.validation.normalized.get("send_at")
    times = sorted({t for t in schedule.to_pylist() if t}) if schedule is not None else []
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


def blocking_errors(operation: Operation, validation: Validation, options: BulkOptions) -> bool:
    """Whether errors keep the run from starting (no --skip-invalid). Errors on rows the run
    skips don't: rows hidden in the sheet (without --include-hidden), and campaign rows whose
    only error is a send_at now past when a journal may show them sent (:func:`prepare`
    decides: kept as sent, or asked about). Errors of the header always do."""
    past = np.zeros(validation.rows, dtype=bool)
    journal = options.journal or journal_path_for(validation.sheet.path)
    if operation.sends and journal.exists():
        past = _past_only(operation, validation)
    return _blocking(validation, options, past)


def _blocking(validation: Validation, options: BulkOptions, excused: np.ndarray) -> bool:
    if not validation.errors or options.skip_invalid:
        return False
    hidden = hidden_mask(validation, options.include_hidden)
    if hidden is not None:
        excused = excused | hidden
    if not excused.any():
        return True
    issues = validation.issues.columns
    rows = np.asarray(issues["row"])
    is_error = np.asarray(issues["severity"].to_numpy(zero_copy_only=False) == "error")
    skipped = np.isin(rows, validation.sheet.row_numbers[excused])
    return bool((is_error & ~skipped).any())


#: Operations --changed-only applies to (their requests set state: the same request again
#: changes nothing).
RESYNC = frozenset({"customers upsert", "properties set"})


def _thing(command: str, call: Call) -> str:
    """What a re-sync request sets: the customer (an upsert), or one property of one."""
    params = call.params
    who = str(params.get(Param.PHONE) or params.get(Param.EMAIL) or "")
    if command == "customers upsert":
        return f"customer {who}"
    names = list(params.get(Param.PROPERTIES) or {}) or [str(params.get(Param.PROPERTY_NAME))]
    return f"property {who} {names[0]}"


def _leave_out_applied(p: Prepared, journal: Journal | None) -> None:
    """--changed-only: a row whose request is the last one applied to the same thing (its
    customer, its property) on the same target, by any sheet, is ``unchanged``, with when. A
    value changed back since is a change: the last request differs."""
    if p.operation.command not in RESYNC:
        raise UsageError(
            f"--changed-only applies to {' and '.join(sorted(RESYNC))}, not {p.operation.command}"
        )
    rows = [i for i in np.flatnonzero(p.disposition == RUN).tolist() if p.applied_keys[i]]
    if not rows:
        return
    ledger = Ledger()
    try:
        found = ledger.applied([p.applied_keys[i] for i in rows])
    finally:
        ledger.close()
    for i in rows:
        hit = found.get(p.applied_keys[i])
        if hit is not None and hit[0] == p.requests[i]:
            p.disposition[i] = UNCHANGED
            p.reasons[i] = f"unchanged (sent {hit[1]}, {hit[2]})"


def _record_applied(p: Prepared, results: RowResults, ledger: Ledger) -> None:
    """Upserts this run applied, into the ledger: the last request of each thing (what the
    next --changed-only compares with)."""
    sheet = str(p.validation.sheet.path)
    ok = results.bad_mask(("created", "updated", "ok"))
    # a resume also records what the run it continues applied (a killed run recorded none)
    rows = np.flatnonzero(ok & np.isin(p.disposition, (RUN, DONE_BEFORE))).tolist()
    ledger.record_applied(
        (p.applied_keys[i], p.requests[i], results.row(i)[4] or now_iso(), sheet)
        for i in rows
        if p.applied_keys[i]
    )


def _look_up_journal(p: Prepared, ui: Ui, journal: Journal) -> None:
    """What this sheet's journal (its lineage) knows: rows done, sends held, and recipients
    sent to whose rows changed since (GUARDED: whatever changed, never sent again but with
    --resend)."""
    path = journal.path
    command = p.operation.command
    all_runs = journal.runs()
    runs = [r for r in all_runs if r.operation == command]
    if p.options.resume and not runs:
        others = sorted({r.operation for r in all_runs})
        raise UsageError(
            f"--resume {path}: this journal has no {command} run"
            + (f" (it has: {', '.join(others)})" if others else "")
        )
    if runs:
        last = runs[-1]
        before = last.target if last.target == "emulator" else canonical_target(last.target)
        if p.options.resume and before != p.connection.target:
            raise UsageError(
                f"--resume {path}: the journal's run went to {_shown_target(last.target)}, "
                f"this one would go to {_shown_target(p.connection.target)}; resume against "
                "the same API, or start a new journal with --journal"
            )
        if p.options.resume and last.input != str(p.validation.sheet.path):
            ui.warn(f"the journal's run read {last.input}; rows are matched by content")
    sends = p.operation.sends
    wanted = [k for k in p.keys if k]
    entries = journal.lookup(wanted)
    for index, key in enumerate(p.keys):
        entry = entries.get(key) if key else None
        if entry is None or p.disposition[index] not in (RUN, PAST):
            continue
        maybe_sent = entry.state == "inflight" or entry.status in SENT
        if p.options.resume and entry.run:
            if entry.state == "done" and entry.status in DONE:
                p.disposition[index] = DONE_BEFORE
                p.previous[index] = entry
            elif sends and maybe_sent:
                if p.options.retry_unknown:
                    p.disposition[index] = RUN
                    p.forced.add(index)
                    p.retried_unknown += 1
                else:
                    p.disposition[index] = HELD
                    p.previous[index] = entry
        elif sends and maybe_sent:
            p.disposition[index] = SENT_BEFORE
            p.previous[index] = entry
            p.reasons[index] = (
                f"not sent again: the journal shows it {entry.status or 'in flight'} at "
                f"{entry.finished_at or 'an earlier run'}"
            )
    if p.retried_unknown:
        ui.warn(
            f"--retry-unknown: {p.retried_unknown:,} sends whose outcome is unknown are sent "
            "again; any of them that did go out the first time is texted twice (settle them "
            "first: sonar-bulk settle)"
        )
    if sends:
        _guard_changed_rows(p, journal, set(entries))
    if p.options.resume and runs:
        _say_sheet_changes(p, journal, ui, entries)


def _guard_changed_rows(p: Prepared, journal: Journal, matched: set[str]) -> None:
    """Rows to recipients the lineage sent to (or may have) with another text or campaign:
    the earlier send is matched to such a row of the same recipient, one for one."""
    waiting: dict[str, list[int]] = {}
    for index, key in enumerate(p.keys):
        ident = p.who[index] if p.who else None
        if ident is None or key in matched or p.disposition[index] not in (RUN, PAST):
            continue
        waiting.setdefault(ident.recipient, []).append(index)
    if not waiting:
        return
    scope = key_scope(p.operation.command, p.connection.target)
    for entry, recipient, content in journal.sends_to(scope, list(waiting)):
        if entry.key in matched or not (entry.state == "inflight" or entry.status in SENT):
            continue
        rows = waiting.get(recipient)
        if not rows:
            continue
        index = rows.pop(0)
        ident = p.who[index]
        assert ident is not None
        p.disposition[index] = GUARDED
        p.previous[index] = entry
        if entry.state == "done":
            how = f"sent by an earlier run of this sheet ({entry.status} at {entry.finished_at})"
        else:
            how = "maybe sent by an earlier run of this sheet (in flight when it ended)"
        p.reasons[index] = (
            f"not sent again: {recipient} was {how}: {_quote(content)}; the row now says "
            f"{_quote(ident.content)} (--resend sends it)"
        )


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _shown_target(target: str) -> str:
    return "the emulator" if target == "emulator" else target


def _say_sheet_changes(p: Prepared, journal: Journal, ui: Ui, entries: Mapping[str, Entry]) -> None:
    """On resume: whether the sheet is the one the journal's last run read, and if not, how
    it changed (rows as before, changed rows of recipients sent to, new rows)."""
    before = journal.last_input_sha(p.operation.command)
    now = p.input_sha = file_sha256(p.validation.sheet.path)
    if before is None or before == now:
        return
    same = sum(1 for k in p.keys if k and k in entries)
    guarded = p.guarded
    new = int((p.disposition == RUN).sum()) - sum(
        1 for i in np.flatnonzero(p.disposition == RUN).tolist() if p.keys[i] in entries
    )
    ui.warn(
        f"the sheet changed since the journal's last run: {same:,} rows the journal knows, "
        f"{guarded:,} changed rows of recipients already sent to (not sent again), "
        f"{max(0, new):,} rows it has no record of (not reached before, or new)"
    )


#: A recipient who got another message (or campaign) from another sheet this recently is asked
#: about: most likely the same message, corrected ("tomorow" fixed in a copy of the sheet).
RECENT_HOURS = 24


def _look_up_ledger(p: Prepared, lineage: str) -> None:
    """What other sheets (other lineages) did, from the ledger: the same message or campaign
    to the same recipient on the same target, a row they hide, or another message to the
    recipient in the last :data:`RECENT_HOURS` hours. Each is SENT_BEFORE: asked about, sent
    only when the user says so (--resend). The ledger is asked again for each row at the
    moment it is sent (:meth:`Ledger.reserve`), so a run started since is seen too."""
    wanted = [
        (i, p.ledger_keys[i])
        for i in np.flatnonzero(p.disposition == RUN).tolist()
        if p.ledger_keys[i] and i not in p.forced
    ]
    if not wanted:
        return
    ledger = Ledger()
    try:
        found = ledger.lookup([k for _, k in wanted])
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=RECENT_HOURS)
        recipients = sorted({w.recipient for i, _ in wanted if (w := p.who[i]) is not None})
        recent = ledger.recent(
            p.connection.target,
            p.operation.command,
            recipients,
            since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    finally:
        ledger.close()
    for index, key in wanted:
        record = found.get(key)
        ident = p.who[index]
        assert ident is not None
        if record is not None and record.status == "hidden":
            if index not in p.unhidden:  # a row some sheet hides: skipped as this sheet's are
                p.disposition[index] = HIDDEN
                p.reasons[index] = _ledger_reason(record, ident, again=True)
            continue
        if record is not None and record.owner != lineage:
            p.reasons[index] = _ledger_reason(record, ident, again=True)
        else:
            other = recent.get(ident.recipient)
            if other is None or other.owner == lineage or other.content == ident.content:
                continue
            p.reasons[index] = (
                f"not sent: {ident.recipient} got another {kind_of(other.content)} from "
                f"another sheet, {other.sheet}, at {other.sent_at}: {_quote(other.content)}; "
                f"this row says {_quote(ident.content)} (a correction? --resend sends it)"
            )
            record = other
        p.disposition[index] = SENT_BEFORE
        p.previous[index] = Entry(key, 0, -1, "done", record.status, None, "", 0, "", {})


def _ledger_reason(record: Record, ident: Identity, *, again: bool) -> str:
    """Why the ledger's ``record`` keeps a row from being sent (at prepare, or at send)."""
    if record.status == "hidden":
        return f"skipped (hidden in another sheet, {record.sheet}); --include-hidden sends it"
    what = record.status
    if what == "inflight":
        what = "maybe sent (in flight when its run ended)" if again else "maybe sent (in flight)"
    if again:
        return (
            f"not sent again: {what} at {record.sent_at} from another sheet, {record.sheet} "
            "(--resend sends it again)"
        )
    return (
        f"not sent: {ident.recipient} got the same {ident.kind} from another run ({what} at "
        f"{record.sent_at}, sheet {record.sheet}); --resend sends it again"
    )


def _record_sends(
    p: Prepared, results: RowResults, ledger: Ledger, reserved: dict[int, bool]
) -> None:
    """The ledger after a run: this run's sends that went out (or may have) get their status
    (and this sheet); the records it wrote for sends that provably did not go out are taken
    out again (a record it found, an earlier send, stays); the rows the sheet hides are
    noted."""
    sheet = str(p.validation.sheet.path)
    owner = p.journal_lineage
    done, undone = [], []
    for index, created in reserved.items():
        status = results.status(index)
        if status in SENT:
            at = results.row(index)[4] or now_iso()
            done.append((p.ledger_keys[index], str(status), at, sheet, owner))
        elif created:
            undone.append(p.ledger_keys[index])
    ledger.settle(done, undone)
    hidden = [
        (p.ledger_keys[i], p.connection.target, p.operation.command, w, now_iso(), sheet, owner)
        for i in np.flatnonzero(p.disposition == HIDDEN).tolist()
        if p.ledger_keys[i] and (w := p.who[i]) is not None
    ]
    if hidden:
        ledger.note_hidden(hidden)


def _guard(
    p: Prepared, ledger: Ledger, owner: str, reserved: dict[int, bool]
) -> Callable[[Job], Awaitable[str]]:
    """The send guard the runner asks just before each send: '' to go (the send is then
    reserved in the ledger), else why not. GuardFailure when the ledger can't be used."""
    sheet = str(p.validation.sheet.path)
    target, command = p.connection.target, p.operation.command

    async def check(job: Job) -> str:
        index = job.index
        ident = p.who[index]
        if ident is None or index in reserved:
            return ""
        try:
            record, created = await asyncio.to_thread(
                ledger.reserve,
                p.ledger_keys[index],
                target=target,
                operation=command,
                who=ident,
                sheet=sheet,
                owner=owner,
                at=now_iso(),
                force=index in p.forced,
                unhidden=index in p.unhidden,
            )
        except sqlite3.Error as exc:
            raise GuardFailure(
                f"the send ledger {ledger.path} can't be used ({exc}); nothing more is sent"
            ) from None
        if record is None:
            reserved[index] = created
            return ""
        return _ledger_reason(record, ident, again=False)

    return check


def _apply_quiet_hours(p: Prepared) -> None:
    """Quiet hours before the run: each recipient's zones (a timezone column, else the
    number's area code, else all of its country's zones; unknown: not sent, never assumed),
    and what the window does to the row now (or at its send_at): held until the window ends
    (a campaign's send_at is moved there instead) or skipped. The window is checked again
    for each row at the moment it is sent (:func:`_quiet_gate`)."""
    assert p.options.quiet_hours is not None
    start, end = p.options.quiet_hours
    zones = _zone_column(p.validation)
    phones = p.validation.normalized.get(p.operation.phone_column)
    schedule = p.validation.normalized.get("send_at")
    now = dt.datetime.now(dt.UTC)
    window = f"{start:%H:%M}-{end:%H:%M}"
    for index in np.flatnonzero(p.disposition == RUN).tolist():
        zone = (zones[index] if zones is not None else "") or ""
        phone = str(phones[index].as_py() or "") if phones is not None else ""
        candidates: tuple[str, ...] = (zone,) if zone else ()
        how = "timezone column"
        if not candidates:
            candidates, how = nz.phone_timezones(phone)
        if not candidates:
            p.disposition[index] = QUIET_SKIP
            p.zones[index] = "unknown"
            p.reasons[index] = (
                f"not sent (held back by quiet hours): the time zone of "
                f"{phone or 'this recipient'} is unknown, so quiet hours {window} can't be "
                "checked; add a timezone column"
            )
            continue
        p.quiet_zones[index] = candidates
        when = now
        scheduled = schedule is not None and bool(schedule[index].as_py())
        if scheduled:
            assert schedule is not None
            when = dt.datetime.fromisoformat(str(schedule[index].as_py()))
        shown = [f"{name} {when.astimezone(ZoneInfo(name)):%H:%M}" for name in candidates[:3]]
        more = f" and {len(candidates) - 3} more zones" if len(candidates) > 3 else ""
        p.zones[index] = f"{', '.join(shown)}{more} ({how})"
        until = _quiet_until(candidates, when, start, end)
        if until is None:
            continue
        quiet = _quiet_zone(candidates, when, start, end)
        if until is False:
            p.disposition[index] = QUIET_SKIP
            p.reasons[index] = (
                f"not sent: no time is outside quiet hours {window} in all of its zones"
            )
        elif p.options.quiet_policy == "skip":
            p.disposition[index] = QUIET_SKIP
            p.reasons[index] = f"not sent: {quiet} is inside quiet hours {window}"
        elif p.operation.command == "campaigns send":
            p.moved[index] = until.isoformat(timespec="seconds")
            p.zones[index] += f"; {quiet} is quiet: send_at moved to {p.moved[index]}"
        else:
            p.holds[index] = until.timestamp()
            p.zones[index] += f"; {quiet} is quiet: held until {until:%Y-%m-%d %H:%M %Z}"


def _quiet_zone(zones: Sequence[str], when: dt.datetime, start: dt.time, end: dt.time) -> str:
    """The first of ``zones`` inside the quiet window at ``when``, with its local time."""
    for zone in zones:
        local = when.astimezone(ZoneInfo(zone))
        if _window_end(local, start, end) is not None:
            return f"{zone} {local:%H:%M}"
    return f"{zones[0]} {when.astimezone(ZoneInfo(zones[0])):%H:%M}"


def _quiet_until(
    zones: Sequence[str], when: dt.datetime, start: dt.time, end: dt.time
) -> dt.datetime | None | Literal[False]:
    """The first time from ``when`` at which every one of ``zones`` is outside the quiet
    window: None when ``when`` already is, False when no such time comes within days (a
    country wider than the hours left awake)."""
    at = when
    for _ in range(8):
        ends = [
            e
            for zone in zones
            if (e := _window_end(at.astimezone(ZoneInfo(zone)), start, end)) is not None
        ]
        if not ends:
            return None if at == when else at
        at = max(ends)
    return False


def _quiet_gate(p: Prepared) -> Callable[[Job, float], Job | str | float]:
    """Quiet hours at the moment a row is sent (the run may reach a window that began after
    it started): the job to send (a campaign's send_at moved to the window's end), why it is
    skipped, or the wall-clock time to hold it until."""
    assert p.options.quiet_hours is not None
    start, end = p.options.quiet_hours
    window = f"{start:%H:%M}-{end:%H:%M}"
    campaign = p.operation.command == "campaigns send"

    def gate(job: Job, now: float) -> Job | str | float:
        zones = p.quiet_zones.get(job.index)
        if not zones or (campaign and job.call.params.get(Param.SEND_AT)):
            return job  # a scheduled send was checked at its own send_at
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        until = _quiet_until(zones, at, start, end)
        if until is None:
            return job
        if until is False or p.options.quiet_policy == "skip":
            return (
                f"not sent: {_quiet_zone(zones, at, start, end)} was inside quiet hours "
                f"{window} when its turn came"
            )
        if campaign:
            params = {**job.call.params, Param.SEND_AT: until.isoformat(timespec="seconds")}
            return Job(job.not_before, job.index, Call(job.call.endpoint, params), job.key, job.who)
        return until.timestamp()

    return gate


def _window_end(local: dt.datetime, start: dt.time, end: dt.time) -> dt.datetime | None:
    """When the quiet window that ``local`` falls in ends; None when it is outside."""
    t = local.time().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date()
    if start >= end and t >= start:
        day = day + dt.timedelta(days=1)
    naive = dt.datetime.combine(day, end)
    return naive.replace(tzinfo=local.tzinfo)


def _zone_column(validation: Validation) -> list[str] | None:
    if "timezone" in validation.normalized:
        return [str(z or "") for z in validation.normalized["timezone"].to_pylist()]
    from sonar_bulk.schema import header_key

    for index, header in enumerate(validation.sheet.headers):
        if header_key(header) in ("timezone", "tz"):
            raw = validation.sheet.column(index).to_pylist()
            return [nz.canonical_timezone(str(v or "").strip()) or "" for v in raw]
    return None


# -- execute ------------------------------------------------------------------------------------


@dataclass
class Report:
    """What a run did."""

    summary: RunSummary
    results: RowResults
    exit_code: int
    stopped: str = ""
    fatal: ApiError | None = None
    resume_command: str = ""
    #: The ``sonar__`` columns beyond the base ones, in order.
    extra_columns: list[str] = field(default_factory=list)
    #: Why the run broke down (not an answer: a journal on a full disk), when it did.
    failure: str | None = None
    #: Where the results went when not where asked, or that they could not be written.
    results_note: str = ""


def check_outputs(p: Prepared) -> None:
    """UsageError before anything is sent when an output can't be written (:func:`prepare`
    checks its own; this one checks them again where they moved)."""
    _check_outputs(p.results_path, p.failed_path, p.validation, p.options)


def _check_outputs(
    results: Path | None, failed: Path | None, v: Validation, options: BulkOptions
) -> None:
    """UsageError when an output can't be written, or can't hold the rows (an .xlsx sheet
    has 1,048,576 rows)."""
    from sonar_bulk.outputs import XLSX_MAX_ROWS

    paths = [x for x in (results, failed) if x is not None]
    for path in paths:
        if path.suffix.lower() == ".xlsx" and v.rows + 1 > XLSX_MAX_ROWS:
            raise UsageError(
                f"{path}: {v.rows:,} rows do not fit in an .xlsx sheet "
                f"({XLSX_MAX_ROWS - 1:,} at most); pass --results NAME.csv"
            )
    check_results_paths(paths, options.force, [v.sheet.path])


def execute(
    p: Prepared,
    ui: Ui,
    *,
    client_factory: Callable[[], SonarClient] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Report:
    """Run (or, for a dry run, plan) every RUN row; write the results."""
    op, v, options = p.operation, p.validation, p.options
    results = RowResults(v.rows, extra=op.outputs)
    started = time.time()
    _settle(p, results)
    journal: Journal | None = None
    runner: Runner | None = None
    stopped = ""
    fatal: ApiError | None = None
    interrupted = False
    journal = p.journal
    ledger: Ledger | None = None
    reserved: dict[int, bool] = {}
    try:
        if options.dry_run:
            _plan(p, results)
        elif p.to_run:
            assert journal is not None
            try:
                journal.start_run(
                    op.command,
                    p.connection.target,
                    v.sheet.path,
                    p.input_sha or file_sha256(v.sheet.path),
                    options.command_line,
                )
                journal.record_many(
                    (p.keys[i], i, results.status(i) or "", "")
                    for i in np.flatnonzero(np.isin(p.disposition, (LIMITED, QUIET_SKIP))).tolist()
                    if p.keys[i]
                )
            except (sqlite3.Error, OSError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else exc
                raise UsageError(
                    f"journal {journal.path}: {why}; nothing was sent (free some space, or pass "
                    "--journal PATH elsewhere)"
                ) from None
            guard = None
            if (op.sends or p.applied_keys) and options.ledger:
                ledger = Ledger()
            if op.sends and ledger is not None:
                guard = _guard(p, ledger, journal.lineage, reserved)
            p.journal_lineage = journal.lineage
            factory = client_factory or (lambda: _client(p))
            gate = _quiet_gate(p) if p.quiet_zones else None
            runner = _run(
                p,
                results,
                journal,
                factory,
                ui,
                clock,
                guard=guard,
                gate=gate,
                wall=wall,
                sleep=sleep,
            )
            stopped, fatal = runner.stop_reason, runner.fatal
            interrupted = runner.interrupted
    except KeyboardInterrupt:
        interrupted = True
        stopped = "not sent: interrupted"
    finally:
        if runner is not None:
            stopped = runner.stop_reason
        if stopped or interrupted:
            results.fill("skipped", stopped or "not sent: interrupted")
        else:
            results.fill("skipped", "not sent")
        try:
            if journal is not None and runner is not None:
                journal.finish_run("stopped" if stopped else "finished")
        except Exception as exc:  # a broken journal (its cause is named already, or now)
            if runner is not None and runner.failure is None:
                runner.failure = runner.describe(exc)
        finally:
            try:
                p.close()
            except Exception:
                pass
            if ledger is not None:
                try:
                    if op.sends:
                        _record_sends(p, results, ledger, reserved)
                    if p.applied_keys:
                        _record_applied(p, results, ledger)
                except Exception as exc:
                    ui.warn(
                        f"the send ledger {ledger.path} could not record this run's sends "
                        f"({exc}); this sheet's journal still has them"
                    )
                finally:
                    ledger.close()
    counts = results.counts()
    summary = RunSummary(
        op.command,
        str(v.sheet.path),
        p.connection.label,
        counts,
        started,
        time.time(),
        requests=runner.stats.requests if runner else 0,
        processed=runner.stats.done if runner else 0,
        journal=str(p.journal_path) if runner is not None else "",
    )
    resume = ""
    if stopped and p.journal_path is not None and runner is not None:
        resume = _resume_command(options.command_line, p.journal_path)
    extra_columns = list(op.outputs)
    if p.zones:
        for index, text in p.zones.items():
            results.note(index, "timezone", text)
        extra_columns.append("timezone")
    for index, text in p.changes.items():
        results.note(index, "change", text)
    if options.dry_run:
        extra_columns += ["request", "change", "segments"]
    elif options.diff:
        extra_columns.append("change")
    if interrupted:
        code = ExitCode.ABORTED
    elif fatal is not None:
        code = exit_code_for(fatal)  # REFUSED (the token, the account) or UNREACHABLE
    elif any(counts.get(s) for s in BAD) or stopped:
        code = ExitCode.ROWS
    else:
        code = ExitCode.OK
    report = Report(summary, results, code, stopped, fatal, resume, extra_columns)
    report.failure = runner.failure if runner is not None else None
    with _signals_held():
        try:
            write_outputs(p, report)
        except (OSError, UsageError) as exc:
            _write_elsewhere(p, report, exc, ui)
    return report


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """While the results are written, one Ctrl-C, SIGTERM or SIGHUP waits for the write to
    end (the results are what a stop is for); a second one stops at once."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def held(signum: int, frame: object) -> None:
        got.append(signum)
        if len(got) > 1:
            raise KeyboardInterrupt

    wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    saved = {sig: signal.signal(sig, held) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


#: Exit code of a run whose results could not be written anywhere (rows may have been sent:
#: the journal has every outcome, and --resume writes the results again).
EXIT_RESULTS_LOST = ExitCode.RESULTS_LOST


def _write_elsewhere(p: Prepared, report: Report, error: Exception, ui: Ui) -> None:
    """The results could not be written where asked (a full disk, a folder gone): write them
    beside the journal, else in the user data folder, and say where; when nowhere works, the
    run ends with :data:`EXIT_RESULTS_LOST`."""
    from sonar_bulk.connection import data_dir

    assert p.results_path is not None
    asked, failed = p.results_path, p.failed_path
    why = _os_error_text(error)
    places = []
    if p.journal_path is not None and p.journal_path.parent != asked.parent:
        places.append(p.journal_path.parent)
    places.append(data_dir() / "results")
    for folder in places:
        p.results_path = folder / asked.name
        p.failed_path = folder / failed.name if failed is not None else None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            check_outputs(p)
            write_outputs(p, report)
        except (OSError, UsageError):
            continue
        report.results_note = (
            f"the results could not be written to {asked} ({why}); they are in {p.results_path}"
        )
        ui.warn(report.results_note)
        return
    p.results_path = asked
    report.results_note = (
        f"the results could not be written ({asked}: {why}); every outcome is in the journal "
        f"{p.journal_path}: free some space, then run the same command with --resume "
        f"{p.journal_path} to write them"
    )
    report.summary.results = ""
    report.exit_code = EXIT_RESULTS_LOST
    ui.warn(report.results_note)


def _os_error_text(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


def write_outputs(p: Prepared, report: Report) -> None:
    """Write (or write again, after more columns were noted) the results and failed files."""
    v = p.validation
    phones = [idx for name, idx in v.headers.fields.items() if v.kind.column(name).type == "phone"]
    assert p.results_path is not None
    path, failed = write_results(
        v.sheet,
        report.results,
        p.results_path,
        p.failed_path,
        report.summary,
        extra_columns=report.extra_columns,
        width=p.options.width,
        phone_columns=phones,
    )
    report.summary.results = str(path)
    report.summary.failed = str(failed) if failed else ""


def _settle(p: Prepared, results: RowResults) -> None:
    """Outcomes of rows that make no request."""
    v = p.validation
    texts = _issue_texts(v)
    for index in np.flatnonzero(p.disposition != RUN).tolist():
        d = int(p.disposition[index])
        if d == INVALID:
            results.set(
                index, Outcome("invalid", error=p.reasons.get(index) or texts.get(index, ""))
            )
        elif d == DONE_BEFORE:
            e = p.previous[index]
            results.set(
                index,
                Outcome(
                    e.status or "ok",
                    e.http_status,
                    e.error or "",
                    e.attempts,
                    e.finished_at or "",
                    e.outputs,
                ),
            )
        elif d == HELD:
            e = p.previous[index]
            results.set(
                index,
                Outcome(
                    "unknown",
                    e.http_status,
                    "held: an earlier run may have sent this (its outcome is unknown); check "
                    "Sonar, then pass --retry-unknown to send it again",
                    e.attempts,
                    e.finished_at or "",
                ),
            )
        elif d in (SENT_BEFORE, GUARDED):
            e = p.previous[index]
            # this sheet's own earlier send keeps its status (an unknown one stays unknown)
            status = e.status if e.run and d == SENT_BEFORE and e.status in SENT else "skipped"
            results.set(
                index,
                Outcome(
                    status,
                    e.http_status if e.run else None,
                    p.reasons[index],
                    0,
                    e.finished_at or "" if status != "skipped" else "",
                    outputs=e.outputs,
                ),
            )
        elif d in (PAST, DUPLICATE, NO_CONSENT):
            results.set(index, Outcome("skipped", error=p.reasons[index]))
        elif d == LIMITED:
            results.set(
                index, Outcome("skipped", error=f"not sent: beyond --limit {p.options.limit}")
            )
        elif d == QUIET_SKIP:
            results.set(index, Outcome("skipped", error=p.reasons.get(index, "quiet hours")))
        elif d == UNCHANGED:
            results.set(index, Outcome("unchanged", error=p.reasons.get(index, "")))
        elif d == HIDDEN:
            results.set(index, Outcome("skipped", error=p.reasons.get(index, HIDDEN_REASON)))


def _issue_texts(v: Validation) -> dict[int, str]:
    from sonar_bulk.report import row_issue_texts

    by_number = row_issue_texts(v)
    index_of = {int(n): i for i, n in enumerate(v.sheet.row_numbers.tolist())}
    return {index_of[n]: text for n, text in by_number.items() if n in index_of}


def _runnable(p: Prepared) -> Iterator[tuple[int, dict[str, str], Call]]:
    """(index, normalized values, call) of every row still to run, a chunk at a time."""
    for index, row, props in row_values(p.validation):
        if p.disposition[index] != RUN:
            continue
        built = p.operation.call(row, props)
        assert not isinstance(built, str)  # prepare() made such rows INVALID
        yield index, row, built


def _plan(p: Prepared, results: RowResults) -> None:
    for index, row, built in _runnable(p):
        results.set(index, Outcome("planned"))
        results.note(index, "request", built.describe())
        if p.operation.sends and "text" in row:
            s = nz.sms_segments(row["text"])
            results.note(index, "segments", f"{s.segments} ({s.encoding})")
        if index in p.holds:
            when = dt.datetime.fromtimestamp(p.holds[index]).astimezone()
            results.note(index, "change", f"held by quiet hours until {when:%Y-%m-%d %H:%M %Z}")
        elif index in p.moved:
            results.note(index, "change", f"send_at moved by quiet hours to {p.moved[index]}")


def _client(p: Prepared) -> SonarClient:
    c = p.connection
    return SonarClient(
        c.base_url,
        token=c.token,
        publishable_key=c.publishable_key,
        timeout=p.options.timeout,
        connections=p.options.concurrency,
        aliases=c.aliases,
    )


def _jobs(p: Prepared) -> Iterator[Job]:
    for index, _row, built in _runnable(p):
        if index in p.moved:
            built = Call(built.endpoint, {**built.params, Param.SEND_AT: p.moved[index]})
        ident = p.who[index] if p.who else None
        yield Job(p.holds.get(index, 0.0), index, built, p.keys[index], ident)


def _run(
    p: Prepared,
    results: RowResults,
    journal: Journal | None,
    factory: Callable[[], SonarClient],
    ui: Ui,
    clock: Callable[[], float],
    *,
    operation: Operation | None = None,
    jobs: Iterable[Job] | None = None,
    total: int | None = None,
    guard: Callable[[Job], Awaitable[str]] | None = None,
    gate: Callable[[Job, float], Job | str | float] | None = None,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Runner:
    """Run ``jobs`` (default: the prepared rows) of ``operation`` (default: the prepared one)
    on a fresh event loop, with Ctrl-C and SIGTERM stopping it gracefully."""
    options = p.options

    async def main() -> Runner:
        controller = RateController(options.rate, clock=clock)
        client = factory()
        runner = Runner(
            client,
            operation or p.operation,
            journal,
            results,
            Limiter(controller),
            Settings(concurrency=options.concurrency, max_retries=options.max_retries),
            guard=guard,
            gate=gate,
            clock=wall,
            sleep=sleep,
        )
        count = p.to_run if total is None else total
        runner.stats.total = count
        loop = asyncio.get_running_loop()
        presses = 0

        def interrupt(name: str = "Stop") -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                runner.interrupted = True
                runner.stop(f"not sent: interrupted ({name})")
                loop.call_later(STOP_GRACE, runner.abort)
                again = "Ctrl-C again" if name == "Ctrl-C" else "the same again"
                with contextlib.suppress(OSError):  # a terminal gone away takes nothing
                    ui.warn(
                        f"stopping ({name}): no new request starts; those in flight get "
                        f"{STOP_GRACE:g} s to finish, then the results are written ({again} "
                        "to stop at once)"
                    )
            else:
                runner.abort()

        if options.stop is not None:
            options.stop.attach(loop, interrupt)
        with (
            _signals(loop, interrupt),
            ui.progress(count, runner.stats, lambda: controller.throttled),
        ):
            try:
                await runner.run(_jobs(p) if jobs is None else jobs)
            finally:
                if options.stop is not None:
                    options.stop.detach()
                await client.aclose()
        return runner

    return _run_loop(main())


# -- --diff: what Sonar has now -------------------------------------------------------------------

#: Fields a GET /customers answer shows, so a change to them can be seen; the others
#: (picture_url, zip_code, timezone, assignee_email) are written but never read back.
_READABLE = ("first_name", "last_name", "email", "subscribed", "external_id")


def read_current(
    p: Prepared,
    ui: Ui,
    *,
    client_factory: Callable[[], SonarClient] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """``--diff``: read each row's customer (GET only) and say what the row would change; an
    upsert row that changes nothing becomes ``unchanged`` (not sent)."""
    from sonar_bulk.plan import OPERATIONS

    get = OPERATIONS["customers get"]
    found = RowResults(p.validation.rows)
    phones: dict[int, str] = {}

    def jobs() -> Iterator[Job]:
        for index, _row, built in _runnable(p):
            phone = built.params.get(Param.PHONE) or built.params.get(Param.TO)
            if not phone:
                continue
            phones[index] = phone
            yield Job(0.0, index, Call("get_customer", {Param.PHONE: phone}), "")

    ui.info("  --diff: reading the current customers (GET only)")
    factory = client_factory or (lambda: _client(p))
    runner = _run(p, found, None, factory, ui, clock, operation=get, jobs=jobs())
    if runner.fatal is not None:
        raise runner.fatal
    if runner.interrupted:
        raise KeyboardInterrupt  # Ctrl-C while reading: nothing is sent after
    unsubscribed = 0
    for index, row, props in row_values(p.validation):
        if index not in phones:
            continue
        status = found.status(index)
        record_text = found.extra.get("record", {}).get(index)
        if status == "ok" and record_text:
            record = json.loads(record_text)
            if record.get("subscribed") is False:
                unsubscribed += 1
            if p.operation.command == "customers upsert":
                built = p.operation.call(row, props)
                assert not isinstance(built, str)
                change, same = describe_change(built.params, record)
                p.changes[index] = change
                if same:
                    p.disposition[index] = UNCHANGED
            elif record.get("subscribed") is False:
                p.changes[index] = "unsubscribed in Sonar: it will not be delivered"
        elif found.http_status(index) == 404:
            p.changes[index] = "create"
        else:
            why = found.row(index)[2]
            p.changes[index] = f"unknown: the current record could not be read ({why})"
    p.unsubscribed = unsubscribed


def describe_change(params: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[str, bool]:
    """(``update: first_name Ana -> Anna; ...`` or ``unchanged``, whether nothing changes)."""
    changes: list[str] = []
    blind: list[str] = []
    for key, value in params.items():
        if key in (Param.PHONE, Param.PROPERTIES):
            continue
        if key not in _READABLE:
            blind.append(key)
            continue
        old = record.get(key)
        if key == "subscribed":
            old_text = "" if old is None else ("true" if old else "false")
        else:
            old_text = "" if old is None else str(old)
        if old_text != str(value):
            changes.append(f"{key} {old_text or '(blank)'} -> {value}")
    current = record.get("properties") or {}
    for key, value in (params.get(Param.PROPERTIES) or {}).items():
        old = current.get(key)
        if old is None or str(old) != str(value):
            changes.append(f"property {key} {old if old is not None else '(none)'} -> {value}")
    if not changes and not blind:
        return "unchanged", True
    text = "update: " + "; ".join(changes) if changes else "update"
    if blind:
        text += f" (not readable back, sent as given: {', '.join(blind)})"
    return text, False


def _run_loop(coro: Any) -> Runner:
    """Run on asyncio's own loop: httpx's connection pool does less work per request there
    than on uvloop (measured: 912-992 against 800-841 requests a second)."""
    done: Runner = asyncio.run(coro)
    return done


#: Seconds the requests in flight get to finish after a stop (Ctrl-C, SIGTERM, SIGHUP), before
#: they are cancelled: a stop never waits out a hanging request's --timeout.
STOP_GRACE = 1.0
_SIGNAL_NAMES = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGHUP": "SIGHUP: the terminal closed"}


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, handler: Callable[[str], None]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP call ``handler`` (with the signal's name for people) while
    the run lasts; the previous handlers come back after."""
    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    saved = {sig: signal.getsignal(sig) for sig in wanted}
    installed = []
    for sig in saved:
        try:
            loop.add_signal_handler(sig, handler, _SIGNAL_NAMES[sig.name])
            installed.append(sig)
        except (RuntimeError, ValueError):  # not the main thread (tests in a thread)
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, saved[sig])


def _resume_command(command_line: str, journal: Path) -> str:
    import shlex

    resume = f"--resume {shlex.quote(str(journal))}"
    return f"{command_line} {resume}" if command_line else resume


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, without any token (``--token X``, ``--token=X``) and without an
    earlier ``--resume``, quoted for a shell."""
    import shlex

    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--token", "--resume", "--publishable-key"):
            skip = True
            continue
        if arg.startswith(("--token=", "--resume=", "--publishable-key=")):
            continue
        out.append(arg)
    return " ".join(shlex.quote(a) for a in ["sonar-bulk", *out])


def json_summary(report: Report) -> str:
    data = report.summary.as_dict()
    data["exit_code"] = report.exit_code
    if report.stopped:
        data["stopped"] = report.stopped
    if report.resume_command:
        data["resume"] = report.resume_command
    return json.dumps(data, ensure_ascii=False)
