"""Webhook events: the store, the receiver over real sockets, collecting with the emulator
delivering real HTTP webhooks, exports, the admin commands, and --collect-events on bulk runs."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sonar_bulk.api.endpoints import EMULATOR_TOKEN, WEBHOOK_EVENTS
from sonar_bulk.cli import cli
from sonar_bulk.connection import Connection
from sonar_bulk.emulator.app import EmulatorConfig, Knobs
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.errors import UsageError
from sonar_bulk.events.collect import CollectOptions, Collector, parse_events, webhook_name
from sonar_bulk.events.export import XLSX_CELL_MAX, sheet_titles, write_export
from sonar_bulk.events.receiver import MAX_BODY, Receiver
from sonar_bulk.events.store import EXPORT_COLUMNS, EventStore, Filter, Incoming, payload_fields
from sonar_bulk.events.times import parse_duration, parse_time
from tests.emulator_helpers import Lines, wait_for

TOKEN = EMULATOR_TOKEN
#: A fixed instant for stores whose times a test sets (2026-11-28T12:00:00Z).
NOON = 1_795_867_200.0


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig()) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The shared emulator, empty; webhook retries 1,000 times faster (10 s -> 10 ms)."""
    server.admin("POST", "/reset")
    server.emulator.knobs.__dict__.update(Knobs().__dict__)
    server.admin("POST", "/config", {"time_scale": 0.001})
    yield server
    server.emulator.knobs.__dict__.update(Knobs().__dict__)


