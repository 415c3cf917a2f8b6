"""Helpers for emulator tests: a webhook receiver served over real sockets, a clock and a
sleeper to inject, and a line reader whose every read has a timeout."""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sonar_bulk.emulator.app import Knobs
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.serving import ThreadedServer


class Receiver:
    """Records every webhook delivery (with the port it came from, one per connection);
    ``fail_first[uuid-less path] = n`` answers 500 to the first n deliveries on that path."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first: dict[str, int] = {}
        self.lock = threading.Lock()

        async def hook(request: Request) -> Response:
            name = request.path_params["name"]
            body = await request.json() if await request.body() else None
            with self.lock:
                self.received.append(
                    {
                        "name": name,
                        "method": request.method,
                        "body": body,
                        "content_type": request.headers.get("content-type"),
                        "client_port": request.client.port if request.client else None,
                    }
                )
                left = self.fail_first.get(name, 0)
                if left:
                    self.fail_first[name] = left - 1
                    return JSONResponse({"no": "thanks"}, status_code=500)
            return JSONResponse({"ok": True})

        app = Starlette(
            routes=[Route("/hooks/{name}", hook, methods=["POST", "PUT", "GET", "PATCH"])]
        )
        self.server = ThreadedServer(app)

    def url(self, name: str) -> str:
        return f"{self.server.url}/hooks/{name}"

    def of(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["name"] == name]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeClock:
    """Monotonic seconds that move only when the test says so (the rate limiter's clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """An injected sleeper: records every delay the emulator asks for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class Lines:
    """The lines of a text stream, read by a daemon thread, so no read can block forever."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line)
        finally:
            self._queue.put(None)

    def next(self, timeout: float = 10.0) -> str:
        """The next line; AssertionError when none comes within ``timeout`` or the stream ended."""
        if self._ended:
            raise AssertionError("the stream has ended")
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s") from None
        if line is None:
            self._ended = True
            raise AssertionError("the stream ended")
        return line

    def until(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first line for which ``predicate`` holds, skipping the others."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.0, deadline - time.monotonic()))
            if predicate(line):
                return line

    def rest(self, timeout: float = 10.0) -> str:
        """Everything up to the end of the stream (which must come within ``timeout``)."""
        deadline = time.monotonic() + timeout
        out: list[str] = []
        while not self._ended:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the stream did not end within {timeout} s") from None
            if line is None:
                self._ended = True
            else:
                out.append(line)
        return "".join(out)


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> RawResponse:
    """Send ``data`` (a whole or partial HTTP request, as bytes) to 127.0.0.1:``port`` over a
    fresh socket and read one answer; every read has ``timeout``. For requests httpx would
    normalize or refuse to send (an encoded query key, a body that never comes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before an answer: {buffer!r}")
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body)


def stop(proc: subprocess.Popen[str], lines: Lines) -> tuple[int, str]:
    """SIGINT a foreground emulator, then its exit code and the rest of its stderr (killed,
    and the test failed, if it does not stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        raise
    rest = lines.rest()
    assert proc.stderr is not None
    proc.stderr.close()
    return code, rest


def fresh(server: EmulatorServer) -> Iterator[EmulatorServer]:
    """A shared emulator reset, with default knobs and fast webhook retries, for one test
    (the body of an ``emu`` fixture)."""
    server.admin("POST", "/reset")
    server.emulator.knobs.__dict__.update(Knobs().__dict__)
    server.admin("POST", "/config", {"time_scale": 0.001, "hang_seconds": 1})
    yield server
    server.admin("POST", "/reset")
    server.emulator.knobs.__dict__.update(Knobs().__dict__)


def signal_when(
    proc: subprocess.Popen[str], ready: Callable[[], Any], sig: int, timeout: float = 30
) -> tuple[str, float]:
    """Send ``sig`` to ``proc`` once ``ready()`` is true; its stderr, and the seconds it took
    to end after the signal (it is killed if it outlives ``timeout``)."""
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout)
        assert proc.poll() is None, "the run ended before the signal"
        started = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=timeout)
        return stderr, time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
