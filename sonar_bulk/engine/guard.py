"""Who was sent what: the journal (this sheet's runs) and the send ledger (every sheet on this
machine) consulted before a run, the guard at send time, and both kept up to date after."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sqlite3
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from sonar_bulk.api.endpoints import Param, canonical_target
from sonar_bulk.engine import talk
from sonar_bulk.engine.hidden import HIDDEN_PREFIX
from sonar_bulk.engine.journal import (
    Entry,
    Journal,
    key_scope,
    now_iso,
)
from sonar_bulk.engine.ledger import UNSUBSCRIBED as STOPPED_RECORD
from sonar_bulk.engine.ledger import (
    Identity,
    Ledger,
    Record,
    kind_of,
)
from sonar_bulk.engine.prepared import (
    DONE_BEFORE,
    GUARDED,
    HELD,
    HIDDEN,
    PAST,
    RUN,
    SENT_BEFORE,
    UNCHANGED,
    UNSUBSCRIBED,
    Prepared,
)
from sonar_bulk.engine.runner import GuardFailure, Job
from sonar_bulk.engine.talk import Ui
from sonar_bulk.errors import UsageError
from sonar_bulk.owned import file_sha256
from sonar_bulk.plan import DONE, SENT, Call
from sonar_bulk.results import (
    RowResults,
)

#: Operations --changed-only applies to (their requests set state: the same request again
#: changes nothing).
RESYNC = frozenset({"customers upsert", "properties set"})


#: How the reason of a row skipped because its recipient got it before begins (a results file
#: fed back where the ledger is not knows such rows by it: never sent again unasked).
SENT_BEFORE_PREFIX = "not sent again: "
#: How the reason of a row skipped because its recipient unsubscribed begins.
UNSUBSCRIBED_PREFIX = "unsubscribed: "


def thing_of(command: str, call: Call) -> str:
    """What a re-sync request sets: the customer (an upsert), or one property of one."""
    params = call.params
    who = str(params.get(Param.PHONE) or params.get(Param.EMAIL) or "")
    if command == "customers upsert":
        return f"customer {who}"
    names = list(params.get(Param.PROPERTIES) or {}) or [str(params.get(Param.PROPERTY_NAME))]
    return f"property {who} {names[0]}"


def leave_out_applied(p: Prepared, journal: Journal | None) -> None:
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
    found = p.ledger().applied([p.applied_keys[i] for i in rows])
    for i in rows:
        hit = found.get(p.applied_keys[i])
        if hit is not None and hit[0] == p.requests[i]:
            p.disposition[i] = UNCHANGED
            p.reasons[i] = f"unchanged (sent {hit[1]}, {hit[2]})"


def record_applied(p: Prepared, results: RowResults, ledger: Ledger) -> None:
    """Upserts this run applied, into the ledger: the last request of each thing (what the
    next --changed-only compares with)."""
    sheet = str(p.validation.sheet.path)
    ok = results.bad_mask(("created", "updated", "ok"))
    # a resume also records what the run it continues applied (a killed run recorded none)
    # walked as numpy's indices, one at a time: a list of a million ints was 36 MB at the
    # end of a million-row run, its peak
    rows = np.flatnonzero(ok & np.isin(p.disposition, (RUN, DONE_BEFORE)))
    ledger.record_applied(
        (p.applied_keys[i], p.requests[i], results.row(i)[4] or now_iso(), sheet)
        for i in map(int, rows)
        if p.applied_keys[i]
    )


def look_up_journal(p: Prepared, ui: Ui, journal: Journal) -> None:
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
                f"--resume {path}: the journal's run went to {shown_target(last.target)}, "
                f"this one would go to {shown_target(p.connection.target)}; resume against "
                "the same API, or start a new journal with --journal"
            )
        if p.options.resume and os.path.abspath(last.input) != os.path.abspath(
            p.validation.sheet.path
        ):
            ui.tell(talk.InputMoved(last.input))
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
                f"{SENT_BEFORE_PREFIX}the journal shows it {entry.status or 'in flight'} at "
                f"{entry.finished_at or 'an earlier run'}"
            )
    if p.retried_unknown:
        ui.tell(talk.RetryingUnknown(p.retried_unknown))
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
    #: an earlier send of this lineage to each recipient (maybe sent included)
    earlier: dict[str, tuple[Entry, str]] = {}
    for entry, recipient, content in journal.sends_to(scope, list(waiting)):
        if not (entry.state == "inflight" or entry.status in SENT):
            continue
        earlier[recipient] = (entry, content)
        if entry.key in matched:  # its row is unchanged
            continue
        rows = waiting.get(recipient)
        if not rows:
            continue
        _guard(p, rows.pop(0), entry, f": {quote(content)}; the row now says")
    # Rows left for a recipient this sheet texted, which no earlier send matched one for one
    # (a row edited to, or added for, that recipient, whether their own row changed or not):
    # in a sheet that changed since, a second text to someone this sheet texted, asked about
    # as a changed row is. In the same sheet, a row the earlier run did not reach: it goes out.
    left = [(i, r) for r, rows in waiting.items() if r in earlier for i in rows]
    if not left or journal.last_input_sha(p.operation.command) == _input_sha(p):
        return
    for index, recipient in left:
        entry, content = earlier[recipient]
        said = f", from another row: {quote(content)}; this row, new or changed since, says"
        # that row's answer (its HTTP status, its message id) is not this row's
        _guard(p, index, dataclasses.replace(entry, http_status=None, outputs={}), said)


def _guard(p: Prepared, index: int, entry: Entry, earlier: str) -> None:
    """Row ``index`` is GUARDED by ``entry``, an earlier run's send to its recipient; its
    reason says how that went out, then ``earlier`` (what it sent, and how to read this row),
    then this row's text."""
    ident = p.who[index]
    assert ident is not None
    if entry.state == "done":
        how = f"sent by an earlier run of this sheet ({entry.status} at {entry.finished_at})"
    else:
        how = "maybe sent by an earlier run of this sheet (in flight when it ended)"
    p.disposition[index] = GUARDED
    p.previous[index] = entry
    p.reasons[index] = (
        f"{SENT_BEFORE_PREFIX}{ident.recipient} was {how}{earlier} {quote(ident.content)} "
        "(--resend sends it)"
    )


