"""The one client of the Sonar API: async, with httpx's interface (URLs, headers, timeouts,
errors, decoding) over aiohttp's connection pool (one session, :mod:`sonar_bulk.api.transport`),
driven by the endpoint table (:mod:`sonar_bulk.api.endpoints`).

Every answer that is not a success becomes an :class:`~sonar_bulk.errors.ApiError` whose
subclass (all in :mod:`sonar_bulk.errors`) says what to do next (see
:func:`~sonar_bulk.api.endpoints.action_for`):

* :class:`FatalApiError`: stop the run (bad token, no subscription, API disabled);
* :class:`RowFailed`: fail this row (a 400 such as ``Invalid Phone Number``, a 404, the
  duplicate-message rule);
* :class:`Retryable`: try again later (a 429, a 5xx or a dropped connection on an operation
  that is safe to repeat, or a connection that failed before the request was written);
* :class:`OutcomeUnknown`: a send that may have gone out (a 500, a read timeout, a connection
  dropped after the request was written). It is never repeated blindly.

The token travels in a header and is removed (:func:`~sonar_bulk.api.endpoints.redact`) from
every message this module makes.
"""

from __future__ import annotations

import email.utils
import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx

from sonar_bulk import __version__
from sonar_bulk.api.endpoints import (
    LIVE_BASE_URL,
    PUBLISHABLE_KEY_HEADER,
    SANDBOX_BASE_URL,
    Endpoint,
    Param,
    action_for,
    api_url,
    endpoint,
    redact,
    secret_forms,
)
from sonar_bulk.errors import (
    ApiError,
    FatalApiError,
    OutcomeUnknown,
    Retryable,
    RowFailed,
    Unreachable,
    UsageError,
)

#: Seconds to wait for an answer (and for each read of it).
DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"sonar-bulk/{__version__}"
FORM = "application/x-www-form-urlencoded"


_BY_ACTION: dict[str, type[ApiError]] = {
    "stop": FatalApiError,
    "fail": RowFailed,
    "retry": Retryable,
    "unknown": OutcomeUnknown,
}


@dataclass
class Answer:
    """One HTTP answer: status, reason, the JSON body (or the text when it is not JSON)."""

    status: int
    reason: str
    body: Any
    #: The headers as they came (``(name, value)`` bytes); :attr:`headers` reads them.
    raw_headers: Sequence[tuple[bytes, bytes]] = ()

    @functools.cached_property
    def headers(self) -> httpx.Headers:
        """The headers, made when first asked (a bulk run reads them only from a 429's or a
        503's answer)."""
        return httpx.Headers(list(self.raw_headers))

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The ``{"error": "..."}`` text, or a short form of a body that is not one."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        if isinstance(self.body, str):
            text = " ".join(re.sub(r"<[^>]*>", " ", self.body).split())
            return text[:200]
        return ""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


