"""Pure normalizers for cell text: booleans, dates, time zones, property values (phones
are :mod:`sonar_bulk.phones`, emails :mod:`sonar_bulk.emails`, SMS text :mod:`sonar_bulk.sms`).

Scalar functions (``parse_bool``, ``parse_datetime``...) hold the rules. The column helpers
apply them to a whole column fast: vectorized Arrow kernels where a rule is a pattern, and each
*distinct* value normalized once otherwise (:func:`map_distinct`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from sonar_bulk.schema import BOOL_WORDS, CONSENT_HELP, CONSENT_WORDS, OPT_OUT_HELP, value_word
from sonar_bulk.sms import sms_segments as sms_segments  # engine/bulk.py: nz.sms_segments
from sonar_bulk.words import plural as plural  # nz.plural in the reports

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Column helpers


def to_arrow(values: pa.Array | pa.ChunkedArray | Iterable[str]) -> pa.Array:
    """A column as one contiguous Arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(list(values), pa.large_string())


def distinct(values: pa.Array) -> tuple[list[str], np.ndarray]:
    """The distinct values of a column and, per row, the index of its value among them."""
    if len(values) == 0:
        return [], np.empty(0, dtype=np.int64)
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def map_distinct(values: pa.Array, func: Callable[[str], T]) -> np.ndarray:
    """Apply ``func`` once per distinct value and broadcast the results to every row."""
    uniques, indices = distinct(values)
    results = np.empty(len(uniques), dtype=object)
    results[:] = [func(v) for v in uniques]
    out: np.ndarray = results[indices]
    return out


def map_distinct_text(
    values: pa.Array, func: Callable[[str], str | None]
) -> tuple[pa.Array, np.ndarray]:
    """Apply a text→text ``func`` once per distinct value; None marks a failure.

    Returns the mapped column ('' where ``func`` failed) and a per-row failure mask, without
    materializing a Python object per row.
    """
    uniques, indices = distinct(values)
    mapped = [func(v) for v in uniques]
    failed = np.asarray([m is None for m in mapped], dtype=bool)
    table = pa.array([m or "" for m in mapped], pa.large_string())
    return pc.take(table, pa.array(indices)), failed[indices]


