"""Files sonar-bulk owns: one process at a time on a file (an advisory lock on
``<path>.lock``), and which part of sonar-bulk wrote a SQLite file (its ``meta`` table's
``application``), so a file it did not write is never opened as one of its own."""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path
from typing import IO

from sonar_bulk.errors import UsageError


def hold(path: Path | str, busy: str) -> IO[str]:
    """Take ``<path>.lock`` for this process alone; close the returned file to let it go.
    UsageError(``busy``) when another process holds it."""
    handle = open(f"{path}.lock", "a")  # noqa: SIM115 - held until the caller closes it
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(busy) from None
    return handle


def sqlite_application(path: Path) -> str | None:
    """The ``application`` a sonar-bulk SQLite file names in its ``meta`` table; None for
    anything else (not SQLite, another program's database, unreadable)."""
    try:
        with path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return None
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        return None
    return str(row[0]) if row else None