def api_error(
    ep: Endpoint | None, answer: Answer, hide: Callable[[str], str] = lambda text: text
) -> ApiError:
    """The :class:`ApiError` an answer that is not a success means (``ep`` None: a raw call,
    read as a send would be), its texts passed through ``hide``: the one classification of
    answers, so that a refused token is :class:`FatalApiError` in every command."""
    action = action_for(ep, answer.status, answer.error, answer.retry_after)
    text = f"{answer.status} {answer.reason}".strip()
    if answer.error:
        text += f": {answer.error}"
    return _BY_ACTION[action](
        hide(text),
        status=answer.status,
        error=hide(answer.error),
        retry_after=answer.retry_after,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date (RFC 9110).
    None when absent or unreadable; never negative; capped at an hour."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), 3600.0)


def form_pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Form fields as the official gem sends them: ``properties[plan]=gold`` for a mapping,
    ``tag_names[]=a`` for a list, plain ``key=value`` otherwise. None values are left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            pairs.extend((f"{key}[{k}]", str(v)) for k, v in value.items() if v is not None)
        elif isinstance(value, list | tuple):
            pairs.extend((f"{key}[]", str(v)) for v in value)
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        else:
            pairs.append((key, str(value)))
    return pairs


@functools.lru_cache(maxsize=256)
def _form_key(key: str) -> str:
    return quote_plus(key, safe="[]")


#: ``quote_plus(c, safe="[]")`` of every ASCII character, for ``str.translate``.
_FORM_ESCAPES = str.maketrans(
    {
        chr(c): chr(c)
        if chr(c).isalnum() or chr(c) in "_.-~[]"
        else "+"
        if c == 32
        else f"%{c:02X}"
        for c in range(128)
    }
)


def form_value(value: str) -> str:
    """``quote_plus(value, safe="[]")``: an ASCII value (a phone, a name, an email) in one
    ``str.translate`` (quote_plus works a character at a time in Python)."""
    if value.isascii():
        return value.translate(_FORM_ESCAPES)
    return quote_plus(value, safe="[]")


def form_body(pairs: Sequence[tuple[str, Any]]) -> bytes:
    """``application/x-www-form-urlencoded``, as ``urlencode(pairs, safe="[]")`` writes it
    (UTF-8, spaces as ``+``); the few field names are encoded once."""
    return "&".join(
        f"{_form_key(k)}={form_value(v if isinstance(v, str) else str(v))}" for k, v in pairs
    ).encode("ascii")


class SonarClient:
    """The Sonar API, one method per operation, over one connection pool.

    ``aliases`` are base URLs answered by ``base_url`` (an emulator answering a URL copied from
    the docs). ``connections`` caps the pool; ``transport`` is for tests of protocol corners.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        publishable_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 16,
        aliases: Sequence[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        from sonar_bulk.api.transport import Transport

        api_url(base_url, "/")  # ValueError now for a base URL that can't work
        self.base_url = base_url
        self.token = token
        self.publishable_key = publishable_key
        self.timeout = timeout
        self.aliases = tuple(aliases)
        self.secrets = secret_forms(token, publishable_key)
        self._urls: dict[str, httpx.URL] = {}
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        if token:
            headers["Token"] = token
        if publishable_key:
            headers[PUBLISHABLE_KEY_HEADER] = publishable_key
        #: The request headers by kind of body: none, a form, JSON.
        self._by_body = {
            "": httpx.Headers(headers),
            "form": httpx.Headers({**headers, "Content-Type": FORM}),
            "json": httpx.Headers({**headers, "Content-Type": "application/json"}),
        }
        self._extensions = {"timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)).as_dict()}
        self._transport = transport or Transport(connections)
        #: The run's own transport, called without httpx's request and response objects
        #: (:meth:`Transport.exchange`); None for another transport (a test's).
        self._own = self._transport if isinstance(self._transport, Transport) else None
        #: Each set of headers as aiohttp takes them, by its kind of body.
        self._plain = {
            kind: [(k.decode("latin-1"), v.decode("latin-1")) for k, v in h.raw]
            for kind, h in self._by_body.items()
        }

    async def __aenter__(self) -> SonarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    def hide(self, text: str) -> str:
        """``text`` without the token or the publishable key."""
        return redact(text, self.secrets)

    def url(self, path: str) -> str:
        """The URL for ``path`` (UsageError for one off the base URL: the token stays home)."""
        return str(self._url(path))

    def _url(self, path: str) -> httpx.URL:
        """:meth:`url`, parsed; the operations' few paths are worked out once."""
        known = self._urls.get(path)
        if known is not None:
            return known
        try:
            target = httpx.URL(api_url(self.base_url, path, aliases=self.aliases))
        except (ValueError, httpx.InvalidURL) as exc:
            raise UsageError(self.hide(str(exc))) from None
        if len(self._urls) < 64:
            self._urls[path] = target
        return target

    # -- the raw request ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
        sends: bool = True,
    ) -> Answer:
        """One authorized call; the answer whatever its status. ``params`` go in the query of a
        GET and in a form body otherwise. A transport failure is :class:`Unreachable` (no
        connection: nothing was sent), else :class:`OutcomeUnknown` when ``sends`` (the call
        may have been processed), else :class:`Retryable`."""
        method = method.upper()
        url = self._url(path)
        pairs: list[tuple[str, str | int | float | bool | None]] = (
            form_pairs(params)  # type: ignore[assignment]
            if isinstance(params, Mapping)
            else [(str(k), str(v)) for k, v in params or ()]
        )
        body_kind = ""
        content: bytes | None = None
        request: httpx.Request | None = None
        try:
            if json_body is not None:
                body_kind, content = "json", json.dumps(json_body).encode()
            elif method == "GET":
                if pairs:  # added to a query the path may already have
                    url = url.copy_merge_params(pairs)
            elif pairs:
                body_kind, content = "form", form_body(pairs)
            if self._own is None:
                # the body as a ready stream: httpx leaves Host and Content-Length to aiohttp
                request = httpx.Request(
                    method,
                    url,
                    headers=self._by_body[body_kind],
                    stream=httpx.ByteStream(content or b""),
                    extensions=self._extensions,
                )
                request.read()
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise UsageError(self.hide(f"{method} {url}: {type(exc).__name__}: {exc}")) from None
        try:
            if request is None:
                assert self._own is not None
                got = await self._own.exchange(
                    method, url, self._plain[body_kind], content, self._extensions["timeout"]
                )
                status, raw, data = got.status, got.headers, got.body
                reason = got.reason or httpx.codes.get_reason_phrase(status)
                if got.encoding not in ("", "identity"):
                    data, raw = await _decoded(got.response())
            else:
                response = await self._transport.handle_async_request(request)
                data, raw = await _decoded(response)
                status, reason = response.status_code, response.reason_phrase
        except httpx.TransportError as exc:
            raise self._transport_error(exc, str(url), sends) from None
        except httpx.DecodingError as exc:  # an answer came, but it can't be read
            kind = OutcomeUnknown if sends else Retryable
            raise kind(self.hide(f"{method} {url}: an unreadable answer ({exc})")) from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise UsageError(self.hide(f"{method} {url}: {type(exc).__name__}: {exc}")) from None
        try:
            body: Any = json.loads(data)
        except ValueError:  # a text (an HTML error page), in the charset its headers name
            plain = [(k, v) for k, v in raw if k.lower() != b"content-encoding"]  # decoded
            body = httpx.Response(status, headers=plain, content=data).text
        return Answer(status, reason, body, raw)

    def _transport_error(self, exc: httpx.TransportError, target: str, sends: bool) -> ApiError:
        parts = urlsplit(target)  # named without user:password@ or the query
        host = parts.netloc.rpartition("@")[2]
        where = f"{parts.scheme}://{host}{parts.path}"
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            reason = "timed out connecting"
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return Unreachable(
                self.hide(f"could not reach the API at {where}: {reason}"), not_sent=True
            )
        if isinstance(exc, httpx.TimeoutException):
            message = (
                f"no answer from {where} within {self.timeout:g} s ({type(exc).__name__}); the "
                "request may have been processed"
            )
        else:
            message = (
                f"the connection to {where} failed before an answer ({reason}); the request "
                "may have been processed"
            )
        kind = OutcomeUnknown if sends else Retryable
        return kind(self.hide(message))

    # -- operations ------------------------------------------------------------------------

    async def call(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        webhook_id: str | None = None,
    ) -> Answer:
        """The operation ``name`` of the endpoint table with ``params``; the answer when it is
        a success, else the :class:`ApiError` that says what to do next."""
        ep = endpoint(name)
        path = ep.path.replace("{id}", webhook_id or "") if "{id}" in ep.path else ep.path
        if "{id}" in ep.path and not webhook_id:
            raise UsageError(f"{name}: a webhook id is needed")
        json_body = None
        form: Mapping[str, Any] | None = params
        if ep.name in ("create_webhook", "update_webhook"):
            json_body, form = dict(params or {}), None
        answer = await self.request(
            ep.method, path, params=form, json_body=json_body, sends=ep.sends
        )
        if answer.ok:
            return answer
        raise self.error_for(ep, answer)

    def error_for(self, ep: Endpoint | None, answer: Answer) -> ApiError:
        """The :class:`ApiError` an answer that is not a success means."""
        return api_error(ep, answer, self.hide)

    async def upsert_customer(self, phone_number: str, **fields: Any) -> Answer:
        return await self.call("upsert_customer", {Param.PHONE: phone_number, **fields})

    async def get_customer(self, phone_number: str) -> Answer:
        return await self.call("get_customer", {Param.PHONE: phone_number})

    async def close_customer(self, phone_number: str) -> Answer:
        return await self.call("close_customer", {Param.PHONE: phone_number})

    async def unassign_customer(self, phone_number: str) -> Answer:
        return await self.call("unassign_customer", {Param.PHONE: phone_number})

    async def delete_customer_property(
        self, property_name: str, *, phone_number: str | None = None, email: str | None = None
    ) -> Answer:
        return await self.call(
            "delete_customer_property",
            {Param.PHONE: phone_number, Param.EMAIL: email, Param.PROPERTY_NAME: property_name},
        )

    async def send_message(
        self,
        to: str,
        text: str,
        *,
        media_url: str | None = None,
        tag_names: Sequence[str] | None = None,
    ) -> Answer:
        params: dict[str, Any] = {Param.TO: to, Param.TEXT: text, Param.MEDIA_URL: media_url}
        if tag_names:
            params[Param.TAG_NAMES] = list(tag_names)
        return await self.call("send_message", params)

    async def add_message_tag(self, external_message_id: str, tag_name: str) -> Answer:
        return await self.call(
            "add_message_tag", {Param.MESSAGE_ID: external_message_id, Param.TAG_NAME: tag_name}
        )

    async def send_campaign(self, to: str, campaign_id: str, send_at: str | None = None) -> Answer:
        return await self.call(
            "send_campaign", {Param.TO: to, Param.CAMPAIGN_ID: campaign_id, Param.SEND_AT: send_at}
        )

    async def available_phone_number(self) -> Answer:
        return await self.call("available_phone_number")

    async def create_webhook(self, webhook: Mapping[str, Any]) -> Answer:
        return await self.call("create_webhook", {Param.WEBHOOK: dict(webhook)})

    async def list_webhooks(self) -> Answer:
        return await self.call("list_webhooks")

    async def update_webhook(self, webhook_id: str, webhook: Mapping[str, Any]) -> Answer:
        return await self.call(
            "update_webhook", {Param.WEBHOOK: dict(webhook)}, webhook_id=webhook_id
        )

    async def delete_webhook(self, webhook_id: str) -> Answer:
        return await self.call("delete_webhook", webhook_id=webhook_id)


async def _decoded(response: httpx.Response) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A response's body, decoded as its ``Content-Encoding`` says, and its raw headers."""
    try:
        if isinstance(response.stream, httpx.SyncByteStream):
            response.read()  # bytes already here (the transport read them)
        else:
            await response.aread()
    finally:
        await response.aclose()
    return response.content, response.headers.raw


def answer_text(answer: Answer) -> str:
    """An answer's body as the ``api`` command prints it: indented JSON, or the text."""
    if isinstance(answer.body, str):
        return answer.body
    return json.dumps(answer.body, indent=2, ensure_ascii=False)


__all__ = [
    "LIVE_BASE_URL",
    "SANDBOX_BASE_URL",
    "Answer",
    "SonarClient",
    "answer_text",
    "api_error",
    "form_pairs",
    "parse_retry_after",
]