def first_occurrence(*keys: pa.Array, e164: tuple[bool, ...] = ()) -> np.ndarray:
    """For each row, the position of the first row with the same key tuple.

    ``e164[i]`` says key ``i`` holds only E.164 numbers, compared as integers (much cheaper
    than hashing strings).
    """
    n = len(keys[0])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    combined = np.zeros(n, dtype=np.int64)
    for i, key in enumerate(keys):
        if i < len(e164) and e164[i]:
            idx = pc.cast(pc.utf8_slice_codeunits(key, 1), pa.int64()).to_numpy()
            if len(keys) == 1:
                combined = idx
                break
            _, idx = np.unique(idx, return_inverse=True)
            size = int(idx.max()) + 1
        else:
            encoded = pc.dictionary_encode(key)
            if isinstance(encoded, pa.ChunkedArray):
                encoded = encoded.combine_chunks()
            idx = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            size = max(len(encoded.dictionary), 1)
        combined = combined * size + idx
    order = np.argsort(combined)
    sorted_keys = combined[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group_first = np.minimum.reduceat(order, np.flatnonzero(starts))
    group_of = np.cumsum(starts) - 1
    result = np.empty(n, dtype=np.int64)
    result[order] = group_first[group_of]
    return result


def lit(text: str) -> pa.Scalar:
    """A large_string scalar, the type every column here uses."""
    return pa.scalar(text, pa.large_string())


def strip(values: pa.Array) -> pa.Array:
    """Trim surrounding whitespace, including non-breaking spaces pasted from the web."""
    return pc.utf8_trim(values, characters=_SPACES)


def blank(values: pa.Array) -> np.ndarray:
    """Per row, whether the value is '' (of a stripped column: blank)."""
    out: np.ndarray = pc.equal(values, "").to_numpy(zero_copy_only=False)
    return out


_SPACES = " \t\r\n\v\f\u00a0\u2007\u202f\u3000\u200b\ufeff"


# ---------------------------------------------------------------------------------------------
# Booleans

TRUE_WORDS = frozenset(BOOL_WORDS[True])
FALSE_WORDS = frozenset(BOOL_WORDS[False])
CONSENT_TRUE_WORDS = frozenset(CONSENT_WORDS[True])
CONSENT_FALSE_WORDS = frozenset(CONSENT_WORDS[False])
#: What each yes/no word says, per kind of cell: a bool, an SMS consent, an opt-out (a
#: yes/no word says whether the person opted out; a consent status word, the opposite of
#: what it says of consent).
_BOOL = {w: v for v, words in BOOL_WORDS.items() for w in words}
_CONSENT = {w: v for v, words in CONSENT_WORDS.items() for w in words}
_OPT_OUT = {**{w: not v for w, v in _CONSENT.items()}, **_BOOL}


def _word_value(text: str, table: dict[str, bool], what: str) -> bool | None:
    """The value ``table`` gives the word of ``text``; None when blank; ValueError, naming
    ``what`` the cell should be, for any other word (never a guess)."""
    word = value_word(text)
    if word == "":
        return None
    try:
        return table[word]
    except KeyError:
        raise ValueError(f"{text!r} is not {what}") from None


def parse_bool(text: str) -> bool | None:
    """``true/yes/1/y/t`` → True, ``false/no/0/n/f`` → False; ValueError otherwise.

    Blank is None (leave as is). Case, spaces and ``_`` or ``-`` inside a word are ignored.
    """
    return _word_value(text, _BOOL, "true/false, yes/no or 1/0")


def parse_consent(text: str) -> bool | None:
    """An SMS-consent cell: the :func:`parse_bool` words, and ``subscribed`` / ``opted in``
    → True, ``unsubscribed`` / ``never_subscribed`` / ``opted out``... → False (the words are
    :data:`sonar_bulk.schema.CONSENT_WORDS`); ValueError otherwise, never a guess.

    Blank is None (leave as is). Case, spaces and ``_`` or ``-`` inside a word are ignored.
    """
    return _word_value(text, _CONSENT, f"an SMS-consent value ({CONSENT_HELP})")


def parse_opt_out(text: str) -> bool | None:
    """An opt-out cell (Do Not Call, SMS Opt-Out): a :func:`parse_bool` word says whether the
    person opted out (``yes`` / ``1`` → True); a status word says their consent, so its
    opposite (``opted out`` / ``unsubscribed`` → True, ``subscribed`` / ``opted in`` →
    False). ValueError otherwise, never a guess. Blank is None.

    >>> parse_opt_out("1"), parse_opt_out("Opted Out"), parse_opt_out("subscribed")
    (True, True, False)
    """
    return _word_value(text, _OPT_OUT, f"an opt-out value ({OPT_OUT_HELP})")


# ---------------------------------------------------------------------------------------------
# URLs, ZIP codes, time zones (emails: sonar_bulk.emails)

URL_PATTERN = r"^https?://[^\s/?#]+\.[^\s/?#]+(?:[/?#]\S*)?$"
US_ZIP_PATTERN = r"^\d{5}(?:-?\d{4})?$"
POSTAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 -]{1,9}$"


@functools.cache
def _zone_names() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def suggest_timezone(text: str) -> str | None:
    """The IANA zone a bare city name means (``Berlin`` → ``Europe/Berlin``), if exactly one."""
    city = text.strip().casefold().replace(" ", "_")
    found = [name for key, name in _zone_names().items() if key.rpartition("/")[2] == city]
    return found[0] if len(found) == 1 else None


def canonical_timezone(text: str) -> str | None:
    """The IANA name for ``text`` (case-insensitive), or None when unknown. Blank → ''."""
    value = text.strip()
    if value == "":
        return ""
    if value.upper() in ("UTC", "GMT", "Z"):
        return "UTC"
    return _zone_names().get(value.casefold().replace(" ", "_"))