def _input_sha(p: Prepared) -> str:
    """The sheet's SHA-256, read once (the journal records it with the run)."""
    if not p.input_sha:
        p.input_sha = file_sha256(p.validation.sheet.path)
    return p.input_sha


def quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def shown_target(target: str) -> str:
    return "the emulator" if target == "emulator" else target


def _say_sheet_changes(p: Prepared, journal: Journal, ui: Ui, entries: Mapping[str, Entry]) -> None:
    """On resume: whether the sheet is the one the journal's last run read, and if not, how
    it changed (rows as before, changed rows of recipients sent to, new rows)."""
    before = journal.last_input_sha(p.operation.command)
    now = _input_sha(p)
    if before is None or before == now:
        return
    same = sum(1 for k in p.keys if k and k in entries)
    guarded = p.guarded
    new = int((p.disposition == RUN).sum()) - sum(
        1 for i in np.flatnonzero(p.disposition == RUN).tolist() if p.keys[i] in entries
    )
    ui.tell(talk.SheetChanged(same, guarded, max(0, new)))


#: A recipient who got another message (or campaign) from another sheet this recently is asked
#: about: most likely the same message, corrected ("tomorow" fixed in a copy of the sheet).
RECENT_HOURS = 24


def look_up_ledger(p: Prepared, lineage: str) -> None:
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
    ledger = p.ledger()
    found = ledger.lookup([k for _, k in wanted])
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=RECENT_HOURS)
    recipients = sorted({w.recipient for i, _ in wanted if (w := p.who[i]) is not None})
    recent = ledger.recent(
        p.connection.target,
        p.operation.command,
        recipients,
        since.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
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
                f"{SENT_BEFORE_PREFIX}{ident.recipient} got another {kind_of(other.content)} from "
                f"another sheet, {other.sheet}, at {other.sent_at}: {quote(other.content)}; "
                f"this row says {quote(ident.content)} (a correction? --resend sends it)"
            )
            record = other
        p.disposition[index] = SENT_BEFORE
        p.previous[index] = Entry(key, 0, -1, "done", record.status, None, "", 0, "", {})


