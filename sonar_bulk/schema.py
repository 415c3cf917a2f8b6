"""Declarative sheet schemas: the one source for validation, templates, ``--help`` and the docs.

A :class:`SheetKind` lists its :class:`Column` specs. Header matching is done by
:func:`match_headers`, a pure function from the headers as written to a :class:`HeaderMap`.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

ValueType = Literal[
    "phone",
    "text",
    "message_text",
    "email",
    "url",
    "bool",
    "consent",
    "opt_out",
    "timezone",
    "zip",
    "datetime",
    "tags",
    "name",
    "property_type",
    "any",
]

PROPERTY_TYPES = ("string", "number", "boolean", "date", "datetime")

#: The words a ``bool`` cell may hold, for yes and for no. Cells are compared with case, spaces
#: and a ``_`` or ``-`` inside a word folded (:func:`value_word`): ``NEVER_SUBSCRIBED`` is
#: ``never subscribed``.
BOOL_WORDS: dict[bool, tuple[str, ...]] = {
    True: ("true", "yes", "y", "1", "t"),
    False: ("false", "no", "n", "0", "f"),
}
#: The words a ``consent`` (SMS consent) cell may hold: the ``bool`` ones, and what exports
#: write (Klaviyo's SUBSCRIBED / UNSUBSCRIBED / NEVER_SUBSCRIBED, "Opted in"...). Anything else
#: is an error, never taken for yes.
CONSENT_WORDS: dict[bool, tuple[str, ...]] = {
    True: BOOL_WORDS[True] + ("subscribed", "opted in", "opt in", "consented"),
    False: BOOL_WORDS[False]
    + (
        "unsubscribed",
        "never subscribed",
        "not subscribed",
        "opted out",
        "opt out",
        "not opted in",
        "not consented",
    ),
}
#: The consent words as people are told them (type format, issue message, docs).
CONSENT_HELP = (
    "yes/no, true/false, 1/0, subscribed/unsubscribed/never_subscribed or opted in/opted out"
)
#: What an opt-out cell may hold, as people are told it.
OPT_OUT_HELP = (
    "yes/no, true/false, 1/0 (yes: opted out), or a status: opted out/unsubscribed (opted "
    "out), opted in/subscribed (not)"
)
_WORD_JOINER = re.compile(r"(?<=\w)[-_](?=\w)")


def value_word(text: str) -> str:
    """Fold a cell for matching against :data:`BOOL_WORDS` and :data:`CONSENT_WORDS`.

    >>> value_word(" NEVER_SUBSCRIBED ")
    'never subscribed'
    >>> value_word("Opted-In"), value_word("-1")
    ('opted in', '-1')
    """
    return " ".join(_WORD_JOINER.sub(" ", text.casefold()).split())


#: How each value type is described to people (Instructions sheet, docs, --help).
TYPE_FORMATS: dict[str, str] = {
    "phone": "Phone number; E.164 (+13105550101) or national with --default-region",
    "text": "Free text",
    "message_text": "SMS text; {{column}} merge fields are filled from the same row",
    "email": "Email address",
    "url": "http(s) URL",
    "bool": "true/false, yes/no, 1/0; blank leaves it as is",
    "consent": f"SMS consent: {CONSENT_HELP}; blank leaves it as is",
    "opt_out": f"Opted out of SMS: {OPT_OUT_HELP}; blank leaves consent as it is",
    "timezone": "IANA time zone name, e.g. America/Los_Angeles",
    "zip": "ZIP or postal code, kept as text",
    "datetime": "ISO 8601 (2030-12-01T09:30:00-08:00) or a spreadsheet date-time",
    "tags": "Tag names separated by , or ;",
    "name": "Name, as text",
    "property_type": "One of: " + ", ".join(PROPERTY_TYPES) + " (blank = inferred)",
    "any": "Any text",
}


@dataclass(frozen=True)
class Column:
    """One column of a sheet kind."""

    name: str
    type: ValueType
    description: str
    example: str
    required: bool = False
    aliases: tuple[str, ...] = ()
    #: The CLI option that may give this column once for all rows (``--campaign-id``): it
    #: fills the rows left blank, and the sheet may then leave the column out.
    all_rows_option: str | None = None
    #: The ``required.missing`` message for a blank value; "<name> is required" when empty.
    missing_hint: str = ""

    @property
    def format(self) -> str:
        """Human description of the accepted format."""
        return TYPE_FORMATS[self.type]


@dataclass(frozen=True)
class RowNeed:
    """What a row must hold for one command to send it, when the kind alone does not say: the
    rows of a ``command`` that go to ``endpoint`` (those that fill ``when``; every row when
    None) need a column the endpoint finds its customer by (:meth:`columns`, read from the
    endpoint table). ``validate`` reports a row without one, and the run refuses it, with the
    same words (:meth:`refusal`)."""

    command: str
    endpoint: str
    when: str | None
    #: Why, for people: said after "<command> needs <columns>: ".
    why: str

    def columns(self, kind: SheetKind) -> tuple[str, ...]:
        """The endpoint's parameters that find the customer and are columns of ``kind``: any
        one of its ``any_of``, else all of its required ones."""
        from sonar_bulk.api.endpoints import endpoint

        ep = endpoint(self.endpoint)
        names = {c.name for c in kind.columns}
        return tuple(p for p in (ep.any_of or ep.required) if p in names)

    def applies(self, row: Mapping[str, str]) -> bool:
        """Whether the command sends ``row`` (its normalized values) to the endpoint."""
        return self.when is None or bool(row.get(self.when))

    def message(self, kind: SheetKind) -> str:
        return f"{self.command} needs {' or '.join(self.columns(kind))}: {self.why}"

    def refusal(self, kind: SheetKind, row: Mapping[str, str]) -> str | None:
        """Why the command can't send ``row``; None when it can."""
        if not self.applies(row) or any(row.get(c) for c in self.columns(kind)):
            return None
        return self.message(kind)


