"""One process at a time on a file: an advisory lock on ``<path>.lock`` held until closed."""

from __future__ import annotations

import fcntl
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
