"""The checks :func:`sonar_bulk.validation.validate_sheet` runs on a sheet's columns: one per
column type (:data:`CHECKS`), custom properties, a campaign's send_at, a message's merge fields,
duplicate keys. Each reports its issues to a :class:`~sonar_bulk.issues.Collector` and returns
the column's normalized values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sonar_bulk import emails
from sonar_bulk import normalize as nz
from sonar_bulk.issues import Collector, Severity
from sonar_bulk.phonemeta import region_country_code
from sonar_bulk.phones import PhoneResult, phones_by_region, phones_column
from sonar_bulk.schema import (
    CONSENT_HELP,
    OPT_OUT_HELP,
    PROPERTY_TYPES,
    HeaderMap,
    SheetKind,
    header_key,
)
from sonar_bulk.sheets import Sheet
from sonar_bulk.sms import parse_merge, sms_segments

# ---------------------------------------------------------------------------------------------
# Per type checks: a Cell (one column and where to report its issues) → normalized values


@dataclass(frozen=True)
class Cell:
    """What a per-type check gets: one column's stripped values and where to report."""

    values: pa.Array
    blank: np.ndarray
    idx: int | None
    name: str
    out: Collector
    sheet: Sheet
    #: --default-region: how phones without a country code and ZIP codes are read.
    region: str
    #: Per row, the region a country column gives it (``region`` where it gives none); None
    #: when the sheet has no country column.
    regions: np.ndarray | None = None
    #: Per row, whether the region is the row's own (its country cell named it): a number not
    #: valid there is not guessed to be another country's.
    given: np.ndarray | None = None
    #: Per row, the column its value came from (-1 where blank), when several columns feed
    #: this field (an export's phones, Google's labelled pairs); None when one column does.
    columns: np.ndarray | None = None

    def report(
        self, positions: np.ndarray, code: str, message: Any, severity: Severity = "error"
    ) -> None:
        if self.columns is None or len(positions) == 0:
            self.out.add(positions, self.idx, self.values, code, severity, message, self.name)
            return
        # each issue names the column its row's value came from
        positions = np.asarray(positions, dtype=np.int64)
        where = self.columns[positions]
        for column in np.unique(where):
            mine = where == column
            idx = int(column) if column >= 0 else self.idx
            part = message
            if isinstance(message, (pa.Array, pa.ChunkedArray)):
                part = message.filter(pa.array(mine))
            elif isinstance(message, (list, np.ndarray)):
                part = np.asarray(message, dtype=object)[mine].tolist()
            self.out.add(positions[mine], idx, self.values, code, severity, part, self.name)


def _check_phone(c: Cell) -> pa.Array:
    flags = c.sheet.numeric.get(c.idx) if c.idx is not None else None
    if c.columns is not None and c.idx is not None:
        flags = _number_cells(c.sheet, c.columns)
    if c.regions is None:
        result = phones_column(c.values, c.region, flags)
    else:
        result = phones_by_region(c.values, c.regions, flags, c.given)
    problems = result.problems
    e164 = result.e164
    if flags is not None and flags.any():
        # A workbook number cell of 10+ digits with at most 6 significant ones is what Excel
        # keeps of a phone it showed as 1.31056E+10: the last digits are gone.
        rounded = flags & pc.match_substring_regex(c.values, r"^\d{1,6}0{4,}$").to_numpy(
            zero_copy_only=False
        )
        rounded &= pc.utf8_length(c.values).to_numpy(zero_copy_only=False) >= 10
        for at in np.flatnonzero(rounded).tolist():
            text = c.values[at].as_py()
            shown = f"{text[0]}.{text[1:6].rstrip('0') or '0'}E+{len(text) - 1}"
            problems[at] = PhoneResult(
                code="excel.damaged_number",
                message=f"{text} looks like a number Excel rounded (shown as {shown}); its last "
                "digits are lost. Format the column as Text and type the full number",
            )
        if rounded.any():
            e164 = pc.if_else(pa.array(rounded), nz.lit(""), e164)
    bad = np.flatnonzero(problems != None)  # noqa: E711 - elementwise on an object array
    groups: dict[tuple[str, str], list[int]] = {}
    for pos in bad:
        groups.setdefault((problems[pos].code, problems[pos].severity), []).append(int(pos))
    for (code, severity), positions in groups.items():
        # Messages go to Arrow a chunk at a time, and each row's result is let go once copied:
        # a million unique messages should not be held twice.
        chunks = []
        for start in range(0, len(positions), 50_000):
            part = positions[start : start + 50_000]
            chunks.append(pa.array([problems[p].message for p in part], pa.large_string()))
            problems[part] = None
        messages = pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
        c.report(np.asarray(positions), code, messages, severity)  # type: ignore[arg-type]
    return e164


