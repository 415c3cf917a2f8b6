"""The Sonar API as one table, shared by the client and the emulator.

Every path, parameter name, status code and error string lives here, with the evidence for it
(``OBSERVED`` in a recorded cassette, ``DOCUMENTED`` in Sonar's docs, ``INFERRED`` by us; see
``sonar_bulk/docs/sonar-api.md``). An INFERRED choice that turns out wrong against the real API
is corrected here, in one edit, and both the client and the emulator follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, quote_plus, unquote, urlsplit

Evidence = Literal["OBSERVED", "DOCUMENTED", "INFERRED"]

BASE_PATH = "/api/v1"
LIVE_BASE_URL = "https://www.sendsonar.com/api/v1"
SANDBOX_BASE_URL = "https://sandbox.sendsonar.com/api/v1"

#: Where the private token may travel (OBSERVED: Token header, token query; DOCUMENTED: X-Token).
TOKEN_HEADERS = ("Token", "X-Token")
TOKEN_QUERY = "token"
PUBLISHABLE_KEY_HEADER = "X-Publishable-Key"

#: What a local emulator accepts when no --token / --publishable-key is given (``sonar-bulk
#: emulator``, ``--emulate``); never valid on the real API.
EMULATOR_TOKEN = "emulator-token"
EMULATOR_PUBLISHABLE_KEY = "emulator-publishable-key"


class Errors:
    """Error strings of ``{"error": "..."}`` bodies."""

    #: 2017 sandbox, every endpoint (OBSERVED); used for a missing token too (INFERRED).
    TOKEN_NOT_FOUND = "Token or publishable_key not found"
    #: 2014 local server, /messages and /customers (OBSERVED); the emulator's --api-era 2014.
    BAD_TOKEN = "Bad Token"
    NO_SUBSCRIPTION = "No Active Subscription"  # 403, OBSERVED
    API_DISABLED = "Api Disabled For Company"  # 403, OBSERVED
    INVALID_PHONE = "Invalid Phone Number"  # 400, SYNTHETIC cassettes (docs say 403)
    MISSING_SUFFIX = " is missing"  # "<param> is missing", joined with ", " (OBSERVED)
    # INFERRED: never recorded; a 404 with these strings is our documented choice.
    CUSTOMER_NOT_FOUND = "Customer Not Found"
    CAMPAIGN_NOT_FOUND = "Campaign Not Found"
    MESSAGE_NOT_FOUND = "Message Not Found"
    WEBHOOK_NOT_FOUND = "Webhook Not Found"
    PROPERTY_NOT_FOUND = "Property Not Found"
    # INFERRED: the 7-second rule's response is undocumented; a 409 is our choice.
    DUPLICATE_MESSAGE = (
        "Duplicate Message: the same text was sent to this customer less than 7 seconds ago"
    )
    INVALID_SEND_AT = "send_at is invalid"
    SEND_AT_IN_PAST = "send_at is in the past"
    RATE_LIMITED = "Rate Limit Exceeded"  # emulator knob; the real limits are undocumented
    NOT_FOUND = "Not Found"


#: The 7-second rule (DOCUMENTED); its status is INFERRED.
DUPLICATE_WINDOW_SECONDS = 7.0
DUPLICATE_STATUS = 409

#: Inbound texts that unsubscribe a customer (DOCUMENTED; case-insensitive whole message and a
#: trailing "!" are INFERRED).
STOP_KEYWORDS = (
    "stop",
    "unsubscribe",
    "end",
    "cancel",
    "quit",
    "stopall",
    "stop messaging",
    "stop texting",
    "stop texting me",
    "stop messaging me",
    "leave me alone",
    "wrong number",
    "do not contact me",
)

#: Webhook events, as ``settings`` keys and payload ``action`` values (DOCUMENTED, but
#: ``double_opt_in`` is INFERRED).
WEBHOOK_EVENTS = (
    "new_unassigned_message",
    "new_assigned_message",
    "outbound_message",
    "user_assignment",
    "customer_created",
    "customer_subscribed",
    "customer_unsubscribed",
    "tag_added_to_message",
    "tag_removed_from_message",
    "double_opt_in",
    "customer_state_changed",
)

#: Where each column of the events export is read in a webhook payload: dotted paths, the
#: first present wins. DOCUMENTED: ``uuid``, ``action``, ``message_id``, ``external_id`` (the
#: current format's first keys) and the legacy format's ``text``, ``customer`` block
#: (``phone_number``, ``first_name``, ``last_name``) and ``user`` object. INFERRED: that the
#: current format keeps the legacy keys, ``customer.email``, and ``tag`` / ``tag_name`` for
#: the tag events. The emulator's payloads use the first path of each.
WEBHOOK_FIELDS: dict[str, tuple[str, ...]] = {
    "message_id": ("message_id",),
    "external_id": ("external_id",),
    "phone": ("customer.phone_number", "phone_number"),
    "first_name": ("customer.first_name",),
    "last_name": ("customer.last_name",),
    "email": ("customer.email",),
    "text": ("text",),
    "tag": ("tag", "tag_name"),
    "user": ("user",),
}

#: Retry delays after a failed delivery (DOCUMENTED: 10 s, 30 s, 3 min, 30 min; measured
#: between attempts is INFERRED).
WEBHOOK_RETRY_DELAYS = (10.0, 30.0, 180.0, 1800.0)

#: Message status values (DOCUMENTED) and our status for a held campaign send (INFERRED).
STATUS_QUEUED = "queued"
STATUS_UNSUBSCRIBED = "unsubscribed"
STATUS_SCHEDULED = "scheduled"


class Param:
    """Parameter names. The emulator's handlers and the client use these, never literals."""

    PHONE = "phone_number"  # OBSERVED
    EMAIL = "email"  # OBSERVED
    FIRST_NAME = "first_name"  # OBSERVED
    LAST_NAME = "last_name"  # OBSERVED
    PICTURE_URL = "picture_url"  # DOCUMENTED
    PROPERTIES = "properties"  # OBSERVED (form: properties[key]=value)
    SUBSCRIBED = "subscribed"  # DOCUMENTED
    TIMEZONE = "timezone"  # INFERRED: the docs' field name was cut off
    ZIP_CODE = "zip_code"  # INFERRED
    ASSIGNEE = "assignee_email"  # INFERRED
    EXTERNAL_ID = "external_id"  # INFERRED writable
    TO = "to"  # OBSERVED
    TEXT = "text"  # OBSERVED
    TAG_NAMES = "tag_names"  # DOCUMENTED (form arrays tag_names[] INFERRED)
    MEDIA_URL = "media_url"  # DOCUMENTED
    CAMPAIGN_ID = "campaign_id"  # OBSERVED
    SEND_AT = "send_at"  # INFERRED: Make's "Send at" field, API name unknown
    PROPERTY_NAME = "property_name"  # OBSERVED
    MESSAGE_ID = "external_message_id"  # INFERRED
    TAG_NAME = "tag_name"  # INFERRED
    WEBHOOK = "webhook"  # DOCUMENTED


