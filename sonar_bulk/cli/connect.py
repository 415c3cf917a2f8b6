"""``connect``: check a token against the API and save it as a profile; ``emulator-reset``:
forget the world ``--emulate`` keeps."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from sonar_bulk.api.endpoints import LIVE_BASE_URL, SANDBOX_BASE_URL
from sonar_bulk.cli.api import api_connection, call_once
from sonar_bulk.cli.common import EXIT_OK, cli, guard, json_option, print_json
from sonar_bulk.errors import CheckFailed, ConfigError, FatalApiError, UsageError

if TYPE_CHECKING:
    from sonar_bulk.connection import Connection

#: The harmless read that proves a token: a customer lookup (200 or 404 both mean the token
#: was accepted; nothing is written).
CHECK_PHONE = "+13105550100"


def _can_prompt() -> bool:
    """Whether a person can type the token (stdin is a terminal)."""
    return bool(sys.stdin and sys.stdin.isatty())


@cli.command("connect")
@click.option(
    "--profile",
    envvar="SONAR_PROFILE",
    show_envvar=True,
    default="default",
    show_default=True,
    metavar="NAME",
    help="The profile to save (or replace). Commands use 'default' when no token is given, "
    "another with --profile NAME.",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help=f"Save Sonar's sandbox API ({SANDBOX_BASE_URL}).",
)
@click.option(
    "--base-url",
    envvar="SONAR_BASE_URL",
    show_envvar=True,
    metavar="URL",
    help=f"API base URL. Default: the profile's when it is replaced, else the LIVE API "
    f"{LIVE_BASE_URL}.",
)
@click.option(
    "--token",
    envvar="SONAR_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Private token. Default: asked for, without echo, when run in a terminal.",
)
@click.option(
    "--emulate",
    "emulate_here",
    is_flag=True,
    help="Check against the embedded emulator (its own token) instead; nothing is saved.",
)
@json_option
@click.pass_context
def connect_cmd(
    ctx: click.Context,
    profile: str,
    sandbox: bool,
    base_url: str | None,
    token: str | None,
    emulate_here: bool,
    as_json: bool,
) -> None:
    """Check a Sonar token with a harmless read and save it as a profile.

    The read is GET /customers?phone_number=+13105550100 (nothing is written). Profiles are
    kept in profiles.json in your config directory, readable by you only (mode 0600); the
    token is never printed. A refused token is not saved.

    Exit 0 when saved, 5 when the API refused the token or the account, 1 for another
    answer that does not prove the token, 2 for a usage error (no token and no terminal to
    ask in), 3 when the API could not be reached, 130 when stopped at the question.

    \b
    Example:
      sonar-bulk connect                     (asks for the token)
      SONAR_TOKEN=... sonar-bulk connect --profile staging --sandbox
    """
    from sonar_bulk import connection as cn
    from sonar_bulk.api.endpoints import api_url, mask, redact

    def run() -> int:
        cn.check_profile_name(profile)
        if (ctx.obj or {}).get("emulate") or emulate_here:
            with api_connection(ctx, token=None, base_url=None, emulate_here=True) as conn:
                status = check(conn)
                target, emulated_url = conn.label, conn.base_url
            click.echo(
                f"the emulator accepted its token ({status}); nothing saved: --emulate only "
                "rehearses connect",
                err=as_json,
            )
            if as_json:
                print_json(
                    {
                        "command": "connect",
                        "profile": profile,
                        "target": target,
                        "base_url": emulated_url,
                        "status": status,
                        "saved": False,
                        "profiles": None,
                        "exit_code": EXIT_OK,
                    }
                )
            return EXIT_OK
        if base_url and sandbox:
            raise UsageError("--sandbox and --base-url name two APIs; pick one")
        url = (
            base_url
            or (SANDBOX_BASE_URL if sandbox else None)
            or cn.load_profiles().get(profile, {}).get("base_url")
            or LIVE_BASE_URL
        )
        try:
            api_url(url, "/")
        except ValueError as exc:
            raise ConfigError(redact(str(exc))) from None
        given = token.strip() if token else None
        if not given:
            if not _can_prompt():
                raise UsageError(
                    "no token: pass --token or set SONAR_TOKEN (or run sonar-bulk connect in "
                    "a terminal to type it)"
                )
            given = click.prompt(f"Sonar token for {url}", hide_input=True, err=True)
        conn = cn.resolve(token=given, base_url=url)
        assert conn.token is not None  # resolve() insists on one
        status = check(conn)
        path = cn.save_profile(profile, conn.base_url, conn.token)
        click.echo(
            f"saved profile {profile!r} ({conn.base_url}, token {mask(conn.token)}; the API "
            f"answered {status}) in {path}",
            err=as_json,
        )
        use = (
            "when no token is given"
            if profile == cn.DEFAULT_PROFILE
            else f"with --profile {profile}"
        )
        click.echo(f"commands use it {use}", err=True)
        if as_json:
            print_json(
                {
                    "command": "connect",
                    "profile": profile,
                    "target": conn.label,
                    "base_url": conn.base_url,
                    "status": status,
                    "saved": True,
                    "profiles": str(path),
                    "exit_code": EXIT_OK,
                }
            )
        return EXIT_OK

    sys.exit(guard(run, as_json))


def check(conn: Connection) -> str:
    """GET a customer with the connection's token: its status line when the answer proves
    the token (a 200, or a 404 for no such customer); FatalApiError when the API refused
    the token or the account (read as every command reads it), CheckFailed otherwise."""
    from sonar_bulk.api.client import api_error
    from sonar_bulk.api.endpoints import redact, secret_forms

    answer = call_once(conn, "GET", "/customers", params=[("phone_number", CHECK_PHONE)])
    secrets = secret_forms(conn.token, conn.publishable_key)
    status = redact(f"{answer.status} {answer.reason}".strip(), secrets)
    said = f"{status}: {redact(answer.error, secrets)}" if answer.error else status
    if answer.status in (200, 404):
        if not isinstance(answer.body, dict):
            raise CheckFailed(
                f"{conn.base_url} answered {status}, but not as the Sonar API does (no JSON "
                "body): check --base-url; nothing saved"
            )
        return status
    refusal = api_error(None, answer, lambda text: redact(text, secrets))
    if isinstance(refusal, FatalApiError):  # a bad token (401), or an account without the API
        if answer.status == 401:
            message = f"the token was refused by {conn.base_url} ({said})"
        else:
            message = f"the token is known, but the account cannot use the API: {said}"
        raise FatalApiError(f"{message}; nothing saved", status=answer.status, error=refusal.error)
    raise CheckFailed(f"unexpected answer from {conn.base_url} ({said}); nothing saved")


@cli.command("emulator-reset")
@json_option
def emulator_reset_cmd(as_json: bool) -> None:
    """Forget the world --emulate keeps between commands (its customers, messages, campaigns
    and webhooks); the next --emulate run starts empty.

    \b
    Example:
      sonar-bulk emulator-reset
    """
    from sonar_bulk import connection as cn

    def run() -> int:
        path = cn.emulator_state_path()
        existed = path.exists()
        cn.reset_emulated_world()
        if existed:
            click.echo(f"forgot the emulated world kept in {path}", err=as_json)
        else:
            click.echo(f"no emulated world to forget (it would be kept in {path})", err=as_json)
        if as_json:
            print_json(
                {
                    "command": "emulator-reset",
                    "state": str(path),
                    "forgot": existed,
                    "exit_code": EXIT_OK,
                }
            )
        return EXIT_OK

    sys.exit(guard(run, as_json))
