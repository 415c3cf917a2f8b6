"""Quiet hours: the recipient's local time decides, before the run and again when each row's
turn comes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from sonar_bulk import normalize as nz
from sonar_bulk.api.endpoints import Param
from sonar_bulk.engine.prepared import (
    QUIET_SKIP,
    RUN,
    Prepared,
)
from sonar_bulk.engine.runner import Job
from sonar_bulk.plan import Call
from sonar_bulk.validation import Validation


def apply_quiet_hours(p: Prepared) -> None:
    """Quiet hours before the run: each recipient's zones (a timezone column, else the
    number's area code, else all of its country's zones; unknown: not sent, never assumed),
    and what the window does to the row now (or at its send_at): held until the window ends
    (a campaign's send_at is moved there instead) or skipped. The window is checked again
    for each row at the moment it is sent (:func:`quiet_gate`)."""
    assert p.options.quiet_hours is not None
    start, end = p.options.quiet_hours
    zones = zone_column(p.validation)
    phones = p.validation.normalized.get(p.operation.phone_column)
    schedule = p.validation.normalized.get("send_at")
    now = dt.datetime.now(dt.UTC)
    window = f"{start:%H:%M}-{end:%H:%M}"
    for index in np.flatnonzero(p.disposition == RUN).tolist():
        zone = (zones[index] if zones is not None else "") or ""
        phone = str(phones[index].as_py() or "") if phones is not None else ""
        candidates: tuple[str, ...] = (zone,) if zone else ()
        how = "timezone column"
        if not candidates:
            candidates, how = nz.phone_timezones(phone)
        if not candidates:
            p.disposition[index] = QUIET_SKIP
            p.zones[index] = "unknown"
            p.reasons[index] = (
                f"not sent (held back by quiet hours): the time zone of "
                f"{phone or 'this recipient'} is unknown, so quiet hours {window} can't be "
                "checked; add a timezone column"
            )
            continue
        p.quiet_zones[index] = candidates
        when = now
        scheduled = schedule is not None and bool(schedule[index].as_py())
        if scheduled:
            assert schedule is not None
            when = dt.datetime.fromisoformat(str(schedule[index].as_py()))
        shown = [f"{name} {when.astimezone(ZoneInfo(name)):%H:%M}" for name in candidates[:3]]
        more = f" and {len(candidates) - 3} more zones" if len(candidates) > 3 else ""
        p.zones[index] = f"{', '.join(shown)}{more} ({how})"
        until = _quiet_until(candidates, when, start, end)
        if until is None:
            continue
        quiet = _quiet_zone(candidates, when, start, end)
        if until is False:
            p.disposition[index] = QUIET_SKIP
            p.reasons[index] = (
                f"not sent: no time is outside quiet hours {window} in all of its zones"
            )
        elif p.options.quiet_policy == "skip":
            p.disposition[index] = QUIET_SKIP
            p.reasons[index] = f"not sent: {quiet} is inside quiet hours {window}"
        elif p.operation.command == "campaigns send":
            p.moved[index] = until.isoformat(timespec="seconds")
            p.zones[index] += f"; {quiet} is quiet: send_at moved to {p.moved[index]}"
        else:
            p.holds[index] = until.timestamp()
            p.zones[index] += f"; {quiet} is quiet: held until {until:%Y-%m-%d %H:%M %Z}"


def _quiet_zone(zones: Sequence[str], when: dt.datetime, start: dt.time, end: dt.time) -> str:
    """The first of ``zones`` inside the quiet window at ``when``, with its local time."""
    for zone in zones:
        local = when.astimezone(ZoneInfo(zone))
        if _window_end(local, start, end) is not None:
            return f"{zone} {local:%H:%M}"
    return f"{zones[0]} {when.astimezone(ZoneInfo(zones[0])):%H:%M}"


def _quiet_until(
    zones: Sequence[str], when: dt.datetime, start: dt.time, end: dt.time
) -> dt.datetime | None | Literal[False]:
    """The first time from ``when`` at which every one of ``zones`` is outside the quiet
    window: None when ``when`` already is, False when no such time comes within days (a
    country wider than the hours left awake)."""
    at = when
    for _ in range(8):
        ends = [
            e
            for zone in zones
            if (e := _window_end(at.astimezone(ZoneInfo(zone)), start, end)) is not None
        ]
        if not ends:
            return None if at == when else at
        at = max(ends)
    return False


def quiet_gate(p: Prepared) -> Callable[[Job, float], Job | str | float]:
    """Quiet hours at the moment a row is sent (the run may reach a window that began after
    it started): the job to send (a campaign's send_at moved to the window's end), why it is
    skipped, or the wall-clock time to hold it until."""
    assert p.options.quiet_hours is not None
    start, end = p.options.quiet_hours
    window = f"{start:%H:%M}-{end:%H:%M}"
    campaign = p.operation.command == "campaigns send"

    def gate(job: Job, now: float) -> Job | str | float:
        zones = p.quiet_zones.get(job.index)
        if not zones or (campaign and job.call.params.get(Param.SEND_AT)):
            return job  # a scheduled send was checked at its own send_at
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        until = _quiet_until(zones, at, start, end)
        if until is None:
            return job
        if until is False or p.options.quiet_policy == "skip":
            return (
                f"not sent: {_quiet_zone(zones, at, start, end)} was inside quiet hours "
                f"{window} when its turn came"
            )
        if campaign:
            params = {**job.call.params, Param.SEND_AT: until.isoformat(timespec="seconds")}
            return Job(job.not_before, job.index, Call(job.call.endpoint, params), job.key, job.who)
        return until.timestamp()

    return gate


def _window_end(local: dt.datetime, start: dt.time, end: dt.time) -> dt.datetime | None:
    """When the quiet window that ``local`` falls in ends; None when it is outside."""
    t = local.time().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date()
    if start >= end and t >= start:
        day = day + dt.timedelta(days=1)
    naive = dt.datetime.combine(day, end)
    return naive.replace(tzinfo=local.tzinfo)


def zone_column(validation: Validation) -> list[str] | None:
    if "timezone" in validation.normalized:
        return [str(z or "") for z in validation.normalized["timezone"].to_pylist()]
    from sonar_bulk.schema import header_key

    for index, header in enumerate(validation.sheet.headers):
        if header_key(header) in ("timezone", "tz"):
            raw = validation.sheet.column(index).to_pylist()
            return [nz.canonical_timezone(str(v or "").strip()) or "" for v in raw]
    return None
