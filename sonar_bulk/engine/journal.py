"""The run journal: a SQLite file that records each send's intent before its request goes
out and each row's outcome after, so a crash, a Ctrl-C or a ``kill -9`` never loses a row and
never texts anybody twice. (An operation safe to repeat, an upsert, records no intent: a row
without an outcome is made again on resume, which is all its intent would have said.)

A row is known by its *key*: a digest of the operation, the API it went to and the exact call
(:meth:`sonar_bulk.plan.Call.fingerprint`), plus its occurrence number among identical calls.
So a row is recognized even after the sheet was sorted, edited or had rows added, and a
rehearsal against the emulator never counts as a send to the live API.

Journal states: ``inflight`` (the intent: the request may be on the wire) and ``done`` (with
the row's status). The token is never written here.

A run appends: each intent and outcome is one row added at the end of the ``log`` table (no
index but its order), committed as before (a send's at once). The ``rows`` table, one row per
key, is brought up to date from the log (:meth:`Journal.fold`, the entries of each key in
their order, then the log emptied, in one transaction) before anything reads it, when a run
finishes and when a journal is opened or closed: a run killed before its fold leaves its log,
folded by the next opening. Inserting a million random keys into the index of ``rows`` during
a run cost about 0.8 ms a row at that size (each commit rewrote a page per row); appending
costs the same at any size, and the fold visits the index in key order.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonar_bulk.errors import UsageError
from sonar_bulk.owned import sqlite_application

SCHEMA_VERSION = 3
APPLICATION = "sonar-bulk journal"
#: Seconds between commits of outcomes of operations safe to repeat (a send's outcome is
#: committed at once, so a crash can't turn a known send into an unknown one).
COMMIT_EVERY = 0.25

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    input TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    key TEXT PRIMARY KEY,
    run INTEGER NOT NULL,
    row INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    http_status INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    finished_at TEXT,
    outputs TEXT,
    recipient TEXT,
    content TEXT,
    sent TEXT
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    run INTEGER NOT NULL,
    row INTEGER NOT NULL,
    status TEXT,
    http_status INTEGER,
    error TEXT,
    attempts INTEGER,
    stamp TEXT,
    outputs TEXT,
    recipient TEXT,
    content TEXT
);
"""
#: Kinds of a log entry: an intent, an outcome after a request, an outcome without one.
INTENT, OUTCOME, RECORD = 0, 1, 2
_LOG_INSERT = (
    "INSERT INTO log (kind, key, run, row, status, http_status, error, attempts, stamp, "
    "outputs, recipient, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Version 1 had no recipient and content of a send.
_MIGRATE_1 = """
ALTER TABLE rows ADD COLUMN recipient TEXT;
ALTER TABLE rows ADD COLUMN content TEXT;
ALTER TABLE rows ADD COLUMN sent TEXT;
"""
#: Statuses of a send that went out, or may have: a row's ``sent`` keeps the last of them
#: (``status`` at ``finished_at``, as JSON), whatever later attempts of the row say (a
#: --resend that failed, a --limit that skipped it), so an earlier send is never forgotten.
_SENT_SQL = "('queued', 'scheduled', 'unknown')"
#: What an update keeps of the row it replaces (the SQL of ``sent``; in an upsert, ``rows.``
#: is the row as it was): a send it records, or an intent left by a run that died.
_KEEP_SENT = (
    f"CASE WHEN rows.state = 'done' AND rows.status IN {_SENT_SQL} "
    "THEN rows.status || '|' || COALESCE(rows.finished_at, '') "
    "WHEN rows.state = 'inflight' AND rows.run IS NOT excluded.run "
    "THEN 'unknown|' || COALESCE(rows.started_at, '') ELSE rows.sent END"
)

#: How a log entry of each kind changes ``rows`` (``{source}``: the entries to fold, with the
#: columns of ``log``; its SQL keeps the order it is given).
_FOLD = {
    INTENT: (
        "INSERT INTO rows (key, run, row, state, attempts, started_at, recipient, content) "
        "SELECT key, run, row, 'inflight', attempts, stamp, recipient, content "
        "FROM {source} WHERE true "
        "ON CONFLICT(key) DO UPDATE SET "
        "run = excluded.run, row = excluded.row, state = 'inflight', status = NULL, "
        "http_status = NULL, error = NULL, attempts = excluded.attempts, "
        "started_at = excluded.started_at, finished_at = NULL, "
        "recipient = excluded.recipient, content = excluded.content, "
        f"sent = {_KEEP_SENT}"
    ),
    OUTCOME: (
        "INSERT INTO rows (key, run, row, state, status, http_status, error, attempts, "
        "finished_at, outputs) SELECT key, run, row, 'done', status, http_status, error, "
        "attempts, stamp, outputs FROM {source} WHERE true "
        "ON CONFLICT(key) DO UPDATE SET run = excluded.run, row = excluded.row, "
        "state = 'done', status = excluded.status, http_status = excluded.http_status, "
        "error = excluded.error, attempts = excluded.attempts, "
        "finished_at = excluded.finished_at, outputs = excluded.outputs, "
        f"sent = CASE WHEN excluded.status IN {_SENT_SQL} THEN NULL ELSE rows.sent END"
    ),
    RECORD: (
        "INSERT INTO rows (key, run, row, state, status, error, finished_at) "
        "SELECT key, run, row, 'done', status, error, stamp FROM {source} WHERE true "
        "ON CONFLICT(key) DO UPDATE SET "
        f"sent = {_KEEP_SENT}, "
        "run = excluded.run, row = excluded.row, state = 'done', status = excluded.status, "
        "error = excluded.error, finished_at = excluded.finished_at"
    ),
}


_last_stamp: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The time now, UTC, to the second: ``2026-11-28T19:30:05Z`` (one string a second)."""
    global _last_stamp
    second = int(time.time())
    if second != _last_stamp[0]:
        _last_stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _last_stamp[1]


@dataclass
class Entry:
    """What the journal knows of one row."""

    key: str
    run: int
    row: int
    state: str
    status: str | None
    http_status: int | None
    error: str | None
    attempts: int
    finished_at: str | None
    outputs: dict[str, str]


@dataclass
class RunInfo:
    id: int
    started_at: str
    finished_at: str | None
    operation: str
    target: str
    input: str
    command: str
    state: str


class Journal:
    """One journal file. Opening one sonar-bulk did not write is refused."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Log entries not written yet (written, in their order, at the next commit).
        self._entries: list[tuple[Any, ...]] = []
        self._pending = 0
        self._last_commit = time.monotonic()
        self._in_tx = False
        existed = path.exists()
        if existed and not path.is_file():
            raise UsageError(f"journal {path}: is not a regular file")
        if existed and not _is_journal(path):
            raise UsageError(
                f"journal {path}: the file exists and is not a sonar-bulk journal; move it away "
                "or pass --journal PATH"
            )
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit reaches the OS before it returns, so a killed process loses
            # nothing (only a power cut may lose the last commits).
            self.db.execute("PRAGMA synchronous=NORMAL")
            # A run appends (its log's last pages are all it touches), and the fold visits the
            # index in key order: 8 MB of cache does (64 MB, for an index of a million random
            # keys, was that much more of a million-row run's peak memory).
            self.db.execute("PRAGMA cache_size=-8192")
            self._open_schema(existed)
            self.fold()  # a run killed before its fold left its log
        except sqlite3.Error as exc:
            raise UsageError(
                f"journal {path}: {exc}; move the file aside (it records what this sheet's runs "
                "sent: keep it, and check Sonar before sending again) or pass --journal NEW.sqlite"
            ) from None
        if not existed:
            try:
                os.chmod(path, 0o600)
            except OSError:
                pass
        self.run_id = 0

    def _open_schema(self, existed: bool) -> None:
        """Create the tables, or check and migrate an existing journal's version."""
        import uuid

        version = SCHEMA_VERSION
        if existed:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"journal {self.path}: written by a newer sonar-bulk (version {version}); "
                "upgrade sonar-bulk to resume it"
            )
        self.db.executescript(_SCHEMA)
        if version == 1:
            self.db.executescript(_MIGRATE_1)
            if self.db.execute("SELECT 1 FROM rows LIMIT 1").fetchone():
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('v1_rows', '1')")
        self.db.execute("CREATE INDEX IF NOT EXISTS rows_recipient ON rows (recipient)")
        self.db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('application', ?), ('lineage', ?)",
            (APPLICATION, uuid.uuid4().hex),
        )
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
        #: Rows written by version 1, which keyed a send by its exact request.
        self.legacy = bool(self.db.execute("SELECT 1 FROM meta WHERE key = 'v1_rows'").fetchone())
        row = self.db.execute("SELECT value FROM meta WHERE key = 'lineage'").fetchone()
        st = os.stat(self.path)
        #: Names this journal's lineage in the send ledger (its reservations are its own):
        #: its id and the file itself (device and inode), so a copy of the journal (a copied
        #: campaign folder) is another lineage, which the ledger does not trust.
        self.lineage = f"{row[0]}@{st.st_dev}:{st.st_ino}"

    # -- runs ------------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold the journal for this run alone (UsageError when another run holds it): two
        runs on one journal would each send what the other is sending."""
        from sonar_bulk.owned import hold

        self._lock_file = hold(
            self.path,
            f"journal {self.path}: another sonar-bulk run is using it; wait for it to end",
        )

    def start_run(
        self, operation: str, target: str, input_path: Path, input_sha: str, command: str
    ) -> int:
        self._commit()
        cur = self.db.execute(
            "INSERT INTO runs (started_at, operation, target, input, input_sha256, command, "
            "state) VALUES (?, ?, ?, ?, ?, ?, 'running')",
            (now_iso(), operation, target, str(input_path), input_sha, command),
        )
        self.run_id = int(cur.lastrowid or 0)
        return self.run_id

    def finish_run(self, state: str) -> None:
        self.fold()
        self.db.execute(
            "UPDATE runs SET finished_at = ?, state = ? WHERE id = ?",
            (now_iso(), state, self.run_id),
        )

    def runs(self) -> list[RunInfo]:
        rows = self.db.execute(
            "SELECT id, started_at, finished_at, operation, target, input, command, state "
            "FROM runs ORDER BY id"
        ).fetchall()
        return [RunInfo(*r) for r in rows]

    # -- rows ------------------------------------------------------------------------------

    def lookup(self, keys: Sequence[str]) -> dict[str, Entry]:
        """What the journal knows of ``keys`` (absent keys are left out)."""
        self.fold()
        out: dict[str, Entry] = {}
        for lo in range(0, len(keys), 500):
            part = keys[lo : lo + 500]
            marks = ",".join("?" * len(part))
            for r in self.db.execute(
                "SELECT key, run, row, state, status, http_status, error, attempts, "
                f"finished_at, outputs, sent FROM rows WHERE key IN ({marks})",
                part,
            ):
                out[r[0]] = _entry(r)
        return out

    def intent(
        self,
        key: str,
        row: int,
        attempt: int,
        *,
        urgent: bool = True,
        recipient: str | None = None,
        content: str | None = None,
    ) -> None:
        """Before a request goes out. ``urgent`` (a send) commits it at once, so a crash leaves
        it recorded as maybe sent; the intent of an operation safe to repeat is committed with
        the next batch (lost in a crash, it changes nothing: a row without an outcome is made
        again on resume, as one with an intent is)."""
        self._entries.append(
            (INTENT, key, self.run_id, row, None, None, None, attempt, now_iso(), None)
            + (recipient, content)
        )
        self._due(urgent)

    def outcome(
        self,
        key: str,
        row: int,
        *,
        status: str,
        http_status: int | None,
        error: str,
        attempts: int,
        finished_at: str,
        outputs: dict[str, str],
        urgent: bool,
    ) -> None:
        """After the answer (or the giving up). ``urgent`` commits at once; otherwise the
        outcome is committed with others within :data:`COMMIT_EVERY` seconds."""
        self._entries.append(
            (OUTCOME, key, self.run_id, row, status, http_status, error or None, attempts)
            + (finished_at, json.dumps(outputs) if outputs else None, None, None)
        )
        self._pending += 1
        self._due(urgent)

    def record_many(
        self, entries: Iterable[tuple[str, int, str, str]], *, urgent: bool = True
    ) -> None:
        """Outcomes reached without a request (``key, row, status, error``), in one commit
        (not ``urgent``: committed with others within :data:`COMMIT_EVERY` seconds). An
        earlier send of the row is kept in its ``sent`` (see :data:`_SENT_SQL`)."""
        stamp = now_iso()
        run = self.run_id
        self._entries.extend(
            (RECORD, k, run, r, s, None, e or None, None, stamp, None, None, None)
            for k, r, s, e in entries
        )
        self._pending += 1
        self._due(urgent)

    def sends_to(self, scope: str, recipients: Sequence[str]) -> list[tuple[Entry, str, str]]:
        """Every send of this journal's lineage to ``recipients`` under ``scope`` (the key
        prefix of one operation and target): (entry, recipient, content)."""
        self.fold()
        out: list[tuple[Entry, str, str]] = []
        for lo in range(0, len(recipients), 500):
            part = list(recipients[lo : lo + 500])
            marks = ",".join("?" * len(part))
            for r in self.db.execute(
                "SELECT key, run, row, state, status, http_status, error, attempts, "
                f"finished_at, outputs, recipient, content, sent FROM rows "
                f"WHERE recipient IN ({marks}) "
                "ORDER BY rowid",
                part,
            ):
                if not str(r[0]).startswith(scope + ":"):
                    continue
                out.append((_entry(r[:10] + r[12:13]), str(r[10]), str(r[11] or "")))
        return out

    def last_input_sha(self, operation: str) -> str | None:
        row = self.db.execute(
            "SELECT input_sha256 FROM runs WHERE operation = ? ORDER BY id DESC LIMIT 1",
            (operation,),
        ).fetchone()
        return str(row[0]) if row else None

    def counts(self) -> dict[str, int]:
        """Rows by status (``inflight`` for intents without an outcome)."""
        self.fold()
        out: dict[str, int] = {}
        for state, status, n in self.db.execute(
            "SELECT state, status, COUNT(*) FROM rows GROUP BY state, status"
        ):
            out[status if state == "done" else "inflight"] = n
        return out

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def _due(self, urgent: bool) -> None:
        if urgent or time.monotonic() - self._last_commit >= COMMIT_EVERY:
            self._commit()

    def _commit(self) -> None:
        """Write the entries kept since the last commit (one statement for them all), and
        commit."""
        if self._entries:
            self._begin()
            try:
                self.db.executemany(_LOG_INSERT, self._entries)
            finally:
                self._entries.clear()  # each entry is tried once, as when written at once
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False
        self._pending = 0
        self._last_commit = time.monotonic()

    def flush(self) -> None:
        self._commit()

    def fold(self) -> None:
        """Bring ``rows`` up to date from the log, and empty it, in one transaction. Each
        key's entries apply in their order: the first entry of every key, then the second...
        (the entries of one rank are of distinct keys, applied in key order)."""
        self._commit()
        if self.db.execute("SELECT 1 FROM log LIMIT 1").fetchone() is None:
            return
        self._begin()
        try:
            self.db.execute("DROP TABLE IF EXISTS temp.folding")
            self.db.execute(
                "CREATE TEMP TABLE folding AS SELECT *, ROW_NUMBER() OVER "
                "(PARTITION BY key ORDER BY seq) AS rank FROM log"
            )
            (ranks,) = self.db.execute("SELECT MAX(rank) FROM temp.folding").fetchone()
            for rank in range(1, int(ranks) + 1):
                for kind, sql in _FOLD.items():
                    source = (
                        f"(SELECT * FROM temp.folding WHERE rank = {rank} AND kind = {kind} "
                        "ORDER BY key)"
                    )
                    self.db.execute(sql.format(source=source))
            self.db.execute("DROP TABLE temp.folding")
            self.db.execute("DELETE FROM log")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._in_tx = False
            raise
        self._commit()

    def close(self) -> None:
        try:
            self.fold()
        finally:
            self.db.close()
            lock = getattr(self, "_lock_file", None)
            if lock is not None:
                lock.close()

    def settle(self, run_id: int | None, rows: dict[int, tuple[str, str]]) -> int:
        """Unknown sends proved sent after all (by a webhook event): ``rows`` maps a row's
        index in the sheet to (its new status, the proof, kept in ``error``). Only entries of
        run ``run_id`` (None: of any run) whose status is still ``unknown`` change, in one
        commit; how many did."""
        self.fold()
        self._begin()
        changed = 0
        for row, (status, proof) in rows.items():
            changed += self.db.execute(
                "UPDATE rows SET status = ?, error = ? WHERE row = ? AND state = 'done' "
                "AND status = 'unknown' AND (? IS NULL OR run = ?)",
                (status, proof, row, run_id, run_id),
            ).rowcount
        self._commit()
        return changed


def _entry(r: Sequence[Any]) -> Entry:
    """An entry from a row of (key, run, row, state, status, http_status, error, attempts,
    finished_at, outputs, sent): a row whose last attempt did not send, but an earlier one
    did (or may have), reads as that earlier send."""
    entry = Entry(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]) if r[9] else {}
    )
    sent = r[10]
    if sent and entry.state == "done" and entry.status not in ("queued", "scheduled", "unknown"):
        status, _, at = str(sent).partition("|")
        entry.error = f"sent before ({status} at {at}); a later attempt: {entry.status}"
        entry.status, entry.finished_at, entry.http_status = status, at or None, None
    return entry


def _is_journal(path: Path) -> bool:
    return sqlite_application(path) == APPLICATION


def key_scope(operation: str, target: str) -> str:
    """The prefix of the keys of one operation against one target."""
    import hashlib

    return hashlib.blake2b(f"{operation}\n{target}".encode(), digest_size=6).hexdigest()


def row_key(operation: str, target: str, fingerprint: str, occurrence: int) -> str:
    """The journal key of a row (see the module docstring)."""
    return f"{key_scope(operation, target)}:{fingerprint}:{occurrence}"


def has_runs_of(path: Path, command: str) -> bool:
    """Whether the journal at ``path`` holds runs of ``command`` (read only; False for a file
    that is no sonar-bulk journal)."""
    if not _is_journal(path):
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT 1 FROM runs WHERE operation = ? LIMIT 1", (command,))
            return row.fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:
        return False


def describe_entry(entry: Entry) -> dict[str, Any]:
    return {"status": entry.status, "state": entry.state, "attempts": entry.attempts}
