"""The bulk run on a terminal (or a log): :class:`CliUi` words the engine's notices and
questions (:mod:`sonar_bulk.engine.talk`) for people, names the flags, and shows progress."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sonar_bulk.cli.common import say, terminal_gone
from sonar_bulk.engine import talk
from sonar_bulk.errors import UsageError
from sonar_bulk.run_files import events_paths
from sonar_bulk.words import plural

if TYPE_CHECKING:
    from sonar_bulk.engine.bulk import Prepared, Report
    from sonar_bulk.engine.runner import Stats


def is_terminal() -> bool:
    """Whether a person can answer a question here."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _status_text(stats: Stats, throttled: bool) -> str:
    parts = []
    if stats.failed:
        parts.append(f"{stats.failed} failed")
    if stats.unknown:
        parts.append(f"{stats.unknown} unknown")
    if stats.held:
        parts.append(f"{stats.held} held (quiet hours)")
    if throttled:
        parts.append("throttled")
    return ", ".join(parts)


@contextlib.contextmanager
def _rich_progress(total: int, stats: Stats, throttled: Callable[[], bool]) -> Iterator[None]:
    import asyncio

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>7.1f}/s"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=False,
        auto_refresh=False,  # refreshed below, where a terminal gone away is caught
    )
    task = progress.add_task("rows", total=total, rate=0.0, note="")
    started = time.monotonic()

    def refresh() -> None:
        elapsed = max(1e-6, time.monotonic() - started)
        progress.update(
            task,
            completed=stats.done,
            rate=stats.done / elapsed,
            note=_status_text(stats, throttled()),
        )

    async def tick() -> None:
        while True:
            try:
                refresh()
                progress.refresh()
            except OSError:  # the terminal went away (SIGHUP): carry on without it
                terminal_gone()
                return
            await asyncio.sleep(0.2)

    try:
        progress.start()
    except OSError:
        terminal_gone()
    ticker = asyncio.ensure_future(tick())
    try:
        yield
    finally:
        ticker.cancel()
        try:
            refresh()
            progress.stop()
        except OSError:
            terminal_gone()


@contextlib.contextmanager
def _plain_progress(total: int, stats: Stats, throttled: Callable[[], bool]) -> Iterator[None]:
    import asyncio

    started = time.monotonic()

    def line() -> str:
        elapsed = max(1e-6, time.monotonic() - started)
        rate = stats.done / elapsed
        left = (total - stats.done) / rate if rate > 0 else 0
        note = _status_text(stats, throttled())
        return f"  {stats.done:,}/{total:,} rows, {rate:.1f}/s, about {left:.0f} s left" + (
            f", {note}" if note else ""
        )

    async def tick() -> None:
        while True:
            await asyncio.sleep(5)
            say(line())

    ticker = asyncio.ensure_future(tick())
    try:
        yield
    finally:
        ticker.cancel()


