"""The event store: every webhook delivery the receiver accepted, one row per event.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk (the WAL fsynced) before
it returns, and the receiver answers 2xx only after that, so an acknowledged event survives
a killed process and a power cut. Sonar delivers at least once, retrying with the same
``uuid``: the uuid is the table's key, and a repeated delivery only counts
(``deliveries``) and stamps ``last_received_at``. A payload without a uuid is keyed by the
SHA-256 of its body, so a replay of the same bytes is still one row.

The store also keeps what a collector needs across runs: its own id and webhook secret
(``meta``), and the webhooks it registered (``webhooks``), so one left behind by a crashed
run is recognised and deleted at the next start. The file is made 0600: it holds the
secret path and the customers' data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonar_bulk.api.endpoints import WEBHOOK_FIELDS
from sonar_bulk.errors import UsageError
from sonar_bulk.owned import Held, sqlite_application

APPLICATION = "sonar-bulk events"
SCHEMA_VERSION = 1

#: Rejected deliveries noted at most (a flood of garbage must not grow the store forever).
REJECTS_KEPT = 10_000

#: The export's columns, in order (``webhooks export``; the events sheet of a bulk run).
EXPORT_COLUMNS = (
    "received_at",
    "event",
    "uuid",
    "deliveries",
    "message_id",
    "external_id",
    "phone",
    "first_name",
    "last_name",
    "email",
    "text",
    "tag",
    "user",
    "raw_json",
)
#: Columns taken from the payload (the rest are the receiver's own).
_PAYLOAD_COLUMNS = EXPORT_COLUMNS[4:13]
assert _PAYLOAD_COLUMNS == tuple(WEBHOOK_FIELDS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    received_ts REAL NOT NULL,
    received_at TEXT NOT NULL,
    last_received_at TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    event TEXT NOT NULL,
    phone_e164 TEXT NOT NULL,
    {", ".join(f'"{c}" TEXT NOT NULL' for c in _PAYLOAD_COLUMNS)},
    raw_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (received_ts);
CREATE INDEX IF NOT EXISTS events_phone ON events (phone_e164, received_ts);
CREATE TABLE IF NOT EXISTS webhooks (
    target TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (target, id)
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""


def iso_utc(ts: float) -> str:
    """``2026-11-28T21:50:01.123Z``: UTC to the millisecond."""
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def clean(text: str) -> str:
    """``text`` as valid UTF-8 can hold it: a lone surrogate (JSON allows ``"\\ud800"``,
    SQLite refuses it) becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8").replace("?", "\ufffd")
    return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _user(value: Any) -> str:
    """Who did it: a user object's email, else its name, else the value as text."""
    if isinstance(value, dict):
        email = _text(value.get("email")).strip()
        if email:
            return email
        name = " ".join(
            _text(value.get(k)).strip() for k in ("first_name", "last_name") if value.get(k)
        )
        return name or (json.dumps(value, ensure_ascii=False) if value else "")
    return _text(value)


def e164(phone: str) -> str:
    """A payload's phone as E.164 when it parses (``3105550101`` is US), else as given.
    (phonenumbers directly: normalize's column kernels would bring Arrow into the receiver.)"""
    import phonenumbers

    text = phone.strip()
    if not text:
        return ""
    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(number):
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _at(payload: dict[str, Any], path: str) -> Any:
    value: Any = payload
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def payload_fields(payload: dict[str, Any]) -> dict[str, str]:
    """The export's payload columns from one webhook body, read where
    :data:`~sonar_bulk.api.endpoints.WEBHOOK_FIELDS` says (current and legacy formats);
    ``user`` is an object (its email, else its name) or a string."""
    fields: dict[str, str] = {}
    for column, paths in WEBHOOK_FIELDS.items():
        value = next((v for v in (_at(payload, p) for p in paths) if v is not None), None)
        fields[column] = _user(value) if column == "user" else _text(value)
    return fields


