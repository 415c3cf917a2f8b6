"""The HTTP servers sonar-bulk runs (the emulator, the webhook receiver, the web page): uvicorn,
set up one way, in the foreground or in a background thread on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import uvicorn

from sonar_bulk.errors import SonarBulkError, UsageError


class Server(uvicorn.Server):
    """uvicorn's server, telling the app first when it starts to shut down (``on_shutdown``),
    so requests that only wait can end before uvicorn's grace period runs out."""

    def __init__(
        self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def stopped_by_signals(self) -> Iterator[None]:
        """From here on, Ctrl-C and SIGTERM stop this server (run in the foreground, in the
        main thread) however early they come: uvicorn takes the signals only once its loop
        runs, and one that came between a printed banner and then went to Python's default
        handler, whose KeyboardInterrupt could be swallowed in a weakref callback while
        asyncio started, and the server then served on, deaf to it. A signal before the
        loop runs is kept and ends the server as soon as it has started; none becomes a
        KeyboardInterrupt."""
        wanted = [signal.SIGINT, signal.SIGTERM]
        before = {sig: signal.signal(sig, self.handle_exit) for sig in wanted}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


class ThreadedServer:
    """Any ASGI app served by uvicorn in a daemon thread, on a free port by default."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        on_shutdown: Callable[[], None] | None = None,
        sock: socket.socket | None = None,
        http: Any = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        #: A socket already listening (:func:`listen`), so a port in use is told before start.
        self.sock = sock
        self._server = Server(uvicorn_config(app, host, port, "critical", http), on_shutdown)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:40123``."""
        return http_url(self.host, self.port)

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        """Start serving; returns once the socket accepts connections."""
        self._thread = threading.Thread(target=self._run, name="sonar-bulk-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SonarBulkError(
                    f"could not start a server on {self.host}:{self.port or 'a free port'}"
                )
            time.sleep(0.005)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def _run(self) -> None:
        with contextlib.suppress(SystemExit):
            asyncio.run(self._server.serve(sockets=[self.sock] if self.sock else None))

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def uvicorn_config(
    app: Any, host: str, port: int, log_level: str, http: Any = None
) -> uvicorn.Config:
    """How every sonar-bulk server runs: quiet, lifespan on, httptools when installed (or
    ``http``, an HTTP protocol class of uvicorn's)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
        proxy_headers=False,
        http=http or _http_impl(),
    )


def _http_impl() -> str:
    """httptools when installed (several times faster than h11), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def http_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (0: a free port); UsageError when it can't be had,
    such as a port already in use."""
    # IPPROTO_TCP named, not 0: asyncio turns on TCP_NODELAY for accepted connections only
    # when the listening socket says TCP, and without it every answer uvicorn writes in two
    # parts waits ~40 ms for the client's delayed ACK (Nagle)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock
