"""libphonenumber metadata the fast paths share (the validator and the emulator).

Kept apart from :mod:`sonar_bulk.phones` so the emulator can use it without importing
pyarrow and numpy.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import (
    REGION_CODE_FOR_NON_GEO_ENTITY,
    UNKNOWN_REGION,
    PhoneMetadata,
    region_code_for_country_code,
)
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

__all__ = [
    "LengthRule",
    "RegionRules",
    "country_candidate_pattern",
    "country_codes",
    "country_rules",
    "country_type_pattern",
    "full_pattern",
    "main_rules",
    "national_candidate_pattern",
    "nanp_area_pattern",
    "nanp_pattern",
    "written_trunk_prefix",
    "region_country_code",
    "region_rules",
]


@functools.cache
def region_country_code(region: str) -> int:
    """Country calling code of a region (``US`` → 1); ValueError for an unknown region."""
    code = phonenumbers.country_code_for_region(region.upper())
    if code == 0:
        raise ValueError(f"unknown region {region!r}; use a two-letter code such as US or GB")
    return int(code)


@functools.cache
def nanp_pattern() -> str:
    """One RE2/re pattern matching every valid national number of country code +1.

    Built from libphonenumber's own metadata (every number type of every +1 region), so the
    vectorized path accepts exactly the numbers ``phonenumbers.is_valid_number`` accepts.
    """
    parts = []
    for region in COUNTRY_CODE_TO_REGION_CODE[1]:
        md = PhoneMetadata.metadata_for_region(region)
        if md is None:
            continue
        for attr in (
            "fixed_line",
            "mobile",
            "toll_free",
            "premium_rate",
            "shared_cost",
            "personal_number",
            "voip",
            "pager",
            "uan",
            "voicemail",
        ):
            desc = getattr(md, attr)
            if desc is not None and desc.national_number_pattern:
                parts.append(desc.national_number_pattern)
    return "^(?:" + "|".join(parts) + ")$"


@functools.cache
def nanp_area_pattern() -> str:
    """A pattern (RE2 and re) of the 10-digit numbers, or 11 with the leading 1, whose area
    code some +1 number uses: a number of that shape is a North American number with a wrong
    digit, not a foreign one. An area code is in use when a number of it with one of a few
    common exchanges is valid (libphonenumber's metadata)."""
    used = []
    for area in range(200, 1000):
        for exchange in ("234", "555", "456", "789", "301", "868", "972"):
            number = phonenumbers.PhoneNumber(
                country_code=1, national_number=int(f"{area}{exchange}4567")
            )
            if phonenumbers.is_valid_number(number):
                used.append(str(area))
                break
    return r"^1?(?:" + "|".join(used) + r")\d{7}$"


@functools.cache
def written_trunk_prefix(region: str) -> str:
    """The national (trunk) prefix ``region`` writes before its numbers at home (the UK's
    ``0`` in ``020 7946 0958``), when every format of its numbers that says how writes it; ''
    when it has none or leaves it out (the US's ``1``, Brazil's ``(11)``)."""
    md = PhoneMetadata.metadata_for_region(region.upper())
    if md is None or not md.national_prefix:
        return ""
    prefix = str(md.national_prefix)
    rules = [
        str(f.national_prefix_formatting_rule)
        for f in md.number_format
        if f.national_prefix_formatting_rule
    ]
    return prefix if rules and all(prefix in r for r in rules) else ""


# ---------------------------------------------------------------------------------------------
# Region rules for the vectorized parser (sonar_bulk.phones): libphonenumber's metadata, as
# anchored patterns. Nothing here is hand-written: every pattern, prefix and length comes from
# phonenumbers' PhoneMetadata, and the semantics mirrored are those of phonenumberutil.parse,
# is_valid_number and region_code_for_number.

#: The number types phonenumberutil._number_type_helper tries (mobile last: it is skipped when
#: the region's mobile and fixed-line patterns are the same).
_TYPE_ATTRS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


@dataclass(frozen=True)
class LengthRule:
    """Full-match ``pattern`` (``^(?:...)$``) that only counts for national numbers whose length
    is in ``lengths`` (empty: any length), as ``_is_number_matching_desc`` checks a desc."""

    pattern: str
    lengths: frozenset[int]


@dataclass(frozen=True)
class RegionRules:
    """What parsing and validating a national number needs from one region's metadata.

    Patterns are anchored (``^(?:...)`` for prefixes matched with ``re.match``, ``^(?:...)$``
    for ``fullmatch``) and valid for both Python's ``re`` and RE2. ``supported`` is False
    when the region uses a rule the vectorized path does not mirror; its numbers then take the
    scalar path.
    """

    region: str
    country_code: int
    #: general_desc pattern (``_match_national_number``), None when the region has none.
    general: str | None
    general_lengths: tuple[int, ...]
    local_lengths: frozenset[int]
    #: Number types, grouped by possible lengths: valid = general matches and one of these.
    types: tuple[LengthRule, ...]
    #: ``^(?:leading_digits)`` (a prefix match), for regions sharing a country code.
    leading_digits: str | None
    #: ``^(?:international_prefix)``; None when the region has none.
    idd: str | None
    #: ``^(?:national_prefix_for_parsing)``; None when the region has none.
    national_prefix: str | None
    #: national_prefix_transform_rule (``\\1`` style), None when there is none.
    transform: str | None
    #: the capturing group whose participation selects the transform (the last one).
    transform_group: int
    supported: bool


def _capturing_groups(pattern: str) -> list[str] | None:
    """The source of each capturing group of ``pattern`` in order; None when the pattern uses
    syntax this scanner does not follow (named groups, unbalanced parentheses)."""
    groups: list[tuple[int, int]] = []
    stack: list[int] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif ch == "(":
            if pattern[i + 1 : i + 2] == "?":
                if pattern[i + 2 : i + 3] not in (":",):
                    return None
                stack.append(-1)
            else:
                stack.append(len(groups))
                groups.append((i + 1, -1))
        elif ch == ")":
            if not stack:
                return None
            g = stack.pop()
            if g >= 0:
                groups[g] = (groups[g][0], i)
        i += 1
    if stack or in_class or len(groups) != re.compile(pattern).groups:
        return None
    return [pattern[a:b] for a, b in groups]


def _transform_supported(prefix: str, rule: str) -> tuple[bool, int]:
    """Whether the vectorized path can mirror ``rule`` applied with ``prefix``, and the group
    that decides (the last): it must never capture an empty string, so "took part" is "captured
    something"; and the rule must read the same in Python's and RE2's rewrite syntax."""
    groups = _capturing_groups(prefix)
    if not groups or len(groups) > 9:
        return False, 0
    if re.fullmatch(groups[-1], "") is not None:
        return False, 0
    if not re.fullmatch(r"(?:\d|\\[1-9](?!\d))*", rule):
        return False, 0
    return all(int(g) <= len(groups) for g in re.findall(r"\\(\d)", rule)), len(groups)


def _metadata(region: str, country_code: int) -> PhoneMetadata | None:
    if region == REGION_CODE_FOR_NON_GEO_ENTITY:
        return PhoneMetadata.metadata_for_nongeo_region(country_code, None)
    return PhoneMetadata.metadata_for_region(region, None)


def full_pattern(pattern: str | None) -> str | None:
    """``pattern`` anchored to match a whole string (None stays None)."""
    return f"^(?:{pattern})$" if pattern else None


def _prefix(pattern: str | None) -> str | None:
    """A pattern applied with ``re.match``: anchored at the start only. An empty pattern (not
    None) matches every number, as it does for phonenumbers."""
    return None if pattern is None else f"^(?:{pattern})"


@functools.cache
def region_rules(region: str, country_code: int = 0) -> RegionRules | None:
    """The rules of ``region`` (``001`` with ``country_code`` for a non-geographic entity);
    None for an unknown region."""
    region = region.upper()
    md = _metadata(region, country_code)
    if md is None or md.country_code is None:
        return None
    groups: dict[frozenset[int], list[str]] = {}
    same = bool(md.same_mobile_and_fixed_line_pattern)
    for attr in _TYPE_ATTRS:
        desc = getattr(md, attr)
        if desc is None or not desc.national_number_pattern or (attr == "mobile" and same):
            continue
        groups.setdefault(frozenset(desc.possible_length), []).append(desc.national_number_pattern)
    types = tuple(
        LengthRule("^(?:" + "|".join(f"(?:{p})" for p in pats) + ")$", lengths)
        for lengths, pats in groups.items()
    )
    general = md.general_desc
    transform = md.national_prefix_transform_rule or None
    npfp = md.national_prefix_for_parsing or None
    supported, group = True, 0
    if transform is not None:
        supported, group = _transform_supported(npfp or "", transform)
    if general is None or not general.possible_length:
        supported = False
    return RegionRules(
        region=region,
        country_code=int(md.country_code),
        general=full_pattern(general.national_number_pattern if general is not None else None),
        general_lengths=tuple(sorted(general.possible_length)) if general is not None else (),
        local_lengths=frozenset(general.possible_length_local_only if general is not None else ()),
        types=types,
        leading_digits=_prefix(md.leading_digits),
        idd=_prefix(md.international_prefix),
        national_prefix=_prefix(npfp),
        transform=transform,
        transform_group=group,
        supported=supported,
    )


@functools.cache
def country_rules(country_code: int) -> tuple[RegionRules, ...]:
    """The regions of a country calling code, in libphonenumber's order (the main one first;
    ``001`` for a non-geographic entity); empty for an unknown code."""
    out = []
    for region in COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        rules = region_rules(region, country_code)
        if rules is not None:
            out.append(rules)
    return tuple(out)


@functools.cache
def country_codes() -> frozenset[int]:
    """Every country calling code libphonenumber knows (geographic or not)."""
    return frozenset(COUNTRY_CODE_TO_REGION_CODE)


@functools.cache
def main_rules(country_code: int) -> RegionRules | None:
    """The rules parse() uses for a number with this country code: those of the main region
    (``region_code_for_country_code``), or of the non-geographic entity."""
    region = region_code_for_country_code(country_code)
    if region == UNKNOWN_REGION:
        return None
    return region_rules(region, country_code)


@functools.cache
def country_candidate_pattern(country_code: int) -> str | None:
    """A full-match pattern every national number valid for this country code matches (the
    union of its regions' general patterns): a cheap necessary condition. None: none valid."""
    parts = [r.general[4:-2] for r in country_rules(country_code) if r.general]
    return "|".join(f"(?:{p})" for p in parts) or None


@functools.cache
def national_candidate_pattern(region: str) -> str | None:
    """A full-match pattern that every digit string parse(digits, region) reads as a valid
    number matches, unless the digits start with the region's international prefix: a cheap
    necessary condition. None when the region's prefix rules make one hard to state.

    parse() may take the country code, then a national prefix of the region, then one of the
    country's main region, off the front; what is left must match a general pattern of one of
    the country's regions.
    """
    rules = region_rules(region)
    if rules is None:
        return None
    main = main_rules(rules.country_code)
    prefixes = []
    for r in (rules, main):
        if r is None or r.transform is not None:
            return None
        raw = r.national_prefix[4:-1] if r.national_prefix else ""
        if "$" in raw or "^" in raw:
            return None
        prefixes.append(f"(?:{raw})?" if raw else "")
    numbers = country_candidate_pattern(rules.country_code)
    if numbers is None:
        return "^$"  # no number is valid there: only the empty string, which is never asked
    return f"^(?:{rules.country_code})?{prefixes[0]}{prefixes[1]}(?:{numbers})$"


@functools.cache
def country_type_pattern(country_code: int) -> str | None:
    """A full-match pattern every national number valid for this country code matches (any
    number type of any of its regions, lengths aside): what ``nanp_pattern`` is for +1, for
    any code. None: no number is valid there."""
    parts = [rule.pattern[4:-2] for r in country_rules(country_code) for rule in r.types]
    return "|".join(f"(?:{p})" for p in parts) or None
