"""Requests per second: a pacer that spaces requests evenly, steered by an AIMD controller.

The configured rate is a ceiling. On a 429 the controller pauses every request for the
answer's ``Retry-After`` and lowers the rate to 80 % of the rate actually reached when the 429
came (multiplicative decrease: the server's limit is near there). After a quiet period it climbs
back quickly to 95 % of that mark, then probes above it slowly, a step a second (additive
increase), up to the ceiling. With no ceiling (``--rate 0``) the same happens, and once the
rate has climbed well past the mark the limit is lifted again.

The pacer gives each request the next free slot, ``1/rate`` seconds after the previous one
(never a burst at the start; after a pause, slots start again from now), so any one-second
window sees at most the rate plus one. Why not an ``aiolimiter`` bucket: a bucket that holds
one request loses every late timer wake-up (libuv rounds timers up to the millisecond), and
``--rate 100`` then ran at 90 a second; a bucket that holds more lets that many through at once.
Slots fixed in advance absorb the late wake-ups instead, and a guard over the last
requests' start times keeps two late ones from bunching past the rate plus one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

#: Lowest rate the controller goes down to (requests per second).
FLOOR = 0.5
#: Seconds without a 429 before the rate climbs again.
QUIET_SECONDS = 5.0
#: Seconds of recent requests the reached rate is measured over.
OBSERVE_SECONDS = 3.0
#: No more than the rate plus one requests start within a second and this margin (for the
#: network's jitter; at most half a slot, so evenly paced requests never wait for it).
GUARD_MARGIN = 0.01
#: The rate after a 429, as a share of the rate reached.
DECREASE = 0.8
#: A 503 is a server hiccup more than a limit: it lowers the rate (to this share, at most once
#: a second) only while 503s are more than STRAIN_SHARE of the recent requests, and pauses
#: no other request (the refused one waits its own Retry-After).
STRAIN_DECREASE = 0.9
STRAIN_SHARE = 0.05


class RateController:
    """The current rate (0: no limit), lowered by 429s and raised again in quiet periods.
    ``clock`` gives monotonic seconds (tests pass one they move)."""

    def __init__(
        self,
        ceiling: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self.ceiling = max(0.0, ceiling)
        self.rate = self.ceiling
        self.clock = clock
        self.quiet = quiet
        self.paused_until = 0.0
        self.last_throttle = float("-inf")
        self.last_raise = 0.0
        self.throttles = 0
        #: The rate reached when the last 429 came: the server's limit is about there.
        self.mark: float | None = None
        self._recent: deque[float] = deque()
        #: Recent 503s; pauses (start, end), which are not time the rate was reached in.
        self._strains: deque[float] = deque()
        self._pauses: deque[tuple[float, float]] = deque()
        self.last_strain = 0.0

    @property
    def throttled(self) -> bool:
        """Whether a pause is on, or the rate is held below the ceiling, because of 429s."""
        return self.clock() < self.paused_until or self.mark is not None

    def _reached(self) -> float:
        """The rate reached, for a decrease: what was observed, no more than the rate set,
        and the rate set itself in a run's first half second (a first burst says nothing yet)."""
        now = self.clock()
        self._trim(now)
        young = not self._recent or now - self._recent[0] < 0.5
        if self.rate and young:
            return max(self.rate, FLOOR)
        reached = self.observed_rate()
        if self.rate and (not reached or reached > self.rate):
            reached = self.rate
        return max(reached, FLOOR)

    def observed_rate(self) -> float:
        """Requests a second lately: those started in the last few seconds over the time they
        span, less the time paused for 429s (at least a quarter second, so the first burst of
        a run reads as a rate too). A pause is not the rate the server allowed."""
        now = self.clock()
        self._trim(now)
        if not self._recent:
            return 0.0
        start = self._recent[0]
        paused = sum(max(0.0, min(b, now) - max(a, start)) for a, b in self._pauses)
        return len(self._recent) / max(0.25, now - start - paused)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0] < now - OBSERVE_SECONDS:
            self._recent.popleft()
        while self._strains and self._strains[0] < now - OBSERVE_SECONDS:
            self._strains.popleft()
        while self._pauses and self._pauses[0][1] < now - OBSERVE_SECONDS:
            self._pauses.popleft()

    def strained(self) -> None:
        """A 503 arrived. Lowers the rate a little while they are frequent (see
        :data:`STRAIN_SHARE`); a lone one changes nothing."""
        now = self.clock()
        self._strains.append(now)
        self._trim(now)
        if len(self._strains) < 2 or len(self._strains) <= STRAIN_SHARE * len(self._recent):
            return
        if now - self.last_strain < 1.0:
            return
        self.last_strain = now
        self.last_raise = now
        reached = self._reached()
        if self.mark is None:
            self.mark = reached
        self.rate = max(FLOOR, reached * STRAIN_DECREASE)

    def started(self) -> None:
        """A request is going out now."""
        now = self.clock()
        self._recent.append(now)
        if len(self._recent) > 4096:
            self._trim(now)
        self.raise_if_quiet()

    def throttle(self, retry_after: float | None) -> None:
        """A 429 arrived: every request pauses for its Retry-After, and the rate is lowered
        (multiplicative decrease, once per burst)."""
        now = self.clock()
        self.throttles += 1
        if retry_after:
            until = max(self.paused_until, now + retry_after)
            self._pauses.append((max(now, self.paused_until), until))
            self.paused_until = until
        recent = now - self.last_throttle < 1.0
        self.last_throttle = now
        self.last_raise = now
        if recent:
            return  # one decrease per burst of 429s, not one per request in flight
        reached = self._reached()
        self.mark = reached
        self.rate = max(FLOOR, reached * DECREASE)

    def raise_if_quiet(self) -> None:
        """Additive increase: a step a second once no 429 came for the quiet period."""
        if self.mark is None:
            return
        now = self.clock()
        if now - self.last_throttle < self.quiet or now - self.last_raise < 1.0:
            return
        if now - self.last_strain < 1.0:
            return
        self.last_raise = now
        mark = self.mark
        if self.rate < 0.95 * mark:
            self.rate = min(0.95 * mark, self.rate + max(FLOOR, 0.05 * mark))
        else:
            self.rate += max(0.1, 0.01 * mark)  # probing past the last limit, gently
        if self.ceiling and self.rate >= self.ceiling:
            self.rate, self.mark = self.ceiling, None
        elif not self.ceiling and self.rate >= 1.5 * mark:
            self.rate, self.mark = 0.0, None


