"""The bulk commands: ``customers``, ``properties``, ``messages`` and ``campaigns``, each verb
a thin layer over :mod:`sonar_bulk.engine.bulk`."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from sonar_bulk.cli.api import api_connection, connection_options
from sonar_bulk.cli.common import (
    EXIT_OK,
    _Group,
    cli,
    default_send_time_option,
    guard,
    input_options,
    json_option,
    say,
    stdout,
    terminal_gone,
)
from sonar_bulk.cli.webhooks import collect_events_options, finish_events
from sonar_bulk.errors import UsageError

# -- connection -----------------------------------------------------------------------------


# -- talking to people ------------------------------------------------------------------------


def is_terminal() -> bool:
    """Whether a person can answer a question here."""
    return sys.stdin.isatty() and sys.stderr.isatty()


class CliUi:
    """The engine's :class:`~sonar_bulk.engine.bulk.Ui` on a terminal (or a log)."""

    def __init__(self, quiet: bool, yes: bool) -> None:
        self.quiet = quiet
        self.yes = yes
        self.tty = is_terminal()

    def info(self, text: str) -> None:
        if not self.quiet:
            say(text)

    def warn(self, text: str) -> None:
        say(f"sonar-bulk: warning: {text}")

    def confirm(self, question: str) -> bool:
        if not self.tty:
            raise UsageError(f"{question} needs an answer: run it in a terminal, or pass --yes")
        return bool(click.confirm(question, default=False, err=True))

    @contextlib.contextmanager
    def progress(self, total: int, stats: Any, throttled: Callable[[], bool]) -> Iterator[None]:
        if self.quiet or total == 0:
            yield
            return
        if sys.stderr.isatty():
            with _rich_progress(total, stats, throttled):
                yield
            return
        with _plain_progress(total, stats, throttled):
            yield


def _status_text(stats: Any, throttled: bool) -> str:
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
def _rich_progress(total: int, stats: Any, throttled: Callable[[], bool]) -> Iterator[None]:
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
def _plain_progress(total: int, stats: Any, throttled: Callable[[], bool]) -> Iterator[None]:
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


# -- the shared body of every bulk command ------------------------------------------------------


