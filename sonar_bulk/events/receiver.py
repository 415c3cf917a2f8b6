"""The webhook receiver: a real HTTP server (Starlette on uvicorn, as the emulator) that takes
Sonar's deliveries and answers 2xx only once each is durably in the event store.

- Only ``/<secret>`` is served: any other path is 404, so a scanner finding the port learns
  nothing and stores nothing. The secret is compared in constant time and never logged.
- A body over 1 MiB is 413 (``Content-Length`` checked first, then while reading); a body that
  is not a JSON object is 400 and noted (size and reason, never its content).
- Storing goes through one writer thread that commits whatever has arrived as one
  transaction (group commit): 8 senders cost one fsync, not eight. A delivery waits for its
  commit; if the store fails, the answer is 503 and Sonar delivers it again later.
- Nothing here keeps a per-event structure: memory stays flat however many events come.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from sonar_bulk.events.store import EventStore, Incoming

MAX_BODY = 1024 * 1024
#: Deliveries committed in one transaction at most.
BATCH = 512
#: Connections open at once at most (each may buffer a body of up to 1 MiB), and how long a
#: connection may take to send a whole request.
MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 30.0
METHODS = ("POST", "PUT", "PATCH")
logger = logging.getLogger("sonar_bulk.receiver")


@dataclass
class Counters:
    """What the receiver has taken so far (read by progress lines; written by the writer)."""

    deliveries: int = 0  # acknowledged deliveries (new events plus repeats)
    events: int = 0  # new events
    repeats: int = 0  # repeated deliveries of an event already stored
    rejected: int = 0  # 400 and 413 answers
    failed: int = 0  # 503: the store could not take a delivery


_Job = tuple[Incoming, asyncio.AbstractEventLoop, "asyncio.Future[bool]"]


class Writer:
    """One thread that owns a store connection and commits deliveries in batches."""

    def __init__(self, path: Path, counters: Counters) -> None:
        self.path = path
        self.counters = counters
        self.queue: queue.SimpleQueue[_Job | tuple[str, int, int] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="sonar-bulk-writer", daemon=True)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._window = 0.0
        self._told = self._muted = 0

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error

    async def put(self, item: Incoming) -> bool:
        """Store one delivery; True when its event is new. Returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self.queue.put((item, loop, future))
        return await future

    def reject(self, reason: str, status: int, size: int) -> None:
        """Note a refused delivery (kept in the store, told in the log at most a few times
        every 10 s: a flood of garbage must not flood the terminal)."""
        self.counters.rejected += 1
        self.queue.put((reason, status, size))
        now = time.monotonic()
        if now - self._window > 10:
            if self._muted:
                logger.warning("... and %d more rejected deliveries", self._muted)
            self._window, self._told, self._muted = now, 0, 0
        if self._told < 5:
            self._told += 1
            logger.warning("rejected a delivery of %d bytes: %s", size, reason)
        else:
            self._muted += 1

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        try:
            store = EventStore(self.path)
        except BaseException as exc:  # told to start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                first = self.queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self.queue.put(None)  # end after this batch
                        break
                    batch.append(item)
                self._commit(store, batch)
        finally:
            store.close()

    def _commit(self, store: EventStore, batch: list[Any]) -> None:
        jobs: list[_Job] = [b for b in batch if isinstance(b[0], Incoming)]
        rejects = [b for b in batch if not isinstance(b[0], Incoming)]
        if rejects:
            try:
                store.reject_many(rejects)
            except Exception as exc:  # a note only: never worth a crash
                logger.warning("could not note %d rejected deliveries: %s", len(rejects), exc)
        if not jobs:
            return
        try:
            fresh: list[bool | BaseException] = list(store.add_many([job[0] for job in jobs]))
        except Exception:
            # one delivery the store can't take must not fail the others committed with it:
            # each alone, so only that one gets its 503
            fresh = []
            for job in jobs:
                try:
                    fresh.extend(store.add_many([job[0]]))
                except Exception as exc:
                    fresh.append(exc)
        for (_, loop, future), value in zip(jobs, fresh, strict=True):
            if isinstance(value, BaseException):
                self.counters.failed += 1
                logger.error("could not store a delivery (answered 503): %s", value)
                loop.call_soon_threadsafe(_settle, future, None, value)
                continue
            self.counters.deliveries += 1
            if value:
                self.counters.events += 1
            else:
                self.counters.repeats += 1
            loop.call_soon_threadsafe(_settle, future, value, None)


