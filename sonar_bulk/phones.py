"""Phone numbers: one cell to E.164 with libphonenumber's rules (:func:`normalize_phone`), and a
whole column at once (:func:`phones_column`), vectorized with the metadata of
:mod:`sonar_bulk.phonemeta` and giving, row by row, what :func:`normalize_phone` gives.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers.phonenumberutil import NumberParseException

from sonar_bulk.normalize import lit, map_distinct, strip, to_arrow
from sonar_bulk.phonemeta import (
    RegionRules,
    country_codes,
    country_rules,
    country_type_pattern,
    full_pattern,
    main_rules,
    nanp_area_pattern,
    national_candidate_pattern,
    region_country_code,
    region_rules,
    written_trunk_prefix,
)


@dataclass(frozen=True, slots=True)
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


#: Digits no real number has: the last seven all one digit (``(999) 000-0000``), or a run
#: (``123-456-7890``). Such a number is never guessed to be another country's. A pattern
#: for both Python's re and RE2.
_RUNS = sorted(
    {
        run[i : i + size]
        for run in ("0123456789" * 2, "9876543210" * 2)
        for i in range(10)
        for size in range(8, 16)
    }
)
PLACEHOLDER_PATTERN = (
    "(?:" + "|".join(d * 7 for d in "0123456789") + ")$|^(?:" + "|".join(_RUNS) + ")$"
)
#: Letters typed for a digit they look like: O for 0, l and I for 1.
_LOOKALIKES = {"O": "0", "o": "0", "l": "1", "I": "1"}
_WITH_LOOKALIKES = re.compile(r"[+\d\s().\-]*[OolI][+\d\s().\-OolI]*")


def _letter_in_number(value: str, region: str) -> PhoneResult | None:
    """A number with a letter typed for a digit (``555-01O5``): which letter, where, and the
    number with the digit it looks like."""
    if not _WITH_LOOKALIKES.fullmatch(value) or not any(ch.isdigit() for ch in value):
        return None
    places = [(ch, i + 1) for i, ch in enumerate(value) if ch in _LOOKALIKES]
    fixed = "".join(_LOOKALIKES.get(ch, ch) for ch in value)
    number = _valid(fixed, region)
    if number is not None:
        fixed += f" ({phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)})"
    if len(places) == 1:
        ch, at = places[0]
        message = (
            f"the letter {ch} (character {at}) where a digit belongs; if it is "
            f"{_LOOKALIKES[ch]}, write {fixed}"
        )
    else:
        letters = ", ".join(ch for ch, _ in places[:-1]) + f" and {places[-1][0]}"
        positions = ", ".join(str(p) for _, p in places)
        which = " and ".join(
            f"{ch} is {_LOOKALIKES[ch]}" for ch in dict.fromkeys(c for c, _ in places)
        )
        message = (
            f"the letters {letters} (characters {positions}) where digits belong; if {which}, "
            f"write {fixed}"
        )
    if number is None:  # the digits alone are no number either: say so, not just "write"
        message += f", which is still not a valid {region} number (digits missing?)"
    return PhoneResult(code="phone.invalid", message=message)


def _guessable(digits: str, region: str) -> bool:
    """Whether a number of ``digits``, not valid in ``region``, may be another country's: not
    a placeholder, and (in North America) not a number of a local area code with a wrong digit."""
    if re.search(PLACEHOLDER_PATTERN, digits):
        return False
    return not (region_country_code(region) == 1 and re.match(nanp_area_pattern(), digits))


def _valid(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        num = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return num if phonenumbers.is_valid_number(num) else None


def normalize_phone(
    text: str, region: str = "US", *, was_number: bool = False, guess: bool = True
) -> PhoneResult:
    """Normalize one phone cell to E.164 with libphonenumber's rules.

    ``was_number`` says the cell was a number cell in a workbook (so a leading zero may be lost).
    Codes: ``required.missing`` is not produced here (blank gives an empty result);
    ``excel.damaged_number``, ``excel.lost_leading_zero``, ``phone.ambiguous_region``,
    ``phone.invalid``, and the warning ``phone.extension``. ``guess=False`` (the row's own
    country column named ``region``): a number not valid there is not guessed to be another
    country's.
    """
    value = text.strip()
    if value == "":
        return PhoneResult()
    if (letter := _letter_in_number(value, region)) is not None:
        return letter
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
            guessable = guess and _guessable(digits, region)
            intl = _valid("+" + digits, None) if guessable else None
            if intl is None and guessable:
                for other in ALTERNATIVE_REGIONS:
                    if other == region.upper() or not digits.startswith(
                        written_trunk_prefix(other)
                    ):
                        continue  # a country that writes a 0 first: only numbers with it
                    if (intl := _valid(value, other)) is not None:
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


# Vectorized phonenumbers.parse / is_valid_number / region_code_for_number, over whole columns.
#
# Only cells of one simple shape get here: an optional leading "+", then ASCII digits (three or
# more) mixed with spaces, "-", ".", "(" and ")", at most 250 characters. Of those, parse()
# keeps just the digits: leading brackets and trailing punctuation are dropped, the rest is
# stripped by normalization, and no extension can be written without a letter, "#", "," or
# ";". So each step below is the matching step of phonenumberutil.parse (and of
# is_valid_number, region_code_for_number), run over digit strings with RE2 patterns taken
# from libphonenumber's metadata (phonemeta.region_rules), RE2 and Python's re agreeing on
# them (leftmost-first alternation, the same submatches). A cell a step cannot mirror exactly
# (an unknown country code after "+", which parse() retries without the "+"; a region rule
# not mirrored) is marked and goes through normalize_phone instead.

_MAX_PHONE_TEXT = 250  # phonenumberutil._MAX_INPUT_STRING_LENGTH
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumberutil._MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN

#: Parse outcomes: OK, or a NumberParseException type, or one of the two "ask the scalar path".
_OK = -1
_NO_CODE = -2  # "+" and no known country code: parse() retries without the "+"
_SCALAR = -3  # a region rule the vectorized path does not mirror


@dataclass
class _Chunk:
    """Part of a vectorized parse(): rows with the same country code, parsed with the same
    metadata. Per row: a status (``_OK``, a NumberParseException type, ``_NO_CODE`` or
    ``_SCALAR``) and the national significant number."""

    rows: np.ndarray
    status: np.ndarray
    cc: int
    nsn: pa.Array


def _match(values: pa.Array, pattern: str | None) -> np.ndarray:
    """Per row, whether RE2 ``pattern`` matches (False everywhere for None)."""
    if pattern is None or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    out: np.ndarray = pc.match_substring_regex(values, pattern).to_numpy(zero_copy_only=False)
    return out


def _lengths(digits: pa.Array) -> np.ndarray:
    """Per row, the length of a digit string (ASCII: bytes are characters)."""
    out: np.ndarray = pc.binary_length(digits).to_numpy(zero_copy_only=False)
    return out


def _take(values: pa.Array, idx: np.ndarray) -> pa.Array:
    """Rows ``idx`` (increasing, as np.flatnonzero gives them) of ``values``."""
    return values if len(idx) == len(values) else pc.take(values, pa.array(idx, pa.int64()))


def _assemble(n: int, pieces: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """A text column of ``n`` rows: ``pieces`` (rows, texts) where given, '' elsewhere."""
    if len(pieces) == 1 and len(pieces[0][0]) == n and (np.diff(pieces[0][0]) > 0).all():
        return pieces[0][1].cast(pa.large_string())
    order = np.zeros(n, dtype=np.int64)
    arrays, start = [pa.array([""], pa.large_string())], 1
    for rows, texts in pieces:
        order[rows] = start + np.arange(len(rows))
        arrays.append(texts.cast(pa.large_string()))
        start += len(rows)
    return pc.take(pa.concat_arrays(arrays), pa.array(order))


def _scatter(base: pa.Array, idx: np.ndarray, new: pa.Array) -> pa.Array:
    """``base`` with rows ``idx`` (increasing) replaced by ``new``."""
    if len(idx) == len(base):
        return new
    order = np.arange(len(base), dtype=np.int64)
    order[idx] = len(base) + np.arange(len(idx))
    return pc.take(pa.concat_arrays([base, new.cast(base.type)]), pa.array(order))


def _isin(lengths: np.ndarray, allowed: Iterable[int]) -> np.ndarray:
    table = np.zeros(max(int(lengths.max(initial=0)), 0) + 1, dtype=bool)
    for n in allowed:
        if 0 <= n < len(table):
            table[n] = True
    out: np.ndarray = table[lengths]
    return out


def _length_accepts_strip(lengths: np.ndarray, rules: RegionRules) -> np.ndarray:
    """_test_number_length(number, metadata) is IS_POSSIBLE or TOO_LONG."""
    local = _isin(lengths, rules.local_lengths)
    possible = _isin(lengths, rules.general_lengths)
    out: np.ndarray = ~local & (possible | (lengths > rules.general_lengths[-1]))
    return out


def _too_long(lengths: np.ndarray, rules: RegionRules) -> np.ndarray:
    """_test_number_length(number, metadata) is TOO_LONG."""
    out: np.ndarray = ~_isin(lengths, rules.local_lengths) & (lengths > rules.general_lengths[-1])
    return out


def _strip_national_prefix(number: pa.Array, rules: RegionRules) -> pa.Array:
    """_maybe_strip_national_prefix_carrier_code(number, metadata)[1], per row."""
    prefix = rules.national_prefix
    if prefix is None or len(number) == 0:
        return number
    matched = _match(number, prefix) & (_lengths(number) > 0)
    if not matched.any():
        return number
    idx = np.flatnonzero(matched)
    sub = _take(number, idx)
    viable = _match(sub, rules.general)
    rest = pc.replace_substring_regex(sub, prefix, "", max_replacements=1)
    took_part = np.zeros(len(idx), dtype=bool)
    if rules.transform is not None:
        # the transform applies when its group took part; it never captures "" (phonemeta)
        captured = pc.replace_substring_regex(
            sub, prefix + ".*$", f"\\{rules.transform_group}", max_replacements=1
        )
        took_part = pc.not_equal(captured, "").to_numpy(zero_copy_only=False)
    strip = ~took_part & ~(viable & ~_match(rest, rules.general))
    out = pc.if_else(pa.array(strip), rest, sub)
    if took_part.any():
        assert rules.transform is not None
        moved = pc.replace_substring_regex(sub, prefix, rules.transform, max_replacements=1)
        keep = viable & ~_match(moved, rules.general)
        out = pc.if_else(pa.array(took_part & ~keep), moved, out)
    return _scatter(number, idx, out)


@functools.cache
def _codes_of_size(k: int) -> pa.Array:
    return pa.array(sorted(str(c) for c in country_codes() if len(str(c)) == k), pa.large_string())


def _country_code_of(digits: pa.Array) -> np.ndarray:
    """_extract_country_code: per row, the country code the digits start with (0: none)."""
    cc = np.zeros(len(digits), dtype=np.int64)
    lengths = _lengths(digits)
    zero = pc.starts_with(digits, "0").to_numpy(zero_copy_only=False)
    for k in (1, 2, 3):
        head = pc.utf8_slice_codeunits(digits, 0, k)
        hit = (cc == 0) & ~zero & (lengths >= k)
        hit &= pc.is_in(head, value_set=_codes_of_size(k)).to_numpy(zero_copy_only=False)
        if hit.any():
            idx = np.flatnonzero(hit)
            cc[idx] = pc.cast(_take(head, idx), pa.int64()).to_numpy()
    return cc


def _finish_parse(rows: np.ndarray, cc: int, nsn: pa.Array, rules: RegionRules) -> _Chunk:
    """The end of parse(): check the length, strip the national prefix, check the length."""
    status = np.full(len(nsn), _OK, dtype=np.int8)
    if not rules.supported:
        status[:] = _SCALAR
        return _Chunk(rows, status, cc, nsn)
    status[_lengths(nsn) < _MIN_NSN] = NumberParseException.TOO_SHORT_NSN
    stripped = _strip_national_prefix(nsn, rules)
    if stripped is not nsn:
        accept = _length_accepts_strip(_lengths(stripped), rules)
        nsn = pc.if_else(pa.array(accept), stripped, nsn)
    status[(status == _OK) & (_lengths(nsn) > _MAX_NSN)] = NumberParseException.TOO_LONG
    return _Chunk(rows, status, cc, nsn)


def _failed(rows: np.ndarray, status: int) -> _Chunk:
    n = len(rows)
    return _Chunk(rows, np.full(n, status, np.int8), 0, pa.nulls(n))


def _parse_international(digits: pa.Array) -> list[_Chunk]:
    """parse("+" + digits) for digit strings (any default region)."""
    cc = _country_code_of(digits)
    chunks = []
    short = _lengths(digits) <= _MIN_NSN
    if short.any():
        chunks.append(_failed(np.flatnonzero(short), NumberParseException.TOO_SHORT_AFTER_IDD))
    if (~short & (cc == 0)).any():
        chunks.append(_failed(np.flatnonzero(~short & (cc == 0)), _NO_CODE))
    known = ~short & (cc != 0)
    for code in np.unique(cc[known]):
        idx = np.flatnonzero(known & (cc == code))
        rules = main_rules(int(code))
        nsn = pc.utf8_slice_codeunits(_take(digits, idx), len(str(code)))
        if rules is None:
            chunks.append(_failed(idx, _SCALAR))
        else:
            chunks.append(_finish_parse(idx, int(code), nsn, rules))
    return chunks


def _remap(chunks: list[_Chunk], rows: np.ndarray) -> list[_Chunk]:
    """Chunks of a parse of ``digits[rows]``, as rows of ``digits``."""
    for chunk in chunks:
        chunk.rows = rows[chunk.rows]
    return chunks


def _parse_national(digits: pa.Array, rules: RegionRules) -> list[_Chunk]:
    """parse(digits, region) for digit strings without a "+"."""
    n = len(digits)
    chunks: list[_Chunk] = []
    if not rules.supported:
        return [_failed(np.arange(n), _SCALAR)]
    # an international prefix (011, 00...) not followed by 0: as if it were "+"
    idd = _match(digits, rules.idd)
    if idd.any():
        idx = np.flatnonzero(idd)
        rest = pc.replace_substring_regex(_take(digits, idx), rules.idd, "", max_replacements=1)
        after = ~pc.starts_with(rest, "0").to_numpy(zero_copy_only=False)
        idd[idx[~after]] = False
        if after.any():
            inner = _parse_international(_take(rest, np.flatnonzero(after)))
            for chunk in _remap(inner, idx[after]):
                chunk.status[chunk.status == _NO_CODE] = NumberParseException.INVALID_COUNTRY_CODE
                chunks.append(chunk)
    # the default region's own country code written without "+" (13105550101)
    code = str(rules.country_code)
    plain = ~idd
    lead = plain & pc.starts_with(digits, code).to_numpy(zero_copy_only=False)
    if lead.any():
        idx = np.flatnonzero(lead)
        full = _take(digits, idx)
        rest = _strip_national_prefix(pc.utf8_slice_codeunits(full, len(code)), rules)
        better = _too_long(_lengths(full), rules)
        if not better.all():
            maybe = np.flatnonzero(~better)
            better[maybe] = ~_match(_take(full, maybe), rules.general) & _match(
                _take(rest, maybe), rules.general
            )
        if better.any():
            main = main_rules(rules.country_code)
            sub = np.flatnonzero(better)
            if main is None:
                chunks.append(_failed(idx[sub], _SCALAR))
            else:
                chunks.append(_finish_parse(idx[sub], rules.country_code, _take(rest, sub), main))
            plain[idx[sub]] = False
    idx = np.flatnonzero(plain)
    if len(idx):
        chunks.append(_finish_parse(idx, rules.country_code, _take(digits, idx), rules))
    return chunks


def _statuses(chunks: list[_Chunk], n: int) -> np.ndarray:
    """Per row, the parse status (``_SCALAR`` for rows no chunk holds)."""
    status = np.full(n, _SCALAR, dtype=np.int8)
    for chunk in chunks:
        status[chunk.rows] = chunk.status
    return status


def _valid_for_region(nsn: pa.Array, rules: RegionRules) -> np.ndarray:
    """_number_type_helper(nsn, metadata) != UNKNOWN, per row."""
    lengths = _lengths(nsn)
    ok = _isin(lengths, rules.general_lengths)
    ok &= _match(nsn, rules.general) if ok.any() else ok
    typed = np.zeros(len(nsn), dtype=bool)
    for rule in rules.types:
        todo = ok & ~typed
        if rule.lengths:
            todo &= _isin(lengths, rule.lengths)
        if todo.any():
            idx = np.flatnonzero(todo)
            typed[idx] = _match(_take(nsn, idx), rule.pattern)
    out: np.ndarray = ok & typed
    return out


@dataclass
class _Valid:
    """is_valid_number per row of a parse (False unless parsed OK), region_code_for_number
    where valid, and the E.164 text of the valid rows as (rows, texts) pieces."""

    valid: np.ndarray
    where: np.ndarray
    e164: list[tuple[np.ndarray, pa.Array]]


def _validate(chunks: list[_Chunk], n: int, regions: bool = True) -> _Valid:
    """is_valid_number (with the E.164 text and, with ``regions``, region_code_for_number)
    for a parse of ``n`` digit strings."""
    out = _Valid(np.zeros(n, dtype=bool), np.full(n if regions else 0, "", dtype=object), [])
    for chunk in chunks:
        idx = np.flatnonzero(chunk.status == _OK)
        if len(idx) == 0:
            continue
        nsn = _take(chunk.nsn, idx)
        good, where = _validate_country(nsn, chunk.cc, regions)
        if good.any():
            rows = chunk.rows[idx[good]]
            out.valid[rows] = True
            if regions:
                out.where[rows] = where[good]
            texts = pc.binary_join_element_wise(
                lit(f"+{chunk.cc}"), _take(nsn, np.flatnonzero(good)), lit("")
            )
            out.e164.append((rows, texts))
    return out


def _validate_country(
    nsn: pa.Array, code: int, regions: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """is_valid_number for national numbers of one country code, and (with ``regions``)
    region_code_for_number where valid: the only region; else the first whose leading digits
    match, or (regions without leading digits) where the number is valid."""
    valid = np.zeros(len(nsn), dtype=bool)
    where = np.full(len(nsn) if regions else 0, "", dtype=object)
    candidates = country_rules(code)
    left = np.arange(len(nsn))
    for i, rules in enumerate(candidates):
        if len(left) == 0:
            break
        if i == 1:
            # a number valid nowhere has no region: keep only numbers of some type (the union
            # of the country's number patterns, as nanp_pattern is for +1)
            left = left[_match(_take(nsn, left), full_pattern(country_type_pattern(code)))]
            if len(left) == 0:
                break
        sub = _take(nsn, left)
        if rules.leading_digits is not None and len(candidates) > 1:
            hit = _match(sub, rules.leading_digits)
            good = np.zeros(len(left), dtype=bool)
            if hit.any():
                good[hit] = _valid_for_region(_take(sub, np.flatnonzero(hit)), rules)
        else:
            hit = good = _valid_for_region(sub, rules)
        valid[left[good]] = True
        if regions:
            where[left[good]] = rules.region
        left = left[~hit]
    return valid, where


@functools.cache
def _parse_error_result(error_type: int) -> PhoneResult:
    exc = NumberParseException(error_type, "")
    return PhoneResult(
        code="phone.invalid", message=f"{_describe_parse_error(exc)}; write it like +13105550101"
    )


@functools.cache
def _not_valid_result(where: str) -> PhoneResult:
    return PhoneResult(
        code="phone.invalid",
        message=f"not a valid phone number for {where}; check the digits and the country code",
    )


_SEVEN_DIGITS = PhoneResult(code="phone.invalid", message="only 7 digits: the area code is missing")


def _byte_weights(shift: int, dtype: type) -> np.ndarray:
    """Per byte value: 1 for a digit, 0 for punctuation parse() drops (space ( ) . -), and
    ``1 << shift`` for anything else, so that one running sum counts both."""
    weights: np.ndarray = np.full(256, 1 << shift, dtype=dtype)
    weights[np.frombuffer(b"0123456789", dtype=np.uint8)] = 1
    weights[np.frombuffer(b" ().-", dtype=np.uint8)] = 0
    return weights


_BYTE_WEIGHTS = {16: _byte_weights(16, np.uint32), 32: _byte_weights(32, np.uint64)}


def _cell_digits(values: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (large_string, no nulls): its ASCII digits, how many there are, whether the
    cell has the simple shape the vectorized parser handles, and whether it starts with "+".
    Read straight from the UTF-8 bytes, a block of rows at a time."""
    n = len(values)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    if buffers[2] is None or n == 0:
        data = np.zeros(0, dtype=np.uint8)
    else:
        data = np.frombuffer(buffers[2], dtype=np.uint8)
    count = np.zeros(n, dtype=np.int32)  # a cell is at most 2 GB
    others = np.zeros(n, dtype=np.int32)
    plus = np.zeros(n, dtype=bool)
    kept = []
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(n, lo + _BLOCK_ROWS)
        block = data[offsets[lo] : offsets[hi]]
        starts, ends = offsets[lo:hi] - offsets[lo], offsets[lo + 1 : hi + 1] - offsets[lo]
        sizes = ends - starts
        # digits and other bytes per row with one running sum: digits in the low bits, others
        # in the high bits (wide enough for the longest cell; the sum may wrap, differences not)
        shift = 16 if int(sizes.max(initial=0)) < 2**16 else 32
        weights = _BYTE_WEIGHTS[shift][block]
        running: np.ndarray = np.zeros(len(block) + 1, dtype=weights.dtype)
        np.cumsum(weights, dtype=weights.dtype, out=running[1:])
        both: np.ndarray = running[ends] - running[starts]
        count[lo:hi] = both & ((1 << shift) - 1)
        others[lo:hi] = both >> shift
        nonempty = np.flatnonzero(sizes > 0)
        plus[lo + nonempty] = block[starts[nonempty]] == ord("+")
        kept.append(block[(block - ord("0")) < 10])  # uint8: bytes below "0" wrap to 246 and up
    simple = (others == plus) & (np.diff(offsets) <= _MAX_PHONE_TEXT) & (count >= 3)
    digit_ends = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=digit_ends[1:])
    digit_bytes = np.concatenate(kept) if kept else np.zeros(0, dtype=np.uint8)
    digits = pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(digit_ends), pa.py_buffer(digit_bytes)]
    )
    return digits, count, simple, plus


