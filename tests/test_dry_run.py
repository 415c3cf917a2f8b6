"""Issue 18, point 5: the dry run shows what will really go out, in the plan file and on
screen: each message's final text (merge fields filled, fallbacks applied), its segments and
encoding; each customer field decoded (no URL encoding). Against the real emulator over
loopback: a dry run calls nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.connection import Connection
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.engine import talk
from sonar_bulk.engine.bulk import BulkOptions
from sonar_bulk.engine.run import run_sheet
from sonar_bulk.engine.runner import Stats
from sonar_bulk.schema import is_tool_column

from .test_bulk_cli import (
    TOKEN,
    bulk,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    log,
    read_dicts,
    server,  # noqa: F401 (a fixture)
    us_numbers,
    write_sheet,
)

#: 161 GSM-7 characters: two segments.
LONG = "Hi {{first_name}}, " + "x" * (161 - len("Hi Ben, "))


def request_fields(request: str, method_path: str) -> dict[str, object]:
    """The JSON body of a plan's ``sonar__request`` (``POST /customers {...}``)."""
    assert request.startswith(method_path + " "), request
    fields: dict[str, object] = json.loads(request[len(method_path) + 1 :])
    return fields


def test_a_message_plan_has_each_final_text_its_segments_and_encoding(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = write_sheet(
        tmp_path / "texts.csv",
        ["to", "text", "first_name", "city"],
        [
            ["+13105550101", "Hi {{first_name}}, see you in {{city}}!", "Ana", "Paris"],
            ["+13105550102", LONG, "Ben", ""],
            ["+13105550103", "Hi {{first_name|friend}} 🎉 & 50% off", "", ""],
            ["+13105550104", "Hello {{ first_name }}", "Dana", ""],
        ],
    )
    result = bulk(emu, "messages", "send", str(sheet), "--dry-run")
    assert result.exit_code == 0, result.output
    assert log(emu) == []  # nothing was called

    plan = read_dicts(tmp_path / "texts.send.plan.csv")
    want = [
        ("Hi Ana, see you in Paris!", "1", "GSM-7"),
        (LONG.replace("{{first_name}}", "Ben"), "2", "GSM-7"),
        ("Hi friend 🎉 & 50% off", "1", "UCS-2"),
        ("Hello Dana", "1", "GSM-7"),
    ]
    assert [(r["sonar__text"], r["sonar__segments"], r["sonar__encoding"]) for r in plan] == want
    # the request shows the same text, decoded: no %F0, no +, no %26
    body = request_fields(plan[2]["sonar__request"], "POST /messages")
    assert body == {"to": "+13105550103", "text": "Hi friend 🎉 & 50% off"}
    assert all("%" not in r["sonar__request"].replace("50%", "") for r in plan)
    # the user's cells are kept as typed: the template, not the text
    assert plan[0]["text"] == "Hi {{first_name}}, see you in {{city}}!"
    # the new columns are sonar-bulk's: a plan fed back is not read as the user's columns
    assert all(is_tool_column(c) for c in ("sonar__text", "sonar__segments", "sonar__encoding"))

    screen = result.stderr
    assert "4 texts, 5 segments: 3 GSM-7, 1 UCS-2 (at most 2 per text)" in screen
    assert "row 2, to +13105550101, 1 segment (GSM-7): Hi Ana, see you in Paris!" in screen
    assert f"row 3, to +13105550102, 2 segments (GSM-7): {want[1][0]}" in screen
    assert "row 4, to +13105550103, 1 segment (UCS-2): Hi friend 🎉 & 50% off" in screen
    assert "row 5" not in screen  # the first few only: the plan file has them all
    assert "{{" not in screen


def test_a_plan_fed_back_reads_as_the_users_columns_only(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = write_sheet(
        tmp_path / "texts.csv",
        ["to", "text", "first_name"],
        [["+13105550101", "Hi {{first_name}}", "Ana"]],
    )
    assert bulk(emu, "messages", "send", str(sheet), "--dry-run").exit_code == 0
    plan = tmp_path / "texts.send.plan.csv"
    again = CliRunner().invoke(cli, ["validate", str(plan), "--kind", "messages", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["issues_by_code"] == {}, summary


def test_a_customer_plan_shows_every_field_decoded(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "people.csv",
        ["phone_number", "first_name", "last_name", "email", "property:note"],
        [
            ["+13105550101", "José María", "Núñez & Sons", "jose+vip@example.com", "a=b, c"],
            ["+13105550102", "Zoë", "O'Brien", "zoe@example.com", "100% sure"],
        ],
    )
    result = bulk(emu, "customers", "upsert", str(sheet), "--dry-run")
    assert result.exit_code == 0, result.output
    assert log(emu) == []

    plan = read_dicts(tmp_path / "people.upsert.plan.csv")
    assert request_fields(plan[0]["sonar__request"], "POST /customers") == {
        "phone_number": "+13105550101",
        "first_name": "José María",
        "last_name": "Núñez & Sons",
        "email": "jose+vip@example.com",
        "properties": {"note": "a=b, c"},
    }
    for row in plan:  # nothing URL-encoded: no %XX, no + for a space
        assert "%2B" not in row["sonar__request"] and "%C3" not in row["sonar__request"]
        assert "José+María" not in row["sonar__request"]
    assert '"last_name": "O\'Brien"' in plan[1]["sonar__request"]

    screen = result.stderr
    assert "first rows, as sent:" in screen
    assert (
        "row 2: phone_number=+13105550101, first_name=José María, last_name=Núñez & Sons, "
        'email=jose+vip@example.com, properties[note]="a=b, c"'
    ) in screen
    assert "row 3: phone_number=+13105550102, first_name=Zoë, last_name=O'Brien" in screen
    assert "properties[note]=100% sure" in screen
    assert "%" not in screen.replace("100%", "")


def test_a_campaign_plan_shows_what_each_row_sends(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "recipients.csv",
        ["to", "campaign_id", "send_at"],
        [
            ["+13105550101", "fall sale+2026", "2030-12-01T09:30:00-08:00"],
            ["+13105550102", "fall sale+2026", ""],
        ],
    )
    result = bulk(emu, "campaigns", "send", str(sheet), "--dry-run")
    assert result.exit_code == 0, result.output
    plan = read_dicts(tmp_path / "recipients.campaign.plan.csv")
    assert request_fields(plan[0]["sonar__request"], "POST /campaigns") == {
        "to": "+13105550101",
        "campaign_id": "fall sale+2026",
        "send_at": "2030-12-01T09:30:00-08:00",
    }
    assert "sonar__text" not in plan[0]  # a campaign's text is Sonar's, not the sheet's
    assert (
        "row 2: to=+13105550101, campaign_id=fall sale+2026, send_at=2030-12-01T09:30:00-08:00"
        in result.stderr
    )
    assert "row 3: to=+13105550102, campaign_id=fall sale+2026\n" in result.stderr


# -- --diff progress --------------------------------------------------------------------------


@dataclass
class ProgressUi(talk.RecordingUi):
    """Keeps what each progress display showed last: (done, failed) of each stage."""

    shown: list[tuple[int, int]] = field(default_factory=list)

    @contextlib.contextmanager
    def progress(self, total: int, stats: Stats, throttled: Callable[[], bool]) -> Iterator[None]:
        try:
            yield
        finally:
            self.shown.append((stats.done, stats.failed))


def test_diff_progress_never_calls_a_customer_not_created_yet_failed(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(404, 4)
    customers_sheet(tmp_path / "first.csv", phones[:1])
    assert bulk(emu, "customers", "upsert", str(tmp_path / "first.csv")).exit_code == 0
    sheet = customers_sheet(tmp_path / "all.csv", phones)  # 1 known, 3 new

    # the command line: a dry run's plan says create, and nothing failed
    result = bulk(emu, "customers", "upsert", str(sheet), "--diff", "--dry-run")
    assert result.exit_code == 0, result.output
    plan = read_dicts(tmp_path / "all.upsert.plan.csv")
    assert [r["sonar__change"] for r in plan] == ["unchanged"] + ["create"] * 3
    assert "failed" not in result.stderr

    ui = ProgressUi()
    conn = Connection(emu.api_url, TOKEN)
    report = run_sheet("customers upsert", sheet, conn, BulkOptions(rate=0, diff=True), ui)
    reading, running = ui.shown
    assert reading == (4, 0)  # 4 read, none failed: 3 are simply not there yet
    assert running == (3, 0)  # the unchanged one is not sent
    assert report.summary.counts == {"created": 3, "unchanged": 1}
    (planned,) = ui.of(talk.Planned)
    assert planned.facts["diff"] == {"create": 3, "unchanged": 1}
