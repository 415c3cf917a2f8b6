"""The emulated Sonar company: customers, messages, campaigns, scheduled sends and webhooks.

:class:`Store` holds the state and the business rules. Each operation takes the request's
parameters and returns a :class:`Result` (status, JSON body, and the webhook events the change
causes), so the rules are testable without HTTP. With a state file, every change is written
through to SQLite and survives a restart.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import posixpath
import re
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import phonenumbers

from sonar_bulk.api.endpoints import (
    DUPLICATE_STATUS,
    DUPLICATE_WINDOW_SECONDS,
    STATUS_QUEUED,
    STATUS_SCHEDULED,
    STATUS_UNSUBSCRIBED,
    STOP_KEYWORDS,
    UPDATED_STATUS,
    Errors,
    Param,
    endpoint,
    missing_message,
)
from sonar_bulk.emulator.params import as_bool, as_text
from sonar_bulk.errors import InputError
from sonar_bulk.phonemeta import nanp_pattern

Era = Literal["2017", "2014"]

#: Where the emulator's own admin API lives (webhooks may not point there).
ADMIN = "/__emulator__"
#: What a webhook's ``http_method`` may be (INFERRED: Sonar documents POST).
WEBHOOK_METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
#: Longer phone text is invalid without parsing (E.164 has 15 digits; room for punctuation
#: and an extension), so no absurd input reaches libphonenumber or the cache.
MAX_PHONE_LENGTH = 64
DEFAULT_COMPANY_NUMBER = "+17573780424"
DEFAULT_CAMPAIGNS = {
    "test_d0Bu23": "Hello from the test campaign!",
    "fall_sale_2026": "Our fall sale starts today: 20% off everything. Reply STOP to opt out.",
}


@dataclass
class Customer:
    phone_number: str
    id: int
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    picture_url: str | None = None
    zip_code: str | None = None
    timezone: str | None = None
    external_id: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    subscribed: bool = True
    unsubscribed_at: str | None = None
    assignee: str | None = None
    state: str = "open"
    double_opt_in: bool = False
    created_at: str = ""


@dataclass
class Message:
    message_id: str
    external_id: str
    to: str
    text: str
    direction: str = "outbound"
    status: str = STATUS_QUEUED
    media_url: str | None = None
    tags: list[str] = field(default_factory=list)
    campaign_id: str | None = None
    created_at: str = ""
    sent_at: float = 0.0


@dataclass
class ScheduledSend:
    id: int
    to: str
    campaign_id: str
    send_at: str
    due: float
    status: str = "pending"


@dataclass
class Webhook:
    id: int
    name: str
    url: str
    http_method: str = "POST"
    active: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    payload: str = ""
    created_at: str = ""
    updated_at: str = ""

    def body(self) -> dict[str, Any]:
        """The webhook as the API returns it (DOCUMENTED shape)."""
        return {
            "id": self.id,
            "active": self.active,
            "settings": self.settings,
            "url": self.url,
            "http_method": self.http_method,
            "payload": self.payload,
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def wants(self, action: str) -> bool:
        """Whether this webhook is active and its settings enable ``action``."""
        return self.active and as_bool(self.settings.get(action)) is True


@dataclass
class Event:
    """A state change that webhooks may be told about."""

    action: str
    data: dict[str, Any]


#: A handler's "success" status: the answering layer fills in the endpoint table's own
#: ``success`` code, so a corrected status is one edit in sonar_bulk.api.endpoints.
OK = 0


@dataclass
class Result:
    status: int
    body: Any
    events: list[Event] = field(default_factory=list)


#: Keys are at most MAX_PHONE_LENGTH characters, so the cache stays under about 8 MB.
@functools.lru_cache(maxsize=16384)
def _phone_key(text: str, era: str) -> str | None:
    if era == "2014":
        digits = "".join(ch for ch in text if ch.isdigit())
        return text if len(digits) >= 10 else None
    if len(text) == 12 and text.startswith("+1") and _nanp().fullmatch(text[2:]):
        return text  # already E.164 and valid: libphonenumber's own +1 metadata, as one regex
    try:
        num = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    return str(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164))


@functools.cache
def _nanp() -> re.Pattern[str]:
    return re.compile(nanp_pattern())


def error(status: int, message: str) -> Result:
    """An error result: exactly ``{"error": message}``."""
    return Result(status, {"error": message})


def is_admin_path(path: str) -> bool:
    """Whether a URL path reaches the admin API once a server decodes and normalizes it
    (``/%5F_emulator__/reset``, ``//__emulator__/``, ``/x/../__emulator__/``)."""
    # one leading slash: normpath keeps exactly two
    clean = posixpath.normpath(re.sub("/+", "/", "/" + unquote(path)))
    return clean == ADMIN or clean.startswith(ADMIN + "/")


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` can't be a webhook URL, or None when it can: an absolute http(s) URL of
    printable ASCII, at most 2,048 characters, not the emulator's own admin API."""
    if len(url) > 2048:
        return "is longer than 2048 characters"
    if not url.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "must be printable ASCII without spaces (percent-encode the rest)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if is_admin_path(parts.path):
        return f"must not point at the emulator's admin API ({ADMIN}/)"
    return None


class Clock:
    """Wall time plus an offset the admin API can advance (time without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def iso(self, at: float | None = None) -> str:
        moment = dt.datetime.fromtimestamp(self.now() if at is None else at, dt.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: SQLite's application_id of an emulator state file ("SnrE"); files written before it was
#: set are recognized by their one table.
APPLICATION_ID = 0x536E7245
#: The state file's schema version (SQLite's user_version): an older file is brought up to it,
#: a newer one refused.
STATE_VERSION = 1


class NotAStateFile(Exception):
    """An existing file that is not (or no longer) an emulator state file."""


def _open_state(path: str | Path) -> sqlite3.Connection:
    """The SQLite state file, created when new. InputError when it can't be used: "not an
    emulator state file" for a file that is not SQLite, is damaged, or holds other tables;
    "cannot keep the emulator's state there" when it can't be created or written."""
    db = None
    try:
        db = sqlite3.connect(str(path), check_same_thread=False)
        (app_id,) = db.execute("PRAGMA application_id").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if app_id not in (0, APPLICATION_ID) or tables - {"kv", "sqlite_autoindex_kv_1"}:
            raise NotAStateFile("it holds other data")
        if "kv" in tables:
            columns = [row[1] for row in db.execute("PRAGMA table_info(kv)")]
            if columns != ["collection", "key", "value"]:
                raise NotAStateFile("its table is not the emulator's")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS kv (collection TEXT, key TEXT, "
            "value TEXT, PRIMARY KEY (collection, key))"
        )
        if app_id == 0:
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > STATE_VERSION:
            raise NotAStateFile(f"written by a newer sonar-bulk (version {version})")
        if version < STATE_VERSION:  # version 0: files from before versions (the same table)
            db.execute(f"PRAGMA user_version={STATE_VERSION}")
        db.commit()
    except (NotAStateFile, sqlite3.Error) as exc:
        if db is not None:
            db.close()
        if isinstance(exc, NotAStateFile) or type(exc) is sqlite3.DatabaseError:
            raise _not_a_state_file(path, exc) from None  # "file is not a database", damaged
        raise InputError(
            f"--state {path}: cannot keep the emulator's state there ({exc})"
        ) from None
    return db


def _not_a_state_file(path: str | Path, why: object) -> InputError:
    return InputError(
        f"--state {path}: not an emulator state file ({why}); give a new path, or move it away"
    )


class Store:
    """All emulated state. Not thread-safe: the server calls it from its event loop only."""

    def __init__(
        self,
        *,
        era: Era = "2017",
        company_number: str = DEFAULT_COMPANY_NUMBER,
        campaigns: dict[str, str] | None = None,
        state_file: str | Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.era = era
        self.company_number = company_number
        self.clock = clock or Clock()
        self.initial_campaigns = dict(DEFAULT_CAMPAIGNS if campaigns is None else campaigns)
        self.db: sqlite3.Connection | None = None
        #: Webhook deliveries that were pending in the state file, for the dispatcher.
        self.pending_deliveries: list[dict[str, Any]] = []
        self._clear()
        if state_file is not None:
            self.db = _open_state(state_file)
            try:
                loaded = self._load()
            except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
                self.close()
                raise _not_a_state_file(state_file, f"{type(exc).__name__}: {exc}") from None
            if loaded:
                # campaigns given at start join the stored ones
                for slug, text in (campaigns or {}).items():
                    if slug not in self.campaigns:
                        self.add_campaign(slug, text)
                return
        self._seed()

    # -- lifecycle -------------------------------------------------------------------------

    def _clear(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.messages: dict[str, Message] = {}
        self.campaigns: dict[str, str] = {}
        self.scheduled: dict[int, ScheduledSend] = {}
        self.webhooks: dict[int, Webhook] = {}
        #: (phone, text) → when it was last sent, for the 7-second rule.
        self.recent: dict[tuple[str, str], float] = {}
        self.sequence = 0
        self.pending_deliveries = []

    def _seed(self) -> None:
        for slug, text in self.initial_campaigns.items():
            self.campaigns[slug] = text
            self._save("campaigns", slug, text)

    def reset(self) -> None:
        """Forget everything but the seeded campaigns."""
        self._clear()
        if self.db is not None:
            self.db.execute("DELETE FROM kv")
            self.db.commit()
        self._seed()

    def next_id(self) -> int:
        self.sequence += 1
        self._save("meta", "sequence", self.sequence)
        return self.sequence

    def _save(self, collection: str, key: object, value: Any) -> None:
        if self.db is None:
            return
        data = asdict(value) if hasattr(value, "__dataclass_fields__") else value
        self.db.execute(
            "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (collection, str(key), json.dumps(data))
        )
        self.db.commit()

    def save_delivery(self, key: str, record: dict[str, Any]) -> None:
        """Keep a pending webhook delivery in the state file (a no-op in memory)."""
        self._save("deliveries", key, record)

    def forget_delivery(self, key: str) -> None:
        self._delete("deliveries", key)

    def _delete(self, collection: str, key: object) -> None:
        if self.db is not None:
            self.db.execute(
                "DELETE FROM kv WHERE collection = ? AND key = ?", (collection, str(key))
            )
            self.db.commit()

    def _load(self) -> bool:
        assert self.db is not None
        rows = self.db.execute("SELECT collection, key, value FROM kv").fetchall()
        if not rows:
            return False
        for collection, key, value in rows:
            data = json.loads(value)
            if collection == "customers":
                self.customers[key] = Customer(**data)
            elif collection == "messages":
                self.messages[key] = Message(**data)
            elif collection == "campaigns":
                self.campaigns[key] = data
            elif collection == "scheduled":
                self.scheduled[int(key)] = ScheduledSend(**data)
            elif collection == "webhooks":
                self.webhooks[int(key)] = Webhook(**data)
            elif collection == "deliveries":
                if not isinstance(data, dict):
                    raise TypeError(f"delivery {key} is not an object")
                self.pending_deliveries.append(data)
            elif collection == "meta" and key == "sequence":
                self.sequence = int(data)
        return True

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    # -- helpers ---------------------------------------------------------------------------

    def normalize_phone(self, raw: str) -> str | None:
        """The customer key for a phone, or None when Sonar would call it invalid.

        2017+: libphonenumber validation, E.164 (INFERRED: national numbers read as US).
        2014 (``--api-era 2014``): the local server kept numbers as given (OBSERVED) and only
        refused obviously short ones like ``111`` (SYNTHETIC). Text longer than
        MAX_PHONE_LENGTH is invalid in both, unparsed and uncached.
        """
        text = raw.strip()
        if len(text) > MAX_PHONE_LENGTH:
            return None
        return _phone_key(text, self.era)

    def customer_block(self, c: Customer) -> dict[str, Any]:
        """The customer as webhook payloads carry it."""
        return {
            "id": c.id,
            "phone_number": c.phone_number,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "email": c.email,
            "subscribed": c.subscribed,
            "external_id": c.external_id,
            "state": c.state,
            "assignee": {"email": c.assignee} if c.assignee else None,
            "properties": dict(c.properties),
        }

    def _event(self, action: str, customer: Customer, **extra: Any) -> Event:
        return Event(action, {"customer": self.customer_block(customer), **extra})

    def _message_event(self, action: str, customer: Customer, msg: Message, **extra: Any) -> Event:
        return self._event(
            action,
            customer,
            message_id=msg.message_id,
            external_id=msg.external_id,
            text=msg.text,
            conversation_id=f"conv-{customer.id}",
            **extra,
        )

    def _new_customer(self, phone: str) -> tuple[Customer, list[Event]]:
        c = Customer(phone_number=phone, id=self.next_id(), created_at=self.clock.iso())
        self.customers[phone] = c
        self._save("customers", phone, c)
        return c, [self._event("customer_created", c)]

    def _customer_or_new(self, phone: str) -> tuple[Customer, list[Event]]:
        """The customer with this (normalized) phone, created when new (Sonar does that on
        every send and inbound message)."""
        customer = self.customers.get(phone)
        if customer is None:
            return self._new_customer(phone)
        return customer, []

    def _new_message(self, to: str, text: str, **kw: Any) -> Message:
        msg = Message(
            message_id=str(uuid.uuid4()),
            external_id=base64.urlsafe_b64encode(os.urandom(16)).decode(),
            to=to,
            text=text,
            created_at=self.clock.iso(),
            sent_at=self.clock.now(),
            **kw,
        )
        self.messages[msg.external_id] = msg
        self._save("messages", msg.external_id, msg)
        return msg

    @staticmethod
    def missing(params: dict[str, Any], names: tuple[str, ...]) -> list[str]:
        return [
            n
            for n in names
            if (as_text(params.get(n)) or "").strip() == ""
            and not isinstance(params.get(n), dict | list)
        ]

    def _require(self, name: str, params: dict[str, Any]) -> Result | None:
        missing = self.missing(params, endpoint(name).required)
        return error(400, missing_message(missing)) if missing else None

    def _find(self, params: dict[str, Any], operation: str | None = None) -> Customer | Result:
        """The customer named by ``phone_number``, or the error to answer: missing
        parameters of ``operation`` (400), an invalid phone (400), an unknown one (404)."""
        if operation is not None and (bad := self._require(operation, params)) is not None:
            return bad
        phone = self.normalize_phone(as_text(params.get(Param.PHONE)) or "")
        if phone is None:
            return error(400, Errors.INVALID_PHONE)
        customer = self.customers.get(phone)
        if customer is None:
            return error(404, Errors.CUSTOMER_NOT_FOUND)
        return customer

    # -- API operations --------------------------------------------------------------------

    def upsert_customer(self, p: dict[str, Any]) -> Result:
        if (bad := self._require("upsert_customer", p)) is not None:
            return bad
        phone = self.normalize_phone(as_text(p[Param.PHONE]) or "")
        if phone is None:
            return error(400, Errors.INVALID_PHONE)
        created = phone not in self.customers
        customer, events = self._customer_or_new(phone)
        for attr, name in (
            ("first_name", Param.FIRST_NAME),
            ("last_name", Param.LAST_NAME),
            ("email", Param.EMAIL),
            ("picture_url", Param.PICTURE_URL),
            ("zip_code", Param.ZIP_CODE),
            ("timezone", Param.TIMEZONE),
            ("external_id", Param.EXTERNAL_ID),
        ):
            if name in p and as_text(p[name]) is not None:
                setattr(customer, attr, as_text(p[name]))
        props = p.get(Param.PROPERTIES)
        if isinstance(props, dict):
            for key, value in props.items():
                customer.properties[str(key)] = as_text(value) or ""
        subscribed = as_bool(p.get(Param.SUBSCRIBED))
        if subscribed is not None and subscribed != customer.subscribed:
            events.extend(self._set_subscribed(customer, subscribed))
        assignee = as_text(p.get(Param.ASSIGNEE))
        if assignee is not None and (assignee.strip() or None) != customer.assignee:
            customer.assignee = assignee.strip() or None
            events.append(
                self._event(
                    "user_assignment",
                    customer,
                    user={"email": customer.assignee} if customer.assignee else None,
                )
            )
        self._save("customers", phone, customer)
        return Result(OK if created else UPDATED_STATUS, self._upsert_body(customer), events)

    def _set_subscribed(self, c: Customer, subscribed: bool) -> list[Event]:
        c.subscribed = subscribed
        c.unsubscribed_at = None if subscribed else self.clock.iso()
        return [self._event("customer_subscribed" if subscribed else "customer_unsubscribed", c)]

    def _upsert_body(self, c: Customer) -> dict[str, Any]:
        """POST /customers' answer: the 2017 shape (OBSERVED), or 2014's with the integer id
        first and no assignee (OBSERVED)."""
        body = {
            "phone_number": c.phone_number,
            "email": c.email,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "subscribed": c.subscribed,
            "properties": dict(c.properties),
        }
        if self.era == "2014":
            return {"id": c.id, **body}
        return {**body, "assignee": {"email": c.assignee} if c.assignee else None}

    def get_customer(self, p: dict[str, Any]) -> Result:
        c = self._find(p, "get_customer")
        if isinstance(c, Result):
            return c
        return Result(
            OK,
            {
                "phone_number": c.phone_number,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "email": c.email,
                "assigned_phone_number": self.company_number,
                "subscribed": c.subscribed,
                "unsubscribed_at": c.unsubscribed_at,
                "properties": dict(c.properties),
                "external_id": c.external_id,
            },
        )

    def close_customer(self, p: dict[str, Any]) -> Result:
        c = self._find(p, "close_customer")
        if isinstance(c, Result):
            return c
        events = []
        c.assignee = None
        if c.state != "closed":
            c.state = "closed"
            events.append(self._event("customer_state_changed", c))
        self._save("customers", c.phone_number, c)
        return Result(OK, {"success": True}, events)

    def unassign_customer(self, p: dict[str, Any]) -> Result:
        c = self._find(p, "unassign_customer")
        if isinstance(c, Result):
            return c
        events = []
        if c.assignee is not None:
            c.assignee = None
            events.append(self._event("user_assignment", c, user=None))
        self._save("customers", c.phone_number, c)
        return Result(OK, {"success": True}, events)

    def delete_customer_property(self, p: dict[str, Any]) -> Result:
        ep = endpoint("delete_customer_property")
        missing = self.missing(p, ep.any_of)
        if len(missing) == len(ep.any_of):
            missing = [ep.any_of[0]]
        else:
            missing = []
        missing += self.missing(p, ep.required)
        if missing:
            return error(400, missing_message(missing))
        c: Customer | Result | None
        if as_text(p.get(Param.PHONE)):
            c = self._find(p)
            if isinstance(c, Result):
                return c
        else:
            wanted = (as_text(p.get(Param.EMAIL)) or "").strip().lower()
            c = next(
                (x for x in self.customers.values() if (x.email or "").lower() == wanted), None
            )
            if c is None:
                return error(404, Errors.CUSTOMER_NOT_FOUND)
        name = as_text(p[Param.PROPERTY_NAME]) or ""
        if name not in c.properties:
            return error(404, Errors.PROPERTY_NOT_FOUND)
        value = c.properties.pop(name)
        self._save("customers", c.phone_number, c)
        return Result(
            OK,
            {
                "property_name": name,
                "property_value": value,
                "email": c.email,
                "phone_number": c.phone_number,
                "deleted": True,
            },
        )

    def send_message(self, p: dict[str, Any]) -> Result:
        if (bad := self._require("send_message", p)) is not None:
            return bad
        to_raw = as_text(p[Param.TO]) or ""
        text = as_text(p[Param.TEXT]) or ""
        phone = self.normalize_phone(to_raw)
        if phone is None:
            return error(400, Errors.INVALID_PHONE)
        customer, events = self._customer_or_new(phone)
        if not customer.subscribed:
            return Result(
                OK,
                {"to": to_raw, "text": text, "status": STATUS_UNSUBSCRIBED, "external_id": None},
                events,
            )
        now = self.clock.now()
        last = self.recent.get((phone, text))
        if last is not None and now - last < DUPLICATE_WINDOW_SECONDS:
            return Result(DUPLICATE_STATUS, {"error": Errors.DUPLICATE_MESSAGE}, events)
        self.recent[(phone, text)] = now
        if len(self.recent) > 10_000:
            self.recent = {
                k: t for k, t in self.recent.items() if now - t < DUPLICATE_WINDOW_SECONDS
            }
        tags = p.get(Param.TAG_NAMES)
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.replace(";", ",").split(",") if t.strip()]
        msg = self._new_message(
            phone,
            text,
            media_url=as_text(p.get(Param.MEDIA_URL)),
            tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        )
        events.append(self._message_event("outbound_message", customer, msg))
        body: dict[str, Any] = {"to": to_raw, "text": text, "status": STATUS_QUEUED}
        if self.era != "2014":
            body["external_id"] = msg.external_id
        return Result(OK, body, events)

    def send_campaign(self, p: dict[str, Any]) -> Result:
        if (bad := self._require("send_campaign", p)) is not None:
            return bad
        to_raw = as_text(p[Param.TO]) or ""
        phone = self.normalize_phone(to_raw)
        if phone is None:
            return error(400, Errors.INVALID_PHONE)
        slug = as_text(p[Param.CAMPAIGN_ID]) or ""
        if slug not in self.campaigns:
            return error(404, Errors.CAMPAIGN_NOT_FOUND)
        send_at = (as_text(p.get(Param.SEND_AT)) or "").strip()
        if send_at:
            try:
                when = dt.datetime.fromisoformat(send_at.replace("Z", "+00:00"))
            except ValueError:
                return error(400, Errors.INVALID_SEND_AT)
            if when.tzinfo is None:
                return error(400, Errors.INVALID_SEND_AT)
            if when.timestamp() <= self.clock.now():
                return error(400, Errors.SEND_AT_IN_PAST)
            item = ScheduledSend(self.next_id(), phone, slug, when.isoformat(), when.timestamp())
            self.scheduled[item.id] = item
            self._save("scheduled", item.id, item)
            return Result(
                OK,
                {"to": to_raw, "text": "sent", "status": STATUS_SCHEDULED, "send_at": item.send_at},
            )
        status, events = self._deliver_campaign(phone, slug)
        return Result(OK, {"to": to_raw, "text": "sent", "status": status}, events)

    def _deliver_campaign(self, phone: str, slug: str) -> tuple[str, list[Event]]:
        customer, events = self._customer_or_new(phone)
        if not customer.subscribed:
            return STATUS_UNSUBSCRIBED, events
        msg = self._new_message(phone, self.campaigns[slug], campaign_id=slug)
        events.append(self._message_event("outbound_message", customer, msg, campaign_id=slug))
        return STATUS_QUEUED, events

    def due_campaigns(self) -> list[Event]:
        """Send every scheduled campaign whose time has come; their events."""
        events: list[Event] = []
        now = self.clock.now()
        for item in list(self.scheduled.values()):
            if item.status == "pending" and item.due <= now:
                status, evs = self._deliver_campaign(item.to, item.campaign_id)
                item.status = "sent" if status == STATUS_QUEUED else status
                self._save("scheduled", item.id, item)
                events.extend(evs)
        return events

    def add_message_tag(self, p: dict[str, Any]) -> Result:
        if (bad := self._require("add_message_tag", p)) is not None:
            return bad
        return self.tag_message(
            as_text(p[Param.MESSAGE_ID]) or "", as_text(p[Param.TAG_NAME]) or "", remove=False
        )

    def tag_message(self, external_id: str, tag: str, *, remove: bool) -> Result:
        """Add (API or user) or remove (user) a tag on a message."""
        msg = self.messages.get(external_id)
        if msg is None:
            return error(404, Errors.MESSAGE_NOT_FOUND)
        customer = self.customers[msg.to]
        events = []
        if remove and tag in msg.tags:
            msg.tags.remove(tag)
            events.append(self._message_event("tag_removed_from_message", customer, msg, tag=tag))
        elif not remove and tag not in msg.tags:
            msg.tags.append(tag)
            events.append(self._message_event("tag_added_to_message", customer, msg, tag=tag))
        self._save("messages", msg.external_id, msg)
        return Result(
            OK,
            {"success": True, "external_message_id": msg.external_id, "tags": list(msg.tags)},
            events,
        )

    def available_phone_number(self) -> Result:
        digits = self.company_number.lstrip("+")
        return Result(OK, {"available_number": digits[1:] if digits.startswith("1") else digits})

    # -- webhooks --------------------------------------------------------------------------

    def create_webhook(self, p: dict[str, Any]) -> Result:
        data = p.get(Param.WEBHOOK)
        if not isinstance(data, dict):
            return error(400, missing_message([Param.WEBHOOK]))
        if not (as_text(data.get("url")) or "").strip():
            return error(400, missing_message([f"{Param.WEBHOOK}[url]"]))
        if (bad := self._webhook_problem(data)) is not None:
            return bad
        now = self.clock.iso()
        hook = Webhook(
            id=self.next_id(),
            name=as_text(data.get("name")) or "",
            url="",
            created_at=now,
            updated_at=now,
        )
        self._apply_webhook(hook, data)
        self.webhooks[hook.id] = hook
        self._save("webhooks", hook.id, hook)
        return Result(OK, hook.body())

    @staticmethod
    def _webhook_problem(data: dict[str, Any]) -> Result | None:
        """A 400 for a url or http_method that can't be used, checked before any change."""
        if "url" in data:
            problem = webhook_url_problem((as_text(data["url"]) or "").strip())
            if problem is not None:
                return error(400, f"{Param.WEBHOOK}[url] {problem}")
        if "http_method" in data:
            method = (as_text(data["http_method"]) or "POST").strip().upper()
            if method not in WEBHOOK_METHODS:
                return error(
                    400, f"{Param.WEBHOOK}[http_method] must be one of {', '.join(WEBHOOK_METHODS)}"
                )
        return None

    def _apply_webhook(self, hook: Webhook, data: dict[str, Any]) -> None:
        if "name" in data:
            hook.name = as_text(data["name"]) or ""
        if "url" in data:
            hook.url = (as_text(data["url"]) or "").strip()
        if "http_method" in data:
            hook.http_method = (as_text(data["http_method"]) or "POST").strip().upper()
        if "active" in data:
            hook.active = as_bool(data["active"]) is True
        if "settings" in data and isinstance(data["settings"], dict):
            hook.settings = {str(k): as_text(v) or "false" for k, v in data["settings"].items()}
        elif "settings" in data:
            hook.settings = {}

    def list_webhooks(self) -> Result:
        return Result(OK, [h.body() for h in self.webhooks.values()])

    def _webhook(self, hook_id: str) -> Webhook | None:
        try:
            return self.webhooks.get(int(hook_id))
        except ValueError:
            return None

    def update_webhook(self, hook_id: str, p: dict[str, Any]) -> Result:
        hook = self._webhook(hook_id)
        if hook is None:
            return error(404, Errors.WEBHOOK_NOT_FOUND)
        data = p.get(Param.WEBHOOK)
        if not isinstance(data, dict):
            return error(400, missing_message([Param.WEBHOOK]))
        if "url" in data and not (as_text(data["url"]) or "").strip():
            return error(400, missing_message([f"{Param.WEBHOOK}[url]"]))
        if (bad := self._webhook_problem(data)) is not None:
            return bad
        self._apply_webhook(hook, data)
        hook.updated_at = self.clock.iso()
        self._save("webhooks", hook.id, hook)
        return Result(OK, hook.body())

    def delete_webhook(self, hook_id: str) -> Result:
        hook = self._webhook(hook_id)
        if hook is None:
            return error(404, Errors.WEBHOOK_NOT_FOUND)
        del self.webhooks[hook.id]
        self._delete("webhooks", hook.id)
        return Result(OK, hook.body())

    # -- what users and customers do outside the API (admin) --------------------------------

    def inbound(self, phone_raw: str, text: str, assign_to: str | None = None) -> Result:
        """A customer texts the company number."""
        phone = self.normalize_phone(phone_raw)
        if phone is None:
            return error(400, Errors.INVALID_PHONE)
        customer, events = self._customer_or_new(phone)
        if assign_to:
            customer.assignee = assign_to
            events.append(self._event("user_assignment", customer, user={"email": assign_to}))
        if customer.state == "closed":
            customer.state = "open"
            events.append(self._event("customer_state_changed", customer))
        msg = self._new_message(phone, text, direction="inbound", status="received")
        action = "new_assigned_message" if customer.assignee else "new_unassigned_message"
        events.append(self._message_event(action, customer, msg))
        keyword = text.strip().lower().rstrip("!").strip()
        if keyword in STOP_KEYWORDS and customer.subscribed:
            events.extend(self._set_subscribed(customer, False))
        self._save("customers", phone, customer)
        return Result(
            201,
            {
                "message_id": msg.message_id,
                "external_id": msg.external_id,
                "unsubscribed": not customer.subscribed,
            },
            events,
        )

    def assign(self, phone_raw: str, user_email: str | None) -> Result:
        """A user assigns the customer to a team member (None unassigns)."""
        c = self._find({Param.PHONE: phone_raw})
        if isinstance(c, Result):
            return c
        c.assignee = user_email or None
        self._save("customers", c.phone_number, c)
        return Result(
            201,
            {"success": True},
            [self._event("user_assignment", c, user={"email": c.assignee} if c.assignee else None)],
        )

    def confirm_double_opt_in(self, phone_raw: str) -> Result:
        """The customer completes double opt-in."""
        c = self._find({Param.PHONE: phone_raw})
        if isinstance(c, Result):
            return c
        c.double_opt_in = True
        events = [self._event("double_opt_in", c)]
        if not c.subscribed:
            events.extend(self._set_subscribed(c, True))
        self._save("customers", c.phone_number, c)
        return Result(201, {"success": True}, events)

    def add_campaign(self, slug: str, text: str) -> None:
        self.campaigns[slug] = text
        self._save("campaigns", slug, text)

    def snapshot(self) -> dict[str, Any]:
        """Everything, for ``GET /__emulator__/state``."""
        return {
            "era": self.era,
            "company_number": self.company_number,
            "clock": self.clock.iso(),
            "customers": [asdict(c) for c in self.customers.values()],
            "messages": [asdict(m) for m in self.messages.values()],
            "campaigns": dict(self.campaigns),
            "scheduled": [asdict(s) for s in self.scheduled.values()],
            "webhooks": [h.body() for h in self.webhooks.values()],
        }
