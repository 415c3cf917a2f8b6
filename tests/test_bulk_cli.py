"""The bulk commands end to end: Click's CliRunner (and, where a real process must be killed or
interrupted, a subprocess) against a real emulator over loopback sockets.

What each run did is read back three ways: the emulator's state (what Sonar would hold), its
request log (what went over the wire), and the results files written beside the input.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from click.testing import CliRunner, Result
from openpyxl import load_workbook

from sonar_bulk.api.endpoints import Errors
from sonar_bulk.cli import cli
from sonar_bulk.emulator import state as emulator_state
from sonar_bulk.emulator.app import EmulatorConfig, Knobs
from sonar_bulk.emulator.server import EmulatorServer

from .conftest import SAMPLES
from .emulator_helpers import signal_when, wait_for

TOKEN = "emulator-token"
#: A token with characters that are percent-encoded in queries and form bodies.
SECRET = "t0k+en/=x"
#: A token whose company has no subscription: every call is refused with a 403.
NO_SUBSCRIPTION = "no-subscription-token"

MESSAGES = "/api/v1/messages"
CUSTOMERS = "/api/v1/customers"
RESULT_COLUMNS = [
    "sonar__row",
    "sonar__status",
    "sonar__http_status",
    "sonar__error",
    "sonar__attempts",
    "sonar__finished_at",
]


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    tokens: dict[str, Any] = {TOKEN: "valid", SECRET: "valid", NO_SUBSCRIPTION: "no_subscription"}
    with EmulatorServer(EmulatorConfig(tokens=tokens)) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The shared emulator, empty, with default knobs and a short hang."""
    server.admin("POST", "/reset")
    server.emulator.knobs.__dict__.update(Knobs().__dict__)
    server.admin("POST", "/config", {"hang_seconds": 1})
    yield server
    server.admin("DELETE", "/faults")
    server.emulator.knobs.__dict__.update(Knobs().__dict__)


def bulk(emu: EmulatorServer, *args: str, token: str = TOKEN, rate: str = "0", **kw: Any) -> Result:
    """A bulk command through CliRunner, against ``emu``."""
    argv = [*args, "--base-url", emu.api_url, "--token", token, "--rate", rate]
    return CliRunner().invoke(cli, argv, **kw)


def command(emu: EmulatorServer, *args: str) -> list[str]:
    """The same as a real process's command line."""
    return [
        sys.executable,
        "-m",
        "sonar_bulk",
        *args,
        "--base-url",
        emu.api_url,
        "--token",
        TOKEN,
        "--rate",
        "0",
    ]