@dataclass(frozen=True)
class SheetKind:
    """A kind of input sheet: its columns and the rules that span columns."""

    name: str
    description: str
    columns: tuple[Column, ...]
    #: Columns whose normalized values identify a row; repeats are ``duplicate.key``.
    key: tuple[str, ...]
    #: Severity of a repeated key: an error where a repeat would send twice.
    duplicate_severity: Literal["error", "warning"]
    #: Whether ``property:<name>`` columns hold custom properties (typed per column), and
    #: unknown columns may become some (``--extra-columns``).
    allows_properties: bool = False
    #: Groups of columns of which at least one must be present and filled.
    one_of: tuple[tuple[str, ...], ...] = ()
    extra_examples: dict[str, str] = field(default_factory=dict)
    #: Said after the column list in the docs and --help.
    note: str = ""
    #: Long format: one custom property per row (``property_name``, ``value``, ``type``). Values
    #: are typed per property name over the whole sheet, and a row's key is its customer
    #: (``phone_number``, else ``email``) + ``property_name``.
    long_properties: bool = False
    #: The message-text column whose ``{{merge fields}}`` name other columns of the sheet; those
    #: columns are expected, not unknown, and each row's text is rendered and counted in SMS
    #: segments.
    merge_text: str | None = None
    #: The column saying when to send: a date-time that must be in the future.
    schedule_column: str | None = None
    #: The column whose time zone reads a ``schedule_column`` value without a UTC offset
    #: (else ``--timezone``).
    schedule_zone_column: str | None = None
    #: What a command needs of a row beyond the columns (``properties set`` sends a value by
    #: phone only): checked by ``validate`` and by the run alike.
    needs: tuple[RowNeed, ...] = ()

    def column(self, name: str) -> Column:
        """The column called ``name``; KeyError when the kind has none."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the columns every row must fill."""
        return tuple(c.name for c in self.columns if c.required)


#: The phone in every template's example row: 555-0100 is reserved for fiction, and validate
#: reports a row that is still the template's example (``row.example``), so it is never sent.
EXAMPLE_PHONE = "+13105550100"

PHONE_ALIASES = (
    "phone",
    "phone number",
    "phone no",
    "mobile",
    "mobile number",
    "mobile phone",
    "cell",
    "cell phone",
    "cellphone",
    "telephone",
    "tel",
    "msisdn",
    # the mobile, and the fallbacks of exports with several phone columns (see PHONE_RANKS)
    "mobile phone number",
    "cell phone number",
    "sms phone",
    "sms number",
    "phone mobile",
    "business phone",
    "work phone",
    "home phone",
    "other phone",
    "company phone",
    "default address phone",
    "billing address phone",
    "shipping address phone",
    "address phone",
    "primary phone",
    "main phone",
)
#: Which of several phone columns of one sheet gives a row its SMS phone, best first: a mobile
#: (mobile, cell, SMS), then the person's plain phone, then any other (an address's, work,
#: home), each in sheet order. A later column is used only where the earlier ones are blank.
PHONE_RANKS = (
    ("mobile", "cell", "sms", "msisdn", "iphone"),
    ("phone", "telephone", "tel", "number", "no", "primary", "main"),
)
#: Google Contacts' labelled pairs: ``Phone 1 - Label`` (``Phone 1 - Type`` in its older
#: format) says what ``Phone 1 - Value`` is (``Mobile``, ``* Work``: starred is the primary),
#: and so on for ``Phone 2``, ``E-mail 1``... A pair's value feeds the kind's phone or email
#: field, ranked row by row by its label (see :func:`label_rank`); the label column is read
#: for that, and is no unknown column.
_PAIR_RE = re.compile(
    r"^\s*(?P<what>phone|e-?mail)\s*(?P<n>\d+)\s*-\s*(?P<part>label|type|value)\s*$",
    re.IGNORECASE,
)
#: Labels of a number that is never texted: a fax or a pager.
NEVER_TEXTED = ("fax", "pager")
#: The ``--map`` target of a country column: it sets the region of the row's phones.
COUNTRY_FIELD = "country"
#: Country columns of exports (see :mod:`sonar_bulk.countries` for what their cells may
#: hold): Mailchimp's ``CC``, HubSpot's ``Country/Region``, Shopify's ``Default Address Country
#: Code``, Outlook's ``Home Country/Region``, Salesforce's ``Mailing Country``, Google's
#: ``Address 1 - Country``. The first group is the person's own country; with several country
#: columns, a row's region comes from the first that is not blank, that group first, each in
#: sheet order.
COUNTRY_ALIASES = (
    ("country", "cc", "country code", "country region", "country name", "country iso"),
    (
        "default address country code",
        "default address country",
        "address country",
        "address country code",
        "billing country",
        "billing country code",
        "billing address country",
        "billing address country code",
        "shipping country",
        "shipping country code",
        "shipping address country",
        "shipping address country code",
        "mailing country",
        "home country",
        "home country region",
        "business country",
        "business country region",
        "other country",
        "other country region",
        "address 1 country",
    ),
)
EMAIL_ALIASES = ("e-mail", "email address", "e-mail address", "mail")
#: SMS-consent columns of exports: Shopify's "Accepts SMS Marketing", Klaviyo's "SMS Marketing
#: Consent", and generic ones. None mentions email: "Accepts Email Marketing" (Shopify), "Email
#: Marketing Consent" (Klaviyo) or "Email opt in" is consent to email, never to SMS, and is not
#: imported (headers match exactly once folded, never by resemblance).
SMS_CONSENT_ALIASES = (
    "subscription",
    "opted in",
    "opt in",
    "sms opt in",
    "sms opted in",
    "opted in to sms",
    "opted into sms",
    "opt in to sms",
    "sms consent",
    "sms marketing consent",
    "accepts sms marketing",
    "accepts marketing sms",
    "accepts sms",
    "sms marketing",
    "sms subscribed",
    "subscribed to sms",
    "sms subscription",
)