class _Finite(click.FloatRange):
    """A number in a range, and never inf or nan (which a float range lets through)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _apply(func: Any, options: list[Callable[[Any], Any]]) -> Any:
    """``options`` on ``func``, listed in ``--help`` in the order given."""
    for option in reversed(options):
        func = option(func)
    return func


def bulk_options(
    *, sends: bool = False, diff: bool = False, changed_only: bool = False
) -> Callable[[Any], Any]:
    """What a run does and how, in the order every bulk command lists them: which rows
    (``--dry-run`` ... ``--include-hidden``), sending (``sends``: commands that text people),
    speed (``--rate`` ... ``--timeout``), and its files (``--journal`` ... ``--force``)."""
    from sonar_bulk.engine.bulk import DEFAULT_CONCURRENCY, DEFAULT_RATE

    which: list[Callable[[Any], Any]] = [
        click.option(
            "--dry-run",
            is_flag=True,
            help="Validate and write the plan (<stem>.plan.<ext>: the request each row "
            "would make) without calling the API.",
        ),
    ]
    if diff:
        which.append(
            click.option(
                "--diff",
                is_flag=True,
                help=(
                    "Read each recipient's current customer record first (GET only): the "
                    "plan says who Sonar has as unsubscribed (not delivered)."
                    if sends
                    else "Read each current customer first (GET only) and classify rows "
                    "as create, update (old -> new), unchanged or skip; unchanged rows are "
                    "not sent."
                ),
            )
        )
    if changed_only:
        which.append(
            click.option(
                "--changed-only",
                is_flag=True,
                help="Send only rows whose request was not applied before to this API (by "
                "this sheet's runs or any other, on this machine): the rest are reported "
                "unchanged, with when. For a weekly re-sync of the same export.",
            )
        )
    which += [
        click.option(
            "--limit",
            type=click.IntRange(min=0),
            metavar="N",
            help="Only the first N rows that would be sent (a test blast); the rest are "
            "reported skipped.",
        ),
        click.option(
            "--skip-invalid",
            is_flag=True,
            help="Send the valid rows and report rows with errors as invalid (default: "
            "refuse to start while any row has an error).",
        ),
        click.option(
            "--include-hidden",
            is_flag=True,
            help="Run the rows the workbook hides too (hidden by hand, filtered out or in "
            "a collapsed group); by default they are reported skipped and not sent.",
        ),
    ]
    sending: list[Callable[[Any], Any]] = []
    if sends:
        sending = [
            click.option(
                "-y",
                "--yes",
                is_flag=True,
                help="Send without asking (needed without a terminal).",
            ),
            click.option(
                "--resend",
                is_flag=True,
                help="Send again, without asking, rows already sent (or maybe sent): by "
                "this sheet's earlier runs, whatever changed in the row, or by another "
                "sheet (the send ledger). People whose consent column says no never are.",
            ),
            click.option(
                "--retry-unknown",
                is_flag=True,
                help="With --resume: send again rows whose earlier outcome is unknown "
                "(check Sonar first: they may have gone out).",
            ),
            click.option(
                "--quiet-hours",
                metavar="HH:MM-HH:MM",
                help="Hold rows whose recipient's local time is inside this window (such "
                "as 21:00-08:00); zone from a timezone column, else the area code.",
            ),
            click.option(
                "--quiet-hours-policy",
                type=click.Choice(["hold", "skip"]),
                default="hold",
                show_default=True,
                help="hold: wait for the window to end (a campaign's send_at moves to "
                "it); skip: report those rows skipped.",
            ),
        ]
    speed = [
        click.option(
            "--rate",
            type=_Finite(0, 100_000),
            default=DEFAULT_RATE,
            show_default=True,
            metavar="N",
            help="Requests per second at most; 0 = no client-side limit. Sonar documents "
            "no limit; a 429 slows the run down by itself.",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 256),
            default=DEFAULT_CONCURRENCY,
            show_default=True,
            metavar="N",
            help="Requests in flight at most.",
        ),
        click.option(
            "--max-retries",
            type=click.IntRange(0, 100),
            default=5,
            show_default=True,
            metavar="N",
            help="Retries of a request that was not processed (429, 5xx or a dropped "
            "connection on safe operations).",
        ),
        click.option(
            "--timeout",
            type=_Finite(0.1, 3600),
            default=30.0,
            show_default=True,
            metavar="S",
            help="Seconds to wait for each answer.",
        ),
    ]
    files = [
        click.option(
            "--journal",
            "journal_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Journal file (default: <stem>.journal.sqlite beside the input).",
        ),
        click.option(
            "--resume",
            "resume_path",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="JOURNAL",
            help="Continue a run after a crash or Ctrl-C: rows done are skipped, rows "
            "that failed safely are tried again.",
        ),
        click.option(
            "--results",
            "results_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Results file (default: <stem>.results.<ext> beside the input).",
        ),
        click.option(
            "--force",
            is_flag=True,
            help="Replace a results file sonar-bulk did not write.",
        ),
    ]
    return lambda func: _apply(func, which + sending + speed + files)


def output_options(func: Any) -> Any:
    """--json and -q, last in every bulk command's list."""
    return _apply(
        func,
        [
            json_option,
            click.option("-q", "--quiet", is_flag=True, help="No progress and no summary."),
        ],
    )