#: POST /customers answers 201 for a new customer and this for an existing one (DOCUMENTED).
UPDATED_STATUS = 200

#: How many run-level answers (:class:`RunLevel`) for one value condemn the rest of its rows: a
#: few, so one answer that was a glitch does not skip thousands of rows (issue 18, point 7).
RUN_LEVEL_AFTER = 3


@dataclass(frozen=True)
class RunLevel:
    """Answers that fail one row in form but condemn every row of a run sharing the value of
    the request parameter ``key``: an unknown campaign id gets the same 404 for each of its
    rows. A bulk run sends the rows of one value one at a time until an answer is not one of
    these; after :data:`RUN_LEVEL_AFTER` of them it sends no more rows with that value (they
    are ``skipped`` with :meth:`reason`), and rows of other values go on. The answers that
    condemn every row whatever its values (a refused token or account) stop the run at the
    first: :func:`action_for`'s ``stop``."""

    key: str
    #: The (status, error) answers that condemn the value.
    answers: tuple[tuple[int, str], ...]
    #: What such an answer says of the value, for people; ``{value}`` is replaced.
    says: str

    def matches(self, status: int | None, error: str) -> bool:
        return (status, error) in self.answers

    def reason(self, value: str, status: int | None, error: str, times: int) -> str:
        """Why a condemned row is not sent: ``not sent: campaign X was not found by Sonar (404
        Campaign Not Found, 3 times)``."""
        said = self.says.replace("{value}", value)
        return f"not sent: {said} ({status} {error}, {times} times)"


