"""The client's protocol corners on its real transport (httpx over aiohttp), over loopback:
the emulator's faults, and a raw asyncio server for answers no server would give on purpose.

Whether a request may have been written decides a send's fate: a failure to connect is
``Unreachable`` (nothing sent); anything after the connection was made is ``OutcomeUnknown``
for a send and ``Retryable`` for an operation safe to repeat. The token never appears in an
error, and the transport never sends a request twice by itself.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from sonar_bulk.api.client import Answer, SonarClient
from sonar_bulk.api.endpoints import EMULATOR_TOKEN
from sonar_bulk.api.transport import Transport
from sonar_bulk.emulator.app import EmulatorConfig
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.errors import ApiError, OutcomeUnknown, Retryable, Unreachable
from tests.emulator_helpers import fresh

TOKEN = "s3cret+tok/en-20"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(tokens={TOKEN: "valid", EMULATOR_TOKEN: "valid"})) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> Iterator[EmulatorServer]:
    yield from fresh(server)


def client(base: str, **kwargs: Any) -> SonarClient:
    return SonarClient(base, token=TOKEN, **kwargs)


def error_of(make: Callable[[SonarClient], Awaitable[Any]], base: str, **kwargs: Any) -> ApiError:
    """The ApiError one call raises (the test fails if it succeeds)."""

    async def main() -> ApiError:
        async with client(base, **kwargs) as c:
            try:
                await make(c)
            except ApiError as exc:
                return exc
        raise AssertionError("the call succeeded")

    error = asyncio.run(main())
    assert TOKEN not in str(error) and "s3cret" not in repr(error.__dict__)
    return error


def send(c: SonarClient) -> Awaitable[Any]:
    return c.send_message("+13105550101", "hello")


def upsert(c: SonarClient) -> Awaitable[Any]:
    return c.upsert_customer("+13105550101", first_name="Ana")


def posts(emu: EmulatorServer, path: str) -> list[dict[str, Any]]:
    return [e for e in emu.admin("GET", "/requests") if e["path"] == path]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the emulator's faults ------------------------------------------------------------------


def test_a_refused_connection_is_unreachable_and_names_the_url() -> None:
    port = closed_port()
    error = error_of(send, f"http://127.0.0.1:{port}/api/v1")
    assert isinstance(error, Unreachable) and error.not_sent
    assert str(error) == (
        f"could not reach the API at http://127.0.0.1:{port}/api/v1/messages: Connection refused"
    )


@pytest.mark.parametrize("fault", ["reset_before", "reset_after"])
def test_a_reset_after_the_request_leaves_a_send_unknown_and_an_upsert_retryable(
    emu: EmulatorServer, fault: str
) -> None:
    emu.admin("POST", "/faults", {"fault": fault, "path": "/api/v1/messages", "count": 1})
    emu.admin("POST", "/faults", {"fault": fault, "path": "/api/v1/customers", "count": 1})
    sent = error_of(send, emu.api_url)
    assert type(sent) is OutcomeUnknown, sent
    assert "may have been processed" in str(sent)
    upserted = error_of(upsert, emu.api_url)
    assert type(upserted) is Retryable and not upserted.not_sent, upserted
    # one request each: the transport did not try again
    assert len(posts(emu, "/api/v1/messages")) == 1
    assert len(posts(emu, "/api/v1/customers")) == 1


def test_a_dropped_put_or_delete_is_not_sent_again_by_aiohttp(emu: EmulatorServer) -> None:
    """aiohttp repeats an idempotent method once on a dropped kept-alive connection; the
    client turns that off: a raw call is read as a send."""
    for method in ("PUT", "DELETE"):
        emu.admin("POST", "/faults", {"fault": "reset_after", "method": method, "count": 1})

    async def main() -> list[ApiError]:
        found: list[ApiError] = []
        async with client(emu.api_url) as c:
            await c.request("GET", "/webhooks")  # a kept-alive connection to drop
            for method in ("PUT", "DELETE"):
                try:
                    await c.request(method, "/webhooks/1")
                except ApiError as exc:
                    found.append(exc)
        return found

    errors = asyncio.run(main())
    assert [type(e) for e in errors] == [OutcomeUnknown, OutcomeUnknown]
    log = [e for e in emu.admin("GET", "/requests") if e["path"] == "/api/v1/webhooks/1"]
    assert [e["method"] for e in log] == ["PUT", "DELETE"]


def test_no_answer_in_time_is_unknown_for_a_send(emu: EmulatorServer) -> None:
    emu.admin("POST", "/config", {"hang_seconds": 5})
    emu.admin("POST", "/faults", {"fault": "hang_after", "path": "/api/v1/messages", "count": 1})
    emu.admin("POST", "/faults", {"fault": "hang_after", "path": "/api/v1/customers", "count": 1})
    error = error_of(send, emu.api_url, timeout=0.3)
    assert type(error) is OutcomeUnknown
    assert str(error) == (
        f"no answer from {emu.api_url}/messages within 0.3 s (ReadTimeout); the request may "
        "have been processed"
    )
    assert type(error_of(upsert, emu.api_url, timeout=0.3)) is Retryable


# -- answers no server gives on purpose (a raw server on loopback) ----------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
    return head + body


def raw_error(
    answer: Handler, make: Callable[[SonarClient], Awaitable[Any]], **kwargs: Any
) -> tuple[ApiError, int]:
    """The error ``make`` raises against a server that runs ``answer`` on each connection,
    and how many requests that server read."""
    requests = 0

    async def main() -> ApiError:
        nonlocal requests

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal requests
            try:
                await read_request(reader)
                requests += 1
                await answer(reader, writer)
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            async with client(f"http://127.0.0.1:{port}/api/v1", **kwargs) as c:
                try:
                    await make(c)
                except ApiError as exc:
                    return exc
            raise AssertionError("the call succeeded")
        finally:
            srv.close()
            await srv.wait_closed()

    error = asyncio.run(main())
    assert TOKEN not in str(error)
    return error, requests


def answering(data: bytes) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return answer


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        ("a bad status line", b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"),
        ("a body cut short", b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id": 1'),
        ("nothing", b""),
    ],
)
def test_an_answer_that_is_not_one_leaves_a_send_unknown(what: str, data: bytes) -> None:
    error, requests = raw_error(answering(data), send)
    assert type(error) is OutcomeUnknown, (what, error)
    assert "may have been processed" in str(error)
    assert requests == 1
    error, requests = raw_error(answering(data), upsert)
    assert type(error) is Retryable and not error.not_sent, (what, error)
    assert requests == 1


def test_an_undecodable_body_is_unknown_for_a_send_and_retryable_otherwise() -> None:
    garbage = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 9\r\n\r\nnot gzip!"
    )
    error, _ = raw_error(answering(garbage), send)
    assert type(error) is OutcomeUnknown and "an unreadable answer" in str(error)
    error, _ = raw_error(answering(garbage), upsert)
    assert type(error) is Retryable and "an unreadable answer" in str(error)


def test_a_body_that_stops_coming_is_a_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(3)

    error, _ = raw_error(stall, send, timeout=0.3)
    assert type(error) is OutcomeUnknown and "within 0.3 s (ReadTimeout)" in str(error)


def test_an_answer_is_read_whole_and_the_connections_are_capped() -> None:
    """One session for the run: 24 calls at once over at most ``connections`` connections,
    each kept alive for the next call."""
    connections = 0
    busy = 0
    most = 0

    async def main() -> list[int]:
        nonlocal connections

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections, busy, most
            connections += 1
            try:
                while not reader.at_eof():
                    try:
                        await read_request(reader)
                    except asyncio.IncompleteReadError:
                        return
                    busy += 1
                    most = max(most, busy)
                    await asyncio.sleep(0.01)
                    busy -= 1
                    body = b'{"id": 1}'
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            async with client(f"http://127.0.0.1:{port}/api/v1", connections=3) as c:
                answers = await asyncio.gather(*(upsert(c) for _ in range(24)))
                return [a.status for a in answers]
        finally:
            srv.close()
            await srv.wait_closed()

    statuses = asyncio.run(main())
    assert statuses == [201] * 24
    assert connections == 3 and most == 3


class ThroughHttpx(httpx.AsyncBaseTransport):
    """The run's transport reached the way httpx reaches a transport (an ``httpx.Request``
    in, an ``httpx.Response`` out): the client's other way in."""

    def __init__(self) -> None:
        self.inner = Transport(4)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(
    ("what", "data", "body"),
    [
        (
            "gzip JSON, a reason of its own",
            b"HTTP/1.1 201 Made It\r\nContent-Type: application/json\r\nContent-Encoding: gzip"
            b"\r\nX-Seen: 1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(gzip.compress(b'{"id": 7}')), gzip.compress(b'{"id": 7}')),
            {"id": 7},
        ),
        (
            "a page in Latin-1",
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
            b"Content-Length: 15\r\n\r\n<p>caf\xe9 off</p>",
            "<p>café off</p>",
        ),
        (
            "a gzip page in Latin-1",
            b"HTTP/1.1 503 Busy\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(gzip.compress(b"<p>caf\xe9</p>")), gzip.compress(b"<p>caf\xe9</p>")),
            "<p>café</p>",
        ),
        (
            "JSON, no reason",
            b"HTTP/1.1 200 \r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            {},
        ),
    ],
)
def test_both_ways_in_read_an_answer_alike(what: str, data: bytes, body: Any) -> None:
    """The client calls its own transport without httpx's request and response objects
    (:meth:`Transport.exchange`); through httpx's interface the same answer reads the same:
    decoded, its reason phrase, its headers."""

    async def main() -> list[Answer]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await read_request(reader)
                writer.write(data)
                await writer.drain()
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        answers = []
        try:
            for transport in (None, ThroughHttpx()):
                async with client(f"http://127.0.0.1:{port}/api/v1", transport=transport) as c:
                    assert (c._own is None) == (transport is not None)
                    answers.append(await c.request("POST", "/customers", params={"a": "b"}))
        finally:
            srv.close()
            await srv.wait_closed()
        return answers

    own, other = asyncio.run(main())
    assert own.body == other.body == body, what
    assert (own.status, own.reason) == (other.status, other.reason)
    assert own.reason == {201: "Made It", 502: "Bad Gateway", 503: "Busy", 200: "OK"}[own.status]
    assert dict(own.headers) == dict(other.headers)