def run_bulk(
    ctx: click.Context,
    command: str,
    file: Path,
    kw: dict[str, Any],
    *,
    validate_extra: dict[str, Any] | None = None,
    after: Callable[[Any, Any], None] | None = None,
) -> None:
    """Validate FILE, prepare, confirm, run and report one bulk command; exits."""
    as_json = bool(kw.get("as_json"))

    def run() -> int:
        from sonar_bulk import report as rp
        from sonar_bulk.engine import bulk
        from sonar_bulk.plan import OPERATIONS
        from sonar_bulk.schema import KINDS, parse_map_option
        from sonar_bulk.sheets import read_sheet
        from sonar_bulk.validate import ValidateOptions, validate_sheet

        op = OPERATIONS[command]
        ui = CliUi(bool(kw.get("quiet")), bool(kw.get("yes")))
        try:
            mapping = parse_map_option(kw["mappings"])
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        resume: Path | None = kw.get("resume_path")
        journal_path: Path | None = kw.get("journal_path")
        if resume is not None and journal_path is not None and resume != journal_path:
            raise UsageError("--resume names the journal already; leave out --journal")
        options = bulk.BulkOptions(
            rate=kw["rate"],
            concurrency=kw["concurrency"],
            max_retries=kw["max_retries"],
            timeout=kw["timeout"],
            limit=kw.get("limit"),
            skip_invalid=kw["skip_invalid"],
            dry_run=kw["dry_run"],
            diff=bool(kw.get("diff")),
            changed_only=bool(kw.get("changed_only")),
            resume=resume is not None,
            retry_unknown=bool(kw.get("retry_unknown")),
            resend=True if kw.get("resend") else None,
            journal=resume or journal_path,
            results=kw.get("results_path"),
            force=kw["force"],
            quiet_hours=bulk.parse_quiet_hours(kw.get("quiet_hours")),
            quiet_policy=kw.get("quiet_hours_policy") or "hold",
            command_line=bulk.command_line(_Group.raw_args),
            include_hidden=bool(kw.get("include_hidden")),
        )
        sheet = read_sheet(
            file,
            sheet=kw["sheet"],
            encoding=kw["encoding"],
            delimiter=kw["delimiter"],
            header_row=kw["header_row"],
        )
        vopts = ValidateOptions(
            default_region=kw["default_region"].upper(),
            mapping=mapping,
            **(validate_extra or {}),
        )
        try:
            validation = validate_sheet(sheet, KINDS[op.kind], vopts)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if vopts.text is not None and "text" in validation.headers.fields:
            raise UsageError("--text: the sheet has its own text column; use one or the other")
        consent = rp.consent_line(validation)
        if (validation.errors or validation.warnings) and not ui.quiet:
            click.echo(rp.human_summary(validation, 10), err=True)
        elif consent is not None:
            # a clean sheet's summary is not shown, but who consents to SMS always is
            ui.info(f"{file}: {consent.strip()}")
        if bulk.blocking_errors(op, validation, options):
            raise bulk.InvalidRows(validation)
        events = _run_events(ctx, kw, options, op.sends)
        with (
            contextlib.ExitStack() as stack,
            api_connection(
                ctx,
                token=kw.get("token"),
                base_url=kw.get("base_url"),
                sandbox=bool(kw.get("sandbox")),
                profile=kw.get("profile"),
                emulate_here=bool(kw.get("emulate_here")),
            ) as conn,
        ):
            prepared = bulk.prepare(op, validation, conn, options, ui)
            stack.callback(prepared.close)
            _tell_guarded(prepared, ui)
            if prepared.past and not options.dry_run:
                _ask_send_now(prepared, ui)
            if events is not None:
                assert prepared.results_path is not None
                events.bind(prepared.results_path)
                events.check(options.force)
            if prepared.sent_before and not options.dry_run:
                _ask_resend(prepared, ui, options)
            _introduce(prepared, ui)
            if options.diff and prepared.to_run:
                bulk.read_current(prepared, ui)
            if options.dry_run or options.diff:
                _describe_plan(prepared, ui)
            if op.sends and not options.dry_run and prepared.to_run:
                _confirm_send(prepared, ui)
            if events is not None:
                events.start(conn, ui.quiet)
            try:
                report = bulk.execute(prepared, ui)
                if events is not None:
                    try:
                        finish_events(events, prepared, report, ui.quiet)
                    except Exception as exc:  # the run is done: its results stand
                        ui.warn(
                            f"events were not joined to the results: {exc}; "
                            f"they are stored in {events.store}"
                        )
            finally:
                if events is not None:
                    events.stop()
            if after is not None:
                after(prepared, report)
        _tell(report, prepared, ui)
        if as_json:
            with stdout() as out:
                out.write(bulk.json_summary(report) + "\n")
        return report.exit_code

    sys.exit(guard(run, as_json))


