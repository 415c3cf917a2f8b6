"""The emulator's ASGI app: the Sonar API under ``/api/v1`` and an admin API under
``/__emulator__/`` (only on the emulator).

Routes are built from :data:`sonar_bulk.api.endpoints.ENDPOINTS`, the table the client uses too.
Checks run in Sonar's order: authentication, company state, then parameters. Before any of
that, a middleware guards both APIs: a body is read only from a client that sent a known
credential in its headers or query, and only up to ``max_body`` bytes within
``body_timeout`` seconds.

The admin API can reset and rewrite everything, so only its owner may reach it: it answers a
request whose ``Host`` names the address the connection came in on (no DNS rebinding), whose
body (if it may have one) is ``application/json`` (which a web page can't send cross-site
without a CORS preflight, never granted), and, with ``admin_token`` set or beyond loopback,
that carries ``Authorization: Bearer <admin token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import math
import random
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonar_bulk.api.endpoints import (
    BASE_PATH,
    EMULATOR_PUBLISHABLE_KEY,
    EMULATOR_TOKEN,
    ENDPOINTS,
    PUBLISHABLE_KEY_HEADER,
    TOKEN_HEADERS,
    TOKEN_QUERY,
    Endpoint,
    Errors,
    redact,
    secret_forms,
)
from sonar_bulk.emulator.params import BadBody, as_bool, as_text, parse_json_object, parse_params
from sonar_bulk.emulator.state import ADMIN, OK, Era, Result, Store, error
from sonar_bulk.emulator.webhooks import Dispatcher

Role = Literal["valid", "no_subscription", "api_disabled"]
ROLES: tuple[Role, ...] = ("valid", "no_subscription", "api_disabled")
FAULTS = ("500_before", "500_after", "503", "reset_before", "reset_after", "hang_after")
#: Where an API request may carry a credential (header names as ASGI gives them).
_CREDENTIAL_HEADERS = tuple(
    h.lower().encode("latin-1") for h in (*TOKEN_HEADERS, PUBLISHABLE_KEY_HEADER)
)
ENTRY = "sonar_bulk.entry"  # the scope key of the request's log entry

#: Each numeric knob's range: finite, not negative, and small enough to sleep on.
KNOB_RANGES: dict[str, tuple[float, float]] = {
    "rate_limit": (0.0, 1e6),
    "burst": (0.0, 1e6),
    "latency_ms": (0.0, 600_000.0),
    "jitter_ms": (0.0, 600_000.0),
    "fail_rate": (0.0, 1.0),
    "hang_seconds": (0.0, 86_400.0),
    "time_scale": (0.0, 1000.0),
}


class KnobError(ValueError):
    """A knob value out of its range; ``name`` is the knob's, ``rule`` says what fits."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name}: {rule} (got {value!r})")


def plain_number(value: object) -> str:
    """A number as a person writes it: ``2`` for 2.0, ``1000000`` for 1e6, ``nan``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def knob_number(name: str, value: object) -> float:
    """``value`` as the knob ``name`` takes it; KnobError when it is no number, NaN,
    infinite or out of the knob's range."""
    low, high = KNOB_RANGES[name]
    rule = f"expected a number from {plain_number(low)} to {plain_number(high)}"
    if isinstance(value, bool):
        raise KnobError(name, value, rule)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise KnobError(name, value, rule) from None
    if not (math.isfinite(number) and low <= number <= high):
        raise KnobError(name, value, rule)
    return number


