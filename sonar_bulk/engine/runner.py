"""The bulk run: jobs through the rate limiter to the client, each outcome to the journal and
the results, with retries where they are safe and never a blind one for a send.

A job's life: wait for the limiter; record the intent in the journal; make the call; read the
answer. A :class:`~sonar_bulk.api.client.Retryable` answer is tried again after a pause
(``Retry-After``, else exponential backoff with jitter) up to ``max_retries`` times; a 429 also
tells the rate controller. A send never sees a Retryable unless the request provably was not
processed (see :func:`~sonar_bulk.api.endpoints.action_for`); anything else leaves a send
``unknown``.

Stopping (Ctrl-C, SIGTERM, a fatal answer): no new request starts, the ones in flight finish,
and rows never started get no outcome (the caller reports them ``skipped``). A second Ctrl-C
cancels the requests in flight: a send among them is ``unknown``.

Run-level answers (an endpoint's :class:`~sonar_bulk.api.endpoints.RunLevel`: an unknown
campaign id's 404) stop only the rows that share the condemned value: the rows of one value go
one at a time until an answer is not a condemning one, and after
:data:`~sonar_bulk.api.endpoints.RUN_LEVEL_AFTER` condemning answers the rows of that value not
started yet are ``skipped`` (:attr:`Runner.condemned` says why); rows in flight finish.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from sonar_bulk.api.client import SonarClient
from sonar_bulk.api.endpoints import RUN_LEVEL_AFTER, RunLevel, endpoint
from sonar_bulk.engine.journal import Journal, now_iso
from sonar_bulk.engine.ledger import Identity
from sonar_bulk.engine.limiter import Limiter
from sonar_bulk.errors import (
    ApiError,
    FatalApiError,
    OutcomeUnknown,
    Retryable,
    RowFailed,
    Unreachable,
)
from sonar_bulk.plan import ANSWER_REASONS, Call, Operation
from sonar_bulk.results import Outcome, RowResults


class GuardFailure(Exception):
    """The send guard can't be asked (its ledger is locked, read-only, broken): the run
    stops, as nothing more may be sent unguarded."""


@dataclass
class Settings:
    """How hard a run pushes."""

    concurrency: int = 16
    max_retries: int = 5
    #: Backoff: the first pause, and the longest.
    backoff: float = 0.5
    backoff_cap: float = 30.0


@dataclass(order=True)
class Job:
    """One row's call. ``not_before`` (wall-clock seconds) holds it until then (quiet hours)."""

    not_before: float
    index: int
    call: Call = field(compare=False)
    key: str = field(compare=False)
    #: Who gets what (sends only): the journal keeps it, to know the recipient on resume.
    who: Identity | None = field(default=None, compare=False)


@dataclass
class Shared:
    """The rows of a run that share one value of a run-level key (one campaign id)."""

    rule: RunLevel
    value: str
    #: Held by the one row of this value in flight while the value is not yet open.
    probe: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: An answer came that does not condemn the value: its rows go concurrently.
    open: bool = False
    #: Condemning answers so far.
    answers: int = 0
    #: Why its rows are not sent, once condemned ("" until then).
    reason: str = ""
    #: Its rows skipped so far.
    skipped: int = 0


@dataclass
class Stats:
    """What the progress display shows."""

    total: int = 0
    done: int = 0
    failed: int = 0
    unknown: int = 0
    in_flight: int = 0
    held: int = 0
    requests: int = 0
    retries: int = 0