def _run_events(ctx: click.Context, kw: dict[str, Any], options: Any, sends: bool) -> Any:
    """The --collect-events side of a run (None without it, with ``off``, and for a dry
    run). An emulated send collects by itself, for a short window that ends as soon as no
    unknown send is left to settle."""
    from sonar_bulk.cli.webhooks import EMULATE_WINDOW, OFF, run_events

    text = kw.get("collect_events")
    if text is not None and text.strip().lower() in OFF:
        return None
    emulated = bool(kw.get("emulate_here") or (ctx.obj or {}).get("emulate"))
    if text is None:
        if not (sends and emulated and not options.dry_run):
            return None
        listen = kw["listen"]
        if ctx.get_parameter_source("listen") is click.core.ParameterSource.DEFAULT:
            listen = "127.0.0.1:0"  # nobody asked for a port: any free one
        return run_events(f"{EMULATE_WINDOW}s", listen, kw.get("public_url"), early=True)
    events = run_events(text, kw["listen"], kw.get("public_url"))
    if options.dry_run:
        click.echo("--collect-events: a dry run sends nothing; no events collected", err=True)
        return None
    return events


def _introduce(p: Any, ui: CliUi) -> None:
    from sonar_bulk import normalize as nz
    from sonar_bulk.engine.bulk import HIDDEN

    what = "plan" if p.options.dry_run else "run"
    ui.info(
        f"{p.operation.command}: {nz.plural(p.validation.rows, 'row')} from "
        f"{p.validation.sheet.path}, {p.to_run:,} to {what} against {p.connection.label}"
    )
    hidden = int((p.disposition == HIDDEN).sum())
    if hidden:
        ui.info(
            f"  hidden in the sheet: {nz.plural(hidden, 'row')}, skipped (--include-hidden "
            f"{'plans' if p.options.dry_run else 'sends'} them too)"
        )
    if p.journal_path is not None and not p.options.dry_run:
        ui.info(f"  journal: {p.journal_path}")
    if p.holds and not p.options.dry_run:
        first = min(p.holds, key=lambda i: p.holds[i])
        ui.info(
            f"  quiet hours hold {nz.plural(len(p.holds), 'row')} until their window ends "
            f"(first: row {int(p.validation.sheet.row_numbers[first])}, {p.zones[first]}); "
            "the run waits for them: keep it running, or stop it and --resume later"
        )
    if p.moved and not p.options.dry_run:
        ui.info(
            f"  quiet hours move the send_at of {nz.plural(len(p.moved), 'row')} to the end "
            "of the window (see sonar__timezone)"
        )


