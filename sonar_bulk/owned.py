"""Files sonar-bulk owns: one process at a time on a file (an advisory lock on
``<path>.lock``, removed when let go), which part of sonar-bulk wrote a SQLite file (its
``meta`` table's ``application``), so a file it did not write is never opened as one of its
own, and which sheets it wrote (:class:`Written`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

from sonar_bulk.errors import UsageError


class Held:
    """A lock file held by :func:`hold`; :meth:`close` lets it go and removes the file."""

    def __init__(self, handle: IO[str], path: str) -> None:
        self._handle: IO[str] | None = handle
        self.path = path

    def close(self) -> None:
        """Remove the lock file, then let the lock go (in that order: a process that opened
        the file before it was removed finds it no longer named so, and tries again)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            with contextlib.suppress(OSError):
                if _same_file(handle, self.path):
                    os.unlink(self.path)
        finally:
            handle.close()

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold(path: Path | str, busy: str) -> Held:
    """Take ``<path>.lock`` for this process alone (an advisory ``flock``); close the returned
    :class:`Held` to let it go, which removes the file. UsageError(``busy``) when another
    process holds it.

    The file is removed while still locked, so a process that opened it just before finds,
    once it has the lock, that the name now names another file (or none): it opens the name
    again, and the one lock file is the only one anybody holds."""
    name = f"{path}.lock"
    while True:
        handle = open(name, "a")  # noqa: SIM115 - held until the Held is closed
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UsageError(busy) from None
        if _same_file(handle, name):
            return Held(handle, name)
        handle.close()  # its holder removed it as it let go: the name is free, try again


def _same_file(handle: IO[str], name: str) -> bool:
    """Whether ``name`` still names the file ``handle`` has open."""
    try:
        named = os.stat(name)
    except OSError:
        return False
    mine = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


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


class Written:
    """Sheets sonar-bulk wrote (a run's results, failed rows and plan, split files, a customers
    backup, a template, a data sheet from the Python API): each one's path and SHA-256 when
    written, kept in the user data folder (``written.sqlite``). Such a file may be written
    again only while it is as sonar-bulk left it: one the user made, or edited since, is
    theirs."""

    def __init__(self, path: Path | None = None) -> None:
        from sonar_bulk.connection import data_dir

        self.path = path or data_dir() / "written.sqlite"

    def _db(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("CREATE TABLE IF NOT EXISTS written (path TEXT PRIMARY KEY, sha TEXT)")
        return db

    def note(self, path: Path) -> None:
        """``path`` was just written by sonar-bulk."""
        sha = file_sha256(path)
        try:
            db = self._db()
            try:
                db.execute(
                    "INSERT OR REPLACE INTO written VALUES (?, ?)", (str(path.resolve()), sha)
                )
            finally:
                db.close()
        except (OSError, sqlite3.Error):
            pass  # not noted: the next write asks for --force, never the other way round

    def ours(self, path: Path) -> bool:
        """Whether ``path`` is a file sonar-bulk wrote, unchanged since."""
        return self.state(path) == "ours"

    def state(self, path: Path) -> str:
        """``ours`` (sonar-bulk wrote it, unchanged since), ``edited`` (it wrote it, and it
        changed since) or ``unknown`` (not noted: another program's, or the registry can't
        be read)."""
        try:
            db = self._db()
            try:
                row = db.execute(
                    "SELECT sha FROM written WHERE path = ?", (str(path.resolve()),)
                ).fetchone()
            finally:
                db.close()
            if row is None:
                return "unknown"
            return "ours" if row[0] == file_sha256(path) else "edited"
        except (OSError, sqlite3.Error):
            return "unknown"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in pieces."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
