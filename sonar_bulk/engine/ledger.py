"""Every send this user has made, whatever the sheet: the send ledger, and the send guard that
consults it.

A journal belongs to one sheet's lineage (the sheet, its edits, its resumes). A copy of a sheet
that was sent ("Save As final.xlsx", the results file fed back in, a sorted re-export) has a
journal of its own, empty, so the journal alone would text those people again. The ledger, in
the user's data folder, keeps every message or campaign send that went out (or may have:
``unknown``, ``inflight``), keyed by **who got what**: the target (one name per API, see
:func:`~sonar_bulk.api.endpoints.canonical_target`), the operation, the recipient (E.164) and
what was sent (the message text normalized by :func:`content_of`, or the campaign id), with
its occurrence among identical sends of one sheet. File names and exact bytes play no part.

The guard is checked **at send time**, row by row: :meth:`Ledger.reserve` looks the send up and
writes it as ``inflight`` in one ``BEGIN IMMEDIATE`` transaction, so two runs at once (a sheet
and its sorted copy, two terminals) can't both send to one recipient: the second finds the
first's reservation and skips the row. A reservation is owned by a journal lineage; inside one
lineage the journal decides (a resume, ``--retry-unknown``), and two runs of one lineage never
run at once (the journal lock). When a run ends, its sends get their status and those that
provably did not go out (a 400, a stop before the request) are taken out again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonar_bulk.api.endpoints import Param
from sonar_bulk.errors import UsageError

SCHEMA_VERSION = 2
#: How long a run waits for another process's transaction on the ledger before it gives up
#: (and stops: nothing is sent unguarded).
BUSY_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sends (
    key TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    operation TEXT NOT NULL,
    recipient TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    sheet TEXT NOT NULL,
    owner TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_recipient ON sends (recipient);
CREATE TABLE IF NOT EXISTS unsubscribed (
    target TEXT NOT NULL,
    recipient TEXT NOT NULL,
    at TEXT NOT NULL,
    how TEXT NOT NULL,
    sheet TEXT NOT NULL,
    PRIMARY KEY (target, recipient)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    sheet TEXT NOT NULL
) WITHOUT ROWID;
"""

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def content_of(text: str) -> str:
    """A message's text as the guard compares it: Unicode NFKC (fullwidth letters, thin and
    no-break spaces as their plain forms), invisible format characters taken out (zero-width
    spaces and joiners, soft hyphens, byte-order marks), every run of whitespace (line breaks
    included) as one space, stripped, and the ``'`` a results CSV puts before a cell that
    would start a formula taken off. Invisible edits (an Excel round trip, a Mac NFD, CRLF,
    a pasted zero-width space) never make a message new."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = " ".join(text.split())
    if text.startswith("'") and text[1:2] and text[1] in _FORMULA_START:
        text = text[1:].strip()
    return text


@dataclass(frozen=True)
class Identity:
    """Who gets what: the recipient and what is sent (normalized text, or ``campaign <id>``)."""

    recipient: str
    content: str

    @property
    def kind(self) -> str:
        return kind_of(self.content)


def kind_of(content: str) -> str:
    """What a send's content is, for people: ``campaign`` or ``message``."""
    return "campaign" if content.startswith("campaign ") else "message"


def identity_of(endpoint: str, params: Mapping[str, Any]) -> Identity | None:
    """The identity of a send call (None for a call that texts nobody)."""
    if endpoint == "send_message":
        return Identity(str(params.get(Param.TO, "")), content_of(str(params.get(Param.TEXT, ""))))
    if endpoint == "send_campaign":
        campaign = str(params.get(Param.CAMPAIGN_ID, "")).strip()
        return Identity(str(params.get(Param.TO, "")), f"campaign {campaign}")
    return None


def digest(*parts: str) -> str:
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def ledger_key(target: str, operation: str, who: Identity, occurrence: int) -> str:
    """The ledger's key of a send: target, operation, recipient, content and occurrence."""
    return digest("send", target, operation, who.recipient, who.content, str(occurrence))


def applied_key(target: str, thing: str) -> str:
    """The ledger's key of the thing a request sets (``customer +1310...``, ``property
    +1310... tier``) on a target: its last applied request is kept under it."""
    return digest("applied", target, thing)


