"""Run the emulator: in the foreground (``sonar-bulk emulator``) or in a background thread on a
free port (``--emulate``, tests)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx

from sonar_bulk.api.endpoints import BASE_PATH
from sonar_bulk.emulator.app import Emulator, EmulatorConfig, create_app, is_loopback
from sonar_bulk.errors import UsageError
from sonar_bulk.serving import Server, ThreadedServer, http_url, listen, uvicorn_config


class EmulatorServer(ThreadedServer):
    """The emulator on a free port in a background thread (``--emulate`` and the tests).

    >>> with EmulatorServer() as server:  # doctest: +SKIP
    ...     server.admin("GET", "/state")
    """

    def __init__(
        self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or EmulatorConfig()
        ensure_admin_token(self.config, host)
        app = create_app(self.config)
        self.emulator: Emulator = app.state.emulator
        self._client: httpx.Client | None = None
        super().__init__(app, host, port, self.emulator.interrupt)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    @property
    def client(self) -> httpx.Client:
        """One pooled HTTP client for this server (keep-alive connections; no proxies from the
        environment), made on first use and closed by :meth:`stop`."""
        if self._client is None:
            self._client = httpx.Client(timeout=10, trust_env=False)
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop()

    @property
    def api_url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:40123/api/v1``."""
        return self.url + BASE_PATH

    @property
    def admin_url(self) -> str:
        return self.url + "/__emulator__"

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        """Call the admin API (a convenience for tests and demos): a JSON body on every
        request but a GET, and the admin token when there is one."""
        body = {} if json is None and method.upper() not in ("GET", "HEAD") else json
        response = self.client.request(
            method, self.admin_url + path, json=body, headers=admin_headers(self.config)
        )
        response.raise_for_status()
        return response.json()


def admin_headers(config: EmulatorConfig) -> dict[str, str]:
    """What an admin request must carry beyond its JSON body: the admin token, if any."""
    return {"Authorization": f"Bearer {config.admin_token}"} if config.admin_token else {}


def ensure_admin_token(config: EmulatorConfig, host: str) -> bool:
    """Beyond loopback the admin API needs a token: make one when ``config`` has none
    (True when one was made, for the banner to show once)."""
    if config.admin_token is None and not is_loopback(host):
        config.admin_token = secrets.token_urlsafe(24)
        return True
    return False


def serve_forever(
    config: EmulatorConfig,
    host: str,
    port: int,
    on_listening: Callable[[str, Emulator], None] | None = None,
) -> None:
    """Run in the foreground until Ctrl-C or SIGTERM, which stop it normally (a request
    that is hanging or waiting is ended, quietly).

    The app is built (with an admin token made beyond loopback, see
    :func:`ensure_admin_token`) and the socket bound first (UsageError when the port is
    taken), then ``on_listening`` is called with the server's real URL (``--port 0`` picks a
    free port) and the emulator, then it serves.
    """
    ensure_admin_token(config, host)
    app = create_app(config)
    emulator: Emulator = app.state.emulator
    try:
        sock = listen(host, port)
    except UsageError:
        emulator.store.close()
        raise
    server = Server(uvicorn_config(app, host, port, "warning"), emulator.interrupt)
    with sock, server.stopped_by_signals():
        if on_listening is not None:
            on_listening(http_url(host, sock.getsockname()[1]), emulator)
        server.run(sockets=[sock])