@dataclass(frozen=True)
class Endpoint:
    """One operation of the Sonar API."""

    name: str
    method: str
    path: str
    #: ``token`` (private token) or ``publishable_key``.
    auth: Literal["token", "publishable_key"]
    #: Parameters, required first, in the order a "... is missing" error names them.
    required: tuple[str, ...]
    optional: tuple[str, ...]
    success: int
    evidence: Evidence
    summary: str
    #: What about this endpoint is INFERRED (empty when nothing is).
    inferred: str = ""
    #: The first required parameters of which any one suffices (delete property: phone or email).
    any_of: tuple[str, ...] = ()
    #: A send: it texts somebody, so it is retried only when the request provably was not
    #: processed; every other operation sets or reads state and is safe to repeat (INFERRED:
    #: Sonar documents no idempotency either way; an upsert, a close or a tag applied twice
    #: ends in the same state).
    sends: bool = False
    #: Answers that condemn every row sharing a parameter's value (an unknown campaign id).
    run_level: RunLevel | None = None

    @property
    def params(self) -> tuple[str, ...]:
        """All parameter names."""
        return self.any_of + self.required + self.optional


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "send_message",
        "POST",
        "/messages",
        "token",
        (Param.TEXT, Param.TO),
        (Param.TAG_NAMES, Param.MEDIA_URL),
        202,
        "OBSERVED",
        "Send an SMS/MMS; creates the customer when the number is new",
        "the response's external_id, the 7-second rule's 409, tag_names[] form arrays",
        sends=True,
    ),
    Endpoint(
        "upsert_customer",
        "POST",
        "/customers",
        "token",
        (Param.PHONE,),
        (
            Param.EMAIL,
            Param.FIRST_NAME,
            Param.LAST_NAME,
            Param.PICTURE_URL,
            Param.PROPERTIES,
            Param.SUBSCRIBED,
            Param.TIMEZONE,
            Param.ZIP_CODE,
            Param.ASSIGNEE,
            Param.EXTERNAL_ID,
        ),
        201,
        "OBSERVED",
        "Add or update a customer keyed by phone (201 created, 200 updated)",
        "the names timezone, zip_code and assignee_email; subscribed and external_id "
        "being writable; per-key merge of properties",
    ),
    Endpoint(
        "get_customer",
        "GET",
        "/customers",
        "token",
        (Param.PHONE,),
        (),
        200,
        "OBSERVED",
        "Look a customer up by phone",
        "404 Customer Not Found for an unknown phone",
    ),
    Endpoint(
        "close_customer",
        "POST",
        "/customers/close",
        "token",
        (Param.PHONE,),
        (),
        201,
        "OBSERVED",
        "Close the customer's conversation (unassigns and archives)",
        "404 for an unknown phone",
    ),
    Endpoint(
        "unassign_customer",
        "POST",
        "/customers/unassign",
        "token",
        (Param.PHONE,),
        (),
        201,
        "INFERRED",
        "Unassign the agent from a customer",
        "the whole endpoint: path, parameter, status and body are shaped like close",
    ),
    Endpoint(
        "delete_customer_property",
        "DELETE",
        "/customers/properties",
        "token",
        (Param.PROPERTY_NAME,),
        (),
        200,
        "OBSERVED",
        "Delete one custom property of a customer found by phone or email",
        "404 for an unknown customer or property",
        any_of=(Param.PHONE, Param.EMAIL),
    ),
    Endpoint(
        "send_campaign",
        "POST",
        "/campaigns",
        "token",
        (Param.TO, Param.CAMPAIGN_ID),
        (Param.SEND_AT,),
        202,
        "OBSERVED",
        "Send a campaign to one customer, now or at send_at",
        "send_at (ISO 8601 with offset) and its 'scheduled' status; 404 for an unknown "
        "campaign; the order of the missing-parameter errors",
        sends=True,
        # INFERRED, like the 404 itself: an unknown campaign id refuses every row that names it
        run_level=RunLevel(
            Param.CAMPAIGN_ID,
            ((404, Errors.CAMPAIGN_NOT_FOUND),),
            "campaign {value} was not found by Sonar",
        ),
    ),
    Endpoint(
        "add_message_tag",
        "POST",
        "/messages/tags",
        "token",
        (Param.MESSAGE_ID, Param.TAG_NAME),
        (),
        201,
        "INFERRED",
        "Append a tag to a message already sent",
        "the whole endpoint: path, parameter names, status and body",
    ),
    Endpoint(
        "available_phone_number",
        "GET",
        "/phone_numbers/available",
        "publishable_key",
        (),
        (),
        200,
        "OBSERVED",
        "The company's Sonar number to show to visitors",
    ),
    Endpoint(
        "create_webhook",
        "POST",
        "/webhooks",
        "token",
        (Param.WEBHOOK,),
        (),
        200,
        "DOCUMENTED",
        'Register a webhook: {"webhook": {name, active, settings, url, http_method}}',
        "the 200 status (the 2016 docs' example) and the body",
    ),
    Endpoint(
        "list_webhooks",
        "GET",
        "/webhooks",
        "token",
        (),
        (),
        200,
        "INFERRED",
        "List webhooks",
        "the whole endpoint",
    ),
    Endpoint(
        "update_webhook",
        "PUT",
        "/webhooks/{id}",
        "token",
        (Param.WEBHOOK,),
        (),
        200,
        "DOCUMENTED",
        "Update a webhook; settings are replaced wholesale",
        "the /webhooks/{id} path and the response",
    ),
    Endpoint(
        "delete_webhook",
        "DELETE",
        "/webhooks/{id}",
        "token",
        (),
        (),
        200,
        "INFERRED",
        "Delete a webhook",
        "the whole endpoint; the body is the deleted webhook",
    ),
)

