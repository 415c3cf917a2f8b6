"""Issue #7, emulator hardening, over real sockets: webhook delivery that stays bounded, an
admin API only its owner can reach, bad input that can't poison state, secrets kept out of
the banner and logs, a state file that keeps campaigns and retries, honest fault logs, and
small protocol points. Items are numbered as in the issue."""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sonar_bulk.api.endpoints import WEBHOOK_EVENTS, mask, redact, secret_forms
from sonar_bulk.cli import cli, emulator_config
from sonar_bulk.emulator.app import EmulatorConfig, Knobs
from sonar_bulk.emulator.server import EmulatorServer, admin_headers, ensure_admin_token
from sonar_bulk.emulator.state import Store
from sonar_bulk.errors import InputError, UsageError

from .emulator_helpers import FakeClock, Lines, Receiver, Sleeps, fresh, raw_http, stop, wait_for
from .test_emulator import V, call, config

PHONE = "+13105550101"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    with rec.server:
        yield rec


@pytest.fixture(scope="module")
def shared() -> Iterator[EmulatorServer]:
    with EmulatorServer(config()) as srv:
        yield srv


@pytest.fixture
def emu(shared: EmulatorServer) -> Iterator[EmulatorServer]:
    """The module's emulator, reset, with default knobs and fast webhook retries."""
    yield from fresh(shared)