def _check_email(c: Cell) -> pa.Array:
    """Email addresses: syntax errors (``email.invalid``, with email-validator's reason) and
    the likely typos of a big provider's domain (``email.typo``, a warning with the fix).
    What is sent is the address as typed, its domain lowercased (:func:`emails.sent_form`).

    The addresses :data:`emails.FAST_PATTERN` accepts are valid without a look at each; only
    the others reach email-validator, each distinct text once."""
    values = c.values
    fast = pc.and_(
        pc.match_substring_regex(values, emails.FAST_PATTERN),
        pc.less_equal(pc.binary_length(values), emails.FAST_MAX_BYTES),
    ).to_numpy(zero_copy_only=False)
    if fast.any():
        fast &= ~pc.match_substring_regex(
            values, emails.NOT_FAST_PATTERN, ignore_case=True
        ).to_numpy(zero_copy_only=False)
    slow = np.flatnonzero(~fast & ~c.blank)
    valid = ~c.blank
    if len(slow):
        texts = pc.take(values, pa.array(slow))
        problems = nz.map_distinct(texts, emails.address_problem)
        bad = np.flatnonzero(problems != None)  # noqa: E711 - elementwise on an object array
        if len(bad):
            c.report(
                slow[bad],
                "email.invalid",
                [f"not a valid email address: {problems[i]}" for i in bad.tolist()],
            )
            valid[slow[bad]] = False
    # A domain has no case: sent lowercased (the few rows whose domain has capitals).
    domains = pc.replace_substring_regex(values, r"^.*@", "")
    lowered = pc.utf8_lower(domains)
    result = values
    upper = np.flatnonzero(pc.not_equal(domains, lowered).to_numpy(zero_copy_only=False) & valid)
    if len(upper):
        fixed = [emails.sent_form(t) for t in pc.take(values, pa.array(upper)).to_pylist()]
        result = _scatter_text(values, upper, fixed)
    # Typos: each distinct domain of the valid addresses looked at once.
    distinct = pc.unique(pc.filter(lowered, pa.array(valid))).to_pylist()
    typos = {d: fix for d in distinct if (fix := emails.domain_typo(d)) is not None}
    if typos:
        hit = pc.is_in(lowered, pa.array(list(typos), pa.large_string()))
        rows = np.flatnonzero(hit.to_numpy(zero_copy_only=False) & valid)
        messages = []
        for text, domain in zip(
            pc.take(values, pa.array(rows)).to_pylist(),
            pc.take(lowered, pa.array(rows)).to_pylist(),
            strict=True,
        ):
            local = text.rpartition("@")[0]
            messages.append(
                f"{domain} looks like a typo of {typos[domain]}; did you mean "
                f"{local}@{typos[domain]}? Fix the cell if so (it is sent as written)"
            )
        c.report(rows, "email.typo", messages, "warning")
    return result


def _scatter_text(values: pa.Array, positions: np.ndarray, texts: list[str]) -> pa.Array:
    """``values`` with the texts at ``positions`` replaced."""
    taken = np.full(len(values), -1, dtype=np.int64)
    taken[positions] = np.arange(len(positions))
    replaced = pa.array(texts, pa.large_string())
    index = pa.array(np.where(taken >= 0, taken, 0))
    return pc.if_else(pa.array(taken >= 0), pc.take(replaced, index), values)