def _describe_plan(p: Any, ui: CliUi) -> None:
    """What a dry run (or --diff) found, before anything is sent."""
    from sonar_bulk import normalize as nz
    from sonar_bulk.engine.bulk import plan_facts

    f = plan_facts(p)
    if f["diff"]:
        ui.info("  diff: " + ", ".join(f"{n:,} {k}" for k, n in f["diff"].items()))
    if f["unchanged"]:
        ui.info(f"  {f['unchanged']:,} unchanged rows will not be sent")
    if not f["sends"]:
        return
    ui.info(f"  recipients: {f['recipients']:,}")
    if f["unsubscribed"] is not None:
        ui.info(f"  known to be unsubscribed in Sonar: {f['unsubscribed']:,} (not delivered)")
    if f["segments"]:
        ui.info(
            f"  SMS segments: {f['segments']:,} in all, at most {f['max_segments']} per message"
        )
    if f["first_text"]:
        ui.info(f"  first message: {f['first_text']}")
    window = (
        f"about {_duration(f['seconds'])} at {f['rate']:g}/s"
        if f["seconds"]
        else "as fast as the API answers"
    )
    if f["scheduled"]:
        window += f"; scheduled sends from {f['scheduled'][0]} to {f['scheduled'][1]}"
    ui.info(f"  send window: starting now, {window}")
    if f["held"]:
        ui.info(f"  held by quiet hours: {f['held']:,} rows (sent when their window ends)")
    if f.get("moved"):
        ui.info(f"  quiet hours move the send_at of {f['moved']:,} rows to the window's end")
    if f.get("now"):
        ui.info(f"  {nz.plural(f['now'], 'row')} with no send_at: sent at once")
    if f["to_run"] == 0:
        ui.info(f"  nothing to send ({nz.plural(f['rows'], 'row')} read)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _tell_guarded(p: Any, ui: CliUi) -> None:
    """Recipients of this sheet's earlier runs whose rows changed: who would have been texted
    again, and what changed (only --resend sends them)."""
    from sonar_bulk.engine.bulk import GUARDED

    if not p.guarded:
        return
    from sonar_bulk import normalize as nz

    ui.warn(
        f"{nz.plural(p.guarded, 'row')} to recipients an earlier run of this sheet sent to (or "
        "may have), changed since: not sent again (--resend sends them):"
    )
    for line in p.described(GUARDED):
        ui.info(f"  {line}")
    if p.guarded > 10:
        ui.info(f"  … and {p.guarded - 10:,} more (see the results)")


def _ask_send_now(p: Any, ui: CliUi) -> None:
    """A campaign resumed after send_at passed: send the rows not yet sent now, or not."""
    from sonar_bulk import normalize as nz
    from sonar_bulk.engine.bulk import PAST

    question = (
        f"{nz.plural(p.past, 'row')} not sent yet: their send_at has passed (rows sent before "
        "keep their schedule). Send them now instead?"
    )
    if ui.tty and not ui.yes:
        if ui.confirm(question):
            p.allow(PAST)
        return
    ui.warn(f"{question} No: they are skipped (answer yes in a terminal to send them now)")


def _ask_resend(p: Any, ui: CliUi, options: Any) -> None:
    from sonar_bulk import normalize as nz
    from sonar_bulk.engine.bulk import SENT_BEFORE

    n = p.sent_before
    question = (
        f"{nz.plural(n, 'row')} of this sheet {'was' if n == 1 else 'were'} already sent (or "
        "may have been) by an earlier run or another sheet. Send them again?"
    )
    for line in p.described(SENT_BEFORE, 5):
        ui.info(f"  {line}")
    if n > 5:
        ui.info(f"  … and {n - 5:,} more (see the results)")
    again = options.resend
    if again is None:
        if ui.yes or not ui.tty:
            ui.warn(f"{question} No: they are skipped (pass --resend to send them again)")
            again = False
        else:
            again = ui.confirm(question)
    if again:
        p.allow(SENT_BEFORE)


def _confirm_send(p: Any, ui: CliUi) -> None:
    from sonar_bulk import normalize as nz

    if ui.yes:
        return
    sample = p.sample
    shown = ""
    if sample is not None:
        text = sample.params.get("text")
        to = sample.params.get("to")
        if text:
            shown = f"\n  first message, to {to}:\n    {text}\n"
        else:
            shown = f"\n  first: campaign {sample.params.get('campaign_id')} to {to}\n"
    question = f"Send to {nz.plural(p.to_run, 'recipient')} via {p.connection.label}?{shown}  Send"
    if not ui.confirm(question):
        raise UsageError("nothing was sent (not confirmed)")


def _tell(report: Any, p: Any, ui: CliUi) -> None:
    from sonar_bulk import normalize as nz

    s = report.summary
    counts = ", ".join(f"{n:,} {status}" for status, n in s.counts.items())
    if report.stopped:
        unsent = report.results.with_error(report.stopped)
        reason = report.stopped.removeprefix("not sent: ")
        if unsent:
            ui.warn(f"{nz.plural(unsent, 'row')} not sent: {reason}")
        else:
            ui.warn(f"the run stopped: {reason}")
    if report.fatal is not None:
        click.echo(f"sonar-bulk: error: the run stopped: {report.fatal}", err=True)
    if p.options.dry_run:
        ui.info(f"{p.operation.command} (dry run): {counts}; nothing was sent")
        ui.info(f"  plan: {s.results}")
        return
    ui.info(
        f"{p.operation.command}: {counts} in {s.seconds:.1f} s ({s.rate:.1f} rows/s, "
        f"{nz.plural(s.requests, 'request')})"
    )
    if s.results:
        ui.info(f"  results: {s.results}")
    if s.failed:
        ui.info(f"  failed rows, to fix and run again: {s.failed}")
    unknown = s.counts.get("unknown", 0)
    if unknown:
        _advise_unknown(report, p, ui, unknown)
    if report.resume_command:
        click.echo(f"  resume with: {report.resume_command}", err=True)


def _advise_unknown(report: Any, p: Any, ui: CliUi, unknown: int) -> None:
    """What to do about sends whose outcome is unknown: settle them with the events that were
    collected, if any, else check Sonar; the command that would send them again, and its
    risk."""
    import shlex

    from sonar_bulk.engine.bulk import _resume_command

    s = report.summary
    results = Path(s.results)
    name = results.name[: -len(results.suffix)] if results.suffix else results.name
    store = results.with_name(f"{name.removesuffix('.results')}.events.sqlite")
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
        again = _resume_command(p.options.command_line, p.journal_path) + " --retry-unknown"
        ui.info(
            f"  to send the ones that did not go out again (those that did would be texted "
            f"twice): {again}"
        )


def _common(
    func: Any,
    *,
    own: tuple[Callable[[Any], Any], ...] = (),
    sends: bool = False,
    diff: bool = False,
    changed_only: bool = False,
    events: bool = False,
) -> Any:
    """FILE and every option of a bulk command, in the one order they all share: the
    command's ``own`` options, reading the sheet, which rows, sending, speed, files, events,
    the connection, then --json and -q."""
    return click.pass_context(
        _apply(
            func,
            [
                click.argument("file", type=click.Path(path_type=Path)),
                *own,
                input_options,
                bulk_options(sends=sends, diff=diff, changed_only=changed_only),
                *([collect_events_options] if events else []),
                connection_options,
                output_options,
            ],
        )
    )


# -- the command groups ---------------------------------------------------------------------


@cli.group("customers")
def customers() -> None:
    """Add, update, read, close or unassign customers from a sheet.

    \b
    Example:
      sonar-bulk --emulate customers upsert samples/customers.csv
    """


@cli.group("properties")
def properties() -> None:
    """Set or delete customer custom properties from a long sheet (one per row).

    \b
    Example:
      sonar-bulk --emulate properties delete samples/properties.csv --dry-run
    """


@cli.group("messages")
def messages() -> None:
    """Send messages, or tag messages already sent, from a sheet.

    \b
    Example:
      sonar-bulk --emulate messages send samples/messages.csv --dry-run
    """


@cli.group("campaigns")
def campaigns() -> None:
    """Send a campaign to every recipient of a sheet, now or scheduled.

    \b
    Example:
      sonar-bulk --emulate campaigns send samples/campaign_recipients.csv --dry-run
    """


def _verb(
    group: click.Group,
    verb: str,
    *own: Callable[[Any], Any],
    sends: bool = False,
    diff: bool = False,
    changed_only: bool = False,
    events: bool = False,
) -> Callable[[Callable[..., None]], click.Command]:
    """A bulk command: ``group verb FILE`` with its ``own`` options first, then those every
    bulk command shares (see :func:`_common`). ``{summary}`` in the docstring is the
    operation's one-line summary."""
    from sonar_bulk.plan import OPERATIONS

    op = OPERATIONS[f"{group.name} {verb}"]

    def decorate(func: Callable[..., None]) -> click.Command:
        func.__doc__ = (func.__doc__ or op.summary).replace("{summary}", op.summary)
        options = _common(
            func, own=own, sends=sends, diff=diff, changed_only=changed_only, events=events
        )
        return group.command(verb)(options)

    return decorate


@_verb(
    customers,
    "upsert",
    click.option(
        "--extra-columns",
        type=click.Choice(["warn", "properties", "ignore"]),
        default="warn",
        show_default=True,
        help="Unknown columns are reported and not sent (warn), sent as custom properties, "
        "or ignored.",
    ),
    diff=True,
    changed_only=True,
    events=True,
)
def customers_upsert(ctx: click.Context, /, file: Path, extra_columns: str, **kw: Any) -> None:
    """{summary}

    FILE is a customers sheet (see sonar-bulk template customers). 201 answers are reported
    created, 200 updated.

    \b
    Example:
      sonar-bulk --emulate customers upsert samples/customers.csv
    """
    run_bulk(ctx, "customers upsert", file, kw, validate_extra={"extra_columns": extra_columns})


@_verb(
    customers,
    "get",
    click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="Sheet to write the records to (.csv or .xlsx): a customers sheet that customers "
        "upsert can read back (a backup before a migration).",
    ),
)
def customers_get(ctx: click.Context, /, file: Path, output: Path, **kw: Any) -> None:
    """Read each customer's current Sonar record into a sheet.

    FILE lists phone numbers (a customer_keys sheet: a phone_number column; a customers sheet
    works too). Customers Sonar does not know are reported failed (404).

    \b
    Example:
      sonar-bulk --emulate customers get samples/customer_keys.csv -o backup.xlsx
    """
    from sonar_bulk.outputs import check_output_path

    def check_output() -> int:
        if output.exists() and file.exists() and output.samefile(file):
            raise UsageError(f"-o {output}: that is the input file")
        check_output_path(output, "-o", force=kw["force"], ours=RECORD_COLUMNS)
        return 0

    check = guard(check_output, False)
    if check:
        sys.exit(check)

    def after(prepared: Any, report: Any) -> None:
        write_records(report.results, output)
        if not kw.get("quiet"):
            click.echo(f"  records: {output}", err=True)

    run_bulk(ctx, "customers get", file, kw, after=after)