def hook(emu: EmulatorServer, url: str, events: tuple[str, ...] = WEBHOOK_EVENTS) -> int:
    r = call(
        emu,
        "POST",
        "/webhooks",
        json={"webhook": {"url": url, "active": True, "settings": {e: True for e in events}}},
    )
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(
    method: str, target: str, port: int, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run_emulator(*args: str) -> tuple[subprocess.Popen[str], Lines, int]:
    """`sonar-bulk emulator --port 0 ARGS` in a subprocess; its stderr lines and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sonar_bulk", "emulator", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = Lines(proc.stderr)
    found = re.search(r"http://127\.0\.0\.1:(\d+)/api/v1 ", lines.next())
    assert found, "the banner shows the port"
    return proc, lines, int(found[1])


# --- 1. webhook delivery under load ------------------------------------------------------------


def test_a_burst_is_delivered_over_a_fixed_pool_of_connections(
    emu: EmulatorServer, receiver: Receiver
) -> None:
    """300 upserts from 16 concurrent clients: every event reaches the webhook exactly once,
    over no more connections than the webhook has workers, and each customer's events arrive
    in the order they happened."""
    url = receiver.url("burst")
    hook(emu, url, ("customer_created", "customer_unsubscribed", "customer_subscribed"))

    def client(k: int) -> list[int]:
        with httpx.Client(trust_env=False, timeout=10) as c:
            statuses = []
            for i in range(6):
                phone = f"+1310555{k * 10 + i % 3:04d}"
                data = {"phone_number": phone, "subscribed": "false" if i < 3 else "true"}
                r = c.post(emu.api_url + "/customers", data=data, headers={"Token": V})
                statuses.append(r.status_code)
            return statuses

    with ThreadPoolExecutor(16) as pool:
        statuses = [s for batch in pool.map(client, range(50)) for s in batch]
    assert statuses.count(201) == 150 and statuses.count(200) == 150
    got = wait_for(lambda: len(receiver.of("burst")) >= 450 and receiver.of("burst"), 60)
    assert len(got) == 450 and len({d["body"]["uuid"] for d in got}) == 450
    assert len({d["client_port"] for d in got}) <= 8  # the default webhook_workers
    by_customer: dict[str, list[str]] = {}
    for d in got:
        by_customer.setdefault(d["body"]["customer"]["phone_number"], []).append(
            d["body"]["action"]
        )
    assert len(by_customer) == 150
    expected = ["customer_created", "customer_unsubscribed", "customer_subscribed"]
    assert all(actions == expected for actions in by_customer.values())
    # the emulator counts a delivery once it has read the receiver's answer, just after the
    # receiver has it
    queue = wait_for(
        lambda: (q := emu.admin("GET", "/queue")["webhooks"])[0]["delivered"] == 450 and q, 10
    )
    assert queue[0]["delivered"] == 450 and queue[0]["pending"] == 0


def test_a_dead_receiver_fills_a_bounded_queue_then_drops_with_a_count() -> None:
    """With the receiver's port closed, deliveries stay pending (queued, or waiting for a
    retry; --time-scale 1000 keeps them there); past the cap (--webhook-queue) new ones are
    dropped, counted in GET /__emulator__/queue and told to the operator at once; the API
    keeps answering."""
    notices: list[str] = []
    cfg = config(webhook_queue=5, on_notice=notices.append, knobs=Knobs(time_scale=1000))
    with EmulatorServer(cfg) as emu:
        hook_id = hook(emu, f"http://127.0.0.1:{closed_port()}/hook", ("customer_created",))
        for i in range(20):
            r = call(emu, "POST", "/customers", data={"phone_number": f"+131055501{i:02d}"})
            assert r.status_code == 201
        (stats,) = emu.admin("GET", "/queue")["webhooks"]
        assert stats["waiting_retry"] <= 5
        assert {k: v for k, v in stats.items() if k != "waiting_retry"} == {
            "webhook_id": hook_id,
            "pending": 5,
            "delivered": 0,
            "failed": 0,
            "dropped": 15,
        }
        assert notices and notices[0].startswith(f"webhook {hook_id}: dropped 1 delivery; 5 ")
        wait_for(lambda: emu.admin("GET", "/queue")["webhooks"][0]["waiting_retry"] >= 1)
        attempts = [d["attempts"] for d in emu.admin("GET", "/deliveries")]
        assert len(attempts) == 5 and all(len(a) <= 1 for a in attempts)
        assert all(a[0]["status"] is None and "Refused" in a[0]["error"] for a in attempts if a)


def test_a_worker_whose_connections_fail_backs_off() -> None:
    """A receiver that is down costs one connection attempt per worker, not one per event:
    after a failed connection a worker pauses (0.05 s doubling to 1 s, times --time-scale;
    1000 here) and the rest wait in its queue, still pending."""
    with EmulatorServer(config(knobs=Knobs(time_scale=1000))) as emu:
        hook(emu, f"http://127.0.0.1:{closed_port()}/hook", ("customer_created",))
        for i in range(40):
            call(emu, "POST", "/customers", data={"phone_number": f"+131055501{i:02d}"})
        workers = len(emu.emulator.dispatcher.lanes)
        assert 1 < workers <= 8
        (stats,) = wait_for(
            lambda: (
                [w for w in emu.admin("GET", "/queue")["webhooks"] if w["waiting_retry"]]
                if sum(len(d["attempts"]) for d in emu.admin("GET", "/deliveries")) == workers
                else None
            )
        )
        assert (stats["pending"], stats["waiting_retry"]) == (40, workers)
        assert sum(len(d["attempts"]) for d in emu.admin("GET", "/deliveries")) == workers


def test_a_malformed_webhook_url_fails_its_delivery_not_the_dispatcher(
    emu: EmulatorServer, receiver: Receiver
) -> None:
    """A URL that slipped past validation (an old state file) fails that delivery at once;
    the next events still reach the other webhook."""
    good = hook(emu, receiver.url("neighbour"), ("customer_created",))
    bad = hook(emu, receiver.url("spoiled"), ("customer_created",))
    store = emu.emulator.store
    store.webhooks[bad].url = "http://[::1"
    for phone in ("+13105550101", "+13105550102"):
        call(emu, "POST", "/customers", data={"phone_number": phone})
    wait_for(lambda: len(receiver.of("neighbour")) >= 2)
    spoiled = wait_for(
        lambda: [
            d
            for d in emu.admin("GET", "/deliveries")
            if d["webhook_id"] == bad and d["state"] == "failed"
        ]
    )
    assert len(spoiled) == 2 and all(len(d["attempts"]) == 1 for d in spoiled)
    assert "not a valid URL" in spoiled[0]["attempts"][0]["error"]
    stats = {w["webhook_id"]: w for w in emu.admin("GET", "/queue")["webhooks"]}
    assert stats[good]["delivered"] == 2 and stats[bad]["failed"] == 2


class ScriptedReceiver:
    """A webhook receiver over raw sockets that follows a script, one list of steps per
    connection it accepts, one step per request it reads there: "ok" answers 200 and keeps
    the connection alive, "drop" closes it without an answer. ``seen`` holds (connection,
    uuid) of every request read."""

    def __init__(self, script: list[list[str]]) -> None:
        self.script = script
        self.seen: list[tuple[int, str]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            for number, steps in enumerate(self.script):
                conn, _ = self.listener.accept()
                with conn:
                    conn.settimeout(10)
                    buffer = b""
                    for step in steps:
                        while b"\r\n\r\n" not in buffer:
                            buffer += conn.recv(65536)
                        head, buffer = buffer.split(b"\r\n\r\n", 1)
                        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                        while len(buffer) < length:
                            buffer += conn.recv(65536)
                        body, buffer = buffer[:length], buffer[length:]
                        self.seen.append((number, json.loads(body)["uuid"]))
                        if step == "drop":
                            break
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    else:
                        with contextlib.suppress(OSError):
                            conn.recv(1)  # until the emulator closes it (or 10 s)


def test_a_kept_alive_connection_closed_under_a_delivery_is_tried_once_more_anew() -> None:
    """The receiver closes a kept-alive connection as the next delivery arrives on it (its
    idle timeout, say): that delivery is sent again at once over a new connection, one
    attempt in all."""
    receiver = ScriptedReceiver([["ok", "drop"], ["ok"]])
    with EmulatorServer(config(webhook_workers=1)) as emu:
        hook(emu, receiver.url, ("customer_created",))
        for phone in ("+13105550101", "+13105550102"):
            call(emu, "POST", "/customers", data={"phone_number": phone})
        done = wait_for(
            lambda: (
                (d := emu.admin("GET", "/deliveries"))
                and all(x["state"] == "delivered" for x in d)
                and d
            )
        )
        assert [[a["status"] for a in d["attempts"]] for d in done] == [[200], [200]]
        first, second = (d["uuid"] for d in done)
        assert receiver.seen == [(0, first), (0, second), (1, second)]


def test_a_new_connection_closed_without_an_answer_is_a_failed_attempt() -> None:
    """Over a new connection, no answer is the attempt's failure (retried on the schedule,
    with the same uuid), never a second request at once."""
    receiver = ScriptedReceiver([["drop"], ["ok"]])
    with EmulatorServer(config(webhook_workers=1, knobs=Knobs(time_scale=0.001))) as emu:
        hook(emu, receiver.url, ("customer_created",))
        call(emu, "POST", "/customers", data={"phone_number": PHONE})
        (delivery,) = wait_for(
            lambda: [d for d in emu.admin("GET", "/deliveries") if d["state"] == "delivered"]
        )
        failed, delivered = delivery["attempts"]
        assert failed["status"] is None and failed["error"].startswith("ServerDisconnected")
        assert delivered["status"] == 200
        assert receiver.seen == [(0, delivery["uuid"]), (1, delivery["uuid"])]


# --- 2. admin API access -------------------------------------------------------------------------


def test_a_cross_site_text_plain_post_cannot_reset(emu: EmulatorServer) -> None:
    """What any web page can send without a preflight (text/plain, a form, no type) is
    refused with 415 before anything happens."""
    call(emu, "POST", "/customers", data={"phone_number": PHONE})
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ):
        r = emu.client.post(emu.admin_url + "/reset", content=b"{}", headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["error"]
    assert len(emu.admin("GET", "/state")["customers"]) == 1


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example:{port}", 403),  # DNS rebinding: another name for this address
        ("127.0.0.1:1", 403),  # another port
        ("", 403),
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
    ],
)
def test_the_admin_api_answers_only_its_own_host(
    emu: EmulatorServer, host: str, status: int
) -> None:
    r = emu.client.get(emu.admin_url + "/state", headers={"Host": host.format(port=emu.port)})
    assert r.status_code == status
    if status == 403:
        assert "Host" in r.json()["error"]


def test_an_admin_token_is_required_when_set_and_never_logged() -> None:
    admin = "adm-" + "x" * 20
    with EmulatorServer(config(admin_token=admin)) as emu:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": admin}):
            r = emu.client.post(emu.admin_url + "/reset", json={}, headers=headers)
            assert r.status_code == 401 and admin not in r.text
        assert emu.admin("POST", "/reset") == {"reset": True}  # the helper sends the token
        r = emu.client.get(emu.admin_url + "/state", headers={"Authorization": f"bearer {admin}"})
        assert r.status_code == 200
        call(emu, "GET", f"/webhooks?note={admin}")
        assert admin not in json.dumps(emu.admin("GET", "/requests"))


def test_beyond_loopback_an_admin_token_is_made_and_required() -> None:
    """Bound beyond loopback, an admin token is made when none is given, and without one the
    admin API refuses connections that arrived on a non-loopback address (checked without
    binding beyond loopback: the address comes from the ASGI scope)."""
    cfg = EmulatorConfig()
    assert ensure_admin_token(cfg, "0.0.0.0") and cfg.admin_token and len(cfg.admin_token) >= 24
    assert not ensure_admin_token(cfg, "0.0.0.0")  # one is kept
    assert admin_headers(cfg) == {"Authorization": f"Bearer {cfg.admin_token}"}
    for host in ("127.0.0.1", "::1", "localhost"):
        assert not ensure_admin_token(loopback := EmulatorConfig(), host)
        assert loopback.admin_token is None
    from sonar_bulk.emulator.app import Emulator

    emulator = Emulator(EmulatorConfig())
    scope: dict[str, Any] = {
        "method": "GET",
        "server": ("192.0.2.7", 8787),
        "headers": [(b"host", b"192.0.2.7:8787")],
    }
    refusal = emulator.admin_refusal(scope)
    assert refusal is not None and refusal.status == 403
    assert "--admin-token" in refusal.body["error"]
    scope["server"], scope["headers"] = ("127.0.0.1", 8787), [(b"host", b"127.0.0.1:8787")]
    assert emulator.admin_refusal(scope) is None
    emulator.store.close()


@pytest.mark.parametrize(
    "path",
    [
        "/__emulator__/reset",
        "/%5F%5Femulator__/reset",
        "//__emulator__/reset",
        "/hooks/../__emulator__/reset",
        "/__emulator__",
    ],
)
def test_a_webhook_cannot_point_at_the_admin_api(emu: EmulatorServer, path: str) -> None:
    url = f"http://127.0.0.1:{emu.port}{path}"
    r = call(emu, "POST", "/webhooks", json={"webhook": {"url": url, "active": True}})
    assert r.status_code == 400 and "admin API" in r.json()["error"]
    hook_id = hook(emu, f"http://127.0.0.1:{emu.port}/hooks/fine")
    r = call(emu, "PUT", f"/webhooks/{hook_id}", json={"webhook": {"url": url}})
    assert r.status_code == 400 and "admin API" in r.json()["error"]
    assert call(emu, "GET", "/webhooks").json()[0]["url"].endswith("/hooks/fine")


# --- 3. bad input can't poison state ---------------------------------------------------------


def test_a_lone_surrogate_is_a_400_before_any_change(emu: EmulatorServer) -> None:
    body = b'{"phone_number": "+13105550101", "first_name": "\\ud800"}'
    r = call(emu, "POST", "/customers", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "lone surrogate" in r.json()["error"]
    r = emu.client.post(
        emu.admin_url + "/customers", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert emu.admin("GET", "/state")["customers"] == []
    assert call(emu, "GET", "/customers", params={"phone_number": PHONE}).status_code == 404
    assert emu.client.get(emu.admin_url + "/deliveries").status_code == 200


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"[" * 5000 + b"]" * 5000, "application/json"),
        (b'{"properties": ' + b'{"a": ' * 150 + b"1" + b"}" * 151, "application/json"),
        (b"properties" + b"[a]" * 150 + b"=1", "application/x-www-form-urlencoded"),
    ],
    ids=["json-5000", "json-150", "form-150"],
)
def test_deep_nesting_is_a_400(emu: EmulatorServer, content: bytes, ctype: str) -> None:
    r = call(emu, "POST", "/customers", content=content, headers={"Content-Type": ctype})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = emu.client.post(
        emu.admin_url + "/customers", content=content, headers={"Content-Type": ctype}
    )
    assert r.status_code in (400, 415)
    assert emu.admin("GET", "/state")["customers"] == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/config", {"latency_ms": "nan"}),
        ("/config", {"jitter_ms": "inf"}),
        ("/config", {"hang_seconds": 1e400}),
        ("/config", {"time_scale": "-inf"}),
        ("/config", {"rate_limit": True}),
        ("/config", {"fail_rate": 1.5}),
        ("/clock", {"advance": "nan"}),
        ("/clock", {"advance": 1e300}),
        ("/faults", {"fault": "503", "count": 1e400}),
    ],
)
def test_non_finite_settings_are_a_400_and_break_nothing(
    emu: EmulatorServer, path: str, body: dict[str, Any]
) -> None:
    before = emu.admin("GET", "/config")
    content = json.dumps(body).replace("Infinity", "1e400").encode()
    r = emu.client.post(
        emu.admin_url + path, content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert emu.admin("GET", "/config") == before
    assert call(emu, "POST", "/customers", data={"phone_number": PHONE}).status_code == 201
    assert emu.admin("GET", "/state")["clock"]


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("latency_ms", math.nan, "--latency-ms nan: expected a number from 0 to 600000"),
        ("jitter_ms", math.inf, "--jitter-ms inf: expected a number from 0 to 600000"),
        ("fail_rate", 2.0, "--fail-rate 2: expected a number from 0 to 1"),
        ("hang_seconds", -1.0, "--hang-seconds -1: expected a number from 0 to 86400"),
        ("rate_limit", math.nan, "--rate-limit nan: expected a number from 0 to 1000000"),
    ],
)
def test_non_finite_or_out_of_range_flags_are_usage_errors(
    knob: str, value: float, message: str
) -> None:
    """The command's values go through emulator_config, which names the flag; one run of the
    command itself (a subprocess with a timeout: a regression would start serving)."""
    given: dict[str, Any] = {knob: value}
    with pytest.raises(UsageError) as caught:
        emulator_config(**given)
    assert str(caught.value) == message


def test_a_non_finite_flag_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sonar_bulk", "emulator", "--port", "0", "--jitter-ms", "inf"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "sonar-bulk: error: --jitter-ms inf: expected a number from 0 to 600000\n"
    )


def test_a_rate_below_one_per_second_admits_one_request_every_1_over_rate() -> None:
    clock = FakeClock()
    with EmulatorServer(config(clock=clock, sleep=Sleeps())) as emu:
        emu.admin("POST", "/config", {"rate_limit": 0.5})
        assert call(emu, "GET", "/webhooks").status_code == 200
        limited = call(emu, "GET", "/webhooks")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
        clock.advance(2)
        assert [call(emu, "GET", "/webhooks").status_code for _ in range(2)] == [200, 429]


def test_bodies_are_capped_and_read_only_with_a_credential() -> None:
    """The token is checked from headers before the body is read: a stranger's body is never
    read (401, connection closed); a body over --max-body is a 413, known from Content-Length
    before reading or while reading a chunked one; a body that does not arrive in time a 408."""
    with EmulatorServer(config(max_body=1000, body_timeout=0.2)) as emu:
        port = emu.port
        # a stranger announces 50 MB and sends none of it: answered at once, not waited for
        r = raw_http(
            port,
            request_bytes("POST", "/api/v1/customers", port, {"Content-Length": "50000000"}),
        )
        assert r.status == 401 and r.headers["connection"] == "close"
        r = raw_http(
            port,
            request_bytes(
                "POST", "/api/v1/customers", port, {"Token": V, "Content-Length": "1001"}
            ),
        )
        assert r.status == 413 and "1000 bytes" in json.loads(r.body)["error"]
        chunked = b"".join(b"%x\r\n%s\r\n" % (600, b"a" * 600) for _ in range(2)) + b"0\r\n\r\n"
        r = raw_http(
            port,
            request_bytes(
                "POST",
                "/api/v1/customers",
                port,
                {"Token": V, "Transfer-Encoding": "chunked"},
                chunked,
            ),
        )
        assert r.status == 413
        r = raw_http(
            port,
            request_bytes(
                "POST", "/api/v1/customers", port, {"Token": V, "Content-Length": "100"}, b"x=1"
            ),
        )
        assert r.status == 408 and r.headers["connection"] == "close"
        r = raw_http(
            port,
            request_bytes(
                "POST",
                "/__emulator__/customers",
                port,
                {"Content-Type": "application/json", "Content-Length": "5000"},
            ),
        )
        assert r.status == 413
        ok = call(emu, "POST", "/customers", data={"phone_number": PHONE, "first_name": "A" * 900})
        assert ok.status_code == 201
        assert [e["status"] for e in emu.admin("GET", "/requests")] == [401, 413, 413, 408, 201]
    assert emulator_config(max_body=5).max_body == 5


def test_absurd_phone_numbers_are_refused_unparsed_and_uncached(emu: EmulatorServer) -> None:
    from sonar_bulk.emulator.state import _phone_key

    before = _phone_key.cache_info().currsize
    for i in range(20):
        phone = f"+1310{i:02d}" + "5" * 100_000
        r = call(emu, "POST", "/customers", data={"phone_number": phone})
        assert (r.status_code, r.json()) == (400, {"error": "Invalid Phone Number"})
    info = _phone_key.cache_info()
    assert info.currsize <= before
    assert info.maxsize is not None and info.maxsize <= 16384


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        ({"url": "http://127.0.0.1:9/h", "http_method": "FOO BAR"}, "[http_method] must be one of"),
        ({"url": "file:///etc/passwd"}, "must be an http:// or https:// URL"),
        ({"url": "http://127.0.0.1:9/h\r\nX-Evil: 1"}, "without spaces"),
        ({"url": "http://[::1"}, "is not a valid URL"),
        ({"url": "http://127.0.0.1:99999/"}, "is not a valid URL"),
        ({"url": "http:///nohost"}, "with a host"),
    ],
)
def test_webhook_url_and_method_are_checked(
    emu: EmulatorServer, webhook: dict[str, str], message: str
) -> None:
    r = call(emu, "POST", "/webhooks", json={"webhook": webhook})
    assert r.status_code == 400 and message in r.json()["error"]
    hook_id = hook(emu, "http://127.0.0.1:9/fine")
    r = call(emu, "PUT", f"/webhooks/{hook_id}", json={"webhook": webhook})
    assert r.status_code == 400 and message in r.json()["error"]
    (kept,) = call(emu, "GET", "/webhooks").json()
    assert (kept["url"], kept["http_method"]) == ("http://127.0.0.1:9/fine", "POST")


# --- 4. secrets --------------------------------------------------------------------------------


def test_mask_shows_little_of_a_secret() -> None:
    assert mask("emulator-token-long") == "emu…ng"
    assert mask("SECRET") == "S…T"
    assert mask("abc") == "…"


def test_a_percent_encoded_token_key_is_redacted_after_decoding(emu: EmulatorServer) -> None:
    """`?%74oken=` is a token (servers decode the key): accepted, and redacted in the log
    whether or not its value is a known token."""
    r = raw_http(emu.port, request_bytes("GET", f"/api/v1/webhooks?%74oken={V}", emu.port, {}))
    assert r.status == 200
    wrong = "not-a-known-token-zz"
    r = raw_http(
        emu.port, request_bytes("GET", f"/api/v1/webhooks?%74%6Fken={wrong}", emu.port, {})
    )
    assert r.status == 401
    body = f"phone_number=%2B13105550101&note=x%26%74oken%3D{wrong}".encode()
    r = raw_http(
        emu.port,
        request_bytes(
            "POST",
            "/api/v1/customers",
            emu.port,
            {
                "Token": V,
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Length": str(len(body)),
            },
            body,
        ),
    )
    assert r.status == 201
    log = emu.admin("GET", "/requests")
    text = json.dumps(log)
    assert V not in text and wrong not in text
    assert log[1]["path"] == "/api/v1/webhooks?token=[REDACTED]"
    assert log[2]["body"] == "phone_number=+13105550101&note=x&token=[REDACTED]"
    assert redact("/x?%74oken=abc&y=%2B1") == "/x?token=[REDACTED]&y=+1"
    assert redact("x=%56ALID_TOKEN", secret_forms(V)) == "x=[REDACTED]"
    assert redact("y=%2B1", secret_forms("s3cret")) == "y=%2B1"  # nothing to hide: as sent


# --- 5. state file -----------------------------------------------------------------------------


def test_campaigns_given_at_start_join_a_state_file(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with EmulatorServer(config(state_file=str(db))) as emu:
        call(emu, "POST", "/customers", data={"phone_number": PHONE})
    with EmulatorServer(config(state_file=str(db), campaigns={"promo": "New!"})) as emu:
        r = call(emu, "POST", "/campaigns", data={"to": PHONE, "campaign_id": "promo"})
        assert r.status_code == 202
        campaigns = emu.admin("GET", "/state")["campaigns"]
        assert campaigns["promo"] == "New!" and "fall_sale_2026" in campaigns
    with EmulatorServer(config(state_file=str(db))) as emu:
        assert "promo" in emu.admin("GET", "/state")["campaigns"]


def state_file_kinds(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    text = tmp_path / "notes.db"
    text.write_text("these are not the rows you are looking for\n" * 100)
    yield "text", text
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    yield "other sqlite", other
    rows = tmp_path / "rows.db"
    Store(state_file=rows).close()
    with sqlite3.connect(rows) as db:
        db.execute("INSERT INTO kv VALUES ('customers', '+13105550101', '{not json')")
    yield "bad row", rows
    damaged = tmp_path / "damaged.db"
    store = Store(state_file=damaged)
    for i in range(300):
        store.add_campaign(f"c{i}", "x" * 200)
    store.close()
    data = bytearray(damaged.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # a page of the table overwritten
    damaged.write_bytes(bytes(data))
    yield "damaged", damaged


def test_a_corrupt_state_file_is_a_usage_error(tmp_path: Path) -> None:
    """Not SQLite, someone else's database (left untouched), a row that isn't ours, a damaged
    page: one line, exit 2, 'not an emulator state file'."""
    for kind, path in state_file_kinds(tmp_path):
        before = path.read_bytes()
        with pytest.raises(InputError, match="not an emulator state file"):
            Store(state_file=path)
        if kind in ("text", "other sqlite"):
            assert path.read_bytes() == before, kind
        if kind not in ("bad row", "damaged"):  # these two were exit 70; one process each
            continue
        done = subprocess.run(
            [sys.executable, "-m", "sonar_bulk", "emulator", "--port", "0", "--state", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (kind, done.stderr)
        assert done.stderr.count("\n") == 1, (kind, done.stderr)
        assert done.stderr.startswith(f"sonar-bulk: error: --state {path}: not an emulator")


def test_pending_retries_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    """A delivery waiting for its retry is kept in the state file and retried, with the same
    uuid, by the next emulator on that file."""
    db = tmp_path / "state.db"
    receiver.fail_first["restart"] = 1
    slow = Knobs(time_scale=1000)  # the retry waits 10,000 s: not before the restart
    with EmulatorServer(config(state_file=str(db), knobs=slow)) as emu:
        hook(emu, receiver.url("restart"), ("customer_created",))
        call(emu, "POST", "/customers", data={"phone_number": PHONE})
        wait_for(lambda: emu.admin("GET", "/queue")["webhooks"][0]["waiting_retry"] == 1)
    with sqlite3.connect(db) as conn:
        ((value,),) = conn.execute("SELECT value FROM kv WHERE collection = 'deliveries'")
        record = json.loads(value)
        record["due"] = 0  # due now
        conn.execute(
            "UPDATE kv SET value = ? WHERE collection = 'deliveries'", (json.dumps(record),)
        )
    with EmulatorServer(config(state_file=str(db))) as emu:
        got = wait_for(lambda: len(receiver.of("restart")) >= 2 and receiver.of("restart"))
        assert got[0]["body"]["uuid"] == got[1]["body"]["uuid"] == record["uuid"]
        (delivery,) = wait_for(
            lambda: [d for d in emu.admin("GET", "/deliveries") if d["state"] == "delivered"]
        )
        assert [a["status"] for a in delivery["attempts"]] == [500, 200]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM kv WHERE collection = 'deliveries'").fetchall() == []


# --- 6. honest logs for fault tests ------------------------------------------------------------


def test_each_logged_request_says_whether_its_side_effect_happened(emu: EmulatorServer) -> None:
    from sonar_bulk.emulator.app import format_request

    for n, fault in enumerate(("500_after", "500_before", "503", "reset_after")):
        emu.admin("POST", "/faults", {"fault": fault, "path": "/api/v1/customers"})
        raises = pytest.raises(httpx.TransportError)
        with raises if fault == "reset_after" else contextlib.nullcontext():
            call(emu, "POST", "/customers", data={"phone_number": f"+1310555010{n}"})
    call(emu, "POST", "/customers", data={"phone_number": "111"})
    call(emu, "GET", "/customers", params={"phone_number": PHONE})
    emu.admin("POST", "/faults", {"fault": "500_after", "path": "/api/v1/webhooks"})
    call(emu, "GET", "/webhooks")
    log = emu.admin("GET", "/requests")
    assert [(e["fault"], e["side_effect"]) for e in log] == [
        ("500_after", "applied"),
        ("500_before", "not_applied"),
        ("503", "not_applied"),
        ("reset_after", "applied"),
        (None, "not_applied"),  # 400 Invalid Phone Number
        (None, "none"),  # a read
        ("500_after", "none"),
    ]
    assert format_request(log[0]).endswith(" ms (fault: 500_after; side effect: applied)")
    assert [c["phone_number"] for c in emu.admin("GET", "/state")["customers"]] == [
        "+13105550100",
        "+13105550103",
    ]


# --- 7. small protocol points ------------------------------------------------------------------


def test_every_answer_has_a_request_id_and_405_has_allow(emu: EmulatorServer) -> None:
    answers = {
        404: call(emu, "GET", "/nothing"),
        405: call(emu, "PATCH", "/customers"),
    }
    assert call(emu, "PUT", "/messages").headers["allow"] == "POST"
    emu.admin("POST", "/faults", {"fault": "500_before", "path": "/api/v1/webhooks"})
    answers[500] = call(emu, "GET", "/webhooks")
    emu.admin("POST", "/faults", {"fault": "503", "path": "/api/v1/webhooks"})
    answers[503] = call(emu, "GET", "/webhooks")
    emu.admin("POST", "/config", {"rate_limit": 1, "burst": 1})
    call(emu, "GET", "/webhooks")
    answers[429] = call(emu, "GET", "/webhooks")
    for status, r in answers.items():
        assert r.status_code == status
        assert len(r.headers["x-request-id"]) == 36, status
    assert answers[405].headers["allow"] == "GET, HEAD, POST"


def test_a_restart_on_the_same_port_right_after_a_client(receiver: Receiver) -> None:
    """The server closes its kept-alive connections as it stops (leaving them in TIME_WAIT);
    a new emulator binds the same port at once. On the way, the command (uvloop, unlike the
    threaded test servers) delivers a webhook."""
    proc, lines, port = run_emulator("--port", "0")
    try:
        with httpx.Client(trust_env=False, timeout=10) as client:
            r = client.post(
                f"http://127.0.0.1:{port}/api/v1/webhooks",
                json={
                    "webhook": {
                        "url": receiver.url("foreground"),
                        "active": True,
                        "settings": {"customer_created": True},
                    }
                },
                headers={"Token": "emulator-token"},
            )
            assert r.status_code == 200
            r = client.post(
                f"http://127.0.0.1:{port}/api/v1/customers",
                data={"phone_number": PHONE},
                headers={"Token": "emulator-token"},
            )
            assert r.status_code == 201
            (got,) = wait_for(lambda: receiver.of("foreground"))
            assert got["body"]["action"] == "customer_created"
            code, _ = stop(proc, lines)
    finally:
        if proc.poll() is None:
            stop(proc, lines)
    assert code == 0
    again, again_lines, again_port = run_emulator("--port", str(port))
    try:
        with httpx.Client(trust_env=False, timeout=10) as client:  # serving, not starting
            assert client.get(f"http://127.0.0.1:{port}/api/v1/webhooks").status_code == 401
    finally:
        code, rest = stop(again, again_lines)
    assert again_port == port and code == 0 and "emulator stopped" in rest


# --- Ctrl-C while a request hangs; --help; defaults --------------------------------------------


def test_ctrl_c_while_a_request_hangs_stops_quietly() -> None:
    """SIGINT while a hang fault holds a request: the hanging connection is reset at once
    and the emulator stops with its usual line, exit 0, no traceback. (On the way: with
    --admin-token the admin API wants it, and the banner shows both tokens masked.)"""
    admin = "adm-token-secret-99"
    proc, lines, port = run_emulator(
        "--port", "0", "--token", "tok-Hang-secret-1", "--admin-token", admin
    )
    base = f"http://127.0.0.1:{port}"
    outcome: list[BaseException | int] = []
    try:
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.get(base + "/__emulator__/state").status_code == 401
            client.headers["Authorization"] = f"Bearer {admin}"
            r = client.post(
                base + "/__emulator__/faults",
                json={"fault": "hang_after", "path": "/api/v1/customers"},
            )
            assert r.status_code == 200

            def hang() -> None:
                try:
                    outcome.append(
                        httpx.post(
                            base + "/api/v1/customers",
                            data={"phone_number": PHONE},
                            headers={"Token": "tok-Hang-secret-1"},
                            timeout=10,
                            trust_env=False,
                        ).status_code
                    )
                except httpx.HTTPError as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=hang, daemon=True)
            thread.start()
            wait_for(lambda: client.get(base + "/__emulator__/state").json()["customers"])
    finally:
        code, rest = stop(proc, lines)
    thread.join(timeout=10)
    assert code == 0 and rest.strip().endswith("emulator stopped"), rest
    assert "  token: tok…-1 (valid)\n" in rest and "  admin token: adm…99\n" in rest
    for noise in ("Traceback", "Exception in ASGI", "CancelledError", "ERROR", "tok-Hang", admin):
        assert noise not in rest, rest
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)


def test_emulator_help_shows_defaults_and_the_hang_outlasts_the_client() -> None:
    assert Knobs().hang_seconds >= 35
    output = CliRunner().invoke(cli, ["emulator", "--help"]).output
    text = " ".join(output.split("Options:", 1)[1].split())
    assert "--host TEXT Address to listen on." in text
    for flag in ("--rate-limit", "--latency-ms", "--jitter-ms", "--fail-rate"):
        own = text.split(flag + " ", 1)[1].split(" --", 1)[0]  # up to the next option
        assert "[default: 0]" in own, flag
    assert "[default: 40]" in text and "30 s timeout" in text
    assert "[default: (random each run)]" in text
    assert "--admin-token T" in text and "--max-body BYTES" in text
    assert "--webhook-queue N" in text


def test_the_documented_banner_is_real_output() -> None:
    """The emulator page's `sonar-bulk emulator` session shows what the command prints (on
    another port), masked tokens included."""
    from .conftest import ROOT

    page = (ROOT / "sonar_bulk" / "docs" / "emulator.md").read_text(encoding="utf-8")
    block = page.split("$ sonar-bulk emulator ", 1)[1].split("\n$ ", 1)[0]
    command, *shown = block.splitlines()
    args = command.split()
    args[args.index("--port") + 1] = "0"
    proc, lines, port = run_emulator(*args)
    try:
        printed = [lines.next() for _ in shown[1:]]
    finally:
        stop(proc, lines)
    assert [line.rstrip("\n") for line in printed] == shown[1:]
    assert shown[0] == (
        "Sonar emulator: http://127.0.0.1:8787/api/v1  "
        "(admin: http://127.0.0.1:8787/__emulator__/state)"
    )


_SIGNAL_AT_THE_BANNER = """
import os, signal, sys
from sonar_bulk.emulator.app import EmulatorConfig
from sonar_bulk.emulator.server import serve_forever

