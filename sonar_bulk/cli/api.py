"""``api``: one authorized call to any Sonar API path (or to the emulator started in-process),
made through :class:`~sonar_bulk.api.client.SonarClient` like every other call.

Also the pieces ``connect`` shares: where the call goes (:func:`api_connection`) and one call
made from synchronous code (:func:`call_once`)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from sonar_bulk.api.endpoints import LIVE_BASE_URL, SANDBOX_BASE_URL
from sonar_bulk.cli.common import _no_constant, cli, guard
from sonar_bulk.errors import ApiError, ExitCode, NoAnswer, UsageError, exit_code_for

if TYPE_CHECKING:
    from sonar_bulk.api.client import Answer
    from sonar_bulk.connection import Connection


def connection_options(func: Any) -> Any:
    """Where the API is and which token: every command that calls it takes these."""
    for option in reversed(
        [
            click.option(
                "--token",
                envvar="SONAR_TOKEN",
                show_envvar=True,
                metavar="TOKEN",
                help="Private token (prefer the environment variable, or a saved --profile).",
            ),
            click.option(
                "--base-url",
                envvar="SONAR_BASE_URL",
                show_envvar=True,
                metavar="URL",
                help="API base URL. Default: the profile's, else the LIVE Sonar API "
                f"{LIVE_BASE_URL}; use --emulate or --base-url to avoid it.",
            ),
            click.option(
                "--sandbox",
                is_flag=True,
                help=f"Use Sonar's sandbox API ({SANDBOX_BASE_URL}).",
            ),
            click.option(
                "--profile",
                envvar="SONAR_PROFILE",
                show_envvar=True,
                metavar="NAME",
                help="A profile saved by `sonar-bulk connect` (default: the one called "
                "'default', when no token is given).",
            ),
            click.option(
                "--emulate",
                "emulate_here",
                is_flag=True,
                help="Use the embedded emulator, as the global --emulate does.",
            ),
        ]
    ):
        func = option(func)
    return func


@contextlib.contextmanager
def api_connection(
    ctx: click.Context,
    *,
    token: str | None,
    base_url: str | None,
    sandbox: bool = False,
    profile: str | None = None,
    publishable_key: str | None = None,
    emulate_here: bool = False,
    quiet: bool = False,
) -> Iterator[Connection]:
    """The connection the flags ask for (:func:`sonar_bulk.connection.resolve`), or with
    ``--emulate`` (global or here) the emulator in-process, whose world is kept between
    commands as the bulk commands keep it. Under ``--emulate`` a ``--base-url`` (and the live
    and sandbox URLs) are answered by the emulator, with the emulator's token."""
    from sonar_bulk import connection as cn

    if emulate_here or (ctx.obj or {}).get("emulate"):
        with cn.emulated(aliases=(base_url,) if base_url else ()) as conn:
            if not quiet:
                click.echo(
                    f"using the emulator at {conn.base_url} (its state: "
                    f"{cn.emulator_state_path()}; sonar-bulk emulator-reset clears it)",
                    err=True,
                )
            yield conn
        return
    yield cn.resolve(
        token=token,
        base_url=base_url,
        sandbox=sandbox,
        profile=profile,
        publishable_key=publishable_key,
    )


def call_once(
    conn: Connection,
    method: str,
    path: str,
    *,
    params: Sequence[tuple[str, str]] = (),
    json_body: Any = None,
) -> Answer:
    """One call through :class:`~sonar_bulk.api.client.SonarClient`; its answer whatever the
    status. No answer at all (refused, DNS, timeout, a reset) is :class:`NoAnswer`, its
    message one redacted line."""
    import asyncio

    from sonar_bulk.api.client import SonarClient

    async def go() -> Answer:
        async with SonarClient(
            conn.base_url,
            token=conn.token,
            publishable_key=conn.publishable_key,
            aliases=conn.aliases,
        ) as client:
            return await client.request(
                method,
                path,
                params=list(params),
                json_body=json_body,
                sends=method.upper() != "GET",
            )

    try:
        return asyncio.run(go())
    except ApiError as exc:  # request() raises only for a transport failure: no answer
        raise NoAnswer(str(exc)) from None


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
    "--publishable-key",
    envvar="SONAR_PUBLISHABLE_KEY",
    show_envvar=True,
    metavar="KEY",
    help="Publishable key, for /phone_numbers/available.",
)
@connection_options
@click.pass_context
def api_cmd(
    ctx: click.Context,
    method: str,
    path: str,
    params: tuple[str, ...],
    json_body: str | None,
    token: str | None,
    publishable_key: str | None,
    base_url: str | None,
    sandbox: bool,
    profile: str | None,
    emulate_here: bool,
) -> None:
    """Make one authorized call to any Sonar API path and print the JSON answer.

    Default: the LIVE Sonar API (https://www.sendsonar.com/api/v1); use --emulate, --sandbox
    or --base-url to avoid it. PATH is an API path (/customers; /api/v1/customers works too)
    or a full URL under the base URL; a URL to any other host is refused, so the token only
    ever goes to the base URL.

    Exit 0 for a 2xx answer, 5 when the API refused the token or the account (a 401, no
    subscription, the API disabled), 1 for another answer, 3 when the API could not be
    reached (no answer). The token is sent as a header and never printed.

    \b
    Example:
      sonar-bulk api --emulate POST /customers -p phone_number=+13105550101 -p first_name=Ana
    """
    from sonar_bulk.api.client import answer_text, api_error
    from sonar_bulk.api.endpoints import redact, secret_forms

    def run() -> int:
        if params and json_body is not None:
            raise UsageError(
                "-p and --json-body cannot be used together: put every parameter in the JSON "
                "body, or pass them all with -p"
            )
        pairs: list[tuple[str, str]] = []
        for item in params:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"-p {item!r}: expected KEY=VALUE")
            pairs.append((key, value))
        # grouped by key, first appearance first, as before (tag_names[]=a&tag_names[]=b)
        order = {key: i for i, (key, _) in reversed(list(enumerate(pairs)))}
        pairs.sort(key=lambda pair: order[pair[0]])
        body: Any = None
        if json_body is not None:
            try:
                body = json.loads(json_body, parse_constant=_no_constant)
            except ValueError as exc:
                raise UsageError(f"--json-body is not valid JSON: {exc}") from exc
        with api_connection(
            ctx,
            token=token,
            base_url=base_url,
            sandbox=sandbox,
            profile=profile,
            publishable_key=publishable_key,
            emulate_here=emulate_here,
        ) as conn:
            secrets = secret_forms(conn.token, conn.publishable_key)
            answer = call_once(conn, method, path, params=pairs, json_body=body)
        click.echo(redact(f"{answer.status} {answer.reason}", secrets), err=True)
        if "webhooks" in path:  # a collector's webhook: its secret path stays hidden
            from sonar_bulk.events.collect import mask_webhooks

            answer.body = mask_webhooks(answer.body)
        click.echo(redact(answer_text(answer), secrets))
        if answer.ok:
            return ExitCode.OK
        # read as a bulk run reads it: a refused token or account is REFUSED here too
        return exit_code_for(api_error(None, answer))

    sys.exit(guard(run, False))
