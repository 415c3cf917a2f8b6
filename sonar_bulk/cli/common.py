"""What every command module shares: the ``cli`` group, the exit codes, the sheet-reading
options, and the guard that turns any failure into one error line and an exit code."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import click

from sonar_bulk.errors import ExitCode, SonarBulkError, UsageError, exit_code_for, exit_codes_text
from sonar_bulk.schema import KINDS

# The old names of the exit codes (:class:`~sonar_bulk.errors.ExitCode` is the one list).
EXIT_OK = ExitCode.OK
EXIT_INVALID = ExitCode.ROWS
EXIT_USAGE = ExitCode.USAGE
EXIT_UNREACHABLE = ExitCode.UNREACHABLE
EXIT_REFUSED = ExitCode.REFUSED
EXIT_INTERNAL = ExitCode.INTERNAL
EXIT_INTERRUPTED = EXIT_ABORTED = ExitCode.ABORTED


def _kinds_help() -> str:
    from sonar_bulk.schema import kind_columns

    return "\n".join(
        f"  {kind.name}: {kind_columns(kind).replace('`', '')}" for kind in KINDS.values()
    )


def _json_asked(args: list[str], ctx: click.Context | None) -> bool:
    """Whether a command that has ``--json`` was given it (before a ``--``): Click's own usage
    errors then print their ``{"error": ...}`` line on stdout too. A group (an unknown
    command) counts as having it."""
    given = args[: args.index("--")] if "--" in args else args
    if "--json" not in given:
        return False
    command = ctx.command if ctx is not None else None
    if command is None or isinstance(command, click.Group):
        return True
    return any("--json" in param.opts for param in command.params)


class _Group(click.Group):
    """Click's own usage errors (an unknown option, a bad --kind) as one line of ours too (and
    as JSON on stdout with ``--json``).

    ``lazy`` names the module that defines each command (and registers it on the group when
    imported): a command's module is imported only when the command is looked up, so
    ``sonar-bulk validate`` never imports the bulk, webhook or emulator commands. ``--help``
    looks every command up for its summary, so command modules import only what their options
    need and leave the rest to their command bodies (``tests/test_startup.py``)."""

    #: The arguments as given (a bulk run prints them back as its resume command).
    raw_args: list[str] = []

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            importlib.import_module(self.lazy[cmd_name])
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        given = args[0] if args else kwargs.get("args")
        _Group.raw_args = [str(a) for a in (sys.argv[1:] if given is None else given)]
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(exit_code_for(exc))
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "sonar-bulk"
            message = f"{exc.format_message()} (see {where} --help)"
            fail(message, _json_asked(_Group.raw_args, exc.ctx))
            sys.exit(exit_code_for(exc))
        except click.ClickException as exc:
            fail(exc.format_message(), _json_asked(_Group.raw_args, None))
            sys.exit(exit_code_for(exc))
        except click.exceptions.Abort as exc:
            click.echo("sonar-bulk: interrupted", err=True)
            sys.exit(exit_code_for(exc))
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version``, as Click's own version option prints it; the version is looked up only
    when asked (importlib.metadata is slow to import)."""
    if not value or ctx.resilient_parsing:
        return
    from sonar_bulk import __version__

    click.echo(f"sonar-bulk, version {__version__}", color=ctx.color)
    ctx.exit()


#: The top-level --help's epilog: the exit codes, from :class:`~sonar_bulk.errors.ExitCode`.
EPILOG = "\b\nExit codes (the same in every command):\n" + exit_codes_text()


#: Every top-level command, and the module that defines it.
COMMAND_MODULES = {
    "api": "sonar_bulk.cli.api",
    "campaigns": "sonar_bulk.cli.bulk",
    "connect": "sonar_bulk.cli.connect",
    "customers": "sonar_bulk.cli.bulk",
    "demo": "sonar_bulk.cli.demo",
    "emulator": "sonar_bulk.cli.emulator",
    "emulator-reset": "sonar_bulk.cli.connect",
    "messages": "sonar_bulk.cli.bulk",
    "properties": "sonar_bulk.cli.bulk",
    "settle": "sonar_bulk.cli.settle",
    "template": "sonar_bulk.cli.validate",
    "ui": "sonar_bulk.cli.ui",
    "validate": "sonar_bulk.cli.validate",
    "webhooks": "sonar_bulk.cli.webhooks",
}


