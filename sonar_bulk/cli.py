"""The ``sonar-bulk`` command line: thin commands over the library.

Exit codes (one mapping, here):

\b
  0   success; validation found no errors (warnings allowed)
  1   validation found at least one row with an error
  2   usage error, or input that cannot be read
  3   could not reach the API, or it gave no answer (api: connection refused, DNS, timeout)
  70  internal error (a bug: please report it)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from sonar_bulk import __version__
from sonar_bulk.api.endpoints import (
    EMULATOR_PUBLISHABLE_KEY,
    EMULATOR_TOKEN,
    LIVE_BASE_URL,
    SANDBOX_BASE_URL,
)
from sonar_bulk.errors import SonarBulkError, UsageError
from sonar_bulk.schema import KINDS

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130
EXIT_UNREACHABLE = 3  # no answer from the API: refused, DNS, timeout, reset


def _kinds_help() -> str:
    from sonar_bulk.schema import kind_columns

    return "\n".join(
        f"  {kind.name}: {kind_columns(kind).replace('`', '')}" for kind in KINDS.values()
    )


class _Group(click.Group):
    """Click's own usage errors (an unknown option, a bad --kind) as one line of ours too."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "sonar-bulk"
            _fail(f"{exc.format_message()} (see {where} --help)", False)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), False)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("sonar-bulk: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="sonar-bulk")
@click.option(
    "--emulate",
    is_flag=True,
    help="Run API commands against a local Sonar emulator started in-process on a "
    "free port (no account needed; nothing leaves the machine).",
)
@click.pass_context
def cli(ctx: click.Context, emulate: bool) -> None:
    """Validate spreadsheets and push them into Sonar (sendsonar.com) safely.

    \b
    Exit codes: 0 ok, 1 rows with errors (validate) or a non-2xx answer (api),
    2 usage or unreadable input, 3 could not reach the API (no answer),
    70 internal error, 130 interrupted.
    """
    ctx.ensure_object(dict)
    ctx.obj["emulate"] = emulate


def input_options(func: Any) -> Any:
    """Options shared by every command that reads a sheet."""
    for option in reversed(
        [
            click.option(
                "--sheet", metavar="NAME", help="Workbook sheet (default: first visible)."
            ),
            click.option(
                "--header-row",
                type=click.IntRange(min=1),
                metavar="N",
                help="Row holding the headers, as Excel numbers it (default: the first "
                "non-empty row).",
            ),
            click.option(
                "--encoding",
                metavar="ENC",
                help="CSV encoding (default: UTF-8/UTF-16 by BOM, else cp1252 fallback).",
            ),
            click.option(
                "--delimiter",
                metavar="CHAR",
                help="CSV delimiter (default: sniffed among , ; tab |).",
            ),
            click.option(
                "--map",
                "mappings",
                multiple=True,
                metavar='"Header=field"',
                help="Map a source header onto a field; repeatable.",
            ),
            click.option(
                "--default-region",
                default="US",
                show_default=True,
                metavar="CC",
                help="Region for phone numbers written without a country code.",
            ),
        ]
    ):
        func = option(func)
    return func


@cli.command("validate", epilog="Kinds and columns (* = required):\n\n\b\n" + _kinds_help())
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--kind",
    "kind_name",
    required=True,
    type=click.Choice(list(KINDS)),
    help="What the sheet holds.",
)
@input_options
@click.option(
    "--extra-columns",
    type=click.Choice(["warn", "properties", "ignore"]),
    default="warn",
    show_default=True,
    help="customers: unknown columns are reported (warn), imported as custom "
    "properties, or ignored.",
)
@click.option(
    "--campaign-id",
    metavar="ID",
    help="campaign_recipients: campaign for rows without a campaign_id.",
)
@click.option(
    "--timezone",
    metavar="TZ",
    help="campaign_recipients: zone for send_at values without an offset.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write the issues to this .csv or .xlsx file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--split",
    is_flag=True,
    help="Write <stem>.valid.<ext> and <stem>.invalid.<ext> beside the input.",
)
@click.option(
    "--max-issues",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="N",
    help="Issues shown in the summary.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace a --report or --split file that sonar-bulk did not write.",
)
def validate_cmd(
    file: Path,
    kind_name: str,
    sheet: str | None,
    header_row: int | None,
    encoding: str | None,
    delimiter: str | None,
    mappings: tuple[str, ...],
    default_region: str,
    extra_columns: str,
    campaign_id: str | None,
    timezone: str | None,
    report_path: Path | None,
    as_json: bool,
    split: bool,
    max_issues: int,
    quiet: bool,
    force: bool,
) -> None:
    """Check every row of FILE before anything touches the API (a dry run).

    Reports each problem with its row (as Excel numbers it, header = row 1), column, value, a
    stable code and how to fix it. Exit 0 when no row has an error, 1 otherwise.

    \b
    Example:
      sonar-bulk validate samples/customers.csv --kind customers --report issues.xlsx
    """
    from sonar_bulk import normalize as nz
    from sonar_bulk import report as rp
    from sonar_bulk.outputs import check_output_path
    from sonar_bulk.schema import parse_map_option
    from sonar_bulk.sheets import read_sheet
    from sonar_bulk.validate import ISSUE_COLUMNS, ValidateOptions, validate_sheet

    def run() -> int:
        try:
            mapping = parse_map_option(mappings)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if report_path is not None:
            if file.exists() and report_path.exists() and report_path.samefile(file):
                raise UsageError(f"--report {report_path}: that is the input file")
            if split and report_path.resolve() in {p.resolve() for p in rp.split_paths(file)}:
                raise UsageError(f"--report {report_path}: that is where --split writes")
            check_output_path(report_path, "--report", force=force, ours=ISSUE_COLUMNS)
        data = read_sheet(
            file, sheet=sheet, encoding=encoding, delimiter=delimiter, header_row=header_row
        )
        options = ValidateOptions(
            default_region=default_region.upper(),
            mapping=mapping,
            extra_columns=extra_columns,
            campaign_id=campaign_id,
            timezone=timezone,
        )
        try:
            result = validate_sheet(data, KINDS[kind_name], options)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if split:
            rp.check_split(result, force=force)
        if not quiet:
            click.echo(rp.human_summary(result, max_issues), err=True)
        if report_path is not None:
            rp.write_issues(result, report_path)
            if not quiet:
                click.echo(f"  report: {report_path}", err=True)
        if split:
            valid_path, invalid_path = rp.write_split(result)
            if not quiet:
                click.echo(
                    f"  split: {valid_path} ({nz.plural(result.valid_rows, 'row')}), "
                    f"{invalid_path} ({nz.plural(result.invalid_rows, 'row')})",
                    err=True,
                )
        if as_json:
            with _stdout() as out:
                rp.write_json(result, out)
        return EXIT_INVALID if result.errors else EXIT_OK

    sys.exit(_guard(run, as_json))