#: The first columns of a customers backup (``customers get -o``): an earlier one is ours.
RECORD_COLUMNS = ("phone_number", "first_name", "last_name", "email", "subscribed")


def write_records(results: Any, output: Path) -> None:
    """The GET answers kept in the results, as a customers sheet."""
    from sonar_bulk.outputs import write_table

    records = [json.loads(v) for _, v in sorted(results.extra.get("record", {}).items())]
    props = sorted({k for r in records for k in (r.get("properties") or {})})
    headers = list(RECORD_COLUMNS) + [f"property:{p}" for p in props]

    def rows() -> Iterator[list[str]]:
        for r in records:
            base = [
                ""
                if r.get(h) is None
                else str(r.get(h)).lower()
                if h == "subscribed"
                else str(r[h])
                for h in headers[:5]
            ]
            values = r.get("properties") or {}
            yield base + ["" if values.get(p) is None else str(values[p]) for p in props]

    # as typed: a backup is fed back in, so "+vip" or "@ana" must come back unquoted
    write_table(output, headers, rows(), "customers", text_columns=[0], as_typed=True)


@_verb(customers, "close")
def customers_close(ctx: click.Context, /, file: Path, **kw: Any) -> None:
    """{summary}

    FILE lists phone numbers (a phone_number column).

    \b
    Example:
      sonar-bulk --emulate customers close samples/customer_keys.csv
    """
    run_bulk(ctx, "customers close", file, kw)


