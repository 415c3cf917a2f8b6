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

from sonar_bulk.events.store import EventStore, Incoming

MAX_BODY = 1024 * 1024
#: Deliveries committed in one transaction at most.
BATCH = 512
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
        self.counters.rejected += 1
        self.queue.put((reason, status, size))

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
        jobs: list[_Job] = [b for b in batch if len(b) == 3 and isinstance(b[0], Incoming)]
        for job in batch:
            if not isinstance(job[0], Incoming):
                reason, status, size = job
                try:
                    store.reject(status, reason, size)
                except Exception as exc:  # a note only: never worth a crash
                    logger.warning("could not note a rejected delivery: %s", exc)
        if not jobs:
            return
        try:
            fresh = store.add_many([job[0] for job in jobs])
        except Exception as exc:
            self.counters.failed += len(jobs)
            logger.error("could not store %d deliveries (answered 503): %s", len(jobs), exc)
            for _, loop, future in jobs:
                loop.call_soon_threadsafe(_settle, future, None, exc)
            return
        new = sum(fresh)
        self.counters.events += new
        self.counters.repeats += len(fresh) - new
        self.counters.deliveries += len(fresh)
        for (_, loop, future), value in zip(jobs, fresh, strict=True):
            loop.call_soon_threadsafe(_settle, future, value, None)


def _settle(future: asyncio.Future[bool], value: bool | None, exc: BaseException | None) -> None:
    if future.done():  # the request was cancelled (the sender hung up)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(bool(value))


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
            writer.reject("body over 1 MiB", 413, int(declared))
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
        except (ValueError, UnicodeDecodeError) as exc:
            reason = f"malformed JSON: {type(exc).__name__}"
            writer.reject(reason, 400, len(body))
            logger.warning("rejected a delivery of %d bytes: %s", len(body), reason)
            return PlainTextResponse("Bad Request: the body is not JSON", 400)
        if not isinstance(payload, dict):
            writer.reject("not a JSON object", 400, len(body))
            logger.warning("rejected a delivery of %d bytes: not a JSON object", len(body))
            return PlainTextResponse("Bad Request: the body is not a JSON object", 400)
        try:
            fresh = await writer.put(Incoming(bytes(body), payload, clock()))
        except Exception:
            return PlainTextResponse("Service Unavailable: the event was not stored", 503)
        return JSONResponse({"stored": True, "duplicate": not fresh})

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", receive, methods=methods)])


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
        from sonar_bulk.emulator.server import http_url

        return http_url(self.host, self.port)

    def start(self) -> Receiver:
        """Bind (UsageError when the address can't be had), then serve."""
        from sonar_bulk.emulator.server import ThreadedServer, listen

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
