"""Helpers for emulator tests: a webhook receiver served over real sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sonar_bulk.emulator.server import ThreadedServer


class Receiver:
    """Records every webhook delivery; ``fail_first[uuid-less path] = n`` answers 500 to the
    first n deliveries on that path."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first: dict[str, int] = {}
        self.lock = threading.Lock()

        async def hook(request: Request) -> Response:
            name = request.path_params["name"]
            body = await request.json() if await request.body() else None
            with self.lock:
                self.received.append(
                    {
                        "name": name,
                        "method": request.method,
                        "body": body,
                        "content_type": request.headers.get("content-type"),
                    }
                )
                left = self.fail_first.get(name, 0)
                if left:
                    self.fail_first[name] = left - 1
                    return JSONResponse({"no": "thanks"}, status_code=500)
            return JSONResponse({"ok": True})

        app = Starlette(
            routes=[Route("/hooks/{name}", hook, methods=["POST", "PUT", "GET", "PATCH"])]
        )
        self.server = ThreadedServer(app)

    def url(self, name: str) -> str:
        return f"{self.server.url}/hooks/{name}"

    def of(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["name"] == name]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