@_verb(customers, "unassign")
def customers_unassign(ctx: click.Context, /, file: Path, **kw: Any) -> None:
    """{summary}

    FILE lists phone numbers (a phone_number column).

    \b
    Example:
      sonar-bulk --emulate customers unassign samples/customer_keys.csv
    """
    run_bulk(ctx, "customers unassign", file, kw)


@_verb(properties, "set", changed_only=True)
def properties_set(ctx: click.Context, /, file: Path, **kw: Any) -> None:
    """{summary}

    FILE is a properties sheet: phone_number (or email), property_name, value, type. Sonar
    sets properties through the customer upsert, so a row keyed by email alone is invalid.

    \b
    Example:
      sonar-bulk --emulate properties set samples/properties.csv --skip-invalid --dry-run
    """
    run_bulk(ctx, "properties set", file, kw)


@_verb(properties, "delete")
def properties_delete(ctx: click.Context, /, file: Path, **kw: Any) -> None:
    """{summary}

    FILE is a properties sheet: phone_number or email, and property_name.

    \b
    Example:
      sonar-bulk --emulate properties delete samples/properties.csv --dry-run
    """
    run_bulk(ctx, "properties delete", file, kw)


@_verb(
    messages,
    "send",
    click.option(
        "--text",
        "text_template",
        metavar="TEMPLATE",
        help="The text of every row, with {{column}} merge fields (instead of a text column).",
    ),
    sends=True,
    diff=True,
    events=True,
)
def messages_send(ctx: click.Context, /, file: Path, text_template: str | None, **kw: Any) -> None:
    """Send one SMS/MMS per row.

    FILE is a messages sheet: to, text (with {{column}} merge fields filled from the same row),
    media_url, tag_names. Asks before sending (the count and the first message) unless --yes.
    A send whose outcome is unknown (a timeout, a 500) is reported unknown and never sent
    again by itself.

    \b
    Example:
      sonar-bulk --emulate messages send samples/messages.csv --yes
    """
    run_bulk(ctx, "messages send", file, kw, validate_extra={"text": text_template})


