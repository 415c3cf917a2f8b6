"""Wording helpers that import nothing: the command line words its lines with them before it
has loaded any of the data stack (:mod:`sonar_bulk.normalize` re-exports them)."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """``1 row``, ``2 rows``, ``1,000 rows``."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")