class CliUi:
    """The engine's :class:`~sonar_bulk.engine.talk.Ui` on a terminal (or a log)."""

    def __init__(self, quiet: bool, yes: bool) -> None:
        self.quiet = quiet
        self.yes = yes
        self.tty = is_terminal()

    # -- lines --------------------------------------------------------------------------------

    def info(self, text: str) -> None:
        if not self.quiet:
            say(text)

    def warn(self, text: str) -> None:
        say(f"sonar-bulk: warning: {text}")

    def confirm(self, question: str) -> bool:
        """A yes/no prompt (no by default); UsageError without a terminal."""
        if not self.tty:
            raise UsageError(f"{question} needs an answer: run it in a terminal, or pass --yes")
        return bool(click.confirm(question, default=False, err=True))

    # -- the protocol -------------------------------------------------------------------------

    def tell(self, notice: talk.Notice) -> None:
        teller = _TELLERS.get(type(notice))
        if teller is not None:
            teller(self, notice)

    def ask(self, question: talk.Question) -> bool:
        if isinstance(question, talk.ConfirmSend):
            return self.yes or self.confirm(_send_question(question))
        if isinstance(question, talk.ConfirmResend):
            return self._ask_resend(question)
        if isinstance(question, talk.SendPastNow):
            text = (
                f"{plural(question.count, 'row')} not sent yet: their send_at has passed (rows "
                "sent before keep their schedule). Send them now instead?"
            )
            if self.tty and not self.yes:
                return self.confirm(text)
            self.warn(f"{text} No: they are skipped (answer yes in a terminal to send them now)")
            return False
        raise TypeError(f"no answer for {question!r}")

    def _ask_resend(self, q: talk.ConfirmResend) -> bool:
        n = q.count
        question = (
            f"{plural(n, 'row')} of this sheet {'was' if n == 1 else 'were'} already sent (or "
            "may have been) by an earlier run or another sheet. Send them again?"
        )
        for line in q.lines:
            self.info(f"  {line}")
        if n > len(q.lines):
            self.info(f"  … and {n - len(q.lines):,} more (see the results)")
        if self.yes or not self.tty:
            self.warn(f"{question} No: they are skipped (pass --resend to send them again)")
            return False
        return self.confirm(question)

    @contextlib.contextmanager
    def progress(self, total: int, stats: Stats, throttled: Callable[[], bool]) -> Iterator[None]:
        if self.quiet or total == 0:
            yield
            return
        if sys.stderr.isatty():
            with _rich_progress(total, stats, throttled):
                yield
            return
        with _plain_progress(total, stats, throttled):
            yield

    def wait_for_events(self, window: talk.EventsWindow) -> None:
        """The window on the clock; Ctrl-C ends it early (even as it begins), and keeps the
        events."""
        from sonar_bulk.cli.webhooks import received_text, wait_window
        from sonar_bulk.events.times import span

        try:
            if window.seconds <= 0:
                return
            done = window.done if window.early else None
            if done is not None and done():
                return  # nothing to settle: no wait at all
            if not self.quiet:
                until = "up to " if window.early else ""
                say(
                    f"waiting {until}{span(window.seconds)} for events (Ctrl-C stops early and "
                    "keeps them)"
                )
            progress = None if self.quiet else lambda: received_text(*window.received())
            wait_window(time.time() + window.seconds, progress, done=done)
        except KeyboardInterrupt:
            pass


# -- the notices, worded --------------------------------------------------------------------------


def _validated(ui: CliUi, n: talk.Validated) -> None:
    from sonar_bulk import report as rp

    v = n.validation
    consent = rp.consent_line(v)
    if (v.errors or v.warnings) and not ui.quiet:
        say(rp.human_summary(v, 10))
    elif consent is not None:
        # a clean sheet's summary is not shown, but who consents to SMS always is
        ui.info(f"{v.sheet.path}: {consent.strip()}")


def _input_moved(ui: CliUi, n: talk.InputMoved) -> None:
    ui.warn(f"the journal's run read {n.before}; rows are matched by content")


def _retrying_unknown(ui: CliUi, n: talk.RetryingUnknown) -> None:
    ui.warn(
        f"--retry-unknown: {n.count:,} sends whose outcome is unknown are sent again; any of "
        "them that did go out the first time is texted twice (settle them first: sonar-bulk "
        "settle)"
    )


def _sheet_changed(ui: CliUi, n: talk.SheetChanged) -> None:
    ui.warn(
        f"the sheet changed since the journal's last run: {n.same:,} rows the journal knows, "
        f"{n.guarded:,} changed rows of recipients already sent to (not sent again), "
        f"{n.new:,} rows it has no record of (not reached before, or new)"
    )


def _guarded(ui: CliUi, n: talk.Guarded) -> None:
    """Recipients of this sheet's earlier runs whose rows changed: who would have been texted
    again, and what changed (only --resend sends them)."""
    ui.warn(
        f"{plural(n.count, 'row')} to recipients an earlier run of this sheet sent to (or "
        "may have), changed since: not sent again (--resend sends them):"
    )
    for line in n.lines:
        ui.info(f"  {line}")
    if n.count > len(n.lines):
        ui.info(f"  … and {n.count - len(n.lines):,} more (see the results)")


