"""From validated rows to API calls: what each bulk command asks of Sonar, row by row.

An :class:`Operation` declares a command (``customers upsert``): the sheet kind it reads, the
call each row becomes (:meth:`Operation.call`, a pure function of the row's normalized values)
and how an answer reads as a row status (:meth:`Operation.status`). The engine runs the calls;
the dry run prints them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sonar_bulk.api.endpoints import (
    STATUS_SCHEDULED,
    STATUS_UNSUBSCRIBED,
    Errors,
    Param,
    endpoint,
)
from sonar_bulk.schema import KINDS

if TYPE_CHECKING:  # the command line reads OPERATIONS at start-up: numpy and httpx come later
    import numpy as np

    from sonar_bulk.api.client import Answer
    from sonar_bulk.validation import Validation

#: Every value of ``sonar__status``, in the order of sonar_bulk/docs/bulk-runs.md's table.
STATUSES = (
    "created",
    "updated",
    "ok",
    "queued",
    "unsubscribed",
    "scheduled",
    "unchanged",
    "skipped",
    "invalid",
    "failed",
    "unknown",
    "planned",
)
#: Statuses of a row that is done and needs nothing more (a resumed run skips it).
DONE = frozenset({"created", "updated", "ok", "queued", "unsubscribed", "scheduled", "unchanged"})
#: Statuses that mean a text went out, or may have.
SENT = frozenset({"queued", "scheduled", "unknown"})
#: Statuses that make the exit code 1.
BAD = frozenset({"invalid", "failed", "unknown"})


#: ``json.dumps(..., sort_keys=True, ensure_ascii=False)`` made once (a fingerprint a row: the
#: journal's keys depend on these exact bytes).
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class Call:
    """One API call: an endpoint of the table and its parameters."""

    endpoint: str
    params: dict[str, Any]

    @property
    def sends(self) -> bool:
        return endpoint(self.endpoint).sends

    def describe(self) -> str:
        """``POST /customers {"phone_number": "+1310...", "first_name": "José & Ana"}``, as a
        plan file shows it: the fields as they will be sent, decoded (no URL encoding; the
        client form-encodes them on the wire), in JSON so that no value can be misread."""
        ep = endpoint(self.endpoint)
        body = json.dumps(self.params, ensure_ascii=False) if self.params else ""
        return f"{ep.method} {ep.path}" + (f" {body}" if body else "")

    def fields(self) -> list[tuple[str, str]]:
        """The form fields as sent (``properties[plan]``, ``tag_names[]``), decoded."""
        from sonar_bulk.api.client import form_pairs

        return form_pairs(self.params)

    def fingerprint(self) -> str:
        """A digest of the call: the same call from an edited or reordered sheet is
        recognized in the journal."""
        text = _FINGERPRINT_JSON.encode([self.endpoint, self.params])
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


#: What a row becomes: a call, or the reason it can't be one (reported as ``invalid``).
Built = Call | str


def _filled(row: Mapping[str, str], *names: str) -> dict[str, str]:
    return {n: row[n] for n in names if row.get(n)}


def _upsert(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
    params: dict[str, Any] = {Param.PHONE: row["phone_number"]}
    params.update(
        _filled(
            row,
            Param.FIRST_NAME,
            Param.LAST_NAME,
            Param.EMAIL,
            Param.PICTURE_URL,
            Param.SUBSCRIBED,
            Param.ZIP_CODE,
            Param.TIMEZONE,
        )
    )
    if row.get("assignee_email"):
        params[Param.ASSIGNEE] = row["assignee_email"]
    filled = {k: v for k, v in props.items() if v != ""}
    if filled:
        params[Param.PROPERTIES] = filled
    return Call("upsert_customer", params)


def _by_phone(name: str) -> Callable[[Mapping[str, str], Mapping[str, str]], Built]:
    def build(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
        return Call(name, {Param.PHONE: row["phone_number"]})

    return build


def _property_set(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
    if row.get("value", "") == "":
        return _property_delete(row, props)
    return Call(
        "upsert_customer",
        {Param.PHONE: row["phone_number"], Param.PROPERTIES: {row["property_name"]: row["value"]}},
    )


def _property_delete(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
    params: dict[str, Any] = {}
    if row.get("phone_number"):
        params[Param.PHONE] = row["phone_number"]
    else:
        params[Param.EMAIL] = row["email"]
    params[Param.PROPERTY_NAME] = row["property_name"]
    return Call("delete_customer_property", params)


def _message(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
    params: dict[str, Any] = {Param.TO: row["to"], Param.TEXT: row["text"]}
    if row.get("media_url"):
        params[Param.MEDIA_URL] = row["media_url"]
    tags = [t for t in row.get("tag_names", "").split(",") if t]
    if tags:
        params[Param.TAG_NAMES] = tags
    return Call("send_message", params)


def _tag(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
    return Call(
        "add_message_tag",
        {Param.MESSAGE_ID: row["external_message_id"], Param.TAG_NAME: row["tag_name"]},
    )


def _campaign(row: Mapping[str, str], props: Mapping[str, str]) -> Built:
    params: dict[str, Any] = {Param.TO: row["to"], Param.CAMPAIGN_ID: row["campaign_id"]}
    if row.get("send_at"):
        params[Param.SEND_AT] = row["send_at"]
    return Call("send_campaign", params)


def _status_of_upsert(answer: Answer) -> tuple[str, dict[str, str]]:
    return ("created" if answer.status == 201 else "updated"), {}


def _status_ok(answer: Answer) -> tuple[str, dict[str, str]]:
    return "ok", {}


def _status_of_property_set(answer: Answer) -> tuple[str, dict[str, str]]:
    """Sonar sets a property through the customer upsert: on a phone it does not know, that
    creates the customer (201), reported ``created``; a set on a customer, or a delete, is
    ``ok``."""
    return ("created" if answer.status == 201 else "ok"), {}


def _status_of_get(answer: Answer) -> tuple[str, dict[str, str]]:
    """The record is kept (not a results column) for ``customers get -o``."""
    return "ok", {"record": json.dumps(answer.body, ensure_ascii=False)}


#: Why a row that Sonar answered with a success has the status it has, where the status alone
#: does not say it (the results' reason column; found by a new-user trial: it was blank).
ANSWER_REASONS = {
    STATUS_UNSUBSCRIBED: "not texted: Sonar answered that the customer is unsubscribed",
    "unknown": "Sonar answered with a success that does not say whether it was sent",
}


def _status_of_send(answer: Answer) -> tuple[str, dict[str, str]]:
    if not isinstance(answer.body, dict) or not answer.body.get("status"):
        return "unknown", {}  # a success that is not Sonar's answer: sent or not, who knows
    body = answer.body
    status = str(body["status"])
    if status not in (STATUS_UNSUBSCRIBED, STATUS_SCHEDULED):
        status = "queued"
    outputs = {}
    if body.get("external_id"):
        outputs["external_message_id"] = str(body["external_id"])
    if body.get("send_at"):
        outputs["send_at"] = str(body["send_at"])
    return status, outputs


def _absent_property(call: Call, status: int | None, error: str) -> str | None:
    """A property that is not there is already deleted (a blank value in ``properties set``
    deletes it; a ``properties delete`` made again after a crash finds it gone)."""
    if call.endpoint == "delete_customer_property" and status == 404:
        if error == Errors.PROPERTY_NOT_FOUND:
            return "unchanged"
    return None


@dataclass(frozen=True)
class Operation:
    """One bulk command: the sheet it reads and what each row asks of Sonar."""

    #: ``customers upsert``: the command group and verb.
    command: str
    kind: str
    build: Callable[[Mapping[str, str], Mapping[str, str]], Built]
    read: Callable[[Answer], tuple[str, dict[str, str]]]
    #: Result columns the operation adds (``sonar__<name>``).
    outputs: tuple[str, ...] = ()
    #: Whether it texts people (confirmation, quiet hours, never a blind retry).
    sends: bool = False
    #: Whether it changes anything in Sonar (a dry run applies to it).
    writes: bool = True
    #: The column holding the recipient's or the customer's phone.
    phone_column: str = "phone_number"
    summary: str = ""
    #: A refusal that still leaves the row as wanted: its status instead of ``failed``.
    absorb: Callable[[Call, int | None, str], str | None] | None = None
    #: Its name in the files a run writes (``<stem>.<short>.results.csv``, see
    #: :mod:`sonar_bulk.run_files`): short, stable and unique.
    short: str = ""

    def call(self, row: Mapping[str, str], props: Mapping[str, str] | None = None) -> Built:
        """The call ``row`` makes, or why it can't make one: what the command needs of a row
        (the kind's ``needs``, which validate checks too) before the request is built."""
        kind = KINDS[self.kind]
        for need in kind.needs:
            if need.command == self.command and (refused := need.refusal(kind, row)):
                return refused
        return self.build(row, props or {})

    def status(self, answer: Answer) -> tuple[str, dict[str, str]]:
        return self.read(answer)


OPERATIONS: dict[str, Operation] = {
    op.command: op
    for op in (
        Operation(
            "customers upsert",
            "customers",
            _upsert,
            _status_of_upsert,
            summary="Add or update each customer (names, email, subscribed, assignee, zip, "
            "timezone, custom properties).",
            short="upsert",
        ),
        Operation(
            "customers get",
            "customer_keys",
            _by_phone("get_customer"),
            _status_of_get,
            writes=False,
            summary="Read each customer's current Sonar record into a sheet.",
            short="get",
        ),
        Operation(
            "customers close",
            "customer_keys",
            _by_phone("close_customer"),
            _status_ok,
            summary="Close each customer's conversation (unassigns and archives).",
            short="close",
        ),
        Operation(
            "customers unassign",
            "customer_keys",
            _by_phone("unassign_customer"),
            _status_ok,
            summary="Unassign the agent from each customer.",
            short="unassign",
        ),
        Operation(
            "properties set",
            "properties",
            _property_set,
            _status_of_property_set,
            absorb=_absent_property,
            summary="Set one custom property per row (a blank value deletes it).",
            short="properties-set",
        ),
        Operation(
            "properties delete",
            "properties",
            _property_delete,
            _status_ok,
            absorb=_absent_property,
            summary="Delete one custom property per row.",
            short="properties-delete",
        ),
        Operation(
            "messages send",
            "messages",
            _message,
            _status_of_send,
            outputs=("external_message_id",),
            sends=True,
            phone_column="to",
            summary="Send one SMS/MMS per row.",
            short="send",
        ),
        Operation(
            "messages tag",
            "message_tags",
            _tag,
            _status_ok,
            summary="Add a tag to each message, by its external message id.",
            short="tag",
        ),
        Operation(
            "campaigns send",
            "campaign_recipients",
            _campaign,
            _status_of_send,
            outputs=("send_at",),
            sends=True,
            phone_column="to",
            summary="Send a campaign to each recipient, now or at send_at.",
            short="campaign",
        ),
    )
}


def row_values(
    validation: Validation, start: int = 0, chunk: int = 10_000
) -> Iterator[tuple[int, dict[str, str], dict[str, str]]]:
    """(row index, normalized values, custom properties) of every data row from ``start``, a
    chunk at a time (a million rows never sit in memory as Python objects at once)."""
    names = list(validation.normalized)
    props = list(validation.properties)
    n = validation.rows
    for lo in range(start, n, chunk):
        hi = min(n, lo + chunk)
        cols = [validation.normalized[name].slice(lo, hi - lo).to_pylist() for name in names]
        pcols = [validation.properties[p][1].slice(lo, hi - lo).to_pylist() for p in props]
        for offset in range(hi - lo):
            row = {name: (col[offset] or "") for name, col in zip(names, cols, strict=True)}
            values = {p: (col[offset] or "") for p, col in zip(props, pcols, strict=True)}
            yield lo + offset, row, values


def invalid_mask(validation: Validation) -> np.ndarray:
    """Per row: True when validation found an error in it."""
    import numpy as np

    return np.asarray(validation.invalid, dtype=bool)