def phone_timezones(e164: str) -> tuple[tuple[str, ...], str]:
    """The IANA zones a phone number may be in, and how they were found: its area code
    (libphonenumber's geocoding data, kept to the number's own country), else every zone of its
    country (the tz database's zone.tab). ``((), "unknown")`` when neither is known: such a
    recipient's local time can't be told, and quiet hours must not guess it."""
    from phonenumbers import timezone as phone_tz

    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return (), "unknown"
    region = phonenumbers.region_code_for_number(
        number
    ) or phonenumbers.region_code_for_country_code(number.country_code or 0)
    country = _country_zones().get(region or "", ())
    zones = tuple(
        z for z in phone_tz.time_zones_for_number(number) if z != phone_tz.UNKNOWN_TIMEZONE
    )
    if country:
        # a prefix shared by many countries (+1) lists all of their zones: keep this one's
        zones = tuple(z for z in zones if z in country)
    if zones:
        return zones, "from the number"
    if country:
        return country, f"country {region}"
    return (), "unknown"


@functools.cache
def _country_zones() -> dict[str, tuple[str, ...]]:
    """Country code -> its IANA zones, from the tz database's zone.tab (the system's, or the
    tzdata package's), read once. Empty when neither is there."""
    places = [Path(p) / "zone.tab" for p in zoneinfo.TZPATH]
    import importlib.util

    spec = importlib.util.find_spec("tzdata")  # the zones' package where the OS has none
    if spec is not None and spec.origin:
        places.append(Path(spec.origin).parent / "zoneinfo" / "zone.tab")
    for place in places:
        try:
            text = place.read_text(encoding="utf-8")
        except OSError:
            continue
        out: dict[str, list[str]] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) >= 3:
                out.setdefault(fields[0], []).append(fields[2])
        return {k: tuple(v) for k, v in out.items()}
    return {}


# ---------------------------------------------------------------------------------------------
# Dates and times

_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%m/%d/%Y",
    "%m/%d/%y",
    "%d.%m.%Y",
    "%d-%b-%Y",
    "%d %b %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d %B %Y",
)
_TIME_FORMATS = ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p", "%I %p", "%I:%M%p", "%I%p")
_ISO_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?$"
)


@dataclass(frozen=True)
class ParsedDateTime:
    """A parsed cell: ``value`` is aware when the text carried an offset; ``has_time`` is False
    for a bare date."""

    value: dt.datetime
    has_time: bool
    #: True when day and month could be swapped (03/04/2026): read month first.
    ambiguous: bool = False


def parse_datetime(text: str) -> ParsedDateTime:
    """Parse ISO 8601 or a common spreadsheet date/date-time; ValueError when it is neither.

    Slash dates are read month first (US spreadsheets); ``ambiguous`` flags ones where both
    readings are dates. A trailing ``Z``/offset makes the result aware.
    """
    value = text.strip()
    if value == "":
        raise ValueError("blank")
    if len(value) > 64:  # no date format is this long; and the patterns below stay linear
        raise ValueError(f"{value[:20]!r}... is not a date-time")
    if _ISO_RE.match(value):
        iso = value.replace(" ", "T", 1)
        try:
            parsed = dt.datetime.fromisoformat(iso)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a real date-time") from exc
        return ParsedDateTime(parsed, "T" in iso)
    tail = ""
    m = re.search(r"(Z|UTC|GMT|[+-]\d{2}:?\d{2})$", value, re.IGNORECASE)
    if m and re.search(r"\d", value[: m.start()]):
        tail, value = m.group(1), value[: m.start()].strip()
    for dfmt in _DATE_FORMATS:
        for tfmt in ("", *_TIME_FORMATS):
            fmt = f"{dfmt} {tfmt}".strip()
            try:
                parsed = dt.datetime.strptime(value, fmt)
            except ValueError:
                continue
            if tail:
                offset = tail.upper()
                if offset in ("Z", "UTC", "GMT"):
                    parsed = parsed.replace(tzinfo=dt.UTC)
                else:
                    sign = 1 if offset[0] == "+" else -1
                    digits = offset[1:].replace(":", "")
                    delta = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
                    parsed = parsed.replace(tzinfo=dt.timezone(sign * delta))
            ambiguous = False
            if dfmt.startswith("%m/%d") and parsed.day <= 12 and parsed.day != parsed.month:
                ambiguous = True
            return ParsedDateTime(parsed, bool(tfmt), ambiguous)
    first = re.match(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})", value)
    if first and int(first.group(1)) > 12:
        day, month, year = (int(g) for g in first.groups())
        try:
            meant = dt.date(year, month, day)
        except ValueError:
            raise ValueError(f"{text.strip()!r} is not a real date") from None
        raise ValueError(
            f"{text.strip()!r} looks day-first ({day} is no month); write it as {meant.isoformat()}"
        )
    raise ValueError(f"{text.strip()!r} is not a date-time")