def look_up_unsubscribed(p: Prepared) -> None:
    """Recipients the ledger knows unsubscribed on this target (a STOP reply, Sonar's
    ``unsubscribed`` answer, from any sheet): their rows are UNSUBSCRIBED, reported skipped
    and never offered again (--resend included); keyed by the recipient, as the guard is."""
    rows = [
        i
        for i in np.flatnonzero(np.isin(p.disposition, (RUN, PAST, SENT_BEFORE, GUARDED))).tolist()
        if p.who[i] is not None
    ]
    if not rows:
        return
    recipients = sorted({w.recipient for i in rows if (w := p.who[i]) is not None})
    found = p.ledger().unsubscribed(p.connection.target, recipients)
    for i in rows:
        ident = p.who[i]
        assert ident is not None
        hit = found.get(ident.recipient)
        if hit is None:
            continue
        at, how = hit
        p.disposition[i] = UNSUBSCRIBED
        p.reasons[i] = unsubscribed_reason(ident.recipient, how, at)


def unsubscribed_reason(recipient: str, how: str, at: str) -> str:
    """Why a recipient who unsubscribed is not texted (at prepare, or at send)."""
    return f"{UNSUBSCRIBED_PREFIX}{recipient} {how} at {at}; not texted again"


def record_unsubscribed(p: Prepared, ledger: Ledger, recipients: Mapping[str, str]) -> None:
    """Recipients who unsubscribed (E.164 -> how, ``replied STOP``...), into the ledger."""
    if not recipients:
        return
    sheet, at = str(p.validation.sheet.path), now_iso()
    target = p.connection.target
    ledger.note_unsubscribed((target, r, at, how, sheet) for r, how in recipients.items())


def record_subscriptions(p: Prepared, results: RowResults, ledger: Ledger) -> None:
    """After a send, the recipients Sonar answered ``unsubscribed``; after a customers
    upsert, the customers it subscribed (subscribed=true, done) are no longer known as
    unsubscribed."""
    if p.operation.sends:
        answered = {
            w.recipient: "was unsubscribed (Sonar's answer to a send)"
            for i in np.flatnonzero(results.bad_mask(("unsubscribed",))).tolist()
            if i < len(p.who) and (w := p.who[i]) is not None
        }
        record_unsubscribed(p, ledger, answered)
        return
    if p.operation.command != "customers upsert" or "subscribed" not in p.validation.normalized:
        return
    done = results.bad_mask(("created", "updated"))
    said = p.validation.normalized["subscribed"].to_pylist()
    phones = p.validation.normalized["phone_number"].to_pylist()
    again = [phones[i] for i in np.flatnonzero(done).tolist() if said[i] == "true" and phones[i]]
    if again:
        ledger.forget_unsubscribed(p.connection.target, again)


