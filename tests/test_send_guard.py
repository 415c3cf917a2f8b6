"""The send guard: nobody is texted twice, whatever the user did to the sheet between runs.

Each test is one of the ways an attack and a new user's trial texted people twice: an edited
text after a kill, invisible edits, the same API written differently, two runs at once, the
results fed back, --limit then a copy, a campaign resumed after its send_at passed. All run
against a real emulator over loopback (real processes where one must be killed or run at once).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import os
import pty
import shutil
import subprocess
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from sonar_bulk import validation as validate_module
from sonar_bulk.api.endpoints import canonical_target
from sonar_bulk.cli import cli
from sonar_bulk.cli import talk as cli_talk
from sonar_bulk.connection import Connection
from sonar_bulk.emulator import state as emulator_state
from sonar_bulk.emulator.app import EmulatorConfig
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.engine import bulk as bulk_engine
from sonar_bulk.engine.ledger import content_of
from sonar_bulk.engine.talk import RecordingUi
from sonar_bulk.plan import OPERATIONS
from sonar_bulk.schema import KINDS
from sonar_bulk.sheets import read_sheet
from sonar_bulk.validation import ValidateOptions, validate_sheet

from .emulator_helpers import wait_for
from .test_bulk_cli import (
    TOKEN,
    bulk,
    command,
    emu,  # noqa: F401 (a fixture)
    kill_mid_send,
    messages_sheet,
    outbound,
    read_dicts,
    server,  # noqa: F401 (a fixture)
    settle,
    state,
    us_numbers,
    write_sheet,
)

# -- who gets what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "HTTP://LocalHost:80/api/v1/.",
        "http://127.1/api/v1/",
        "http://[::ffff:127.0.0.1]/api/v1",
        "http://[::1]:80//api//v1",
        "http://0x7f.0.0.1/api/v1",
        "http://127.0.0.1/api/x/../v1",
    ],
)
def test_one_api_has_one_name(spelling: str) -> None:
    assert canonical_target(spelling) == canonical_target("http://127.0.0.1/api/v1")


def test_other_apis_keep_their_names() -> None:
    live = canonical_target("https://api.sendsonar.com/api/v1")
    assert canonical_target("HTTPS://API.SendSonar.com:443/api/v1/") == live
    assert canonical_target("http://127.0.0.1:8080/api/v1") != canonical_target(
        "http://127.0.0.1/api/v1"
    )
    assert canonical_target("https://api.sendsonar.com/api/v2") != live
    assert canonical_target("https://10.0.0.1/api/v1") == "https://10.0.0.1/api/v1"


@pytest.mark.parametrize(
    "variant",
    [
        "Caf\u00e9 sale:\r\n20% off today",
        unicodedata.normalize("NFD", "Caf\u00e9 sale:\n20% off today"),
        "Caf\u00e9 sale:\n20%\u00a0off today",
        "  Caf\u00e9 sale:\n20% off today \n",
    ],
)
def test_invisible_edits_leave_a_message_the_same(variant: str) -> None:
    assert content_of(variant) == content_of("Caf\u00e9 sale:\n20% off today")


def test_the_results_csv_quote_is_not_part_of_a_message() -> None:
    assert content_of("'-20% off") == "-20% off"
    assert content_of("'=5 is the answer") == "=5 is the answer"
    assert content_of("'quoted' words") == "'quoted' words"  # a real quote stays


# -- 1. an edited text after a kill -----------------------------------------------------------


def test_a_kill_then_an_edit_then_a_resume_texts_nobody_twice(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(310, 60)
    sheet = messages_sheet(tmp_path / "promo.csv", phones)
    journal = tmp_path / "promo.send.journal.sqlite"
    kill_mid_send(emu, sheet, 15)
    settle(emu)
    at_kill = outbound(emu)
    assert 15 <= len(at_kill) < 60
    # the user fixes a typo in every text and adds a tag column, then resumes
    rows = [
        [p, f"Hello {{{{first_name}}}}, row {i}!", f"P{i}", "spring"] for i, p in enumerate(phones)
    ]
    write_sheet(sheet, ["to", "text", "first_name", "tag_names"], rows)
    emu.admin("POST", "/config", {"latency_ms": 0})
    resumed = bulk(emu, "messages", "send", str(sheet), "--resume", str(journal), "--yes")
    assert resumed.exit_code in (0, 1), resumed.output
    sent = outbound(emu)
    assert max(sent.values()) == 1  # nobody texted twice
    results = {r["to"]: r for r in read_dicts(tmp_path / "promo.send.results.csv")}
    held = {
        p
        for p, r in results.items()
        if r["sonar__status"] == "unknown" or "in flight when it ended" in r["sonar__error"]
    }
    assert len(held) <= 4  # at most the requests in flight at the kill
    assert set(sent) | held == set(phones)  # everyone else got one text
    for phone in at_kill:
        row = results[phone]
        assert row["sonar__status"] in ("skipped", "unknown"), row
        if row["sonar__status"] == "skipped":
            assert "earlier run of this sheet" in row["sonar__error"]
            assert "Hello" in row["sonar__error"] and "Hi " in row["sonar__error"]
    assert "changed since: not sent again (--resend sends them)" in resumed.output
    assert "the sheet changed since the journal's last run" in resumed.output


def test_invisible_edits_and_a_tag_column_are_the_same_send(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(311, 4)
    texts = ["Caf\u00e9 opens at 9", "Two\nlines", "20% off", "See you"]
    sheet = write_sheet(
        tmp_path / "a.csv", ["to", "text"], [list(r) for r in zip(phones, texts, strict=True)]
    )
    first = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert first.exit_code == 0, first.output
    edited = [
        unicodedata.normalize("NFD", texts[0]),
        "Two\r\nlines",
        "20%\u00a0off ",
        " See you",
    ]
    write_sheet(
        sheet,
        ["to", "text", "tag_names"],
        [[p, t, "x"] for p, t in zip(phones, edited, strict=True)],
    )
    again = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert again.exit_code == 0, again.output
    assert sum(outbound(emu).values()) == 4
    rows = read_dicts(tmp_path / "a.send.results.csv")
    assert all(r["sonar__error"].startswith("not sent again") for r in rows)


# -- 2. the same API written differently ------------------------------------------------------


def test_the_same_api_written_differently_is_one_target(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(312, 5)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    port = emu.api_url.split(":")[2].split("/")[0]
    first = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert first.exit_code == 0, first.output
    for i, spelling in enumerate(
        [
            f"HTTP://LOCALHOST:{port}/api/v1/",
            f"http://127.1:{port}/api/v1",
            f"http://localhost:{port}/api/v1/.",
        ]
    ):
        copy = shutil.copyfile(sheet, tmp_path / f"copy{i}.csv")
        argv = ["messages", "send", str(copy), "--yes", "--base-url", spelling]
        again = cli_runner_invoke(argv)
        assert again.exit_code == 0, again.output
        assert "from another sheet" in again.output
    assert sum(outbound(emu).values()) == 5


def cli_runner_invoke(argv: list[str]) -> Result:
    return CliRunner().invoke(cli, [*argv, "--token", TOKEN, "--rate", "0"])


def test_a_resume_against_another_target_is_refused(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(313, 4)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    first = bulk(emu, "messages", "send", str(sheet), "--yes", "--limit", "2")
    assert first.exit_code == 0, first.output
    with EmulatorServer(EmulatorConfig(tokens={TOKEN: "valid"})) as other:
        resumed = bulk(
            other,
            "messages",
            "send",
            str(sheet),
            "--yes",
            "--resume",
            str(tmp_path / "a.send.journal.sqlite"),
        )
        assert resumed.exit_code == 2, resumed.output
        assert "the journal's run went to http://loopback:" in resumed.output
        assert "this one would go to http://loopback:" in resumed.output
        assert state(other)["messages"] == []
    assert sum(outbound(emu).values()) == 2


# -- 3. two runs at once ----------------------------------------------------------------------


def test_a_run_waiting_at_its_prompt_holds_the_sheet(emu: EmulatorServer, tmp_path: Path) -> None:
    """One run asks "Send?" in a terminal; another run of the same sheet can't start."""
    phones = us_numbers(314, 20)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    leader, follower = pty.openpty()
    first = subprocess.Popen(
        command(emu, "messages", "send", str(sheet)),
        stdin=follower,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    try:
        seen = b""

        def prompted() -> bool:
            nonlocal seen
            try:
                seen += os.read(leader, 4096)
            except OSError:
                return True
            return b"Send [y/N]" in seen or first.poll() is not None

        wait_for(prompted, 30)
        assert first.poll() is None, seen.decode(errors="replace")
        second = subprocess.run(
            command(emu, "messages", "send", str(sheet), "--yes"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert "another sonar-bulk run is using it" in second.stderr
        assert state(emu)["messages"] == []
        os.write(leader, b"y\n")
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
        os.close(leader)
    assert Counter(outbound(emu).values()) == Counter({1: 20})


def test_a_sheet_and_its_sorted_copy_at_once_text_each_person_once(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(315, 60)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    rows = list(
        zip(
            phones,
            [f"Hi {{{{first_name}}}}, row {i}" for i in range(60)],
            [f"P{i}" for i in range(60)],
            strict=True,
        )
    )
    copy = write_sheet(
        tmp_path / "sorted.csv", ["to", "text", "first_name"], [list(r) for r in reversed(rows)]
    )
    emu.admin("POST", "/config", {"latency_ms": 15})
    procs = [
        subprocess.Popen(
            command(emu, "messages", "send", str(path), "--yes", "--concurrency", "4"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for path in (sheet, copy)
    ]
    try:
        for proc in procs:
            assert proc.wait(timeout=120) in (0, 1), proc.stderr.read() if proc.stderr else ""
    finally:  # a failure leaves no run sending into the next test's emulator
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()
    sent = outbound(emu)
    assert len(sent) == 60 and max(sent.values()) == 1
    both = read_dicts(tmp_path / "a.send.results.csv") + read_dicts(
        tmp_path / "sorted.send.results.csv"
    )
    assert sum(r["sonar__status"] == "queued" for r in both) == 60
    skipped = [r for r in both if r["sonar__status"] == "skipped"]
    assert len(skipped) == 60
    assert all("another" in r["sonar__error"] for r in skipped)


# -- 4. the results CSV fed back in -----------------------------------------------------------


def test_the_results_csv_fed_back_texts_nobody_again(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(316, 8)
    texts = ["-20% off", "=5 is the answer", "+1 more day", "@team hello", "plain", "-x", "=y", "z"]
    sheet = write_sheet(
        tmp_path / "a.csv", ["to", "text"], [list(r) for r in zip(phones, texts, strict=True)]
    )
    first = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert first.exit_code == 0, first.output
    results = tmp_path / "a.send.results.csv"
    assert any(r["text"].startswith("'") for r in read_dicts(results))  # neutralized cells
    fed = shutil.copyfile(results, tmp_path / "again.csv")
    again = bulk(emu, "messages", "send", str(fed), "--yes")
    assert again.exit_code == 0, again.output
    assert sum(outbound(emu).values()) == 8
    assert {r["sonar__status"] for r in read_dicts(tmp_path / "again.send.results.csv")} == {
        "skipped"
    }


def test_a_results_file_on_another_machine_texts_nobody_again(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by a double-send trial: a results file fed back where the ledger is not (another
    machine, a colleague) texted everyone again. The file says itself which rows went out."""
    from sonar_bulk.engine import ledger as ledger_module

    phones = us_numbers(318, 6)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fed = shutil.copyfile(tmp_path / "a.send.results.csv", elsewhere / "from_a_colleague.csv")
    ledger_module.ledger_path().unlink()  # no memory of the sends on this "machine"
    again = bulk(emu, "messages", "send", str(fed), "--yes")
    assert again.exit_code == 0, again.output
    assert sum(outbound(emu).values()) == 6
    rows = read_dicts(elsewhere / "from_a_colleague.send.results.csv")
    assert {r["sonar__status"] for r in rows} == {"skipped"}
    assert all("this results file says it was queued" in r["sonar__error"] for r in rows)
    planned = bulk(emu, "messages", "send", str(fed), "--resend", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert "6 planned" in planned.output  # --resend (only) sends them again


def test_a_results_file_of_rows_skipped_as_sent_before_texts_nobody_again(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by a double-send trial: the results of a copy, whose rows the ledger skipped
    (another sheet sent them), fed back where the ledger is not, texted all of them again: a
    skipped row's reason says it was sent before, and the file is believed. A row skipped as
    unsubscribed is never offered again, --resend included."""
    from sonar_bulk.engine import ledger as ledger_module

    phones = us_numbers(319, 6)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    copy = shutil.copyfile(sheet, tmp_path / "final.csv")
    assert bulk(emu, "messages", "send", str(copy), "--yes").exit_code == 0
    rows = read_dicts(tmp_path / "final.send.results.csv")
    assert {r["sonar__status"] for r in rows} == {"skipped"}  # the ledger kept them
    rows[0]["sonar__error"] = f"unsubscribed: {phones[0]} replied STOP at 2026-12-07T03:00:00Z"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fed = elsewhere / "final_results.csv"
    with fed.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ledger_module.ledger_path().unlink()  # no memory of the sends on this "machine"
    again = bulk(emu, "messages", "send", str(fed), "--yes")
    assert again.exit_code == 0, again.output
    assert sum(outbound(emu).values()) == 6
    after = read_dicts(elsewhere / "final_results.send.results.csv")
    assert {r["sonar__status"] for r in after} == {"skipped"}
    assert after[0]["sonar__error"].startswith(f"unsubscribed: {phones[0]} replied STOP")
    assert all("this results file says it was sent before" in r["sonar__error"] for r in after[1:])
    planned = bulk(emu, "messages", "send", str(fed), "--resend", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert "5 planned" in planned.output  # --resend sends them again, never the unsubscribed


# -- 5. --limit, then a copy ------------------------------------------------------------------


def test_limit_entries_never_hide_sends_made_from_a_copy(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(317, 20)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    copy = shutil.copyfile(sheet, tmp_path / "b.csv")
    test_blast = bulk(emu, "messages", "send", str(copy), "--yes", "--limit", "2")
    assert test_blast.exit_code == 0, test_blast.output
    whole = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert whole.exit_code == 0, whole.output
    again = bulk(emu, "messages", "send", str(copy), "--yes")
    assert again.exit_code == 0, again.output
    sent = outbound(emu)
    assert len(sent) == 20 and max(sent.values()) == 1


def test_resend_sends_again_when_asked(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sonar refuses the same text to the same customer within seconds; not what this tests
    monkeypatch.setattr(emulator_state, "DUPLICATE_WINDOW_SECONDS", 0)
    phones = us_numbers(318, 3)
    sheet = messages_sheet(tmp_path / "a.csv", phones)
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    copy = shutil.copyfile(sheet, tmp_path / "b.csv")
    again = bulk(emu, "messages", "send", str(copy), "--yes", "--resend")
    assert again.exit_code == 0, again.output
    assert set(outbound(emu).values()) == {2}


# -- 6. a campaign resumed after its send_at passed -------------------------------------------


def test_a_campaign_resumed_after_send_at_keeps_its_sent_rows(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = us_numbers(319, 6)
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    rows = [[p, "fall_sale_2026", when.isoformat()] for p in phones]
    sheet = write_sheet(tmp_path / "c.csv", ["to", "campaign_id", "send_at"], rows)
    first = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--limit", "3")
    assert first.exit_code == 0, first.output
    assert len(state(emu)["scheduled"]) == 3
    later = when + dt.timedelta(hours=1)
    monkeypatch.setattr(validate_module, "utc_now", lambda: later)
    journal = str(tmp_path / "c.campaign.journal.sqlite")
    resumed = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--resume", journal)
    assert resumed.exit_code == 0, resumed.output
    results = read_dicts(tmp_path / "c.campaign.results.csv")
    assert [r["sonar__status"] for r in results[:3]] == ["scheduled"] * 3
    assert [r["sonar__status"] for r in results[3:]] == ["skipped"] * 3
    assert all("send_at has passed" in r["sonar__error"] for r in results[3:])
    assert not (tmp_path / "c.campaign.failed.csv").exists()  # nothing "to fix and run again"
    assert len(state(emu)["scheduled"]) == 3 and state(emu)["messages"] == []
    # asked in a terminal, the user sends the rest now
    monkeypatch.setattr(cli_talk, "is_terminal", lambda: True)
    now = bulk(emu, "campaigns", "send", str(sheet), "--resume", journal, input="y\ny\n")
    assert now.exit_code == 0, now.output
    assert "their send_at has passed" in now.output
    assert sorted(m["to"] for m in state(emu)["messages"]) == sorted(phones[3:])
    assert len(state(emu)["scheduled"]) == 3


def test_a_past_send_at_without_a_journal_is_still_an_error(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    rows = [["+12125550100", "fall_sale_2026", "2020-01-01T09:00:00Z"]]
    sheet = write_sheet(tmp_path / "c.csv", ["to", "campaign_id", "send_at"], rows)
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes")
    assert result.exit_code == 1, result.output
    assert state(emu)["messages"] == [] and state(emu)["scheduled"] == []


def test_retry_unknown_needs_resume(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = messages_sheet(tmp_path / "a.csv", us_numbers(320, 2))
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--retry-unknown")
    assert result.exit_code == 2
    assert "--retry-unknown goes with --resume" in result.output
    assert state(emu)["messages"] == []


# -- quiet hours, checked when each row is sent ---------------------------------------------------


class _Wall:
    """Wall-clock seconds that move ``step`` seconds each time they are read, and by whatever
    a held row sleeps."""

    def __init__(self, start: dt.datetime, step: float) -> None:
        self.now, self.step = start.timestamp(), step
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _prepared_send(
    emu: EmulatorServer, sheet: Path, command: str, quiet: str, policy: str
) -> bulk_engine.Prepared:
    op = OPERATIONS[command]
    validation = validate_sheet(read_sheet(sheet), KINDS[op.kind], ValidateOptions())
    options = bulk_engine.BulkOptions(
        rate=0,
        concurrency=1,
        quiet_hours=bulk_engine.parse_quiet_hours(quiet),
        quiet_policy="skip" if policy == "skip" else "hold",
    )
    return bulk_engine.prepare(
        op, validation, Connection(emu.api_url, TOKEN), options, RecordingUi(yes=False)
    )


@pytest.mark.parametrize("policy", ["skip", "hold"])
def test_quiet_hours_that_open_mid_run_are_kept_row_by_row(
    emu: EmulatorServer, tmp_path: Path, policy: str
) -> None:
    """A run that starts at 20:58 in New York, one row every ~20 s: the rows whose turn
    comes after 21:00 are skipped (or held until 08:00), never sent inside the window."""
    phones = us_numbers(321, 20)
    sheet = messages_sheet(tmp_path / "evening.csv", phones)
    # quiet hours far from the real now, so that prepare (which reads the real clock) lets
    # every row through; the run's own clock then walks into the window
    zone = ZoneInfo("America/New_York")
    start = dt.datetime(2027, 1, 15, 20, 58, tzinfo=zone)
    prepared = _prepared_send(emu, sheet, "messages send", "21:00-08:00", policy)
    prepared.holds.clear()
    prepared.disposition[prepared.disposition == bulk_engine.QUIET_SKIP] = bulk_engine.RUN
    wall = _Wall(start, 5.0)
    report = bulk_engine.execute(prepared, RecordingUi(yes=False), wall=wall, sleep=wall.sleep)
    got = [report.results.status(i) for i in range(20)]
    sent_before = got.index("skipped") if policy == "skip" else None
    if policy == "skip":
        assert sent_before is not None and 0 < sent_before < 20
        assert got == ["queued"] * sent_before + ["skipped"] * (20 - sent_before)
        assert "when its turn came" in report.results.row(19)[2]
        assert sum(outbound(emu).values()) == sent_before
    else:
        assert got == ["queued"] * 20  # every row went out, the late ones after 08:00
        assert any(s > 10 * 3600 for s in wall.slept)  # held until the window's end
        assert sum(outbound(emu).values()) == 20


def test_a_recipient_whose_zone_is_unknown_is_held_not_guessed(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = write_sheet(
        tmp_path / "m.csv", ["to", "text"], [["+80012345678", "hi"], ["+13105550199", "hi"]]
    )
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--quiet-hours", "00:00-00:01")
    rows = read_dicts(tmp_path / "m.send.results.csv")
    assert rows[0]["sonar__status"] == "skipped", result.output
    assert "time zone of +80012345678 is unknown" in rows[0]["sonar__error"]
    assert [m["to"] for m in state(emu)["messages"]] == ["+13105550199"]


def test_countries_without_area_zones_use_their_own_zones() -> None:
    from sonar_bulk import normalize as nz

    assert nz.phone_timezones("+447700900123") == (("Europe/London",), "country GB")
    assert nz.phone_timezones("+12425551234")[0] == ("America/Nassau",)
    assert nz.phone_timezones("+16845551234")[0] == ("Pacific/Pago_Pago",)
    assert nz.phone_timezones("+12125550100") == (("America/New_York",), "from the number")


def test_hold_moves_a_campaign_send_at_to_the_end_of_the_window(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    zone = ZoneInfo("America/New_York")
    now = dt.datetime.now(zone)
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end_at = now + dt.timedelta(hours=1)
    sheet = write_sheet(
        tmp_path / "c.csv", ["to", "campaign_id"], [["+12125550123", "fall_sale_2026"]]
    )
    result = bulk(
        emu, "campaigns", "send", str(sheet), "--yes", "--quiet-hours", f"{start}-{end_at:%H:%M}"
    )
    assert result.exit_code == 0, result.output
    scheduled = state(emu)["scheduled"]
    assert [s["to"] for s in scheduled] == ["+12125550123"]
    when = dt.datetime.fromisoformat(scheduled[0]["send_at"]).astimezone(zone)
    assert when.strftime("%H:%M") == end_at.strftime("%H:%M")
    assert state(emu)["messages"] == []  # not sent inside the window


# -- what an attack on the guard found ------------------------------------------------------------


def test_a_copied_campaign_folder_is_another_sheet(emu: EmulatorServer, tmp_path: Path) -> None:
    """A copy of the folder copies the journal too: it must not speak for the original."""
    phones = us_numbers(330, 6)
    first = tmp_path / "t1"
    first.mkdir()
    sheet = messages_sheet(first / "s.csv", phones)
    assert bulk(emu, "messages", "send", str(sheet), "--yes", "--limit", "1").exit_code == 0
    copy = tmp_path / "t1copy"
    shutil.copytree(first, copy)
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    again = bulk(emu, "messages", "send", str(copy / "s.csv"), "--yes")
    assert again.exit_code == 0, again.output
    assert Counter(outbound(emu).values()) == Counter({1: 6})


def test_a_resend_that_does_not_go_out_never_erases_the_send_before(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(331, 3)
    sheet = messages_sheet(tmp_path / "s.csv", phones)
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    emu.admin("POST", "/clock", {"advance": 10})  # past Sonar's 7-second duplicate rule
    # --resend --limit 1: the first is sent again (asked for), the others are "beyond --limit"
    assert (
        bulk(emu, "messages", "send", str(sheet), "--yes", "--resend", "--limit", "1").exit_code
        == 0
    )
    emu.admin("POST", "/clock", {"advance": 10})
    plain = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert plain.exit_code == 0, plain.output
    assert sorted(outbound(emu).values()) == [1, 1, 2]
    # another sheet: its forced resend fails (a 503, no retries) and must not erase the record
    copy = shutil.copyfile(sheet, tmp_path / "b.csv")
    emu.admin("POST", "/faults", {"fault": "503", "count": 3, "path": "/api/v1/messages"})
    failed = bulk(emu, "messages", "send", str(copy), "--yes", "--resend", "--max-retries", "0")
    assert failed.exit_code == 1, failed.output
    emu.admin("DELETE", "/faults")
    third = shutil.copyfile(sheet, tmp_path / "c.csv")
    assert bulk(emu, "messages", "send", str(third), "--yes").exit_code == 0
    assert sorted(outbound(emu).values()) == [1, 1, 2]


def test_the_same_message_twice_in_one_sheet_goes_once(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(332, 4)
    pairs = [
        ("Caf\u00e9 promo", unicodedata.normalize("NFD", "Caf\u00e9 promo")),
        ("line1\nline2", "line1\r\nline2"),
        ("Big sale", "Big\u00a0sale"),
        ("=1+1 deal", "'=1+1 deal"),
    ]
    rows = [[p, a] for p, (a, _) in zip(phones, pairs, strict=True)]
    rows += [[p, b] for p, (_, b) in zip(phones, pairs, strict=True)]
    sheet = write_sheet(tmp_path / "dup.csv", ["to", "text"], rows)
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 0, result.output
    assert Counter(outbound(emu).values()) == Counter({1: 4})
    second = read_dicts(tmp_path / "dup.send.results.csv")[4:]
    assert all(r["sonar__status"] == "skipped" for r in second)
    assert "row 2 sends the same message" in second[0]["sonar__error"]


@pytest.mark.parametrize(
    "variant",
    [
        "Flash\u200b sale today only",
        "Flash sale to\u2060day only",
        "Flash sale to\u00adday only",
        "Flash\u2009sale today only",
        "Flash\u3000sale today only",
        "Flash  sale today only",
        "Flash\tsale today only",
        "\uff26lash sale today only",
        "\ufeffFlash sale today only",
    ],
)
def test_invisible_and_lookalike_characters_change_nothing(variant: str) -> None:
    assert content_of(variant) == content_of("Flash sale today only")


def test_a_row_edited_to_the_phone_of_a_row_already_texted_is_asked_about_not_sent(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by an attack on the page: row 1's phone edited to row 2's (already texted, its row
    unchanged) matched no earlier send one for one, so the second run texted row 2's recipient
    a second message. A row the earlier runs never saw, to a recipient this sheet texted, in a
    sheet changed since, is asked about as a changed row is; --resend sends it."""
    phones = us_numbers(420, 4)
    sheet = messages_sheet(tmp_path / "news.csv", phones)
    first = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert first.exit_code == 0, first.output
    rows = [[p, "Hi {{first_name}}, row " + str(i), f"P{i}"] for i, p in enumerate(phones)]
    rows[1][0] = phones[2]  # row 1 now texts row 2's recipient
    rows.append([us_numbers(421, 1)[0], "Hi {{first_name}}, a new row", "P9"])
    write_sheet(sheet, ["to", "text", "first_name"], rows)
    again = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert again.exit_code == 0, again.output
    assert outbound(emu) == Counter({**dict.fromkeys(phones, 1), us_numbers(421, 1)[0]: 1})
    results = read_dicts(tmp_path / "news.send.results.csv")
    assert results[1]["sonar__status"] == "skipped", results[1]
    assert "from another row: 'Hi P2, row 2'" in results[1]["sonar__error"]
    assert "new or changed since, says 'Hi P1, row 1'" in results[1]["sonar__error"]
    assert [r["sonar__status"] for r in results[4:]] == ["queued"]  # a new recipient: sent
    emu.admin("POST", "/clock", {"advance": 10})  # past Sonar's 7-second duplicate rule
    resent = bulk(emu, "messages", "send", str(sheet), "--yes", "--resend")
    assert resent.exit_code == 0, resent.output
    assert read_dicts(tmp_path / "news.send.results.csv")[1]["sonar__status"] == "queued"


def test_a_row_edited_to_a_texted_phone_whose_own_row_changed_too_is_not_sent(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by a double-send trial: with the typo fixed in every row, the texted recipient's
    own row was a changed row, which took their earlier send one for one, and a third row
    edited to their phone went out: a second text. Every row left for a recipient this sheet
    texted is asked about, in a sheet changed since; with --resume and without."""
    for resume in (False, True):
        phones = us_numbers(423 + resume, 3)
        folder = tmp_path / f"resume-{resume}"
        folder.mkdir()
        rows = [
            [p, "Hi {{first_name}}, see you Fridy", n] for p, n in zip(phones, "ABC", strict=True)
        ]
        sheet = write_sheet(folder / "a.csv", ["to", "text", "first_name"], rows)
        first = bulk(emu, "messages", "send", str(sheet), "--yes", "--limit", "2")
        assert first.exit_code == 0, first.output
        rows = [
            [p, "Hi {{first_name}}, see you Friday", n] for p, n in zip(phones, "ABC", strict=True)
        ]
        rows[2][0] = phones[0]  # C's row now texts A
        write_sheet(sheet, ["to", "text", "first_name"], rows)
        emu.admin("POST", "/clock", {"advance": 10})  # past Sonar's 7-second duplicate rule
        more = ["--resume", str(folder / "a.send.journal.sqlite")] if resume else []
        again = bulk(emu, "messages", "send", str(sheet), "--yes", *more)
        assert again.exit_code == 0, again.output
        sent = outbound(emu)
        assert (sent[phones[0]], sent[phones[1]], sent[phones[2]]) == (1, 1, 0), resume
        results = read_dicts(folder / "a.send.results.csv")
        assert [r["sonar__status"] for r in results][2] == "skipped"
        assert "from another row: 'Hi A, see you Fridy'" in results[2]["sonar__error"]
        # A's answer is not this row's (found by the same trial)
        assert results[2]["sonar__http_status"] == "" and results[0]["sonar__http_status"]
        ids = [r["sonar__external_message_id"] for r in results]
        assert ids[2] == "" and ids[0]


def test_a_resume_of_the_same_sheet_sends_a_second_row_to_one_recipient(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The other side of the rule above: in the sheet the earlier run read, unchanged, a second
    row to a recipient it texted is a row the run did not reach, and a resume sends it."""
    phones = us_numbers(422, 40)
    rows = [[p, f"Hi {{{{first_name}}}}, row {i}", f"P{i}"] for i, p in enumerate(phones)]
    rows += [[phones[0], "Hi {{first_name}}, the second one", "P0"]]
    sheet = write_sheet(tmp_path / "two.csv", ["to", "text", "first_name"], rows)
    kill_mid_send(emu, sheet, 5)
    settle(emu)
    assert outbound(emu)[phones[0]] == 1
    journal = tmp_path / "two.send.journal.sqlite"
    emu.admin("POST", "/config", {"latency_ms": 0})
    resumed = bulk(emu, "messages", "send", str(sheet), "--resume", str(journal), "--yes")
    assert resumed.exit_code in (0, 1), resumed.output
    sent = outbound(emu)
    assert sent[phones[0]] == 2 and max(sent.values()) <= 2
    assert read_dicts(tmp_path / "two.send.results.csv")[-1]["sonar__status"] == "queued"


def test_a_corrected_copy_is_asked_about_not_sent(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(333, 2)
    sheet = write_sheet(tmp_path / "a.csv", ["to", "text"], [[p, "Sale tomorow!"] for p in phones])
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    final = write_sheet(
        tmp_path / "final.csv", ["to", "text"], [[p, "Sale tomorrow!"] for p in phones]
    )
    plan = bulk(emu, "messages", "send", str(final), "--dry-run")
    assert plan.exit_code == 0, plan.output
    planned = read_dicts(tmp_path / "final.send.plan.csv")
    assert all("got another message from another sheet" in r["sonar__error"] for r in planned)
    again = bulk(emu, "messages", "send", str(final), "--yes")
    assert again.exit_code == 0, again.output
    assert sum(outbound(emu).values()) == 2
    rows = read_dicts(tmp_path / "final.send.results.csv")
    assert all("'Sale tomorow!'" in r["sonar__error"] for r in rows)
    emu.admin("POST", "/clock", {"advance": 10})
    forced = bulk(emu, "messages", "send", str(final), "--yes", "--resend")
    assert forced.exit_code == 0 and sum(outbound(emu).values()) == 4


def test_a_send_sheet_whose_consent_column_says_no_skips_those_rows(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(334, 3)
    sheet = write_sheet(
        tmp_path / "m.csv",
        ["to", "text", "Accepts SMS Marketing"],
        [[phones[0], "hi", "no"], [phones[1], "hi", "yes"], [phones[2], "hi", ""]],
    )
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--resend")
    assert result.exit_code == 0, result.output
    assert sorted(outbound(emu)) == sorted(phones[1:])
    first = read_dicts(tmp_path / "m.send.results.csv")[0]
    assert first["sonar__status"] == "skipped"
    assert "no consent to SMS ('Accepts SMS Marketing' says no)" in first["sonar__error"]


def test_a_recipient_whose_consent_says_no_in_one_row_is_texted_by_none(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """A number listed twice in a send sheet, its consent no in one row and yes in another
    (different texts, so no duplicate): nobody is texted on the row that says yes."""
    phones = us_numbers(335, 2)
    sheet = write_sheet(
        tmp_path / "m.csv",
        ["to", "text", "Accepts SMS Marketing"],
        [[phones[0], "hi", "yes"], [phones[1], "hi", "yes"], [phones[0], "sale!", "no"]],
    )
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(outbound(emu)) == [phones[1]]
    rows = read_dicts(tmp_path / "m.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["skipped", "queued", "skipped"]
    assert (
        f"no consent to SMS ('Accepts SMS Marketing' of row 4 says no for {phones[0]})"
        in rows[0]["sonar__error"]
    )


def test_a_consent_column_sonar_bulk_does_not_read_stops_the_send(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by a double-send trial: a consent column under a name sonar-bulk does not know
    ("Text Opt In") was ignored with a warning, and its "no" rows were texted. It is an error
    of the header: nothing is sent until it is mapped (or renamed, or removed)."""
    phones = us_numbers(336, 2)
    sheet = write_sheet(
        tmp_path / "m.csv",
        ["to", "text", "Text Opt In"],
        [[phones[0], "hi", "no"], [phones[1], "hi", "yes"]],
    )
    refused = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert refused.exit_code == 1, refused.output
    assert "'Text Opt In' looks like SMS consent (no, yes)" in refused.stderr
    assert "--map 'Text Opt In=subscribed'" in refused.stderr
    assert sum(outbound(emu).values()) == 0
    mapped = bulk(emu, "messages", "send", str(sheet), "--yes", "--map", "Text Opt In=subscribed")
    assert mapped.exit_code == 0, mapped.output
    assert sorted(outbound(emu)) == [phones[1]]


def test_an_opt_out_column_saying_yes_is_never_texted(emu: EmulatorServer, tmp_path: Path) -> None:
    """Found by a consent trial: Salesforce's Do Not Call (and an "SMS Opt-Out" column) mean
    the opposite of consent; a yes there was texted. It is now the row's consent no, and it
    wins over a consent column's yes; a no or blank there leaves consent as it was."""
    phones = us_numbers(336, 4)
    sheet = write_sheet(
        tmp_path / "sf.csv",
        ["Contact ID", "First Name", "Mobile", "Email Opt Out", "Do Not Call"],
        [["003A1", "Dana", phones[0], "0", "1"], ["003A2", "Eli", phones[1], "1", "0"]],
    )
    result = bulk(emu, "messages", "send", str(sheet), "--text", "Hi {{First Name}}", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(outbound(emu)) == [phones[1]]  # Email Opt Out is not about SMS
    first = read_dicts(tmp_path / "sf.send.results.csv")[0]
    assert first["sonar__status"] == "skipped"
    assert "no consent to SMS ('Do Not Call' says no)" in first["sonar__error"]

    both = write_sheet(
        tmp_path / "both.csv",
        ["to", "text", "SMS Consent", "SMS Opt-Out"],
        [[phones[2], "hi", "yes", "yes"], [phones[3], "hi", "yes", "no"]],
    )
    result = bulk(emu, "messages", "send", str(both), "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(outbound(emu)) == sorted([phones[1], phones[3]])
    rows = read_dicts(tmp_path / "both.send.results.csv")
    assert "('SMS Opt-Out' says no)" in rows[0]["sonar__error"]

    # a customers upsert sends an opt-out as subscribed=false
    customers = write_sheet(
        tmp_path / "c.csv", ["Phone", "Do Not Call"], [[phones[0], "yes"], [phones[1], "no"]]
    )
    done = bulk(emu, "customers", "upsert", str(customers))
    assert done.exit_code == 0, done.output
    assert "1 not consented (subscribed=false), 1 unknown" in done.output
    stored = {c["phone_number"]: c["subscribed"] for c in state(emu)["customers"]}
    assert stored[phones[0]] is False


def test_a_row_hidden_in_the_workbook_is_not_texted_from_a_csv_copy(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    from openpyxl import Workbook

    phones = us_numbers(335, 3)
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["to", "text"])
    for p in phones:
        ws.append([p, "Hello"])
    ws.row_dimensions[3].hidden = True  # phones[1]: DO NOT CONTACT
    book.save(tmp_path / "list.xlsx")
    assert bulk(emu, "messages", "send", str(tmp_path / "list.xlsx"), "--yes").exit_code == 0
    # Excel's "Save As CSV" keeps hidden rows, shown
    csv_copy = write_sheet(tmp_path / "list.csv", ["to", "text"], [[p, "Hello"] for p in phones])
    again = bulk(emu, "messages", "send", str(csv_copy), "--yes")
    assert again.exit_code == 0, again.output
    assert sorted(outbound(emu)) == sorted([phones[0], phones[2]])
    rows = read_dicts(tmp_path / "list.send.results.csv")
    assert "hidden in another sheet" in rows[1]["sonar__error"]
    # found by an attack: those results fed back where the ledger is not texted the row
    from sonar_bulk.engine import ledger as ledger_module

    saved = ledger_module.ledger_path().read_bytes()
    ledger_module.ledger_path().unlink()
    fed = bulk(emu, "messages", "send", str(tmp_path / "list.send.results.csv"), "--yes")
    assert fed.exit_code == 0, fed.output
    assert phones[1] not in outbound(emu)
    ledger_module.ledger_path().write_bytes(saved)
    # --resend sends again what was sent, never a row some sheet hides
    emu.admin("POST", "/clock", {"advance": 10})
    resent = bulk(emu, "messages", "send", str(csv_copy), "--yes", "--resend")
    assert resent.exit_code == 0, resent.output
    assert phones[1] not in outbound(emu)
    shown = bulk(emu, "messages", "send", str(csv_copy), "--yes", "--include-hidden")
    assert shown.exit_code == 0, shown.output
    assert outbound(emu)[phones[1]] == 1


def test_a_locked_ledger_stops_the_run_cleanly_with_its_results(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from sonar_bulk.engine import ledger as ledger_module

    phones = us_numbers(336, 4)
    sheet = messages_sheet(tmp_path / "s.csv", phones)
    ledger_module.Ledger().close()  # made, empty
    monkeypatch.setattr(ledger_module, "BUSY_SECONDS", 0.2)
    holder = sqlite3.connect(ledger_module.ledger_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = bulk(emu, "messages", "send", str(sheet), "--yes")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    assert "send ledger" in result.output and "can't be used" in result.output
    assert state(emu)["messages"] == []
    assert {r["sonar__status"] for r in read_dicts(tmp_path / "s.send.results.csv")} == {"skipped"}


def test_a_locked_ledger_is_waited_for_once_not_once_per_worker(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an attack: with the ledger locked, each of the workers waited out the busy
    timeout in turn (and a stop waited for all of them). Now the first failure fails the rest
    at once: one wait, nothing sent."""
    import sqlite3

    from sonar_bulk.engine import ledger as ledger_module

    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(338, 8))
    ledger_module.Ledger().close()
    monkeypatch.setattr(ledger_module, "BUSY_SECONDS", 0.2)
    calls: list[str] = []
    real = ledger_module.Ledger.reserve

    def counted(self: ledger_module.Ledger, *args: Any, **kw: Any) -> Any:
        calls.append(args[0])
        return real(self, *args, **kw)

    monkeypatch.setattr(ledger_module.Ledger, "reserve", counted)
    holder = sqlite3.connect(ledger_module.ledger_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = bulk(emu, "messages", "send", str(sheet), "--yes", "--concurrency", "8")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1, result.output
    assert len(calls) == 1
    assert state(emu)["messages"] == []


def test_a_campaign_row_in_the_past_on_a_first_run_stays_invalid(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = write_sheet(
        tmp_path / "c.csv",
        ["to", "campaign_id", "send_at"],
        [["+12125550123", "fall_sale_2026", "2025-01-01T10:00:00Z"]],
    )
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--skip-invalid")
    assert result.exit_code == 1, result.output
    assert read_dicts(tmp_path / "c.campaign.results.csv")[0]["sonar__status"] == "invalid"
    assert state(emu)["messages"] == [] and state(emu)["scheduled"] == []


def test_a_token_in_the_base_url_is_refused_and_never_shown(tmp_path: Path) -> None:
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(337, 1))
    result = CliRunner().invoke(
        cli,
        [
            "messages",
            "send",
            str(sheet),
            "--yes",
            "--base-url",
            "http://SeCrEt9@127.0.0.1:9/api/v1",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "SeCrEt9" not in result.output
    assert "pass the token with --token" in result.output


def test_the_unspecified_address_is_loopback_too() -> None:
    assert canonical_target("http://0.0.0.0:47001/api/v1") == canonical_target(
        "http://127.0.0.1:47001/api/v1"
    )


@pytest.mark.parametrize(
    ("header", "said", "texted"),
    [
        ("SMS Opt-Out", "Opted Out", False),
        ("SMS Opt-Out", "Unsubscribed", False),
        ("SMS Opt-Out", "opt out", False),
        ("SMS Opt-Out", "subscribed", True),
        ("Do Not Call (Y/N)", "Y", False),
        ("DNC", "TRUE", False),
        ("Unsubscribed", "yes", False),
        ("Opt Out", "1", False),
        ("Opt Out", "no", True),
    ],
)
def test_an_opt_out_column_s_words_mean_what_they_say(
    emu: EmulatorServer, tmp_path: Path, header: str, said: str, texted: bool
) -> None:
    """Found by an attack: in an opt-out column, a status word ("Opted Out", "Unsubscribed")
    was read as a consent word (no consent → not opted out) and the row was texted. A status
    word says the person's consent, so "Opted Out" is opted out; a send sheet reads general
    opt-out headers (Opt Out, Unsubscribed, DNC) too."""
    phone = us_numbers(337, 1)[0]
    sheet = write_sheet(tmp_path / "m.csv", ["to", "text", header], [[phone, "hi", said]])
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--resend")
    assert result.exit_code == 0, result.output
    assert (phone in outbound(emu)) is texted
    if not texted:
        row = read_dicts(tmp_path / "m.send.results.csv")[0]
        assert f"no consent to SMS ({header!r} says no)" in row["sonar__error"]


def test_a_garbage_opt_out_value_is_an_error_naming_its_cell(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "m.csv", ["to", "text", "Do Not Call"], [["+13105550101", "hi", "maybe"]]
    )
    result = CliRunner().invoke(cli, ["validate", str(sheet), "--kind", "messages"])
    assert result.exit_code == 1, result.output
    assert "row 2, Do Not Call: 'maybe' bool.invalid (error): not an opt-out value" in result.output


def test_a_row_prepare_kept_no_call_for_is_built_from_the_sheet(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The calls prepare() built are kept for the run; a row to run without one (none is
    expected) is built again from its row, the same call."""
    from sonar_bulk.engine.prepared import runnable

    sheet = messages_sheet(tmp_path / "m.csv", us_numbers(322, 4))
    prepared = _prepared_send(emu, sheet, "messages send", "", "hold")
    try:
        kept = list(runnable(prepared))
        assert [i for i, _ in kept] == [0, 1, 2, 3] and len(prepared.calls) == 4
        prepared.calls[1] = None
        assert list(runnable(prepared)) == kept
        # the run's own pass lets each kept call go; a pass after it builds them again
        assert list(runnable(prepared, release=True)) == kept
        assert prepared.calls == [None] * 4 and list(runnable(prepared)) == kept
    finally:
        prepared.close()


def test_a_ledger_busy_while_another_run_makes_it_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in CI: two sheets started together on a fresh machine race to make the ledger,
    and SQLite may answer one "database is locked" at once, without waiting (the switch to
    WAL): that run stopped, its message telling the user to restore the ledger from a backup.
    The open is tried again. A narrow corner: the first answer is made to be that one."""
    import sqlite3

    from sonar_bulk.engine import ledger as ledger_module

    real_connect = sqlite3.connect
    answered: list[str] = []

    class Racing:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("PRAGMA journal_mode") and not answered:
                answered.append(sql)
                raise sqlite3.OperationalError("database is locked")
            return self.db.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.db, name)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: Racing(real_connect(*a, **kw)))
    ledger = ledger_module.Ledger(tmp_path / "sent.sqlite")
    assert answered == ["PRAGMA journal_mode=WAL"]
    assert ledger.lookup(["nothing"]) == {}
    ledger.close()
