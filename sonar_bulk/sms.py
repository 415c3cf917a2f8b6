"""SMS text: how a text is split into segments (GSM-7 or UCS-2), and message templates with
``{{field}}`` merge fields (``{{field|fallback}}``: the text sent when the field is blank).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

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


#: What a merge value is trimmed of before it is judged blank (as normalize.strip trims a cell).
SPACES = " \t\r\n\v\f\u00a0\u2007\u202f\u3000\u200b\ufeff"
#: Characters that show nothing but are not categorized as spaces or formats: Hangul fillers,
#: the blank Braille pattern.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _shows_nothing(ch: str) -> bool:
    return (
        ch.isspace()
        or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp")
        or ch in _BLANK_LOOKING
    )


def trimmed(text: str) -> str:
    """``text`` without what shows nothing at either end: every kind of space and line break,
    zero-width and joining characters, soft hyphens, fillers. A merge value that is only
    those is blank (an em space or a zero-width joiner must not pass for a first name)."""
    start, end = 0, len(text)
    while start < end and _shows_nothing(text[start]):
        start += 1
    while end > start and _shows_nothing(text[end - 1]):
        end -= 1
    return text[start:end]


class Field(NamedTuple):
    """One ``{{name}}`` or ``{{name|fallback}}`` tag: the field name as written (spaces
    trimmed), and the text sent when the row's value is blank (None: no fallback given; ``''``
    from ``{{name|}}``: blank is fine here)."""

    name: str
    fallback: str | None = None


@dataclass(frozen=True)
class MergeTemplate:
    """A message text parsed into literal text and ``{{field}}`` placeholders.

    ``parts`` are literal strings and :class:`Field` tags, in order; ``errors`` describes
    broken tags, each naming its 1-based character position. A text with errors must not be
    sent.
    """

    parts: tuple[str | Field, ...]
    errors: tuple[str, ...]

    @property
    def fields(self) -> list[str]:
        """The field names used, in order, without repeats."""
        return list(dict.fromkeys(p.name for p in self.parts if isinstance(p, Field)))

    @property
    def bare_fields(self) -> list[str]:
        """The field names used at least once without a fallback, in order, without repeats:
        those a blank value leaves a gap in."""
        return list(
            dict.fromkeys(p.name for p in self.parts if isinstance(p, Field) and p.fallback is None)
        )

    def blanks(self, values: dict[str, str], resolve: Callable[[str], str] = str) -> list[str]:
        """The :attr:`bare_fields` whose value (``values[resolve(name)]``) is blank: missing,
        empty or only spaces."""
        return [f for f in self.bare_fields if not trimmed(values.get(resolve(f), ""))]

    def render(self, values: dict[str, str], resolve: Callable[[str], str] = str) -> str:
        """Fill the placeholders: ``values[resolve(name)]``, trimmed; a blank value gives the
        tag's fallback ('' when it has none)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = trimmed(values.get(resolve(part.name), ""))
            out.append(value or part.fallback or "")
        return "".join(out)


@functools.lru_cache(maxsize=4096)
def parse_merge(text: str) -> MergeTemplate:
    """Parse ``{{field}}`` and ``{{field|fallback}}`` placeholders. The first ``|`` in a tag
    starts its fallback (the rest of the tag, spaces around it trimmed, may hold more ``|``).
    An unclosed ``{{``, a stray ``}}`` (or a ``}`` right after a tag), an empty ``{{}}`` or
    ``{{|x}}`` and a brace inside a tag are errors (``merge.syntax``).

    >>> parse_merge("Hi {{ first_name | there }}!").parts
    ('Hi ', Field(name='first_name', fallback='there'), '!')
    >>> parse_merge("Hi {{first name}}, {{unclosed").errors
    ('{{ at character 20 is never closed with }}',)
    """
    parts: list[str | Field] = []
    errors: list[str] = []
    pos = literal_from = 0
    opening = closing = -2  # the next "{{" and "}}" at or after pos (-1: none), found lazily

    def seek(mark: str, current: int) -> int:
        return current if current >= pos or current == -1 else text.find(mark, pos)

    while True:
        opening, closing = seek("{{", opening), seek("}}", closing)
        if opening == -1 and closing == -1:
            break
        if opening == -1 or (closing != -1 and closing < opening):
            errors.append(f"}}}} at character {closing + 1} closes no {{{{")
            pos = closing + 2
            continue
        end = closing if closing > opening + 1 else text.find("}}", opening + 2)
        if end == -1:
            errors.append(f"{{{{ at character {opening + 1} is never closed with }}}}")
            break
        inside = text[opening + 2 : end]
        field, bar, fallback = inside.partition("|")
        name = field.strip()
        if "{" in inside or "}" in inside:
            errors.append(f"{{{{ at character {opening + 1} holds a brace; write {{{{field}}}}")
        elif not name:
            where = f"at character {opening + 1}"
            errors.append(
                f"{{{{{inside.strip()}}}}} {where} has no column name before its |; write "
                f"{{{{field{inside.strip()}}}}}"
                if bar
                else f"empty {{{{}}}} {where}; put a column name in it"
            )
        else:
            parts.append(text[literal_from:opening])
            parts.append(Field(name, trimmed(fallback) if bar else None))
            literal_from = end + 2
            if text[end + 2 : end + 3] == "}" and text[end + 2 : end + 4] != "}}":
                errors.append(
                    f"}} at character {end + 3} is a stray brace after {{{{{inside}}}}}; "
                    "it would be sent as text"
                )
        pos = end + 2
    parts.append(text[literal_from:])
    if len(errors) > 3:
        errors[3:] = [f"and {len(errors) - 3:,} more broken tags"]
    return MergeTemplate(tuple(p for p in parts if p), tuple(errors))


def merge_fields(text: str) -> list[str]:
    """The ``{{field}}`` names used in ``text``, in order, without repeats."""
    return parse_merge(text).fields
