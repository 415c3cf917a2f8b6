"""``emulator``: a local Sonar API emulator in the foreground, and the config builder the
``--emulate`` flag shares."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sonar_bulk.api.endpoints import EMULATOR_PUBLISHABLE_KEY, EMULATOR_TOKEN
from sonar_bulk.cli.common import EXIT_OK, cli, guard
from sonar_bulk.errors import UsageError


@cli.command("emulator")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Beyond loopback (such as 0.0.0.0) the admin API needs "
    "--admin-token; one is made and printed once when none is given.",
)
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (the first line shows it).",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="T[:ROLE]",
    help="A private token the emulator accepts; ROLE is valid (default), "
    f"no_subscription or api_disabled. Repeatable. Default: {EMULATOR_TOKEN}.",
)
@click.option(
    "--publishable-key",
    "publishable_keys",
    multiple=True,
    metavar="K",
    help=f"A publishable key it accepts. Default: {EMULATOR_PUBLISHABLE_KEY}.",
)
@click.option(
    "--admin-token",
    envvar="SONAR_EMULATOR_ADMIN_TOKEN",
    show_envvar=True,
    metavar="T",
    help="Token the admin API (/__emulator__/) then requires, as 'Authorization: Bearer T'. "
    "Default: none on loopback; made and printed once beyond it.",
)
@click.option(
    "--campaign",
    "campaigns",
    multiple=True,
    metavar="ID",
    help="A campaign id that exists (added to those in --state). Repeatable. "
    "Default: test_d0Bu23, fall_sale_2026.",
)
@click.option(
    "--rate-limit",
    type=float,
    default=0,
    show_default=True,
    metavar="N",
    help="Requests per second before 429 + Retry-After (0 = unlimited; below 1, one "
    "request every 1/N s).",
)
@click.option(
    "--latency-ms",
    type=float,
    default=0,
    show_default=True,
    metavar="N",
    help="Added to every answer.",
)
@click.option(
    "--jitter-ms",
    type=float,
    default=0,
    show_default=True,
    metavar="N",
    help="Random extra latency, from 0 to N.",
)
@click.option(
    "--fail-rate",
    type=float,
    default=0,
    show_default=True,
    metavar="P",
    help="Probability (0-1) of a fault: 500 before/after the side effect, 503, "
    "connection reset before/after, or a hang after the side effect.",
)
@click.option(
    "--hang-seconds",
    type=float,
    default=40,
    show_default=True,
    metavar="S",
    help="How long a hang fault holds the connection (the default outlasts the api "
    "command's 30 s timeout).",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep state (and pending webhook retries) in this SQLite file across restarts "
    "(default: in memory).",
)
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    show_default=True,
    metavar="X",
    help="Multiply webhook retry delays (10 s, 30 s, 3 min, 30 min) by X.",
)
@click.option(
    "--webhook-queue",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    metavar="N",
    help="Deliveries a webhook may have pending (queued or awaiting a retry); beyond it, "
    "new ones are dropped and counted.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Largest request body; a larger one gets a 413.",
)
@click.option(
    "--api-era",
    type=click.Choice(["2017", "2014"]),
    default="2017",
    show_default=True,
    help="2014 replays the old local server (Bad Token, no phone normalization).",
)
@click.option(
    "--seed",
    type=int,
    show_default="random each run",
    help="Seed for the fault and jitter dice.",
)
@click.option(
    "-v",
    "--log",
    "log_requests",
    is_flag=True,
    help="Print one line per request on stderr: method, path, status, milliseconds "
    "(tokens redacted).",
)
def emulator_cmd(
    host: str,
    port: int,
    tokens: tuple[str, ...],
    publishable_keys: tuple[str, ...],
    admin_token: str | None,
    campaigns: tuple[str, ...],
    rate_limit: float,
    latency_ms: float,
    jitter_ms: float,
    fail_rate: float,
    hang_seconds: float,
    state_file: Path | None,
    time_scale: float,
    webhook_queue: int,
    max_body: int,
    api_era: str,
    seed: int | None,
    log_requests: bool,
) -> None:
    """Run a local Sonar API emulator in the foreground until Ctrl-C.

    It serves every Sonar endpoint under /api/v1 as recorded, keeps customers, messages,
    campaigns and webhooks, delivers webhooks with Sonar's retries, and has an admin API
    under /__emulator__/ (state, reset, request log, faults, inbound messages) that takes
    JSON bodies (Content-Type: application/json) addressed to the emulator's own address.

    \b
    Example:
      sonar-bulk emulator --port 8787 --token secret --rate-limit 50
    """

    def run() -> int:
        if state_file is not None and not state_file.parent.is_dir():
            raise UsageError(f"--state {state_file}: folder {state_file.parent} does not exist")
        config = emulator_config(
            tokens,
            publishable_keys,
            campaigns,
            api_era,
            state_file,
            seed,
            admin_token=admin_token,
            max_body=max_body,
            webhook_queue=webhook_queue,
            rate_limit=rate_limit,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            fail_rate=fail_rate,
            hang_seconds=hang_seconds,
            time_scale=time_scale,
        )
        from sonar_bulk.api.endpoints import mask
        from sonar_bulk.emulator.app import Emulator, format_request
        from sonar_bulk.emulator.server import serve_forever

        def banner(base: str, emulator: Emulator) -> None:
            """Printed once the port is bound, so it shows the real one. Secrets are masked,
            but an admin token made here is shown (once: nobody else knows it)."""
            click.echo(
                f"Sonar emulator: {base}/api/v1  (admin: {base}/__emulator__/state)", err=True
            )
            for token, role in config.tokens.items():
                default = ", the built-in default" if token == EMULATOR_TOKEN else ""
                click.echo(f"  token: {mask(token)} ({role}{default})", err=True)
            for key in config.publishable_keys:
                default = " (the built-in default)" if key == EMULATOR_PUBLISHABLE_KEY else ""
                click.echo(f"  publishable key: {mask(key)}{default}", err=True)
            if config.admin_token and admin_token is None:
                click.echo(
                    f"  admin token: {config.admin_token} (made for this run; send "
                    "'Authorization: Bearer <admin token>')",
                    err=True,
                )
            elif config.admin_token:
                click.echo(f"  admin token: {mask(config.admin_token)}", err=True)
            click.echo(f"  campaigns: {', '.join(emulator.store.campaigns)}", err=True)
            if state_file:
                click.echo(f"  state: {state_file}", err=True)

        if log_requests:
            config.on_request = lambda entry: click.echo(format_request(entry), err=True)
        config.on_notice = lambda text: click.echo(f"sonar-bulk: warning: {text}", err=True)
        serve_forever(config, host, port, on_listening=banner)
        click.echo("emulator stopped", err=True)
        return EXIT_OK

    sys.exit(guard(run, False))


def emulator_config(
    tokens: tuple[str, ...] = (),
    publishable_keys: tuple[str, ...] = (),
    campaigns: tuple[str, ...] = (),
    api_era: str = "2017",
    state_file: Path | None = None,
    seed: int | None = None,
    *,
    admin_token: str | None = None,
    max_body: int = 1024 * 1024,
    webhook_queue: int = 10_000,
    **knobs: float,
) -> Any:
    """Build an EmulatorConfig from command-line values; UsageError on a bad one (naming
    the option)."""
    from sonar_bulk.emulator.app import ROLES, EmulatorConfig, KnobError, Knobs, plain_number

    roles: dict[str, Any] = {}
    for item in tokens or (EMULATOR_TOKEN,):
        token, _, given = item.partition(":")
        role = given or "valid"
        if not token or role not in ROLES:
            raise UsageError(
                f"--token {item!r}: expected TOKEN or TOKEN:ROLE with ROLE one of "
                f"{', '.join(ROLES)}"
            )
        roles[token] = role
    if admin_token is not None and not (
        admin_token and all(32 < ord(c) < 127 for c in admin_token)
    ):
        raise UsageError("--admin-token: expected printable ASCII without spaces")
    settings = Knobs()
    try:
        settings.update({k: v for k, v in knobs.items()})
    except KnobError as exc:
        flag = "--" + exc.name.replace("_", "-")
        raise UsageError(f"{flag} {plain_number(exc.value)}: {exc.rule}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return EmulatorConfig(
        tokens=roles,
        publishable_keys=publishable_keys or (EMULATOR_PUBLISHABLE_KEY,),
        admin_token=admin_token,
        era=api_era,  # type: ignore[arg-type]
        # None: the default campaigns, not added to those a state file keeps
        campaigns={c: f"Campaign {c}" for c in campaigns} if campaigns else None,
        state_file=str(state_file) if state_file else None,
        knobs=settings,
        seed=seed,
        max_body=max_body,
        webhook_queue=webhook_queue,
    )