def _number_cells(sheet: Sheet, columns: np.ndarray) -> np.ndarray | None:
    """Per row, whether the cell its value came from was a workbook number cell."""
    flags: np.ndarray | None = None
    for column in np.unique(columns[columns >= 0]):
        numeric = sheet.numeric.get(int(column))
        if numeric is not None and numeric.any():
            flags = np.zeros(len(columns), dtype=bool) if flags is None else flags
            mine = columns == column
            flags[mine] = numeric[mine]
    return flags


def _check_pattern(pattern: str, code: str, message: str) -> Callable[[Cell], pa.Array]:
    """A check that non-blank values match ``pattern`` (Arrow's RE2, vectorized)."""

    def check(c: Cell) -> pa.Array:
        ok = pc.match_substring_regex(c.values, pattern).to_numpy(zero_copy_only=False)
        c.report(np.flatnonzero(~ok & ~c.blank), code, message)
        return c.values

    return check


def _check_mapped(
    func: Callable[[str], str | None], code: str, message: str
) -> Callable[[Cell], pa.Array]:
    """A check that normalizes each distinct value with ``func`` (None: invalid)."""

    def check(c: Cell) -> pa.Array:
        parsed, failed = nz.map_distinct_text(c.values, func)
        c.report(np.flatnonzero(failed), code, message)
        return parsed

    return check


def _as_text(parse: Callable[[str], bool | None]) -> Callable[[str], str | None]:
    """A yes/no reader (``parse_bool``, ``parse_consent``) giving text: ``true``, ``false``,
    '' for blank, None for a value it does not read."""

    def text_of(text: str) -> str | None:
        try:
            value = parse(text)
        except ValueError:
            return None
        return "" if value is None else ("true" if value else "false")

    return text_of


def _check_zip(c: Cell) -> pa.Array:
    """A ZIP or postal code, kept as text. A leading apostrophe, which Shopify's exports write
    (``'02134``) to keep Excel from dropping the zero, is not part of it."""
    values = pc.replace_substring_regex(c.values, r"^'", "")
    four = pc.match_substring_regex(values, r"^\d{4}$").to_numpy(zero_copy_only=False)
    us_like: bool | np.ndarray = region_country_code(c.region) == 1
    if c.regions is not None:  # a row's own country says whether it has US ZIP codes
        regions, inverse = np.unique(c.regions, return_inverse=True)
        us_like = np.array([region_country_code(str(r)) == 1 for r in regions])[inverse]
    if np.any(four & us_like):
        pos = np.flatnonzero(four & us_like)
        fixed = pc.binary_join_element_wise(nz.lit("0"), pc.take(values, pa.array(pos)), nz.lit(""))
        msg = pc.binary_join_element_wise(
            nz.lit("looks like ZIP "),
            fixed,
            nz.lit(" lost its leading 0 in Excel; format the column as Text and re-enter it"),
            nz.lit(""),
        )
        c.report(pos, "excel.lost_leading_zero", msg, "warning")
    ok = pc.match_substring_regex(values, nz.POSTAL_PATTERN).to_numpy(zero_copy_only=False)
    c.report(
        np.flatnonzero(~ok & ~c.blank & ~(four & us_like)),
        "zip.invalid",
        "does not look like a ZIP or postal code",
        "warning",
    )
    return values


def _check_tags(c: Cell) -> pa.Array:
    def split(text: str) -> str:
        parts = [t.strip() for t in text.replace(";", ",").split(",")]
        return ",".join(dict.fromkeys(t for t in parts if t))

    return pa.array(nz.map_distinct(c.values, split), pa.large_string())


def _check_property_type(c: Cell) -> pa.Array:
    lowered = pc.utf8_lower(c.values)
    ok = pc.is_in(lowered, pa.array(PROPERTY_TYPES, pa.large_string()))
    c.report(
        np.flatnonzero(~ok.to_numpy(zero_copy_only=False) & ~c.blank),
        "property.type_invalid",
        f"use one of {', '.join(PROPERTY_TYPES)}, or leave blank to infer",
    )
    return lowered


