"""Every knob of a bulk run (:class:`BulkOptions`, from the command line's flags by
:meth:`BulkOptions.from_flags`), and the stop another thread can ask for."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sonar_bulk.errors import UsageError

if TYPE_CHECKING:
    import asyncio

#: Requests per second unless --rate says otherwise. Sonar documents no rate limit; its
#: official client sends one request at a time (a few a second). Ten a second stays close to
#: that while a 10,000-row sheet still takes minutes, not hours; raise it with --rate once you
#: know your account's limits (429s slow the run down by themselves).
DEFAULT_RATE = 10.0


DEFAULT_CONCURRENCY = 16


@dataclass
class BulkOptions:
    """Every knob of a bulk run (the CLI's flags, one to one)."""

    rate: float = DEFAULT_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = 5
    timeout: float = 30.0
    limit: int | None = None
    skip_invalid: bool = False
    dry_run: bool = False
    diff: bool = False
    resume: bool = False
    retry_unknown: bool = False
    #: send again rows the journal shows as sent: None asks, True sends, False skips them
    resend: bool | None = None
    journal: Path | None = None
    results: Path | None = None
    #: The folder of the run's files (results, failed rows, plan, journal, events): None
    #: puts them beside the input.
    out_dir: Path | None = None
    force: bool = False
    quiet_hours: tuple[dt.time, dt.time] | None = None
    quiet_policy: Literal["hold", "skip"] = "hold"
    #: The command line to print for a resume (without any token).
    command_line: str = ""
    #: Columns of the sheet as read (more were added for --text): the results keep these.
    width: int | None = None
    #: Stops the run from another thread as Ctrl-C does (the web page's Stop button).
    stop: StopSignal | None = None
    #: Consult and keep the send ledger (off for a throwaway emulator: the demo's).
    ledger: bool = True
    #: --changed-only (customers upsert, properties set): rows whose request was applied
    #: before to the same target are unchanged, not sent.
    changed_only: bool = False
    #: Run rows the sheet hides too (by default they are skipped and their errors ignored).
    include_hidden: bool = False
    #: --existing-only (properties set): each row's customer is read first (GET only); a
    #: phone Sonar does not know is skipped, never created.
    existing_only: bool = False
    #: --resubscribe (customers upsert): a row that subscribes a customer who replied STOP
    #: (the ledger knows it) sends its subscribed=true; by default it is left out.
    resubscribe: bool = False

    @classmethod
    def from_flags(
        cls,
        *,
        rate: float = DEFAULT_RATE,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int = 5,
        timeout: float = 30.0,
        limit: int | None = None,
        skip_invalid: bool = False,
        include_hidden: bool = False,
        dry_run: bool = False,
        diff: bool = False,
        changed_only: bool = False,
        existing_only: bool = False,
        resubscribe: bool = False,
        journal_path: Path | None = None,
        resume_path: Path | None = None,
        retry_unknown: bool = False,
        resend: bool = False,
        results_path: Path | None = None,
        out_dir: Path | None = None,
        force: bool = False,
        quiet_hours: str | None = None,
        quiet_hours_policy: str | None = None,
        command_line: str = "",
    ) -> BulkOptions:
        """The options of a bulk command's flags (named as the CLI names its parameters),
        checked: UsageError for a combination that can't work."""
        if resume_path is not None and journal_path is not None and resume_path != journal_path:
            raise UsageError("--resume names the journal already; leave out --journal")
        if quiet_hours_policy not in (None, "hold", "skip"):
            raise UsageError(f"quiet hours policy {quiet_hours_policy!r}: hold or skip")
        return cls(
            rate=rate,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            limit=limit,
            skip_invalid=skip_invalid,
            dry_run=dry_run,
            diff=diff,
            changed_only=changed_only,
            existing_only=existing_only,
            resubscribe=resubscribe,
            resume=resume_path is not None,
            retry_unknown=retry_unknown,
            resend=True if resend else None,
            journal=resume_path or journal_path,
            results=results_path,
            out_dir=out_dir,
            force=force,
            quiet_hours=parse_quiet_hours(quiet_hours),
            quiet_policy="skip" if quiet_hours_policy == "skip" else "hold",
            command_line=command_line,
            include_hidden=include_hidden,
        )


#: The parameters of :meth:`BulkOptions.from_flags` (the flags of the bulk commands).
FLAGS = frozenset(BulkOptions.from_flags.__kwdefaults__ or ())


def parse_quiet_hours(text: str | None) -> tuple[dt.time, dt.time] | None:
    """``21:00-08:00`` as (start, end) local times; UsageError for anything else."""
    if text is None or not text.strip():
        return None
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        a = dt.datetime.strptime(start.strip(), "%H:%M").time()
        b = dt.datetime.strptime(end.strip(), "%H:%M").time()
    except ValueError:
        raise UsageError(
            f"--quiet-hours {text!r}: expected HH:MM-HH:MM, such as 21:00-08:00"
        ) from None
    if a == b:
        raise UsageError(f"--quiet-hours {text!r}: the window is empty")
    return a, b


class StopSignal:
    """A graceful stop asked from another thread: the run's Ctrl-C, without a terminal.
    :meth:`request` once stops starting new requests (those in flight finish, the journal
    and results are written); twice, it stops at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None
        self.requested = 0

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        with self._lock:
            self._target = (loop, callback)
            for _ in range(self.requested):
                loop.call_soon_threadsafe(callback)

    def detach(self) -> None:
        with self._lock:
            self._target = None

    def request(self) -> None:
        with self._lock:
            self.requested += 1
            if self._target is not None:
                loop, callback = self._target
                loop.call_soon_threadsafe(callback)