def _settle(future: asyncio.Future[bool], value: bool | None, exc: BaseException | None) -> None:
    if future.done():  # the request was cancelled (the sender hung up)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(bool(value))


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol (h11 caps a request head at 16 KiB, where httptools has no cap)
    with two guards for a port anyone may reach: a connection must send each whole request
    within :data:`REQUEST_TIMEOUT` (a half-sent one is closed, so idle sockets can't pile up),
    and beyond :data:`MAX_CONNECTIONS` open at once a new one is closed at once (Sonar
    retries; file descriptors and memory stay bounded)."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._expire)

    def _expire(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            self._arm()  # a whole request, being answered (its commit is slow): not idle
            return
        if not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        self._arm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


def create_app(
    writer: Writer, secret: str, clock: Callable[[], float] = time.time, prefix: str = ""
) -> Starlette:
    """The receiver's ASGI app: deliveries to ``/<secret>`` go to ``writer`` (and to
    ``<prefix>/<secret>``: a proxy in front that forwards its public path unchanged)."""
    paths = {("/" + secret).encode(), (prefix.rstrip("/") + "/" + secret).encode()}

    async def receive(request: Request) -> Response:
        path = request.scope["path"].encode("utf-8", "replace")
        # every candidate compared, in constant time, so timing tells nothing of the secret
        if not sum(hmac.compare_digest(path, p) for p in paths):
            return PlainTextResponse("Not Found", 404)
        if request.method not in METHODS:
            return PlainTextResponse("Method Not Allowed", 405, {"Allow": ", ".join(METHODS)})
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            writer.reject("body over 1 MiB", 413, min(int(declared), 2**62))
            return PlainTextResponse("Payload Too Large", 413)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    writer.reject("body over 1 MiB", 413, len(body))
                    return PlainTextResponse("Payload Too Large", 413)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody to answer; nothing stored
        try:
            payload = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            reason = f"malformed JSON: {type(exc).__name__}"
            if isinstance(exc, RecursionError):
                reason = "JSON nested too deeply"
            writer.reject(reason, 400, len(body))
            return PlainTextResponse("Bad Request: the body is not JSON", 400)
        if not isinstance(payload, dict):
            writer.reject("not a JSON object", 400, len(body))
            return PlainTextResponse("Bad Request: the body is not a JSON object", 400)
        try:
            fresh = await writer.put(Incoming(bytes(body), payload, clock()))
        except Exception:
            return PlainTextResponse("Service Unavailable: the event was not stored", 503)
        return JSONResponse({"stored": True, "duplicate": not fresh})

    # every method reaches receive(): any path but the secret one is 404, whatever the method
    route = Route("/{path:path}", receive)
    route.methods = None
    return Starlette(routes=[route])


class Receiver:
    """The receiver on ``host:port`` (0: a free one) in a background thread, storing into the
    store at ``path`` under ``/<secret>``.

    >>> with Receiver(Path("events.sqlite"), "s3cret") as r:  # doctest: +SKIP
    ...     r.url
    """

    def __init__(
        self,
        path: Path,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self.path = path
        self.secret = secret
        self.prefix = prefix
        self.host = host
        self.port = port
        self.clock = clock
        self.counters = Counters()
        self._writer: Writer | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        """Where it listens, without the secret: ``http://127.0.0.1:8788``."""
        from sonar_bulk.serving import http_url

        return http_url(self.host, self.port)

    def start(self) -> Receiver:
        """Bind (UsageError when the address can't be had), then serve."""
        from sonar_bulk.serving import ThreadedServer, listen

        sock = listen(self.host, self.port)
        writer = Writer(self.path, self.counters)
        try:
            writer.start()
        except BaseException:
            sock.close()
            raise
        self._writer = writer
        self.port = sock.getsockname()[1]
        self._server = ThreadedServer(
            create_app(writer, self.secret, self.clock, self.prefix),
            self.host,
            self.port,
            sock=sock,
            http=GuardedH11,
        )
        try:
            self._server.start()
        except BaseException:
            writer.stop()
            sock.close()
            raise
        return self

    def stop(self) -> None:
        """Stop taking deliveries (those in flight finish), then commit and close."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