#: Columns that say the opposite of consent: a yes means "never text" (Salesforce's Do Not
#: Call, "SMS Opt Out"...). Read as the ``opted_out`` field; a yes makes the row's consent no.
SMS_OPT_OUT_ALIASES = (
    "do not call",
    "do not text",
    "do not sms",
    "do not contact",
    "sms opt out",
    "sms opted out",
    "opted out of sms",
    "opt out of sms",
    "sms unsubscribed",
    "unsubscribed from sms",
    "has opted out of sms",
    "text opt out",
    "mobile opt out",
    "do not call y n",
    "do not text y n",
    "sms opt out y n",
    "dnc",
    "sms opt out status",
    "opted out of texts",
)
#: In a send sheet (messages, campaign recipients) a general opt-out column counts too: it can
#: only keep a row from being sent (a customers sheet would send it to Sonar as subscribed).
SEND_OPT_OUT_ALIASES = (
    *SMS_OPT_OUT_ALIASES,
    "opt out",
    "opted out",
    "unsubscribed",
    "do not message",
)

#: An opt-out column (see :data:`SMS_OPT_OUT_ALIASES`), in every sheet that has consent.
OPT_OUT = Column(
    "opted_out",
    "opt_out",
    "An opt-out column (Salesforce's Do Not Call, SMS Opt Out): a yes means no consent to SMS "
    "(never texted; a customers upsert sends subscribed=false)",
    "false",
    aliases=SMS_OPT_OUT_ALIASES,
)

#: A send sheet's opt-out column: a yes keeps the row from being sent.
SEND_OPT_OUT = replace(OPT_OUT, aliases=SEND_OPT_OUT_ALIASES)

#: A send sheet's SMS-consent column (an export's): a no keeps the row from being sent.
SEND_CONSENT = Column(
    "subscribed",
    "consent",
    "Consent to SMS (as exported); a no keeps the row from being sent",
    "true",
    aliases=SMS_CONSENT_ALIASES,
)

CUSTOMERS = SheetKind(
    name="customers",
    description="Customers to add or update (upsert keyed by phone number).",
    columns=(
        Column(
            "phone_number", "phone", "Customer phone; the key", EXAMPLE_PHONE, True, PHONE_ALIASES
        ),
        Column(
            "first_name",
            "name",
            "First name",
            "Ana",
            aliases=("first name", "firstname", "first", "given name", "fname"),
        ),
        Column(
            "last_name",
            "name",
            "Last name",
            "Lopez",
            aliases=("last name", "lastname", "last", "surname", "family name", "lname"),
        ),
        Column("email", "email", "Email address", "ana@example.com", aliases=EMAIL_ALIASES),
        Column(
            "picture_url",
            "url",
            "Picture URL",
            "https://example.com/ana.png",
            aliases=("picture", "photo", "photo url", "avatar", "avatar url"),
        ),
        Column(
            "subscribed",
            "consent",
            "Consent to SMS; false unsubscribes (an email-consent column never counts)",
            "true",
            aliases=SMS_CONSENT_ALIASES,
        ),
        OPT_OUT,
        Column(
            "assignee_email",
            "email",
            "Email of the Sonar user the customer is assigned to",
            "rep@yourcompany.com",
            aliases=("assignee", "assigned to", "owner email", "agent email"),
        ),
        Column(
            "zip_code",
            "zip",
            "ZIP / postal code",
            "90210",
            aliases=(
                "zip",
                "zipcode",
                "postal code",
                "postcode",
                "zip postal code",
                # the person's (first) address of exports: Shopify, Salesforce, Outlook, Google
                "default address zip",
                "address zip",
                "mailing zip postal code",
                "mailing postal code",
                "home postal code",
                "address 1 postal code",
            ),
        ),
        Column(
            "timezone",
            "timezone",
            "Customer time zone",
            "America/Los_Angeles",
            aliases=("time zone", "tz"),
        ),
    ),
    key=("phone_number",),
    duplicate_severity="warning",
    allows_properties=True,
    extra_examples={"property:plan": "gold"},
    note="plus `property:<name>[:<type>]` custom property columns",
)

