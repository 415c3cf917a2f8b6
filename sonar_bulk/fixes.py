"""Fixes in bulk: the value an issue's message suggests for its cell, for the issue codes whose
message carries one. The checks compute the fix (the E.164 of a phone, the ZIP with its zero,
the likely address) and write it in the message; this reads it back, so the page applies
exactly what the message says, for every cell with that issue at once.

A national number that is no number of the default region (``phone.ambiguous_region``) has no
fix in bulk: its message names a country the number fits, but that is a guess (a UK mobile,
07700 900123, also fits Germany), and a guess applied to every such cell would text another
country. Each is fixed in its cell, or with the "Default region" setting.
"""

from __future__ import annotations

import re

#: Per issue code: how the page names its fix, and the pattern of the fixed value in the
#: message (its first group).
FIXES: dict[str, tuple[str, re.Pattern[str]]] = {
    # "looks like 07700900123 lost its leading 0 in Excel (+447700900123); ..." (a phone)
    # "looks like ZIP 02134 lost its leading 0 in Excel; ..." (a ZIP code)
    "excel.lost_leading_zero": (
        "Restore the leading zero",
        re.compile(r"\((\+\d{6,16})\)|^looks like ZIP (\d{5}) lost"),
    ),
    # "extension 12 dropped: SMS goes to +13105550101"
    "phone.extension": (
        "Normalize the phone",
        re.compile(r"SMS goes to (\+\d{6,16})$"),
    ),
    # "gmial.com looks like a typo of gmail.com; did you mean ann@gmail.com? Fix the cell ..."
    "email.typo": (
        "Fix the email domain",
        re.compile(r"did you mean (\S+@\S+?)\? "),
    ),
}


def fix_label(code: str) -> str | None:
    """The page's name of the fix of ``code`` (None: no fix in bulk)."""
    entry = FIXES.get(code)
    return entry[0] if entry else None


def suggested_fix(code: str, message: str) -> str | None:
    """The value the message of an issue ``code`` suggests for its cell, or None."""
    entry = FIXES.get(code)
    if entry is None:
        return None
    found = entry[1].search(message)
    if found is None:
        return None
    return next((g for g in found.groups() if g), None)
