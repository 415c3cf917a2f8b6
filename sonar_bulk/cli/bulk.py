"""The bulk commands: ``customers``, ``properties``, ``messages`` and ``campaigns``, each verb
a thin layer over :mod:`sonar_bulk.engine.bulk`."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sonar_bulk.cli.api import api_connection, connection_options
from sonar_bulk.cli.common import (
    EXIT_OK,
    _Group,
    allow_blank_merge_option,
    cli,
    default_send_time_option,
    guard,
    input_options,
    json_option,
    stdout,
)
from sonar_bulk.cli.webhooks import collect_events_options
from sonar_bulk.errors import UsageError
from sonar_bulk.plan import OPERATIONS

if TYPE_CHECKING:
    from sonar_bulk.cli.talk import CliUi, is_terminal
    from sonar_bulk.engine.bulk import BulkOptions, Report
    from sonar_bulk.events.run import RunEvents

__all__ = ["EXIT_OK", "CliUi", "campaigns", "customers", "is_terminal", "messages", "properties"]


def __getattr__(name: str) -> Any:
    """``CliUi`` and ``is_terminal`` (:mod:`sonar_bulk.cli.talk`), imported when a run needs
    them: ``--help`` and ``validate`` never load the engine's notices."""
    if name in ("CliUi", "is_terminal"):
        from sonar_bulk.cli import talk

        return getattr(talk, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from sonar_bulk.engine.options import DEFAULT_CONCURRENCY, DEFAULT_RATE

    which: list[Callable[[Any], Any]] = [
        click.option(
            "--dry-run",
            is_flag=True,
            help="Validate and write the plan (<stem>.<op>.plan.<ext>: the request each "
            "row would make, decoded, and each message's final text, segments and "
            "encoding) without calling the API.",
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
            help="Journal file (default: <stem>.<op>.journal.sqlite beside the input, or in "
            "--out-dir).",
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
            help="Results file (default: <stem>.<op>.results.<ext> beside the input, or in "
            "--out-dir; the failed rows go to <stem>.<op>.failed.<ext> beside it).",
        ),
        click.option(
            "--out-dir",
            type=click.Path(file_okay=False, path_type=Path),
            metavar="DIR",
            help="Write the results, failed rows, plan and journal into DIR (made if missing), "
            "not beside the input. A journal this operation already has beside the input is "
            "still used (and said), so nothing an earlier run did is forgotten.",
        ),
        click.option(
            "--force",
            is_flag=True,
            help="Replace a --results file sonar-bulk did not write, or one edited since.",
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
    after: Callable[[Report], None] | None = None,
    output: Path | None = None,
) -> None:
    """One bulk command: its flags as typed options, then :func:`run_sheet` on the
    terminal's Ui; exits with the run's code."""
    as_json = bool(kw.get("as_json"))

    def run() -> int:
        from sonar_bulk.cli.talk import CliUi
        from sonar_bulk.engine import bulk
        from sonar_bulk.engine.run import ReadOptions, run_sheet
        from sonar_bulk.schema import parse_map_option
        from sonar_bulk.validation import ValidateOptions

        ui = CliUi(bool(kw.get("quiet")), bool(kw.get("yes")))
        try:
            mapping = parse_map_option(kw["mappings"])
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        flags = {k: v for k, v in kw.items() if k in bulk.FLAGS and v is not None}
        options = bulk.BulkOptions.from_flags(
            **flags, command_line=bulk.command_line(_Group.raw_args)
        )
        read = ReadOptions(kw["sheet"], kw["encoding"], kw["delimiter"], kw["header_row"])
        checks = ValidateOptions(
            default_region=kw["default_region"].upper(),
            mapping=mapping,
            **(validate_extra or {}),
        )
        sends = OPERATIONS[command].sends
        events = _run_events(ctx, kw, options, sends, ui)

        def connect() -> contextlib.AbstractContextManager[Any]:
            return api_connection(
                ctx,
                token=kw.get("token"),
                base_url=kw.get("base_url"),
                sandbox=bool(kw.get("sandbox")),
                profile=kw.get("profile"),
                emulate_here=bool(kw.get("emulate_here")),
                quiet=ui.quiet,
            )

        report = run_sheet(command, file, connect, options, ui, events, read=read, checks=checks)
        if after is not None:
            after(report)
        if as_json:
            data = json.loads(bulk.json_summary(report))
            data["dry_run"] = options.dry_run  # a dry run's "results" is its plan
            if output is not None:
                data["output"] = str(output)
            with stdout() as out:
                out.write(json.dumps(data, ensure_ascii=False) + "\n")
        return report.exit_code

    sys.exit(guard(run, as_json))


def _run_events(
    ctx: click.Context, kw: dict[str, Any], options: BulkOptions, sends: bool, ui: CliUi
) -> RunEvents | None:
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
        return run_events(f"{EMULATE_WINDOW}s", listen, kw.get("public_url"), ui, early=True)
    events = run_events(text, kw["listen"], kw.get("public_url"), ui)
    if options.dry_run:
        click.echo("--collect-events: a dry run sends nothing; no events collected", err=True)
        return None
    return events


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
    click.option(
        "--resubscribe",
        is_flag=True,
        help="Send subscribed=true for customers who replied STOP (the send ledger knows "
        "them); by default a sheet's yes does not lift a STOP: an export older than the STOP "
        "would text them again.",
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
        check_output_path(output, "-o", force=kw["force"], noted=True)
        return 0

    check = guard(check_output, bool(kw.get("as_json")))
    if check:
        sys.exit(check)

    def after(report: Report) -> None:
        write_records(report, output)
        if not kw.get("quiet"):
            click.echo(f"  records: {output}", err=True)

    run_bulk(ctx, "customers get", file, kw, after=after, output=output)


#: The first columns of a customers backup (``customers get -o``).
RECORD_COLUMNS = ("phone_number", "first_name", "last_name", "email", "subscribed")


def write_records(report: Report, output: Path) -> None:
    """The GET answers kept in the results, as a customers sheet; ``sonar__row`` says which
    row of the keys sheet each came from."""
    from sonar_bulk.outputs import write_table
    from sonar_bulk.owned import Written
    from sonar_bulk.schema import ROW_COLUMN

    answers = sorted(report.results.extra.get("record", {}).items())
    records = [json.loads(v) for _, v in answers]
    numbers = report.sheet.row_numbers if report.sheet is not None else None
    props = sorted({k for r in records for k in (r.get("properties") or {})})
    headers = list(RECORD_COLUMNS) + [f"property:{p}" for p in props] + [ROW_COLUMN]

    def rows() -> Iterator[list[str]]:
        for (index, _), r in zip(answers, records, strict=True):
            base = [
                ""
                if r.get(h) is None
                else str(r.get(h)).lower()
                if h == "subscribed"
                else str(r[h])
                for h in RECORD_COLUMNS
            ]
            values = r.get("properties") or {}
            row = str(int(numbers[index])) if numbers is not None else ""
            yield base + ["" if values.get(p) is None else str(values[p]) for p in props] + [row]

    # neutralized: "=HYPERLINK(...)" from Sonar never runs in a spreadsheet; read back (it
    # has a sonar__row), "+vip" or "@ana" are as they were
    write_table(output, headers, rows(), "customers", text_columns=[0])
    Written().note(output)  # ours to write again while unchanged; a user's list never is


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


@_verb(
    properties,
    "set",
    click.option(
        "--existing-only",
        is_flag=True,
        help="Only customers Sonar has already: each row's customer is read first (GET "
        "only), and a phone Sonar does not know is reported skipped instead of created.",
    ),
    changed_only=True,
)
def properties_set(ctx: click.Context, /, file: Path, **kw: Any) -> None:
    """{summary}

    FILE is a properties sheet: phone_number (or email), property_name, value, type. Sonar
    sets properties through the customer upsert, so a row with a value needs phone_number
    (validate says so too); by email alone a row can only delete (a blank value). A phone
    Sonar does not know becomes a new customer (reported created; --existing-only skips
    such rows).

    \b
    Example:
      sonar-bulk --emulate properties set samples/properties.csv --dry-run
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
    allow_blank_merge_option(),
    sends=True,
    diff=True,
    events=True,
)
def messages_send(
    ctx: click.Context,
    /,
    file: Path,
    text_template: str | None,
    allow_blank_merge: bool,
    **kw: Any,
) -> None:
    """Send one SMS/MMS per row.

    FILE is a messages sheet: to, text (with {{column}} merge fields filled from the same row,
    {{column|fallback}} where it may be blank), media_url, tag_names. A row whose merge field is
    blank is an error unless --allow-blank-merge. Asks before sending (the count and the first
    message) unless --yes.
    A send whose outcome is unknown (a timeout, a 500) is reported unknown and never sent
    again by itself.

    \b
    Example:
      sonar-bulk --emulate messages send samples/messages.csv --yes
    """
    run_bulk(
        ctx,
        "messages send",
        file,
        kw,
        validate_extra={"text": text_template, "allow_blank_merge": allow_blank_merge},
    )


@_verb(
    messages,
    "tag",
    click.option(
        "--tag",
        metavar="NAME",
        help="The tag of every row without a tag_name (the sheet may then have no tag column).",
    ),
)
def messages_tag(ctx: click.Context, /, file: Path, tag: str | None, **kw: Any) -> None:
    """{summary}

    FILE is a message_tags sheet: external_message_id, tag_name (or --tag); or the results
    file of a messages send, whose sonar__external_message_id column names each message.

    \b
    Example:
      sonar-bulk --emulate messages tag samples/message_tags.csv --dry-run
    """
    run_bulk(ctx, "messages tag", file, kw, validate_extra={"tag": tag})


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
