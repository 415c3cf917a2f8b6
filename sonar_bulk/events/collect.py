"""Collecting over a window: start the receiver, register one webhook with exactly the chosen
events pointing at ``<public-url>/<secret>``, and at the end delete it again.

A webhook this tool registers is named ``sonar-bulk events <store id>`` and remembered in the
store. A run that crashed leaves its webhook behind; the next collector on the same store finds
it (by that name, or by the id the store remembers) and deletes it before registering its own,
so Sonar never keeps delivering to a receiver that is gone. The secret path belongs to the
store: a collector restarted on the same store listens on the same path, so deliveries Sonar
retries after a restart still land.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sonar_bulk.api.endpoints import WEBHOOK_EVENTS
from sonar_bulk.errors import ApiError, CallFailed, SonarBulkError, UsageError

if TYPE_CHECKING:
    from sonar_bulk.connection import Connection
    from sonar_bulk.events.receiver import Receiver
    from sonar_bulk.events.store import EventStore

NAME_PREFIX = "sonar-bulk events"
DEFAULT_LISTEN = "127.0.0.1:8788"


def webhook_name(store_id: str) -> str:
    return f"{NAME_PREFIX} {store_id}"


def parse_events(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of event names (UsageError naming an unknown one)."""
    names = [n.strip().lower() for n in text.replace(";", ",").split(",") if n.strip()]
    if not names:
        raise UsageError("--events: name at least one event, or all")
    if "all" in names:
        return WEBHOOK_EVENTS
    for name in names:
        if name not in WEBHOOK_EVENTS:
            import difflib

            close = difflib.get_close_matches(name, WEBHOOK_EVENTS, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(
                f"--events: unknown event {name!r}{hint}; one of all, {', '.join(WEBHOOK_EVENTS)}"
            )
    return tuple(dict.fromkeys(names))


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8788`` for IPv6; port 0 picks a free one)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: use HOST:PORT, such as {DEFAULT_LISTEN}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_public_url(url: str) -> str:
    """An absolute http(s) URL without query or fragment, without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(
            f"--public-url {url!r}: use an http:// or https:// URL Sonar can reach, such as "
            "https://abc.example-tunnel.dev"
        )
    return url.strip().rstrip("/")


def call(conn: Connection, method: str, *args: Any, hide: Sequence[str] = ()) -> Any:
    """One webhook call through :class:`SonarClient` from synchronous code; the answer's body.
    An error answer or no answer raises :class:`CallFailed` with a one-line (redacted)
    message, ``hide`` (a webhook's secret path: an answer may quote the request) blanked out."""
    import asyncio

    from sonar_bulk.api.client import SonarClient

    async def go() -> Any:
        async with SonarClient(
            conn.base_url, token=conn.token, aliases=conn.aliases, timeout=30.0
        ) as client:
            return (await getattr(client, method)(*args)).body

    try:
        return asyncio.run(go())
    except ApiError as exc:
        message = f"{method.replace('_', ' ')}: {exc}"
        for secret in hide:
            message = message.replace(secret, "…")
        raise CallFailed(message, exc) from None


@dataclass
class CollectOptions:
    store: Path
    events: tuple[str, ...] = WEBHOOK_EVENTS
    listen: tuple[str, int] = ("127.0.0.1", 8788)
    public_url: str | None = None


class Collector:
    """The receiver plus the webhook it registered; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        conn: Connection,
        options: CollectOptions,
        notice: Callable[[str], None] = lambda text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.options = options
        self.notice = notice
        self.clock = clock
        self.store: EventStore | None = None
        self.receiver: Receiver | None = None
        self.hook_id: str | None = None
        self.public_url = ""
        self.started_at = 0.0
        self.cleaned: list[str] = []

    def check_reachable(self, public: str) -> None:
        """Refuse a loopback address for a Sonar that is not on this machine: it could never
        deliver there."""
        here = urlsplit(self.conn.base_url).hostname or ""
        there = urlsplit(public).hostname or ""
        if _is_loopback(there) and not self.conn.emulated and not _is_loopback(here):
            raise UsageError(
                f"Sonar can't reach {public} (this machine): pass --public-url with an address "
                "it can reach, such as a tunnel to the --listen port"
            )

    def start(self) -> Collector:
        options = self.options
        if options.public_url is not None:
            self.check_reachable(check_public_url(options.public_url))
        else:
            from sonar_bulk.serving import http_url

            self.check_reachable(http_url(*options.listen))
        from sonar_bulk.events.store import EventStore

        store = EventStore(options.store)
        try:
            store.lock()
            self.store = store
            self.cleaned = self._clean_stale(store)
            prefix = urlsplit(options.public_url or "").path
            from sonar_bulk.events.receiver import Receiver  # the HTTP stack, when used

            self.receiver = Receiver(
                options.store, store.secret, *options.listen, prefix=prefix
            ).start()
            self.public_url = check_public_url(options.public_url or self.receiver.url)
            name = webhook_name(store.store_id)
            body = call(
                self.conn,
                "create_webhook",
                {
                    "name": name,
                    "active": "true",
                    "settings": {event: "true" for event in options.events},
                    "url": f"{self.public_url}/{store.secret}",
                    "http_method": "POST",
                },
                hide=(store.secret,),
            )
            hook_id = body.get("id") if isinstance(body, dict) else None
            if hook_id is None:
                raise SonarBulkError("create webhook: the answer has no webhook id")
            self.hook_id = str(hook_id)
            store.remember_webhook(self.conn.target, self.hook_id, name)
        except BaseException:
            self.stop()
            raise
        self.started_at = self.clock()
        return self

    def _clean_stale(self, store: EventStore) -> list[str]:
        """Delete the webhooks an earlier run on this store left behind; their ids."""
        remembered = dict(store.webhooks(self.conn.target))
        name = webhook_name(store.store_id)
        stale = dict(remembered)
        try:
            listed = call(self.conn, "list_webhooks", hide=(store.secret,))
        except CallFailed as exc:
            listed = None
            if remembered:
                self.notice(f"could not list webhooks ({exc}); deleting those this store made")
        if isinstance(listed, dict):  # {"webhooks": [...]} as well as a bare list
            listed = next((v for v in listed.values() if isinstance(v, list)), [])
        if isinstance(listed, list):
            present = {
                str(h.get("id")): str(h.get("name", "")) for h in listed if isinstance(h, dict)
            }
            # by its name (this store's), never by a remembered id alone: ids may be reused
            stale = {i: n for i, n in present.items() if n == name}
            for gone in set(remembered) - set(present):
                store.forget_webhook(self.conn.target, gone)
        cleaned = []
        for hook_id in stale:
            if self._delete(hook_id):
                store.forget_webhook(self.conn.target, hook_id)
                cleaned.append(hook_id)
        if cleaned:
            self.notice(
                f"deleted {len(cleaned)} webhook(s) an earlier run left behind: "
                + ", ".join(cleaned)
            )
        return cleaned

    def _secrets(self) -> tuple[str, ...]:
        return (self.store.secret,) if self.store is not None else ()

    def _delete(self, hook_id: str, mine: bool = False) -> bool:
        """Delete one webhook; True when it is gone (a 404 too: said when it is this run's,
        since nothing was delivered after it went)."""
        try:
            call(self.conn, "delete_webhook", hook_id, hide=self._secrets())
        except CallFailed as exc:
            if exc.status == 404:
                if mine:
                    self.notice(
                        f"webhook {hook_id} was already gone (deleted by hand?): events after "
                        "that were not delivered here"
                    )
                return True
            self.notice(f"could not delete webhook {hook_id}: {exc}; the next run retries")
            return False
        return True

    def counts(self) -> tuple[int, int]:
        """(events, deliveries) received since :meth:`start`."""
        receiver = self.receiver
        if receiver is None:
            return 0, 0
        return receiver.counters.events, receiver.counters.deliveries

    def stop(self) -> None:
        """Delete the webhook (so nothing more comes), then stop the receiver once the
        deliveries in flight are stored. Safe to call twice."""
        if self.hook_id is not None and self.store is not None:
            if self._delete(self.hook_id, mine=True):
                self.store.forget_webhook(self.conn.target, self.hook_id)
            self.hook_id = None
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None
        if self.store is not None:
            self.store.close()
            self.store = None


#: The shape of a collector's secret (``secrets.token_urlsafe(32)``).
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


def mask_webhooks(body: Any) -> Any:
    """``body`` (a webhook, a list of them, or anything else) with the secret path of every
    collector's webhook hidden: ``http://127.0.0.1:8788/…``. A collector's webhook is told by
    its name or by a URL ending in a secret-shaped segment (a renamed one too)."""
    if isinstance(body, list):
        return [mask_webhooks(item) for item in body]
    if not isinstance(body, dict):
        return body
    if not isinstance(body.get("url"), str):  # a wrapper such as {"webhooks": [...]}
        return {key: mask_webhooks(value) for key, value in body.items()}
    url = body["url"]
    parts = urlsplit(url)
    last = parts.path.rstrip("/").rpartition("/")[2]
    ours = str(body.get("name", "")).startswith(NAME_PREFIX)
    if last and (ours or _SECRET.fullmatch(last)):
        path = parts.path.rstrip("/")
        return {**body, "url": urlunsplit(parts._replace(path=path[: -len(last)] + "…"))}
    return body


def describe(events: Sequence[str]) -> str:
    return "all events" if tuple(events) == WEBHOOK_EVENTS else ", ".join(events)