CHECKS: dict[str, Callable[[Cell], pa.Array]] = {
    "phone": _check_phone,
    "email": _check_email,
    "url": _check_pattern(
        nz.URL_PATTERN,
        "url.invalid",
        "not an http(s) URL (expected https://example.com/picture.png)",
    ),
    "bool": _check_mapped(
        _as_text(nz.parse_bool),
        "bool.invalid",
        "use true/false, yes/no or 1/0 (blank leaves it as is)",
    ),
    "consent": _check_mapped(
        _as_text(nz.parse_consent),
        "bool.invalid",
        f"not an SMS-consent value; use {CONSENT_HELP} (blank leaves it as is)",
    ),
    "opt_out": _check_mapped(
        _as_text(nz.parse_opt_out),
        "bool.invalid",
        f"not an opt-out value; use {OPT_OUT_HELP} (blank leaves consent as it is)",
    ),
    "timezone": _check_mapped(
        nz.canonical_timezone,
        "timezone.invalid",
        "use an IANA time zone name such as America/New_York",
    ),
    "zip": _check_zip,
    "tags": _check_tags,
    "property_type": _check_property_type,
}


# ---------------------------------------------------------------------------------------------
# Properties


def _property_code(ptype: str) -> str:
    """The issue code of a property value that is not a valid ``ptype``."""
    return {"number": "number.invalid", "boolean": "bool.invalid"}.get(ptype, "datetime.invalid")


_GROUPED_THREE = re.compile(r"[+-]?\d{1,3}[.,]\d{3}")


def _coerce(text: str, ptype: str, sheet: Sheet) -> str:
    """:func:`normalize.coerce_property`, except that in a ``;``-separated file (as a European
    Excel saves it) ``12,500`` or ``1.234`` could be read two ways, so it is refused."""
    if ptype == "number" and sheet.delimiter == ";" and _GROUPED_THREE.fullmatch(text.strip()):
        value = text.strip()
        grouped = value.replace(",", "").replace(".", "")
        decimal = value.replace(".", "").replace(",", ".") if "," in value else value
        raise ValueError(
            f"{value!r} could be {grouped} or {decimal} in a ;-separated file (Europe writes "
            f"decimals with a comma); write {grouped} for thousands or {decimal} for decimals"
        )
    return nz.coerce_property(text, ptype)


def _coerce_column(values: pa.Array, ptype: str, idx: int, name: str, out: Collector) -> pa.Array:
    if ptype == "string":
        return values
    errors: dict[str, str] = {}

    def coerce(text: str) -> str | None:
        try:
            return _coerce(text, ptype, out.sheet)
        except ValueError as exc:
            errors[text] = str(exc)
            return None

    coerced, failed = nz.map_distinct_text(values, coerce)
    bad = np.flatnonzero(failed)
    code = _property_code(ptype)
    if len(bad):
        texts = pc.take(values, pa.array(bad)).to_pylist()
        out.add(
            bad,
            idx,
            values,
            code,
            "error",
            [f"property {name} is a {ptype}: {errors[t]}" for t in texts],
            name,
        )
    return coerced


def check_property_columns(
    sheet: Sheet, hmap: HeaderMap, out: Collector
) -> dict[str, tuple[str, pa.Array]]:
    props: dict[str, tuple[str, pa.Array]] = {}
    for p in hmap.properties:
        values = nz.strip(nz.to_arrow(sheet.column(p.index)))
        ptype = p.type or nz.infer_property_type(pc.unique(values).to_pylist())
        props[p.name] = (ptype, _coerce_column(values, ptype, p.index, p.name, out))
    return props