#: Rows per block in _cell_digits (its scratch arrays take about 10 bytes per cell byte).
_BLOCK_ROWS = 1 << 17


@dataclass
class _Search:
    """The end of normalize_phone for distinct national numbers not valid in the region: the
    issue, the issue a number cell gets instead (lost leading 0, 8 digits), and whether the
    scalar path must decide."""

    problems: np.ndarray
    number_cell: np.ndarray
    scalar: np.ndarray


def _objects(items: Iterable[PhoneResult]) -> np.ndarray:
    """An object array of ``items``."""
    listed = list(items)
    out = np.empty(len(listed), dtype=object)
    out[:] = listed
    return out


def _search_regions(
    digits: pa.Array, region: str, rules: RegionRules, guess: bool = True
) -> _Search:
    """normalize_phone's answer for distinct digit strings (8 or more, written without "+")
    not valid in ``region``: a lost leading 0, else the first region they are valid in
    (ambiguous_region), else not valid."""
    n = len(digits)
    problems = np.full(n, None, dtype=object)
    number_cell = np.full(n, None, dtype=object)
    count = _lengths(digits)
    # "0" + digits valid in the region: a number cell that lost its leading zero
    zeroed = _parse_national(pc.binary_join_element_wise(lit("0"), digits, lit("")), rules)
    scalar = _statuses(zeroed, n) == _SCALAR
    zvalid = _validate(zeroed, n)
    for rows, texts in zvalid.e164:
        lost = _objects(
            PhoneResult(
                "",
                "excel.lost_leading_zero",
                f"looks like 0{text} lost its leading 0 in Excel ({fixed}); format the column "
                "as Text and re-enter it",
            )
            for text, fixed in zip(_take(digits, rows).to_pylist(), texts.to_pylist(), strict=True)
        )
        nine = count[rows] >= 9
        problems[rows[nine]] = lost[nine]
        number_cell[rows[~nine]] = lost[~nine]
    done = zvalid.valid & (count >= 9)
    # no guess for a placeholder, nor (in North America) for a local area code's number
    unguessable = _match(digits, PLACEHOLDER_PATTERN)
    if rules.country_code == 1:
        unguessable |= _match(digits, nanp_area_pattern())
    if not guess:  # the row's own country says where it is: no other's is guessed
        unguessable[:] = True
    done |= unguessable
    # then "+" + digits, then the digits in each alternative region, in order
    tries: list[RegionRules | None] = [None]
    tries += [region_rules(r) for r in ALTERNATIVE_REGIONS if r != region.upper()]
    for other in tries:
        cand = np.flatnonzero(~done)
        if len(cand) == 0:
            break
        if other is not None:
            trunk = written_trunk_prefix(other.region)
            if trunk:
                cand = cand[_match(_take(digits, cand), "^" + re.escape(trunk))]
            pattern = national_candidate_pattern(other.region)
            if pattern is not None:
                sub = _take(digits, cand)
                cand = cand[_match(sub, pattern) | _match(sub, other.idd)]
        if len(cand) == 0:
            continue
        sub = _take(digits, cand)
        found = _parse_international(sub) if other is None else _parse_national(sub, other)
        scalar[cand[_statuses(found, len(cand)) == _SCALAR]] = True
        valid = _validate(found, len(cand))
        for rows, texts in valid.e164:
            problems[cand[rows]] = _objects(
                PhoneResult(
                    "",
                    "phone.ambiguous_region",
                    f"no country code and not a valid {region} number; if it is {number} "
                    f"({where}), write it with + and the country code, or pass --default-region",
                )
                for number, where in zip(texts.to_pylist(), valid.where[rows], strict=True)
            )
        done[cand[valid.valid]] = True
    problems[~done | (unguessable & (problems == None))] = _not_valid_result(region)  # noqa: E711
    return _Search(problems, number_cell, scalar)


