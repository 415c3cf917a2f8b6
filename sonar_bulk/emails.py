"""Email addresses: their syntax (:func:`address_problem`, with ``email-validator``), what is sent
(:func:`sent_form`), and the likely typos of the big providers' domains (:func:`domain_typo`).

Syntax only: no DNS lookup is ever made. Internationalized addresses (RFC 6531:
``élif@example.com``, ``用户@例子.中国``) are valid. :mod:`sonar_bulk.checks` checks a
column with :data:`FAST_PATTERN` first, which accepts in bulk the addresses that are certainly
valid; only the others (odd shapes, long ones, internationalized domains) reach
``email-validator``, each distinct text once.
"""

from __future__ import annotations

import functools
import re

#: Characters of an unquoted local part besides letters and digits (RFC 5322's atext).
_ATEXT = r"!#$%&'*+/=?^_`{|}~\-"
#: An address email-validator certainly accepts (syntax only, no DNS): a dot-atom local part of
#: ASCII atext, letters and numbers of any script (RFC 6531: ``élif.4``); an ASCII domain of
#: hostname labels under an alphabetic top-level domain; and nothing :data:`NOT_FAST_PATTERN`
#: matches (``--``, a special-use name such as ``.test``).
#: What it leaves out is not invalid: it goes to :func:`address_problem`. At most 84 UTF-8
#: bytes, so that no normalization can take it past the 254 bytes of an address.
FAST_PATTERN = (
    r"^(?:[A-Za-z0-9" + _ATEXT + r"\p{L}\p{N}]+)(?:\.[A-Za-z0-9" + _ATEXT + r"\p{L}\p{N}]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63})$"
)
FAST_MAX_BYTES = 84
#: Top-level domains that are names for special use (RFC 6761...), never a mailbox's.
SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")
#: What :data:`FAST_PATTERN` can't rule out without look-arounds (RE2 has none): a ``--``
#: (an IDNA label, ``xn--``, is the library's to check), a special-use top-level domain, and
#: a character beyond the Basic Multilingual Plane (RE2's Unicode tables are newer than
#: Python's: a letter added since, U+11F04, is one to RE2 and unassigned to email-validator;
#: every BMP character is checked to agree). Matched case-insensitively; an address it
#: matches takes the slow path.
NOT_FAST_PATTERN = r"--|\.(?:" + "|".join(SPECIAL_USE) + r")$|" + "[\U00010000-\U0010ffff]"


def address_problem(text: str) -> str | None:
    """Why ``text`` is not a valid email address (a clause for a message), or None when it is.

    >>> address_problem("élif.4@example.com") is None
    True
    >>> address_problem("ana..lopez@example.com")
    'an email address cannot have two periods in a row'
    """
    import email_validator

    try:
        email_validator.validate_email(
            text,
            check_deliverability=False,  # syntax only: never a DNS query
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except email_validator.EmailNotValidError as exc:
        reason = re.sub(r"\. (\w)", lambda m: "; " + m.group(1).lower(), str(exc).strip())
        return reason[:1].lower() + reason[1:].rstrip(".")
    return None


def sent_form(text: str) -> str:
    """The address as it is sent: as typed, except that the domain is lowercased (a domain has
    no case; a local part may: ``Ana@Example.COM`` → ``Ana@example.com``)."""
    local, at, domain = text.rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else text


# ---------------------------------------------------------------------------------------------
# Typos of the big providers' domains

#: The mail providers most addresses of a customer list are at. A domain one slip away from
#: one of these (``gmial.com``, ``gmail.con``) is a warning with the likely fix.
PROVIDERS = (
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "comcast.net",
    "verizon.net",
    "sbcglobal.net",
    "att.net",
    "protonmail.com",
    "yandex.com",
    "gmx.com",
)
#: Real domains one slip away from a provider: never reported.
REAL_NEIGHBOURS = frozenset({"mail.com", "email.com", "ymail.com", "gmx.net", "hotmail.co.uk"})
#: Top-level domains typed for .com / .net. Some are real (:data:`REAL_TLDS`), so they count
#: only after a provider's own name, and a long one (``gmail.co``, never ``me.co``).
TLD_SLIPS = {
    "com": frozenset({"con", "cmo", "comm", "coom", "cpm", "vom", "xom", "ocm", "om", "co", "cm"}),
    "net": frozenset({"ner", "nte", "nett", "bet", "met", "ne", "nt"}),
}
REAL_TLDS = frozenset({"co", "cm", "om", "ne"})
#: Provider names shorter than this are compared only for a slip of the top-level domain (one
#: slip away from ``aol`` or ``me`` are many real names).
_MIN_NAME = 5


def _one_slip(typed: str, meant: str) -> bool:
    """Whether ``typed`` is ``meant`` with one letter left out, added, changed, or two
    neighbours swapped (``gmial`` for ``gmail``)."""
    if typed == meant or abs(len(typed) - len(meant)) > 1:
        return False
    if len(typed) == len(meant):
        diffs = [i for i, (a, b) in enumerate(zip(typed, meant, strict=True)) if a != b]
        if len(diffs) == 1:
            return True
        i = diffs[0]
        return (
            len(diffs) == 2
            and diffs[1] == i + 1
            and typed[i] == meant[i + 1]
            and typed[i + 1] == meant[i]
        )
    short, long = (typed, meant) if len(typed) < len(meant) else (meant, typed)
    i = next((k for k, (a, b) in enumerate(zip(short, long, strict=False)) if a != b), len(short))
    return short[i:] == long[i + 1 :]


@functools.lru_cache(maxsize=4096)
def domain_typo(domain: str) -> str | None:
    """The provider's domain ``domain`` is a likely typo of, or None: ``gmial.com`` →
    ``gmail.com``, ``gmail.con`` → ``gmail.com``, ``hotmial.co`` → ``hotmail.com``. Only when
    exactly one provider is that close, and never for a real neighbour (``ymail.com``).

    >>> domain_typo("gmial.com"), domain_typo("yaho.com"), domain_typo("gmail.co")
    ('gmail.com', 'yahoo.com', 'gmail.com')
    >>> domain_typo("example.co"), domain_typo("ymail.com"), domain_typo("hotmail.fr")
    (None, None, None)
    """
    domain = domain.lower()
    if domain in PROVIDERS or domain in REAL_NEIGHBOURS:
        return None
    name, _, tld = domain.partition(".")
    found = set()
    for provider in PROVIDERS:
        pname, _, ptld = provider.partition(".")
        long_name = len(pname) >= _MIN_NAME
        slip = tld in TLD_SLIPS.get(ptld, ()) and (long_name or tld not in REAL_TLDS)
        if tld != ptld and not slip:
            continue
        if name == pname or (long_name and _one_slip(name, pname)):
            found.add(provider)
    return found.pop() if len(found) == 1 else None