@_verb(messages, "tag")
def messages_tag(ctx: click.Context, /, file: Path, **kw: Any) -> None:
    """{summary}

    FILE is a message_tags sheet: external_message_id, tag_name.

    \b
    Example:
      sonar-bulk --emulate messages tag samples/message_tags.csv --dry-run
    """
    run_bulk(ctx, "messages tag", file, kw)


@_verb(
    campaigns,
    "send",
    click.option(
        "--campaign-id",
        metavar="ID",
        help="Campaign for rows without a campaign_id.",
    ),
    click.option(
        "--send-at",
        metavar="WHEN",
        help="When to send rows without a send_at (ISO 8601, such as 2030-12-01T09:30-08:00).",
    ),
    click.option(
        "--timezone",
        metavar="TZ",
        help="Zone for send_at values without an offset.",
    ),
    default_send_time_option(),
    sends=True,
    diff=True,
    events=True,
)
def campaigns_send(
    ctx: click.Context,
    /,
    file: Path,
    campaign_id: str | None,
    send_at: str | None,
    timezone: str | None,
    default_send_time: str | None,
    **kw: Any,
) -> None:
    """Send a campaign to each recipient, now or at send_at.

    FILE is a campaign_recipients sheet: to, campaign_id (or --campaign-id), send_at (or
    --send-at), timezone. A send_at that is a date alone needs --default-send-time; a local
    time the clocks skip (DST) is an error, one they repeat is read as the first. Asks before
    sending unless --yes.

    \b
    Example:
      sonar-bulk --emulate campaigns send samples/campaign_recipients.csv --yes
    """
    run_bulk(
        ctx,
        "campaigns send",
        file,
        kw,
        validate_extra={
            "campaign_id": campaign_id,
            "send_at": send_at,
            "timezone": timezone,
            "default_send_time": default_send_time,
        },
    )


__all__ = ["EXIT_OK", "campaigns", "customers", "messages", "properties"]
