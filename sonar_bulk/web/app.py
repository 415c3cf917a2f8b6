"""The web page's HTTP side: a Starlette app serving the page (plain HTML, CSS and ES modules)
and the JSON API it calls, over :class:`~sonar_bulk.web.session.Session`.

Security, for a server on the user's own machine that any web page they visit could try to
reach:

- **Host** must be ``127.0.0.1:<port>`` or ``localhost:<port>`` (DNS rebinding gets 400).
- **A per-launch secret** is required on every request: ``/?key=<secret>`` (the URL
  ``sonar-bulk ui`` prints) sets it in an HttpOnly, SameSite=Strict cookie and redirects to
  ``/``; anything without the cookie is 401.
- **Writes are JSON only** (415 otherwise, so no HTML form can post here) and an ``Origin``,
  when sent, must be this server's (403 otherwise).
- **The Sonar token never reaches the browser**: no answer carries it; the page sees only the
  target's label (emulator, sandbox, live).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sonar_bulk.errors import SonarBulkError
from sonar_bulk.web.session import MAX_UPLOAD, Session, page_words

STATIC = Path(__file__).parent / "static"
COOKIE = "sonar_bulk_ui"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
#: How often the progress stream sends an update while a run goes on.
TICK = 0.25
#: Largest request body: an upload of MAX_UPLOAD bytes, base64-encoded, in JSON.
MAX_BODY = MAX_UPLOAD * 4 // 3 + 64 * 1024


class Guard:
    """The security rules above, in front of every route."""

    def __init__(self, app: ASGIApp, secret: str, port: int) -> None:
        self.app = app
        self.secret = secret.encode()
        # one name per port: two pages on this machine never replace each other's cookie
        self.cookie = f"{COOKIE}_{port}"
        self.hosts = {f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode()}
        self.origins = {b"http://" + h for h in self.hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"host", b"").lower() not in self.hosts:
            await PlainTextResponse("Bad Request: wrong Host", 400)(scope, receive, send)
            return
        # Cookies don't tell ports apart: a page served on another port of this machine is
        # "same-site" and its requests carry this cookie. Browsers say where a request comes
        # from; only this page itself (or the address typed in) may use it.
        site = headers.get(b"sec-fetch-site")
        if site is not None and site not in (b"same-origin", b"none"):
            await JSONResponse({"error": "cross-site request"}, 403)(scope, receive, send)
            return
        if not self._authorized(headers):
            key = _query_key(scope)
            if scope["method"] == "GET" and scope["path"] == "/" and key is not None:
                if hmac.compare_digest(key, self.secret):
                    response: Response = RedirectResponse("/", 303)
                    response.set_cookie(
                        self.cookie,
                        self.secret.decode(),
                        httponly=True,
                        samesite="strict",
                        path="/",
                    )
                    await response(scope, receive, send)
                    return
            await _unauthorized(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get(b"origin")
            if origin is not None and origin.lower() not in self.origins:
                await JSONResponse({"error": "cross-origin request"}, 403)(scope, receive, send)
                return
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/json":
                await JSONResponse({"error": "send JSON"}, 415)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == self.cookie.encode() and hmac.compare_digest(value, self.secret):
                return True
        return False


def _query_key(scope: Scope) -> bytes | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key")
    return values[0].encode() if values else None


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"].startswith("/api/"):
        response: Response = JSONResponse({"error": "open the address sonar-bulk ui printed"}, 401)
    else:
        response = HTMLResponse(
            "<!doctype html><title>sonar-bulk</title><p>Open the address that "
            "<code>sonar-bulk ui</code> printed (it carries this launch's key).</p>",
            401,
        )
    await response(scope, receive, send)


Handler = Callable[[Request], Awaitable[Response]]


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (Python's reader takes them): a body with one is no JSON."""
    raise ValueError(f"{name} is not JSON")


def _api(work: Callable[[Request, dict[str, Any]], Any]) -> Handler:
    """A JSON endpoint: the body (for writes) parsed, ``work`` run in a thread, a
    SonarBulkError answered 400 with its one line, anything else 500."""

    async def endpoint(request: Request) -> Response:
        body: dict[str, Any] = {}
        if request.method not in ("GET", "HEAD"):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY:
                return JSONResponse({"error": "too large: a sheet may be 200 MiB"}, 413)
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_BODY:
                    return JSONResponse({"error": "too large: a sheet may be 200 MiB"}, 413)
            try:
                parsed = json.loads(bytes(raw) or b"{}", parse_constant=_no_constant)
            except (ValueError, RecursionError):
                return JSONResponse({"error": "the body is not JSON"}, 400)
            if not isinstance(parsed, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, 400)
            body = parsed
        try:
            result = await run_in_threadpool(work, request, body)
        except SonarBulkError as exc:
            return JSONResponse({"error": page_words(str(exc))}, 400)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, 400)
        except Exception as exc:
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    return endpoint


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