# ---------------------------------------------------------------------------------------------
# Wall-clock times in a zone: a time of day, and daylight saving time's gaps and repeats

_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})")


def parse_clock_time(text: str) -> dt.time:
    """A time of day written ``HH:MM`` on a 24-hour clock (``09:00``, ``9:00``, ``21:30``);
    ValueError otherwise."""
    m = _CLOCK_RE.fullmatch(text.strip())
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(
            f"{text.strip()!r} is not a time of day; write HH:MM on a 24-hour clock, such as 09:00"
        )
    return dt.time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class LocalTime:
    """A wall-clock time read in a zone.

    ``value`` is aware; for a time that happens twice it is the first (``fold=0``). ``jump`` is
    set when the zone's clocks change across the time: the wall clock before and after the
    change. A time in a gap (clocks jump forward over it) does not exist at all: ``missing``.
    """

    value: dt.datetime
    missing: bool = False
    #: The other reading of a repeated time (the second, ``fold=1``); None otherwise.
    second: dt.datetime | None = None
    jump: tuple[dt.datetime, dt.datetime] | None = None


def read_local(naive: dt.datetime, zone: str) -> LocalTime:
    """Read the wall-clock time ``naive`` in the IANA ``zone``, saying whether it falls in a
    daylight-saving gap (it never happens there) or a repeated hour (it happens twice)."""
    tz = zoneinfo.ZoneInfo(zone)
    first = naive.replace(tzinfo=tz, fold=0)
    other = naive.replace(tzinfo=tz, fold=1)
    before, after = first.utcoffset(), other.utcoffset()
    if before == after or before is None or after is None:
        return LocalTime(first)
    # the instant the clocks change lies between the two readings of ``naive`` in UTC
    lo = (naive - max(before, after)).replace(tzinfo=dt.UTC)
    hi = (naive - min(before, after)).replace(tzinfo=dt.UTC)
    start = lo.astimezone(tz).utcoffset()
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == start:
            lo = mid
        else:
            hi = mid
    change = hi.replace(microsecond=0)
    jump = (
        (change + (start or before)).replace(tzinfo=None),
        change.astimezone(tz).replace(tzinfo=None),
    )
    round_trip = first.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None)
    if round_trip != naive:
        return LocalTime(first, missing=True, jump=jump)
    return LocalTime(first, second=other, jump=jump)


def wall_text(when: dt.datetime, same_day_as: dt.datetime | None = None) -> str:
    """``2027-03-14 02:30`` (seconds only when there are some); just ``02:30`` on the day of
    ``same_day_as``."""
    clock = f"{when:%H:%M:%S}" if when.second else f"{when:%H:%M}"
    if same_day_as is not None and when.date() == same_day_as.date():
        return clock
    return f"{when:%Y-%m-%d} {clock}"


def offset_text(when: dt.datetime) -> str:
    """The UTC offset of an aware time as ``-04:00``, with its zone's abbreviation when it has
    one (``-04:00 (EDT)``)."""
    offset = when.utcoffset() or dt.timedelta(0)
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    name = when.tzname()
    return f"{text} ({name})" if name and name[0].isalpha() and not name.startswith("UTC") else text


# ---------------------------------------------------------------------------------------------
# Custom property values

_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
#: 1.234,56 or 12,5: a comma before the decimals, as much of Europe writes numbers.
_DECIMAL_COMMA_RE = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+")