def _starting(ui: CliUi, n: talk.Starting) -> None:
    from sonar_bulk.engine.bulk import HIDDEN

    p = n.prepared
    what = "plan" if p.options.dry_run else "run"
    ui.info(
        f"{p.operation.command}: {plural(p.validation.rows, 'row')} from "
        f"{p.validation.sheet.path}, {p.to_run:,} to {what} against {p.connection.label}"
    )
    hidden = int((p.disposition == HIDDEN).sum())
    if hidden:
        ui.info(
            f"  hidden in the sheet: {plural(hidden, 'row')}, skipped (--include-hidden "
            f"{'plans' if p.options.dry_run else 'sends'} them too)"
        )
    if p.journal_path is not None and not p.options.dry_run:
        ui.info(f"  journal: {p.journal_path}")
    if p.holds and not p.options.dry_run:
        first = min(p.holds, key=lambda i: p.holds[i])
        ui.info(
            f"  quiet hours hold {plural(len(p.holds), 'row')} until their window ends "
            f"(first: row {int(p.validation.sheet.row_numbers[first])}, {p.zones[first]}); "
            "the run waits for them: keep it running, or stop it and --resume later"
        )
    if p.moved and not p.options.dry_run:
        ui.info(
            f"  quiet hours move the send_at of {plural(len(p.moved), 'row')} to the end "
            "of the window (see sonar__timezone)"
        )


def _reading_current(ui: CliUi, n: talk.ReadingCurrent) -> None:
    flag = "--existing-only" if n.existing_only else "--diff"
    ui.info(f"  {flag}: reading the current customers (GET only)")


def _planned(ui: CliUi, n: talk.Planned) -> None:
    """What a dry run (or --diff) found, before anything is sent."""
    f = n.facts
    if f["diff"]:
        ui.info("  diff: " + ", ".join(f"{k:,} {name}" for name, k in f["diff"].items()))
    if f["unchanged"]:
        ui.info(f"  {f['unchanged']:,} unchanged rows will not be sent")
    if not f["sends"]:
        _as_sent(ui, f)
        return
    ui.info(f"  recipients: {f['recipients']:,}")
    if f.get("unsubscribed_before"):
        ui.info(
            f"  unsubscribed before (a STOP, or Sonar said so): {f['unsubscribed_before']:,}, "
            "never texted again"
        )
    if f["unsubscribed"] is not None:
        ui.info(f"  known to be unsubscribed in Sonar: {f['unsubscribed']:,} (not delivered)")
    _as_sent(ui, f)
    window = (
        f"about {_duration(f['seconds'])} at {f['rate']:g}/s"
        if f["seconds"]
        else "as fast as the API answers"
    )
    if f["scheduled"]:
        window += f"; scheduled sends from {f['scheduled'][0]} to {f['scheduled'][1]}"
    ui.info(f"  send window: starting now, {window}")
    if f["held"]:
        ui.info(f"  held by quiet hours: {plural(f['held'], 'row')} (sent when their window ends)")
    if f.get("moved"):
        ui.info(
            f"  quiet hours move the send_at of {plural(f['moved'], 'row')} to the window's end"
        )
    if f.get("now"):
        ui.info(f"  {plural(f['now'], 'row')} with no send_at: sent at once")
    if f["to_run"] == 0:
        ui.info(f"  nothing to send ({plural(f['rows'], 'row')} read)")


def _as_sent(ui: CliUi, f: Mapping[str, Any]) -> None:
    """The first rows as they will be sent (decoded), and a message send's totals."""
    texts = f.get("texts") or {}
    if texts.get("texts"):
        encodings = ", ".join(f"{texts[e]:,} {e}" for e in ("GSM-7", "UCS-2") if texts.get(e))
        ui.info(
            f"  {plural(texts['texts'], 'text')}, {plural(texts['segments'], 'segment')}: "
            f"{encodings} (at most {texts['max_segments']} per text)"
        )
    rows = f.get("first_rows") or []
    if not rows:
        return
    ui.info("  first texts, as sent:" if "text" in rows[0] else "  first rows, as sent:")
    for item in rows:
        if "text" in item:
            to = dict(item["fields"]).get("to", "")
            text = item["text"].replace("\n", "\n      ")
            ui.info(
                f"    row {item['row']}, to {to}, {plural(item['segments'], 'segment')} "
                f"({item['encoding']}): {text}"
            )
        else:
            fields = ", ".join(f"{k}={shown_value(v)}" for k, v in item["fields"])
            ui.info(f"    row {item['row']}: {fields}")