ENDPOINTS_BY_NAME = {e.name: e for e in ENDPOINTS}


# -- what an answer means for a bulk run --------------------------------------------------------

#: What to do next after an answer that is not a success (the client's one reading of them):
#: ``stop`` the run (nothing else can succeed: the token or the account is the problem), ``fail``
#: the row (the request was refused; sending it again changes nothing), ``retry`` it (it was not
#: processed), or call its outcome ``unknown`` (it may have been processed: a send is then never
#: repeated blindly).
Action = Literal["stop", "fail", "retry", "unknown"]

#: 403 errors about the account, not the row: the run stops at the first (OBSERVED: the first
#: two; DOCUMENTED names only: the rest, whose exact strings are INFERRED).
ACCOUNT_ERRORS = (
    Errors.NO_SUBSCRIPTION,
    Errors.API_DISABLED,
    "Company inactive",
    "Company cancelled",
    "Trial Customer Limit Reached",
    "Trial Message Limit Reached",
)
#: Sonar's own timeout (status unknown; the official gem maps it): the request may have run.
REQUEST_TIMED_OUT = "Request Timed Out"
#: Answers that say the request was not processed, so even a send may be made again: a rate
#: limit (INFERRED: Sonar documents none; its limiter answering before the handler runs is
#: what every limiter does) and a 503 that names when to come back (INFERRED likewise).
NOT_PROCESSED_STATUSES = (429,)
RETRY_LATER_STATUS = 503


