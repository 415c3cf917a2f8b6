"""One bulk run, start to end: :func:`run_sheet`.

read → validate → prepare → ask → execute → events → results. The command line, the web page,
the demo and the Python API (:func:`sonar_bulk.run`) all run a sheet through here; they differ
only in their :class:`~sonar_bulk.engine.talk.Ui` (how they word notices and answer
questions) and in the options they pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from sonar_bulk.engine import talk
from sonar_bulk.engine.bulk import (
    GUARDED,
    PAST,
    SENT_BEFORE,
    BulkOptions,
    Prepared,
    Report,
    blocking_errors,
    execute,
    plan_facts,
    prepare,
    read_current,
)
from sonar_bulk.engine.prepare import limit_and_quiet
from sonar_bulk.engine.prepared import first_to_run
from sonar_bulk.errors import Aborted, InvalidRows, UsageError

if TYPE_CHECKING:
    from sonar_bulk.connection import Connection
    from sonar_bulk.events.run import RunEvents
    from sonar_bulk.plan import Operation
    from sonar_bulk.sheets import Sheet
    from sonar_bulk.validation import ValidateOptions, Validation

#: What a run reads: a file, a sheet already read, or a sheet already validated.
Source = Union[str, Path, "Sheet", "Validation"]
#: Where it sends: a connection, or a function that opens one once the sheet has passed its
#: checks (so a sheet with errors is told before a missing token, and no emulator starts).
Target = Union["Connection", Callable[[], contextlib.AbstractContextManager["Connection"]]]


@dataclass(frozen=True)
class ReadOptions:
    """How a file is read (see :func:`sonar_bulk.sheets.read_sheet`)."""

    sheet: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    header_row: int | None = None


def run_sheet(
    operation: str | Operation,
    source: Source,
    connection: Target,
    options: BulkOptions,
    ui: talk.Ui,
    events: RunEvents | None = None,
    *,
    read: ReadOptions | None = None,
    checks: ValidateOptions | None = None,
) -> Report:
    """Run ``operation`` (``"customers upsert"``…) on every row of ``source``; the report.

    Raises :class:`~sonar_bulk.engine.bulk.InvalidRows` when rows have errors and
    ``options.skip_invalid`` is off, :class:`Aborted` when the send is not confirmed, and
    :class:`~sonar_bulk.errors.SonarBulkError` for anything else that keeps the run from
    starting; once it has started, every outcome (a stop, a fatal answer) is in the report.
    """
    from sonar_bulk.plan import OPERATIONS

    op = OPERATIONS[operation] if isinstance(operation, str) else operation
    validation = validate_source(op, source, read, checks)
    ui.tell(talk.Validated(validation))
    if blocking_errors(op, validation, options):
        raise InvalidRows(validation)
    with contextlib.ExitStack() as stack:
        if callable(connection):
            conn = stack.enter_context(connection())
        else:
            conn = connection
        prepared = prepare(op, validation, conn, options, ui)
        stack.callback(prepared.close)
        _ask_first(prepared, ui, events)
        if events is not None:
            events.start(conn)
        try:
            report = execute(prepared, ui)
            if events is not None:
                _finish_events(events, prepared, report, ui)
        finally:
            if events is not None:
                events.stop()
    ui.tell(talk.Finished(report, prepared))
    return report


def validate_source(
    op: Operation,
    source: Source,
    read: ReadOptions | None = None,
    checks: ValidateOptions | None = None,
) -> Validation:
    """``source`` read (when a file) and checked against the operation's sheet kind (when not
    checked yet)."""
    from sonar_bulk.schema import KINDS
    from sonar_bulk.sheets import Sheet, read_sheet
    from sonar_bulk.validation import ValidateOptions, Validation, validate_sheet

    if isinstance(source, Validation):
        return source
    if isinstance(source, Sheet):
        sheet = source
    else:
        r = read or ReadOptions()
        sheet = read_sheet(
            source,
            sheet=r.sheet,
            encoding=r.encoding,
            delimiter=r.delimiter,
            header_row=r.header_row,
        )
    # the sheet is checked for this command: what it needs of a row, and no other's
    vopts = dataclasses.replace(checks or ValidateOptions(), command=op.command)
    try:
        validation = validate_sheet(sheet, KINDS[op.kind], vopts)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if vopts.text is not None and "text" in validation.headers.fields:
        raise UsageError("--text: the sheet has its own text column; use one or the other")
    return validation


def _ask_first(p: Prepared, ui: talk.Ui, events: RunEvents | None) -> None:
    """Everything said and asked before the first request."""
    options = p.options
    if p.guarded:
        ui.tell(talk.Guarded(p.guarded, p.described(GUARDED)))
    allowed = 0
    if p.past and not options.dry_run and ui.ask(talk.SendPastNow(p.past)):
        allowed += p.allow(PAST)
    if events is not None:
        assert p.results_path is not None
        events.bind(p.results_path)
        kept = events.check(options.force)
        if kept is not None:
            ui.tell(talk.OutputKept("events", kept, events.sheet))
    if p.sent_before and not options.dry_run:
        again = options.resend
        if again is None:
            again = ui.ask(talk.ConfirmResend(p.sent_before, p.described(SENT_BEFORE, 5)))
        if again:
            allowed += p.allow(SENT_BEFORE)
    if allowed:
        limit_and_quiet(p)  # the rows let through obey --limit and quiet hours too
    ui.tell(talk.Starting(p))
    if (options.diff or options.existing_only) and p.to_run:
        try:
            read_current(p, ui)
        except KeyboardInterrupt:
            # a Stop (the page's) while reading: the plan of what was read; Ctrl-C ends here
            if not (options.dry_run and options.stop is not None and options.stop.requested):
                raise
    if options.dry_run or options.diff:
        facts = dict(plan_facts(p))
        facts.update(
            sent_before=p.sent_before,
            guarded=p.guarded,
            guarded_rows=p.described(GUARDED),
            stopped=bool(options.stop is not None and options.stop.requested),
        )
        ui.tell(talk.Planned(facts))
    if p.operation.sends and not options.dry_run and p.to_run:
        first = first_to_run(p)  # after every question and check
        sample = first.params if first is not None else {}
        question = talk.ConfirmSend(
            p.to_run,
            p.connection.label,
            first_to=str(sample.get("to") or ""),
            first_text=str(sample.get("text") or ""),
            first_campaign=str(sample.get("campaign_id") or ""),
        )
        if not ui.ask(question):
            raise Aborted("nothing was sent (not confirmed)")


def _finish_events(events: RunEvents, p: Prepared, report: Report, ui: talk.Ui) -> None:
    """After the run: the events window (the face waits), the join, the events sheet."""
    window = talk.EventsWindow(
        events.after,
        events.early,
        lambda: events.nothing_to_wait_for(p, report),
        events.counts,
        report,
        events.store,
    )
    try:
        count = events.finish(p, report, lambda: ui.wait_for_events(window))
    except Exception as exc:  # the run is done: its results stand
        ui.tell(talk.EventsNotJoined(str(exc), events.store))
        return
    ui.tell(talk.EventsJoined(count, events.sheet, report.summary.results, len(events.settled)))