PROPERTIES = SheetKind(
    name="properties",
    description="Customer properties in long format: one property of one customer per row.",
    columns=(
        Column(
            "phone_number",
            "phone",
            "Customer phone (or give email)",
            EXAMPLE_PHONE,
            aliases=PHONE_ALIASES,
        ),
        Column(
            "email",
            "email",
            "Customer email (or give phone_number)",
            "ana@example.com",
            aliases=EMAIL_ALIASES,
        ),
        Column(
            "property_name",
            "name",
            "Property name",
            "plan",
            True,
            ("property", "property name", "key", "name"),
        ),
        Column(
            "value",
            "any",
            "Property value (blank deletes it)",
            "gold",
            aliases=("property value", "val"),
        ),
        Column(
            "type",
            "property_type",
            "Property type",
            "string",
            aliases=("property type", "data type"),
        ),
    ),
    key=("phone_number", "email", "property_name"),
    duplicate_severity="warning",
    one_of=(("phone_number", "email"),),
    long_properties=True,
    needs=(
        RowNeed(
            "properties set",
            "upsert_customer",
            "value",
            "Sonar sets a property through the customer upsert, which finds the customer by "
            "phone; email alone can only delete it (a blank value, or properties delete)",
        ),
    ),
)

MESSAGES = SheetKind(
    name="messages",
    description="One SMS/MMS per row. Extra columns can be used as {{merge fields}}.",
    columns=(
        Column(
            "to",
            "phone",
            "Recipient phone",
            EXAMPLE_PHONE,
            True,
            PHONE_ALIASES + ("recipient", "to phone"),
        ),
        Column(
            "text",
            "message_text",
            "Message text (required even with media_url)",
            "Hi {{first_name}}, your order shipped!",
            True,
            ("message", "message text", "body", "sms", "sms text"),
            all_rows_option="--text",
        ),
        Column(
            "media_url",
            "url",
            "Image to attach (MMS)",
            "https://example.com/promo.jpg",
            aliases=("media", "image", "image url", "mms url"),
        ),
        Column(
            "tag_names",
            "tags",
            "Tags for the message",
            "promo; fall-2026",
            aliases=("tags", "tag names", "tag"),
        ),
        SEND_CONSENT,
        SEND_OPT_OUT,
        Column(
            "timezone",
            "timezone",
            "Recipient's time zone, for --quiet-hours (else the number's)",
            "America/Los_Angeles",
            aliases=("time zone", "tz"),
        ),
    ),
    key=("to", "text"),
    duplicate_severity="error",
    extra_examples={"first_name": "Ana"},
    note="plus any column used as a `{{merge field}}`",
    merge_text="text",
)

CAMPAIGN_RECIPIENTS = SheetKind(
    name="campaign_recipients",
    description="Recipients of a Sonar campaign, optionally scheduled.",
    columns=(
        Column(
            "to", "phone", "Recipient phone", EXAMPLE_PHONE, True, PHONE_ALIASES + ("recipient",)
        ),
        Column(
            "campaign_id",
            "text",
            "Campaign id or slug (or give --campaign-id)",
            "fall_sale_2026",
            True,
            ("campaign", "campaign slug", "campaign id"),
            all_rows_option="--campaign-id",
            missing_hint="give a campaign id on this row, or --campaign-id for all rows",
        ),
        Column(
            "send_at",
            "datetime",
            "When to send; blank = now; must be in the future",
            "2030-12-01T09:30:00-08:00",
            aliases=("send time", "scheduled at", "schedule", "send date", "scheduled for"),
            all_rows_option="--send-at",
        ),
        Column(
            "timezone",
            "timezone",
            "Time zone for a send_at without an offset",
            "America/Los_Angeles",
            aliases=("time zone", "tz"),
        ),
        SEND_CONSENT,
        SEND_OPT_OUT,
    ),
    key=("to", "campaign_id"),
    duplicate_severity="error",
    note="`campaign_id` may instead be given once with `--campaign-id`",
    schedule_column="send_at",
    schedule_zone_column="timezone",
)

MESSAGE_TAGS = SheetKind(
    name="message_tags",
    description="Tags to add to messages already sent.",
    columns=(
        Column(
            "external_message_id",
            "text",
            "The message's external id",
            "EXAMPLEp_g8gkZTfOaWrUXmQ==",
            True,
            # a messages send results file: its sonar__external_message_id column
            ("message id", "external id", "message external id", "sonar__external_message_id"),
        ),
        Column(
            "tag_name",
            "name",
            "Tag to add (or give --tag)",
            "vip",
            True,
            ("tag", "tag name"),
            all_rows_option="--tag",
            missing_hint="give a tag on this row, or --tag for all rows",
        ),
    ),
    key=("external_message_id", "tag_name"),
    duplicate_severity="warning",
    note="a `messages send` results file works too (its `sonar__external_message_id`); "
    "`tag_name` may instead be given once with `--tag`",
)