def action_for(ep: Endpoint | None, status: int, error: str, retry_after: float | None) -> Action:
    """What a bulk run does after ``status`` with ``{"error": error}`` from ``ep`` (None: a raw
    call, read as a send would be). The one place this reading lives: correct it here."""
    sends = ep is None or ep.sends
    if 200 <= status < 300:
        raise ValueError("a success needs no action")
    if status == 401:
        return "stop"
    if status == 403 and error in ACCOUNT_ERRORS:
        return "stop"
    if status in NOT_PROCESSED_STATUSES:
        return "retry"
    if sends and status == DUPLICATE_STATUS:
        return "unknown"  # the same text just went to this customer: maybe this very send
    if status == RETRY_LATER_STATUS and retry_after is not None:
        return "retry"
    if status >= 500 or error == REQUEST_TIMED_OUT or status == 408:
        return "unknown" if sends else "retry"
    return "fail"


def endpoint(name: str) -> Endpoint:
    """The endpoint called ``name``."""
    return ENDPOINTS_BY_NAME[name]


def missing_message(names: list[str]) -> str:
    """The 400 error for missing parameters: ``"text is missing, to is missing"``."""
    return ", ".join(n + Errors.MISSING_SUFFIX for n in names)


def inferred_table() -> str:
    """The list of INFERRED choices in sonar_bulk/docs/emulator.md and sonar-api.md, in Markdown."""
    lines = ["| endpoint | evidence | inferred |", "|---|---|---|"]
    for e in ENDPOINTS:
        if e.inferred:
            lines.append(f"| `{e.method} {e.path}` | {e.evidence} | {e.inferred} |")
    return "\n".join(lines)


# -- where a call goes, and what it may print ---------------------------------------------------

REDACTED = "[REDACTED]"
_TOKEN_PARAM = re.compile(r"(?i)(token=)[^&\s\"']*")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def secret_forms(*secrets: str | None) -> tuple[str, ...]:
    """Each secret as written and percent-encoded (as it appears in a query or a form body),
    longest first, for :func:`redact`."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        encoded = (quote(secret), quote(secret, safe=""), quote_plus(secret))
        lower = tuple(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), e) for e in encoded)
        # also as JSON and Python would print it (an error echoing the header, an answer
        # echoing the body)
        quoted = (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])
        forms.update((secret, *encoded, *lower, *quoted, repr(secret)[1:-1]))
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` (see :func:`secret_forms`) and without the value of
    any ``token=`` parameter. The one redaction of the CLI's output and the emulator's request
    log.

    Percent-encoding is decoded before a second look, since servers decode it too: in
    ``?%74oken=T`` the key is ``token``. When only the decoded text shows something to hide,
    the decoded text is returned, redacted; otherwise ``text`` keeps its encoding.
    """
    secrets = tuple(secrets)
    text = _redact_plain(text, secrets)
    if "%" in text:
        decoded = unquote(text)
        hidden = _redact_plain(decoded, secrets)
        if hidden != decoded:
            return hidden
    return text