def check_long_properties(
    raw: dict[str, pa.Array], hmap: HeaderMap, out: Collector, normalized: dict[str, pa.Array]
) -> None:
    if "value" not in raw:
        return
    values = raw["value"]
    types = normalized.get("type")
    n = len(values)
    names = raw.get("property_name", pa.array([""] * n, pa.large_string()))
    if types is None:
        types = pa.array([""] * n, pa.large_string())
    # infer per property name over the whole sheet, so one property gets one type
    name_list = names.to_pylist()
    type_list = types.to_pylist()
    value_list = values.to_pylist()
    untyped: dict[str, set[str]] = {}
    for pname, ptype, value in zip(name_list, type_list, value_list, strict=True):
        if ptype == "":
            untyped.setdefault(pname, set()).add(value)
    inferred = {pname: nz.infer_property_type(vals) for pname, vals in untyped.items()}
    result = []
    bad_pos: list[int] = []
    bad_msg: list[str] = []
    bad_code: list[str] = []
    for i, (pname, ptype, value) in enumerate(zip(name_list, type_list, value_list, strict=True)):
        t = ptype if ptype in PROPERTY_TYPES else inferred.get(pname, "string")
        try:
            result.append(_coerce(value, t, out.sheet))
        except ValueError as exc:
            result.append("")
            bad_pos.append(i)
            bad_msg.append(f"property {pname} is a {t}: {exc}")
            bad_code.append(_property_code(t))
        type_list[i] = t
    for code in set(bad_code):
        sel = [j for j, c in enumerate(bad_code) if c == code]
        out.add(
            np.asarray([bad_pos[j] for j in sel]),
            hmap.fields["value"],
            values,
            code,
            "error",
            [bad_msg[j] for j in sel],
            "value",
        )
    normalized["value"] = pa.array(result, pa.large_string())
    normalized["type"] = pa.array(type_list, pa.large_string())


# ---------------------------------------------------------------------------------------------
# Campaign scheduling


def check_send_at(
    name: str,
    values: pa.Array,
    zones: pa.Array | None,
    hmap: HeaderMap,
    out: Collector,
    *,
    now: dt.datetime,
    default_zone: str | None,
    default_time: dt.time | None,
) -> pa.Array:
    """Check the schedule column ``name``: each date-time must read, have a time, exist in its
    zone, and be in the future (after ``now``). ``zones`` (normalized time zones per row), else
    ``default_zone``, reads a value without a UTC offset; ``default_time`` is the time of a
    date alone."""
    idx = hmap.fields.get(name)
    parsed = nz.map_distinct(values, _safe_parse)
    result: list[str] = []
    issues: dict[str, tuple[list[int], list[str], Severity]] = {}

    def note(code: str, pos: int, message: str, severity: Severity = "error") -> None:
        entry = issues.setdefault(code, ([], [], severity))
        entry[0].append(pos)
        entry[1].append(message)

    zone_list = zones.to_pylist() if zones is not None else None
    for pos, item in enumerate(parsed):
        if item is None:
            result.append("")
            continue
        if isinstance(item, str):
            note(
                "datetime.invalid",
                pos,
                f"{item}; use ISO 8601 like 2030-12-01T09:30:00-08:00 or 12/01/2030 9:30 AM",
            )
            result.append("")
            continue
        zone = (zone_list[pos] if zone_list and zone_list[pos] else None) or default_zone
        text = "" if item.has_time else str(values[pos].as_py())  # named by no_time only
        when, problems = _read_send_at(item, zone, default_time, text)
        for code, message, severity in problems:
            note(code, pos, message, severity)
        if when is None:
            result.append("")
            continue
        if item.ambiguous:
            note(
                "datetime.ambiguous",
                pos,
                f"read as {when:%B} {when.day}, {when.year} (month first); write "
                f"{when.date().isoformat()} to be sure",
                "warning",
            )
        if when <= now:
            note(
                "datetime.past",
                pos,
                f"{when.isoformat(timespec='minutes')} is in the past; Sonar would send now "
                "or not at all. Fix the date or leave send_at blank to send now",
            )
            result.append("")
            continue
        result.append(when.isoformat(timespec="seconds"))
    for code, (positions, messages, severity) in issues.items():
        out.add(np.asarray(positions), idx, values, code, severity, messages, name)
    return pa.array(result, pa.large_string())


