"""How a bulk run talks to people, as data.

The engine never words a sentence for a person and never names a command-line flag: it tells
a :class:`Ui` what happened (a *notice*, one small frozen dataclass per kind) and asks it
what to do (a *question*, answered yes or no). Each face words them itself: the terminal
(:class:`sonar_bulk.cli.bulk.CliUi`), the web page, the demo, a script
(:class:`RecordingUi` keeps them, and answers as told).

    Notice                  told, never answered
    ├── Validated           the sheet was checked (its validation)
    ├── InputMoved          a resume reads another file than the journal's run did
    ├── RetryingUnknown     sends of unknown outcome will be sent again, as asked
    ├── SheetChanged        a resume's sheet differs from the journal's last run
    ├── Guarded             changed rows to recipients this sheet sent to: not sent again
    ├── Starting            what the run will do (the prepared run)
    ├── ReadingCurrent      a diff (or existing-only) reads Sonar's records first (GET only)
    ├── Planned             the plan's facts (a dry run, a diff)
    ├── Stopping            a stop was asked; requests in flight get a grace period
    ├── LedgerNotRecorded   the send ledger could not keep this run's sends
    ├── ResultsMoved        the results went elsewhere than asked (or nowhere)
    ├── OutputKept          a file of the user's where an output goes: kept, another name used
    ├── StopsKept           a sheet's subscribed=yes for people who replied STOP: left out
    ├── EventsNote          what the events collector says (a line)
    ├── EventsJoined        events were collected and joined to the results
    ├── EventsNotJoined     they were not (the run's results stand)
    └── Finished            the run's report

    Question                answered yes (True) or no
    ├── ConfirmSend         send to this many recipients (and the first message)?
    ├── ConfirmResend       send again rows already sent, or maybe sent?
    └── SendPastNow         a resumed campaign's send_at passed: send the rest now?
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sonar_bulk.engine.bulk import Prepared, Report
    from sonar_bulk.engine.runner import Stats
    from sonar_bulk.validation import Validation


# -- notices --------------------------------------------------------------------------------------


class Notice:
    """Something a person should know. ``warning`` ones are worth a second look."""

    warning = False


@dataclass(frozen=True)
class Validated(Notice):
    validation: Validation


@dataclass(frozen=True)
class InputMoved(Notice):
    """A resume of a run that read ``before`` (rows are matched by content, not position)."""

    before: str
    warning = True


@dataclass(frozen=True)
class RetryingUnknown(Notice):
    count: int
    warning = True


@dataclass(frozen=True)
class SheetChanged(Notice):
    """On resume: rows the journal knows, changed rows of recipients sent to (not sent
    again), rows it has no record of."""

    same: int
    guarded: int
    new: int
    warning = True


@dataclass(frozen=True)
class Guarded(Notice):
    """Rows to recipients an earlier run of this sheet sent to (or may have), changed since:
    not sent again unless resending is asked. ``lines``: the first few, described."""

    count: int
    lines: Sequence[str]
    warning = True


@dataclass(frozen=True)
class Starting(Notice):
    prepared: Prepared


@dataclass(frozen=True)
class ReadingCurrent(Notice):
    """Sonar's current records are read first: for a diff, or (``existing_only``) to leave
    out customers Sonar does not have."""

    existing_only: bool = False


@dataclass(frozen=True)
class Planned(Notice):
    """See :func:`sonar_bulk.engine.bulk.plan_facts`, with the rows guarded and sent
    before."""

    facts: Mapping[str, Any]


@dataclass(frozen=True)
class Stopping(Notice):
    """``cause``: what asked (``Ctrl-C``, ``SIGTERM``, ``SIGHUP``, ``Stop``)."""

    cause: str
    grace: float
    warning = True


@dataclass(frozen=True)
class LedgerNotRecorded(Notice):
    ledger: Path
    error: str
    warning = True


@dataclass(frozen=True)
class ResultsMoved(Notice):
    """The results could not be written to ``asked`` (``why``): they are in ``where``, or,
    when ``where`` is None, only in the journal (written again by a resume)."""

    asked: Path
    why: str
    where: Path | None
    journal: Path | None
    warning = True


@dataclass(frozen=True)
class OutputKept(Notice):
    """``kept`` is where this run's ``what`` (``results``, ``failed rows``, ``plan``) would
    go, but the file there is the user's (edited since sonar-bulk wrote it, such as failed
    rows fixed in place, or never its own): it was left as it is, and the run wrote
    ``written`` instead (None: it had nothing to write there, such as no failed rows)."""

    what: str
    kept: Path
    written: Path | None
    warning = True


@dataclass(frozen=True)
class StopsKept(Notice):
    """A customers upsert's rows that say subscribed=yes for people who replied STOP (the
    send ledger knows it): their subscribed is left out (the rest of the row is sent)."""

    count: int
    examples: tuple[str, ...]
    warning = True


@dataclass(frozen=True)
class EventsNote(Notice):
    text: str


@dataclass(frozen=True)
class EventsJoined(Notice):
    count: int
    sheet: Path
    results: str
    settled: int


@dataclass(frozen=True)
class EventsNotJoined(Notice):
    error: str
    store: Path
    warning = True


@dataclass(frozen=True)
class Finished(Notice):
    report: Report
    prepared: Prepared


# -- questions ------------------------------------------------------------------------------------


class Question:
    """Something only a person decides."""


@dataclass(frozen=True)
class ConfirmSend(Question):
    """Send to ``count`` recipients via ``target``? The first message (``first_text`` to
    ``first_to``) or campaign."""

    count: int
    target: str
    first_to: str = ""
    first_text: str = ""
    first_campaign: str = ""


@dataclass(frozen=True)
class ConfirmResend(Question):
    """Rows this sheet's earlier runs (or another sheet) sent, or may have: send again?"""

    count: int
    lines: Sequence[str]