def ledger_path() -> Path:
    from sonar_bulk.connection import data_dir

    return data_dir() / "sent.sqlite"


#: The status of a :class:`Record` that stands for a recipient who unsubscribed (its
#: ``content`` says how: ``replied STOP``...).
UNSUBSCRIBED = "unsubscribed"


@dataclass
class Record:
    """What the ledger holds of one send."""

    status: str
    sent_at: str
    sheet: str
    owner: str
    content: str


class Ledger:
    """The ledger file (made 0600 on first use: it names the user's sheets)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ledger_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._lock = threading.Lock()
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            raise UsageError(
                f"send ledger {self.path}: {exc}. It lists every earlier send, so that no copy "
                "of a sheet texts anyone twice: restore it from a backup if you can; moving it "
                "aside forgets those sends (each sheet's own journal still guards it)"
            ) from None
        if fresh:
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass

    def _open(self) -> sqlite3.Connection:
        """The connection, in WAL mode, its tables made. Two runs that open a new ledger at
        once race to make it: a "database is locked" that SQLite answers without waiting (the
        switch to WAL) is tried again, for up to :data:`BUSY_SECONDS` (found in CI: two sheets
        started together on a fresh machine, one stopped with "database is locked")."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            db = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_SECONDS, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                if row is None:
                    db.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    db.close()
                    raise UsageError(
                        f"send ledger {self.path}: written by a newer sonar-bulk (version "
                        f"{row[0]}); upgrade sonar-bulk"
                    )
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def reserve(
        self,
        key: str,
        *,
        target: str,
        operation: str,
        who: Identity,
        sheet: str,
        owner: str,
        at: str,
        force: bool = False,
        unhidden: bool = False,
    ) -> tuple[Record | None, bool]:
        """At the moment of a send, in one ``BEGIN IMMEDIATE`` transaction (no other process
        can slip in between): (the record that forbids it, False), that is another lineage's
        send of the same message to the same recipient or a row hidden in another sheet; or
        (None, whether this call wrote the ``inflight`` record). A recipient known to have
        unsubscribed on ``target`` is refused first, whatever ``force``. ``force`` (``--resend``)
        goes past any record, but leaves an earlier send's record as it is: a resend that
        then does not go out must not erase the send before it. ``unhidden``
        (``--include-hidden``) goes past a record of a hidden row only."""
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                # a recipient who unsubscribed since the run was prepared (a STOP another run
                # learned): never texted, --resend included
                stop = db.execute(
                    "SELECT at, how, sheet FROM unsubscribed WHERE target = ? AND recipient = ?",
                    (target, who.recipient),
                ).fetchone()
                if stop is not None:
                    db.execute("ROLLBACK")
                    return Record(UNSUBSCRIBED, str(stop[0]), str(stop[2]), "", str(stop[1])), False
                row = db.execute(
                    "SELECT status, sent_at, sheet, owner, content FROM sends WHERE key = ?",
                    (key,),
                ).fetchone()
                # another lineage's send, or a row some sheet hides (even this lineage's:
                # a CSV saved from the workbook shares its name, and its journal)
                hidden = row is not None and row[0] == "hidden"
                # --resend goes past a send, never past a hidden row (--include-hidden does)
                passable = unhidden if hidden else force
                if row is not None and not passable and (row[3] != owner or hidden):
                    db.execute("ROLLBACK")
                    return Record(*map(str, row)), False
                created = row is None
                if created:
                    db.execute(
                        "INSERT INTO sends VALUES (?, ?, ?, ?, ?, 'inflight', ?, ?, ?)",
                        (key, target, operation, who.recipient, who.content, at, sheet, owner),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return None, created

    def note_hidden(self, items: Iterable[tuple[str, str, str, Identity, str, str, str]]) -> None:
        """Rows a sheet hides, ``(key, target, operation, who, at, sheet, owner)``: kept as
        ``hidden`` unless the ledger has the key already, so a copy that shows the row (a CSV
        saved from the workbook) does not text it without being asked."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO sends VALUES (?, ?, ?, ?, ?, 'hidden', ?, ?, ?)",
                [
                    (k, t, op, w.recipient, w.content, at, sheet, owner)
                    for k, t, op, w, at, sheet, owner in items
                ],
            )

    def recent(
        self, target: str, operation: str, recipients: Sequence[str], since: str
    ) -> dict[str, Record]:
        """The latest send (not a hidden row) since ``since`` to each of ``recipients``."""
        found: dict[str, Record] = {}
        for lo in range(0, len(recipients), 500):
            part = list(recipients[lo : lo + 500])
            rows = self.db.execute(
                "SELECT recipient, status, sent_at, sheet, owner, content FROM sends "
                f"WHERE recipient IN ({', '.join('?' * len(part))}) AND target = ? "
                "AND operation = ? AND status != 'hidden' AND sent_at >= ? ORDER BY sent_at",
                [*part, target, operation, since],
            )
            for recipient, *rest in rows:
                found[str(recipient)] = Record(*map(str, rest))
        return found

    def settle(self, done: Iterable[tuple[str, str, str, str, str]], undone: Iterable[str]) -> None:
        """After a run: ``(key, status, sent_at, sheet, owner)`` of sends that went out (or
        may have), and the keys of records this run wrote for sends that provably did not."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "UPDATE sends SET status = ?, sent_at = ?, sheet = ?, owner = ? WHERE key = ?",
                [(status, at, sheet, owner, key) for key, status, at, sheet, owner in done],
            )
            self.db.executemany("DELETE FROM sends WHERE key = ?", [(k,) for k in undone])

    def note_unsubscribed(self, items: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Recipients who unsubscribed, ``(target, recipient, at, how, sheet)``: a STOP reply,
        or Sonar's ``unsubscribed`` answer to a send. No run texts them again on that target
        (:meth:`unsubscribed`) until a customers upsert subscribes them."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO unsubscribed VALUES (?, ?, ?, ?, ?)", items)

    def forget_unsubscribed(self, target: str, recipients: Sequence[str]) -> None:
        """Recipients subscribed again on ``target`` (a customers upsert said so)."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "DELETE FROM unsubscribed WHERE target = ? AND recipient = ?",
                [(target, r) for r in recipients],
            )

    def unsubscribed(self, target: str, recipients: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(when, how) of each of ``recipients`` known to have unsubscribed on ``target``."""
        found: dict[str, tuple[str, str]] = {}
        for lo in range(0, len(recipients), 500):
            part = list(recipients[lo : lo + 500])
            rows = self.db.execute(
                "SELECT recipient, at, how FROM unsubscribed WHERE target = ? AND recipient IN "
                f"({', '.join('?' * len(part))})",
                [target, *part],
            )
            for recipient, at, how in rows:
                found[str(recipient)] = (str(at), str(how))
        return found

    def record_applied(self, items: Iterable[tuple[str, str, str, str]]) -> None:
        """The last request applied to each thing (a customer, a customer's property):
        ``(key, request, applied_at, sheet)`` (see :func:`applied_key`); what
        ``--changed-only`` compares with next time."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)", items)

    def applied(self, keys: Sequence[str]) -> dict[str, tuple[str, str, str]]:
        """(request, applied_at, sheet) of the last request applied to each of ``keys``."""
        rows = self._select("key, request, applied_at, sheet", "applied", keys)
        return {str(key): (str(req), str(at), str(sheet)) for key, req, at, sheet in rows}

    def lookup(self, keys: Sequence[str]) -> dict[str, Record]:
        """What the ledger holds of ``keys``."""
        rows = self._select("key, status, sent_at, sheet, owner, content", "sends", keys)
        return {str(key): Record(*map(str, rest)) for key, *rest in rows}

    def _select(self, columns: str, table: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        """Rows of ``table`` whose key is one of ``keys``, 500 keys a query."""
        out: list[tuple[Any, ...]] = []
        for lo in range(0, len(keys), 500):
            part = list(keys[lo : lo + 500])
            marks = ", ".join("?" * len(part))
            out += self.db.execute(f"SELECT {columns} FROM {table} WHERE key IN ({marks})", part)
        return out

    def close(self) -> None:
        self.db.close()