def banner(url, emulator):
    print(url, flush=True)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))

serve_forever(EmulatorConfig(), "127.0.0.1", 0, on_listening=banner)
print("stopped", flush=True)
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_right_after_the_banner_stops_the_emulator(name: str) -> None:
    """A Ctrl-C or SIGTERM that comes as the banner is printed, before uvicorn takes the
    signals, still stops the emulator cleanly (it once went to Python's default handler, whose
    KeyboardInterrupt could be swallowed while asyncio started, and the emulator served on)."""
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT_THE_BANNER, name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    url, stopped = proc.stdout.splitlines()
    assert url.startswith("http://127.0.0.1:") and stopped == "stopped"
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr


@pytest.mark.parametrize("error", [OSError(9, "Bad file descriptor"), ValueError("negative fd")])
def test_a_reset_of_a_connection_the_client_closed_is_no_error(error: Exception) -> None:
    """A fault meant for a connection the client already closed (its own timeout): the
    socket is gone, and uvloop's stand-in for it raises ValueError where Python's raises an
    OSError. The reset still aborts the transport, and nothing is raised (uvicorn would print
    a traceback). A narrow corner: the closed socket is a stand-in."""
    from sonar_bulk.emulator.app import _reset_connection

    class Gone:
        def setsockopt(self, *args: object) -> None:
            raise error

    class Transport:
        aborted = False

        def get_extra_info(self, name: str) -> object:
            return Gone() if name == "socket" else None

        def abort(self) -> None:
            self.aborted = True

    class Cycle:
        def __init__(self) -> None:
            self.transport = Transport()
            self.disconnected = False

        async def send(self, message: object) -> None:
            return None

    cycle = Cycle()
    _reset_connection(cycle.send)
    assert cycle.transport.aborted and cycle.disconnected