@dataclass
class Knobs:
    """Realism settings, changeable at run time through ``POST /__emulator__/config``."""

    rate_limit: float = 0.0  # requests per second; 0 = unlimited
    burst: float = 0.0  # bucket size; 0 = same as rate_limit
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0  # probability of a fault, spread over fault_kinds
    fault_kinds: tuple[str, ...] = FAULTS
    #: Longer than the api command's 30 s timeout, so a hang outlasts the client.
    hang_seconds: float = 40.0
    time_scale: float = 1.0

    def update(self, data: dict[str, Any]) -> None:
        """Apply ``data`` (knob name → value) all or nothing; ValueError (KnobError for a
        number) names the first bad one."""
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown setting {key!r}")
            if key == "fault_kinds":
                if isinstance(value, str) or not isinstance(value, list | tuple):
                    raise ValueError(f"fault_kinds: expected a list of {', '.join(FAULTS)}")
                bad = [k for k in value if k not in FAULTS]
                if bad:
                    raise ValueError(f"unknown fault {bad[0]!r}; one of {', '.join(FAULTS)}")
                changes[key] = tuple(value)
            else:
                changes[key] = knob_number(key, value)
        for key, value in changes.items():
            setattr(self, key, value)


@dataclass
class EmulatorConfig:
    """How to start an emulator."""

    tokens: dict[str, Role] = field(default_factory=lambda: {EMULATOR_TOKEN: "valid"}, repr=False)
    publishable_keys: tuple[str, ...] = (EMULATOR_PUBLISHABLE_KEY,)
    #: Required by the admin API as ``Authorization: Bearer <token>`` when set; without it,
    #: the admin API answers only connections that came in on a loopback address.
    admin_token: str | None = field(default=None, repr=False)
    #: Largest request body (413 beyond), and how long its arrival may take (408 beyond).
    max_body: int = 1024 * 1024
    body_timeout: float = 30.0
    #: Webhook delivery: connections per webhook, and pending deliveries per webhook before
    #: new ones are dropped.
    webhook_workers: int = 8
    webhook_queue: int = 10_000
    era: Era = "2017"
    company_number: str = "+17573780424"
    campaigns: dict[str, str] | None = None
    state_file: str | None = None
    knobs: Knobs = field(default_factory=Knobs)
    seed: int | None = None
    request_log_size: int = 10_000
    scheduler_interval: float = 0.1
    #: Monotonic seconds for the rate limiter (tests inject a clock that only they move).
    clock: Callable[[], float] = time.monotonic
    #: How the latency, jitter and hang knobs wait (tests inject one that records the delays).
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    #: Called with each request-log entry as it is written (``sonar-bulk emulator --log``).
    on_request: Callable[[dict[str, Any]], None] | None = None
    #: Told what an operator should know, such as dropped webhook deliveries (default: the
    #: ``sonar_bulk.emulator`` logger).
    on_notice: Callable[[str], None] | None = None