def _redact_plain(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "oken=" in text.lower():  # a cheap test first: this runs on every emulated request
        text = _TOKEN_PARAM.sub(r"\1" + REDACTED, text)
    return text


def mask(secret: str) -> str:
    """A secret as a banner may show it: the first 3 and last 2 characters of a long one
    (``emu…ey``), fewer of a short one, never more than a third of it."""
    if len(secret) >= 15:
        return f"{secret[:3]}…{secret[-2:]}"
    if len(secret) >= 6:
        return f"{secret[:1]}…{secret[-1:]}"
    return "…"


def canonical_target(base_url: str) -> str:
    """One name for one API, whatever the spelling: what journals and the send ledger key
    sends by. Scheme and host in lower case, the default port dropped, dot segments and
    repeated or trailing slashes resolved, IPv4 in any spelling (``127.1``, ``0x7f.0.0.1``,
    ``::ffff:127.0.0.1``) as dotted quads, and every loopback name (``localhost``,
    ``127.x.x.x``, ``::1``) as ``loopback``: ``HTTP://LocalHost:80/api/v1/.`` and
    ``http://127.0.0.1/api/v1`` are one target."""
    import ipaddress
    import posixpath
    import socket

    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if re.fullmatch(r"[0-9a-fx.]+", host) and not host.endswith("."):
            try:  # the spellings inet_aton takes: 127.1, 0x7f.1, 2130706433
                address = ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    local = address is not None and (address.is_loopback or address.is_unspecified)
    if host in ("localhost", "0") or host.endswith(".localhost") or local:
        host = "loopback"
    elif address is not None:
        host = str(address) if address.version == 4 else f"[{address}]"
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    path = unquote(parts.path)
    path = posixpath.normpath(path) if path else "/"
    path = "/" + path.strip("/") if path not in ("/", ".", "//") else ""
    return f"{scheme}://{host}{path}"


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port or (443 if scheme == "https" else 80)


def _under(path: str, prefix: str) -> str | None:
    """``path`` relative to ``prefix`` (whole segments), or None when it is not under it."""
    if not prefix:
        return path or "/"
    if path == prefix or path == prefix + "/":
        return "/"
    if path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return None


def api_url(base_url: str, path: str, *, aliases: Sequence[str] = ()) -> str:
    """The URL to call for ``path`` under ``base_url``.

    ``path`` may be an API path (``/customers``), one that repeats the base URL's path
    (``/api/v1/customers``), or a full URL under ``base_url`` or under one of ``aliases``; an
    alias is answered by ``base_url`` (``--emulate`` takes the live URL copied from the docs).
    A full URL anywhere else is a ValueError: the token is only ever sent to the base URL's
    host. So is a base URL that is not ``http(s)://host...``.
    """
    base = urlsplit(base_url)
    if "@" in base.netloc:
        raise ValueError(
            "base URL: a user or password in it (user@host) is refused; pass the token with "
            "--token or SONAR_TOKEN"
        )
    if base.query or base.fragment or "?" in base_url or "#" in base_url:
        raise ValueError(f"base URL {redact(base_url)!r}: expected no ?query or #fragment")
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise ValueError(f"{path!r}: a path with control characters")
    if any(seg in (".", "..") for seg in unquote(urlsplit(path).path).split("/")):
        raise ValueError(f"{redact(path)}: '.' and '..' are not allowed in the path")
    try:
        usable = base.scheme.lower() in ("http", "https") and bool(base.hostname) and base.port != 0
    except ValueError:  # a port that is not a number
        usable = False
    if not usable:
        raise ValueError(f"base URL {redact(base_url)!r}: expected http(s)://host[:port]/api/v1")
    base_path = base.path.rstrip("/")
    if _URL.match(path):
        given = urlsplit(path)
        try:
            origin = _origin(given.scheme, given.hostname, given.port)
        except ValueError as exc:  # a port that is not a number
            raise ValueError(f"{redact(path)}: not a valid URL") from exc
        rel = None
        for candidate in (base_url, *aliases):
            root = urlsplit(candidate)
            try:
                same = origin == _origin(root.scheme, root.hostname, root.port)
            except ValueError:  # an alias with a broken port matches nothing
                same = False
            if same:
                rel = _under(given.path, root.path.rstrip("/"))
                if rel is not None:
                    break
        if rel is None:
            shown = f"{given.scheme}://{given.netloc.rpartition('@')[2]}{given.path}"
            raise ValueError(
                f"{redact(shown)} is not under the base URL {redact(base_url)}; the token is "
                "only sent there (pass --base-url to call another API)"
            )
        query = given.query
    else:
        path, _, query = path.partition("?")
        rel = "/" + path.lstrip("/")
        for prefix in (base_path, BASE_PATH if base_path.endswith(BASE_PATH) else ""):
            stripped = _under(rel, prefix) if prefix else None
            if stripped is not None:
                rel = stripped
                break
    return base_url.rstrip("/") + rel + (f"?{query}" if query else "")
