"""Webhook delivery: each event goes to every active webhook that enables it, and a failed
delivery is retried on Sonar's documented schedule with the same ``uuid``."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from sonar_bulk.emulator.state import Event, Store
from sonar_bulk.endpoints import WEBHOOK_RETRY_DELAYS


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


class Dispatcher:
    """Queues and retries deliveries on the server's event loop.

    ``time_scale`` multiplies the retry delays (``0.001`` turns 10 s into 10 ms for tests).
    """

    def __init__(self, store: Store, *, time_scale: float = 1.0, timeout: float = 10.0) -> None:
        self.store = store
        self.time_scale = time_scale
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def reset(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.deliveries.clear()

    def publish(self, events: list[Event]) -> None:
        """Queue one delivery per (event, webhook that wants it)."""
        for event in events:
            hooks = [h for h in self.store.webhooks.values() if h.wants(event.action)]
            if not hooks:
                continue
            event_uuid = str(uuid.uuid4())
            payload = {
                "uuid": event_uuid,
                "action": event.action,
                "created_at": self.store.clock.iso(),
                **event.data,
            }
            for hook in hooks:
                delivery = Delivery(
                    event_uuid, hook.id, hook.url, hook.http_method, event.action, payload
                )
                self.deliveries.append(delivery)
                if len(self.deliveries) > 10_000:
                    del self.deliveries[:1000]
                task = asyncio.get_running_loop().create_task(self._run(delivery))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, delivery: Delivery) -> None:
        delays = (0.0, *WEBHOOK_RETRY_DELAYS)
        for delay in delays:
            if delay:
                await asyncio.sleep(delay * self.time_scale)
            if await self._attempt(delivery):
                delivery.state = "delivered"
                return
        delivery.state = "failed"

    async def _attempt(self, delivery: Delivery) -> bool:
        assert self.client is not None
        at = self.store.clock.iso()
        try:
            response = await self.client.request(
                delivery.method,
                delivery.url,
                json=delivery.payload,
                headers={"User-Agent": "sonar-bulk-emulator"},
            )
        except httpx.HTTPError as exc:
            delivery.attempts.append(Attempt(at, None, f"{type(exc).__name__}: {exc}"[:200]))
            return False
        delivery.attempts.append(Attempt(at, response.status_code))
        return 200 <= response.status_code < 300
