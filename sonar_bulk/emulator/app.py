"""The emulator's ASGI app: the Sonar API under ``/api/v1`` and an admin API under
``/__emulator__/`` (no token; only on the emulator).

Routes are built from :data:`sonar_bulk.endpoints.ENDPOINTS`, the table the client uses too.
Checks run in Sonar's order: authentication, company state, then parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonar_bulk.emulator.params import BadBody, as_bool, as_text, parse_params
from sonar_bulk.emulator.state import OK, Era, Result, Store, error
from sonar_bulk.emulator.webhooks import Dispatcher
from sonar_bulk.endpoints import (
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

Role = Literal["valid", "no_subscription", "api_disabled"]
ROLES: tuple[Role, ...] = ("valid", "no_subscription", "api_disabled")
FAULTS = ("500_before", "500_after", "503", "reset_before", "reset_after", "hang_after")
ADMIN = "/__emulator__"


@dataclass
class Knobs:
    """Realism settings, changeable at run time through ``POST /__emulator__/config``."""

    rate_limit: float = 0.0  # requests per second; 0 = unlimited
    burst: float = 0.0  # bucket size; 0 = same as rate_limit
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0  # probability of a fault, spread over fault_kinds
    fault_kinds: tuple[str, ...] = FAULTS
    hang_seconds: float = 30.0
    time_scale: float = 1.0

    def update(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown setting {key!r}")
            if key == "fault_kinds":
                kinds = tuple(value)
                bad = [k for k in kinds if k not in FAULTS]
                if bad:
                    raise ValueError(f"unknown fault {bad[0]!r}; one of {', '.join(FAULTS)}")
                self.fault_kinds = kinds
            else:
                number = float(value)
                if number < 0 or (key == "fail_rate" and number > 1):
                    raise ValueError(f"{key} out of range")
                setattr(self, key, number)


@dataclass
class EmulatorConfig:
    """How to start an emulator."""

    tokens: dict[str, Role] = field(default_factory=lambda: {EMULATOR_TOKEN: "valid"})
    publishable_keys: tuple[str, ...] = (EMULATOR_PUBLISHABLE_KEY,)
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
        capacity = burst or rate
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
        self.dispatcher = Dispatcher(self.store, time_scale=self.knobs.time_scale)
        self.requests: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self.scripted: list[dict[str, Any]] = []
        self.random = random.Random(config.seed)
        self.bucket = TokenBucket(config.clock)
        self.sleep = config.sleep
        self.secrets = secret_forms(*config.tokens, *config.publishable_keys)

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
            return api_response(result, time.perf_counter() - started)

        return Route(BASE_PATH + ep.path, handle, methods=[ep.method], name=ep.name)

    # -- ASGI: the admin API ---------------------------------------------------------------

    def admin_routes(self) -> list[Route]:
        async def body(request: Request) -> dict[str, Any]:
            raw = await request.body()
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                raise BadBody("body is not valid JSON") from exc
            if not isinstance(data, dict):
                raise BadBody("JSON body must be an object")
            return data

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
                except (BadBody, ValueError, TypeError, KeyError) as exc:
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
            self.scripted.append(
                {
                    "fault": fault,
                    "count": int(data.get("count", 1)),
                    "path": data.get("path"),
                    "method": data.get("method"),
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
            self.store.clock.offset += float(data.get("advance", 0))
            self.dispatcher.publish(self.store.due_campaigns())
            return {"clock": self.store.clock.iso(), "offset": self.store.clock.offset}

        table: list[tuple[str, str, Callable[[dict[str, Any]], Awaitable[Any]]]] = [
            ("GET", "/state", state),
            ("POST", "/reset", reset),
            ("GET", "/requests", requests),
            ("DELETE", "/requests", clear_requests),
            ("GET", "/deliveries", deliveries),
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

    # -- ASGI: knobs, faults and the request log around the API -----------------------------

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
            if scope["type"] != "http" or not scope["path"].startswith(BASE_PATH):
                await app(scope, receive, send)
                return
            started = time.monotonic()
            # Read the whole body first, so the log has it even when the app never reads it.
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            entry: dict[str, Any] = {"status": None, "fault": None}
            try:
                await self._serve(scope, replay, send, app, entry)
            finally:
                self._log(scope, body, entry, time.monotonic() - started)

        return middleware

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp, entry: dict[str, Any]
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
            await self.sleep((k.latency_ms + jitter) / 1000)
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
            _reset_connection(send)
        elif fault == "hang_after":
            entry["status"] = "hang"
            await self.sleep(k.hang_seconds)
            _reset_connection(send)

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
            "duration_ms": round(seconds * 1000, 2),
            "body": redact(text, self.secrets),
        }
        self.requests.append(record)
        if self.config.on_request is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed terminal stops no request
                self.config.on_request(record)


def format_request(entry: dict[str, Any]) -> str:
    """One request-log entry as a line: ``POST /api/v1/customers 201 1.3 ms`` (the path is
    already redacted), with the fault when one was injected."""
    line = f"{entry['method']} {entry['path']} {entry['status']} {entry['duration_ms']:.1f} ms"
    return line + (f" (fault: {entry['fault']})" if entry.get("fault") else "")


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
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


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
        with contextlib.suppress(OSError):
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

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "Method Not Allowed"}, status_code=405)

    routes = [emulator.api_route(ep) for ep in ENDPOINTS] + emulator.admin_routes()
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
