"""Every exception sonar-bulk raises on purpose, the exit codes, and the one mapping between them.

Row-level validation problems are *data* (see :mod:`sonar_bulk.validation`), not exceptions.
Exceptions are for whole-run problems. :func:`exit_code_for` turns any exception into an
:class:`ExitCode`, the same way in every command. The tree, with each class's exit code::

    SonarBulkError ................  2 USAGE        sonar-bulk's own errors; one line each
    ├── InputError ................  2 USAGE        a sheet missing, unreadable or misshapen
    ├── UsageError ................  2 USAGE        options that can't work together
    │   ├── InvalidRows ...........  1 ROWS         rows with errors: the run does not start
    │   └── UnsendableRows ........  1 ROWS         valid rows the operation can't send
    ├── ConfigError ...............  2 USAGE        no token, a malformed base URL
    ├── Aborted ................... 130 ABORTED      the user said no (the send confirmation)
    ├── NoAnswer ..................  3 UNREACHABLE  ``api``/``connect``: no answer at all
    ├── CheckFailed ...............  1 ROWS         ``connect``: an answer that proves nothing
    ├── CallFailed ................  = its cause    a webhook call: as the ApiError behind it
    └── ApiError ..................  1 ROWS         an answer (or none) that is not a success
        ├── FatalApiError .........  5 REFUSED      the token or the account was refused
        ├── RowFailed .............  1 ROWS         this request was refused
        ├── Retryable .............  1 ROWS         not processed, or safe to repeat
        │   └── Unreachable .......  3 UNREACHABLE  no connection could be made
        └── OutcomeUnknown ........  1 ROWS         a send that may have gone out

An :class:`ApiError` without an HTTP status (a timeout, a connection reset: no answer came) is
3 UNREACHABLE whatever its class. Exceptions that are not ours go through the same mapping:
``KeyboardInterrupt`` (Ctrl-C, SIGTERM, SIGHUP) and ``click.Abort`` (Ctrl-C or end of input at
a question) are 130 ABORTED, Click's errors (a bad option) and ``OSError`` are 2 USAGE,
anything else is 70 INTERNAL (a bug).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sonar_bulk.api.endpoints import Action
    from sonar_bulk.validation import Validation


class ExitCode(enum.IntEnum):
    """How a command ends. ``meaning`` is one short line (``--help``), ``detail`` the README's."""

    OK = 0
    ROWS = 1
    USAGE = 2
    UNREACHABLE = 3
    RESULTS_LOST = 4
    REFUSED = 5
    INTERNAL = 70
    ABORTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self][0]

    @property
    def detail(self) -> str:
        return _MEANINGS[self][1]


_MEANINGS: dict[ExitCode, tuple[str, str]] = {
    ExitCode.OK: (
        "success (warnings allowed)",
        "success: no row has an error (warnings are allowed)",
    ),
    ExitCode.ROWS: (
        "rows with errors, failed or unknown rows, or a non-2xx answer",
        "at least one row has an error (`validate`); some rows failed, invalid or unknown (bulk "
        "runs); unknown sends remain (`settle`); a non-2xx answer that is not a refusal of the "
        "token or account (`api`, `webhooks`, `connect`)",
    ),
    ExitCode.USAGE: (
        "usage error, or input that cannot be read",
        "usage error, or input that cannot be read (missing, empty, corrupt, encrypted, binary, "
        "header only, a cell over 32,767 characters)",
    ),
    ExitCode.UNREACHABLE: (
        "no answer from the API (refused, DNS, timeout, reset)",
        "no answer from the API, in every command: connection refused, DNS failure, timeout, "
        "connection reset; the one error line names the URL, never the token",
    ),
    ExitCode.RESULTS_LOST: (
        "a bulk run's results could not be written anywhere",
        "a bulk run sent rows (or may have) but its results could not be written anywhere "
        "(where asked, beside the journal, in the user data folder): every outcome is in the "
        "journal, and the printed `--resume` command writes them",
    ),
    ExitCode.REFUSED: (
        "the API refused the token or the account",
        "the API refused the token or the account, in every command: a bad or revoked token "
        "(401), no subscription or the API disabled (403); a bulk run stops at the first such "
        "answer, and `connect` saves nothing",
    ),
    ExitCode.INTERNAL: (
        "internal error (a bug: please report it)",
        "internal error: a bug (set `SONAR_BULK_DEBUG=1` for the traceback, and please report it)",
    ),
    ExitCode.ABORTED: (
        "stopped by the user (Ctrl-C, SIGTERM, SIGHUP, declining to send)",
        "stopped by the user: Ctrl-C, SIGTERM, SIGHUP (the terminal closed), Ctrl-C or end of "
        "input at a question, or no to the send confirmation (the servers, `emulator` and "
        "`ui`, are stopped that way and end with 0)",
    ),
}


def exit_codes_text(indent: str = "  ") -> str:
    """The exit codes, one per line (``--help`` and docstrings)."""
    return "\n".join(f"{indent}{code.value:<4}{code.meaning}" for code in ExitCode)