def _scalar_cells(
    cells: pa.Array, region: str, was_number: np.ndarray | None, guess: bool = True
) -> tuple[np.ndarray, pa.Array]:
    """normalize_phone for each cell (each distinct text once; number cells on their own):
    the issues (None where there is none) and the E.164 texts."""
    results = map_distinct(cells, functools.partial(normalize_phone, region=region, guess=guess))
    if was_number is not None:
        for j in np.flatnonzero(was_number):
            results[j] = normalize_phone(
                cells[int(j)].as_py(), region, was_number=True, guess=guess
            )
    problems = np.empty(len(results), dtype=object)
    problems[:] = [r if r.code else None for r in results]
    return problems, pa.array([r.e164 for r in results], pa.large_string())


#: Below this many cells, phones_column uses the scalar path only.
_VECTORIZE_FROM = 32


def phones_column(
    values: pa.Array,
    region: str = "US",
    was_number: np.ndarray | None = None,
    guess: bool = True,
) -> PhoneColumn:
    """Normalize a whole column of phone cells: per row, what :func:`normalize_phone` gives.

    Cells of the common shapes (digits with spaces, ``-``, ``.``, brackets, an optional leading
    ``+``) are parsed and validated in bulk: libphonenumber's parse and validation steps run
    as Arrow (RE2) kernels with patterns from libphonenumber's own metadata, for any default
    region. That includes, for each distinct national number not valid there, the search for
    the region it belongs to. Any other cell goes through :func:`normalize_phone` once.
    """
    region_country_code(region)
    rules = region_rules(region)
    assert rules is not None
    values = strip(to_arrow(values))
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    if values.null_count:
        values = pc.fill_null(values, lit(""))
    n = len(values)
    if n < _VECTORIZE_FROM:
        # a handful of cells: the scalar rules are quicker than compiling the patterns
        problems, e164 = _scalar_cells(values, region, was_number, guess)
        return PhoneColumn(e164, problems)
    digits, count, simple, plus = _cell_digits(values)
    chunks: list[_Chunk] = []
    for mask, international in ((simple & plus, True), (simple & ~plus, False)):
        idx = np.flatnonzero(mask)
        if len(idx):
            sub = _take(digits, idx)
            parsed = _parse_international(sub) if international else _parse_national(sub, rules)
            chunks += _remap(parsed, idx)
    status = _statuses(chunks, n)
    found = _validate(chunks, n, regions=False)
    problems = np.full(n, None, dtype=object)
    for err in np.unique(status[simple & (status >= 0)]):
        problems[simple & (status == err)] = _parse_error_result(int(err))
    invalid = simple & (status == _OK) & ~found.valid
    problems[invalid & plus] = _not_valid_result("its country")
    national = invalid & ~plus
    seven = national & (count == 7) & (rules.country_code == 1)
    problems[seven] = _SEVEN_DIGITS
    problems[national & (count < 8) & ~seven] = _not_valid_result(region)
    scalar = ~simple & pc.not_equal(values, lit("")).to_numpy(zero_copy_only=False)
    scalar |= simple & ((status == _NO_CODE) | (status == _SCALAR))
    rows = np.flatnonzero(national & (count >= 8))
    if len(rows):
        encoded = pc.dictionary_encode(_take(digits, rows))
        which = encoded.indices.to_numpy(zero_copy_only=False)
        search = _search_regions(encoded.dictionary, region, rules, guess)
        problems[rows] = search.problems[which]
        scalar[rows] |= search.scalar[which]
        if was_number is not None:
            lost = search.number_cell[which]
            hit = was_number[rows] & (lost != None)  # noqa: E711 - elementwise on an object array
            problems[rows[hit]] = lost[hit]
    pieces = found.e164
    fallback = np.flatnonzero(scalar)
    if len(fallback):
        flags = was_number[fallback] if was_number is not None else None
        problems[fallback], texts = _scalar_cells(_take(values, fallback), region, flags, guess)
        pieces.append((fallback, texts))
    e164 = _assemble(n, pieces)
    del chunks, found, digits, pieces
    pa.default_memory_pool().release_unused()  # the intermediates above: give the pages back
    return PhoneColumn(e164, problems)


def phones_by_region(
    values: pa.Array,
    regions: np.ndarray,
    was_number: np.ndarray | None = None,
    given: np.ndarray | None = None,
) -> PhoneColumn:
    """:func:`phones_column` where each row has its own default region (a sheet's country
    column): the rows of each region are normalized together, in bulk. ``given``: the rows
    whose own country named their region (no other country is guessed for them)."""
    keys = regions if given is None else np.char.add(regions.astype("U3"), np.where(given, "!", ""))
    codes, inverse = np.unique(keys, return_inverse=True)
    if len(codes) == 1:
        code = str(codes[0])
        return phones_column(values, code.rstrip("!"), was_number, not code.endswith("!"))
    values = to_arrow(values)
    n = len(values)
    problems = np.full(n, None, dtype=object)
    pieces = []
    for k, code in enumerate(codes.tolist()):
        rows = np.flatnonzero(inverse == k)
        flags = was_number[rows] if was_number is not None else None
        region, guess = str(code).rstrip("!"), not str(code).endswith("!")
        part = phones_column(_take(values, rows), region, flags, guess)
        problems[rows] = part.problems
        pieces.append((rows, part.e164))
    return PhoneColumn(_assemble(n, pieces), problems)