def conn_of(emu: EmulatorServer) -> Connection:
    return Connection(emu.api_url, TOKEN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored(path: Path) -> list[dict[str, Any]]:
    """Every row of a store, read the way another process would (read-only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY seq")]
    finally:
        db.close()


def remembered(path: Path) -> list[str]:
    """The webhook ids a store remembers registering."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [str(r[0]) for r in db.execute("SELECT id FROM webhooks")]
    finally:
        db.close()


def api(emu: EmulatorServer, method: str, path: str, **data: Any) -> Any:
    response = emu.client.request(
        method, emu.api_url + path, data=data or None, headers={"X-Token": TOKEN}
    )
    assert response.status_code < 300, response.text
    return response.json()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


# -- times --------------------------------------------------------------------------------------


def test_durations_and_times() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400
    assert parse_duration("0") == 0
    with pytest.raises(UsageError, match="add a unit: 10s, 10m or 10h"):
        parse_duration("10")  # seconds or minutes? the user says
    for bad in ("", "soon", "-5m", "2w", "nan", "31d"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    assert parse_time("-2h", NOON) == NOON - 7200
    assert parse_time("+15m", NOON) == NOON + 900
    assert parse_time("2026-11-28T12:00:00Z", 0) == NOON
    assert parse_time("2026-11-28T13:00:00+01:00", 0) == NOON
    with pytest.raises(UsageError, match="ISO 8601"):
        parse_time("yesterday-ish", NOON)


def test_event_lists() -> None:
    assert parse_events("all") == WEBHOOK_EVENTS
    assert parse_events("outbound_message, customer_unsubscribed") == (
        "outbound_message",
        "customer_unsubscribed",
    )
    with pytest.raises(UsageError, match="did you mean outbound_message"):
        parse_events("outbound_mesage")


# -- the store ------------------------------------------------------------------------------------


def test_store_dedupes_on_uuid_and_counts_deliveries(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    body = b'{"uuid":"u1","action":"outbound_message"}'
    payload = json.loads(body)
    assert store.add_many([Incoming(body, payload, NOON)]) == [True]
    assert store.add_many([Incoming(body, payload, NOON + 10)] * 2) == [False, False]
    # no uuid: the body's hash is the key, so a replay of the same bytes is still one row
    bare = b'{"action":"customer_created"}'
    store.add_many([Incoming(bare, json.loads(bare), NOON + 1)] * 2)
    assert store.counts() == (2, 5)
    rows = stored(tmp_path / "events.sqlite")
    assert [(r["uuid"][:7], r["deliveries"]) for r in rows] == [("u1", 3), ("sha256:", 2)]
    assert rows[0]["received_at"] == "2026-11-28T12:00:00.000Z"
    assert rows[0]["last_received_at"] == "2026-11-28T12:00:10.000Z"
    store.close()
    assert (os.stat(tmp_path / "events.sqlite").st_mode & 0o777) == 0o600


def test_store_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    other = tmp_path / "notes.sqlite"
    other.write_text("my notes")
    with pytest.raises(UsageError, match="not a sonar-bulk event store"):
        EventStore(other)
    assert other.read_text() == "my notes"
    with pytest.raises(UsageError, match="no such file"):
        EventStore(tmp_path / "missing.sqlite", create=False)


def test_payload_fields_of_current_and_legacy_payloads() -> None:
    current = {
        "uuid": "u",
        "action": "tag_added_to_message",
        "message_id": "m-1",
        "external_id": "X6D2Xp_g8gkZTfOaWrUXmQ==",
        "text": "hello",
        "tag": "vip",
        "customer": {
            "phone_number": "+13105550101",
            "first_name": "Ana",
            "last_name": "Lima",
            "email": "ana@example.com",
        },
        "user": {"email": "agent@example.com"},
    }
    assert payload_fields(current) == {
        "message_id": "m-1",
        "external_id": "X6D2Xp_g8gkZTfOaWrUXmQ==",
        "phone": "+13105550101",
        "first_name": "Ana",
        "last_name": "Lima",
        "email": "ana@example.com",
        "text": "hello",
        "tag": "vip",
        "user": "agent@example.com",
    }
    legacy = {  # the 2016 docs' example
        "action": "new_assigned_message",
        "text": "Hey, can you help me with something on your site?",
        "customer": {
            "first_name": "Sonar",
            "last_name": "Customer",
            "phone_number": "+12345678910",
        },
        "user": {"first_name": "Your_Companys", "last_name": "User"},
    }
    fields = payload_fields(legacy)
    assert fields["phone"] == "+12345678910"
    assert fields["user"] == "Your_Companys User"
    assert payload_fields({"customer": "odd", "user": None})["phone"] == ""


# -- the receiver ---------------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    store = EventStore(tmp_path / "events.sqlite")
    secret = store.secret
    store.close()
    with Receiver(tmp_path / "events.sqlite", secret) as r:
        yield r


def test_receiver_stores_before_it_answers(receiver: Receiver) -> None:
    url = f"{receiver.url}/{receiver.secret}"
    payload = {"uuid": "u-1", "action": "outbound_message", "customer": {"phone_number": "+1"}}
    with httpx.Client(trust_env=False, timeout=10) as client:
        first = client.post(url, json=payload)
        assert first.status_code == 200 and first.json() == {"stored": True, "duplicate": False}
        # the 2xx came after the commit: another connection sees the row at once
        assert [r["uuid"] for r in stored(receiver.path)] == ["u-1"]
        again = client.put(url, json=payload)
        assert again.json() == {"stored": True, "duplicate": True}
    assert stored(receiver.path)[0]["deliveries"] == 2
    assert (receiver.counters.events, receiver.counters.repeats) == (1, 1)


def test_receiver_refuses_what_it_must(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{receiver.url}/{receiver.secret}"
    caplog.set_level(logging.WARNING, "sonar_bulk.receiver")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536

    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.post(receiver.url + "/", json={"uuid": "a"}).status_code == 404
        assert client.post(url + "x", json={"uuid": "a"}).status_code == 404
        assert client.post(receiver.url + "/x/" + receiver.secret, json={}).status_code == 404
        assert client.get(url).status_code == 405
        assert client.post(url, content=b'{"uuid": "a",').status_code == 400
        assert client.post(url, content=b"\xff\xfe").status_code == 400
        assert client.post(url, json=["a", "list"]).status_code == 400
        assert client.post(url, content=b"x" * (MAX_BODY + 1)).status_code == 413
        assert client.post(url, content=chunks()).status_code == 413
        # still serving
        assert client.post(url, json={"uuid": "ok"}).status_code == 200
    assert [r["uuid"] for r in stored(receiver.path)] == ["ok"]
    assert receiver.counters.rejected == 5
    assert any("malformed JSON" in m for m in caplog.messages)
    assert not any(receiver.secret in m for m in caplog.messages)


def test_a_public_url_with_a_path_is_served_under_it_too(tmp_path: Path) -> None:
    """Behind a proxy that forwards https://example.org/hooks/... unchanged."""
    store = EventStore(tmp_path / "events.sqlite")
    secret = store.secret
    store.close()
    with (
        Receiver(tmp_path / "events.sqlite", secret, prefix="/hooks") as r,
        httpx.Client(trust_env=False, timeout=10) as client,
    ):
        assert client.post(f"{r.url}/hooks/{secret}", json={"uuid": "a"}).status_code == 200
        assert client.post(f"{r.url}/{secret}", json={"uuid": "b"}).status_code == 200
        assert client.post(f"{r.url}/other/{secret}", json={"uuid": "c"}).status_code == 404
    assert [row["uuid"] for row in stored(tmp_path / "events.sqlite")] == ["a", "b"]


def test_receiver_answers_503_when_the_store_fails(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: EventStore, items: Any) -> list[bool]:
        raise sqlite3.OperationalError("disk I/O error")

    url = f"{receiver.url}/{receiver.secret}"
    with httpx.Client(trust_env=False, timeout=10) as client:
        monkeypatch.setattr(EventStore, "add_many", broken)
        assert client.post(url, json={"uuid": "lost?"}).status_code == 503
        monkeypatch.undo()
        assert client.post(url, json={"uuid": "lost?"}).status_code == 200  # Sonar's retry
    assert [(r["uuid"], r["deliveries"]) for r in stored(receiver.path)] == [("lost?", 1)]


def test_a_port_in_use_is_one_clear_error(tmp_path: Path, runner: CliRunner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            cli,
            ["--emulate", "webhooks", "collect", "--for", "1m", "--listen", f"127.0.0.1:{port}"],
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.output


# -- collecting with the emulator delivering ------------------------------------------------------


def make_every_event(emu: EmulatorServer) -> None:
    """Make the emulator fire each of the 11 events at least once."""
    phone = "+13105550101"
    api(emu, "POST", "/customers", phone_number=phone, first_name="Ana")  # customer_created
    api(emu, "POST", "/customers", phone_number=phone, subscribed="false")  # unsubscribed
    api(emu, "POST", "/customers", phone_number=phone, subscribed="true")  # subscribed
    sent = api(emu, "POST", "/messages", to=phone, text="Your order shipped")  # outbound
    external = sent["external_id"]
    api(emu, "POST", "/messages/tags", external_message_id=external, tag_name="vip")
    emu.admin("POST", "/tags", {"external_message_id": external, "tag_name": "vip", "remove": 1})
    emu.admin("POST", "/inbound", {"phone_number": phone, "text": "thanks"})  # unassigned
    emu.admin("POST", "/assign", {"phone_number": phone, "user_email": "agent@example.com"})
    emu.admin("POST", "/inbound", {"phone_number": phone, "text": "one more"})  # assigned
    emu.admin("POST", "/double_opt_in", {"phone_number": phone})
    api(emu, "POST", "/customers/close", phone_number=phone)  # customer_state_changed


def test_every_event_type_is_collected_and_exported(emu: EmulatorServer, tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite"
    collector = Collector(conn_of(emu), CollectOptions(store, listen=("127.0.0.1", 0))).start()
    try:
        assert collector.store is not None
        hooks = emu.admin("GET", "/state")["webhooks"]
        assert [h["name"] for h in hooks] == [webhook_name(collector.store.store_id)]
        assert set(hooks[0]["settings"]) == set(WEBHOOK_EVENTS)
        assert collector.store.secret in hooks[0]["url"]
        make_every_event(emu)
        wait_for(lambda: set(WEBHOOK_EVENTS) <= {r["event"] for r in stored(store)}, 20)
    finally:
        collector.stop()
    assert emu.admin("GET", "/state")["webhooks"] == []  # deleted at the end
    rows = stored(store)
    assert len({r["uuid"] for r in rows}) == len(rows)
    by_event = {r["event"]: r for r in rows}
    assert by_event["outbound_message"]["text"] == "Your order shipped"
    assert by_event["outbound_message"]["external_id"]
    assert by_event["tag_added_to_message"]["tag"] == "vip"
    assert by_event["new_unassigned_message"]["text"] == "thanks"
    assert by_event["user_assignment"]["user"] == "agent@example.com"
    assert all(r["phone"] == "+13105550101" for r in rows)

    out = tmp_path / "events.xlsx"
    with _opened(store) as s:
        assert write_export(s, out, Filter(since=collector.started_at)) == len(rows)
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(out))
    assert book.sheet_names[0] == "All"
    assert set(book.sheet_names[1:]) == set(WEBHOOK_EVENTS)
    every = book.get_sheet_by_name("All").to_python()
    assert every[0] == list(EXPORT_COLUMNS) and len(every) == len(rows) + 1
    outbound = book.get_sheet_by_name("outbound_message").to_python()
    assert {r[1] for r in outbound[1:]} == {"outbound_message"}


class _opened:
    """An EventStore as a context manager."""

    def __init__(self, path: Path) -> None:
        self.store = EventStore(path, create=False)

    def __enter__(self) -> EventStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def test_retried_deliveries_are_one_row_and_nothing_acknowledged_is_lost_on_restart(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The receiver goes away mid-window (its deliveries fail and are retried by the emulator
    with the same uuid), comes back on the same port and store, and ends with every event
    exactly once."""
    store = tmp_path / "events.sqlite"
    port = free_port()
    options = CollectOptions(store, events=("new_unassigned_message",), listen=("127.0.0.1", port))
    collector = Collector(conn_of(emu), options).start()
    phones = [f"+1310555{n:04d}" for n in range(100, 110)]
    for phone in phones[:5]:
        emu.admin("POST", "/inbound", {"phone_number": phone, "text": "before"})
    wait_for(lambda: len(stored(store)) == 5)
    acknowledged = {r["uuid"] for r in stored(store)}
    assert collector.receiver is not None
    collector.receiver.stop()  # the receiver is gone; the webhook stays registered
    collector.receiver = None
    for phone in phones[5:]:
        emu.admin("POST", "/inbound", {"phone_number": phone, "text": "during"})
    wait_for(
        lambda: (
            sum(
                bool(d["attempts"])
                for d in emu.admin("GET", "/deliveries")
                if d["state"] == "pending"
            )
            == 5
        )
    )
    assert collector.store is not None
    with Receiver(store, collector.store.secret, "127.0.0.1", port):
        wait_for(lambda: len(stored(store)) == 10, 20)
        wait_for(
            lambda: all(d["state"] == "delivered" for d in emu.admin("GET", "/deliveries")), 20
        )
    collector.stop()
    rows = stored(store)
    assert acknowledged <= {r["uuid"] for r in rows}
    assert sorted(r["text"] for r in rows) == ["before"] * 5 + ["during"] * 5
    retried = [d for d in emu.admin("GET", "/deliveries") if len(d["attempts"]) > 1]
    assert len(retried) == 5  # failed first, then delivered: same uuid, one row each
    assert {d["uuid"] for d in retried} <= {r["uuid"] for r in rows}
    assert all(r["deliveries"] == 1 for r in rows)


def test_a_killed_collector_keeps_what_it_acknowledged_and_its_webhook_is_cleaned_up(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    store = tmp_path / "events.sqlite"
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sonar_bulk",
        "webhooks",
        "collect",
        "--for",
        "10m",
        "--listen",
        f"127.0.0.1:{port}",
        "--store",
        str(store),
        "--base-url",
        emu.api_url,
        "--token",
        TOKEN,
        "-q",
    ]
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: emu.admin("GET", "/state")["webhooks"], 30)
        old = emu.admin("GET", "/state")["webhooks"][0]
        for n in range(3):
            emu.admin("POST", "/inbound", {"phone_number": f"+1310555020{n}", "text": "hi"})
        wait_for(
            lambda: sum(d["state"] == "delivered" for d in emu.admin("GET", "/deliveries")) >= 6
        )
        first.kill()  # kill -9: no clean-up at all
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        assert first.stderr is not None
        first.stderr.close()
    delivered = {d["uuid"] for d in emu.admin("GET", "/deliveries") if d["state"] == "delivered"}
    assert delivered <= {r["uuid"] for r in stored(store)}  # every 2xx survived the kill
    assert emu.admin("GET", "/state")["webhooks"] == [old]  # left behind

    # an unrelated webhook of the account is never touched
    other = api(
        emu, "POST", "/webhooks", **{"webhook[name]": "CRM", "webhook[url]": "http://crm.example/h"}
    )
    second = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        known = {old["id"], other["id"]}
        wait_for(lambda: {h["id"] for h in emu.admin("GET", "/state")["webhooks"]} - known, 30)
        hooks = emu.admin("GET", "/state")["webhooks"]
        assert old["id"] not in [h["id"] for h in hooks]  # the stale one was deleted
        assert other["id"] in [h["id"] for h in hooks]
        new = next(h for h in hooks if h["id"] != other["id"])
        assert new["url"] == old["url"]  # the store's secret path: retries still land
        wait_for(lambda: str(new["id"]) in remembered(store), 30)  # the window has begun
        second.send_signal(signal.SIGINT)
        _, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err
    assert "deleted 1 webhook(s) an earlier run left behind" in err
    assert [h["id"] for h in emu.admin("GET", "/state")["webhooks"]] == [other["id"]]
    assert old["url"].rsplit("/", 1)[1] not in err  # the secret path is never printed


# -- exports ---------------------------------------------------------------------------------------


def golden_store(path: Path) -> EventStore:
    """A store with fixed times: every kind of cell an export must get right."""
    store = EventStore(path)
    payloads: list[dict[str, Any]] = [
        {
            "uuid": "6a1c3c5e-0001",
            "action": "outbound_message",
            "message_id": "d22eaa3b-0daa-4619-943e-16f49388d73a",
            "external_id": "X6D2Xp_g8gkZTfOaWrUXmQ==",
            "text": "Hi Ana, your order shipped",
            "customer": {"phone_number": "+13105550101", "first_name": "Ana", "last_name": "Lima"},
        },
        {
            "uuid": "6a1c3c5e-0002",
            "action": "new_unassigned_message",
            "text": '=HYPERLINK("http://evil.example","click")',
            "customer": {"phone_number": "+13105550101", "first_name": "Ana", "email": "@ana"},
        },
        {
            "uuid": "6a1c3c5e-0003",
            "action": "customer_unsubscribed",
            "customer": {"phone_number": "+44 20 7946 0958", "first_name": "Zoë", "last_name": "-"},
        },
        {
            "uuid": "6a1c3c5e-0004",
            "action": "tag_added_to_message",
            "tag": "vip",
            "text": 'line one\nline two, "quoted"',
            "user": {"email": "agent@example.com"},
            "customer": {"phone_number": "+13105550102"},
        },
    ]
    for n, payload in enumerate(payloads):
        body = json.dumps(payload, ensure_ascii=False).encode()
        store.add_many([Incoming(body, payload, NOON + n * 60)])
    store.add_many([Incoming(json.dumps(payloads[0]).encode(), payloads[0], NOON + 600)])
    return store


def test_golden_exports(tmp_path: Path, golden: Any) -> None:
    store = golden_store(tmp_path / "events.sqlite")
    csv_out, xlsx_out = tmp_path / "events.csv", tmp_path / "events.xlsx"
    assert write_export(store, csv_out) == 4
    assert csv_out.read_bytes().count(b"\r\n") == 5  # CRLF line ends, as Excel writes
    golden("events_export.csv", csv_out.read_text(encoding="utf-8"))
    rows = read_csv(csv_out)
    assert rows[1]["text"].startswith("'=HYPERLINK")  # neutralized
    assert rows[1]["email"] == "'@ana"
    assert rows[2]["phone"] == "+44 20 7946 0958"  # a phone stays as it is
    assert rows[0]["deliveries"] == "2"
    write_export(store, xlsx_out)
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(xlsx_out))
    sheets = {
        name: book.get_sheet_by_name(name).to_python(skip_empty_area=False)
        for name in book.sheet_names
    }
    golden("events_export.xlsx.json", json.dumps(sheets, indent=1, ensure_ascii=False) + "\n")
    assert sheets["All"][2][10] == '=HYPERLINK("http://evil.example","click")'  # text, no formula
    # filters: a window, and one event type
    assert write_export(store, csv_out, Filter(NOON + 60, NOON + 180)) == 2
    assert [r["uuid"] for r in read_csv(csv_out)] == ["6a1c3c5e-0002", "6a1c3c5e-0003"]
    assert write_export(store, csv_out, Filter(events=("customer_unsubscribed",))) == 1
    store.close()


def test_an_oversized_cell_is_cut_in_xlsx_but_whole_in_csv(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    payload = {"uuid": "big", "action": "outbound_message", "text": "x" * 40_000}
    body = json.dumps(payload).encode()
    store.add_many([Incoming(body, payload, NOON)])
    write_export(store, tmp_path / "big.xlsx")
    write_export(store, tmp_path / "big.csv")
    store.close()
    from python_calamine import CalamineWorkbook

    row = (
        CalamineWorkbook.from_path(str(tmp_path / "big.xlsx")).get_sheet_by_index(0).to_python()[1]
    )
    text = str(row[10])
    assert len(text) == XLSX_CELL_MAX and text.endswith("export to .csv for the whole text]")
    assert read_csv(tmp_path / "big.csv")[0]["text"] == "x" * 40_000


def test_sheet_titles_are_valid_and_distinct() -> None:
    titles = sheet_titles(["all", "a/b", "x" * 40, "x" * 41, ""])
    assert titles["all"] != "All" and titles["all"].lower() != "all"
    assert titles["a/b"] == "a_b"
    assert len(set(map(str.lower, titles.values()))) == 5
    assert all(len(t) <= 31 for t in titles.values())


def test_export_command(tmp_path: Path, runner: CliRunner) -> None:
    golden_store(tmp_path / "events.sqlite").close()
    store = str(tmp_path / "events.sqlite")
    out = tmp_path / "unsubs.csv"
    result = runner.invoke(
        cli,
        [
            "webhooks",
            "export",
            "--store",
            store,
            "--events",
            "customer_unsubscribed",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "(1 event)" in result.stderr
    assert [r["event"] for r in read_csv(out)] == ["customer_unsubscribed"]
    # a relative --since: nothing in the last hour (the store's events are from 2026-11-28 noon)
    recent = runner.invoke(
        cli, ["webhooks", "export", "--store", store, "--since", "-1h", "-o", str(out)]
    )
    assert recent.exit_code == 0 and read_csv(out) == []
    mine = tmp_path / "mine.csv"
    mine.write_text("my,own\n1,2\n")
    refused = runner.invoke(cli, ["webhooks", "export", "--store", store, "-o", str(mine)])
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert mine.read_text() == "my,own\n1,2\n"
    missing = runner.invoke(
        cli, ["webhooks", "export", "--store", str(tmp_path / "no.sqlite"), "-o", str(out)]
    )
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    bad = runner.invoke(
        cli, ["webhooks", "export", "--store", store, "--since", "later", "-o", str(out)]
    )
    assert bad.exit_code == 2 and "--since 'later'" in bad.stderr
    backwards = runner.invoke(
        cli,
        [
            "webhooks",
            "export",
            "--store",
            store,
            "--since",
            "-1m",
            "--until",
            "-10m",
            "-o",
            str(out),
        ],
    )
    assert backwards.exit_code == 2 and "is not before --until" in backwards.stderr
    unknown = runner.invoke(
        cli, ["webhooks", "export", "--store", store, "--events", "replies", "-o", str(out)]
    )
    assert unknown.exit_code == 2 and "unknown event 'replies'" in unknown.stderr
    any_case = runner.invoke(
        cli,
        [
            "webhooks",
            "export",
            "--store",
            store,
            "--events",
            "Customer_Unsubscribed",
            "-o",
            str(out),
        ],
    )
    assert any_case.exit_code == 0 and len(read_csv(out)) == 1
    every = runner.invoke(
        cli, ["webhooks", "export", "--store", store, "--events", "all", "-o", str(out)]
    )
    assert every.exit_code == 0 and len(read_csv(out)) == 4


# -- the collect command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--for DURATION or --until TIME"),
        (["--for", "1m", "--until", "+2m"], "give --for or --until, not both"),
        (["--for", "0"], "--for 0: must be more than 0"),
        (["--for", "10"], "add a unit"),
        (["--for", "soon"], "--for 'soon'"),
        (["--until", "2020-01-01T00:00Z"], "has passed"),
        (["--for", "1m", "--events", "replies"], "unknown event 'replies'"),
        (["--for", "1m", "--listen", "localhost"], "use HOST:PORT"),
        (["--for", "1m", "--public-url", "ftp://x"], "--public-url"),
    ],
)
def test_collect_usage_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(
        cli, ["--emulate", "webhooks", "collect", "--listen", "127.0.0.1:0", *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_collect_refuses_a_loopback_url_for_a_remote_api(runner: CliRunner) -> None:
    result = runner.invoke(
        cli,
        [
            "webhooks",
            "collect",
            "--for",
            "1m",
            "--base-url",
            "https://www.sendsonar.com/api/v1",
            "--token",
            "t0ps3cret",
        ],
    )
    assert result.exit_code == 2
    assert "Sonar can't reach http://127.0.0.1:8788" in result.stderr
    assert "t0ps3cret" not in result.output


def test_collect_with_the_embedded_emulator(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    result = runner.invoke(
        cli,
        [
            "--emulate",
            "webhooks",
            "collect",
            "--for",
            "0.2s",
            "--listen",
            "127.0.0.1:0",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "collecting all events at http://127.0.0.1:" in result.stderr
    assert "__emulator__/inbound" in result.stderr  # how to make events
    assert read_csv(out) == []
    assert out.read_text(encoding="utf-8-sig").splitlines()[0] == ",".join(EXPORT_COLUMNS)


# -- admin commands --------------------------------------------------------------------------------


def test_webhook_admin_commands(emu: EmulatorServer, runner: CliRunner) -> None:
    conn = ["--base-url", emu.api_url, "--token", TOKEN]
    made = runner.invoke(
        cli,
        [
            "webhooks",
            "create",
            "--url",
            "https://crm.example/hook",
            "--events",
            "customer_created,customer_unsubscribed",
            "--name",
            "CRM",
            *conn,
        ],
    )
    assert made.exit_code == 0, made.output
    hook = json.loads(made.stdout)
    assert hook["settings"] == {"customer_created": "true", "customer_unsubscribed": "true"}
    assert hook["active"] is True
    hook_id = str(hook["id"])
    changed = runner.invoke(
        cli, ["webhooks", "update", hook_id, "--inactive", "--events", "outbound_message", *conn]
    )
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["settings"] == {"outbound_message": "true"}
    assert json.loads(changed.stdout)["active"] is False
    nothing = runner.invoke(cli, ["webhooks", "update", hook_id, *conn])
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    not_an_id = runner.invoke(cli, ["webhooks", "delete", "abc", *conn])
    assert not_an_id.exit_code == 2 and "a webhook id is a number" in not_an_id.stderr
    # a collector's webhook is listed without its secret path
    api(
        emu,
        "POST",
        "/webhooks",
        **{
            "webhook[name]": webhook_name("abcd1234"),
            "webhook[url]": "http://127.0.0.1:9/s3cr3tpath",
        },
    )
    listed = runner.invoke(cli, ["webhooks", "list", *conn])
    assert listed.exit_code == 0
    assert [h["name"] for h in json.loads(listed.stdout)] == ["CRM", webhook_name("abcd1234")]
    assert "s3cr3tpath" not in listed.output
    assert json.loads(listed.stdout)[1]["url"] == "http://127.0.0.1:9/…"
    # renamed by hand, a collector's webhook is still known by its secret-shaped path
    secret = "Ab1_" + "x" * 39
    renamed = api(
        emu,
        "POST",
        "/webhooks",
        **{"webhook[name]": "renamed", "webhook[url]": f"http://127.0.0.1:9/{secret}"},
    )
    for argv in (
        ["webhooks", "update", str(renamed["id"]), "--name", "again", *conn],
        ["webhooks", "list", *conn],
        ["api", "GET", "/webhooks", *conn],
        ["webhooks", "delete", str(renamed["id"]), *conn],
    ):
        shown = runner.invoke(cli, argv)
        assert shown.exit_code == 0, shown.output
        assert secret not in shown.output and "127.0.0.1:9/…" in shown.output
    gone = runner.invoke(cli, ["webhooks", "delete", hook_id, *conn])
    assert gone.exit_code == 0
    again = runner.invoke(cli, ["webhooks", "delete", hook_id, *conn])
    assert again.exit_code == 1 and "404" in again.stderr
    bad = runner.invoke(
        cli, ["webhooks", "create", "--url", "https://x", "--events", "nope", *conn]
    )
    assert bad.exit_code == 2 and "unknown event 'nope'" in bad.output
    wrong = runner.invoke(
        cli, ["webhooks", "list", "--base-url", emu.api_url, "--token", "wrong-t0ken"]
    )
    assert wrong.exit_code == 5 and "wrong-t0ken" not in wrong.output  # refused, as everywhere


# -- events joined to a bulk send ------------------------------------------------------------------


def test_bulk_send_with_collect_events_shows_replies_and_unsubscribes(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = ["+13105550301", "+13105550302", "+13105550303"]
    sheet = tmp_path / "messages.csv"
    sheet.write_text(
        "to,text,first_name\n"
        + "".join(f"{p},Hi {{{{first_name}}}}!,N{n}\n" for n, p in enumerate(phones))
    )
    argv = [
        sys.executable,
        "-m",
        "sonar_bulk",
        "messages",
        "send",
        str(sheet),
        "--yes",
        "--collect-events",
        "10m",
        "--listen",
        "127.0.0.1:0",
        "--base-url",
        emu.api_url,
        "--token",
        TOKEN,
        "--rate",
        "0",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        # the run is done when every row's message exists; then the customers answer
        wait_for(lambda: len(emu.admin("GET", "/state")["messages"]) == 3, 30)
        emu.admin("POST", "/inbound", {"phone_number": phones[0], "text": "Thanks, got it"})
        emu.admin("POST", "/inbound", {"phone_number": phones[1], "text": "STOP"})
        wait_for(
            lambda: (
                len(emu.admin("GET", "/deliveries")) >= 9
                and all(d["state"] == "delivered" for d in emu.admin("GET", "/deliveries"))
            ),
            20,
        )
        assert proc.stderr is not None
        lines = Lines(proc.stderr)
        # the after-run window has begun (its Ctrl-C ends it early and keeps the events)
        lines.until(lambda line: "for events (Ctrl-C stops early" in line, 30)
        proc.send_signal(signal.SIGINT)
        err = lines.rest(60)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0, err
    rows = read_csv(tmp_path / "messages.send.results.csv")
    assert [r["to"] for r in rows] == phones  # every cell the user typed, in order
    assert [r["sonar__status"] for r in rows] == ["queued"] * 3
    assert [r["sonar__outbound_confirmed"] for r in rows] == ["yes"] * 3
    assert [r["sonar__replied"] for r in rows] == ["yes", "stop", ""]  # STOP is no answer
    assert [r["sonar__reply_text"] for r in rows] == ["Thanks, got it", "STOP", ""]
    assert [r["sonar__unsubscribed_after_send"] for r in rows] == ["", "yes", ""]
    events = read_csv(tmp_path / "messages.send.events.csv")
    assert {e["event"] for e in events} >= {
        "customer_created",
        "outbound_message",
        "new_unassigned_message",
        "customer_unsubscribed",
    }
    assert emu.admin("GET", "/state")["webhooks"] == []  # the run's webhook is gone
    assert TOKEN not in err


def test_customers_upsert_with_collect_events(
    emu: EmulatorServer, tmp_path: Path, runner: CliRunner
) -> None:
    sheet = tmp_path / "customers.csv"
    sheet.write_text(
        "phone_number,first_name,subscribed\n+13105550401,Ana,\n+13105550402,Ben,false\n"
    )
    result = runner.invoke(
        cli,
        [
            "customers",
            "upsert",
            str(sheet),
            "--collect-events",
            "0.5s",
            "--listen",
            "127.0.0.1:0",
            "--base-url",
            emu.api_url,
            "--token",
            TOKEN,
            "--rate",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "customers.upsert.results.csv")
    assert [r["sonar__status"] for r in rows] == ["created", "created"]
    assert [r["sonar__customer_created"] for r in rows] == ["yes", "yes"]
    assert [r["sonar__subscription"] for r in rows] == ["", "unsubscribed"]
    assert (tmp_path / "customers.upsert.events.csv").exists()


def test_collect_events_in_a_dry_run_collects_nothing(
    emu: EmulatorServer, tmp_path: Path, runner: CliRunner
) -> None:
    sheet = tmp_path / "customers.csv"
    sheet.write_text("phone_number\n+13105550501\n")
    result = runner.invoke(
        cli,
        [
            "customers",
            "upsert",
            str(sheet),
            "--dry-run",
            "--collect-events",
            "1m",
            "--base-url",
            emu.api_url,
            "--token",
            TOKEN,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no events collected" in result.stderr
    assert emu.admin("GET", "/state")["webhooks"] == []
    bad = runner.invoke(
        cli,
        [
            "customers",
            "upsert",
            str(sheet),
            "--collect-events",
            "forever",
            "--base-url",
            emu.api_url,
            "--token",
            TOKEN,
        ],
    )
    assert bad.exit_code == 2 and "--collect-events 'forever'" in bad.stderr


# -- found by an attack ------------------------------------------------------------------------


def raw_exchange(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the receiver; everything it answers until it closes (or timeout)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        except ConnectionResetError:  # closed with our data unread: closed all the same
            pass
        return b"".join(chunks)


def test_half_sent_requests_and_too_many_connections_are_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonar_bulk.events import receiver as rcv

    monkeypatch.setattr(rcv, "REQUEST_TIMEOUT", 0.3)
    monkeypatch.setattr(rcv, "MAX_CONNECTIONS", 2)
    store = EventStore(tmp_path / "events.sqlite")
    secret = store.secret
    store.close()
    with Receiver(tmp_path / "events.sqlite", secret) as r:
        # a request that never finishes is closed (an idle socket can't be held forever)
        started = time.monotonic()
        assert raw_exchange(r.url, b"POST /x HTTP/1.1\r\nHost: a\r\n") == b""
        assert time.monotonic() - started < 9
        host, port = r.url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
        try:
            wait_for(lambda: len(r._server._server.server_state.connections) == 2)
            # beyond the cap a new connection is closed at once
            assert raw_exchange(r.url, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == b""
        finally:
            for s in held:
                s.close()
        # a head over 16 KiB is refused (h11's cap), and the receiver goes on serving
        bomb = b"POST /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        answer = raw_exchange(r.url, bomb)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4")  # refused, or cut off
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.post(f"{r.url}/{secret}", json={"uuid": "fine"}).status_code == 200


def test_bad_payloads_never_poison_their_batch(receiver: Receiver) -> None:
    url = f"{receiver.url}/{receiver.secret}"
    with httpx.Client(trust_env=False, timeout=10) as client:
        lone = client.post(url, content=b'{"uuid": "s\\ud800", "text": "\\udc00x"}')
        assert lone.status_code == 200  # stored, the lone surrogates replaced
        deep = client.post(url, content=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400
        numeric = client.post(url, json={"uuid": 123, "action": {"odd": True}})
        assert numeric.status_code == 200
        assert client.post(url, json={"uuid": 123}).json()["duplicate"] is True
        assert client.request("TRACE", receiver.url + "/nope").status_code == 404
    rows = {r["uuid"]: r for r in stored(receiver.path)}
    assert rows["s\ufffd"]["text"] == "\ufffdx"
    assert rows["123"]["deliveries"] == 2 and rows["123"]["event"] == '{"odd":true}'


def test_poison_in_a_group_commit_fails_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonar_bulk.events.receiver import Counters, Writer

    real = EventStore.add_many

    def picky(self: EventStore, items: Any) -> list[bool]:
        if any(i.payload.get("uuid") == "poison" for i in items):
            raise sqlite3.OperationalError("cannot store this one")
        return real(self, items)

    monkeypatch.setattr(EventStore, "add_many", picky)
    counters = Counters()
    writer = Writer(tmp_path / "events.sqlite", counters)
    writer.start()
    import asyncio

    async def send() -> list[Any]:
        items = [Incoming(b"{}", {"uuid": f"u{n}"}, NOON) for n in range(5)]
        items.insert(2, Incoming(b"{}", {"uuid": "poison"}, NOON))
        return await asyncio.gather(*(writer.put(i) for i in items), return_exceptions=True)

    answers = asyncio.run(send())
    writer.stop()
    assert [isinstance(a, Exception) for a in answers] == [False] * 2 + [True] + [False] * 3
    assert sorted(r["uuid"] for r in stored(tmp_path / "events.sqlite")) == [
        f"u{n}" for n in range(5)
    ]
    assert (counters.events, counters.failed) == (5, 1)


def test_hostile_actions_make_valid_sheet_titles(tmp_path: Path) -> None:
    titles = sheet_titles(["bad\x01action", "😀" * 16, "a" * 20 + "😀" * 6, "History", ""])
    assert all(t.isprintable() for t in titles.values())
    assert all(len(t.encode("utf-16-le")) // 2 <= 31 for t in titles.values())
    assert titles["History"].lower() != "history"
    store = EventStore(tmp_path / "events.sqlite")
    for n, action in enumerate(titles):
        body = json.dumps({"uuid": f"u{n}", "action": action}).encode()
        store.add_many([Incoming(body, json.loads(body), NOON + n)])
    write_export(store, tmp_path / "hostile.xlsx")
    store.close()
    import openpyxl

    book = openpyxl.load_workbook(tmp_path / "hostile.xlsx", read_only=True)
    assert book.sheetnames[0] == "All" and len(book.sheetnames) == 6


def test_a_wrapped_webhook_list_and_a_quoting_error_hide_the_secret() -> None:
    from sonar_bulk.events.collect import mask_webhooks

    secret = "Zz9_" + "q" * 39
    body = {"webhooks": [{"name": "x", "url": f"http://127.0.0.1:8788/{secret}"}], "n": 1}
    assert secret not in json.dumps(mask_webhooks(body))
    assert mask_webhooks(body)["n"] == 1


def test_a_symlink_or_a_copy_of_a_store_in_use_is_refused(tmp_path: Path) -> None:
    import shutil

    first = EventStore(tmp_path / "events.sqlite")
    first.lock()
    try:
        (tmp_path / "link.sqlite").symlink_to(tmp_path / "events.sqlite")
        linked = EventStore(tmp_path / "link.sqlite")
        with pytest.raises(UsageError, match="another sonar-bulk collector"):
            linked.lock()
        linked.close()
        for suffix in ("", "-wal"):
            shutil.copyfile(tmp_path / f"events.sqlite{suffix}", tmp_path / f"copy.sqlite{suffix}")
        copy = EventStore(tmp_path / "copy.sqlite")
        assert copy.store_id == first.store_id  # the same webhook name: it must not run beside
        with pytest.raises(UsageError, match="or a copy of it"):
            copy.lock()
        copy.close()
    finally:
        first.close()


def test_cleanup_never_deletes_a_webhook_by_a_remembered_id_alone(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    crm = api(emu, "POST", "/webhooks", **{"webhook[name]": "CRM", "webhook[url]": "http://c/h"})
    store.remember_webhook(conn_of(emu).target, str(crm["id"]), webhook_name(store.store_id))
    store.close()  # as if an API that reuses ids gave a deleted collector's id to the CRM's
    collector = Collector(
        conn_of(emu), CollectOptions(tmp_path / "events.sqlite", listen=("127.0.0.1", 0))
    ).start()
    collector.stop()
    assert [h["name"] for h in emu.admin("GET", "/state")["webhooks"]] == ["CRM"]


def test_an_events_sheet_edited_by_hand_is_kept(
    emu: EmulatorServer, tmp_path: Path, runner: CliRunner
) -> None:
    """Found by an attack: an events sheet edited since a run was deleted by the next run;
    it is kept, and this run's events go to the next free name (then replaced run by run)."""
    sheet = tmp_path / "customers.csv"
    sheet.write_text("phone_number,first_name\n+13105550411,Ana\n")
    args = ["customers", "upsert", str(sheet), "--collect-events", "0.5s"]
    args += ["--listen", "127.0.0.1:0", "--base-url", emu.api_url, "--token", TOKEN]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    events = tmp_path / "customers.upsert.events.csv"
    edited = events.read_text(encoding="utf-8-sig") + "my note\n"
    events.write_text(edited, encoding="utf-8")
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert events.read_text(encoding="utf-8") == edited
    assert (tmp_path / "customers.upsert.events-2.csv").exists()
    assert "this run's events are in" in second.output
    third = runner.invoke(cli, args)
    assert third.exit_code == 0, third.output
    assert not (tmp_path / "customers.upsert.events-3.csv").exists()