#: Waits at least this long (seconds) end early on a stop.
LONG_WAIT = 0.25


class Limiter:
    """Waits until a request may go out: after any pause, in the next free slot at the
    controller's current rate. ``sleep`` is injectable (the controller has the clock)."""

    def __init__(
        self,
        controller: RateController,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.controller = controller
        self.sleep = sleep
        self._next = 0.0
        self._sent: deque[float] = deque(maxlen=1024)

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Wait for this request's slot; False when ``stop`` is set first (a long wait, such
        as a slot at a very low rate or a long Retry-After, ends at once on a stop)."""
        c = self.controller
        while True:
            now = c.clock()
            if c.paused_until > now:
                self._next = 0.0  # slots start again after the pause
                if not await self._wait(c.paused_until - now, stop):
                    return False
                continue
            rate = c.rate
            if rate > 0:
                slot = max(self._next, now)
                self._next = slot + 1 / rate
                if slot > now and not await self._wait(slot - now, stop):
                    return False
                # The guard: a wake-up late enough to bunch two slots never lets more than
                # the rate plus one start within a second (a little over, for the network).
                allowed = int(rate) + 1
                while len(self._sent) >= allowed:
                    window = 1.0 + min(GUARD_MARGIN, 0.5 / rate)
                    wait = self._sent[-allowed] + window - c.clock()
                    if wait <= 0:
                        break
                    if not await self._wait(wait, stop):
                        return False
                if c.paused_until > c.clock():
                    continue  # a 429 came in while this request waited its turn
                self._sent.append(c.clock())
            c.started()
            return True

    async def _wait(self, seconds: float, stop: asyncio.Event | None) -> bool:
        """Sleep ``seconds``; False when ``stop`` is set before. Short waits (the common
        case, many a second) just sleep: racing them would cost two tasks each."""
        if stop is None or seconds < LONG_WAIT:
            await self.sleep(seconds)
            return stop is None or not stop.is_set()
        if stop.is_set():
            return False
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
        return not stop.is_set()