def shown_value(value: str) -> str:
    """A field's value on screen, decoded: as it is, or in double quotes (JSON's escapes)
    when it could be misread (blank, spaces at an end, a comma, an equals sign, a quote, a
    line break).

    >>> shown_value("José & Ana+1"), shown_value("Lopez, Jr."), shown_value("")
    ('José & Ana+1', '"Lopez, Jr."', '""')
    """
    import json

    if value and value == value.strip() and not any(c in value for c in ',="\\\n\r\t'):
        return value
    return json.dumps(value, ensure_ascii=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _stopping(ui: CliUi, n: talk.Stopping) -> None:
    again = "Ctrl-C again" if n.cause == "Ctrl-C" else "the same again"
    ui.warn(
        f"stopping ({n.cause}): no new request starts; those in flight get {n.grace:g} s to "
        f"finish, then the results are written ({again} to stop at once)"
    )


def _ledger_not_recorded(ui: CliUi, n: talk.LedgerNotRecorded) -> None:
    ui.warn(
        f"the send ledger {n.ledger} could not record this run's sends ({n.error}); this "
        "sheet's journal still has them"
    )


def _results_moved(ui: CliUi, n: talk.ResultsMoved) -> None:
    ui.warn(results_moved_text(n))


def results_moved_text(n: talk.ResultsMoved) -> str:
    if n.where is not None:
        return f"the results could not be written to {n.asked} ({n.why}); they are in {n.where}"
    return (
        f"the results could not be written ({n.asked}: {n.why}); every outcome is in the "
        f"journal {n.journal}: free some space, then run the same command with --resume "
        f"{n.journal} to write them"
    )


def _output_kept(ui: CliUi, n: talk.OutputKept) -> None:
    ui.warn(output_kept_text(n))


def stops_kept_text(n: talk.StopsKept) -> str:
    """A customers upsert's subscribed=yes left out for people who replied STOP (the CLI and
    the page say it alike)."""
    shown = ", ".join(n.examples) + (", ..." if n.count > len(n.examples) else "")
    return (
        f"{plural(n.count, 'row')} say subscribed=yes for people who replied STOP ({shown}): "
        "subscribed is left out for them, the rest of each row is sent (--resubscribe sends it)"
    )


def _stops_kept(ui: CliUi, n: talk.StopsKept) -> None:
    ui.warn(stops_kept_text(n))


def output_kept_text(n: talk.OutputKept) -> str:
    where = (
        f"this run's {n.what} are in {n.written}"
        if n.written is not None
        else f"this run has no {n.what}"
    )
    if n.what == "plan":
        where = f"this run's plan is in {n.written}" if n.written else "no plan was written"
    return (
        f"{n.kept} was changed since sonar-bulk wrote it (or is not its own): it is kept as "
        f"it is; {where}"
    )


def _events_note(ui: CliUi, n: talk.EventsNote) -> None:
    say(n.text)


def _events_joined(ui: CliUi, n: talk.EventsJoined) -> None:
    ui.info(f"events: {plural(n.count, 'event')} in {n.sheet}; joined to {n.results}")
    if n.settled:
        ui.info(
            f"settled {plural(n.settled, 'unknown send')}: Sonar's outbound_message events "
            "show they went out (sonar__settled_by)"
        )


def _events_not_joined(ui: CliUi, n: talk.EventsNotJoined) -> None:
    ui.warn(f"events were not joined to the results: {n.error}; they are stored in {n.store}")


def _finished(ui: CliUi, n: talk.Finished) -> None:
    report, p = n.report, n.prepared
    s = report.summary
    counts = ", ".join(f"{k:,} {status}" for status, k in s.counts.items())
    condemned = report.stop is not None and report.stop.kind is talk.StopKind.CONDEMNED
    if report.stopped and not condemned:
        unsent = report.results.with_error(report.stopped)
        reason = report.stopped.removeprefix("not sent: ")
        if unsent:
            ui.warn(f"{plural(unsent, 'row')} not sent: {reason}")
        else:
            ui.warn(f"the run stopped: {reason}")
    for why in report.condemned:  # one line per value Sonar condemned (a campaign id)
        skipped = report.results.with_error(why)
        ui.warn(f"{plural(skipped, 'row')} not sent: {why.removeprefix('not sent: ')}")
    if report.fatal is not None:
        say(f"sonar-bulk: error: the run stopped: {report.fatal}")
    if p.options.dry_run:
        ui.info(f"{p.operation.command} (dry run): {counts}; nothing was sent")
        ui.info(f"  plan: {s.results}")
        return
    ui.info(
        f"{p.operation.command}: {counts} in {s.seconds:.1f} s ({s.rate:.1f} rows/s, "
        f"{plural(s.requests, 'request')})"
    )
    if s.results:
        ui.info(f"  results: {s.results}")
    if s.failed:
        ui.info(f"  failed rows, to fix and run again: {s.failed}")
    if report.condemned:
        ui.info(
            "  the rows skipped for it are in the failed rows too: fix what Sonar refused (a "
            "campaign id: its column, or a new --campaign-id, which a --resume takes as well) "
            "and run them again"
        )
    if report.resume_command:  # the safe way on, before the one that risks a second text
        say(f"  resume with: {report.resume_command}")
    unknown = s.counts.get("unknown", 0)
    if unknown:
        _advise_unknown(ui, report, p, unknown)


def _advise_unknown(ui: CliUi, report: Report, p: Prepared, unknown: int) -> None:
    """What to do about sends whose outcome is unknown: settle them with the events that were
    collected, if any, else check Sonar; the command that would send them again, and its
    risk."""
    from sonar_bulk.engine.bulk import resume_command

    s = report.summary
    store = events_paths(Path(s.results))[1]
    what = "send remains" if unknown == 1 else "sends remain"
    if s.results and store.exists():
        how = (
            f"settle them with the events collected: sonar-bulk settle {shlex.quote(s.results)} "
            f"--store {shlex.quote(str(store))}"
        )
    else:
        how = (
            "no events were collected for this run, so nothing here can prove which went out: "
            "check those recipients' conversations in Sonar (or settle with the events of a "
            "sonar-bulk webhooks collect that covered the run; next time pass --collect-events)"
        )
    ui.warn(f"{unknown:,} unknown {what}: they may have gone out; {how}")
    if p.journal_path is not None and p.options.command_line:
        again = resume_command(p.options.command_line, p.journal_path)
        if "--retry-unknown" not in again.split():
            again += " --retry-unknown"
        ui.info(
            f"  to send the ones that did not go out again (those that did would be texted "
            f"twice): {again}"
        )


def _send_question(q: talk.ConfirmSend) -> str:
    shown = ""
    if q.first_text:
        shown = f"\n  first message, to {q.first_to}:\n    {q.first_text}\n"
    elif q.first_campaign or q.first_to:
        shown = f"\n  first: campaign {q.first_campaign} to {q.first_to}\n"
    return f"Send to {plural(q.count, 'recipient')} via {q.target}?{shown}  Send"


_TELLERS: Mapping[type, Callable[[CliUi, Any], None]] = {
    talk.Validated: _validated,
    talk.InputMoved: _input_moved,
    talk.RetryingUnknown: _retrying_unknown,
    talk.SheetChanged: _sheet_changed,
    talk.Guarded: _guarded,
    talk.Starting: _starting,
    talk.ReadingCurrent: _reading_current,
    talk.Planned: _planned,
    talk.Stopping: _stopping,
    talk.LedgerNotRecorded: _ledger_not_recorded,
    talk.ResultsMoved: _results_moved,
    talk.OutputKept: _output_kept,
    talk.StopsKept: _stops_kept,
    talk.EventsNote: _events_note,
    talk.EventsJoined: _events_joined,
    talk.EventsNotJoined: _events_not_joined,
    talk.Finished: _finished,
}
