"""``ui``: the local web page (sonar_bulk.web), served on 127.0.0.1 with a per-launch key."""

from __future__ import annotations

import contextlib
import secrets
import sys
import threading
from typing import Any

import click

from sonar_bulk.cli.api import api_connection, connection_options
from sonar_bulk.cli.common import EXIT_OK, cli, guard

HOST = "127.0.0.1"
DEFAULT_PORT = 8789


@cli.command("ui")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port on 127.0.0.1 (0: a free one).",
)
@click.option("--no-open", is_flag=True, help="Print the address; don't open a browser.")
@connection_options
@click.pass_context
def ui_cmd(ctx: click.Context, /, port: int, no_open: bool, **conn_kw: Any) -> None:
    """Open the web page: drop a sheet, map its columns, fix it in the grid, dry run, run
    with live progress, download the results.

    It serves on 127.0.0.1 only, at an address with a key that changes each launch; the
    Sonar token stays here and never reaches the browser. Ctrl-C stops it (a run in progress
    stops as with the CLI: the requests in flight finish, journal and results are kept).

    \b
    Example:
      sonar-bulk --emulate ui
    """

    def run() -> int:
        from sonar_bulk.serving import Server, listen, uvicorn_config
        from sonar_bulk.web.app import create_app
        from sonar_bulk.web.session import Session

        key = secrets.token_urlsafe(24)
        with api_connection(ctx, **conn_kw) as conn:
            session = Session(lambda: contextlib.nullcontext(conn))
            sock = listen(HOST, port)
            real = sock.getsockname()[1]
            app = create_app(session, key, real, conn.label)
            url = f"http://{HOST}:{real}/?key={key}"
            server = Server(uvicorn_config(app, HOST, real, "warning"), session.shutdown)
            with sock, server.stopped_by_signals():
                click.echo(f"sonar-bulk ui at {url}", err=True)
                click.echo(f"  runs go to {conn.label}; Ctrl-C stops the page", err=True)
                if not no_open:
                    threading.Timer(0.5, _open, (url,)).start()
                server.run(sockets=[sock])
            session.shutdown(wait=True)
        return EXIT_OK

    sys.exit(guard(run, False))


def _open(url: str) -> None:
    import webbrowser

    with contextlib.suppress(Exception):
        webbrowser.open(url)