CUSTOMER_KEYS = SheetKind(
    name="customer_keys",
    description="Customers to look up, close or unassign, by phone number.",
    columns=(
        Column("phone_number", "phone", "Customer phone", EXAMPLE_PHONE, True, PHONE_ALIASES),
    ),
    key=("phone_number",),
    duplicate_severity="warning",
    note="for get / close / unassign",
)

KINDS: dict[str, SheetKind] = {
    k.name: k
    for k in (CUSTOMERS, PROPERTIES, MESSAGES, CAMPAIGN_RECIPIENTS, MESSAGE_TAGS, CUSTOMER_KEYS)
}


def kind_columns(kind: SheetKind) -> str:
    """A kind's columns in one line of Markdown, ``*`` marking required ones."""
    parts: list[str] = []
    grouped = {name for group in kind.one_of for name in group}
    for col in kind.columns:
        if col.name in grouped:
            group = next(g for g in kind.one_of if col.name in g)
            if col.name == group[0]:
                parts.append(" or ".join(f"`{g}`" for g in group) + "*")
            continue
        parts.append(f"`{col.name}`" + ("*" if col.required else ""))
    text = ", ".join(parts)
    return f"{text}; {kind.note}" if kind.note else text


def kinds_table() -> str:
    """The table of sheet kinds in sonar_bulk/docs/sheets.md, in Markdown."""
    lines = ["| kind | columns |", "|---|---|"]
    lines += [f"| `{k.name}` | {kind_columns(k)} |" for k in KINDS.values()]
    return "\n".join(lines)


def _words(text: str) -> list[str]:
    return [header_key(w) for w in re.split(r"[\W_]+", text) if header_key(w)]


def _phone_rank(header: str) -> int:
    """0 for a mobile column, 1 for a plain phone, 2 for any other (see :data:`PHONE_RANKS`)."""
    words = _words(header)
    if any(w.startswith(PHONE_RANKS[0]) for w in words):
        return 0
    return 1 if words and all(w in PHONE_RANKS[1] for w in words) else 2


def column_rank(header: str, phone: bool) -> int:
    """Where a column of several feeding one field stands, lower first, ties in sheet order:
    a phone column by :func:`_phone_rank`; any other column alike. (A labelled pair's value
    stands where its label puts it, row by row: :func:`label_rank`.)"""
    return 2 * _phone_rank(header) + 1 if phone else 1


def label_rank(label: str, phone: bool) -> int | None:
    """Where the value of a labelled pair stands on its row (see :func:`column_rank`): a phone
    labelled mobile or cell first, then a plain one (``Main``, no label), then any other
    (``Work``, ``Home``, ``Google Voice``, a label of the user's), a starred one (``* Work``,
    Google's primary) before the others of its rank. None for a fax or a pager: never texted.

    >>> label_rank("* Mobile", True), label_rank("Mobile", True), label_rank("Main", True)
    (0, 1, 3)
    >>> label_rank("Work", True), label_rank("Work Fax", True), label_rank("* Home", False)
    (5, None, 0)
    """
    text = label.strip()
    starred = text.startswith("*")
    words = _words(text)
    base = 0
    if phone:
        if any(w.startswith(NEVER_TEXTED) or w.endswith(NEVER_TEXTED) for w in words):
            return None
        if any(w.startswith(PHONE_RANKS[0]) for w in words):
            base = 0
        elif all(w in PHONE_RANKS[1] for w in words):
            base = 1
        else:
            base = 2
    return 2 * base + (0 if starred else 1)


def labelled_pair(header: str) -> tuple[str, str, bool] | None:
    """A Google Contacts pair header as (``phone`` or ``email``, its number, whether it is the
    value, not the label); None for any other header.

    >>> labelled_pair("Phone 2 - Value"), labelled_pair("E-mail 1 - Type")
    (('phone', '2', True), ('email', '1', False))
    """
    m = _PAIR_RE.match(header.replace("\ufeff", ""))
    if m is None:
        return None
    what = "phone" if m.group("what").lower() == "phone" else "email"
    return what, m.group("n"), m.group("part").lower() == "value"


def country_rank(header: str) -> int | None:
    """0 for a column of the person's country, 1 for an address's (see
    :data:`COUNTRY_ALIASES`), None for a column that is not a country column."""
    return _country_keys().get(header_key(header))


@functools.cache
def _country_keys() -> dict[str, int]:
    return {header_key(a): rank for rank, group in enumerate(COUNTRY_ALIASES) for a in group}


def header_key(text: str) -> str:
    """Fold a header for matching: no BOM, case, accents, spaces or punctuation.

    >>> header_key("\\ufeffE-Mail Address ")
    'emailaddress'
    """
    text = unicodedata.normalize("NFKD", text.replace("\ufeff", ""))
    return "".join(ch for ch in text.casefold() if ch.isalnum())


