"""Webhook delivery: each event goes to every active webhook that enables it, and a failed
delivery is retried on Sonar's documented schedule with the same ``uuid``.

Deliveries wait in a bounded queue per webhook and are sent by a fixed number of workers per
webhook (``workers``), each one at a time over its own keep-alive connection (aiohttp's client
and pool), so a burst of API requests never becomes a burst of concurrent connections, and a
worker whose connections fail backs off. The events of one customer always go through the same
worker, so a webhook sees them in the order they happened (until one is retried).
A webhook with ``max_pending`` deliveries not yet delivered or failed drops new ones and says
how many (``notice``), as a provider protecting itself would. A retry waits on a timer, not in
a worker; with a state file, pending retries are kept there and resume after a restart.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sonar_bulk.emulator.webhook_client import LaneClient

from sonar_bulk.api.endpoints import WEBHOOK_RETRY_DELAYS
from sonar_bulk.emulator.state import Event, Store, webhook_url_problem

USER_AGENT = "sonar-bulk-emulator"
logger = logging.getLogger("sonar_bulk.emulator")


@dataclass
class Attempt:
    at: str
    status: int | None
    error: str | None = None


@dataclass
class Delivery:
    """One event sent to one webhook, with every attempt made so far."""

    uuid: str
    webhook_id: int
    url: str
    method: str
    action: str
    payload: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    state: str = "pending"  # pending, delivered, failed
    #: The customer it is about (deliveries of one customer share a worker).
    customer: str = ""
    #: The JSON body, encoded when first sent (never, for a receiver that is down).
    data: bytes = b""
    #: Whether the state file holds it (a retry is waiting, or the emulator stopped).
    saved: bool = False

    @property
    def key(self) -> str:
        return f"{self.uuid}:{self.webhook_id}"

    def body(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "webhook_id": self.webhook_id,
            "url": self.url,
            "method": self.method,
            "action": self.action,
            "state": self.state,
            "attempts": [a.__dict__ for a in self.attempts],
            "payload": self.payload,
        }

    def record(self, due: float) -> dict[str, Any]:
        """What the state file keeps: the delivery and when (epoch seconds) it is due."""
        return {**self.body(), "customer": self.customer, "due": due}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> tuple[Delivery, float]:
        delivery = cls(
            uuid=str(record["uuid"]),
            webhook_id=int(record["webhook_id"]),
            url=str(record["url"]),
            method=str(record["method"]),
            action=str(record["action"]),
            payload=dict(record["payload"]),
            attempts=[Attempt(**a) for a in record["attempts"]],
            customer=str(record.get("customer", "")),
            saved=True,
        )
        return delivery, float(record["due"])


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class BadTarget(ValueError):
    """A webhook URL that no attempt can reach (it fails the delivery at once)."""


@functools.lru_cache(maxsize=256)
def check_target(url: str) -> str:
    """``url`` when an attempt can be made to it (cached: a webhook sends to one URL many
    times); BadTarget when it is malformed (``http://[::1``), not http(s), or points at an
    emulator's admin API."""
    problem = webhook_url_problem(url)
    if problem is not None:
        raise BadTarget(f"url {problem}")
    return url


class Lane:
    """One worker of one webhook: its FIFO, its task while it has work, and its HTTP client
    (:mod:`sonar_bulk.emulator.webhook_client`, made on the server's loop when first needed),
    whose pool keeps the lane's connection alive between deliveries; the lane sends one request
    at a time, so a webhook never has more connections open than it has lanes."""

    __slots__ = ("queue", "task", "current", "backoff", "client")

    def __init__(self) -> None:
        self.queue: deque[Delivery] = deque()
        self.task: asyncio.Task[None] | None = None
        self.current: Delivery | None = None
        self.client: LaneClient | None = None
        self.backoff = 0.0  # seconds to pause before the next attempt (a connection failed)


@dataclass
class HookStats:
    """Counters of one webhook's deliveries (``GET /__emulator__/queue``)."""

    pending: int = 0  # queued, being sent, or waiting for a retry
    waiting_retry: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


class Dispatcher:
    """Queues, sends and retries deliveries on the server's event loop.

    ``time_scale`` multiplies the retry delays (``0.001`` turns 10 s into 10 ms for tests);
    ``timeout`` bounds one attempt (connect, send, answer); ``workers`` is the number of
    connections per webhook; ``max_pending`` the deliveries a webhook may have pending before
    new ones are dropped; ``notice`` is told of drops (at most once a second).
    """

    def __init__(
        self,
        store: Store,
        *,
        time_scale: float = 1.0,
        timeout: float = 10.0,
        workers: int = 8,
        max_pending: int = 10_000,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.time_scale = time_scale
        self.timeout = timeout
        self.workers = max(1, workers)
        self.max_pending = max_pending
        self.notice = notice or logger.warning
        self.deliveries: deque[Delivery] = deque(maxlen=10_000)
        self.lanes: dict[tuple[int, int], Lane] = {}
        self.stats: dict[int, HookStats] = {}
        self.timers: dict[str, tuple[asyncio.TimerHandle, Delivery]] = {}
        self.unreported: dict[int, int] = {}
        self.report: asyncio.TimerHandle | None = None
        #: Lanes' HTTP clients being closed (by a reset).
        self.closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Resume the deliveries the state file kept."""
        now = time.time()
        for record in self.store.pending_deliveries:
            delivery, due = Delivery.from_record(record)
            self.deliveries.append(delivery)
            self._stats(delivery.webhook_id).pending += 1
            self._wait(delivery, max(0.0, due - now))
        self.store.pending_deliveries = []

    async def stop(self) -> None:
        """Keep what is still pending in the state file (if any), then stop every worker."""
        if self.store.db is not None:
            now = time.time()
            for lane in self.lanes.values():
                for delivery in (lane.current, *lane.queue):
                    if delivery is not None and delivery.state == "pending":
                        self.store.save_delivery(delivery.key, delivery.record(now))
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        self.reset()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.closing:
            await asyncio.gather(*self.closing, return_exceptions=True)

    def reset(self) -> None:
        """Forget every delivery: cancel workers and timers, close connections."""
        for lane in self.lanes.values():
            if lane.task is not None:
                lane.task.cancel()
            if lane.client is not None:
                task = asyncio.get_running_loop().create_task(lane.client.close())
                self.closing.add(task)
                task.add_done_callback(self.closing.discard)
                lane.client = None
        for handle, _ in self.timers.values():
            handle.cancel()
        if self.report is not None:
            self.report.cancel()
            self.report = None
        self.lanes.clear()
        self.timers.clear()
        self.stats.clear()
        self.unreported.clear()
        self.deliveries.clear()

    def queue(self) -> dict[str, Any]:
        """The counters, for ``GET /__emulator__/queue``."""
        return {
            "max_pending": self.max_pending,
            "workers": self.workers,
            "webhooks": [{"webhook_id": k, **v.__dict__} for k, v in sorted(self.stats.items())],
        }

    def _stats(self, hook_id: int) -> HookStats:
        stats = self.stats.get(hook_id)
        if stats is None:
            stats = self.stats[hook_id] = HookStats()
        return stats

    # -- queueing ------------------------------------------------------------------------------

    def publish(self, events: list[Event]) -> None:
        """Queue one delivery per (event, webhook that wants it); drop it when the webhook
        already has ``max_pending``."""
        for event in events:
            hooks = []
            for hook in self.store.webhooks.values():
                if hook.wants(event.action):
                    stats = self._stats(hook.id)
                    if stats.pending < self.max_pending:
                        hooks.append(hook)
                    else:
                        stats.dropped += 1
                        self._drop(hook.id)
            if not hooks:
                continue
            event_uuid = str(uuid.uuid4())
            payload = {
                "uuid": event_uuid,
                "action": event.action,
                "created_at": self.store.clock.iso(),
                **event.data,
            }
            customer = event.data.get("customer") or {}
            phone = str(customer.get("phone_number", "")) if isinstance(customer, dict) else ""
            for hook in hooks:
                delivery = Delivery(
                    event_uuid,
                    hook.id,
                    hook.url,
                    hook.http_method,
                    event.action,
                    payload,
                    customer=phone,
                )
                self.stats[hook.id].pending += 1
                self.deliveries.append(delivery)
                self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        key = (delivery.webhook_id, hash(delivery.customer) % self.workers)
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane()
        lane.queue.append(delivery)
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._work(lane))

    def _drop(self, hook_id: int) -> None:
        self.unreported[hook_id] = self.unreported.get(hook_id, 0) + 1
        if self.report is None:  # the first drop is told at once, later ones once a second
            self._report_drops()

    def _report_drops(self) -> None:
        if not self.unreported:
            self.report = None
            return
        for hook_id, count in sorted(self.unreported.items()):
            self.notice(
                f"webhook {hook_id}: dropped {count:,} "
                f"{'delivery' if count == 1 else 'deliveries'}; {self.max_pending:,} "
                "were already pending (--webhook-queue)"
            )
        self.unreported.clear()
        self.report = asyncio.get_running_loop().call_later(1.0, self._report_drops)

    def _wait(self, delivery: Delivery, delay: float) -> None:
        """Queue ``delivery`` again after ``delay`` seconds."""
        self._stats(delivery.webhook_id).waiting_retry += 1
        handle = asyncio.get_running_loop().call_later(delay, self._due, delivery)
        self.timers[delivery.key] = (handle, delivery)

    def _due(self, delivery: Delivery) -> None:
        if self.timers.pop(delivery.key, None) is not None:
            self._stats(delivery.webhook_id).waiting_retry -= 1
            self._enqueue(delivery)

    # -- sending ---------------------------------------------------------------------------------

    async def _work(self, lane: Lane) -> None:
        """Send the lane's deliveries in order. After a connection that failed (refused,
        reset, timed out) the worker pauses before its next attempt, 0.05 s doubling to 1 s
        (times ``time_scale``) while failures go on, so a receiver that is down costs a few
        connection attempts a second, not one per event; its deliveries wait in the queue."""
        try:
            while lane.queue:
                if lane.backoff:
                    await asyncio.sleep(lane.backoff * self.time_scale)
                delivery = lane.current = lane.queue.popleft()
                ok, final, answered = await self._attempt(delivery, lane)
                lane.current = None
                self._settle(delivery, ok, final)
                lane.backoff = 0.0 if answered else min(1.0, max(0.05, lane.backoff * 2))
        finally:
            lane.task = None

    def _settle(self, delivery: Delivery, ok: bool, final: bool) -> None:
        made = len(delivery.attempts)
        if not ok and not final and made <= len(WEBHOOK_RETRY_DELAYS):
            delay = WEBHOOK_RETRY_DELAYS[made - 1] * self.time_scale
            if self.store.db is not None:
                self.store.save_delivery(delivery.key, delivery.record(time.time() + delay))
                delivery.saved = True
            self._wait(delivery, delay)
            return
        delivery.state = "delivered" if ok else "failed"
        stats = self._stats(delivery.webhook_id)
        stats.pending -= 1
        if ok:
            stats.delivered += 1
        else:
            stats.failed += 1
        if delivery.saved:
            self.store.forget_delivery(delivery.key)
            delivery.saved = False

    async def _attempt(self, delivery: Delivery, lane: Lane) -> tuple[bool, bool, bool]:
        """One attempt: (delivered, final, answered). A URL no attempt can reach is final at
        once; ``answered`` is False when no HTTP answer came (the connection failed)."""
        at = self.store.clock.iso()
        try:
            url = check_target(delivery.url)
        except BadTarget as exc:
            delivery.attempts.append(Attempt(at, None, f"{exc}; not retried"))
            return False, True, True
        if not delivery.data:
            delivery.data = _encode(delivery.payload)
        # the client's module imports aiohttp: loaded once a delivery is sent
        from sonar_bulk.emulator import webhook_client as http

        try:
            async with asyncio.timeout(self.timeout):
                if lane.client is None:
                    lane.client = http.LaneClient(USER_AGENT)
                status = await lane.client.send(delivery.method, url, delivery.data)
        except http.InvalidURL as exc:
            delivery.attempts.append(Attempt(at, None, f"url is not valid ({exc}); not retried"))
            return False, True, True
        except http.FAILURES as exc:
            delivery.attempts.append(Attempt(at, None, http.error_text(exc)))
            return False, False, False
        delivery.attempts.append(Attempt(at, status))
        return 200 <= status < 300, False, True
