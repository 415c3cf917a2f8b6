"""libphonenumber metadata the fast paths share (the validator and the emulator).

Kept apart from :mod:`sonar_bulk.normalize` so the emulator can use it without importing
pyarrow and numpy.
"""

from __future__ import annotations

import functools

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

__all__ = ["nanp_pattern", "region_country_code"]


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