@click.group(
    cls=_Group,
    lazy=COMMAND_MODULES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
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
    Example:
      sonar-bulk validate samples/customers.csv --kind customers
      sonar-bulk --emulate customers upsert samples/customers.csv
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
                help="Region for phone numbers written without a country code (a row's "
                "country column, such as CC or Country, gives its own).",
            ),
        ]
    ):
        func = option(func)
    return func


def json_option(func: Any) -> Any:
    """``--json``: the same option, with the same words, on every command that prints a
    summary (its keys: sonar_bulk/docs/json.md)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help='Print a summary as JSON on stdout (an error as {"error": ...}); the human '
        "lines stay on stderr.",
    )(func)


def print_json(doc: dict[str, Any]) -> None:
    """A command's ``--json`` summary: one object on one line on stdout."""
    with stdout() as out:
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")


class AliasOption(click.Option):
    """An option whose later long names are old spellings kept working but not shown in
    ``--help`` (``demo --out`` for ``--out-dir``)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def _check_send_time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from sonar_bulk.normalize import parse_clock_time

    try:
        parse_clock_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


_F = TypeVar("_F", bound=Callable[..., Any])


def default_send_time_option(for_kind: str = "") -> Callable[[_F], _F]:
    """``--default-send-time HH:MM``: the time of a send_at that is a date alone (checked when
    parsed: a bad value is a usage error). ``for_kind`` prefixes the help ("campaign_recipients:
    ") where the command reads other kinds too."""
    text = "the time of a send_at that is a date alone, in the row's zone (24-hour clock; "
    text += "without it such a date is an error)."
    return click.option(
        "--default-send-time",
        metavar="HH:MM",
        callback=_check_send_time,
        help=for_kind + text if for_kind else text.capitalize(),
    )


def allow_blank_merge_option(for_kind: str = "") -> Callable[[_F], _F]:
    """``--allow-blank-merge``: a blank ``{{field}}`` is sent as a gap (a warning) instead of
    being an error for its row. ``for_kind`` prefixes the help ("messages: ") where the
    command reads other kinds too."""
    text = "send a text whose {{field}} is blank on its row with the gap (a warning); by "
    text += "default such a row is an error and is not sent. {{field|fallback}} gives a "
    text += "fallback instead."
    return click.option(
        "--allow-blank-merge",
        is_flag=True,
        help=for_kind + text if for_kind else text[0].upper() + text[1:],
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _printable_ascii(text: str) -> bool:
    return all(32 < ord(c) < 127 for c in text)


def guard(run: Any, as_json: bool) -> int:
    """Run a command body; turn every failure into one line on stderr and an exit code."""
    try:
        return int(run())
    except SonarBulkError as exc:
        fail(str(exc), as_json)
        return exit_code_for(exc)
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:  # Abort: Ctrl-C/EOF at a question
        say("sonar-bulk: interrupted")
        return exit_code_for(exc)
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), as_json)
        return exit_code_for(exc)
    except click.ClickException as exc:
        fail(exc.format_message(), as_json)
        return exit_code_for(exc)
    except Exception as exc:
        if os.environ.get("SONAR_BULK_DEBUG"):
            raise
        fail(
            f"internal error: {type(exc).__name__}: {exc} (set SONAR_BULK_DEBUG=1 for "
            "details, and please report it)",
            as_json,
        )
        return exit_code_for(exc)


@contextlib.contextmanager
def stdout() -> Iterator[Any]:
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


def say(text: str, *, err: bool = True) -> None:
    """A line for people. A terminal that went away (SIGHUP, a closed window: EIO) takes
    nothing more: both streams then go to /dev/null, and the command carries on."""
    try:
        click.echo(text, err=err)
    except OSError:
        terminal_gone()


def terminal_gone() -> None:
    """The terminal is gone: what would be written there goes nowhere."""
    for name in ("stdout", "stderr"):
        setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115


def fail(message: str, as_json: bool) -> None:
    line = " ".join(message.split())
    say(f"sonar-bulk: error: {line}")
    if as_json:
        say(json.dumps({"error": line}), err=False)