def event_key(payload: dict[str, Any], body: bytes) -> str:
    """The event's identity: its ``uuid``, else a hash of the exact body."""
    value = payload.get("uuid")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip():
        return clean(value.strip())
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Incoming:
    """One delivery as the receiver took it: the body and its parsed JSON object."""

    body: bytes
    payload: dict[str, Any]
    at: float


@dataclass(frozen=True)
class Filter:
    """Which events: received in [since, until) (epoch seconds) and of these types."""

    since: float | None = None
    until: float | None = None
    events: tuple[str, ...] = ()

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        args: list[Any] = []
        if self.since is not None:
            parts.append("received_ts >= ?")
            args.append(self.since)
        if self.until is not None:
            parts.append("received_ts < ?")
            args.append(self.until)
        if self.events:
            parts.append(f"event IN ({', '.join('?' * len(self.events))})")
            args.extend(self.events)
        return (" WHERE " + " AND ".join(parts) if parts else ""), args


class EventStore:
    """One store file. A file that exists and is not a store is refused, never changed."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        existed = self.path.exists()
        if existed and not self.path.is_file():
            raise UsageError(f"store {self.path}: is not a regular file")
        if not existed and not create:
            raise UsageError(f"store {self.path}: no such file (collect events first)")
        if existed and not _is_store(self.path):
            raise UsageError(
                f"store {self.path}: the file exists and is not a sonar-bulk event store; "
                "pass another --store"
            )
        if not existed:
            parent = self.path.parent
            if not parent.is_dir():
                raise UsageError(f"store {self.path}: folder {parent} does not exist")
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise UsageError(f"store {self.path}: {exc.strerror or exc}") from None
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            self.db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('application', ?), ('version', ?), "
                "('store_id', ?), ('secret', ?)",
                (APPLICATION, str(SCHEMA_VERSION), secrets.token_hex(4), secrets.token_urlsafe(32)),
            )
            row = self.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise UsageError(
                    f"store {self.path}: written by a newer sonar-bulk (version {row[0]}); "
                    "upgrade sonar-bulk to read it"
                )
        except sqlite3.Error as exc:
            raise UsageError(
                f"store {self.path}: {exc}; move the file aside (it holds the events collected "
                "so far) and collect again, or pass --store NEW.sqlite"
            ) from None
        for suffix in ("-wal", "-shm"):
            try:
                os.chmod(f"{self.path}{suffix}", 0o600)
            except OSError:
                pass
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        self.store_id: str = meta["store_id"]
        self.secret: str = meta["secret"]
        self._lock: Held | None = None
        self._id_lock: Held | None = None

    def lock(self) -> None:
        """Hold the store for one collector (UsageError when another holds it): by its real
        path (a symlink is the same store), and by its id in the user data folder (a copy
        of the store shares its id and webhook name, so it must not run beside it)."""
        from sonar_bulk.connection import data_dir
        from sonar_bulk.owned import hold

        busy = (
            f"store {self.path}: another sonar-bulk collector is using it (or a copy of it); "
            "wait for it to end or pass another --store"
        )
        self._lock = hold(self.path.resolve(), busy)
        folder = data_dir() / "locks"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._id_lock = hold(folder / f"events-{self.store_id}", busy)
        except UsageError:
            self._lock.close()
            self._lock = None
            raise

    def close(self) -> None:
        self.db.close()
        for name in ("_lock", "_id_lock"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.close()
                setattr(self, name, None)

    # -- writing (the receiver's writer thread) --------------------------------------------

    def add_many(self, items: Sequence[Incoming]) -> list[bool]:
        """Store deliveries in one transaction, durable when this returns; per item, True
        when its event is new (False: a repeated delivery, counted)."""
        fresh: list[bool] = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                key = event_key(item.payload, item.body)
                stamp = iso_utc(item.at)
                cur = db.execute(
                    "UPDATE events SET deliveries = deliveries + 1, last_received_at = ? "
                    "WHERE uuid = ?",
                    (stamp, key),
                )
                if cur.rowcount:
                    fresh.append(False)
                    continue
                fields = payload_fields(item.payload)
                db.execute(
                    "INSERT INTO events (uuid, received_ts, received_at, last_received_at, "
                    f"deliveries, event, phone_e164, {', '.join(_PAYLOAD_COLUMNS)}, raw_json) "
                    f"VALUES (?, ?, ?, ?, 1, ?, ?, {', '.join('?' * len(_PAYLOAD_COLUMNS))}, ?)",
                    (
                        key,
                        item.at,
                        stamp,
                        stamp,
                        _text(item.payload.get("action"))[:200],
                        e164(fields["phone"]),
                        *(fields[c] for c in _PAYLOAD_COLUMNS),
                        item.body.decode(json.detect_encoding(item.body), "replace"),
                    ),
                )
                fresh.append(True)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return fresh

    def reject_many(self, items: Sequence[tuple[str, int, int]]) -> None:
        """Note deliveries refused as malformed or too large ((reason, status, size): what,
        never their content), in one transaction; the table keeps the latest
        :data:`REJECTS_KEPT`."""
        stamp = iso_utc(time.time())
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO rejected (received_at, status, reason, size) VALUES (?, ?, ?, ?)",
                [(stamp, status, reason[:200], size) for reason, status, size in items],
            )
            self.db.execute(
                "DELETE FROM rejected WHERE seq <= (SELECT max(seq) FROM rejected) - ?",
                (REJECTS_KEPT,),
            )

    # -- webhooks this store registered -----------------------------------------------------

    def remember_webhook(self, target: str, hook_id: str, name: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?, ?)",
            (target, hook_id, name, iso_utc(time.time())),
        )

    def forget_webhook(self, target: str, hook_id: str) -> None:
        self.db.execute("DELETE FROM webhooks WHERE target = ? AND id = ?", (target, hook_id))

    def webhooks(self, target: str) -> list[tuple[str, str]]:
        """(id, name) of the webhooks registered for ``target`` and not yet deleted."""
        rows = self.db.execute("SELECT id, name FROM webhooks WHERE target = ?", (target,))
        return [(str(i), str(n)) for i, n in rows.fetchall()]

    # -- reading ------------------------------------------------------------------------------

    def counts(self, where: Filter | None = None) -> tuple[int, int]:
        """(events, deliveries) matching ``where``."""
        clause, args = (where or Filter()).where()
        row = self.db.execute(
            f"SELECT count(*), coalesce(sum(deliveries), 0) FROM events{clause}", args
        ).fetchone()
        return int(row[0]), int(row[1])

    def rejected(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM rejected").fetchone()[0])

    def event_types(self, where: Filter | None = None) -> list[str]:
        clause, args = (where or Filter()).where()
        rows = self.db.execute(f"SELECT DISTINCT event FROM events{clause} ORDER BY event", args)
        return [str(r[0]) for r in rows.fetchall()]

    def rows(self, where: Filter | None = None) -> Iterator[tuple[Any, ...]]:
        """The export's columns (:data:`EXPORT_COLUMNS`) of every matching event, in the order
        received; read a batch at a time, never all at once."""
        clause, args = (where or Filter()).where()
        cur = self.db.execute(
            f"SELECT {', '.join(f'{c}' for c in EXPORT_COLUMNS)} FROM events{clause} "
            "ORDER BY received_ts, seq",
            args,
        )
        while batch := cur.fetchmany(1000):
            yield from batch

    def by_phone(
        self, phone: str, since: float, events: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Events about one customer (E.164) received since ``since``, oldest first."""
        where = Filter(since, None, tuple(events)).where()
        clause = where[0].replace(" WHERE ", " WHERE phone_e164 = ? AND ", 1)
        cur = self.db.execute(
            f"SELECT received_ts, event, external_id, text FROM events{clause} "
            "ORDER BY received_ts, seq",
            [phone, *where[1]],
        )
        return [
            {"ts": r[0], "event": r[1], "external_id": r[2], "text": r[3]} for r in cur.fetchall()
        ]


def _is_store(path: Path) -> bool:
    """Whether ``path`` is an empty file (made for us) or a store this tool wrote."""
    try:
        if path.stat().st_size == 0:
            return True
    except OSError:
        return False
    return sqlite_application(path) == APPLICATION
