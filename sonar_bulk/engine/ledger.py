"""Every send this user has made, whatever the sheet: the send ledger.

A journal belongs to one sheet. A copy of a sheet that was sent ("Save As final.xlsx", the
results file fed back in, a renamed export) has a journal of its own, empty, so the journal
alone would text those people again. The ledger keeps the key of every message or campaign
send that went out (or may have: ``unknown``), in the user's data folder. A send whose key is
in the ledger is treated as sent before, exactly as one the journal knows: skipped, said, and
sent again only when asked (``--resend``, or yes at the prompt).

A key is the journal's row key: the operation, the target (the emulator, or an API base URL)
and the exact request (phone and text, or phone, campaign and send_at), with its occurrence in
the sheet. A send is written before its request goes out, as ``inflight`` (so a process
killed then still counts it as maybe sent, as its journal does); when the run's outcomes are
known, the ones that went out get their status, and the ones that provably did not (a 400, a
stop before the request) are taken out again.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    sheet TEXT NOT NULL
);
"""


def ledger_path() -> Path:
    from sonar_bulk.connection import data_dir

    return data_dir() / "sent.sqlite"


class Ledger:
    """The ledger file (made 0600 on first use: it names the user's sheets)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ledger_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        if fresh:
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass

    def record(self, items: Iterable[tuple[str, str, str, str]]) -> None:
        """(key, status, sent_at, sheet) of sends that went out, or may have."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO sent VALUES (?, ?, ?, ?)", items)

    def intent(self, key: str, sheet: str, at: str) -> bool:
        """Before a send's request: ``inflight`` (committed at once), unless the ledger
        already has the key (a --resend keeps its earlier record). True when written."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO sent VALUES (?, 'inflight', ?, ?)", (key, at, sheet)
        )
        return cur.rowcount == 1

    def forget(self, keys: Iterable[str]) -> None:
        """Sends that did not go out after all."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM sent WHERE key = ?", [(k,) for k in keys])

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[str, str, str]]:
        """(status, sent_at, sheet) of the keys the ledger holds."""
        found: dict[str, tuple[str, str, str]] = {}
        for lo in range(0, len(keys), 500):
            part = list(keys[lo : lo + 500])
            rows = self.db.execute(
                f"SELECT key, status, sent_at, sheet FROM sent WHERE key IN "
                f"({', '.join('?' * len(part))})",
                part,
            )
            for key, status, sent_at, sheet in rows:
                found[str(key)] = (str(status), str(sent_at), str(sheet))
        return found

    def close(self) -> None:
        self.db.close()
