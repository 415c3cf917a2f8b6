"""The files a run writes (issue 18, points 3 and 8): named by operation, in --out-dir when
asked, lock files gone at the end, a file the user edited never replaced, every CSV inert."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonar_bulk.errors import UsageError
from sonar_bulk.owned import hold

# -- lock files -----------------------------------------------------------------------------------


def test_a_lock_file_is_removed_when_let_go(tmp_path: Path) -> None:
    held = hold(tmp_path / "j.sqlite", "busy")
    assert (tmp_path / "j.sqlite.lock").exists()
    with pytest.raises(UsageError, match="busy"):
        hold(tmp_path / "j.sqlite", "busy")
    held.close()
    held.close()  # twice is once
    assert list(tmp_path.iterdir()) == []
    with hold(tmp_path / "j.sqlite", "busy"):  # free again, and a context manager
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_stale_lock_file_is_taken(tmp_path: Path) -> None:
    """A lock file left by a process killed with -9 holds no lock: the next run takes it."""
    (tmp_path / "j.sqlite.lock").write_text("")
    with hold(tmp_path / "j.sqlite", "busy"):
        with pytest.raises(UsageError):
            hold(tmp_path / "j.sqlite", "busy")
    assert not (tmp_path / "j.sqlite.lock").exists()


def _race(target: Path, marker: Path, rounds: int) -> int:
    """Take and let go of the lock on ``target`` ``rounds`` times; inside, make ``marker``
    (O_EXCL: fails if another holder is inside too) and remove it. Exit 3 on an overlap."""
    import os

    taken = 0
    for _ in range(rounds):
        try:
            held = hold(target, "busy")
        except UsageError:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            os._exit(3)
        os.close(fd)
        os.unlink(marker)
        taken += 1
        held.close()
    return taken


def _racer(target: Path, marker: Path, rounds: int) -> None:
    import os

    os._exit(0 if _race(target, marker, rounds) else 4)


def test_holders_racing_never_hold_at_once(tmp_path: Path) -> None:
    """Processes take and let go of one lock as fast as they can: never two inside at once,
    however the removal of the lock file interleaves with another's open; each got in; no
    lock file is left."""
    import multiprocessing

    target, marker = tmp_path / "sheet.journal.sqlite", tmp_path / "inside"
    context = multiprocessing.get_context("fork")
    racers = [context.Process(target=_racer, args=(target, marker, 3000)) for _ in range(3)]
    for r in racers:
        r.start()
    for r in racers:
        r.join(60)
    assert [r.exitcode for r in racers] == [0, 0, 0]
    assert list(tmp_path.iterdir()) == []


def test_a_taker_of_a_removed_lock_file_tries_again(tmp_path: Path) -> None:
    """The race itself, made to happen: B opens the lock file, A removes it and lets go, C
    takes a new one; B, once locked, sees its file is no longer the one named and opens the
    name again, where C holds it: refused."""
    import fcntl
    import os

    name = str(tmp_path / "j.sqlite.lock")
    a = hold(tmp_path / "j.sqlite", "busy")
    b_file = open(name, "a")  # noqa: SIM115 - B has opened the file A holds
    a.close()
    c = hold(tmp_path / "j.sqlite", "busy")
    fcntl.flock(b_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # B's lock: on a removed file
    assert os.fstat(b_file.fileno()).st_ino != os.stat(name).st_ino
    with pytest.raises(UsageError):
        hold(tmp_path / "j.sqlite", "busy")  # what hold() does for B next: C has the name
    b_file.close()
    c.close()
    assert not Path(name).exists()
