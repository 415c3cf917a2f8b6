"""Durations (``90s``, ``15m``, ``1h30m``) and points in time (ISO 8601, or relative to now as
``-2h`` / ``+15m``) as the webhook commands take them. Pure functions: ``now`` is passed in."""

from __future__ import annotations

import datetime as dt
import re

from sonar_bulk.errors import UsageError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)
_DURATION = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*[smhd]\s*)+", re.IGNORECASE)
#: A duration of at most 30 days: a window longer than that is a typo.
MAX_SECONDS = 30 * 86400.0


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``1h30m``, ``1d`` or a bare number of seconds.

    >>> parse_duration("1h30m"), parse_duration("90")
    (5400.0, 90.0)
    """
    clean = text.strip()
    try:
        seconds = float(clean)
    except ValueError:
        if not _DURATION.fullmatch(clean):
            raise UsageError(
                f"{what} {text!r}: use a number and a unit, such as 90s, 15m, 2h or 1h30m"
            ) from None
        seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(clean))
    if not 0 <= seconds <= MAX_SECONDS or seconds != seconds:
        raise UsageError(f"{what} {text!r}: must be from 0 to 30 days")
    return seconds


def parse_time(text: str, now: float, what: str = "time") -> float:
    """Epoch seconds of ``text``: ISO 8601 (``2026-11-28``, ``2026-11-28T09:30``,
    ``2026-11-28T17:30Z``, ``...+01:00``; no offset means this machine's local time), ``now``,
    or relative to now: ``-2h`` (two hours ago), ``+15m`` (in 15 minutes)."""
    clean = text.strip()
    if clean.lower() == "now":
        return now
    if clean[:1] in "+-" and _DURATION.fullmatch(clean[1:]):
        offset = parse_duration(clean[1:], what)
        return now - offset if clean[0] == "-" else now + offset
    try:
        when = dt.datetime.fromisoformat(clean.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what} {text!r}: use ISO 8601 (2026-11-28T09:30, with an offset or Z for UTC) "
            "or a time relative to now (-2h, -30m, +15m)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.timestamp()