@cli.command("template")
@click.argument("kind_name", metavar="KIND", type=click.Choice(list(KINDS)))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="File to write (.xlsx or .csv).",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def template_cmd(kind_name: str, output: Path, force: bool) -> None:
    """Write a blank sheet of KIND to fill in: header, one example row and, in .xlsx,
    Text-formatted columns, drop-downs and an Instructions sheet.

    The example row is there to show the format: replace or delete it (validate reports it as
    row.example, so it is never sent by mistake). An existing file is never replaced without
    --force.

    \b
    Example:
      sonar-bulk template customers -o customers.xlsx
    """
    from sonar_bulk.outputs import check_output_path
    from sonar_bulk.templates import write_template

    def run() -> int:
        check_output_path(output, "template", force=force)
        path = write_template(kind_name, output)
        click.echo(str(path))
        return EXIT_OK

    sys.exit(_guard(run, False))


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

    sys.exit(_guard(run, False))


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

    sys.exit(_guard(run, False))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _printable_ascii(text: str) -> bool:
    return all(32 < ord(c) < 127 for c in text)


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


def _guard(run: Any, as_json: bool) -> int:
    """Run a command body; turn every failure into one line on stderr and an exit code."""
    try:
        return int(run())
    except SonarBulkError as exc:
        _fail(str(exc), as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("sonar-bulk: interrupted", err=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), as_json)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get("SONAR_BULK_DEBUG"):
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set SONAR_BULK_DEBUG=1 for "
            "details, and please report it)",
            as_json,
        )
        return EXIT_INTERNAL


@contextlib.contextmanager
def _stdout() -> Iterator[Any]:
    """Standard output for machine output. When it can't be written (a closed pipe, a full
    disk), that is one error line, and stdout is pointed at the null device so that nothing
    fails again at exit."""
    try:
        if sys.stdout is None:
            raise OSError("standard output is closed")
        yield sys.stdout
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the run
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot write to standard output: {reason}") from None


def _fail(message: str, as_json: bool) -> None:
    line = " ".join(message.split())
    click.echo(f"sonar-bulk: error: {line}", err=True)
    if as_json:
        click.echo(json.dumps({"error": line}))


def main() -> None:
    """Console-script entry point."""
    import signal

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the same clean stop as Ctrl-C: partial files removed

    signal.signal(signal.SIGTERM, terminated)
    try:
        cli(prog_name="sonar-bulk", obj={})
    except KeyboardInterrupt:
        click.echo("sonar-bulk: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug outside a command body: still one line, never a traceback
        if os.environ.get("SONAR_BULK_DEBUG"):
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set SONAR_BULK_DEBUG=1 for "
            "details, and please report it)",
            False,
        )
        sys.exit(EXIT_INTERNAL)