def _read_send_at(
    item: nz.ParsedDateTime,
    zone: str | None,
    default_time: dt.time | None,
    text: str,
) -> tuple[dt.datetime | None, list[tuple[str, str, Severity]]]:
    """The instant one send_at cell means, out loud: a date alone takes ``default_time`` (else
    ``datetime.no_time``); a value without an offset is read in ``zone`` (else
    ``datetime.no_timezone``), where a time the clocks skip is ``datetime.dst_gap`` and one
    they repeat is read as the first (``datetime.dst_repeated``). None when it can't be sent.
    ``text`` is the cell as written, for the messages."""
    problems: list[tuple[str, str, Severity]] = []
    when = item.value
    if not item.has_time:
        if default_time is None:
            problems.append(
                (
                    "datetime.no_time",
                    f"{text} is a date with no time (it would go out at 00:00, midnight); add a "
                    f"time, such as {when:%Y-%m-%d} 09:00, or give --default-send-time HH:MM",
                    "error",
                )
            )
        else:
            when = dt.datetime.combine(when.date(), default_time, when.tzinfo)
    if when.tzinfo is None:
        if not zone:
            problems.append(
                (
                    "datetime.no_timezone",
                    "no UTC offset in the value; add one (…-08:00), a timezone column, "
                    "or --timezone",
                    "error",
                )
            )
            return None, problems
        local = nz.read_local(when, zone)
        if local.missing and local.jump is not None:
            start, end = (nz.wall_text(j, when) for j in local.jump)
            fix = (
                "pick a time outside the gap, or write the UTC offset"
                if item.has_time
                else "give this row a time, or another --default-send-time"
            )
            problems.append(
                (
                    "datetime.dst_gap",
                    f"{nz.wall_text(when)} does not exist in {zone} (clocks jump from {start} "
                    f"to {end}); {fix}",
                    "error",
                )
            )
            return None, problems
        if local.second is not None and local.jump is not None:
            start, end = (nz.wall_text(j, when) for j in local.jump)
            problems.append(
                (
                    "datetime.dst_repeated",
                    f"{nz.wall_text(when)} happens twice in {zone} (clocks go back from {start} "
                    f"to {end}); read as the first, {nz.offset_text(local.value)}; for the "
                    f"second write {local.second.isoformat(timespec='minutes')}",
                    "warning",
                )
            )
        when = local.value
    if any(severity == "error" for _c, _m, severity in problems):
        return None, problems
    return when, problems


def _safe_parse(text: str) -> nz.ParsedDateTime | str | None:
    if text.strip() == "":
        return None
    try:
        return nz.parse_datetime(text)
    except ValueError as exc:
        return str(exc)


# ---------------------------------------------------------------------------------------------
# Messages


_SINGLE_BRACES = re.compile(r"(?<!\{)\{([^{}\n]{1,64})\}(?!\})")


def _single_braces(text: str, keys: dict[str, int]) -> tuple[str, ...]:
    """``{first_name}`` where ``{{first_name}}`` was meant: single braces around a column name
    (or ``{first_name|there}``, one with a fallback)."""
    return tuple(
        f"{{{m.group(1)}}} at character {m.start() + 1} has single braces; write "
        f"{{{{{m.group(1).strip()}}}}}"
        for m in _SINGLE_BRACES.finditer(text)
        if header_key(m.group(1).partition("|")[0]) in keys
    )[:3]


def _blank_message(blanks: list[str], headers: list[str], allowed: bool) -> str:
    """What a row whose ``blanks`` fields are blank is told: the fields, their columns and, as
    an error, the ways out."""
    names = ", ".join(f"{{{{{f}}}}} (column {h!r})" for f, h in zip(blanks, headers, strict=True))
    verb = "are" if len(blanks) > 1 else "is"
    if allowed:
        return f"{names} {verb} blank on this row; sent with a gap (--allow-blank-merge)"
    example = f"{{{{{blanks[0]}|fallback}}}}"
    return (
        f"{names} {verb} blank on this row, so the text would go out with a gap; fill it in, "
        f"write {example} to send a fallback instead, or pass --allow-blank-merge to send "
        "the gap"
    )


