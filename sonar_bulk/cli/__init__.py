"""The ``sonar-bulk`` command line: thin commands over the library.

Exit codes (:class:`sonar_bulk.errors.ExitCode`, the same in every command: one mapping,
:func:`sonar_bulk.errors.exit_code_for`, serves them all; a test keeps this list equal to the
enum):

\b
  0   success (warnings allowed)
  1   rows with errors, failed or unknown rows, or a non-2xx answer
  2   usage error, or input that cannot be read
  3   no answer from the API (refused, DNS, timeout, reset)
  4   a bulk run's results could not be written anywhere
  5   the API refused the token or the account
  70  internal error (a bug: please report it)
  130 stopped by the user (Ctrl-C, SIGTERM, SIGHUP, declining to send)
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from sonar_bulk.cli.common import (
    EXIT_ABORTED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    _Group,
    cli,
    fail,
    guard,
    input_options,
    stdout,
)
from sonar_bulk.errors import ExitCode

if TYPE_CHECKING:
    from sonar_bulk.cli.api import api_cmd
    from sonar_bulk.cli.connect import connect_cmd, emulator_reset_cmd
    from sonar_bulk.cli.emulator import emulator_cmd, emulator_config
    from sonar_bulk.cli.validate import template_cmd, validate_cmd


def _closed_streams_to_null() -> None:
    """A standard stream closed by the caller (``2>&-``, a daemon, cron) is None in Python:
    what would be written there goes nowhere, and the command still works."""
    for name in ("stdin", "stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "r" if name == "stdin" else "w"))  # noqa: SIM115


def main() -> None:
    """Console-script entry point."""
    import gc
    import signal

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the same clean stop as Ctrl-C: partial files removed

    signal.signal(signal.SIGTERM, terminated)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, terminated)  # the terminal closed: stop as for SIGTERM
    _closed_streams_to_null()
    try:
        _main()
    finally:
        # the process ends here: what it leaves is freed without a cyclic collection over it
        # (0.15 s at the end of a 20,000-row run)
        gc.disable()
        gc.freeze()


def _main() -> None:
    try:
        cli(prog_name="sonar-bulk", obj={})
    except KeyboardInterrupt:
        click.echo("sonar-bulk: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug outside a command body: still one line, never a traceback
        if os.environ.get("SONAR_BULK_DEBUG"):
            raise
        fail(
            f"internal error: {type(exc).__name__}: {exc} (set SONAR_BULK_DEBUG=1 for "
            "details, and please report it)",
            False,
        )
        sys.exit(EXIT_INTERNAL)


# The command modules register themselves on ``cli`` when imported, and ``cli`` imports each
# one when its command is first looked up (``COMMAND_MODULES`` in common.py): a command line
# imports only the commands it runs. These names are the commands' objects, looked up alike.
_COMMANDS = {
    "api_cmd": "sonar_bulk.cli.api",
    "connect_cmd": "sonar_bulk.cli.connect",
    "emulator_reset_cmd": "sonar_bulk.cli.connect",
    "emulator_cmd": "sonar_bulk.cli.emulator",
    "emulator_config": "sonar_bulk.cli.emulator",
    "template_cmd": "sonar_bulk.cli.validate",
    "validate_cmd": "sonar_bulk.cli.validate",
}


def __getattr__(name: str) -> Any:
    if name in _COMMANDS:
        import importlib

        return getattr(importlib.import_module(_COMMANDS[name]), name)
    raise AttributeError(f"module 'sonar_bulk.cli' has no attribute {name!r}")


__all__ = [
    "EXIT_ABORTED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "ExitCode",
    "_Group",
    "api_cmd",
    "cli",
    "connect_cmd",
    "emulator_cmd",
    "emulator_config",
    "emulator_reset_cmd",
    "fail",
    "guard",
    "input_options",
    "main",
    "stdout",
    "template_cmd",
    "validate_cmd",
]
