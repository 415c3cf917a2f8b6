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
    """Seconds in ``90s``, ``15m``, ``2h``, ``1h30m`` or ``1d``. A bare number needs a unit
    (is ``10`` seconds or minutes?), but ``0`` is 0.

    >>> parse_duration("1h30m"), parse_duration("0")
    (5400.0, 0.0)
    """
    clean = text.strip()
    if _DURATION.fullmatch(clean):
        seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(clean))
    elif re.fullmatch(r"0+(?:\.0*)?", clean):
        seconds = 0.0  # nothing to misread
    elif re.fullmatch(r"\d+(?:\.\d+)?", clean):
        raise UsageError(f"{what} {text!r}: add a unit: {clean}s, {clean}m or {clean}h")
    else:
        raise UsageError(
            f"{what} {text!r}: use a number and a unit, such as 90s, 15m, 2h, 1h30m or 1d"
        )
    if seconds > MAX_SECONDS:
        raise UsageError(f"{what} {text!r}: at most 30 days")
    return seconds


def parse_time(text: str, now: float, what: str = "time") -> float:
    """Epoch seconds of ``text``: ISO 8601 (``2026-11-28``, ``2026-11-28T09:30``,
    ``2026-11-28T17:30Z``, ``...+01:00``; no offset means this machine's local time), a time
    of day today (``18:30``, local), ``now``, or relative to now: ``-2h`` (two hours ago),
    ``+15m`` (in 15 minutes)."""
    clean = text.strip()
    if clean.lower() == "now":
        return now
    if re.fullmatch(r"\d{1,2}:\d{2}(?::\d{2})?", clean):
        try:
            clock = dt.time.fromisoformat(clean.zfill(len(clean) + (clean.index(":") == 1)))
        except ValueError:
            raise UsageError(f"{what} {text!r}: not a time of day (00:00 to 23:59)") from None
        today = dt.datetime.fromtimestamp(now).astimezone().date()
        return dt.datetime.combine(today, clock).astimezone().timestamp()
    if clean[:1] in "+-" and _DURATION.fullmatch(clean[1:]):
        offset = parse_duration(clean[1:], what)
        return now - offset if clean[0] == "-" else now + offset
    try:
        when = dt.datetime.fromisoformat(clean.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what} {text!r}: use ISO 8601 (2026-11-28T09:30, with an offset or Z for UTC), "
            "a time of day (18:30) or a time relative to now (-2h, -30m, +15m)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.timestamp()


def span(seconds: float) -> str:
    """``90s``, ``15m``, ``1h30m``: a duration as people write it."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def iso_local(ts: float) -> str:
    """``2026-11-28T21:50:01+00:00``: what --since takes, to the second."""
    return dt.datetime.fromtimestamp(int(ts)).astimezone().isoformat()