#: Columns sonar-bulk adds to the sheets it writes. Reading a sheet ignores them, except
#: ``sonar__extra_N``: cells that stood beyond the last header of the original file, which must
#: be moved or cleared before the row can be sent. Any other ``sonar__...`` header is the user's.
ROW_COLUMN = "sonar__row"
ISSUES_COLUMN = "sonar__issues"
EXTRA_COLUMN_PREFIX = "sonar__extra_"
#: The columns a results file adds after the user's (``sonar__<name>``), in order; reading a
#: sheet ignores them, so a results or failed file can be fed back in.
RESULT_COLUMNS = (
    "sonar__status",
    "sonar__http_status",
    "sonar__error",
    "sonar__attempts",
    "sonar__finished_at",
    "sonar__external_message_id",
    "sonar__send_at",
    "sonar__timezone",
    "sonar__local_time",
    "sonar__request",
    "sonar__change",
    "sonar__text",
    "sonar__segments",
    "sonar__encoding",
    "sonar__settled_by",
    "sonar__outbound_confirmed",
    "sonar__replied",
    "sonar__reply_text",
    "sonar__unsubscribed_after_send",
    "sonar__events",
    "sonar__customer_created",
    "sonar__subscription",
)
TOOL_COLUMNS = frozenset({ROW_COLUMN, ISSUES_COLUMN, *RESULT_COLUMNS})
_EXTRA_RE = re.compile(re.escape(EXTRA_COLUMN_PREFIX) + r"\d+")


def is_tool_column(header: str) -> bool:
    """Whether ``header`` is a column sonar-bulk adds (``sonar__row``, ``sonar__extra_1``...)."""
    name = header.strip().casefold()
    return name in TOOL_COLUMNS or is_extra_column(name)


def is_extra_column(header: str) -> bool:
    """Whether ``header`` holds cells from beyond the last header (``sonar__extra_N``)."""
    return _EXTRA_RE.fullmatch(header.strip().casefold()) is not None


_PROPERTY_RE = re.compile(
    r"^\s*property\s*:\s*(?P<name>[^:]+?)\s*(?::\s*(?P<type>[A-Za-z]+)\s*)?$", re.IGNORECASE
)


@dataclass(frozen=True)
class PropertyColumn:
    """A column holding a custom property (``property:plan`` or ``property:plan:number``)."""

    index: int
    header: str
    name: str
    type: str | None


@dataclass(frozen=True)
class HeaderProblem:
    """A header-level issue (reported on row 1)."""

    index: int | None
    header: str
    code: str
    severity: Literal["error", "warning"]
    message: str
    #: The field or ``property:<name>`` the column was meant for (a ``column.duplicate``).
    target: str | None = None


@dataclass
class HeaderMap:
    """How the headers of one sheet map onto a kind's columns."""

    fields: dict[str, int] = field(default_factory=dict)
    properties: list[PropertyColumn] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    problems: list[HeaderProblem] = field(default_factory=list)
    #: Columns sonar-bulk added to a sheet it wrote (ignored) ...
    tool: list[int] = field(default_factory=list)
    #: ... and among them the ``sonar__extra_N`` columns (checked: they must be empty).
    extra: list[int] = field(default_factory=list)
    #: Columns the user chose to leave out (``--map "Notes=skip"``): read, never sent.
    skipped: list[int] = field(default_factory=list)
    #: A phone field several columns feed (an export's mobile, phone and address phone), in
    #: the order a row takes the first one that is not blank (see :data:`PHONE_RANKS`); its
    #: first one is ``fields[name]``.
    alternates: dict[str, list[int]] = field(default_factory=dict)
    #: Labelled pairs (Google Contacts): a value column feeding a field → its label column.
    labels: dict[int, int] = field(default_factory=dict)
    #: Country columns (see :data:`COUNTRY_ALIASES`), best first: a row's phones are read in
    #: the region of the first that is not blank.
    countries: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ColumnRole:
    """What one source column does, read off the :class:`HeaderMap` validation uses.

    ``role`` is ``field`` (it feeds ``target``), ``alternate`` (it feeds ``target`` where the
    columns in ``before`` are blank, or by its label: ``label`` set), ``label`` (the label
    column of the pair value in ``before``), ``country`` (the region of the row's phones,
    where the columns in ``before`` are blank), ``property`` (``target`` is its name,
    ``type`` its type), ``skip`` (left out by choice), ``conflict`` (a second column for
    ``target``: every row is invalid), ``tool`` (a column sonar-bulk wrote) or ``unknown``
    (not imported)."""

    role: str
    target: str = ""
    before: tuple[int, ...] = ()
    type: str | None = None
    label: int | None = None


