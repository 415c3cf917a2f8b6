"""A sheet's country column: which phone region each of its cells names.

Exports write a customer's country as an ISO code (Mailchimp's ``CC``, Shopify's ``Default
Address Country Code``: ``DE``, ``DEU``), as a name (HubSpot's ``Country/Region``, Klaviyo's
``Country``: ``Germany``, ``Deutschland``, ``the Netherlands``) or now and then as a calling code
(``+49``). :func:`country_region` reads any of them as the two-letter region that
libphonenumber reads a national number with. The names are pycountry's (ISO 3166: the short,
official and common English names, and the names in a few languages exports are often written
in); only the informal names ISO leaves out (``UK``, ``England``, ``Russia``, ``Holland``...) are
listed here.
"""

from __future__ import annotations

import functools
import gettext
import re
import unicodedata

import phonenumbers
import pycountry

#: Languages whose country names are read too, besides English (pycountry's translations).
NAME_LANGUAGES = ("de", "es", "fr", "it", "nl", "pt")

#: Names people and exports use that ISO 3166 does not (folded as :func:`fold` folds them).
INFORMAL_NAMES = {
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "america": "US",
    "us virgin islands": "VI",
    "russia": "RU",
    "turkey": "TR",
    "czech republic": "CZ",
    "holland": "NL",
    "ivory coast": "CI",
    "macedonia": "MK",
    "swaziland": "SZ",
    "burma": "MM",
    "cape verde": "CV",
    "east timor": "TL",
    "vatican": "VA",
    "vatican city": "VA",
    "brunei": "BN",
    "macau": "MO",
    "palestine": "PS",
    "micronesia": "FM",
    "uae": "AE",
    "kosovo": "XK",
    "dr congo": "CD",
    "drc": "CD",
}

_PAREN = re.compile(r"\([^)]*\)")
_CALLING_CODE = re.compile(r"^\+?\s*(\d{1,3})$")


def fold(text: str) -> str:
    """A country cell as it is looked up: no accents, case, punctuation or leading "the".

    >>> fold("  The Netherlands "), fold("Côte d'Ivoire"), fold("U.S.A.")
    ('netherlands', 'cote d ivoire', 'usa')
    """
    text = unicodedata.normalize("NFKD", text.replace("\ufeff", ""))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace(".", "").replace("'", " ").replace("’", " ").replace("&", " and ")
    words = re.sub(r"[\W_]+", " ", text).split()
    if words and words[0] == "the":
        words = words[1:]
    return " ".join(w for w in words if w not in ("of", "and", "the"))


def _variants(name: str) -> list[str]:
    """Other ways people write a name as ISO writes it: ``Korea, Republic of`` is also
    ``Republic of Korea`` (and ``Korea``); ``Holy See (Vatican City State)`` is ``Holy See``."""
    out = []
    bare = _PAREN.sub("", name).strip()
    if bare != name:
        out.append(bare)
    head, sep, tail = bare.partition(", ")
    if sep:
        out += [f"{tail} {head}", head]
    return out


@functools.cache
def _names() -> dict[str, str]:
    """Every folded name and code → region. Names as ISO and its translations write them come
    first; a variant (:func:`_variants`) only where no name is the same and no other country
    has the same variant (``Korea`` is two)."""
    exact: dict[str, set[str]] = {}
    loose: dict[str, set[str]] = {}
    translations = [
        gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang], fallback=True)
        for lang in NAME_LANGUAGES
    ]
    for country in pycountry.countries:
        region = country.alpha_2
        names = [country.alpha_3]
        for attr in ("name", "official_name", "common_name"):
            name = getattr(country, attr, None)
            if name:
                names += [name] + [tr.gettext(name) for tr in translations]
        for name in names:
            exact.setdefault(fold(name), set()).add(region)
            for variant in _variants(name):
                loose.setdefault(fold(variant), set()).add(region)
    out = {key: next(iter(regions)) for key, regions in loose.items() if len(regions) == 1}
    out.update((key, next(iter(regions))) for key, regions in exact.items() if len(regions) == 1)
    out.update(INFORMAL_NAMES)
    out.pop("", None)
    return out


@functools.cache
def country_region(text: str) -> str | None:
    """The phone region a country cell names: an ISO 3166 code (two or three letters), a
    country name, or a calling code (``+44``, ``1``); None when it names none libphonenumber
    numbers (an unknown name, Antarctica), '' for a blank cell.

    >>> country_region("de"), country_region("Germany"), country_region("DEU")
    ('DE', 'DE', 'DE')
    >>> country_region("+44"), country_region("United States of America"), country_region("UK")
    ('GB', 'US', 'GB')
    >>> country_region("Atlantis") is None, country_region(" ")
    (True, '')
    """
    text = text.strip().lstrip("'").strip()
    if not text:
        return ""
    calling = _CALLING_CODE.match(text)
    if calling:
        main = str(phonenumbers.region_code_for_country_code(int(calling.group(1))))
        return main if main in phonenumbers.SUPPORTED_REGIONS else None
    key = fold(text)
    region = key.upper() if len(key) == 2 and key.isalpha() else _names().get(key)
    if region == "UK":  # not ISO's, but what people write
        region = "GB"
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def describe_unknown(text: str) -> str:
    """Why a country cell gives no region, in words for an issue message."""
    key = fold(text)
    known = pycountry.countries.get(alpha_2=key.upper()) if len(key) == 2 else None
    if known is None:
        known = pycountry.countries.get(alpha_3=key.upper()) if len(key) == 3 else None
    if known is not None:
        return f"{known.name} has no phone numbering plan of its own"
    return "not a country code or name this tool knows (such as DE, DEU or Germany)"