def create_app(session: Session, secret: str, port: int, target: str) -> ASGIApp:
    """The page and its API over ``session``, behind :class:`Guard`. ``target`` is the label
    of where runs go (shown; never the token)."""

    async def index(request: Request) -> Response:
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                "frame-ancestors 'none'",
                "Cache-Control": "no-store",
            },
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
            return PlainTextResponse("Not Found", 404)
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix])

    def info(request: Request, body: dict[str, Any]) -> Any:
        out: dict[str, Any] = {
            "target": target,
            "progress": session.progress(),
            "resumable": session.resumable,
        }
        if session.sheet is not None:
            out["sheet"] = session.describe()
            out["summary"] = session.summary()
        return out

    def upload(request: Request, body: dict[str, Any]) -> Any:
        described = session.upload(str(body["name"]), str(body["data"]), body.get("sheet"))
        return {**described, "summary": session.summary()}

    def reopen(request: Request, body: dict[str, Any]) -> Any:
        sheet = session._sheet()
        described = session.open(sheet.path, body.get("sheet"))
        return {**described, "summary": session.summary()}

    def mapping(request: Request, body: dict[str, Any]) -> Any:
        return session.set_mapping(str(body["kind"]), dict(body.get("choices") or {}))

    def columns(request: Request, body: dict[str, Any]) -> Any:
        with session.lock:
            return {"columns": session.columns(), "command_line": session.command_line()}

    def settings_(request: Request, body: dict[str, Any]) -> Any:
        return session.set_settings(body)

    def rows(request: Request, body: dict[str, Any]) -> Any:
        errors = request.query_params.get("errors") in ("1", "true")
        code = request.query_params.get("code") or None
        return session.rows(_int(request, "offset", 0), _int(request, "limit", 100), errors, code)

    def edit(request: Request, body: dict[str, Any]) -> Any:
        changes = body.get("changes")
        if not isinstance(changes, list):
            raise ValueError("changes must be a list")
        return session.edit(changes)

    def fix(request: Request, body: dict[str, Any]) -> Any:
        return session.fix(str(body["code"]))

    def replace(request: Request, body: dict[str, Any]) -> Any:
        return session.replace(
            int(body["column"]),
            str(body["find"]),
            str(body.get("replace") or ""),
            bool(body.get("whole")),
        )

    def delete(request: Request, body: dict[str, Any]) -> Any:
        indexes = body.get("indexes")
        if indexes is not None and not isinstance(indexes, list):
            raise ValueError("indexes must be a list")
        return session.delete(indexes, _text(body.get("code")))

    def settings(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "skip_invalid": bool(body.get("skip_invalid")),
            "rate": body.get("rate"),
            "quiet_hours": _text(body.get("quiet_hours")),
            "quiet_policy": _text(body.get("quiet_policy")),
            "resend": bool(body.get("resend")),
        }

    def plan(request: Request, body: dict[str, Any]) -> Any:
        # resume: the plan of a run that carries on (rows its journal shows done are left out);
        # diff (comparing with Sonar, a GET per row) only when asked: a plan is quick
        return session.start(
            "plan",
            diff=bool(body.get("diff", False)),
            resume=bool(body.get("resume")),
            **settings(body),
        )

    def run(request: Request, body: dict[str, Any]) -> Any:
        if body.get("confirm") is not True:
            raise ValueError("a run needs confirm: true")
        return session.start(
            "run",
            resume=bool(body.get("resume")),
            collect_events=body.get("collect_events"),
            public_url=_text(body.get("public_url")),
            **settings(body),
        )

    def plan_rows(request: Request, body: dict[str, Any]) -> Any:
        return session.plan_rows(_int(request, "offset", 0), _int(request, "limit", 100))

    def stop(request: Request, body: dict[str, Any]) -> Any:
        return session.stop()

    def progress(request: Request, body: dict[str, Any]) -> Any:
        return session.progress()

    def results(request: Request, body: dict[str, Any]) -> Any:
        return session.results(
            _int(request, "offset", 0),
            _int(request, "limit", 100),
            request.query_params.get("status") or None,
        )

    def download(request: Request, body: dict[str, Any]) -> Any:
        path = session.download(request.path_params["what"])
        return FileResponse(path, filename=path.name, headers={"Cache-Control": "no-store"})

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            last = ""
            while True:
                state = session.progress()
                text = json.dumps(state)
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                if state.get("state") not in ("running", "stopping") or session.closing:
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(TICK)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/static/{name}", static),
        Route("/api/info", _api(info)),
        Route("/api/upload", _api(upload), methods=["POST"]),
        Route("/api/reopen", _api(reopen), methods=["POST"]),
        Route("/api/mapping", _api(mapping), methods=["POST"]),
        Route("/api/columns", _api(columns)),
        Route("/api/settings", _api(settings_), methods=["POST"]),
        Route("/api/rows", _api(rows)),
        Route("/api/edit", _api(edit), methods=["POST"]),
        Route("/api/fix", _api(fix), methods=["POST"]),
        Route("/api/replace", _api(replace), methods=["POST"]),
        Route("/api/delete", _api(delete), methods=["POST"]),
        Route("/api/plan", _api(plan), methods=["POST"]),
        Route("/api/plan/rows", _api(plan_rows)),
        Route("/api/run", _api(run), methods=["POST"]),
        Route("/api/stop", _api(stop), methods=["POST"]),
        Route("/api/progress", _api(progress)),
        Route("/api/progress/stream", stream),
        Route("/api/results", _api(results)),
        Route("/download/{what}", _api(download)),
    ]
    return Guard(Starlette(routes=routes), secret, port)
