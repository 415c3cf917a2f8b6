"""``--diff``: what Sonar has now, read before a run (GET only)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sonar_bulk.api.client import SonarClient
from sonar_bulk.api.endpoints import Errors, Param
from sonar_bulk.engine import talk
from sonar_bulk.engine.execute import (
    client_for,
    run_jobs,
)
from sonar_bulk.engine.prepared import (
    ABSENT,
    UNCHANGED,
    Prepared,
    runnable,
)
from sonar_bulk.engine.runner import Job
from sonar_bulk.engine.talk import Ui
from sonar_bulk.plan import Call, row_values
from sonar_bulk.results import (
    RowResults,
)

#: Fields a GET /customers answer shows, so a change to them can be seen; the others
#: (picture_url, zip_code, timezone, assignee_email) are written but never read back.
_READABLE = ("first_name", "last_name", "email", "subscribed", "external_id")


def read_current(
    p: Prepared,
    ui: Ui,
    *,
    client_factory: Callable[[], SonarClient] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """``--diff``: read each row's customer (GET only) and say what the row would change; an
    upsert row that changes nothing becomes ``unchanged`` (not sent). With
    ``options.existing_only``, a row whose customer Sonar does not have is ABSENT (skipped)."""
    from sonar_bulk.plan import OPERATIONS

    get = OPERATIONS["customers get"]
    found = RowResults(p.validation.rows)
    phones: dict[int, str] = {}

    def jobs() -> Iterator[Job]:
        for index, built in runnable(p):
            phone = built.params.get(Param.PHONE) or built.params.get(Param.TO)
            if not phone:
                continue
            phones[index] = phone
            yield Job(0.0, index, Call("get_customer", {Param.PHONE: phone}), "")

    ui.tell(talk.ReadingCurrent(existing_only=p.options.existing_only and not p.options.diff))
    factory = client_factory or (lambda: client_for(p))
    # a customer Sonar does not have yet is one to create, not a failed read
    reading = dataclasses.replace(get, absorb=_not_there_yet)
    runner = run_jobs(p, found, None, factory, ui, clock, operation=reading, jobs=jobs())
    if runner.fatal is not None:
        raise runner.fatal
    if runner.interrupted:
        raise KeyboardInterrupt  # Ctrl-C while reading: nothing is sent after
    unsubscribed = 0
    for index, row, props in row_values(p.validation):
        if index not in phones:
            continue
        status = found.status(index)
        record_text = found.extra.get("record", {}).get(index)
        if status == "ok" and record_text:
            record = json.loads(record_text)
            if record.get("subscribed") is False:
                unsubscribed += 1
            if p.operation.command == "customers upsert":
                built = p.operation.call(row, props)
                assert not isinstance(built, str)
                change, same = describe_change(built.params, record)
                p.changes[index] = change
                if same:
                    p.disposition[index] = UNCHANGED
            elif record.get("subscribed") is False:
                p.changes[index] = "unsubscribed in Sonar: it will not be delivered"
        elif found.http_status(index) == 404 and p.options.existing_only:
            p.disposition[index] = ABSENT
            p.reasons[index] = (
                f"not sent: Sonar has no customer {phones[index]} (--existing-only leaves "
                "out customers it does not have)"
            )
            p.changes[index] = "skip: not a Sonar customer"
        elif found.http_status(index) == 404:
            p.changes[index] = "create"
        else:
            why = found.row(index)[2]
            p.changes[index] = f"unknown: the current record could not be read ({why})"
    p.unsubscribed = unsubscribed


def _not_there_yet(call: Call, status: int | None, error: str) -> str | None:
    """A GET of a customer Sonar does not have (404 Customer Not Found): no record to compare
    with, which is no failure (the progress counts it done, not failed)."""
    if call.endpoint == "get_customer" and status == 404 and error == Errors.CUSTOMER_NOT_FOUND:
        return "skipped"
    return None


def describe_change(params: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[str, bool]:
    """(``update: first_name Ana -> Anna; ...`` or ``unchanged``, whether nothing changes)."""
    changes: list[str] = []
    blind: list[str] = []
    for key, value in params.items():
        if key in (Param.PHONE, Param.PROPERTIES):
            continue
        if key not in _READABLE:
            blind.append(key)
            continue
        old = record.get(key)
        if key == "subscribed":
            old_text = "" if old is None else ("true" if old else "false")
        else:
            old_text = "" if old is None else str(old)
        if old_text != str(value):
            changes.append(f"{key} {old_text or '(blank)'} -> {value}")
    current = record.get("properties") or {}
    for key, value in (params.get(Param.PROPERTIES) or {}).items():
        old = current.get(key)
        if old is None or str(old) != str(value):
            changes.append(f"property {key} {old if old is not None else '(none)'} -> {value}")
    if not changes and not blind:
        return "unchanged", True
    text = "update: " + "; ".join(changes) if changes else "update"
    if blind:
        text += f" (not readable back, sent as given: {', '.join(blind)})"
    return text, False
