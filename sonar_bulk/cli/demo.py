"""``demo``: the whole flow on the bundled samples against an embedded emulator."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sonar_bulk.cli.common import AliasOption, cli, guard
from sonar_bulk.errors import UsageError

if TYPE_CHECKING:
    from sonar_bulk.cli.talk import CliUi
    from sonar_bulk.engine import talk

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
        from sonar_bulk.cli.bulk import write_records
        from sonar_bulk.cli.talk import CliUi
        from sonar_bulk.engine.bulk import BulkOptions
        from sonar_bulk.engine.run import run_sheet
        from sonar_bulk.outputs import check_output_path

        source = find_samples(samples_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_copies(source, out_dir)
        worst = 0
        with cn.emulated(keep_world=False) as conn:
            click.echo(f"Sonar emulator at {conn.base_url} (nothing leaves this machine)\n")
            ui = _DemoUi(CliUi(quiet=False, yes=True), conn)
            for number, (command, name, what) in enumerate(STEPS, start=1):
                copy = out_dir / name
                shutil.copyfile(source / name, copy)
                click.echo(f"{number}. sonar-bulk {command} {copy}: {what}")
                ui.summary = number == 1
                options = BulkOptions(
                    rate=0,
                    skip_invalid=True,
                    resend=True,
                    ledger=False,  # a throwaway emulator: nothing to remember
                    command_line=f"sonar-bulk {command} {copy}",
                )
                events = None
                if command == "messages send":
                    from sonar_bulk.events.run import RunEvents

                    events = RunEvents(0, "127.0.0.1:0", None, quiet=True)
                report = run_sheet(command, copy, conn, options, ui, events)
                if command == "customers get":
                    backup = out_dir / "customers.backup.csv"
                    check_output_path(backup, "the demo's records", noted=True)
                    write_records(report, backup)
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


def _check_copies(source: Path, out_dir: Path) -> None:
    """The samples are copied into ``out_dir``: a file there of the same name that is not the
    sample (the user's own customers.csv) is never replaced."""
    for _, name, _ in STEPS:
        copy = out_dir / name
        if copy.exists() and (
            not copy.is_file() or copy.read_bytes() != (source / name).read_bytes()
        ):
            raise UsageError(
                f"{copy}: the file exists and is not sonar-bulk's sample; the demo never "
                "replaces it: pass another --out-dir"
            )


class _DemoUi:
    """The demo's steps print their own one-line summaries: no progress bars, no questions;
    two customers answer the messages step's texts while its events are collected."""

    def __init__(self, ui: CliUi, conn: Any) -> None:
        self.ui = ui
        self.conn = conn
        #: Show the sheet's summary (the first step's).
        self.summary = False
        self.validation: Any = None
        self.replied: list[str] = []
        self.replies_line = ""

    def tell(self, notice: talk.Notice) -> None:
        from sonar_bulk.engine import talk

        if isinstance(notice, talk.Validated):
            self.validation = notice.validation
            if self.summary:
                from sonar_bulk import report as rp

                summary = rp.human_summary(notice.validation, 3)
                click.echo("   " + summary.replace("\n", "\n   "))
        elif isinstance(notice, talk.Finished):
            s = notice.report.summary
            counts = ", ".join(f"{n} {status}" for status, n in s.counts.items())
            click.echo(f"   {counts}; results: {s.results}")
            if self.replies_line:  # told before the run's end: said after its counts
                click.echo(self.replies_line)
                self.replies_line = ""
        elif isinstance(notice, talk.EventsJoined):
            self.replies_line = (
                f"   {len(self.replied)} customers replied ({' / '.join(REPLIES)}): see "
                "sonar__replied, sonar__reply_text and sonar__unsubscribed_after_send in the "
                f"results; {notice.count} webhook events in {notice.sheet}"
            )
        elif notice.warning:
            self.ui.tell(notice)

    def ask(self, question: talk.Question) -> bool:
        return True

    def progress(self, total: int, stats: Any, throttled: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def wait_for_events(self, window: talk.EventsWindow) -> None:
        """Two customers answer (one texts STOP); wait for their events."""
        import time

        import httpx

        normalized = self.validation.normalized["to"].to_pylist()
        self.replied = phones = [p for p in normalized if p][: len(REPLIES)]
        admin = self.conn.base_url.split("/api/", 1)[0] + "/__emulator__/inbound"
        with httpx.Client(trust_env=False, timeout=10) as client:
            for phone, text in zip(phones, REPLIES, strict=False):
                client.post(admin, json={"phone_number": phone, "text": text}).raise_for_status()
        deadline = time.monotonic() + 10
        # a reply each, and the STOP's unsubscribe
        while time.monotonic() < deadline and not self._arrived(window, len(phones)):
            time.sleep(0.02)

    @staticmethod
    def _arrived(window: talk.EventsWindow, replies: int) -> bool:
        from sonar_bulk.events.join import INBOUND
        from sonar_bulk.events.store import EventStore, Filter

        store = EventStore(window.store, create=False)
        try:
            return (
                store.counts(Filter(events=INBOUND))[0] >= replies
                and store.counts(Filter(events=("customer_unsubscribed",)))[0] > 0
            )
        finally:
            store.close()