@dataclass(frozen=True)
class SendPastNow(Question):
    """Rows of a resumed campaign not sent yet whose send_at has passed: send them now?"""

    count: int


# -- stops ----------------------------------------------------------------------------------------


class StopKind(enum.Enum):
    """Why a run stopped before its end."""

    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP, the page's Stop
    FATAL = "fatal"  # an answer no request can get past (bad token, no subscription)
    UNREACHABLE = "unreachable"  # the API could not be reached
    BROKEN = "broken"  # this machine failed the run (a full disk, a broken journal)
    GUARD = "guard"  # the send guard could not be consulted
    #: Sonar condemned every row sharing a value (an unknown campaign id): those not sent yet
    #: were skipped, and rows of other values went on (see api.endpoints.RunLevel)
    CONDEMNED = "condemned"


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    #: The cause, for people (``Ctrl-C``, the API's answer, the OS error).
    detail: str = ""


# -- waiting for events ---------------------------------------------------------------------------


@dataclass
class EventsWindow:
    """The wait for webhook events after a run: ``seconds`` at most; with ``early``, it may
    end as soon as ``done()`` says nothing more can be settled. ``received()``: events and
    deliveries (with Sonar's repeats) so far."""

    seconds: float
    early: bool
    done: Callable[[], bool]
    received: Callable[[], tuple[int, int]]
    #: The run's report (the events are joined into its results after the wait).
    report: Report
    #: The store the events go to (readable while they come).
    store: Path


# -- the protocol ---------------------------------------------------------------------------------


class Ui(Protocol):
    """What a face of sonar-bulk gives a run."""

    def tell(self, notice: Notice) -> None: ...

    def ask(self, question: Question) -> bool: ...

    def progress(
        self, total: int, stats: Stats, throttled: Callable[[], bool]
    ) -> contextlib.AbstractContextManager[object]: ...

    def wait_for_events(self, window: EventsWindow) -> None: ...


@dataclass
class RecordingUi:
    """A Ui for scripts and tests: keeps every notice and question, answers each question
    with ``answers`` (by its class name; default ``yes``), shows no progress and waits for
    events only until ``done()``."""

    yes: bool = True
    answers: dict[str, bool] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    def tell(self, notice: Notice) -> None:
        self.notices.append(notice)

    def ask(self, question: Question) -> bool:
        self.questions.append(question)
        return self.answers.get(type(question).__name__, self.yes)

    @contextlib.contextmanager
    def progress(self, total: int, stats: Stats, throttled: Callable[[], bool]) -> Iterator[None]:
        yield

    def wait_for_events(self, window: EventsWindow) -> None:
        pass

    def of(self, kind: type[Notice]) -> list[Any]:
        """The notices of one kind, in order."""
        return [n for n in self.notices if isinstance(n, kind)]