def exit_codes_markdown() -> str:
    """The README's table of exit codes."""
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code.value} | {code.detail} |" for code in ExitCode]
    return "\n".join(rows)


# -- the tree ---------------------------------------------------------------------------------


class SonarBulkError(Exception):
    """Root of every error sonar-bulk raises on purpose. ``str(err)`` is a one-line message."""

    exit_code: ExitCode = ExitCode.USAGE


class InputError(SonarBulkError):
    """The input file cannot be read as a sheet (missing, corrupt, empty, encrypted, ...)."""


class UsageError(SonarBulkError):
    """Options or arguments that cannot work together."""


class InvalidRows(UsageError):
    """Rows with errors and no --skip-invalid: the run does not start."""

    exit_code = ExitCode.ROWS

    def __init__(self, validation: Validation) -> None:
        bad, rows = validation.invalid_rows, validation.rows
        super().__init__(
            f"{bad:,} of {rows:,} row{'' if rows == 1 else 's'} "
            f"{'has' if bad == 1 else 'have'} errors; nothing was sent. Fix "
            f"{'it' if bad == 1 else 'them'} (sonar-bulk validate --report issues.xlsx shows "
            "each), or pass --skip-invalid to send the other rows and report these as invalid"
        )
        self.validation = validation


class UnsendableRows(UsageError):
    """Valid rows the operation can't send, and no --skip-invalid: the run does not start. A
    backstop: a run checks its sheet for its own command (``SheetKind.needs``: a property set
    by email alone is an error there), so only a sheet checked for another command gets here."""

    exit_code = ExitCode.ROWS


class ConfigError(SonarBulkError):
    """Configuration that makes an API call impossible (no token, malformed base URL)."""


class Aborted(SonarBulkError):
    """The user stopped it by answering no (the send confirmation): nothing was done."""

    exit_code = ExitCode.ABORTED


class NoAnswer(SonarBulkError):
    """One call from ``api`` or ``connect`` got no answer (refused, DNS, timeout, a reset)."""

    exit_code = ExitCode.UNREACHABLE


class CheckFailed(SonarBulkError):
    """``connect``: the API answered, but the answer does not prove the token (not the Sonar
    API, an unexpected status). A refused token or account is :class:`FatalApiError`."""

    exit_code = ExitCode.ROWS


class ApiError(SonarBulkError):
    """An answer (or its absence) that is not a success. ``action`` says what to do next (see
    :func:`sonar_bulk.api.endpoints.action_for`)."""

    action: Action = "fail"
    exit_code = ExitCode.ROWS

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str = "",
        retry_after: float | None = None,
        not_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.retry_after = retry_after
        #: The request provably never left (no connection): even a send may be made again.
        self.not_sent = not_sent


class FatalApiError(ApiError):
    """Nothing else can succeed: the API refused the token or the account (a 401, no
    subscription, the API disabled)."""

    action: Action = "stop"
    exit_code = ExitCode.REFUSED


class RowFailed(ApiError):
    """The request was refused; making it again changes nothing."""

    action: Action = "fail"


class Retryable(ApiError):
    """The request was not processed, or is safe to repeat: try again after a pause."""

    action: Action = "retry"


class OutcomeUnknown(ApiError):
    """A send that may have been processed: never repeated blindly."""

    action: Action = "unknown"


class Unreachable(Retryable):
    """No connection could be made (refused, DNS, connect timeout): nothing was sent."""

    exit_code = ExitCode.UNREACHABLE


class CallFailed(SonarBulkError):
    """A webhook call answered with an error (``status``) or not at all (``status`` None); it
    ends a command as its ``cause`` would."""

    def __init__(self, message: str, cause: ApiError) -> None:
        super().__init__(message)
        self.cause = cause
        self.status = cause.status or None
        self.exit_code = exit_code_for(cause)


# -- the mapping ------------------------------------------------------------------------------


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code ``exc`` ends a command with: the one mapping every command uses."""
    if isinstance(exc, ApiError) and exc.status is None:
        return ExitCode.UNREACHABLE  # no answer came, whatever the next step would have been
    if isinstance(exc, SonarBulkError):
        return ExitCode(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        return ExitCode.ABORTED
    if isinstance(exc, click.ClickException | OSError):  # a bad option, a file it can't read
        return ExitCode.USAGE
    return ExitCode.INTERNAL


__all__ = [
    "Aborted",
    "ApiError",
    "CallFailed",
    "CheckFailed",
    "ConfigError",
    "ExitCode",
    "FatalApiError",
    "InputError",
    "InvalidRows",
    "NoAnswer",
    "OutcomeUnknown",
    "Retryable",
    "RowFailed",
    "SonarBulkError",
    "UnsendableRows",
    "Unreachable",
    "UsageError",
    "exit_code_for",
    "exit_codes_markdown",
    "exit_codes_text",
]
