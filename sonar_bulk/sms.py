"""SMS text: how a text is split into segments (GSM-7 or UCS-2), and message templates with
``{{field}}`` merge fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class MergeTemplate:
    """A message text parsed into literal text and ``{{field}}`` placeholders.

    ``parts`` alternates literal strings and field names (as written, spaces trimmed);
    ``errors`` describes broken tags, each naming its 1-based character position. A text with
    errors must not be sent.
    """

    parts: tuple[tuple[bool, str], ...]
    errors: tuple[str, ...]

    @property
    def fields(self) -> list[str]:
        """The field names used, in order, without repeats."""
        return list(dict.fromkeys(name for is_field, name in self.parts if is_field))

    def render(self, values: dict[str, str], resolve: Callable[[str], str] = str) -> str:
        """Fill the placeholders: ``values[resolve(name)]``, stripped ('' when missing)."""
        return "".join(
            values.get(resolve(text), "").strip() if is_field else text
            for is_field, text in self.parts
        )


@functools.lru_cache(maxsize=4096)
def parse_merge(text: str) -> MergeTemplate:
    """Parse ``{{field}}`` placeholders. An unclosed ``{{``, a stray ``}}``, an empty
    ``{{}}`` and a brace inside a tag are errors (``merge.syntax``).

    >>> parse_merge("Hi {{ first_name }}!").fields
    ['first_name']
    >>> parse_merge("Hi {{first name}}, {{unclosed").errors
    ('{{ at character 20 is never closed with }}',)
    """
    parts: list[tuple[bool, str]] = []
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
        name = text[opening + 2 : end].strip()
        if "{" in name or "}" in name:
            errors.append(f"{{{{ at character {opening + 1} holds a brace; write {{{{field}}}}")
        elif not name:
            errors.append(f"empty {{{{}}}} at character {opening + 1}; put a column name in it")
        else:
            parts.append((False, text[literal_from:opening]))
            parts.append((True, name))
            literal_from = end + 2
        pos = end + 2
    parts.append((False, text[literal_from:]))
    if len(errors) > 3:
        errors[3:] = [f"and {len(errors) - 3:,} more broken tags"]
    return MergeTemplate(tuple(p for p in parts if p[0] or p[1]), tuple(errors))


def merge_fields(text: str) -> list[str]:
    """The ``{{field}}`` names used in ``text``, in order, without repeats."""
    return parse_merge(text).fields
