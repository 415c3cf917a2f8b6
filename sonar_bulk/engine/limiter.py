"""Requests per second: an ``aiolimiter`` bucket shaped by an AIMD controller.

The configured rate is a ceiling. On a 429 the controller halves the rate (multiplicative
decrease) and pauses every request for the answer's ``Retry-After``; after a quiet period with
no 429 it raises the rate again by a tenth of the ceiling a second (additive increase), back up
to the ceiling. With no ceiling (``--rate 0``), the first 429 sets one at half the rate that was
reached, and the ceiling is lifted again once the rate has climbed back past it.

The bucket holds one request: a steady stream at the rate, never a burst at the start, so any
one-second window sees at most the rate plus one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

#: Lowest rate the controller goes down to (requests per second).
FLOOR = 0.5
#: Seconds without a 429 before the rate climbs again.
QUIET_SECONDS = 10.0


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
        self.last_throttle: float | None = None
        self.last_raise = 0.0
        self.throttles = 0
        #: With no ceiling: the rate set after the first 429 (lifted once passed again).
        self._unlimited_mark: float | None = None
        self._recent: deque[float] = deque()

    @property
    def throttled(self) -> bool:
        """Whether the rate is below the ceiling (or a pause is on) because of 429s."""
        now = self.clock()
        if now < self.paused_until:
            return True
        return self.last_throttle is not None and (
            self.ceiling == 0 and self.rate > 0 or self.rate < self.ceiling
        )

    def observed_rate(self) -> float:
        """Requests started in the last second."""
        now = self.clock()
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        return float(len(self._recent))

    def started(self) -> None:
        """A request is going out now."""
        self._recent.append(self.clock())
        self.raise_if_quiet()

    def throttle(self, retry_after: float | None) -> None:
        """A 429 (or a 503 asking to come back later) arrived."""
        now = self.clock()
        self.throttles += 1
        if retry_after:
            self.paused_until = max(self.paused_until, now + retry_after)
        recent = self.last_throttle is not None and now - self.last_throttle < 1.0
        self.last_throttle = now
        self.last_raise = now
        if recent:
            return  # one decrease per burst of 429s, not one per request in flight
        current = self.rate or max(self.observed_rate(), 2 * FLOOR)
        self.rate = max(FLOOR, current / 2)
        if self.ceiling == 0:
            self._unlimited_mark = current

    def raise_if_quiet(self) -> None:
        """Additive increase: a step a second once no 429 came for the quiet period."""
        if self.last_throttle is None:
            return
        now = self.clock()
        if now - self.last_throttle < self.quiet or now - self.last_raise < 1.0:
            return
        self.last_raise = now
        if self.ceiling:
            self.rate = min(self.ceiling, self.rate + max(FLOOR, self.ceiling / 10))
            if self.rate >= self.ceiling:
                self.last_throttle = None
        else:
            mark = self._unlimited_mark or self.rate
            self.rate += max(FLOOR, mark / 10)
            if self.rate >= mark:
                self.rate, self.last_throttle, self._unlimited_mark = 0.0, None, None


class Limiter:
    """Waits until a request may go out: after any pause, at the controller's current rate."""

    def __init__(
        self,
        controller: RateController,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.controller = controller
        self.sleep = sleep
        self._bucket: AsyncLimiter | None = None
        self._bucket_rate = 0.0

    async def acquire(self) -> None:
        c = self.controller
        while True:
            wait = c.paused_until - c.clock()
            if wait > 0:
                await self.sleep(wait)
                continue
            rate = c.rate
            if rate > 0:
                if self._bucket is None or rate != self._bucket_rate:
                    self._bucket, self._bucket_rate = AsyncLimiter(1, 1 / rate), rate
                await self._bucket.acquire()
                if c.paused_until > c.clock():
                    continue  # a 429 came in while this request waited its turn
            c.started()
            return