def check_messages(
    sheet: Sheet,
    name: str,
    texts: pa.Array,
    hmap: HeaderMap,
    out: Collector,
    allow_blank: bool = False,
) -> tuple[pa.Array, dict[str, int]]:
    """Check the merge fields of the message-text column ``name`` and render each row's text.

    A ``{{field}}`` without a fallback whose value is blank on a row is an error for that row
    (``merge.blank``), and nothing is rendered for it; with ``allow_blank``
    (``--allow-blank-merge``) a warning (``merge.empty_value``), and the text has a gap.
    """
    idx = hmap.fields.get(name)
    keys: dict[str, int] = {}
    for i, h in enumerate(sheet.headers):
        keys.setdefault(header_key(h), i)
    for field_name, i in hmap.fields.items():
        keys.setdefault(header_key(field_name), i)
    templates = {t: parse_merge(t) for t in pc.unique(texts).to_pylist()}
    needed = {header_key(f) for tpl in templates.values() for f in tpl.fields}
    # Fields resolve like headers do: {{First Name}} and {{ first_name }} are one column.
    columns: dict[str, list[str]] = {
        key: nz.strip(nz.to_arrow(sheet.column(keys[key]))).to_pylist()
        for key in sorted(needed)
        if key in keys
    }
    text_list = texts.to_pylist()
    rendered: list[str] = []
    syntax_pos: list[int] = []
    syntax_msg: list[str] = []
    unknown_pos: list[int] = []
    unknown_msg: list[str] = []
    blank_pos: list[int] = []
    blank_msg: list[str] = []
    empty_pos: list[int] = []
    single = {t: _single_braces(t, keys) for t in templates}
    # Per template, its fields without a fallback: (column key, name as written).
    bare = {t: [(header_key(f), f) for f in tpl.bare_fields] for t, tpl in templates.items()}
    for pos, text in enumerate(text_list):
        tpl = templates[text]
        if tpl.errors or single[text]:
            syntax_pos.append(pos)
            problems = tpl.errors + single[text]
            syntax_msg.append("; ".join(problems) + "; a broken merge tag would be sent as typed")
            rendered.append("")
            continue
        fields = tpl.fields
        if not fields:
            rendered.append(text)
            continue
        missing = [f for f in fields if header_key(f) not in columns]
        if missing:
            unknown_pos.append(pos)
            names = ", ".join("{{" + f + "}}" for f in missing)
            unknown_msg.append(
                f"{names} names no column of this sheet; add the column or fix the spelling"
            )
            rendered.append("")
            continue
        values = {header_key(f): columns[header_key(f)][pos] for f in fields}
        blanks = [(key, f) for key, f in bare[text] if values[key] == ""]
        if blanks:
            blank_pos.append(pos)
            headers = [out.label(keys[key]) for key, _f in blanks]
            blank_msg.append(_blank_message([f for _k, f in blanks], headers, allow_blank))
            if not allow_blank:
                rendered.append("")  # never "Hi , ...": the row is an error, nothing to send
                continue
        text_out = tpl.render(values, header_key)
        if not text_out.strip():
            # {{first_name|}} on a row without a first name: no text is left to send
            empty_pos.append(pos)
            rendered.append("")
            continue
        rendered.append(text_out)
    out.add(
        np.asarray(empty_pos),
        idx,
        texts,
        "required.missing",
        "error",
        "the text is empty once its merge fields are filled in on this row; Sonar needs a text "
        "(give a fallback that is not empty: {{field|fallback}})",
        name,
    )
    out.add(np.asarray(syntax_pos), idx, texts, "merge.syntax", "error", syntax_msg, name)
    out.add(np.asarray(unknown_pos), idx, texts, "merge.unknown_field", "error", unknown_msg, name)
    severity: Severity = "warning" if allow_blank else "error"
    code = "merge.empty_value" if allow_blank else "merge.blank"
    out.add(np.asarray(blank_pos), idx, texts, code, severity, blank_msg, name)
    seg = Counter[str]()
    total = 0
    longest = 0
    for text in rendered:
        if not text:
            continue
        s = sms_segments(text)
        seg[s.encoding] += 1
        total += s.segments
        longest = max(longest, s.segments)
    stats = {
        "messages": sum(seg.values()),
        "segments": total,
        "gsm7": seg["GSM-7"],
        "ucs2": seg["UCS-2"],
        "max_segments": longest,
    }
    return pa.array(rendered, pa.large_string()), stats


# ---------------------------------------------------------------------------------------------
# Duplicates