def column_roles(hmap: HeaderMap, count: int) -> list[ColumnRole]:
    """Per column of a sheet of ``count`` columns, its :class:`ColumnRole` in ``hmap``."""
    roles = [ColumnRole("unknown")] * count
    for name, index in hmap.fields.items():
        roles[index] = ColumnRole("field", name, label=hmap.labels.get(index))
    for name, indexes in hmap.alternates.items():
        for position, index in enumerate(indexes):
            role = "field" if position == 0 else "alternate"
            roles[index] = ColumnRole(
                role, name, tuple(indexes[:position]), label=hmap.labels.get(index)
            )
    for value, label in hmap.labels.items():
        roles[label] = ColumnRole("label", roles[value].target, (value,))
    for position, index in enumerate(hmap.countries):
        roles[index] = ColumnRole("country", COUNTRY_FIELD, tuple(hmap.countries[:position]))
    for prop in hmap.properties:
        roles[prop.index] = ColumnRole("property", prop.name, type=prop.type)
    for index in hmap.skipped:
        roles[index] = ColumnRole("skip")
    for index in hmap.tool:
        roles[index] = ColumnRole("tool")
    for problem in hmap.problems:
        if problem.index is not None and problem.code == "column.duplicate" and problem.target:
            roles[problem.index] = ColumnRole("conflict", problem.target)
    return roles


#: The ``--map`` target that leaves a column out.
SKIP = "skip"