#: A currency sign or code written before or after an amount.
_CURRENCY = r"(?:[$€£¥₹₩₽¢]|(?:US|CA|AU|NZ)\$|\b(?:USD|EUR|GBP|CAD|AUD|NZD|JPY|INR|MXN|CHF|BRL)\b)"
_MONEY_RE = re.compile(
    rf"(?P<sign>[+-]?)\s*{_CURRENCY}\s*(?P<before>[+-]?\d[\d.,]*)"
    rf"|(?P<after>[+-]?\d[\d.,]*)\s*{_CURRENCY}",
    re.IGNORECASE,
)
#: 1,250 or 1.250: a thousands separator or a decimal one, nothing says which.
_ONE_GROUP_RE = re.compile(r"[+-]?\d{1,3}[.,]\d{3}")


def _money_hint(text: str) -> str | None:
    """What to write for an amount of money (``$1,250.50`` → ``write the number alone:
    1250.50``); None when ``text`` is not one. Exact only when the separators say which is the
    decimal one (``1.250,50 €`` → ``1250.50``); ``$1,250`` gets the likely reading, with why."""
    money = _MONEY_RE.fullmatch(text.strip())
    if money is None:
        return None
    amount = (money.group("sign") or "") + (money.group("before") or money.group("after"))
    if _ONE_GROUP_RE.fullmatch(amount):
        mark = "comma" if "," in amount else "point"
        grouped = amount.replace(",", "").replace(".", "")
        return f"write the number alone ({grouped} if the {mark} separates thousands)"
    if _DECIMAL_COMMA_RE.fullmatch(amount):
        return f"write the number alone: {amount.replace('.', '').replace(',', '.')}"
    try:
        return f"write the number alone: {parse_number(amount)}"
    except ValueError:
        return "write the number alone"


def parse_number(text: str) -> str:
    """Canonical text of a number (``1,234.50`` → ``1234.50``); ValueError when not a number
    (an amount of money, ``$1,250.50``, says what to write instead)."""
    value = (
        text.strip().replace(",", "")
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", text.strip())
        else text.strip()
    )
    if not _NUMBER_RE.match(value):
        if _DECIMAL_COMMA_RE.fullmatch(value):
            fixed = value.replace(".", "").replace(",", ".")
            raise ValueError(
                f"{text!r} has a decimal comma; write it as {fixed} (a point before the "
                "decimals, no thousands separator)"
            )
        money = _money_hint(value)
        if money is not None:
            raise ValueError(f"{text!r} is an amount with a currency sign; {money}")
        raise ValueError(f"{text!r} is not a number")
    try:
        Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a number") from exc
    return value


def coerce_property(text: str, ptype: str) -> str:
    """Normalize a property cell to Sonar's text form for ``ptype``; ValueError when it can't."""
    value = text.strip()
    if ptype == "string" or value == "":
        return value
    if ptype == "number":
        return parse_number(value)
    if ptype == "boolean":
        b = parse_bool(value)
        return "" if b is None else ("true" if b else "false")
    parsed = parse_datetime(value)
    if ptype == "date":
        if parsed.has_time and parsed.value.time() != dt.time(0):
            raise ValueError(f"{text!r} has a time; the property is a date")
        return parsed.value.date().isoformat()
    return parsed.value.isoformat(timespec="seconds")


def infer_property_type(values: Iterable[str]) -> str:
    """The narrowest type all non-blank distinct values fit: number, boolean, date, datetime,
    else string. Numbers with leading zeros (ZIP codes, ids) stay strings; numbers written
    with a decimal comma (``1.234,56``) count as numbers, so that they are reported."""
    seen = [v.strip() for v in values if v.strip()]
    if not seen:
        return "string"

    def fits(ptype: str) -> bool:
        for v in seen:
            try:
                coerce_property(v, ptype)
            except ValueError:
                return False
        return True

    if all(
        (_NUMBER_RE.match(v) or _DECIMAL_COMMA_RE.fullmatch(v)) and not re.match(r"^[+-]?0\d", v)
        for v in seen
    ):
        # numbers written with a decimal comma are numbers too: their cells then say how to fix
        # them, rather than the property quietly becoming text
        return "number"
    if fits("boolean"):
        return "boolean"
    if fits("date"):
        return "date"
    if fits("datetime"):
        return "datetime"
    return "string"