def check_duplicates(
    kind: SheetKind,
    normalized: dict[str, pa.Array],
    raw: dict[str, pa.Array],
    hmap: HeaderMap,
    out: Collector,
) -> None:
    present = [k for k in kind.key if k in normalized]
    names = {c.name for c in kind.columns}
    if not present:
        return
    if kind.long_properties:
        who = [k for k in ("phone_number", "email") if k in normalized]
        if "property_name" not in normalized or not who:
            return
        ident = normalized[who[0]]
        if len(who) == 2:
            ident = pc.if_else(
                pc.equal(ident, ""),
                pc.binary_join_element_wise(
                    nz.lit("email:"), pc.utf8_lower(normalized["email"]), nz.lit("")
                ),
                ident,
            )
        keys = [ident, normalized["property_name"]]
    else:
        if len(present) != len(kind.key):
            return
        keys = [normalized[k] for k in present]
    n = len(keys[0])
    usable = np.ones(n, dtype=bool)
    for k in keys:
        usable &= ~nz.blank(k)
    if not usable.any():
        return
    pos = np.flatnonzero(usable)
    sub = [pc.take(k, pa.array(pos)) for k in keys]
    phone_keys = tuple(
        kind.column(k).type == "phone" and not kind.long_properties if k in names else False
        for k in present
    )
    first = nz.first_occurrence(*sub, e164=phone_keys)
    dup = first != np.arange(len(pos))
    if not dup.any():
        return
    rows = out.sheet.row_numbers[pos[first[dup]]]
    key_vals = sub[0].filter(pa.array(dup))
    what = "customer + property_name" if kind.long_properties else " + ".join(present)
    if kind.duplicate_severity == "error":
        tail = f"; sending it again would send twice. Remove the repeat (same {what})"
    else:
        tail = f"; the later row wins (same {what})"
    messages = pc.binary_join_element_wise(
        nz.lit("duplicate of row "),
        pc.cast(pa.array(rows), pa.large_string()),
        nz.lit(" ("),
        pc.cast(key_vals, pa.large_string()),
        nz.lit(")" + tail),
        nz.lit(""),
    )
    col = hmap.fields.get(kind.key[0])
    values = raw[kind.key[0]] if kind.key[0] in raw else key_vals.to_pylist()
    out.add(pos[dup], col, values, "duplicate.key", kind.duplicate_severity, messages, kind.key[0])
    if "subscribed" in normalized and not kind.long_properties:
        _consent_conflicts(pos, first, dup, normalized["subscribed"], raw, hmap, out)


def _consent_conflicts(
    pos: np.ndarray,
    first: np.ndarray,
    dup: np.ndarray,
    consent: pa.Array,
    raw: dict[str, pa.Array],
    hmap: HeaderMap,
    out: Collector,
) -> None:
    """Rows of one customer that disagree on SMS consent (a yes and a no): every such row is
    an error. "The later row wins" can't settle consent: the rows go out concurrently (either
    may land last), and a run told to skip the wrong row could subscribe someone who said no."""
    later = pos[np.flatnonzero(dup)]  # rows of the sheet, and the rows they repeat
    earlier = pos[first[np.flatnonzero(dup)]]
    said = np.asarray(pc.take(consent, pa.array(later)).to_pylist(), dtype=object)
    before = np.asarray(pc.take(consent, pa.array(earlier)).to_pylist(), dtype=object)
    clash = ((said == "true") & (before == "false")) | ((said == "false") & (before == "true"))
    if not clash.any():
        return
    word = {"true": "yes", "false": "no"}
    #: a row of the sheet -> (the row it disagrees with, what it says, what that one says)
    against: dict[int, tuple[int, str, str]] = {}
    for r, q, x, y in zip(
        later[clash].tolist(), earlier[clash].tolist(), said[clash], before[clash], strict=True
    ):
        against[r] = (q, word[x], word[y])
        against.setdefault(q, (r, word[y], word[x]))
    rows = sorted(against)
    numbers = out.sheet.row_numbers
    messages = [
        f"the same customer as row {int(numbers[q])}, which disagrees on SMS consent "
        f"(this row: {mine}, row {int(numbers[q])}: {theirs}); keep the right row: the later "
        "one does not win here"
        for q, mine, theirs in (against[r] for r in rows)
    ]
    col = hmap.fields.get("subscribed")
    values = raw["subscribed"] if "subscribed" in raw else consent
    out.add(np.array(rows), col, values, "consent.conflict", "error", messages, "subscribed")
