"""The HTTP client of the emulator's webhook deliveries: aiohttp's, one per delivery lane.
Imported once a delivery is sent, so an emulator with no webhook (``--emulate``) never loads
aiohttp."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

#: What a failed attempt raises: no answer came (refused, reset, closed, timed out, not HTTP).
FAILURES = (aiohttp.ClientError, OSError, TimeoutError, UnicodeError, ValueError)
#: A URL aiohttp can't send to: the delivery fails at once.
InvalidURL = aiohttp.InvalidURL


class LaneConnector(aiohttp.TCPConnector):
    """A lane's connection pool: aiohttp's, telling whether the connection its last request
    got was one kept alive from an earlier request (the lane sends one request at a time, so
    that is the request under way)."""

    def __init__(self) -> None:
        super().__init__(limit=0)  # the lane's one request at a time is the limit
        self.reused = False
        self._last: object = None

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        self.reused = protocol is not None and protocol is self._last
        self._last = protocol
        return connection


class LaneClient:
    """One lane's client (made on the server's loop): its pool keeps the lane's connection
    alive between deliveries."""

    def __init__(self, user_agent: str) -> None:
        self.connector = LaneConnector()
        self.session = aiohttp.ClientSession(
            connector=self.connector,
            timeout=aiohttp.ClientTimeout(total=None),  # each attempt has its own
            headers={"User-Agent": user_agent, "Content-Type": "application/json"},
            skip_auto_headers=("Accept-Encoding",),
            auto_decompress=False,
        )

    async def send(self, method: str, url: str, body: bytes) -> int:
        """One request; its answer's status (the answer's body is read and dropped, which puts
        the connection back in the pool)."""
        try:
            return await self._request(method, url, body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if not self.connector.reused:
                raise
            # a kept-alive connection the receiver had closed meanwhile: once more, anew
            return await self._request(method, url, body)

    async def _request(self, method: str, url: str, body: bytes) -> int:
        async with self.session.request(method, url, data=body) as answer:
            async for _ in answer.content.iter_any():
                pass
            return answer.status

    async def close(self) -> None:
        await self.session.close()


def error_text(exc: BaseException) -> str:
    """An attempt's error: the OS error under a failed connection (``ConnectionRefusedError:
    [Errno 111] ...``), else the exception's type and message."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
    return f"{type(exc).__name__}: {reason}"[:200]
