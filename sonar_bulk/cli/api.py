"""``api``: one authorized call to any Sonar API path (or to an emulator started in-process)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import click

from sonar_bulk.api.endpoints import (
    EMULATOR_PUBLISHABLE_KEY,
    EMULATOR_TOKEN,
    LIVE_BASE_URL,
    SANDBOX_BASE_URL,
)
from sonar_bulk.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNREACHABLE,
    _no_constant,
    _printable_ascii,
    cli,
    guard,
)
from sonar_bulk.cli.emulator import emulator_config
from sonar_bulk.errors import SonarBulkError, UsageError


@cli.command("api")
@click.argument("method", type=click.Choice(["GET", "POST", "PUT", "DELETE"], case_sensitive=False))
@click.argument("path")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter (query for GET, form body otherwise); repeatable. Nested keys "
    "as in properties[plan]=gold.",
)
@click.option(
    "--json-body",
    metavar="JSON",
    help="Send this JSON object as the body instead (not together with -p).",
)
@click.option(
    "--token",
    envvar="SONAR_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Private token (prefer the environment variable).",
)
@click.option(
    "--publishable-key",
    envvar="SONAR_PUBLISHABLE_KEY",
    show_envvar=True,
    metavar="KEY",
    help="Publishable key, for /phone_numbers/available.",
)
@click.option(
    "--base-url",
    envvar="SONAR_BASE_URL",
    show_envvar=True,
    default=LIVE_BASE_URL,
    metavar="URL",
    help=f"API base URL. Default: the LIVE Sonar API {LIVE_BASE_URL}; use --emulate or "
    f"--base-url to avoid it (the sandbox is {SANDBOX_BASE_URL}).",
)
@click.option(
    "--emulate",
    "emulate",
    is_flag=True,
    help="Call a local emulator started in-process instead, like the global "
    "`sonar-bulk --emulate api ...` (no account needed; nothing leaves the machine).",
)
@click.pass_context
def api_cmd(
    ctx: click.Context,
    method: str,
    path: str,
    params: tuple[str, ...],
    json_body: str | None,
    token: str | None,
    publishable_key: str | None,
    base_url: str,
    emulate: bool,
) -> None:
    """Make one authorized call to any Sonar API path and print the JSON answer.

    Default: the LIVE Sonar API (https://www.sendsonar.com/api/v1); use --emulate or
    --base-url to avoid it. PATH is an API path (/customers; /api/v1/customers works too) or a
    full URL under the base URL; a URL to any other host is refused, so the token only ever
    goes to the base URL.

    Exit 0 for a 2xx answer, 1 otherwise, 3 when the API could not be reached (no answer).
    The token is sent as a header and never printed.

    \b
    Example:
      sonar-bulk api --emulate POST /customers -p phone_number=+13105550101 -p first_name=Ana
    """
    import re
    from urllib.parse import urlsplit

    import httpx

    from sonar_bulk.api.endpoints import api_url, redact, secret_forms

    def run() -> int:
        if params and json_body is not None:
            raise UsageError(
                "-p and --json-body cannot be used together: put every parameter in the JSON "
                "body, or pass them all with -p"
            )
        body: dict[str, Any] = {}
        for item in params:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"-p {item!r}: expected KEY=VALUE")
            body.setdefault(key, []).append(value)
        pairs = [(k, v) for k, vs in body.items() for v in vs]
        request: dict[str, Any] = {}
        if json_body is not None:
            try:
                request["json"] = json.loads(json_body, parse_constant=_no_constant)
            except ValueError as exc:
                raise UsageError(f"--json-body is not valid JSON: {exc}") from exc
        emulated = emulate or bool((ctx.obj or {}).get("emulate"))
        for name, secret in (("token", token), ("publishable key", publishable_key)):
            if secret is not None and not _printable_ascii(secret.strip()):
                raise UsageError(
                    f"the {name} has a line break, a control or a non-ASCII character; check "
                    "SONAR_TOKEN / --token (the value is not shown)"
                )
        with _api_target(
            emulated, base_url, token and token.strip(), publishable_key and publishable_key.strip()
        ) as (url, tok, pkey):
            secrets = secret_forms(tok, pkey)
            # With --emulate, a URL copied from the docs (live or sandbox) or --base-url is
            # answered by the emulator, with the emulator's token.
            aliases = (base_url, LIVE_BASE_URL, SANDBOX_BASE_URL) if emulated else ()
            try:
                target = api_url(url, path, aliases=aliases)
            except ValueError as exc:
                raise UsageError(redact(str(exc), secrets)) from None
            headers = {}
            if tok:
                headers["Token"] = tok
            if pkey:
                headers["X-Publishable-Key"] = pkey
            if not tok and not pkey:
                raise UsageError("no token: set SONAR_TOKEN (or pass --token), or use --emulate")
            request["headers"] = headers
            if json_body is None and method.upper() == "GET":
                if pairs:  # added to a query the path may already have (httpx would drop it)
                    request["params"] = httpx.URL(target).params.merge(pairs)
            elif pairs:
                # form-encoded like the official gem; repeated keys (tag_names[]=a) kept
                request["content"] = urlencode(pairs, safe="[]")
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            try:
                response = httpx.request(
                    method.upper(), target, timeout=30, trust_env=False, **request
                )
            except httpx.TransportError as exc:
                parts = urlsplit(target)  # named without user:password@ or the query
                host = parts.netloc.rpartition("@")[2]
                where = redact(f"{parts.scheme}://{host}{parts.path}", secrets)
                reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
                if isinstance(exc, httpx.ConnectTimeout):
                    reason = "timed out connecting"
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    message = f"could not reach the API at {where}: {reason}"
                elif isinstance(exc, httpx.TimeoutException):
                    message = (
                        f"no answer from {where} within 30 s ({type(exc).__name__}); the "
                        "request may have been processed"
                    )
                else:
                    message = (
                        f"the connection to {where} failed before an answer ({reason}); the "
                        "request may have been processed"
                    )
                unreachable = SonarBulkError(redact(message, secrets))
                unreachable.exit_code = EXIT_UNREACHABLE
                raise unreachable from None
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
                raise UsageError(
                    redact(f"{method.upper()} {target}: {type(exc).__name__}: {exc}", secrets)
                ) from None
            status = f"{response.status_code} {response.reason_phrase}"
            click.echo(redact(status, secrets), err=True)
            try:
                text = json.dumps(response.json(), indent=2, ensure_ascii=False)
            except ValueError:
                text = response.text
            click.echo(redact(text, secrets))
            return EXIT_OK if response.is_success else EXIT_INVALID

    sys.exit(guard(run, False))


@contextlib.contextmanager
def _api_target(
    emulate: bool, base_url: str, token: str | None, publishable_key: str | None
) -> Iterator[tuple[str, str | None, str | None]]:
    """(base URL, token, publishable key) for an API command: the real API, or with
    ``emulate`` an emulator started in-process on a free port, with its own token."""
    if not emulate:
        yield base_url, token, publishable_key
        return
    from sonar_bulk.emulator.server import EmulatorServer

    with EmulatorServer(emulator_config()) as server:
        click.echo(f"using the emulator at {server.api_url}", err=True)
        yield server.api_url, EMULATOR_TOKEN, EMULATOR_PUBLISHABLE_KEY
