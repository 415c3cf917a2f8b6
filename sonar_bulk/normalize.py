"""Pure normalizers for cell text: phones, booleans, emails, dates, time zones, SMS text.

Scalar functions (``parse_bool``, ``parse_datetime``, ``normalize_phone``...) hold the rules.
Column functions (``phones_column``...) apply them to a whole column fast: vectorized Arrow
kernels where a rule is a pattern, and each *distinct* value normalized once otherwise.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers.phonenumberutil import NumberParseException

from sonar_bulk.phonemeta import nanp_pattern, region_country_code

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


_SPACES = " \t\r\n\v\f\u00a0\u2007\u202f\u3000\u200b\ufeff"


# ---------------------------------------------------------------------------------------------
# Booleans

TRUE_WORDS = frozenset({"true", "yes", "1", "y", "t"})
FALSE_WORDS = frozenset({"false", "no", "0", "n", "f"})


def parse_bool(text: str) -> bool | None:
    """``true/yes/1/y/t`` → True, ``false/no/0/n/f`` → False; ValueError otherwise.

    Blank is None (leave as is). Case and surrounding spaces are ignored.
    """
    word = text.strip().casefold()
    if word == "":
        return None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not true/false, yes/no or 1/0")


# ---------------------------------------------------------------------------------------------
# Phones


@dataclass(frozen=True)
class PhoneResult:
    """Outcome of normalizing one phone cell: ``e164`` or an issue ``code`` and ``message``."""

    e164: str = ""
    code: str = ""
    message: str = ""
    severity: str = "error"


_DAMAGED_RE = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
#: Punctuation the vectorized path removes; anything else goes to phonenumbers (exact anyway).
_PHONE_PUNCT = (" ", "-", "(", ")", ".")


def _describe_parse_error(exc: NumberParseException) -> str:
    return {
        NumberParseException.INVALID_COUNTRY_CODE: "the country code is not valid",
        NumberParseException.NOT_A_NUMBER: "this is not a phone number",
        NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
        NumberParseException.TOO_SHORT_NSN: "too short to be a phone number",
        NumberParseException.TOO_LONG: "too long to be a phone number",
    }.get(exc.error_type, "this is not a phone number")


#: Regions tried when a number without a country code is not valid in the default region.
ALTERNATIVE_REGIONS = (
    "US",
    "CA",
    "GB",
    "MX",
    "AU",
    "DE",
    "FR",
    "ES",
    "IT",
    "IN",
    "BR",
    "IE",
    "NL",
    "NZ",
    "ZA",
    "PH",
)


def _valid(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        num = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return num if phonenumbers.is_valid_number(num) else None


def normalize_phone(text: str, region: str = "US", *, was_number: bool = False) -> PhoneResult:
    """Normalize one phone cell to E.164 with libphonenumber's rules.

    ``was_number`` says the cell was a number cell in a workbook (so a leading zero may be lost).
    Codes: ``required.missing`` is not produced here (blank gives an empty result);
    ``excel.damaged_number``, ``excel.lost_leading_zero``, ``phone.ambiguous_region``,
    ``phone.invalid``, and the warning ``phone.extension``.
    """
    value = text.strip()
    if value == "":
        return PhoneResult()
    if _DAMAGED_RE.match(value):
        return PhoneResult(
            code="excel.damaged_number",
            message=f"{value} is a number Excel shortened to scientific notation; its last "
            "digits are lost. Re-export with the column formatted as Text, or type the "
            "full number",
        )
    try:
        num = phonenumbers.parse(value, region)
    except NumberParseException as exc:
        return PhoneResult(
            code="phone.invalid",
            message=f"{_describe_parse_error(exc)}; write it like +13105550101",
        )
    if not phonenumbers.is_valid_number(num):
        digits = re.sub(r"\D", "", value)
        if not value.startswith("+") and len(digits) == 7 and region_country_code(region) == 1:
            return PhoneResult(
                code="phone.invalid", message="only 7 digits: the area code is missing"
            )
        if not value.startswith("+") and len(digits) >= 8:
            zeroed = _valid("0" + digits, region)
            if zeroed is not None and (was_number or len(digits) >= 9):
                fixed = phonenumbers.format_number(zeroed, phonenumbers.PhoneNumberFormat.E164)
                return PhoneResult(
                    code="excel.lost_leading_zero",
                    message=f"looks like {('0' + digits)} lost its leading 0 in Excel "
                    f"({fixed}); format the column as Text and re-enter it",
                )
            intl = _valid("+" + digits, None)
            if intl is None:
                for other in ALTERNATIVE_REGIONS:
                    if other != region.upper() and (intl := _valid(value, other)) is not None:
                        break
            if intl is not None:
                where = phonenumbers.region_code_for_number(intl)
                fixed = phonenumbers.format_number(intl, phonenumbers.PhoneNumberFormat.E164)
                return PhoneResult(
                    code="phone.ambiguous_region",
                    message=f"no country code and not a valid {region} number; if it is "
                    f"{fixed} ({where}), write it with + and the country code, or pass "
                    "--default-region",
                )
        where = "its country" if value.startswith("+") else region
        return PhoneResult(
            code="phone.invalid",
            message=f"not a valid phone number for {where}; check the digits and the country code",
        )
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    if num.extension:
        return PhoneResult(
            e164,
            "phone.extension",
            f"extension {num.extension} dropped: SMS goes to {e164}",
            "warning",
        )
    return PhoneResult(e164)


@dataclass
class PhoneColumn:
    """A phone column normalized: E.164 per row ('' where blank or invalid) and issues."""

    e164: pa.Array
    #: Per row: None, or the PhoneResult carrying an issue.
    problems: np.ndarray


def phones_column(
    values: pa.Array, region: str = "US", was_number: np.ndarray | None = None
) -> PhoneColumn:
    """Normalize a whole column of phone cells.

    The common North American forms (``(310) 555-0101``, ``310.555.0101``, ``13105550101``,
    ``+13105550101``) are handled with Arrow kernels against libphonenumber's +1 metadata; every
    other distinct value goes through :func:`normalize_phone` once.
    """
    n = len(values)
    values = strip(values)
    canon = values
    for ch in _PHONE_PUNCT:
        canon = pc.replace_substring(canon, ch, "")
    prefix = r"(?:\+?1)?" if region_country_code(region) == 1 else r"\+1"
    valid = pc.match_substring_regex(canon, "^" + prefix + nanp_pattern().removeprefix("^"))
    valid = pc.fill_null(valid, False)
    national = pc.utf8_slice_codeunits(canon, -10)
    e164 = pc.if_else(valid, pc.binary_join_element_wise(lit("+1"), national, lit("")), lit(""))
    problems = np.full(n, None, dtype=object)
    blank = pc.equal(canon, "").to_numpy(zero_copy_only=False)
    slow = ~valid.to_numpy(zero_copy_only=False) & ~blank
    if slow.any():
        idx = np.flatnonzero(slow)
        raw = pc.take(values, pa.array(idx))
        flags = was_number[idx] if was_number is not None else np.zeros(len(idx), dtype=bool)
        if flags.any():
            results = np.asarray(
                [
                    normalize_phone(t, region, was_number=bool(f))
                    for t, f in zip(raw.to_pylist(), flags, strict=True)
                ],
                dtype=object,
            )
        else:
            results = map_distinct(raw, functools.partial(normalize_phone, region=region))
        out = np.asarray(e164.to_pylist(), dtype=object) if n else np.empty(0, dtype=object)
        for j, res in zip(idx, results, strict=True):
            out[j] = res.e164
            if res.code:
                problems[j] = res
        e164 = pa.array(out, pa.large_string())
    return PhoneColumn(e164, problems)


# ---------------------------------------------------------------------------------------------
# Emails, URLs, ZIP codes, time zones

EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$"
)
URL_PATTERN = r"^https?://[^\s/?#]+\.[^\s/?#]+(?:[/?#]\S*)?$"
US_ZIP_PATTERN = r"^\d{5}(?:-?\d{4})?$"
POSTAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 -]{1,9}$"

_EMAIL_RE = re.compile(EMAIL_PATTERN)


def is_email(text: str) -> bool:
    """Whether ``text`` (stripped) is a plausible email address."""
    return _EMAIL_RE.match(text.strip()) is not None


@functools.cache
def _zone_names() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def canonical_timezone(text: str) -> str | None:
    """The IANA name for ``text`` (case-insensitive), or None when unknown. Blank → ''."""
    value = text.strip()
    if value == "":
        return ""
    if value.upper() in ("UTC", "GMT", "Z"):
        return "UTC"
    return _zone_names().get(value.casefold().replace(" ", "_"))


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
    if _ISO_RE.match(value):
        iso = value.replace(" ", "T", 1)
        try:
            parsed = dt.datetime.fromisoformat(iso)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a real date-time") from exc
        return ParsedDateTime(parsed, "T" in iso)
    tail = ""
    m = re.search(r"\s*(Z|UTC|GMT|[+-]\d{2}:?\d{2})$", value, re.IGNORECASE)
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
    raise ValueError(f"{text.strip()!r} is not a date-time")


# ---------------------------------------------------------------------------------------------
# Custom property values

_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def parse_number(text: str) -> str:
    """Canonical text of a number (``1,234.50`` → ``1234.50``); ValueError when not a number."""
    value = (
        text.strip().replace(",", "")
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", text.strip())
        else text.strip()
    )
    if not _NUMBER_RE.match(value):
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
    else string. Numbers with leading zeros (ZIP codes, ids) stay strings."""
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

    if all(_NUMBER_RE.match(v) and not re.match(r"^[+-]?0\d", v) for v in seen):
        return "number"
    if fits("boolean"):
        return "boolean"
    if fits("date"):
        return "date"
    if fits("datetime"):
        return "datetime"
    return "string"


# ---------------------------------------------------------------------------------------------
# SMS text: merge fields and segments

MERGE_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    """How an SMS text is split: encoding, units used, and the number of segments."""

    encoding: str
    units: int
    segments: int


def sms_segments(text: str) -> Segments:
    """Count SMS segments: GSM-7 (160 per single, 153 per part; extension chars count 2) or
    UCS-2 (70 single, 67 per part, counted in UTF-16 code units)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, part, enc = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part, enc = 70, 67, "UCS-2"
    if units == 0:
        return Segments(enc, 0, 0)
    segments = 1 if units <= single else -(-units // part)
    return Segments(enc, units, segments)


def merge_fields(text: str) -> list[str]:
    """The ``{{field}}`` names used in ``text``, in order, without repeats."""
    out: list[str] = []
    for m in MERGE_RE.finditer(text):
        if m.group(1) not in out:
            out.append(m.group(1))
    return out


def render(text: str, values: dict[str, str], resolve: Callable[[str], Any] = str) -> str:
    """Fill ``{{field}}`` placeholders; ``resolve(name)`` gives the key into ``values``
    (the field name as written, by default)."""
    return MERGE_RE.sub(lambda m: values.get(resolve(m.group(1)), "").strip(), text)