class TokenBucket:
    """Rate limiter: ``rate`` tokens a second up to ``burst``; ``take()`` says how long to wait
    when the bucket is empty (0 when a request may pass). ``clock`` gives monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Full again at the next ``take()``."""
        self.tokens = 0.0
        self.stamp = self.clock()
        self.shape: tuple[float, float] | None = None

    def take(self, rate: float, burst: float) -> float:
        now = self.clock()
        # at least one whole token: a rate below 1/s still admits one request every 1/rate s
        capacity = max(1.0, burst or rate)
        if (rate, capacity) != self.shape:  # new settings: start full
            self.shape, self.tokens = (rate, capacity), capacity
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class Emulator:
    """State, webhook dispatch, knobs and the request log of one running emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.knobs = config.knobs
        self.store = Store(
            era=config.era,
            company_number=config.company_number,
            campaigns=config.campaigns,
            state_file=config.state_file,
        )
        self.dispatcher = Dispatcher(
            self.store,
            time_scale=self.knobs.time_scale,
            workers=config.webhook_workers,
            max_pending=config.webhook_queue,
            notice=config.on_notice,
        )
        self.requests: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self.scripted: list[dict[str, Any]] = []
        self.random = random.Random(config.seed)
        self.bucket = TokenBucket(config.clock)
        self.sleep = config.sleep
        self.secrets = secret_forms(*config.tokens, *config.publishable_keys, config.admin_token)
        self.credentials = frozenset((*config.tokens, *config.publishable_keys))
        #: Requests waiting (latency, hang, a slow body) that a stopping server interrupts.
        self.waiting: set[asyncio.Task[Any]] = set()

    # -- helpers ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the start: state, deliveries, the request log, scripted faults, a full
        rate-limit bucket, and the dice re-seeded (the same ``--seed`` draws the same faults
        and delays again)."""
        self.store.reset()
        self.dispatcher.reset()
        self.requests.clear()
        self.scripted.clear()
        self.bucket.reset()
        self.random.seed(self.config.seed)

    def publish(self, result: Result) -> Result:
        self.dispatcher.publish(result.events)
        return result

    async def pause(self, seconds: float) -> None:
        """Sleep (through the injected sleeper) unless the server stops first."""
        task = asyncio.current_task()
        assert task is not None
        self.waiting.add(task)
        try:
            await self.sleep(seconds)
        finally:
            self.waiting.discard(task)

    def interrupt(self) -> None:
        """The server is stopping: end every request that is only waiting (a hang, latency,
        a slow body), so it stops at once and quietly."""
        for task in list(self.waiting):
            task.cancel()

    def authenticate(self, request: Request, ep: Endpoint) -> Result | None:
        not_found = Errors.BAD_TOKEN if self.config.era == "2014" else Errors.TOKEN_NOT_FOUND
        if ep.auth == "publishable_key":
            key = request.headers.get(PUBLISHABLE_KEY_HEADER)
            return None if key in self.config.publishable_keys else error(401, not_found)
        token = None
        for header in TOKEN_HEADERS:
            if request.headers.get(header):
                token = request.headers[header]
                break
        if token is None:
            token = request.query_params.get(TOKEN_QUERY)
        role = self.config.tokens.get(token or "")
        if role is None:
            return error(401, not_found)
        if role == "no_subscription":
            return error(403, Errors.NO_SUBSCRIPTION)
        if role == "api_disabled":
            return error(403, Errors.API_DISABLED)
        return None

    def operation(self, ep: Endpoint, params: dict[str, Any], request: Request) -> Result:
        s = self.store
        name = ep.name
        if name == "available_phone_number":
            return s.available_phone_number()
        if name == "list_webhooks":
            return s.list_webhooks()
        if name == "update_webhook":
            return s.update_webhook(request.path_params["id"], params)
        if name == "delete_webhook":
            return s.delete_webhook(request.path_params["id"])
        handler: Callable[[dict[str, Any]], Result] = getattr(s, name)
        return handler(params)

    # -- ASGI: the API ---------------------------------------------------------------------

    def api_route(self, ep: Endpoint) -> Route:
        reads = ep.method == "GET"

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            result = self.authenticate(request, ep)
            if result is None:
                try:
                    params = parse_params(
                        request.url.query,
                        await request.body(),
                        request.headers.get("content-type", ""),
                    )
                except BadBody as exc:
                    result = error(400, str(exc))
                else:
                    result = self.publish(self.operation(ep, params, request))
            if result.status == OK:
                result.status = ep.success
            entry = request.scope.get(ENTRY)
            if entry is not None:
                ok = 200 <= result.status < 300
                entry["side_effect"] = "none" if reads else "applied" if ok else "not_applied"
            return api_response(result, time.perf_counter() - started)

        return Route(BASE_PATH + ep.path, handle, methods=[ep.method], name=ep.name)

    # -- ASGI: the admin API ---------------------------------------------------------------

    def admin_routes(self) -> list[Route]:
        async def body(request: Request) -> dict[str, Any]:
            raw = await request.body()
            return parse_json_object(raw) if raw.strip() else {}

        def admin(
            fn: Callable[[dict[str, Any]], Awaitable[Any]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def handle(request: Request) -> Response:
                try:
                    out = await fn(
                        await body(request)
                        if request.method != "GET"
                        else dict(request.query_params)
                    )
                except (BadBody, ValueError, TypeError, KeyError, OverflowError) as exc:
                    return JSONResponse({"error": str(exc).strip("'\"")}, status_code=400)
                if isinstance(out, Result):
                    if out.status == OK:
                        out.status = 201
                    return respond(self.publish(out))
                return JSONResponse(out)

            return handle

        async def state(_: dict[str, Any]) -> Any:
            return self.store.snapshot()

        async def reset(_: dict[str, Any]) -> Any:
            self.reset()
            return {"reset": True}

        async def requests(_: dict[str, Any]) -> Any:
            iso = self.store.clock.iso
            return [{**entry, "time": iso(entry["time"])} for entry in self.requests]

        async def clear_requests(_: dict[str, Any]) -> Any:
            self.requests.clear()
            return {"cleared": True}

        async def deliveries(_: dict[str, Any]) -> Any:
            return [d.body() for d in self.dispatcher.deliveries]

        async def queue(_: dict[str, Any]) -> Any:
            return self.dispatcher.queue()

        async def get_config(_: dict[str, Any]) -> Any:
            k = self.knobs
            return {
                **{name: getattr(k, name) for name in k.__dataclass_fields__},
                "era": self.config.era,
                "faults": list(FAULTS),
            }

        async def set_config(data: dict[str, Any]) -> Any:
            self.knobs.update(data)
            self.dispatcher.time_scale = self.knobs.time_scale
            return await get_config({})

        async def add_fault(data: dict[str, Any]) -> Any:
            fault = data.get("fault")
            if fault not in FAULTS:
                raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
            count = data.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10**9:
                raise ValueError("count must be a whole number from 1 to 1000000000")
            self.scripted.append(
                {
                    "fault": fault,
                    "count": count,
                    "path": as_text(data.get("path")),
                    "method": as_text(data.get("method")),
                }
            )
            return {"faults": self.scripted}

        async def clear_faults(_: dict[str, Any]) -> Any:
            self.scripted.clear()
            return {"faults": []}

        async def inbound(data: dict[str, Any]) -> Any:
            return self.store.inbound(
                str(data["phone_number"]), str(data["text"]), as_text(data.get("assign_to"))
            )

        async def tags(data: dict[str, Any]) -> Any:
            return self.store.tag_message(
                str(data["external_message_id"]),
                str(data["tag_name"]),
                remove=as_bool(data.get("remove")) is True,
            )

        async def assign(data: dict[str, Any]) -> Any:
            return self.store.assign(str(data["phone_number"]), as_text(data.get("user_email")))

        async def opt_in(data: dict[str, Any]) -> Any:
            return self.store.confirm_double_opt_in(str(data["phone_number"]))

        async def customers(data: dict[str, Any]) -> Any:
            return self.store.upsert_customer(data)

        async def campaigns(data: dict[str, Any]) -> Any:
            self.store.add_campaign(str(data["campaign_id"]), str(data.get("text", "")))
            return {"campaigns": self.store.campaigns}

        async def clock(data: dict[str, Any]) -> Any:
            advance = data.get("advance", 0)
            seconds = float(advance) if not isinstance(advance, bool) else math.nan
            if not math.isfinite(seconds):
                raise ValueError(f"advance: expected a number of seconds (got {advance!r})")
            if not 0 <= self.store.clock.now() + seconds < 253402300800:
                raise ValueError("advance: the clock would leave the years 1970 to 9999")
            self.store.clock.offset += seconds
            self.dispatcher.publish(self.store.due_campaigns())
            return {"clock": self.store.clock.iso(), "offset": self.store.clock.offset}

        table: list[tuple[str, str, Callable[[dict[str, Any]], Awaitable[Any]]]] = [
            ("GET", "/state", state),
            ("POST", "/reset", reset),
            ("GET", "/requests", requests),
            ("DELETE", "/requests", clear_requests),
            ("GET", "/deliveries", deliveries),
            ("GET", "/queue", queue),
            ("GET", "/config", get_config),
            ("POST", "/config", set_config),
            ("POST", "/faults", add_fault),
            ("DELETE", "/faults", clear_faults),
            ("POST", "/inbound", inbound),
            ("POST", "/tags", tags),
            ("POST", "/assign", assign),
            ("POST", "/double_opt_in", opt_in),
            ("POST", "/customers", customers),
            ("POST", "/campaigns", campaigns),
            ("POST", "/clock", clock),
        ]
        return [Route(ADMIN + path, admin(fn), methods=[method]) for method, path, fn in table]

    # -- ASGI: guards, knobs, faults and the request log around the APIs ----------------------

    def pick_fault(self, method: str, path: str) -> str | None:
        for item in self.scripted:
            if item["path"] and item["path"] != path:
                continue
            if item["method"] and str(item["method"]).upper() != method:
                continue
            item["count"] -= 1
            if item["count"] <= 0:
                self.scripted.remove(item)
            return str(item["fault"])
        k = self.knobs
        if k.fail_rate and k.fault_kinds and self.random.random() < k.fail_rate:
            return self.random.choice(k.fault_kinds)
        return None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope["path"]
            sending = _with_request_id(send)
            try:
                if path.startswith(BASE_PATH):
                    await self._api(scope, receive, sending, send, app)
                elif path.startswith(ADMIN):
                    await self._admin(scope, receive, sending, app)
                else:
                    await app(scope, receive, sending)
            except asyncio.CancelledError:
                # The server is stopping (Ctrl-C) while this request waits: end it quietly,
                # as a hang would end, instead of a traceback.
                _reset_connection(send)

        return middleware

    async def _api(
        self, scope: Scope, receive: Receive, send: Send, raw_send: Send, app: ASGIApp
    ) -> None:
        """An API request: the credential checked from headers and query, the body read
        (capped), then the knobs, faults and the app. Its log entry says ``side_effect``:
        ``applied`` (the operation ran and answered 2xx: what the client would have seen had
        no fault struck), ``not_applied`` (a write that did not happen) or ``none`` (a
        read)."""
        started = time.monotonic()
        entry: dict[str, Any] = {"status": None, "fault": None, "side_effect": None}
        scope[ENTRY] = entry
        body = b""
        try:
            if self._has_credential(scope):
                got = await self._read_body(scope, receive)
                if isinstance(got, Result):
                    entry["status"] = got.status
                    await _json(send, got.status, got.body, close=True)
                    return
                body = got
            elif _has_body(scope):
                # No credential: the answer is a 401 (or 404), so the body is never read,
                # and the connection is closed after the answer rather than drained.
                send = _closing(send)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self._serve(scope, replay, send, raw_send, app, entry)
        finally:
            if entry["side_effect"] is None:
                reads = scope["method"] in ("GET", "HEAD")
                entry["side_effect"] = "none" if reads else "not_applied"
            self._log(scope, body, entry, time.monotonic() - started)

    def _has_credential(self, scope: Scope) -> bool:
        """Whether the request names a known token or publishable key (headers first, then
        the query), so its body is worth reading. Authentication proper comes later, in
        Sonar's order; this only keeps strangers from making the emulator read bodies."""
        for name, value in scope["headers"]:
            if name in _CREDENTIAL_HEADERS and value.decode("latin-1") in self.credentials:
                return True
        query = scope.get("query_string", b"")
        if query:
            for key, value in parse_qsl(query.decode("latin-1")):
                if key == TOKEN_QUERY and value in self.credentials:
                    return True
        return False

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | Result:
        """The whole body, or the error to answer: 413 beyond ``max_body`` (known from
        Content-Length before reading, or while reading a chunked body), 408 when it has not
        arrived within ``body_timeout``."""
        limit = self.config.max_body
        too_large = error(413, f"Request Entity Too Large: the limit is {limit} bytes (--max-body)")
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return too_large
        if getattr(getattr(receive, "__self__", None), "more_body", True) is False:
            # uvicorn has the whole body already (the usual case): no wait, so no timer
            message = await receive()
            body = bytes(message.get("body", b""))
            return too_large if len(body) > limit else body
        chunks: list[bytes] = []
        size = 0
        task = asyncio.current_task()
        assert task is not None
        self.waiting.add(task)
        try:
            async with asyncio.timeout(self.config.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return too_large
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            return error(
                408, f"Request Timeout: the body took longer than {self.config.body_timeout:g} s"
            )
        finally:
            self.waiting.discard(task)
        return b"".join(chunks)

    # -- the admin API's guard -------------------------------------------------------------

    async def _admin(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        refusal = self.admin_refusal(scope)
        if refusal is None and scope["method"] not in ("GET", "HEAD"):
            got = await self._read_body(scope, receive)
            if isinstance(got, Result):
                refusal = got
            else:
                body = got

                async def replay() -> Message:
                    return {"type": "http.request", "body": body, "more_body": False}

                receive = replay
        if refusal is not None:
            await _json(send, refusal.status, refusal.body, close=True)
            return
        await app(scope, receive, send)

    def admin_refusal(self, scope: Scope) -> Result | None:
        """Why the admin API refuses this request (403, 401, 415), before any body is read;
        None when it may go on."""
        server = scope.get("server")
        if not server:
            return error(403, "admin API: no local address to check the Host against")
        local_host, local_port = str(server[0]), int(server[1])
        if not _host_names(_header(scope, b"host") or "", local_host, local_port):
            return error(403, "admin API: the Host header must name this emulator's address")
        token = self.config.admin_token
        if token is None and not is_loopback(local_host):
            return error(403, "admin API: beyond loopback it needs --admin-token")
        if token is not None:
            given = _header(scope, b"authorization") or ""
            scheme, _, value = given.partition(" ")
            if not (
                scheme.lower() == "bearer"
                and hmac.compare_digest(value.strip().encode(), token.encode())
            ):
                return error(401, "admin API: send Authorization: Bearer <admin token>")
        if scope["method"] not in ("GET", "HEAD"):
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return error(415, "admin API: send the body as Content-Type: application/json")
        return None

    # -- knobs and faults around the API ----------------------------------------------------

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        raw_send: Send,
        app: ASGIApp,
        entry: dict[str, Any],
    ) -> None:
        k = self.knobs
        if k.rate_limit > 0:
            wait = self.bucket.take(k.rate_limit, k.burst)
            if wait > 0:
                entry["status"] = 429
                await _json(
                    send,
                    429,
                    {"error": Errors.RATE_LIMITED},
                    [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                )
                return
        if k.latency_ms or k.jitter_ms:
            jitter = self.random.uniform(0, k.jitter_ms) if k.jitter_ms else 0.0
            await self.pause((k.latency_ms + jitter) / 1000)
        fault = self.pick_fault(scope["method"], scope["path"])
        entry["fault"] = fault

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        if fault is None:
            await app(scope, receive, recording_send)
            return
        if fault not in (
            "500_before",
            "503",
            "reset_before",
        ):  # the side effect happens; the client never learns its outcome

            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    entry["side_effect_status"] = message["status"]

            await app(scope, receive, swallow)
        if fault in ("500_before", "500_after"):
            entry["status"] = 500
            await _json(send, 500, {"error": "Internal Server Error"})
        elif fault == "503":
            entry["status"] = 503
            await _json(send, 503, {"error": "Service Unavailable"}, [(b"retry-after", b"1")])
        elif fault in ("reset_before", "reset_after"):
            entry["status"] = "reset"
            _reset_connection(raw_send)
        elif fault == "hang_after":
            entry["status"] = "hang"
            await self.pause(k.hang_seconds)
            _reset_connection(raw_send)

    def _log(self, scope: Scope, body: bytes, entry: dict[str, Any], seconds: float) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        text = body[:4096].decode("utf-8", "replace")
        record = {
            "time": self.store.clock.now(),  # formatted when the log is read
            "method": scope["method"],
            "path": redact(path, self.secrets),
            "status": entry["status"],
            "fault": entry["fault"],
            "side_effect": entry["side_effect"],
            "duration_ms": round(seconds * 1000, 2),
            "body": redact(text, self.secrets),
        }
        self.requests.append(record)
        if self.config.on_request is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed terminal stops no request
                self.config.on_request(record)


def format_request(entry: dict[str, Any]) -> str:
    """One request-log entry as a line: ``POST /api/v1/customers 201 1.3 ms`` (the path is
    already redacted), with the fault and whether the side effect happened when a fault was
    injected."""
    line = f"{entry['method']} {entry['path']} {entry['status']} {entry['duration_ms']:.1f} ms"
    if entry.get("fault"):
        line += f" (fault: {entry['fault']}; side effect: {entry.get('side_effect')})"
    return line


def respond(result: Result) -> Response:
    return JSONResponse(result.body, status_code=result.status)


def api_response(result: Result, seconds: float) -> Response:
    """An API answer with the headers Sonar's Rails stack sends (OBSERVED): X-Request-Id and
    X-Runtime always; Cache-Control private + an ETag on 200/201, no-cache otherwise."""
    body = json.dumps(result.body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"X-Request-Id": str(uuid.uuid4()), "X-Runtime": f"{seconds:.6f}"}
    if result.status in (200, 201):
        headers["Cache-Control"] = "max-age=0, private, must-revalidate"
        headers["ETag"] = 'W/"' + hashlib.md5(body).hexdigest() + '"'
    else:
        headers["Cache-Control"] = "no-cache"
    return Response(body, result.status, headers, media_type="application/json")


async def _json(
    send: Send,
    status: int,
    body: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-cache"),
                *([(b"connection", b"close")] if close else []),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _with_request_id(send: Send) -> Send:
    """``send`` that adds an X-Request-Id to a response that has none (the recorded server
    sends one on every response)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or ())
            if not any(name == b"x-request-id" for name, _ in headers):
                headers.append((b"x-request-id", str(uuid.uuid4()).encode()))
                message = {**message, "headers": headers}
        await send(message)

    return sending


def _closing(send: Send) -> Send:
    """``send`` that asks the server to close the connection after this response."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*(message.get("headers") or ()), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return (length is not None and length != "0") or _header(
        scope, b"transfer-encoding"
    ) is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_names(header: str, local_host: str, local_port: int) -> bool:
    """Whether a Host header names the local address a connection came in on (a loopback
    address may also be called ``localhost``), port included (80 when none is given)."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ("" if not rest else "x")
    else:
        name, sep, port_text = header.rpartition(":")
        if not sep:
            name, port_text = header, ""
    if port_text and not port_text.isdigit():
        return False
    port = int(port_text) if port_text else 80
    if port != local_port or not name:
        return False
    local = local_host.lower()
    with contextlib.suppress(ValueError):
        local = str(ipaddress.ip_address(local))
        name = str(ipaddress.ip_address(name))
    if name == local:
        return True
    return name == "localhost" and is_loopback(local)


def _reset_connection(send: Send) -> None:
    """Abort the TCP connection with a RST (uvicorn's send is a bound method of the request
    cycle, which holds the transport). Without that access the response is simply never sent
    and the connection is closed when the app returns."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # a connection the client closed already: its socket is gone (uvloop's stand-in for
        # it raises ValueError for the closed descriptor, Python's socket an OSError)
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    with contextlib.suppress(AttributeError):
        cycle.disconnected = True  # type: ignore[union-attr]


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Build the emulator app. ``app.state.emulator`` is the :class:`Emulator` behind it."""
    emulator = Emulator(config or EmulatorConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await emulator.dispatcher.start()
        scheduler = asyncio.get_running_loop().create_task(_schedule(emulator))
        try:
            yield
        finally:
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler
            await emulator.dispatcher.stop()
            emulator.store.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": Errors.NOT_FOUND}, status_code=404)

    routes = [emulator.api_route(ep) for ep in ENDPOINTS] + emulator.admin_routes()

    async def not_allowed(request: Request, exc: Exception) -> Response:
        path = request.scope["path"]
        allowed = {m for r in routes if r.path_regex.match(path) for m in r.methods or ()}
        return JSONResponse(
            {"error": "Method Not Allowed"},
            status_code=405,
            headers={"Allow": ", ".join(sorted(allowed))},
        )

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed}
    )
    app.state.emulator = emulator
    inner = app.build_middleware_stack()
    app.middleware_stack = emulator.wrap(inner)
    return app


async def _schedule(emulator: Emulator) -> None:
    """Send scheduled campaigns when they fall due."""
    while True:
        await asyncio.sleep(emulator.config.scheduler_interval)
        emulator.dispatcher.publish(emulator.store.due_campaigns())