def sample(tmp_path: Path, name: str) -> Path:
    """A copy of a sample sheet in tmp_path (outputs are written beside the input)."""
    copy = tmp_path / name
    shutil.copyfile(SAMPLES / name, copy)
    return copy


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def read_dicts(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_sheet(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def statuses(path: Path) -> list[str]:
    return [r["sonar__status"] for r in read_dicts(path)]


def state(emu: EmulatorServer) -> dict[str, Any]:
    snapshot: dict[str, Any] = emu.admin("GET", "/state")
    return snapshot


def log(emu: EmulatorServer) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = emu.admin("GET", "/requests")
    return entries


def posts(emu: EmulatorServer, path: str) -> list[dict[str, Any]]:
    return [e for e in log(emu) if e["method"] == "POST" and e["path"] == path]


def form(entry: dict[str, Any]) -> dict[str, str]:
    """The form body of a logged request (first value of each field)."""
    return {k: v[0] for k, v in parse_qs(entry["body"]).items()}


def customers_by_phone(emu: EmulatorServer) -> dict[str, dict[str, Any]]:
    return {c["phone_number"]: c for c in state(emu)["customers"]}


def outbound(emu: EmulatorServer) -> Counter[str]:
    """Messages per phone in the emulator (campaign messages included)."""
    return Counter(m["to"] for m in state(emu)["messages"] if m["direction"] == "outbound")


def e164(text: str) -> str:
    number = phonenumbers.parse(text, "US")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def us_numbers(exchange: int, count: int) -> list[str]:
    """``count`` distinct valid New York numbers, +1 212 <exchange> xxxx."""
    numbers = [f"+1212{exchange:03d}{i:04d}" for i in range(count)]
    for n in numbers:
        assert phonenumbers.is_valid_number(phonenumbers.parse(n)), n
    return numbers


def messages_sheet(path: Path, phones: list[str]) -> Path:
    rows = [[p, "Hi {{first_name}}, row " + str(i), f"P{i}"] for i, p in enumerate(phones)]
    return write_sheet(path, ["to", "text", "first_name"], rows)


def customers_sheet(path: Path, phones: list[str]) -> Path:
    rows = [[p, f"N{i}", "Test"] for i, p in enumerate(phones)]
    return write_sheet(path, ["phone_number", "first_name", "last_name"], rows)


def assert_results_keep_the_input(source: Path, results: Path) -> list[dict[str, str]]:
    """One results row per input row, in order, the input's cells exactly, sonar__row right."""
    given = read_rows(source)
    got = read_rows(results)
    width = len(given[0])
    assert got[0][:width] == given[0]
    assert got[0][width : width + len(RESULT_COLUMNS)] == RESULT_COLUMNS
    assert len(got) == len(given)
    for number, (want, row) in enumerate(zip(given[1:], got[1:], strict=True), start=2):
        assert row[:width] == want
        assert row[width] == str(number)
    return read_dicts(results)


def settle(emu: EmulatorServer, quiet: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until the emulator's request log has not grown for ``quiet`` seconds (requests a
    killed client left in flight finish on the server side)."""
    deadline = time.monotonic() + timeout
    seen, since = len(log(emu)), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the emulator did not settle"
        time.sleep(0.02)
        now = len(log(emu))
        if now != seen:
            seen, since = now, time.monotonic()


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("sonar-bulk: error:")]


# -- 1. every command on the samples ----------------------------------------------------------


def test_customers_upsert_creates_then_updates(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "customers.csv")
    first = bulk(emu, "customers", "upsert", str(sheet))
    assert first.exit_code == 0, first.output
    results = tmp_path / "customers.upsert.results.csv"
    rows = assert_results_keep_the_input(sheet, results)
    assert [r["sonar__status"] for r in rows] == ["created"] * 10
    assert {r["sonar__http_status"] for r in rows} == {"201"}
    assert {r["sonar__attempts"] for r in rows} == {"1"}
    assert not (tmp_path / "customers.upsert.failed.csv").exists()
    assert (tmp_path / "customers.upsert.journal.sqlite").exists()

    customers = customers_by_phone(emu)
    assert len(customers) == 10
    ana = customers["+13105550101"]
    assert (ana["first_name"], ana["last_name"], ana["email"]) == (
        "Ana",
        "Lopez",
        "ana.lopez@example.com",
    )
    assert ana["properties"]["plan"] == "gold"
    assert ana["properties"]["signup_date"] == "2024-03-14"
    assert float(ana["properties"]["lifetime_value"]) == 1250.5
    assert customers["+13105550102"]["first_name"] == "Ben"  # "(310) 555-0102"
    assert customers["+33612345678"]["properties"]["plan"] == "bronze"
    assert customers["+16465550106"]["subscribed"] is False  # "no"

    second = bulk(emu, "customers", "upsert", str(sheet))
    assert second.exit_code == 0, second.output
    rows = assert_results_keep_the_input(sheet, results)
    assert [r["sonar__status"] for r in rows] == ["updated"] * 10
    assert {r["sonar__http_status"] for r in rows} == {"200"}
    assert len(state(emu)["customers"]) == 10
    assert len(posts(emu, CUSTOMERS)) == 20


def test_rows_past_the_kept_calls_are_sent_as_built_again(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare() keeps the calls of a sheet of up to KEPT_CALLS rows for the run; a bigger
    sheet's are built again from the sheet as they are sent: both send the same requests."""
    import sonar_bulk.engine.prepare as prepare_module

    sheet = sample(tmp_path, "customers.csv")
    monkeypatch.setattr(prepare_module, "KEPT_CALLS", 9)  # the sheet has 10 rows
    first = bulk(emu, "customers", "upsert", str(sheet))
    assert first.exit_code == 0, first.output
    monkeypatch.undo()
    other = tmp_path / "again"
    other.mkdir()
    second = bulk(emu, "customers", "upsert", str(shutil.copy(sheet, other)))
    assert second.exit_code == 0, second.output
    sent = [sorted(form(e).items()) for e in posts(emu, CUSTOMERS)]
    assert len(sent) == 20
    assert sorted(sent[:10]) == sorted(sent[10:])
    assert statuses(other / "customers.upsert.results.csv") == ["updated"] * 10


def test_messages_send_then_tag_by_external_id(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every id the emulator makes begins with "-" here (one real id in 64 does): it must come
    # out of the results file as it is, not quoted against formulas, to name its message
    class DashIds:
        @staticmethod
        def urlsafe_b64encode(data: bytes) -> bytes:
            return b"-" + base64.urlsafe_b64encode(data)[1:]

    monkeypatch.setattr(emulator_state, "base64", DashIds)
    sheet = sample(tmp_path, "messages.csv")
    sent = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert sent.exit_code == 0, sent.output
    rows = assert_results_keep_the_input(sheet, tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 5
    ids = [r["sonar__external_message_id"] for r in rows]
    assert all(i.startswith("-") for i in ids) and len(set(ids)) == 5

    messages = {m["external_id"]: m for m in state(emu)["messages"]}
    assert set(messages) == set(ids)
    first = messages[ids[0]]
    assert first["to"] == "+13105550101"
    assert first["text"] == "Hi Ana, your order A1001 has shipped! Track it at example.com/t/A1001"
    assert first["tags"] == ["shipping", "order-update"]
    assert messages[ids[2]]["text"].startswith("Hi Chen, your order A1003")
    elif_ = messages[ids[3]]
    assert elif_["media_url"] == "https://example.com/img/fall-sale.jpg"
    assert elif_["tags"] == ["promo"]
    assert messages[ids[4]]["text"].startswith("Hana, your appointment")

    tags = write_sheet(
        tmp_path / "tags.csv",
        ["external_message_id", "tag_name"],
        [[i, "vip"] for i in ids] + [[ids[0], "follow-up"]],
    )
    tagged = bulk(emu, "messages", "tag", str(tags))
    assert tagged.exit_code == 0, tagged.output
    assert statuses(tmp_path / "tags.tag.results.csv") == ["ok"] * 6
    messages = {m["external_id"]: m for m in state(emu)["messages"]}
    assert all("vip" in messages[i]["tags"] for i in ids)
    # the two tags of the first message go out at once: either order
    assert messages[ids[0]]["tags"][:2] == ["shipping", "order-update"]
    assert sorted(messages[ids[0]]["tags"][2:]) == ["follow-up", "vip"]


def test_campaigns_send_queues_and_schedules(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "campaign_recipients.csv")
    sent = bulk(emu, "campaigns", "send", str(sheet), "--yes")
    assert sent.exit_code == 0, sent.output
    rows = assert_results_keep_the_input(
        sheet, tmp_path / "campaign_recipients.campaign.results.csv"
    )
    assert [r["sonar__status"] for r in rows] == [
        "scheduled",
        "scheduled",
        "queued",
        "scheduled",
        "scheduled",
    ]
    assert rows[1]["sonar__send_at"] == "2030-12-01T09:30:00-08:00"  # zone from its column
    world = state(emu)
    scheduled = {s["to"]: s for s in world["scheduled"]}
    assert set(scheduled) == {"+13105550101", "+13105550102", "+16465550105", "+14155550108"}
    assert {s["campaign_id"] for s in scheduled.values()} == {"fall_sale_2026"}
    assert [(m["to"], m["campaign_id"]) for m in world["messages"]] == [
        ("+13105550103", "fall_sale_2026")
    ]


def test_campaigns_send_with_a_default_send_time_schedules_at_that_local_time(
    tmp_path: Path,
) -> None:
    """sonar-bulk --emulate campaigns send FILE --yes --default-send-time 09:00: a date alone
    goes out at 09:00 in its row's zone (the emulator gets that instant, with its offset); a
    row with its own time keeps it. Without the flag the same sheet is refused, nothing sent."""
    from sonar_bulk.connection import emulator_state_path

    sheet = write_sheet(
        tmp_path / "dates.csv",
        ["to", "campaign_id", "send_at", "timezone"],
        [
            ["+13105550101", "fall_sale_2026", "2027-01-15", "America/New_York"],
            ["+13105550102", "fall_sale_2026", "7/15/2027", "America/Los_Angeles"],
            ["+13105550103", "fall_sale_2026", "2027-01-15 14:30", "America/Chicago"],
        ],
    )
    refused = CliRunner().invoke(cli, ["--emulate", "campaigns", "send", str(sheet), "--yes"])
    assert refused.exit_code == 1, refused.output
    assert "datetime.no_time" in refused.stderr and "--default-send-time" in refused.stderr
    assert not (tmp_path / "dates.campaign.results.csv").exists()

    sent = CliRunner().invoke(
        cli,
        ["--emulate", "campaigns", "send", str(sheet), "--yes", "--default-send-time", "09:00"],
    )
    assert sent.exit_code == 0, sent.output
    rows = read_dicts(tmp_path / "dates.campaign.results.csv")
    assert [r["sonar__status"] for r in rows] == ["scheduled"] * 3
    world = emulator_state.Store(state_file=emulator_state_path())
    try:
        scheduled = {s.to: s.send_at for s in world.scheduled.values()}
    finally:
        world.close()
    assert scheduled == {
        "+13105550101": "2027-01-15T09:00:00-05:00",
        "+13105550102": "2027-07-15T09:00:00-07:00",
        "+13105550103": "2027-01-15T14:30:00-06:00",
    }
    # 09:00 on the wall clock of each date-alone row's zone
    for to, zone in (("+13105550101", "America/New_York"), ("+13105550102", "America/Los_Angeles")):
        local = dt.datetime.fromisoformat(scheduled[to]).astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (9, 0)


def test_campaigns_send_refuses_a_bad_default_send_time(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = sample(tmp_path, "campaign_recipients.csv")
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--default-send-time", "9.00")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("sonar-bulk: error: Invalid value for '--default-send-time': '9.00'")
    assert "Traceback" not in result.output
    assert not (tmp_path / "campaign_recipients.campaign.journal.sqlite").exists()
    assert state(emu)["scheduled"] == []


def test_customers_get_close_and_unassign(emu: EmulatorServer, tmp_path: Path) -> None:
    upsert = bulk(emu, "customers", "upsert", str(sample(tmp_path, "customers.csv")))
    assert upsert.exit_code == 0, upsert.output
    keys = sample(tmp_path, "customer_keys.csv")
    phones = [e164(r[0]) for r in read_rows(keys)[1:]]

    backup = tmp_path / "backup.csv"
    got = bulk(emu, "customers", "get", str(keys), "-o", str(backup))
    assert got.exit_code == 0, got.output
    assert statuses(tmp_path / "customer_keys.get.results.csv") == ["ok"] * 4
    records = read_dicts(backup)
    assert [r["phone_number"] for r in records] == phones
    assert [r["first_name"] for r in records] == ["Ana", "Ben", "Chen", "Elif"]
    assert records[0]["property:plan"] == "gold"
    check = CliRunner().invoke(cli, ["validate", str(backup), "--kind", "customers"])
    assert check.exit_code == 0, check.output
    # the backup is a customers sheet upsert reads back: the same records, updated
    again = bulk(emu, "customers", "upsert", str(backup))
    assert again.exit_code == 0, again.output
    assert statuses(tmp_path / "backup.upsert.results.csv") == ["updated"] * 4

    before = customers_by_phone(emu)
    assert before["+13105550101"]["assignee"] == "maria@yourcompany.com"
    assert before["+16465550105"]["assignee"] == "sam@yourcompany.com"
    unassign = bulk(emu, "customers", "unassign", str(keys))
    assert unassign.exit_code == 0, unassign.output
    assert statuses(tmp_path / "customer_keys.unassign.results.csv") == ["ok"] * 4
    after = customers_by_phone(emu)
    assert all(after[p]["assignee"] is None for p in phones)
    assert after["+14155550107"]["assignee"] == "sam@yourcompany.com"  # not in the sheet

    close = bulk(emu, "customers", "close", str(keys))
    assert close.exit_code == 0, close.output
    assert statuses(tmp_path / "customer_keys.close.results.csv") == ["ok"] * 4
    closed = customers_by_phone(emu)
    assert {p: c["state"] for p, c in closed.items() if c["state"] == "closed"} == dict.fromkeys(
        phones, "closed"
    )


def test_properties_set_then_delete(emu: EmulatorServer, tmp_path: Path) -> None:
    upsert = bulk(emu, "customers", "upsert", str(sample(tmp_path, "customers.csv")))
    assert upsert.exit_code == 0, upsert.output
    sheet = sample(tmp_path, "properties.csv")
    results = tmp_path / "properties.properties-set.results.csv"

    done = bulk(emu, "properties", "set", str(sheet))
    assert done.exit_code == 0, done.output
    rows = assert_results_keep_the_input(sheet, results)
    # Farah's row is keyed by email alone with a blank value: a delete, which email can do
    assert [r["sonar__status"] for r in rows] == ["ok"] * 8
    props = {p: c["properties"] for p, c in customers_by_phone(emu).items()}
    assert props["+13105550101"]["plan"] == "gold"
    assert props["+13105550102"]["vip"] == "true"
    assert props["+13105550104"]["plan"] == "bronze"
    assert props["+13105550103"]["renewal_date"] == "2026-03-01"
    assert "last_order_at" in props["+16465550105"]
    assert "plan" not in props["+14155550107"]  # a blank value deletes
    assert "plan" not in props["+16465550106"]  # by email too

    deleted = bulk(emu, "properties", "delete", str(sheet))
    # Farah's and Gus's plans are already gone: a property that is not there is already deleted
    assert deleted.exit_code == 0, deleted.output
    rows = assert_results_keep_the_input(
        sheet, tmp_path / "properties.properties-delete.results.csv"
    )
    assert [r["sonar__status"] for r in rows] == ["ok"] * 6 + ["unchanged"] * 2
    assert rows[6]["sonar__http_status"] == "404"
    # each operation has its own results: the set's are still there
    assert statuses(results) == ["ok"] * 8
    assert Errors.PROPERTY_NOT_FOUND in rows[7]["sonar__error"]
    props = {p: c["properties"] for p, c in customers_by_phone(emu).items()}
    assert "plan" not in props["+13105550101"] and "lifetime_value" not in props["+13105550101"]
    assert "vip" not in props["+13105550102"]
    assert "renewal_date" not in props["+13105550103"]
    assert props["+13105550103"]["plan"] == "gold"  # untouched


# -- 2. invalid rows --------------------------------------------------------------------------


def test_invalid_rows_stop_the_run_unless_skipped(emu: EmulatorServer, tmp_path: Path) -> None:
    given = read_rows(SAMPLES / "customers.csv")
    given[3][0] = "555-01"  # Chen's phone: too short
    sheet = write_sheet(tmp_path / "people.csv", given[0], given[1:])

    refused = bulk(emu, "customers", "upsert", str(sheet))
    assert refused.exit_code == 1, refused.output
    assert "--skip-invalid" in refused.stderr
    assert log(emu) == []
    assert not (tmp_path / "people.upsert.results.csv").exists()

    skipped = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert skipped.exit_code == 1, skipped.output
    rows = assert_results_keep_the_input(sheet, tmp_path / "people.upsert.results.csv")
    assert [r["sonar__status"] for r in rows] == ["created"] * 2 + ["invalid"] + ["created"] * 7
    assert rows[2]["sonar__error"]
    assert len(posts(emu, CUSTOMERS)) == 9
    assert len(state(emu)["customers"]) == 9
    failed = read_rows(tmp_path / "people.upsert.failed.csv")
    assert failed[0] == given[0] + ["sonar__row", "sonar__status", "sonar__error"]
    assert len(failed) == 2
    assert failed[1][: len(given[0])] == given[3]
    assert failed[1][len(given[0]) : -1] == ["4", "invalid"]


# -- 3. a send needs --yes without a terminal -------------------------------------------------


def test_a_send_without_yes_and_without_a_terminal_sends_nothing(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = sample(tmp_path, "messages.csv")
    result = bulk(emu, "messages", "send", str(sheet))
    assert result.exit_code == 2, result.output
    assert "--yes" in error_lines(result)[0]
    assert state(emu)["messages"] == []
    assert log(emu) == []
    campaign = bulk(emu, "campaigns", "send", str(sample(tmp_path, "campaign_recipients.csv")))
    assert campaign.exit_code == 2, campaign.output
    assert state(emu)["scheduled"] == [] and log(emu) == []


# -- 4. a 429 storm ---------------------------------------------------------------------------


def test_a_429_storm_slows_the_run_and_every_row_is_created_once(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(400, 40)
    sheet = customers_sheet(tmp_path / "storm.csv", phones)
    emu.admin("POST", "/config", {"rate_limit": 40, "burst": 1})
    result = bulk(emu, "customers", "upsert", str(sheet), "--concurrency", "8")
    assert result.exit_code == 0, result.output
    assert statuses(tmp_path / "storm.upsert.results.csv") == ["created"] * 40
    entries = posts(emu, CUSTOMERS)
    assert sum(1 for e in entries if e["status"] == 429) > 0
    applied = Counter(form(e)["phone_number"] for e in entries if e["status"] != 429)
    assert applied == dict.fromkeys(phones, 1)
    assert {e["status"] for e in entries if e["status"] != 429} == {201}
    assert len(state(emu)["customers"]) == 40


# -- 5. faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "applied"),
    [
        ("500_after", True),
        ("500_before", False),
        ("reset_before", False),
        ("reset_after", True),
        ("hang_after", True),
    ],
)
def test_a_send_whose_outcome_is_unknown_is_never_retried(
    emu: EmulatorServer, tmp_path: Path, fault: str, applied: bool
) -> None:
    sheet = sample(tmp_path, "messages.csv")
    emu.admin("POST", "/faults", {"fault": fault, "path": MESSAGES, "method": "POST", "count": 1})
    result = bulk(
        emu,
        "messages",
        "send",
        str(sheet),
        "--yes",
        "--concurrency",
        "1",
        "--timeout",
        "0.5",
    )
    assert result.exit_code == 1, result.output
    rows = read_dicts(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["unknown"] + ["queued"] * 4
    assert rows[0]["sonar__attempts"] == "1"
    assert rows[0]["sonar__error"]
    assert rows[0]["sonar__external_message_id"] == ""
    # never offered "to fix and run again": it may have gone out
    assert not (tmp_path / "messages.send.failed.csv").exists()
    assert "may have gone out" in result.output

    # a hung request is logged when the emulator lets it go
    def logged() -> list[dict[str, Any]]:
        found = posts(emu, MESSAGES)
        return found if len(found) == 5 else []

    entries = wait_for(logged)
    to = [form(e)["to"] for e in entries]
    assert Counter(to)["+13105550101"] == 1  # exactly one request for it: no retry
    faulted = [e for e in entries if e["fault"]]
    assert [form(e)["to"] for e in faulted] == ["+13105550101"]
    assert faulted[0]["side_effect"] == ("applied" if applied else "not_applied")
    sent = outbound(emu)
    assert sent["+13105550101"] == (1 if applied else 0)
    assert max(sent.values()) == 1  # nobody got two messages
    assert len(sent) == (5 if applied else 4)


def test_a_503_with_retry_after_is_sent_again_exactly_once(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = sample(tmp_path, "messages.csv")
    emu.admin("POST", "/faults", {"fault": "503", "path": MESSAGES, "method": "POST", "count": 1})
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 5
    entries = posts(emu, MESSAGES)
    (refused,) = [form(e)["to"] for e in entries if e["fault"] == "503"]
    assert [e["status"] for e in entries if form(e)["to"] == refused] == [503, 202]
    attempts = {e164(r["to"]): r["sonar__attempts"] for r in rows}
    assert attempts == {p: "2" if p == refused else "1" for p in attempts}
    sent = outbound(emu)
    assert len(sent) == 5 and max(sent.values()) == 1


def test_a_safe_operation_is_retried_through_500s(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "customers.csv")
    emu.admin(
        "POST", "/faults", {"fault": "500_before", "path": CUSTOMERS, "method": "POST", "count": 2}
    )
    result = bulk(emu, "customers", "upsert", str(sheet), "--concurrency", "1")
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "customers.upsert.results.csv")
    assert [r["sonar__status"] for r in rows] == ["created"] * 10
    assert rows[0]["sonar__attempts"] == "3"
    assert {r["sonar__attempts"] for r in rows[1:]} == {"1"}
    assert [e["status"] for e in posts(emu, CUSTOMERS)[:3]] == [500, 500, 201]
    assert len(state(emu)["customers"]) == 10


# -- 6. a fatal answer ------------------------------------------------------------------------


def test_a_fatal_answer_stops_the_run(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "customers.csv")
    result = bulk(
        emu, "customers", "upsert", str(sheet), "--concurrency", "1", "-q", token=NO_SUBSCRIPTION
    )
    assert result.exit_code == 5, result.output  # the API refused the account
    assert "Traceback" not in result.output
    (line,) = error_lines(result)
    assert Errors.NO_SUBSCRIPTION in line
    rows = read_dicts(tmp_path / "customers.upsert.results.csv")
    assert rows[0]["sonar__status"] == "failed" and rows[0]["sonar__http_status"] == "403"
    assert [r["sonar__status"] for r in rows[1:]] == ["skipped"] * 9
    assert all("fatal" in r["sonar__error"] for r in rows[1:])
    assert len(log(emu)) == 1
    assert state(emu)["customers"] == []


# -- 7. kill -9 and --resume ------------------------------------------------------------------


def kill_mid_send(emu: EmulatorServer, sheet: Path, sent: int) -> None:
    """Send ``sheet`` in a real process (20 ms a request) and SIGKILL it once the emulator
    holds ``sent`` messages."""
    emu.admin("POST", "/config", {"latency_ms": 20})
    proc = subprocess.Popen(
        command(emu, "messages", "send", str(sheet), "--yes", "--concurrency", "4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(state(emu)["messages"]) >= sent or proc.poll() is not None, 30)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_plain_rerun_after_a_kill_keeps_the_sends_in_flight_unknown(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by a double-send trial: after a kill -9, a run without --resume reported the
    sends that were in flight at the kill as skipped (exit 0), though they may have gone out.
    They are unknown (exit 1), and not sent again."""
    phones = us_numbers(201, 60)
    sheet = messages_sheet(tmp_path / "blast.csv", phones)
    kill_mid_send(emu, sheet, 20)
    settle(emu)
    emu.admin("POST", "/clock", {"advance": 10})  # past Sonar's duplicate rule
    again = bulk(emu, "messages", "send", str(sheet), "--yes")
    rows = read_dicts(tmp_path / "blast.send.results.csv")
    unknown = [r for r in rows if r["sonar__status"] == "unknown"]
    assert 1 <= len(unknown) <= 4, Counter(r["sonar__status"] for r in rows)
    assert all("in flight" in r["sonar__error"] for r in unknown)
    assert again.exit_code == 1, again.output
    assert set(Counter(r["sonar__status"] for r in rows)) == {"queued", "unknown"}
    assert max(outbound(emu).values()) == 1  # nobody texted twice


def test_a_killed_send_resumes_without_texting_anybody_twice(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(200, 150)
    sheet = messages_sheet(tmp_path / "blast.csv", phones)
    journal = tmp_path / "blast.send.journal.sqlite"
    results = tmp_path / "blast.send.results.csv"
    kill_mid_send(emu, sheet, 30)
    assert not results.exists()  # killed: no results written
    # a killed run leaves its lock file, locked by nobody: the resume takes it, and removes it
    assert Path(f"{journal}.lock").exists()
    # requests the dead process had in flight still finish in the emulator
    settle(emu)
    at_kill = outbound(emu)
    assert 30 <= len(at_kill) < 150

    resumed = bulk(emu, "messages", "send", str(sheet), "--resume", str(journal), "--yes")
    assert resumed.exit_code in (0, 1), resumed.output
    assert not list(tmp_path.glob("*.lock"))
    rows = read_dicts(results)
    assert len(rows) == 150
    by_status = Counter(r["sonar__status"] for r in rows)
    assert set(by_status) <= {"queued", "unknown"}
    sent = outbound(emu)
    assert max(sent.values()) == 1  # nobody texted twice
    unknown = [r for r in rows if r["sonar__status"] == "unknown"]
    assert len(unknown) <= 4  # at most the requests in flight at the kill
    for r in unknown:
        # in flight at the kill: its intent is in the journal, its outcome is not; the
        # emulator got it (one message) or never did (none), and the resume left it alone
        assert "held" in r["sonar__error"]
        assert sent[r["to"]] == at_kill[r["to"]] <= 1
    # every queued row got its message; unknown rows were not sent by the resume
    assert all(sent[r["to"]] == 1 for r in rows if r["sonar__status"] == "queued")
    assert resumed.exit_code == (1 if unknown else 0)

    # --retry-unknown sends the held rows again, blindly: a held row whose request had in fact
    # been applied before the kill now has two messages. That is why unknown is held by
    # default. (The clock moves past Sonar's 7-second duplicate rule, which would otherwise
    # refuse those repeats.)
    stored = [r["to"] for r in unknown if sent[r["to"]] == 1]
    emu.admin("POST", "/clock", {"advance": 10})
    retried = bulk(
        emu,
        "messages",
        "send",
        str(sheet),
        "--resume",
        str(journal),
        "--retry-unknown",
        "--yes",
    )
    assert retried.exit_code == 0, retried.output
    assert statuses(results) == ["queued"] * 150
    after = outbound(emu)
    assert set(after) == set(phones)
    twice = sorted(p for p, n in after.items() if n > 1)
    assert twice == sorted(stored)
    assert max(after.values()) <= 2


# -- 8. Ctrl-C --------------------------------------------------------------------------------


def test_ctrl_c_stops_gracefully_and_the_resume_finishes(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(300, 100)
    sheet = customers_sheet(tmp_path / "many.csv", phones)
    results = tmp_path / "many.upsert.results.csv"
    emu.admin("POST", "/config", {"latency_ms": 50})
    proc = subprocess.Popen(
        command(emu, "customers", "upsert", str(sheet), "--concurrency", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr, _ = signal_when(proc, lambda: len(state(emu)["customers"]) >= 10, signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not list(tmp_path.glob("*.lock"))  # stopped: its lock file removed too
    rows = assert_results_keep_the_input(sheet, results)
    first = Counter(r["sonar__status"] for r in rows)
    assert set(first) == {"created", "skipped"}, first
    assert first["created"] == len(state(emu)["customers"])
    resume_line = next(line for line in stderr.splitlines() if "--resume" in line)
    argv = resume_line.split("resume with: ", 1)[1].split()
    assert argv[0] == "sonar-bulk"
    assert TOKEN not in argv
    assert argv[argv.index("--resume") + 1] == str(tmp_path / "many.upsert.journal.sqlite")

    emu.admin("POST", "/config", {"latency_ms": 0})
    # the printed command, as typed again (with the token given again)
    finished = CliRunner().invoke(cli, [*argv[1:], "--token", TOKEN])
    assert finished.exit_code == 0, finished.output
    assert statuses(results) == ["created"] * 100
    applied = Counter(form(e)["phone_number"] for e in posts(emu, CUSTOMERS))
    assert applied == dict.fromkeys(phones, 1)  # nobody upserted twice


def test_ctrl_c_while_diff_reads_sends_nothing(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(500, 100)
    sheet = customers_sheet(tmp_path / "many.csv", phones)
    emu.admin("POST", "/config", {"latency_ms": 50})
    proc = subprocess.Popen(
        command(emu, "customers", "upsert", str(sheet), "--diff", "--concurrency", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(log(emu)) >= 6 or proc.poll() is not None, 30)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    settle(emu)
    assert {e["method"] for e in log(emu)} == {"GET"}  # it stopped reading; wrote nothing
    assert state(emu)["customers"] == []


# -- 9. the same sheet again ------------------------------------------------------------------


def test_sending_the_same_sheet_again_skips_what_was_sent(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = sample(tmp_path, "messages.csv")
    first = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert first.exit_code == 0, first.output
    before = statuses(tmp_path / "messages.send.results.csv")

    again = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert again.exit_code == 0, again.output
    assert "sonar-bulk: warning: 5 rows of this sheet were already sent" in again.stderr
    assert "--resend" in again.stderr
    rows = read_dicts(tmp_path / "messages.send.results.csv")
    # nothing sent again; each row keeps the status its send had (a results file run twice
    # never loses an unknown send)
    assert [r["sonar__status"] for r in rows] == before
    assert all("not sent again" in r["sonar__error"] for r in rows)
    assert len(posts(emu, MESSAGES)) == 5
    assert set(outbound(emu).values()) == {1}

    emu.admin("POST", "/clock", {"advance": 10})  # past the 7-second duplicate rule
    resent = bulk(emu, "messages", "send", str(sheet), "--yes", "--resend")
    assert resent.exit_code == 0, resent.output
    assert statuses(tmp_path / "messages.send.results.csv") == ["queued"] * 5
    assert set(outbound(emu).values()) == {2}


# -- 10. --limit, --dry-run, --diff -----------------------------------------------------------


def test_limit_sends_only_the_first_rows(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "messages.csv")
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--limit", "2")
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 2 + ["skipped"] * 3
    assert all("--limit 2" in r["sonar__error"] for r in rows[2:])
    assert set(outbound(emu)) == {"+13105550101", "+13105550102"}


def test_a_dry_run_calls_nothing_and_writes_the_plan(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "messages.csv")
    result = bulk(emu, "messages", "send", str(sheet), "--dry-run")
    assert result.exit_code == 0, result.output
    assert log(emu) == []
    plan = assert_results_keep_the_input(sheet, tmp_path / "messages.send.plan.csv")
    assert [r["sonar__status"] for r in plan] == ["planned"] * 5
    assert plan[0]["sonar__request"].startswith("POST /messages ")
    assert '"to": "+13105550101"' in plan[0]["sonar__request"]
    assert plan[0]["sonar__text"].startswith("Hi Ana, your order A1001")
    assert not (tmp_path / "messages.send.results.csv").exists()
    assert not (tmp_path / "messages.send.journal.sqlite").exists()


def test_diff_shows_what_an_upsert_would_change(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "customers.csv")
    assert bulk(emu, "customers", "upsert", str(sheet)).exit_code == 0
    given = read_rows(sheet)
    assert given[1][1] == "Ana"
    given[1][1] = "Anna"
    edited = write_sheet(tmp_path / "edited.csv", given[0], given[1:])
    emu.admin("DELETE", "/requests")

    result = bulk(emu, "customers", "upsert", str(edited), "--diff", "--dry-run")
    assert result.exit_code == 0, result.output
    assert {e["method"] for e in log(emu)} == {"GET"}  # read only
    plan = read_dicts(tmp_path / "edited.upsert.plan.csv")
    assert "first_name Ana -> Anna" in plan[0]["sonar__change"]
    assert all("first_name" not in r["sonar__change"] for r in plan[1:])
    assert customers_by_phone(emu)["+13105550101"]["first_name"] == "Ana"


# -- 11. quiet hours --------------------------------------------------------------------------


def _window(zone: str, start_hours: float, end_hours: float) -> str:
    now = dt.datetime.now(ZoneInfo(zone))
    start = now + dt.timedelta(hours=start_hours)
    end = now + dt.timedelta(hours=end_hours)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_quiet_hours_skip_recipients_inside_the_window(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "messages.csv")
    around_now = _window("America/Los_Angeles", -1, 1)  # New York is 3 hours ahead: outside
    result = bulk(
        emu,
        "messages",
        "send",
        str(sheet),
        "--yes",
        "--quiet-hours",
        around_now,
        "--quiet-hours-policy",
        "skip",
    )
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "messages.send.results.csv")
    # 310 and 415 are Los Angeles area codes; 646 is New York
    assert [r["sonar__status"] for r in rows] == ["skipped"] * 3 + ["queued", "skipped"]
    for r in (rows[0], rows[1], rows[2], rows[4]):
        assert "America/Los_Angeles" in r["sonar__timezone"]
        assert "from the number" in r["sonar__timezone"]
        assert "quiet hours" in r["sonar__error"]
    assert "America/New_York" in rows[3]["sonar__timezone"]
    assert set(outbound(emu)) == {"+16465550105"}


def test_quiet_hours_far_from_now_hold_nobody(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "messages.csv")
    later = _window("America/Los_Angeles", 6, 7)  # New York is at +3 h: outside too
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--quiet-hours", later)
    assert result.exit_code == 0, result.output
    assert statuses(tmp_path / "messages.send.results.csv") == ["queued"] * 5
    assert len(outbound(emu)) == 5


# -- 12. the token ----------------------------------------------------------------------------


def test_the_token_is_written_nowhere(emu: EmulatorServer, tmp_path: Path) -> None:
    forms = {SECRET, quote(SECRET), quote(SECRET, safe=""), quote_plus(SECRET)}
    forms |= {f.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d") for f in forms}
    customers = sample(tmp_path, "customers.csv")
    messages = sample(tmp_path, "messages.csv")
    for fault in ("500_before", "reset_after"):
        emu.admin("POST", "/faults", {"fault": fault, "path": CUSTOMERS, "count": 1})
    for fault in ("500_after", "hang_after"):
        emu.admin("POST", "/faults", {"fault": fault, "path": MESSAGES, "count": 1})
    runs = [
        bulk(emu, "customers", "upsert", str(customers), "--json", token=SECRET),
        bulk(
            emu,
            "messages",
            "send",
            str(messages),
            "--yes",
            "--timeout",
            "0.5",
            "--json",
            token=SECRET,
        ),
    ]
    assert [r.exit_code for r in runs] == [0, 1], [r.output for r in runs]
    files = [
        tmp_path / name
        for name in (
            "customers.upsert.results.csv",
            "customers.upsert.journal.sqlite",
            "messages.send.results.csv",
            "messages.send.journal.sqlite",
        )
    ]
    files += list(tmp_path.glob("*.sqlite-wal"))
    texts = [r.stdout for r in runs] + [r.stderr for r in runs]
    texts += [path.read_bytes().decode("latin-1") for path in files]
    assert all(path.exists() for path in files)
    for text in texts:
        for secret in forms:
            assert secret not in text
    assert len(state(emu)["customers"]) >= 10  # the token did work


# -- 13. --json, xlsx, demo -------------------------------------------------------------------


def test_json_prints_one_summary_object(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "customers.csv")
    result = bulk(emu, "customers", "upsert", str(sheet), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"created": 10}
    assert summary["rows"] == 10
    assert summary["exit_code"] == 0
    assert summary["results"] == str(tmp_path / "customers.upsert.results.csv")
    assert summary["command"] == "customers upsert"
    assert summary["requests"] == 10

    bad = bulk(emu, "customers", "upsert", str(sheet), "--json", token=NO_SUBSCRIPTION)
    assert bad.exit_code == 5
    lines = bad.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["exit_code"] == 5


def test_xlsx_input_gives_xlsx_results(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "customers.xlsx")
    result = bulk(emu, "customers", "upsert", str(sheet))
    assert result.exit_code == 0, result.output
    book = load_workbook(tmp_path / "customers.upsert.results.xlsx", read_only=True)
    try:
        assert book.sheetnames == ["Results", "Summary"]
        rows = [list(r) for r in book["Results"].iter_rows(values_only=True)]
        summary = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True)}
    finally:
        book.close()
    header = rows[0]
    status = header.index("sonar__status")
    assert [r[status] for r in rows[1:]] == ["created"] * 10
    assert rows[1][header.index("phone_number")] == "+13105550101"
    assert summary["rows created"] in ("10", 10)
    assert len(state(emu)["customers"]) == 10


def test_demo_runs_the_whole_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--samples", str(SAMPLES), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    for name in (
        "customers.upsert.results.csv",
        "messages.send.results.csv",
        "campaign_recipients.campaign.results.csv",
        "customer_keys.get.results.csv",
        "customers.backup.csv",
    ):
        assert (out / name).is_file(), name
    assert statuses(out / "customers.upsert.results.csv") == ["created"] * 10
    assert statuses(out / "messages.send.results.csv") == ["queued"] * 5
    assert statuses(out / "customer_keys.get.results.csv") == ["ok"] * 4
    assert (SAMPLES / "customers.csv").read_bytes() == (out / "customers.csv").read_bytes()
    # the demo's throwaway emulator leaves nothing in the send ledger: the README's next
    # step, sending the samples with --emulate, sends them
    sheet = tmp_path / "messages.csv"
    shutil.copyfile(SAMPLES / "messages.csv", sheet)
    after = CliRunner().invoke(cli, ["--emulate", "messages", "send", str(sheet), "--yes"])
    assert after.exit_code == 0, after.output
    assert statuses(tmp_path / "messages.send.results.csv") == ["queued"] * 5
    # two customers answered the messages; their webhook events are joined to the results
    sent = read_dicts(out / "messages.send.results.csv")
    assert [r["sonar__outbound_confirmed"] for r in sent] == ["yes"] * 5
    assert [r["sonar__reply_text"] for r in sent][:3] == ["Got it, thanks!", "STOP", ""]
    assert [r["sonar__unsubscribed_after_send"] for r in sent][:3] == ["", "yes", ""]
    assert (out / "messages.send.events.csv").is_file()
    # again in the same folder: its own files are written again
    again = CliRunner().invoke(cli, ["demo", "--samples", str(SAMPLES), "--out-dir", str(out)])
    assert again.exit_code == 0, again.output
    # a folder with the user's own customers.csv: refused, the file untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "customers.csv").write_text("phone_number\n+13105550199\n", encoding="utf-8")
    refused = CliRunner().invoke(cli, ["demo", "--samples", str(SAMPLES), "--out-dir", str(mine)])
    assert refused.exit_code == 2 and "is not sonar-bulk's sample" in refused.output
    assert (mine / "customers.csv").read_text(encoding="utf-8") == "phone_number\n+13105550199\n"
    assert sorted(p.name for p in mine.iterdir()) == ["customers.csv"]


def test_demo_takes_out_dir_and_its_old_name_but_not_dash_o(tmp_path: Path) -> None:
    """-o is --output on every command, so the demo's folder is --out-dir (--out still works,
    unlisted); -o is a usage error there."""
    refused = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "No such option '-o'" in refused.output
    assert not (tmp_path / "x").exists()
    shown = CliRunner().invoke(cli, ["demo", "--help"]).output
    listed = [line.split()[0] for line in shown.splitlines() if line.startswith("  -")]
    assert listed == ["--samples", "--out-dir", "-h,"]
    old = CliRunner().invoke(
        cli, ["demo", "--samples", str(tmp_path / "none"), "--out", str(tmp_path / "old")]
    )
    assert old.exit_code == 2 and "no sonar-bulk samples in" in old.output  # --out was taken


# -- found by a new user's trial ----------------------------------------------------------------


@pytest.mark.parametrize("flag", [["--rate", "inf"], ["--rate", "nan"], ["--timeout", "nan"]])
def test_numbers_that_are_not_finite_are_refused(
    emu: EmulatorServer, tmp_path: Path, flag: list[str]
) -> None:
    sheet = sample(tmp_path, "customers.csv")
    result = CliRunner().invoke(
        cli, ["customers", "upsert", str(sheet), "--base-url", emu.api_url, "--token", TOKEN, *flag]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "customers.upsert.journal.sqlite").exists()


def test_a_backup_keeps_values_exactly_and_never_replaces_its_input(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = write_sheet(
        tmp_path / "handles.csv",
        ["phone_number", "first_name", "last_name"],
        [["+13105550161", "Ana", "@ana_l"], ["+13105550162", "-Bo-", "+vip"]],
    )
    assert bulk(emu, "customers", "upsert", str(sheet)).exit_code == 0
    before = sheet.read_bytes()
    refused = bulk(emu, "customers", "get", str(sheet), "-o", str(sheet), "--force")
    assert refused.exit_code == 2 and "that is the input file" in refused.output
    assert sheet.read_bytes() == before
    backup = tmp_path / "backup.csv"
    assert bulk(emu, "customers", "get", str(sheet), "-o", str(backup)).exit_code == 0
    rows = read_dicts(backup)
    # inert in a spreadsheet (issue 18, point 8), and read back exactly as they were
    assert [(r["first_name"], r["last_name"]) for r in rows] == [
        ("Ana", "'@ana_l"),
        ("'-Bo-", "'+vip"),
    ]
    from sonar_bulk.sheets import read_sheet

    back = read_sheet(backup)
    assert back.column(1).to_pylist() == ["Ana", "-Bo-"]
    assert back.column(2).to_pylist() == ["@ana_l", "+vip"]
    # an earlier backup is sonar-bulk's own: replaced without --force
    assert bulk(emu, "customers", "get", str(sheet), "-o", str(backup)).exit_code == 0


def test_rows_already_sent_keep_their_message_ids_in_the_new_results(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = sample(tmp_path, "messages.csv")
    first = bulk(emu, "messages", "send", str(sheet), "--yes", "--limit", "2")
    assert first.exit_code == 0, first.output
    ids = [
        r["sonar__external_message_id"] for r in read_dicts(tmp_path / "messages.send.results.csv")
    ]
    again = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert again.exit_code == 0, again.output
    rows = read_dicts(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 5  # 2 of them from before
    assert all("not sent again" in r["sonar__error"] for r in rows[:2])
    assert [r["sonar__external_message_id"] for r in rows[:2]] == ids[:2]
    assert all(r["sonar__external_message_id"] for r in rows)


# -- the send ledger -------------------------------------------------------------------------


def test_a_copy_of_a_sent_sheet_is_not_sent_again(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = sample(tmp_path, "messages.csv")
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    assert sum(outbound(emu).values()) == 5
    copy = tmp_path / "final final.csv"  # "Save As": its own, empty journal
    shutil.copyfile(sheet, copy)
    again = bulk(emu, "messages", "send", str(copy), "--yes")
    assert again.exit_code == 0, again.output
    assert "already sent" in again.stderr and "--resend" in again.stderr
    rows = read_dicts(tmp_path / "final final.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["skipped"] * 5
    assert all("from another sheet" in r["sonar__error"] for r in rows)
    assert str(sheet) in rows[0]["sonar__error"]
    assert sum(outbound(emu).values()) == 5  # nobody texted twice
    # the results file fed back in: the same
    fed = tmp_path / "fed back.csv"
    shutil.copyfile(tmp_path / "messages.send.results.csv", fed)
    assert bulk(emu, "messages", "send", str(fed), "--yes").exit_code == 0
    assert sum(outbound(emu).values()) == 5
    # on purpose: --resend (past the emulator's 7-second rule for identical texts)
    emu.admin("POST", "/clock", {"advance": 8})
    resent = bulk(emu, "messages", "send", str(copy), "--yes", "--resend")
    assert resent.exit_code == 0, resent.output
    assert sum(outbound(emu).values()) == 10


def test_the_ledger_keeps_sends_apart_by_target(emu: EmulatorServer, tmp_path: Path) -> None:
    """A sheet sent to one API is not 'sent before' against another (the key has the target)."""
    sheet = sample(tmp_path, "messages.csv")
    assert bulk(emu, "messages", "send", str(sheet), "--yes").exit_code == 0
    copy = tmp_path / "rehearsal.csv"
    shutil.copyfile(sheet, copy)
    emulated = CliRunner().invoke(cli, ["--emulate", "messages", "send", str(copy), "--yes"])
    assert emulated.exit_code == 0, emulated.output
    rows = read_dicts(tmp_path / "rehearsal.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 5


def test_after_a_kill_a_copy_of_the_sheet_texts_nobody_twice(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The ledger has each send before its request goes out: a copy run after a SIGKILL skips
    everyone the killed run texted (or may have), and sends the rest."""
    phones = us_numbers(200, 120)
    sheet = messages_sheet(tmp_path / "blast.csv", phones)
    kill_mid_send(emu, sheet, 20)
    settle(emu)
    at_kill = outbound(emu)
    assert 20 <= len(at_kill) < 120
    emu.admin("POST", "/config", {"latency_ms": 0})
    copy = tmp_path / "blast (copy).csv"
    shutil.copyfile(sheet, copy)
    again = bulk(emu, "messages", "send", str(copy), "--yes")
    assert again.exit_code == 0, again.output
    sent = outbound(emu)
    assert max(sent.values()) == 1  # nobody texted twice
    rows = read_dicts(tmp_path / "blast (copy).send.results.csv")
    skipped = {r["to"] for r in rows if r["sonar__status"] == "skipped"}
    assert set(at_kill) <= {e164(p) for p in skipped}
    assert all("from another sheet" in r["sonar__error"] for r in rows if r["to"] in skipped)
    assert len(sent) >= 120 - 4  # the rest went out (a few in flight at the kill may not)


# -- SMS consent from real exports --------------------------------------------------------------


def emulated_customers(*phones: str) -> dict[str, dict[str, Any]]:
    """Customers of the world ``--emulate`` keeps, read over the emulator's HTTP API (GET
    /customers) with the world reopened the way the next ``--emulate`` command would."""
    from sonar_bulk.api.endpoints import EMULATOR_TOKEN
    from sonar_bulk.connection import emulator_state_path

    found: dict[str, dict[str, Any]] = {}
    with EmulatorServer(EmulatorConfig(state_file=str(emulator_state_path()))) as server:
        for phone in phones:
            answer = server.client.get(
                f"{server.api_url}/customers",
                params={"phone_number": phone},
                headers={"Token": EMULATOR_TOKEN},
            )
            assert answer.status_code == 200, answer.text
            found[phone] = answer.json()
    return found


def emulate(*args: str) -> Result:
    """``sonar-bulk --emulate ...`` (its world is the test's own: see private_user_dirs)."""
    return CliRunner().invoke(cli, ["--emulate", *args])


SHOPIFY_EXPORT = (
    [
        "First Name",
        "Last Name",
        "Email",
        "Accepts Email Marketing",
        "Phone",
        "Accepts SMS Marketing",
    ],
    [
        ["Ana", "Lopez", "ana@example.com", "yes", "+13105550101", "no"],
        ["Ben", "Okafor", "ben@example.com", "no", "+13105550102", "yes"],
        ["Cy", "Ng", "cy@example.com", "yes", "+13105550103", ""],
    ],
)
KLAVIYO_EXPORT = (
    ["Phone Number", "First Name", "Email", "SMS Marketing Consent", "Email Marketing Consent"],
    [
        ["+13105550101", "Ana", "ana@example.com", "NEVER_SUBSCRIBED", "SUBSCRIBED"],
        ["+13105550102", "Ben", "ben@example.com", "SUBSCRIBED", "NEVER_SUBSCRIBED"],
        ["+13105550103", "Cy", "cy@example.com", "", "SUBSCRIBED"],
        ["+13105550104", "Di", "di@example.com", "UNSUBSCRIBED", "SUBSCRIBED"],
    ],
)


@pytest.mark.parametrize(
    ("export", "expected", "counts"),
    [
        pytest.param(
            SHOPIFY_EXPORT,
            {"+13105550101": False, "+13105550102": True, "+13105550103": False},
            "1 consented, 1 not consented (subscribed=false), 1 unknown",
            id="shopify",
        ),
        pytest.param(
            KLAVIYO_EXPORT,
            {
                "+13105550101": False,
                "+13105550102": True,
                "+13105550103": False,
                "+13105550104": False,
            },
            "1 consented, 2 not consented (subscribed=false), 1 unknown",
            id="klaviyo",
        ),
    ],
)
def test_an_exports_sms_consent_no_is_imported_unsubscribed(
    tmp_path: Path,
    export: tuple[list[str], list[list[str]]],
    expected: dict[str, bool],
    counts: str,
) -> None:
    """ "no" / NEVER_SUBSCRIBED / UNSUBSCRIBED in the SMS-consent column unsubscribe (a new
    customer is subscribed otherwise); a blank leaves what Sonar has (Cy was unsubscribed
    before); the email-consent column, "yes" or SUBSCRIBED, counts for nothing."""
    seed = write_sheet(
        tmp_path / "seed.csv", ["phone_number", "subscribed"], [["+13105550103", "no"]]
    )
    assert emulate("customers", "upsert", str(seed)).exit_code == 0
    assert emulated_customers("+13105550103")["+13105550103"]["subscribed"] is False

    sheet = write_sheet(tmp_path / "export.csv", *export)
    result = emulate("customers", "upsert", str(sheet))
    assert result.exit_code == 0, result.output
    assert counts in result.stderr
    assert "column.unknown" in result.stderr  # the email-consent column, reported and ignored
    got = emulated_customers(*expected)
    assert {phone: got[phone]["subscribed"] for phone in expected} == expected
    assert got["+13105550101"]["first_name"] == "Ana"


def test_an_email_consent_column_alone_never_subscribes(tmp_path: Path) -> None:
    seed = write_sheet(tmp_path / "seed.csv", ["Phone", "SMS Opt-in"], [["+13105550101", "no"]])
    seeded = emulate("customers", "upsert", str(seed))
    assert seeded.exit_code == 0, seeded.output
    assert "1 not consented" in seeded.stderr

    sheet = write_sheet(
        tmp_path / "shopify.csv",
        ["First Name", "Email", "Accepts Email Marketing", "Phone"],
        [["Ana", "ana@example.com", "yes", "+13105550101"]],
    )
    result = emulate("customers", "upsert", str(sheet))
    assert result.exit_code == 0, result.output
    assert "customers sheets have no column 'Accepts Email Marketing'; ignored" in result.stderr
    assert "consented" not in result.stderr
    assert "sms consent: no consent column; each new customer is subscribed" in result.stderr
    ana = emulated_customers("+13105550101")["+13105550101"]
    assert (ana["email"], ana["subscribed"]) == ("ana@example.com", False)


def test_an_unknown_consent_value_stops_the_run(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "optins.csv",
        ["Phone", "SMS Opt-in"],
        [["+13105550101", "yes"], ["+13105550102", "pending"]],
    )
    result = emulate("customers", "upsert", str(sheet))
    assert result.exit_code == 1
    assert "row 3, SMS Opt-in: 'pending' bool.invalid (error): not an SMS-consent value" in (
        result.stderr
    )
    assert "Traceback" not in result.output
    (error,) = error_lines(result)
    assert error.startswith("sonar-bulk: error: 1 of 2 rows has errors; nothing was sent")


def test_rows_of_one_customer_that_disagree_on_consent_are_errors(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by a new-user trial: a customer listed twice, SMS consent "no" then "yes", was
    subscribed ("the later row wins", only a warning). Both rows are errors now: nothing is
    sent, and --skip-invalid leaves that customer alone (never subscribed on a guess)."""
    sheet = write_sheet(
        tmp_path / "shop.csv",
        ["Phone", "First Name", "SMS Consent"],
        [
            ["+12025550182", "Bo", "no"],
            ["+13105550111", "Al", "yes"],
            ["(202) 555-0182", "Bo", "yes"],
        ],
    )
    result = bulk(emu, "customers", "upsert", str(sheet))
    assert result.exit_code == 1, result.output
    assert (
        "row 2, SMS Consent: 'no' consent.conflict (error): the same customer as row 4, which "
        "disagrees on SMS consent (this row: no, row 4: yes)"
    ) in result.stderr
    assert "row 4, SMS Consent: 'yes' consent.conflict (error)" in result.stderr
    assert customers_by_phone(emu) == {}
    skipped = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert skipped.exit_code == 1, skipped.output
    assert list(customers_by_phone(emu)) == ["+13105550111"]
    assert statuses(tmp_path / "shop.upsert.results.csv") == ["invalid", "created", "invalid"]


def test_quiet_is_quiet_with_the_emulator_too(tmp_path: Path) -> None:
    """-q silences the "using the emulator" line as well (issue 18)."""
    sheet = sample(tmp_path, "customers.csv")
    result = CliRunner().invoke(cli, ["--emulate", "customers", "upsert", str(sheet), "-q"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert statuses(tmp_path / "customers.upsert.results.csv") == ["created"] * 10
