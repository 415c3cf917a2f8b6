"""The web page served for tests: the real app over a real socket, its runs going to an
emulator over loopback."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from sonar_bulk.api.endpoints import EMULATOR_TOKEN
from sonar_bulk.connection import Connection
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.serving import ThreadedServer, listen
from sonar_bulk.web.app import COOKIE, create_app
from sonar_bulk.web.session import Session
from tests.emulator_helpers import Lines


@dataclass
class Page:
    """A running page: its base URL, the launch URL with the key, its session, the
    emulator behind it, and an HTTP client already let in (the cookie set)."""

    base: str
    launch: str
    key: str
    session: Session
    emulator: EmulatorServer
    client: httpx.Client


@contextlib.contextmanager
def serve_page(emulator: EmulatorServer) -> Iterator[Page]:
    conn = Connection(emulator.api_url, EMULATOR_TOKEN)
    session = Session(lambda: contextlib.nullcontext(conn))
    key = secrets.token_urlsafe(24)
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = ThreadedServer(
        create_app(session, key, port, "the test emulator"), "127.0.0.1", port, sock=sock
    )
    server.start()
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, trust_env=False, timeout=30)
    client.cookies.set(f"{COOKIE}_{port}", key)
    try:
        yield Page(base, f"{base}/?key={key}", key, session, emulator, client)
    finally:
        session.shutdown(wait=True)
        client.close()
        server.stop()


@dataclass
class Process:
    """``sonar-bulk --emulate ui`` as a process: its stderr lines, the page's address and
    key, and the admin address of its emulator."""

    proc: subprocess.Popen[str]
    lines: Lines
    base: str
    key: str
    emulator: str

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base, trust_env=False, timeout=30)
        client.cookies.set(f"{COOKIE}_{self.base.rsplit(':', 1)[1]}", self.key)
        return client

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


@contextlib.contextmanager
def ui_process() -> Iterator[Process]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sonar_bulk", "--emulate", "ui", "--no-open", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = Lines(proc.stderr)
        api_line = lines.until(lambda text: "using the emulator at" in text, 30)
        emulator = api_line.split(" at ", 1)[1].split("/api/", 1)[0]
        url = lines.until(lambda text: "sonar-bulk ui at" in text, 30).split(" at ", 1)[1]
        base, key = url.strip().split("/?key=")
        yield Process(proc, lines, base, key, emulator)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


#: The choices a plan is made with, as a run repeats them.
PLAN_CHOICES = ("skip_invalid", "rate", "quiet_hours", "quiet_policy", "resume", "resend")


def start_run(client: httpx.Client, body: dict[str, object]) -> httpx.Response:
    """A run as the page starts one: its plan first, made with the run's choices (a run
    follows its plan), then the run itself; the run's answer."""
    from tests.emulator_helpers import wait_for

    planned = client.post("/api/plan", json={k: v for k, v in body.items() if k in PLAN_CHOICES})
    if planned.status_code == 200:
        wait_for(lambda: client.get("/api/progress").json()["state"] in ("done", "failed"), 30)
    return client.post("/api/run", json=body)
