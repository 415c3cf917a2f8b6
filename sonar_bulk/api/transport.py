"""httpx on aiohttp: the transport under :class:`~sonar_bulk.api.client.SonarClient`.

httpx keeps the interface (``httpx.Request`` in, ``httpx.Response`` out, decoding, timeouts
and errors); aiohttp moves the bytes. httpcore's pool checks every idle connection with a
``poll`` on every request, which made the client, not the API, the limit of a bulk run
(docs/performance.md, "Bulk runs").

This is `httpx-aiohttp <https://pypi.org/project/httpx-aiohttp/>`_'s ``AiohttpTransport``
(its TLS context and limits, its close) with its request path replaced, for what a run depends
on and for speed:

* **Errors say whether the request may have been written.** The package maps every
  ``aiohttp.ClientConnectionError`` it does not know to ``httpx.ConnectTimeout``, so a server
  that drops the connection after reading a send (``ServerDisconnectedError``, a reset) would
  read as "never connected", which the client retries. Here (:func:`mapped`) only a failure
  to connect, or to get a connection in time, becomes ``ConnectError``/``ConnectTimeout``;
  anything after the connection was made becomes ``ReadTimeout``, ``ReadError`` or
  ``RemoteProtocolError`` (the request may have been processed), also while the body is read
  and for an answer aiohttp can't parse (``ClientResponseError``, which the package lets
  through unmapped).
* **A request is never repeated by the transport.** aiohttp sends a GET, PUT or DELETE again
  once when a kept-alive connection drops (RFC 9112 allows it); the caller decides retries.
* **One session for the run**, made on first use in the running loop: at most ``connections``
  connections (the run's ``--concurrency``), kept alive ``keepalive`` seconds, no cookie jar,
  no proxy from the environment, no redirects, no decompression (httpx decodes).
* **The answer is read whole** here (an API answer is a small JSON document) and handed to
  httpx as bytes; the timeouts and the URL are converted once, not per request (the package's
  per-request streaming and conversions cost about a fifth of the client's CPU).
* **Two ways in, one path:** httpx's ``handle_async_request`` (an ``httpx.Request`` in, an
  ``httpx.Response`` out), and :meth:`Transport.exchange`, which the client calls with the
  method, URL, headers and body and which answers with the :class:`Exchange` as it came. Both
  go through the same session, timeouts and error mapping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport

#: Seconds an idle connection is kept (httpx's default).
KEEPALIVE = 5.0


def _before_write(exc: BaseException) -> bool:
    """Whether aiohttp failed before any byte of the request could be written: it could not
    connect (refused, DNS, TLS) or get a connection in time."""
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def mapped(exc: BaseException, request: httpx.Request | None = None) -> httpx.TransportError:
    """The httpx error for aiohttp's ``exc``, by what may have reached the server."""
    text = str(exc) or type(exc).__name__
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind, text = httpx.ConnectError, _connect_reason(exc)
    elif isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        kind = httpx.ReadTimeout  # connected and maybe written: no answer in time
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind, text = httpx.RemoteProtocolError, "Server disconnected without sending a response"
    elif isinstance(exc, aiohttp.ClientResponseError):  # an answer that is not HTTP
        kind, text = httpx.RemoteProtocolError, f"an answer that can't be parsed: {exc.message}"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.InvalidURL):
        kind = httpx.UnsupportedProtocol
    else:  # a reset, a broken pipe, an OSError after connecting
        kind = httpx.ReadError
    error = kind(text, request=request) if request is not None else kind(text)
    return error


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """``[Errno 111] Connection refused`` rather than aiohttp's "Cannot connect to host ..."
    (the caller names the URL)."""
    os_error = exc.os_error
    number = os_error.errno
    if isinstance(number, int) and number > 0 and not isinstance(os_error, socket.gaierror):
        return f"[Errno {number}] {os.strerror(number)}"
    return os_error.strerror or str(os_error) or type(os_error).__name__


class Exchange(NamedTuple):
    """An answer as it came: status, the server's reason phrase, the raw headers, the body
    as sent (not decoded)."""

    status: int
    reason: str
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes
    #: Its ``Content-Encoding``, lower case ("" for none).
    encoding: str = ""

    def response(self, request: httpx.Request | None = None) -> httpx.Response:
        """The answer as an ``httpx.Response`` not read yet (httpx decodes it when read)."""
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if self.reason:
            extensions["reason_phrase"] = self.reason.encode("latin-1", "replace")
        return httpx.Response(
            self.status,
            headers=list(self.headers),
            stream=httpx.ByteStream(self.body),
            request=request,
            extensions=extensions,
        )


class Transport(AiohttpTransport):
    """httpx-aiohttp's transport with errors mapped by whether the request may have been
    written, no repeat by aiohttp, and one session of ``connections`` connections."""

    def __init__(self, connections: int, *, keepalive: float = KEEPALIVE) -> None:
        super().__init__(
            trust_env=False,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=keepalive,
            ),
        )
        self.connections = connections
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}
        self._urls: dict[int, tuple[httpx.URL, yarl.URL]] = {}

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.connections,
            limit_per_host=0,
            keepalive_timeout=self.limits.keepalive_expiry or KEEPALIVE,
            ssl=self.ssl_context,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp sends a GET, PUT or DELETE again when a kept-alive connection drops under
        # it; a send (or a raw call, read as one) must be made once, and retries are the
        # engine's to count. No public switch: tests/test_transport.py checks it holds.
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's way in: the request through :meth:`exchange`, the answer as an
        ``httpx.Response`` whose bytes httpx decodes."""
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = await request.aread() or None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            got = await self.exchange(
                request.method, request.url, headers, data, request.extensions.get("timeout")
            )
        except httpx.TransportError as exc:
            exc.request = request
            raise
        return got.response(request)

    async def exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeout: Mapping[str, float | None] | None,
    ) -> Exchange:
        """One request through the run's session, its answer read whole (an API answer is a
        small JSON document) and not decoded; aiohttp's failures as httpx's
        (:func:`mapped`). The client's own way in: no ``httpx.Request`` is built and no
        ``httpx.Response`` streamed for an answer that is not compressed (about a tenth of
        the client's CPU)."""
        session = self.client
        if not isinstance(session, aiohttp.ClientSession):
            session = self.client = self.get_client()
        try:
            async with session.request(
                method,
                self._url(url),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout(timeout),
            ) as answer:
                content = await answer.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise mapped(exc) from None
        encoding = answer.headers.get("Content-Encoding", "").strip().lower()
        return Exchange(answer.status, answer.reason or "", answer.raw_headers, content, encoding)

    def _timeout(self, given: Any) -> aiohttp.ClientTimeout:
        """httpx's timeouts as aiohttp's: connect as ``sock_connect``, read as ``sock_read``
        (each wait for bytes), pool as ``connect`` (getting a connection, connecting
        included); made once per set of values."""
        values = given or {}
        key = (values.get("connect"), values.get("read"), values.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return found

    def _url(self, url: httpx.URL) -> yarl.URL:
        """The URL as aiohttp takes it, already encoded (httpx encoded it). The client hands
        over the same URL object for every call of an operation (its paths are worked out
        once): that object's conversion is kept (``str()`` of a URL costs a few µs)."""
        found = self._urls.get(id(url))
        if found is not None and found[0] is url:
            return found[1]
        converted = yarl.URL(str(url), encoded=True)
        if not url.query and len(self._urls) < 64:
            self._urls[id(url)] = (url, converted)  # the URL kept: its id is not reused
        return converted


__all__ = ["KEEPALIVE", "Exchange", "Transport", "mapped"]