class Runner:
    """Runs jobs of one operation. ``clock`` (wall-clock seconds, for holds) and ``sleep`` are
    injectable; the limiter has its own clock."""

    def __init__(
        self,
        client: SonarClient,
        operation: Operation,
        journal: Journal | None,
        results: RowResults,
        limiter: Limiter,
        settings: Settings | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        guard: Callable[[Job], Awaitable[str]] | None = None,
        gate: Callable[[Job, float], Job | str | float] | None = None,
    ) -> None:
        self.client = client
        self.operation = operation
        self.journal = journal
        self.results = results
        self.limiter = limiter
        self.settings = settings or Settings()
        self.sleep = sleep
        self.clock = clock
        self.rand = rand
        #: Asked just before a job's first request: '' to go, else why it is not sent.
        self.guard = guard
        #: Asked just before a job's first request with the wall-clock time (quiet hours):
        #: the job to send, why it is not sent, or when to try it again.
        self.gate = gate
        self.stats = Stats()
        self.stopping = False
        self.stop_reason = ""
        self.fatal: ApiError | None = None
        #: Stopped by Ctrl-C or SIGTERM (the run exits 130).
        self.interrupted = False
        #: What interrupted it, for people (``Ctrl-C``, ``SIGTERM``, ``Stop``).
        self.cause = ""
        self._stop_event = asyncio.Event()
        #: Jobs held until a time (wall clock), a heap; jobs taken by workers and not done;
        #: set whenever either changes, for the feeder.
        self._held: list[Job] = []
        self._busy = 0
        self._tasks: list[asyncio.Future[None]] = []
        #: Rows whose request went out (or may have) in this run: a byte a row (a set of a
        #: million ints was 60 MB).
        self._requested = np.zeros(results.rows, dtype=bool)
        #: Why the run broke down (a failure other than an answer), when it did.
        self.failure: str | None = None
        self._changed = asyncio.Event()
        #: Rows by their run-level value (endpoint, value).
        self._shared: dict[tuple[str, str], Shared] = {}
        #: Why rows of a condemned value were not sent, one reason per value with rows
        #: skipped, in order.
        self.condemned: list[str] = []

    # -- stopping --------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Start no new request; the ones in flight finish."""
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self._stop_event.set()

    async def _pause(self, seconds: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep, unless a stop (or ``wake``) comes first; False when stopped."""
        if seconds <= 0:
            return not self.stopping
        waits = [self.sleep(seconds), self._stop_event.wait()]
        if wake is not None:
            waits.append(wake.wait())
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        return not self.stopping

    async def _until_changed(self) -> None:
        """Wait until a job is held or done, or a stop."""
        tasks = [asyncio.ensure_future(e.wait()) for e in (self._changed, self._stop_event)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    # -- the run ---------------------------------------------------------------------------

    async def run(self, jobs: Iterable[Job]) -> None:
        """Run every job (or until stopped). Nothing that goes wrong inside (a journal on a
        full disk, a bug) leaves it hanging: the run stops, and the cause is in
        :attr:`failure`."""
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=self.settings.concurrency * 4)
        workers = [
            asyncio.ensure_future(self._worker(queue)) for _ in range(self.settings.concurrency)
        ]
        feeder = asyncio.ensure_future(self._feed_all(jobs, queue, len(workers)))
        self._tasks = [feeder, *workers]
        try:
            done = await asyncio.gather(*self._tasks, return_exceptions=True)
            for outcome in done:
                if isinstance(outcome, Exception):
                    self._broken(outcome)
        finally:
            for task in self._tasks:
                task.cancel()
            if self.journal is not None:
                try:
                    self.journal.flush()
                except Exception as exc:
                    self._broken(exc)

    def abort(self) -> None:
        """Stop at once: the requests in flight are cancelled (a send among them is
        ``unknown``; anything else is made again on resume)."""
        self.stop(self.stop_reason or "not sent: stopped")
        for task in self._tasks:
            task.cancel()

    async def _feed_all(
        self, jobs: Iterable[Job], queue: asyncio.Queue[Job | None], n: int
    ) -> None:
        try:
            await self._feed(jobs, queue)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._broken(exc)
        for _ in range(n):  # the workers' end markers
            await queue.put(None)

    def _broken(self, exc: BaseException, job: Job | None = None) -> None:
        """Something other than an answer failed: stop, name the cause, and give ``job`` (if
        its outcome is not known yet) an honest status."""
        cause = self.describe(exc)
        if self.failure is None:
            self.failure = cause
        self.stop(f"not sent: the run stopped: {cause}")
        if job is None or self.results.has(job.index):
            return
        maybe = self.operation.sends and bool(self._requested[job.index])
        outcome = Outcome(
            "unknown" if maybe else "skipped", None, f"the run stopped: {cause}", 0, now_iso()
        )
        try:
            self._record(job, outcome)
        except Exception:  # the journal is what broke: the results still have it
            pass

    def describe(self, exc: BaseException) -> str:
        """One line for a failure, naming the file it concerns."""
        import sqlite3

        if isinstance(exc, sqlite3.Error) and self.journal is not None:
            return f"journal {self.journal.path}: {exc}"
        if isinstance(exc, OSError):
            where = f"{exc.filename}: " if exc.filename else ""
            return f"{where}{exc.strerror or exc}"
        return f"{type(exc).__name__}: {exc}"

    def hold(self, job: Job) -> None:
        """Keep ``job`` until its ``not_before`` (the feeder sends it then)."""
        heapq.heappush(self._held, job)
        self.stats.held = len(self._held)
        self._changed.set()

    async def _feed(self, jobs: Iterable[Job], queue: asyncio.Queue[Job | None]) -> None:
        for job in jobs:
            if self.stopping:
                return
            if job.not_before > self.clock():
                self.hold(job)
                continue
            await queue.put(job)
        # then the held jobs, in time order, and any a worker holds again meanwhile
        while not self.stopping:
            self._changed.clear()
            if self._held:
                wait = self._held[0].not_before - self.clock()
                if wait > 0:
                    if not await self._pause(wait, self._changed):
                        return
                    continue
                job = heapq.heappop(self._held)
                self.stats.held = len(self._held)
                await queue.put(job)
                continue
            if not self._busy and queue.empty():
                return
            await self._until_changed()

    async def _worker(self, queue: asyncio.Queue[Job | None]) -> None:
        while True:
            job = await queue.get()
            if job is None:
                return
            if self.stopping:
                # keep taking jobs (not run) until the end marker: a worker that returned
                # here would leave the feeder blocked for ever on a full queue
                continue
            self._busy += 1
            try:
                await self._perform(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._broken(exc, job)
            finally:
                self._busy -= 1
                self._changed.set()

    def _shared_of(self, job: Job) -> Shared | None:
        """The rows ``job`` shares a run-level value with (None: its endpoint has none)."""
        rule = endpoint(job.call.endpoint).run_level
        if rule is None:
            return None
        value = job.call.params.get(rule.key)
        if value is None or value == "":
            return None
        key = (job.call.endpoint, str(value))
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = Shared(rule, str(value))
        return shared

    def _condemned(self, job: Job, shared: Shared | None) -> bool:
        """Skip ``job`` (not started: nothing was sent) when its value is condemned."""
        if shared is None or not shared.reason:
            return False
        outcome = Outcome("skipped", None, shared.reason, 0, now_iso())
        self.results.set(job.index, outcome)
        self.results.to_fix[job.index] = True  # fixed (the campaign id), it can go again
        self.stats.done += 1
        shared.skipped += 1
        if shared.skipped == 1:
            self.condemned.append(shared.reason)
        if self.journal is not None:  # kept as an earlier run's send, if there was one
            self.journal.record_many([(job.key, job.index, "skipped", shared.reason)], urgent=False)
        return True

    def _answered(self, shared: Shared, error: ApiError | None) -> None:
        """Count a condemning answer for ``shared``'s value, or open it."""
        if error is None or not (
            isinstance(error, RowFailed) and shared.rule.matches(error.status, error.error)
        ):
            shared.open = True
            return
        shared.answers += 1
        if shared.answers >= RUN_LEVEL_AFTER and not shared.reason:
            shared.reason = shared.rule.reason(
                shared.value, error.status, error.error, shared.answers
            )

    async def _perform(self, job: Job) -> None:
        shared = self._shared_of(job)
        if shared is not None and not shared.open and not shared.reason:
            # only condemning answers so far (or none): one row of this value at a time, so a
            # condemned value costs RUN_LEVEL_AFTER requests, not one per worker
            async with shared.probe:
                if not shared.open:
                    await self._attempts(job, shared)
                    return
        await self._attempts(job, shared)

    async def _attempts(self, job: Job, shared: Shared | None) -> None:
        attempt = 0
        op = self.operation
        if self._condemned(job, shared):
            return
        while True:
            await self.limiter.acquire(self._stop_event)
            if self.stopping:
                if attempt:  # stopped between a refused try and the next: not sent
                    self._record(job, Outcome("skipped", None, self.stop_reason, attempt))
                return
            if not attempt and self._condemned(job, shared):
                return  # condemned while it waited for its turn
            if not attempt and self.gate is not None:
                gated = self.gate(job, self.clock())
                if isinstance(gated, str):
                    self._record(job, Outcome("skipped", None, gated, 0))
                    return
                if isinstance(gated, float):
                    self.hold(Job(gated, job.index, job.call, job.key, job.who))
                    return
                job = gated
            if not attempt and self.guard is not None:
                try:
                    refused = await self.guard(job)
                except GuardFailure as exc:
                    refused = f"not sent: {exc}"
                    self.stop(refused)
                if refused:
                    self._record(job, Outcome("skipped", None, refused, 0))
                    return
            attempt += 1
            if self.journal is not None and op.sends:
                # a send's intent, committed before its request: a crash leaves it maybe sent.
                # An operation safe to repeat has none: without an outcome, its row is made
                # again on resume, as it would be with an intent
                who = job.who
                self.journal.intent(
                    job.key,
                    job.index,
                    attempt,
                    recipient=who.recipient if who else None,
                    content=who.content if who else None,
                )
            self.stats.in_flight += 1
            self.stats.requests += 1
            error: ApiError | None = None
            self._requested[job.index] = True
            try:
                answer = await self.client.call(job.call.endpoint, job.call.params)
            except ApiError as exc:
                error = exc
            except asyncio.CancelledError:
                # a second Ctrl-C: the request may have gone out
                status = "unknown" if op.sends else "skipped"
                why = "interrupted while the request was in flight"
                self._record(job, Outcome(status, None, why, attempt))
                raise
            finally:
                self.stats.in_flight -= 1
            if shared is not None and not isinstance(error, Retryable):
                self._answered(shared, error)
            if error is None:
                status, outputs = op.status(answer)
                why = ANSWER_REASONS.get(status, "")
                self._record(job, Outcome(status, answer.status, why, attempt, now_iso(), outputs))
                return
            if isinstance(error, FatalApiError):
                self.fatal = self.fatal or error
                self.stop(f"not sent: the run stopped at a fatal answer ({error})")
            elif isinstance(error, Retryable):
                if error.status == 429:
                    self.limiter.controller.throttle(error.retry_after)
                elif error.status == 503:
                    self.limiter.controller.strained()
                if attempt <= self.settings.max_retries and not self.stopping:
                    self.stats.retries += 1
                    if await self._pause(self._delay(attempt, error)):
                        continue
                    self._record(job, Outcome("skipped", error.status, self.stop_reason, attempt))
                    return
                if isinstance(error, Unreachable):
                    self.fatal = self.fatal or error
                    self.stop(f"not sent: the API could not be reached ({error})")
            elif isinstance(error, OutcomeUnknown):
                self._record(job, _outcome("unknown", error, attempt))
                return
            elif op.absorb is not None:
                absorbed = op.absorb(job.call, error.status, error.error)
                if absorbed is not None:
                    note = f"already so: {error}"
                    self._record(job, Outcome(absorbed, error.status, note, attempt, now_iso()))
                    return
            self._record(job, _outcome("failed", error, attempt))
            return

    def _delay(self, attempt: int, exc: ApiError) -> float:
        if exc.retry_after is not None:
            return float(exc.retry_after) + self.rand() * 0.25
        step = min(self.settings.backoff_cap, self.settings.backoff * 2 ** (attempt - 1))
        return float(step / 2 + self.rand() * step / 2)

    def _record(self, job: Job, outcome: Outcome) -> None:
        if not outcome.finished_at:
            outcome.finished_at = now_iso()
        self.results.set(job.index, outcome)
        self.stats.done += 1
        if outcome.status == "failed":
            self.stats.failed += 1
        elif outcome.status == "unknown":
            self.stats.unknown += 1
        if self.journal is not None:
            self.journal.outcome(
                job.key,
                job.index,
                status=outcome.status,
                http_status=outcome.http_status,
                error=outcome.error,
                attempts=outcome.attempts,
                finished_at=outcome.finished_at,
                outputs=outcome.outputs,
                urgent=self.operation.sends,
            )


def _outcome(status: str, exc: ApiError, attempts: int) -> Outcome:
    return Outcome(status, exc.status, str(exc), attempts, now_iso())
