"""``demo``: the whole flow on the bundled samples against an embedded emulator."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click

from sonar_bulk.cli.bulk import CliUi, write_records
from sonar_bulk.cli.common import AliasOption, cli, guard
from sonar_bulk.errors import UsageError

#: (command, sample, what the step shows)
STEPS = (
    ("customers upsert", "customers.csv", "add 10 customers with custom properties"),
    (
        "messages send",
        "messages.csv",
        "text 5 of them, {{merge fields}} filled per row; collect the webhook events",
    ),
    ("campaigns send", "campaign_recipients.csv", "send a campaign, some rows scheduled"),
    ("customers get", "customer_keys.csv", "read the records back (a backup sheet)"),
)


def find_samples(given: Path | None) -> Path:
    """The samples folder: ``given``, else ./samples, else the one beside the package."""
    candidates = [given] if given else [Path("samples"), Path(__file__).parents[2] / "samples"]
    for folder in candidates:
        if folder is not None and all((folder / s).is_file() for _, s, _ in STEPS):
            return folder
    where = given or "./samples"
    raise UsageError(
        f"no sonar-bulk samples in {where}: run the demo from the sonar-bulk folder, or pass "
        "--samples DIR"
    )


@cli.command("demo")
@click.option(
    "--samples",
    "samples_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Folder of the sample sheets (default: ./samples).",
)
@click.option(
    "--out-dir",
    "--out",  # the old name, still accepted (-o is --output everywhere, so not here)
    "out_dir",
    cls=AliasOption,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sonar-bulk-demo"),
    show_default=True,
    help="Folder for the demo's copies of the samples and every output.",
)
def demo_cmd(samples_dir: Path | None, out_dir: Path) -> None:
    """Run the whole flow on the bundled samples against an embedded Sonar emulator.

    Validates and upserts customers, sends messages with merge fields (two customers reply,
    and their webhook events are joined to the results), sends a campaign and reads the
    customers back, each with its results sheet. Nothing leaves the machine and no
    account is needed; the emulator starts empty each time. The samples are copied into
    --out-dir first, so the outputs land there.

    \b
    Example:
      sonar-bulk demo
    """

    def run() -> int:
        from sonar_bulk import connection as cn
        from sonar_bulk import report as rp
        from sonar_bulk.engine import bulk
        from sonar_bulk.plan import OPERATIONS
        from sonar_bulk.schema import KINDS
        from sonar_bulk.sheets import read_sheet
        from sonar_bulk.validate import validate_sheet

        source = find_samples(samples_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ui = CliUi(quiet=False, yes=True)
        worst = 0
        with cn.emulated(keep_world=False) as conn:
            click.echo(f"Sonar emulator at {conn.base_url} (nothing leaves this machine)\n")
            for number, (command, name, what) in enumerate(STEPS, start=1):
                copy = out_dir / name
                shutil.copyfile(source / name, copy)
                click.echo(f"{number}. sonar-bulk {command} {copy}: {what}")
                op = OPERATIONS[command]
                validation = validate_sheet(read_sheet(copy), KINDS[op.kind])
                if number == 1:
                    summary = rp.human_summary(validation, 3)
                    click.echo("   " + summary.replace("\n", "\n   "))
                options = bulk.BulkOptions(
                    rate=0,
                    force=True,
                    skip_invalid=True,
                    resend=True,
                    ledger=False,  # a throwaway emulator: nothing to remember
                    journal=out_dir / f"{copy.stem}.journal.sqlite",
                    command_line=f"sonar-bulk {command} {copy}",
                )
                prepared = bulk.prepare(op, validation, conn, options, ui)
                events = _events(prepared, conn) if command == "messages send" else None
                report = bulk.execute(prepared, _Quiet(ui))
                counts = ", ".join(f"{n} {s}" for s, n in report.summary.counts.items())
                click.echo(f"   {counts}; results: {report.summary.results}")
                if events is not None:
                    _replies(events, prepared, report, conn)
                if command == "customers get":
                    backup = out_dir / "customers.backup.csv"
                    write_records(report.results, backup)
                    click.echo(f"   records: {backup}")
                if command == "messages send":
                    first = report.results.extra.get("external_message_id", {}).get(0)
                    if first:
                        click.echo(f"   first external message id: {first}")
                worst = max(worst, report.exit_code)
                click.echo("")
        click.echo(f"Done. Every output is in {out_dir}/ (open the *.results.csv files).")
        click.echo(
            "Next: sonar-bulk template customers -o my_customers.xlsx, fill it in, then "
            "sonar-bulk validate my_customers.xlsx --kind customers"
        )
        return 0 if worst in (0, 1) else worst

    sys.exit(guard(run, False))


#: What two of the texted customers answer in the demo (the emulator's admin API plays them).
REPLIES = ("Got it, thanks!", "STOP")


def _events(prepared: Any, conn: Any) -> Any:
    """A webhook collector for the messages step (as --collect-events starts one)."""
    from sonar_bulk.events.run import RunEvents

    events = RunEvents(0, "127.0.0.1:0", None)
    events.bind(prepared.results_path)
    events.start(conn, quiet=True)
    return events


def _replies(events: Any, prepared: Any, report: Any, conn: Any) -> None:
    """Two customers answer (one texts STOP); their events are joined to the results."""
    import time

    import httpx

    phones = [p for p in prepared.validation.normalized["to"].to_pylist() if p][: len(REPLIES)]
    admin = conn.base_url.split("/api/", 1)[0] + "/__emulator__/inbound"
    with httpx.Client(trust_env=False, timeout=10) as client:
        for phone, text in zip(phones, REPLIES, strict=False):
            client.post(admin, json={"phone_number": phone, "text": text}).raise_for_status()

    def arrived() -> None:  # a reply each, and the STOP's unsubscribe
        from sonar_bulk.events.join import INBOUND
        from sonar_bulk.events.store import EventStore, Filter

        store = EventStore(events.store, create=False)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                store.counts(Filter(events=INBOUND))[0] < len(phones)
                or not store.counts(Filter(events=("customer_unsubscribed",)))[0]
            ):
                time.sleep(0.02)
        finally:
            store.close()

    count = events.finish(prepared, report, arrived)
    click.echo(
        f"   {len(phones)} customers replied ({' / '.join(REPLIES)}): see sonar__replied, "
        f"sonar__reply_text and sonar__unsubscribed_after_send in the results; {count} "
        f"webhook events in {events.sheet}"
    )


class _Quiet:
    """The demo's steps print their own one-line summaries: no progress bars."""

    def __init__(self, ui: CliUi) -> None:
        self.ui = ui

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        self.ui.warn(text)

    def confirm(self, question: str) -> bool:
        return True

    def progress(self, total: int, stats: Any, throttled: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()
