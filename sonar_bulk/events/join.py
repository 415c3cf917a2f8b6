"""Events joined to a bulk run's results: per row, what Sonar reported about that customer
after the row ran, matched on the phone number (E.164) and, for a message, its external id.

Columns (``sonar__`` + name), by command:

- sends (``messages send``, ``campaigns send``): ``outbound_confirmed`` (an
  ``outbound_message`` event for this message: its external id when the send answer had one,
  else for this phone), ``replied`` (``yes``; ``stop`` when the only answer was an
  unsubscribe keyword) and ``reply_text`` (inbound messages from the customer),
  ``unsubscribed_after_send``;
- ``customers upsert``: ``customer_created``, ``subscription`` (the last subscribed or
  unsubscribed event), ``replied``, ``reply_text``;
- every command: ``events`` (how many events about the customer came in the window).

A row is only joined when it ran (its request succeeded or, for a send, may have); "after"
means received no earlier than one second before the row finished (its time is kept to the
second).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sonar_bulk.api.endpoints import STOP_KEYWORDS
from sonar_bulk.events.store import EventStore
from sonar_bulk.plan import DONE, SENT

INBOUND = ("new_unassigned_message", "new_assigned_message")
SEND_COLUMNS = ("outbound_confirmed", "replied", "reply_text", "unsubscribed_after_send", "events")
UPSERT_COLUMNS = ("customer_created", "subscription", "replied", "reply_text", "events")
#: Longest reply_text cell; more replies are counted, not shown.
REPLY_TEXT_MAX = 1000


def columns_for(command: str) -> tuple[str, ...]:
    return UPSERT_COLUMNS if command == "customers upsert" else SEND_COLUMNS


def _epoch(stamp: str, default: float) -> float:
    if not stamp:
        return default
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def is_stop(text: str) -> bool:
    """Whether a reply is only an unsubscribe keyword (STOP, "stop texting me!")."""
    return text.strip().lower().rstrip("!").strip() in STOP_KEYWORDS


def _replies(events: list[dict[str, Any]]) -> tuple[str, str]:
    """(replied, reply_text): ``yes`` for a real answer, ``stop`` when every reply was only an
    unsubscribe keyword (not engagement), and the texts."""
    texts = [e["text"] for e in events if e["event"] in INBOUND]
    if not texts:
        return "", ""
    shown = " | ".join(texts)
    if len(shown) > REPLY_TEXT_MAX:
        shown = shown[: REPLY_TEXT_MAX - 1] + "…"
    return ("stop" if all(is_stop(t) for t in texts) else "yes"), shown


def join_events(
    store: EventStore,
    command: str,
    phones: list[str],
    results: Any,
    since: float,
) -> list[str]:
    """Note the event columns of every row that ran into ``results`` (a RowResults);
    ``phones`` are the rows' E.164 numbers. The column names, as ``results`` extras."""
    names = columns_for(command)
    ran = DONE | SENT
    ids = results.extra.get("external_message_id", {})
    for index, phone in enumerate(phones):
        if not phone or results.status(index) not in ran:
            continue
        after = _epoch(results.row(index)[4], since) - 1.0
        events = store.by_phone(phone, max(since - 1.0, after))
        values: dict[str, str] = {"events": str(len(events))}
        values["replied"], values["reply_text"] = _replies(events)
        if command == "customers upsert":
            if any(e["event"] == "customer_created" for e in events):
                values["customer_created"] = "yes"
            subs = [e["event"] for e in events if e["event"].startswith("customer_")]
            subs = [s for s in subs if s in ("customer_subscribed", "customer_unsubscribed")]
            if subs:
                values["subscription"] = subs[-1].removeprefix("customer_")
        else:
            external = ids.get(index, "")
            if any(
                e["event"] == "outbound_message" and (not external or e["external_id"] == external)
                for e in events
            ):
                values["outbound_confirmed"] = "yes"
            if any(e["event"] == "customer_unsubscribed" for e in events):
                values["unsubscribed_after_send"] = "yes"
        for name in names:
            results.note(index, name, values.get(name, ""))
    return list(names)
