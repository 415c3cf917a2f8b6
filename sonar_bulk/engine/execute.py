"""Run the prepared calls (or, for a dry run, plan them) and write the results (:func:`execute`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sonar_bulk.api.client import SonarClient
from sonar_bulk.api.endpoints import Param
from sonar_bulk.engine import talk
from sonar_bulk.engine.guard import (
    record_applied,
    record_sends,
    record_subscriptions,
    send_guard,
)
from sonar_bulk.engine.hidden import HIDDEN_REASON
from sonar_bulk.engine.journal import (
    Journal,
)
from sonar_bulk.engine.ledger import (
    Ledger,
)
from sonar_bulk.engine.limiter import Limiter, RateController
from sonar_bulk.engine.prepare import (
    check_output_paths,
)
from sonar_bulk.engine.prepared import (
    ABSENT,
    DONE_BEFORE,
    DUPLICATE,
    GUARDED,
    HELD,
    HIDDEN,
    INVALID,
    LIMITED,
    NO_CONSENT,
    PAST,
    QUIET_SKIP,
    RUN,
    SENT_BEFORE,
    UNCHANGED,
    UNSUBSCRIBED,
    Prepared,
    runnable,
)
from sonar_bulk.engine.quiet import (
    quiet_gate,
)
from sonar_bulk.engine.runner import Job, Runner, Settings
from sonar_bulk.engine.signals import (
    STOP_GRACE,
    signals_held,
    stop_signals,
)
from sonar_bulk.engine.summary import (
    resume_command,
)
from sonar_bulk.engine.talk import Ui
from sonar_bulk.errors import ApiError, ExitCode, Unreachable, UsageError, exit_code_for
from sonar_bulk.owned import file_sha256
from sonar_bulk.plan import BAD, SENT, Operation
from sonar_bulk.results import (
    Outcome,
    RowResults,
    RunSummary,
    results_table,
    write_results,
)
from sonar_bulk.sheets import Sheet
from sonar_bulk.sms import sms_segments
from sonar_bulk.validation import Validation


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
    results_moved: talk.ResultsMoved | None = None
    #: Why the run stopped before its end (None: it did not).
    stop: talk.Stop | None = None
    #: The sheet the run read, and how many of its columns are the user's (None: all).
    sheet: Sheet | None = None
    width: int | None = None
    #: Why rows of a value Sonar condemned (an unknown campaign id) were not sent: one
    #: ``sonar__error`` per value (see :class:`sonar_bulk.api.endpoints.RunLevel`).
    condemned: list[str] = field(default_factory=list)

    def table(self) -> pa.Table:
        """The results sheet as a table: every column of the sheet, then the ``sonar__``
        ones; one row per input row, in order."""
        assert self.sheet is not None
        return results_table(
            self.sheet, self.results, extra_columns=self.extra_columns, width=self.width
        )


def check_outputs(p: Prepared) -> None:
    """UsageError before anything is sent when an output can't be written (:func:`prepare`
    checks its own; this one checks them again where they moved)."""
    check_output_paths(p.results_path, p.failed_path, p.validation, p.options)


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
    if p.to_run and not options.dry_run and client_factory is None:
        # loading the HTTP stack (aiohttp: about 0.1 s) is start-up, not the run's time
        import sonar_bulk.api.transport  # noqa: F401
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
                    Path(os.path.abspath(v.sheet.path)),  # whatever folder a later run starts in
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
                ledger = p.ledger()
            if op.sends and ledger is not None:
                guard = send_guard(p, ledger, journal.lineage, reserved)
            p.journal_lineage = journal.lineage
            factory = client_factory or (lambda: client_for(p))
            gate = quiet_gate(p) if p.quiet_zones else None
            runner = run_jobs(
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
        if runner is not None and runner.condemned and not stopped:
            # rows Sonar condemned were not sent: the run did not finish its sheet
            stopped = condemned_reason(runner.condemned)
        try:
            if journal is not None and runner is not None:
                journal.finish_run("stopped" if stopped else "finished")
        except Exception as exc:  # a broken journal (its cause is named already, or now)
            if runner is not None and runner.failure is None:
                runner.failure = runner.describe(exc)
        finally:
            if ledger is not None:
                try:
                    if op.sends:
                        record_sends(p, results, ledger, reserved)
                    if p.applied_keys:
                        record_applied(p, results, ledger)
                    record_subscriptions(p, results, ledger)
                except Exception as exc:
                    ui.tell(talk.LedgerNotRecorded(ledger.path, str(exc)))
            try:
                p.close()
            except Exception:
                pass
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
        journal=str(p.journal_path) if runner is not None or interrupted else "",
    )
    resume = ""
    if stopped and p.journal_path is not None and runner is not None:
        resume = resume_command(options.command_line, p.journal_path)
    extra_columns = list(op.outputs)
    if p.zones:
        for index, text in p.zones.items():
            results.note(index, "timezone", text)
        extra_columns.append("timezone")
    for sources in v.phone_from.values():  # several phone columns: which one each row used
        for index, header in enumerate(sources):
            if header:
                results.note(index, "phone_from", header)
        extra_columns.append("phone_from")
    for index, text in p.changes.items():
        results.note(index, "change", text)
    if options.dry_run:
        extra_columns += ["request", "change", "text", "segments", "encoding"]
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
    report.condemned = list(runner.condemned) if runner is not None else []
    report.sheet, report.width = v.sheet, options.width
    if stopped:
        report.stop = _stop_of(runner, stopped, interrupted)
    with signals_held():
        try:
            write_outputs(p, report)
        except (OSError, UsageError) as exc:
            _write_elsewhere(p, report, exc, ui)
    for what, kept, _ in p.kept:
        written = report.summary.failed if what == "failed rows" else report.summary.results
        ui.tell(talk.OutputKept(what, kept, Path(written) if written else None))
    return report


def _stop_of(runner: Runner | None, stopped: str, interrupted: bool) -> talk.Stop:
    """Why the run stopped, as data (``stopped`` is the reason the results give)."""
    detail = stopped.removeprefix("not sent: ")
    if interrupted:  # before the run's own handlers: Python's, for Ctrl-C
        return talk.Stop(talk.StopKind.INTERRUPTED, (runner.cause if runner else "") or "Ctrl-C")
    if runner is not None and runner.fatal is not None:
        kind = (
            talk.StopKind.UNREACHABLE
            if isinstance(runner.fatal, Unreachable)
            else talk.StopKind.FATAL
        )
        return talk.Stop(kind, str(runner.fatal))
    if runner is not None and runner.failure is not None:
        return talk.Stop(talk.StopKind.BROKEN, runner.failure)
    if runner is not None and runner.condemned and not runner.stop_reason:
        return talk.Stop(talk.StopKind.CONDEMNED, detail)
    if "could not be reached" in stopped:
        return talk.Stop(talk.StopKind.UNREACHABLE, detail)
    return talk.Stop(talk.StopKind.GUARD, detail)


def condemned_reason(reasons: list[str]) -> str:
    """The one reason of a run whose rows of condemned values were not sent."""
    if len(reasons) == 1:
        return reasons[0]
    return "not sent: " + "; ".join(r.removeprefix("not sent: ") for r in reasons)


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
        report.results_moved = talk.ResultsMoved(asked, why, p.results_path, p.journal_path)
        ui.tell(report.results_moved)
        return
    p.results_path = asked
    report.results_moved = talk.ResultsMoved(asked, why, None, p.journal_path)
    report.summary.results = ""
    report.exit_code = EXIT_RESULTS_LOST
    ui.tell(report.results_moved)


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
    texts: dict[int, str] | None = None  # read only when an invalid row needs them
    for index in np.flatnonzero(p.disposition != RUN).tolist():
        d = int(p.disposition[index])
        if d == INVALID:
            why = p.reasons.get(index)
            if not why:
                texts = _issue_texts(v) if texts is None else texts
                why = texts.get(index, "")
            results.set(index, Outcome("invalid", error=why))
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
            # this sheet's own earlier send keeps its status (an unknown one stays unknown,
            # and one in flight when its run was killed is unknown: it may have gone out)
            was = "unknown" if e.state == "inflight" else e.status
            status = was if e.run and d == SENT_BEFORE and was in SENT else "skipped"
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
        elif d in (PAST, DUPLICATE, NO_CONSENT, ABSENT):
            results.set(index, Outcome("skipped", error=p.reasons[index]))
        elif d == UNSUBSCRIBED:
            earlier = p.previous.get(index)  # an earlier send keeps its message id
            outputs = earlier.outputs if earlier is not None else {}
            results.set(index, Outcome("skipped", error=p.reasons[index], outputs=outputs))
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
    numbers = v.sheet.row_numbers
    # the rows with a text only (a dict of every row's number was 100 MB at a million rows)
    at = np.flatnonzero(np.isin(numbers, np.fromiter(by_number, dtype=np.int64)))
    return {int(i): by_number[int(numbers[i])] for i in at.tolist()}


def _plan(p: Prepared, results: RowResults) -> None:
    """Each row to run as it will be sent: its request (the fields decoded) and, for a
    message, the final text (merge fields filled, fallbacks applied), its SMS segments and
    their encoding."""
    for index, built in runnable(p):
        results.set(index, Outcome("planned"))
        results.note(index, "request", built.describe())
        text = built.params.get(Param.TEXT) if built.endpoint == "send_message" else None
        if text is not None:
            s = sms_segments(str(text))
            results.note(index, "text", str(text))
            results.note(index, "segments", str(s.segments))
            results.note(index, "encoding", s.encoding)
        if index in p.holds:
            when = dt.datetime.fromtimestamp(p.holds[index]).astimezone()
            results.note(index, "change", f"held by quiet hours until {when:%Y-%m-%d %H:%M %Z}")
        elif index in p.moved:
            results.note(index, "change", f"send_at moved by quiet hours to {p.moved[index]}")


def client_for(p: Prepared) -> SonarClient:
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
    for index, built in runnable(p, release=True):
        ident = p.who[index] if p.who else None
        yield Job(p.holds.get(index, 0.0), index, built, p.keys[index], ident)


def run_jobs(
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
                runner.cause = name
                runner.stop(f"not sent: interrupted ({name})")
                loop.call_later(STOP_GRACE, runner.abort)
                with contextlib.suppress(OSError):  # a terminal gone away takes nothing
                    ui.tell(talk.Stopping(name, STOP_GRACE))
            else:
                runner.abort()

        if options.stop is not None:
            options.stop.attach(loop, interrupt)
        with (
            stop_signals(loop, interrupt),
            ui.progress(count, runner.stats, lambda: controller.throttled),
        ):
            try:
                await runner.run(_jobs(p) if jobs is None else jobs)
            finally:
                if options.stop is not None:
                    options.stop.detach()
                await client.aclose()
        return runner

    return run_loop(main())


def run_loop(coro: Any) -> Runner:
    """Run on asyncio's own loop. (With httpcore's pool it did less work per request than
    uvloop; with aiohttp's the two measured the same: 0.29-0.32 ms of CPU a request on either,
    tests/bench/bench_engine.py's client alone.)

    What exists before the run (the modules, the sheet and its checks) is left out of the
    cyclic collections during it (``gc.freeze``), and put back after."""
    gc.freeze()
    try:
        done: Runner = asyncio.run(coro)
    finally:
        gc.unfreeze()
    return done