def look_up_results_file(p: Prepared) -> None:
    """A results file fed back in (from another machine, a colleague, a ledger gone) says
    itself which rows went out: a row its ``sonar__status`` shows sent (or maybe sent) is
    SENT_BEFORE, asked about and sent again only when the user says so (--resend), whatever
    this machine's journal and ledger know."""
    sheet = p.validation.sheet
    if "sonar__status" not in sheet.headers:
        return
    statuses = sheet.column(sheet.headers.index("sonar__status")).to_pylist()
    at = (
        sheet.column(sheet.headers.index("sonar__finished_at")).to_pylist()
        if "sonar__finished_at" in sheet.headers
        else [""] * len(statuses)
    )
    errors = (
        sheet.column(sheet.headers.index("sonar__error")).to_pylist()
        if "sonar__error" in sheet.headers
        else [""] * len(statuses)
    )
    for index in np.flatnonzero(p.disposition == RUN).tolist():
        status = (statuses[index] or "").strip()
        said = (errors[index] or "").strip()
        if status == "skipped" and said.startswith(UNSUBSCRIBED_PREFIX):
            # the recipient unsubscribed: never offered again, --resend included
            p.disposition[index] = UNSUBSCRIBED
            p.reasons[index] = f"{said} (this results file says so)"
            continue
        if status == "skipped" and said.startswith(SENT_BEFORE_PREFIX):
            # skipped as sent before (by a ledger or journal this machine may not have): the
            # earlier send stands, as a sent status does
            status = "sent before"
        elif status not in SENT:
            continue
        if index in p.forced:
            continue
        when = (at[index] or "").strip()
        p.disposition[index] = SENT_BEFORE
        p.previous[index] = Entry(p.keys[index], 0, -1, "done", status, None, "", 0, when, {})
        p.reasons[index] = (
            f"{SENT_BEFORE_PREFIX}this results file says it was {status}"
            + (f" at {when}" if when else "")
            + " (--resend sends it)"
        )


def _ledger_reason(record: Record, ident: Identity, *, again: bool) -> str:
    """Why the ledger's ``record`` keeps a row from being sent (at prepare, or at send)."""
    if record.status == STOPPED_RECORD:
        return unsubscribed_reason(ident.recipient, record.content, record.sent_at)
    if record.status == "hidden":
        return f"{HIDDEN_PREFIX}another sheet, {record.sheet}); --include-hidden sends it"
    what = record.status
    if what == "inflight":
        what = "maybe sent (in flight when its run ended)" if again else "maybe sent (in flight)"
    if again:
        return (
            f"{SENT_BEFORE_PREFIX}{what} at {record.sent_at} from another sheet, {record.sheet} "
            "(--resend sends it again)"
        )
    return (
        f"{SENT_BEFORE_PREFIX}{ident.recipient} got the same {ident.kind} from another run "
        f"({what} at "
        f"{record.sent_at}, sheet {record.sheet}); --resend sends it again"
    )


def record_sends(
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


def send_guard(
    p: Prepared, ledger: Ledger, owner: str, reserved: dict[int, bool]
) -> Callable[[Job], Awaitable[str]]:
    """The send guard the runner asks just before each send: '' to go (the send is then
    reserved in the ledger), else why not. GuardFailure when the ledger can't be used."""
    sheet = str(p.validation.sheet.path)
    target, command = p.connection.target, p.operation.command
    #: Once the ledger failed, every later check fails at once: no worker waits out the busy
    #: timeout again, and a reservation that got through after the failure is not sent.
    failed: list[str] = []
    # one worker at a time in the ledger (its connection serializes them anyway): a stop then
    # waits for at most one busy wait, not one per worker
    one_at_a_time = asyncio.Lock()

    async def check(job: Job) -> str:
        index = job.index
        ident = p.who[index]
        if ident is None or index in reserved:
            return ""
        if failed:
            raise GuardFailure(failed[0])
        try:
            async with one_at_a_time:
                if failed:
                    raise GuardFailure(failed[0])
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
            failed.append(
                f"the send ledger {ledger.path} can't be used ({exc}); nothing more is sent"
            )
            raise GuardFailure(failed[0]) from None
        if record is None:
            reserved[index] = created
            if failed:  # reserved, not sent: the ledger's settle after the run releases it
                raise GuardFailure(failed[0])
            return ""
        return _ledger_reason(record, ident, again=False)

    return check