def parse_map_option(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse ``--map "Source Header=field"`` values into {source header: field}.

    Raises ValueError with a one-line message on a value without ``=``.
    """
    out: dict[str, str] = {}
    for raw in values:
        source, sep, target = raw.rpartition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f'--map {raw!r}: expected "Source Header=field"')
        earlier = next((t for s, t in out.items() if header_key(s) == header_key(source)), None)
        if earlier is not None and earlier != target.strip():
            raise ValueError(
                f"--map {source.strip()!r} is mapped twice ({earlier} and {target.strip()}); "
                "keep one"
            )
        out[source.strip()] = target.strip()
    return out


def guess_kind(headers: list[str]) -> str:
    """The kind whose columns the headers fit best: every required column found (a column
    an option can fill for all rows may be missing), then the most required columns found,
    then the most columns matched. Customers when nothing fits."""
    best: tuple[int, int, int, str] = (0, 0, 0, "customers")
    for kind in KINDS.values():
        found = match_headers(kind, headers).fields
        needed = [c.name for c in kind.columns if c.required and not c.all_rows_option]
        complete = all(n in found for n in needed) and all(
            any(g in found for g in group) for group in kind.one_of
        )
        # a kind whose every required column is there, then the one that needs more of
        # what is there (Phone + Message is a messages sheet, not customers with a stray
        # column), then the most columns matched
        required = sum(1 for c in kind.columns if c.required and c.name in found)
        score = (int(complete), required, len(found), kind.name)
        if score[:3] > best[:3]:
            best = score
    return best[3]


def closest_first(word: str, choices: list[str]) -> list[str]:
    """``choices`` ordered by how closely they resemble ``word`` (as headers match)."""
    key = header_key(word)
    return sorted(
        choices,
        key=lambda c: -difflib.SequenceMatcher(None, key, header_key(c)).ratio(),
    )


def match_headers(
    kind: SheetKind,
    headers: list[str],
    *,
    mapping: dict[str, str] | None = None,
    extra_columns: str = "warn",
) -> HeaderMap:
    """Map headers as written onto ``kind``'s columns.

    ``mapping`` comes from :func:`parse_map_option` and wins over aliases. ``extra_columns`` is
    ``warn`` (unknown columns reported and ignored), ``properties`` (unknown columns become
    custom properties) or ``ignore``. Raises ValueError when ``mapping`` names a field the
    kind does not have.

    Several columns may feed one field: the phone columns of an export (a mobile, a phone, an
    address's phone) and Google Contacts' labelled pairs (``Phone 1 - Value`` with its ``Phone
    1 - Label``, ``E-mail 1 - Value``...); see :attr:`HeaderMap.alternates`. In a kind with a
    phone, a country column (:data:`COUNTRY_ALIASES`, or ``--map "Land=country"``) sets the
    region of the row's phones (:attr:`HeaderMap.countries`).
    """
    phone_field = next((c.name for c in kind.columns if c.type == "phone"), None)
    names = {c.name for c in kind.columns} | {SKIP}
    if phone_field is not None:
        names.add(COUNTRY_FIELD)
    for wanted in (mapping or {}).values():
        is_property = wanted.lower().startswith("property:")
        if is_property and kind.allows_properties and not _PROPERTY_RE.match(wanted):
            raise ValueError(
                f"--map target {wanted!r}: write property:<name> or property:<name>:<type>"
            )
        if wanted not in names and not (is_property and kind.allows_properties):
            more = ", property:<name>[:<type>]" if kind.allows_properties else ""
            raise ValueError(
                f"--map target {wanted!r} is not a {kind.name} column "
                f"(columns: {', '.join(sorted(names - {SKIP}))}{more}, or {SKIP})"
            )
    original_mapping = mapping
    mapping = {header_key(k): v for k, v in (mapping or {}).items()}
    explicit = {v for k, v in mapping.items() if k in {header_key(h) for h in headers}}
    lookup: dict[str, str] = {}
    for col in kind.columns:
        for alias in (col.name, *col.aliases):
            lookup.setdefault(header_key(alias), col.name)
    # Google Contacts' pairs: value column → the field it feeds, and → its label column
    email_field = "email" if any(c.name == "email" for c in kind.columns) else None
    pair_field: dict[int, str] = {}
    pair_label: dict[int, int] = {}
    label_columns: set[int] = set()
    pairs = {i: labelled_pair(h) for i, h in enumerate(headers)}
    for index, pair in pairs.items():
        feeds = phone_field if pair and pair[0] == "phone" else email_field
        if pair is None or feeds is None:
            continue
        if pair[2]:
            pair_field[index] = feeds
            label = next((i for i, p in pairs.items() if p == (pair[0], pair[1], False)), None)
            if label is not None:
                pair_label[index] = label
        else:
            label_columns.add(index)
    result = HeaderMap()
    present = {header_key(h) for h in headers}
    for source, wanted in (original_mapping or {}).items():
        if header_key(source) not in present:
            named = [h for h in headers if h.strip() and not is_tool_column(h)]
            listing = ", ".join(repr(h) for h in closest_first(source, named)[:12])
            result.problems.append(
                HeaderProblem(
                    None,
                    source,
                    "map.unknown_header",
                    "error",
                    f"--map {source}={wanted}: the sheet has no header {source!r} (headers, "
                    f"closest first: {listing})",
                )
            )
    # a column sonar-bulk wrote that a kind reads (messages tag: a results file's message ids)
    tool_aliases = {header_key(a) for c in kind.columns for a in c.aliases if is_tool_column(a)}
    for index, header in enumerate(headers):
        if is_tool_column(header) and header_key(header) not in tool_aliases:
            result.tool.append(index)
            if is_extra_column(header):
                result.extra.append(index)
            continue
        key = header_key(header)
        if not key:
            if header.strip() == "":
                continue  # an unnamed column: checked for stray values by the validator
        target = mapping.get(key)
        prop = None
        if target == SKIP:
            result.skipped.append(index)
            continue
        if target == COUNTRY_FIELD:
            result.countries.append(index)
            continue
        if target is not None and target.lower().startswith("property:"):
            prop = _PROPERTY_RE.match(target)
        elif target is None:
            prop = _PROPERTY_RE.match(header.replace("\ufeff", ""))
            if prop is None:
                if index in label_columns:
                    continue  # read with its value column (or unknown: see below)
                if (
                    phone_field is not None
                    and COUNTRY_FIELD not in explicit
                    and country_rank(header) is not None
                ):
                    result.countries.append(index)
                    continue
                target = lookup.get(key) or pair_field.get(index)
                if target in explicit:
                    target = None  # --map gave this field another column: the alias yields
        if prop is not None:
            if not kind.allows_properties:
                result.unknown.append(index)
                continue
            ptype = prop.group("type")
            if ptype is not None and ptype.lower() not in PROPERTY_TYPES:
                result.problems.append(
                    HeaderProblem(
                        index,
                        header,
                        "column.property_type",
                        "error",
                        f"unknown property type {ptype!r}; use one of {', '.join(PROPERTY_TYPES)}",
                    )
                )
                continue
            result.properties.append(
                PropertyColumn(index, header, prop.group("name"), ptype.lower() if ptype else None)
            )
            continue
        if target is None:
            if kind.allows_properties and extra_columns == "properties":
                result.properties.append(PropertyColumn(index, header, header.strip(), None))
            else:
                result.unknown.append(index)
            continue
        if (
            target in result.fields
            and target not in explicit
            and (
                kind.column(target).type == "phone"
                or index in pair_field
                or result.fields[target] in pair_field
            )
        ):
            result.alternates.setdefault(target, [result.fields[target]]).append(index)
            continue
        if target in result.fields:
            first = headers[result.fields[target]]
            result.problems.append(
                HeaderProblem(
                    index,
                    header,
                    "column.duplicate",
                    "error",
                    f"both {first!r} and {header!r} map to {target}; remove one or use --map",
                    target,
                )
            )
            continue
        result.fields[target] = index
    for name, indexes in list(result.alternates.items()):
        exact = [i for i in indexes if headers[i].replace("\ufeff", "").strip().casefold() == name]
        if exact:  # a column named as the field (to, phone_number) is the one meant: not others
            result.fields[name] = exact[0]
            result.unknown += [i for i in indexes if i != exact[0]]
            del result.alternates[name]
            continue
        phone = kind.column(name).type == "phone"
        indexes.sort(key=lambda i: (0 if i in pair_field else column_rank(headers[i], phone), i))
        result.fields[name] = indexes[0]
    used = set(result.fields.values()) | {i for idx in result.alternates.values() for i in idx}
    result.labels = {v: label for v, label in pair_label.items() if v in used}
    for index in sorted(label_columns - set(result.labels.values())):  # a label left alone
        if kind.allows_properties and extra_columns == "properties":
            result.properties.append(PropertyColumn(index, headers[index], headers[index], None))
        else:
            result.unknown.append(index)
    result.unknown.sort()
    result.properties.sort(key=lambda p: p.index)
    result.countries.sort(key=lambda i: (country_rank(headers[i]) or 0, i))
    seen_props: dict[str, str] = {}
    for p in result.properties:
        if p.name in seen_props:
            result.problems.append(
                HeaderProblem(
                    p.index,
                    p.header,
                    "column.duplicate",
                    "error",
                    f"property {p.name!r} is given by both {seen_props[p.name]!r} and {p.header!r}",
                    f"property:{p.name}",
                )
            )
        seen_props[p.name] = p.header
    return result
