"""Check every row of a sheet against its kind's schema; issues are data, not exceptions.

:func:`validate_sheet` returns a :class:`Validation`: the issues (one row per problem, with a
stable ``code``), which rows are valid, and the normalized values that the API layers send.
The sheet's shape (headers, cells beyond them, the template's example row) is checked here;
its columns by :mod:`sonar_bulk.checks`, reporting to a :class:`sonar_bulk.issues.Collector`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sonar_bulk import normalize as nz
from sonar_bulk.checks import (
    CHECKS,
    Cell,
    check_duplicates,
    check_long_properties,
    check_messages,
    check_property_columns,
    check_send_at,
)
from sonar_bulk.countries import country_region, describe_unknown
from sonar_bulk.issues import Collector, Issues, column_letter
from sonar_bulk.phonemeta import region_country_code
from sonar_bulk.schema import (
    CONSENT_WORDS,
    KINDS,
    Column,
    HeaderMap,
    SheetKind,
    column_rank,
    header_key,
    label_rank,
    match_headers,
    value_word,
)
from sonar_bulk.sheets import Sheet
from sonar_bulk.sms import merge_fields


@dataclass
class ValidateOptions:
    """Knobs of :func:`validate_sheet` (CLI options map onto these one to one)."""

    default_region: str = "US"
    mapping: dict[str, str] = field(default_factory=dict)
    extra_columns: str = "warn"
    campaign_id: str | None = None
    timezone: str | None = None
    now: dt.datetime | None = None
    #: messages send --text: the message template of every row without its own text.
    text: str | None = None
    #: campaigns send --send-at: when to send rows without their own send_at.
    send_at: str | None = None
    #: --default-send-time HH:MM: the time of a send_at that is a date alone (else an error).
    default_send_time: str | None = None
    #: --allow-blank-merge: a blank {{field}} (without a |fallback) is sent as a gap, with a
    #: warning, instead of being an error for its row.
    allow_blank_merge: bool = False
    #: messages tag --tag: the tag of every row without its own tag_name.
    tag: str | None = None
    #: The command the sheet is checked for (``properties delete``): only its needs of a row
    #: (``SheetKind.needs``) are checked; None (``validate``): those of every command of the
    #: kind. A run checks its sheet for itself.
    command: str | None = None

    def all_rows_value(self, col: Column) -> str | None:
        """The value ``col.all_rows_option`` gives every row; None when it was not given."""
        given = {
            "--campaign-id": self.campaign_id,
            "--text": self.text,
            "--send-at": self.send_at,
            "--tag": self.tag,
        }
        return given.get(col.all_rows_option) if col.all_rows_option else None


#: The consent field the run reads, and the opt-out field folded into it.
CONSENT_FIELD = "subscribed"
OPT_OUT_FIELD = "opted_out"


@dataclass(frozen=True)
class ConsentCounts:
    """The rows of a sheet's SMS-consent column (``subscribed``), by what they say."""

    #: The field (``subscribed``) and the header it was read from, as written.
    field: str
    column: str
    #: Yes (sent as subscribed=true) and no (sent as subscribed=false).
    consented: int
    not_consented: int
    #: Blank: the field is not sent, so Sonar keeps what it has.
    unknown: int
    #: Not a consent value: those rows have an error (``bool.invalid``).
    invalid: int = 0


@dataclass
class Validation:
    """What validation found, and the normalized values of every row."""

    kind: SheetKind
    sheet: Sheet
    headers: HeaderMap
    issues: Issues
    #: Per data row: True when the row has at least one error.
    invalid: np.ndarray
    #: Normalized value per field, one entry per data row ('' for blank).
    normalized: dict[str, pa.Array]
    #: Custom properties: name → (type, values per row).
    properties: dict[str, tuple[str, pa.Array]] = field(default_factory=dict)
    #: Messages only: SMS segment statistics.
    segments: dict[str, int] = field(default_factory=dict)
    options: ValidateOptions = field(default_factory=lambda: ValidateOptions())
    #: Sheets with an SMS-consent column: its rows counted by consent.
    consent: ConsentCounts | None = None
    #: A phone field several columns feed: per data row, the header its value came from
    #: ('' where all were blank); results show it as ``sonar__phone_from``.
    phone_from: dict[str, list[str]] = field(default_factory=dict)
    #: Sheets with a country column: per data row, the region its phones were read in.
    regions: np.ndarray | None = None
    #: A field several columns feed (or a labelled pair): per data row, its value as typed in
    #: the column it came from (see :func:`pick_values`).
    picked: dict[str, pa.Array] = field(default_factory=dict)
    #: A messages send results file read as message tags: per data row, the send's status
    #: where it sent nothing ('' where it did): such a row has no message to tag, and is
    #: skipped rather than an error.
    unsent: list[str] | None = None

    @property
    def rows(self) -> int:
        """Data rows read (entirely empty rows are not counted)."""
        return len(self.sheet)

    @property
    def invalid_rows(self) -> int:
        """Rows with at least one error."""
        return int(self.invalid.sum())

    @property
    def valid_rows(self) -> int:
        """Rows without errors (warnings allowed)."""
        return self.rows - self.invalid_rows

    @property
    def warnings(self) -> int:
        """Number of warning issues."""
        return self.issues.count("warning")

    @property
    def errors(self) -> int:
        """Number of error issues."""
        return self.issues.count("error")

    def by_code(self) -> dict[str, int]:
        """Issue counts by code, most frequent first."""
        return self.issues.by_code()


def validate_sheet(
    sheet: Sheet, kind: SheetKind, options: ValidateOptions | None = None
) -> Validation:
    """Validate every row of ``sheet`` as ``kind``.

    Raises ValueError for options that cannot apply (an unknown ``--map`` target, region or
    time zone); every problem with the data itself is returned as an issue.
    """
    opts = options or ValidateOptions()
    region_country_code(opts.default_region)
    if opts.timezone is not None and not nz.canonical_timezone(opts.timezone):
        hint = nz.suggest_timezone(opts.timezone)
        raise ValueError(
            f"--timezone {opts.timezone!r} is not an IANA time zone name"
            + (f"; did you mean {hint}?" if hint else " (such as America/New_York)")
        )
    _default_send_time(opts)
    hmap = match_headers(
        kind, sheet.headers, mapping=opts.mapping, extra_columns=opts.extra_columns
    )
    out = Collector(sheet)
    n = len(sheet)
    raw: dict[str, pa.Array] = {}
    sources: dict[str, np.ndarray] = {}
    never_texted: dict[str, np.ndarray] = {}
    for name, idx in hmap.fields.items():
        if name in hmap.alternates or idx in hmap.labels:
            phone = kind.column(name).type == "phone"
            raw[name], sources[name], never_texted[name] = pick_values(sheet, hmap, name, phone)
        else:
            raw[name] = nz.strip(nz.to_arrow(sheet.column(idx)))
    phone_from = {
        name: _headers_of(sheet, sources[name])
        for name in hmap.alternates
        if kind.column(name).type == "phone"
    }
    normalized: dict[str, pa.Array] = {}

    for problem in hmap.problems:
        out.add_header(
            problem.index,
            problem.code,
            problem.severity,
            problem.message,
            column_name=problem.header,
            all_rows_invalid=problem.code in ("column.duplicate", "map.unknown_header"),
        )
    _check_shape(sheet, hmap, kind, out, opts)
    regions, own_region = _row_regions(sheet, hmap, out, opts.default_region)

    for col in kind.columns:
        given = opts.all_rows_value(col)
        if given is None:
            continue
        fill = pa.array([given.strip()] * n, pa.large_string())
        raw[col.name] = (
            pc.if_else(pc.equal(raw[col.name], ""), fill, raw[col.name])
            if col.name in raw
            else fill
        )

    unsent = _unsent_results_rows(sheet, kind, hmap)

    def check_column(col: Column) -> pa.Array:
        values = raw[col.name]
        idx = hmap.fields.get(col.name)
        blank = nz.blank(values)
        if col.required:
            if unsent is not None and col.name == UNSENT_FIELD:
                blank = blank & (np.array(unsent, dtype=object) == "")
            missing = np.flatnonzero(blank)
            why: str | list[str] = col.missing_hint or f"{col.name} is required"
            fax = never_texted.get(col.name)
            if fax is not None and fax[missing].any():
                said = f"{why}: this row's only number is labelled fax or pager, never texted"
                why = np.where(fax[missing], said, why).tolist()
            out.add(missing, idx, values, "required.missing", "error", why, col.name)
        checker = CHECKS.get(col.type)
        if checker is None:
            return values
        cell = Cell(
            values,
            blank,
            idx,
            col.name,
            out,
            sheet,
            opts.default_region,
            regions,
            own_region,
            sources.get(col.name),
        )
        return checker(cell)

    # Arrow kernels release the GIL, so columns are checked side by side on every core.
    present = [c for c in kind.columns if c.name in raw]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        prop_future = (
            pool.submit(check_property_columns, sheet, hmap, out)
            if kind.allows_properties
            else None
        )
        for col, result in zip(present, pool.map(check_column, present), strict=True):
            normalized[col.name] = result
        properties = prop_future.result() if prop_future is not None else {}

    if kind.one_of:
        for group in kind.one_of:
            present = [raw[g] for g in group if g in raw]
            if not present:
                continue
            none = np.ones(n, dtype=bool)
            for arr in present:
                none &= nz.blank(arr)
            first = hmap.fields.get(group[0], hmap.fields.get(group[-1]))
            out.add(
                np.flatnonzero(none),
                first,
                "",
                "required.missing",
                "error",
                f"give {' or '.join(group)}",
                group[0],
            )

    _check_needs(kind, raw, hmap, out, opts.command)
    if kind.long_properties:
        check_long_properties(raw, hmap, out, normalized)
    schedule, zone = kind.schedule_column, kind.schedule_zone_column
    if schedule is not None and schedule in raw:
        zones = normalized.get(zone) if zone is not None else None
        normalized[schedule] = check_send_at(
            schedule,
            raw[schedule],
            zones,
            hmap,
            out,
            now=opts.now or utc_now(),
            default_zone=nz.canonical_timezone(opts.timezone) if opts.timezone else None,
            default_time=_default_send_time(opts),
        )
    segments: dict[str, int] = {}
    text = kind.merge_text
    if text is not None and text in raw:
        normalized[text], segments = check_messages(
            sheet, text, raw[text], hmap, out, allow_blank=opts.allow_blank_merge
        )

    _check_example_row(sheet, kind, hmap, out)
    check_duplicates(kind, normalized, raw, hmap, out)
    _fold_opt_out(normalized)
    return Validation(
        kind,
        sheet,
        hmap,
        out.frame(),
        out.invalid,
        normalized,
        properties,
        segments,
        opts,
        _consent_counts(sheet, kind, hmap, raw, normalized),
        phone_from,
        regions,
        {name: raw[name] for name in sources},
        unsent,
    )


#: The field a messages send results file gives a message tags sheet (from its
#: ``sonar__external_message_id``), blank where the send sent nothing.
UNSENT_FIELD = "external_message_id"


def _unsent_results_rows(sheet: Sheet, kind: SheetKind, hmap: HeaderMap) -> list[str] | None:
    """A messages send results file read as message tags: per row, the send's status where it
    sent nothing (``failed``, ``skipped``...), else ''; None for any other sheet."""
    index = hmap.fields.get(UNSENT_FIELD)
    if (
        kind.name != "message_tags"
        or index is None
        or sheet.headers[index] != "sonar__external_message_id"
        or "sonar__status" not in sheet.headers
    ):
        return None
    statuses = sheet.column(sheet.headers.index("sonar__status")).to_pylist()
    ids = sheet.column(index).to_pylist()
    out = []
    for status, given in zip(statuses, ids, strict=True):
        said = (status or "").strip()
        # a row with its id, one a send says went out, or one added by hand: checked as is
        out.append("" if (given or "").strip() or said in ("", "queued", "scheduled") else said)
    return out


def _check_needs(
    kind: SheetKind, raw: dict[str, pa.Array], hmap: HeaderMap, out: Collector, command: str | None
) -> None:
    """Rows a command can't send for want of a column the kind does not require (``properties
    set`` of a value by email alone): the kind's :class:`~sonar_bulk.schema.RowNeed`, the
    very rule the run refuses such rows by."""
    n = len(out.sheet)
    for need in kind.needs:
        if command is not None and need.command != command:
            continue
        columns = need.columns(kind)
        lacking = np.ones(n, dtype=bool)
        if need.when is not None:
            lacking &= ~nz.blank(raw[need.when]) if need.when in raw else False
        for name in columns:
            if name in raw:
                lacking &= nz.blank(raw[name])
        for group in kind.one_of:
            # a row with none of its group (phone_number or email) is told so already
            if set(group) & set(columns):
                given = np.zeros(n, dtype=bool)
                for name in group:
                    if name in raw:
                        given |= ~nz.blank(raw[name])
                lacking &= given
        if not columns or not lacking.any():
            continue
        first = columns[0]
        values = raw[first] if first in raw else ""
        out.add(
            np.flatnonzero(lacking),
            hmap.fields.get(first),
            values,
            "required.missing",
            "error",
            need.message(kind),
            first,
        )


#: Google Contacts joins the values of one labelled pair cell with this (and their labels, when
#: they differ): ``+1 415 555 0100 ::: +1 415 555 0101``.
SEVERAL_VALUES = ":::"
_NEVER = np.iinfo(np.int16).max


def pick_values(
    sheet: Sheet, hmap: HeaderMap, name: str, phone: bool
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The value of field ``name`` on each row, when several columns feed it (an export's
    phones, Google's labelled pairs; see :attr:`HeaderMap.alternates`), the column each came
    from (-1 where none gives one), and the rows whose only numbers are never texted (a fax).

    A row takes the value that stands first: a column by its rank
    (:func:`~sonar_bulk.schema.column_rank`), a labelled pair by its label on that row
    (:func:`~sonar_bulk.schema.label_rank`: a mobile first, never a fax or a pager), ties in
    sheet order. A pair cell holding several values (``a ::: b``) gives the first that stands
    best by its own label; the others are not used.
    """
    indexes = sorted(hmap.alternates.get(name) or [hmap.fields[name]])
    n = len(sheet)
    best = np.full(n, _NEVER, dtype=np.int16)
    column = np.full(n, -1, dtype=np.int64)
    values = pa.repeat(nz.lit(""), n)
    never_texted = np.zeros(n, dtype=bool)
    for index in indexes:
        cells = nz.strip(nz.to_arrow(sheet.column(index)))
        label_index = hmap.labels.get(index)
        if label_index is None:
            rank = np.full(n, column_rank(sheet.headers[index], phone), dtype=np.int16)
        else:
            labels = nz.strip(nz.to_arrow(sheet.column(label_index)))
            given = ~nz.blank(cells)
            cells, rank = _rank_by_label(cells, labels, phone)
            never_texted |= given & (rank == _NEVER)
        rank[nz.blank(cells)] = _NEVER
        take = rank < best
        if take.any():
            values = pc.if_else(pa.array(take), cells, values)
            column[take] = index
            best[take] = rank[take]
    return values, column, never_texted & (column == -1)


def _rank_by_label(cells: pa.Array, labels: pa.Array, phone: bool) -> tuple[pa.Array, np.ndarray]:
    """A labelled pair's values (one per cell: the best of several) and their ranks."""

    def ranked(label: str) -> int:
        found = label_rank(label, phone)
        return _NEVER if found is None else found

    rank = nz.map_distinct(labels, ranked).astype(np.int16)
    several = pc.match_substring(cells, SEVERAL_VALUES).to_numpy(zero_copy_only=False)
    if several.any():
        rows = np.flatnonzero(several)
        chosen: list[str] = []
        for row in rows.tolist():
            parts = [p.strip() for p in str(cells[row].as_py()).split(SEVERAL_VALUES)]
            names = [p.strip() for p in str(labels[row].as_py()).split(SEVERAL_VALUES)]
            options = [
                (ranked(names[i] if i < len(names) else names[0]), i)
                for i, part in enumerate(parts)
                if part
            ]
            top = min(options, default=(_NEVER, -1))
            chosen.append(parts[top[1]] if top[0] < _NEVER else "")
            rank[row] = top[0]
        cells = pc.if_else(
            pa.array(several),
            pc.take(
                pa.array(chosen, pa.large_string()),
                pa.array(np.maximum(np.cumsum(several) - 1, 0)),
            ),
            cells,
        )
    return cells, rank


def _headers_of(sheet: Sheet, columns: np.ndarray) -> list[str]:
    """Per row, the header of column ``columns[row]`` ('' for -1)."""
    names = np.array([*sheet.headers, ""], dtype=object)
    return [str(h) for h in names[columns]]


def _row_regions(
    sheet: Sheet, hmap: HeaderMap, out: Collector, default: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per row, the region its phones are read in: the first of the sheet's country columns
    that is not blank (:attr:`HeaderMap.countries`), else ``default``; and whether the row's
    own country cell named it. A country cell that names no region is a ``country.unknown``
    warning, and its row is read in ``default``. (None, None) when the sheet has no country
    column."""
    if not hmap.countries:
        return None, None
    n = len(sheet)
    values = pa.repeat(nz.lit(""), n)
    column = np.full(n, -1, dtype=np.int64)
    for index in hmap.countries:
        cells = nz.strip(nz.to_arrow(sheet.column(index)))
        take = nz.blank(values) & ~nz.blank(cells)
        if take.any():
            values = pc.if_else(pa.array(take), cells, values)
            column[take] = index
    found = nz.map_distinct(values, country_region)
    unknown = found == None  # noqa: E711 - elementwise on an object array
    for index in np.unique(column[unknown]).tolist():
        rows = np.flatnonzero(unknown & (column == index))
        out.add(
            rows,
            index,
            values,
            "country.unknown",
            "warning",
            nz.map_distinct(
                pc.take(values, pa.array(rows)),
                lambda text: (
                    f"{describe_unknown(text)}; this row's phones are read as "
                    f"{default} numbers (--default-region)"
                ),
            ),
        )
    fallback = unknown | (found == "")
    found[fallback] = default
    regions: np.ndarray = found.astype("U3")
    return regions, ~fallback


def _fold_opt_out(normalized: dict[str, pa.Array]) -> None:
    """An opt-out column's yes (Do Not Call, SMS Opt Out) is the row's consent no: the
    ``subscribed`` the run reads (a no is never texted; a customers upsert sends it), made
    when the sheet has no consent column. An opt-out wins over a consent column's yes."""
    opted_out = normalized.get(OPT_OUT_FIELD)
    if opted_out is None:
        return
    said = pc.fill_null(pc.equal(opted_out, "true"), False)
    consent = normalized.get(CONSENT_FIELD)
    if consent is None:
        consent = pa.repeat(nz.lit(""), len(opted_out))
    normalized[CONSENT_FIELD] = pc.if_else(said, nz.lit("false"), consent)


def consent_header(validation: Validation, index: int) -> str:
    """The header of the column that says row ``index`` has no consent to SMS."""
    fields = validation.headers.fields
    opted_out = validation.normalized.get(OPT_OUT_FIELD)
    if OPT_OUT_FIELD in fields and opted_out is not None and opted_out[index].as_py() == "true":
        return validation.sheet.headers[fields[OPT_OUT_FIELD]]
    return validation.sheet.headers[fields[CONSENT_FIELD]]


def _consent_counts(
    sheet: Sheet,
    kind: SheetKind,
    hmap: HeaderMap,
    raw: dict[str, pa.Array],
    normalized: dict[str, pa.Array],
) -> ConsentCounts | None:
    """The SMS-consent (and opt-out) columns' rows counted by consent; None when the sheet has
    neither."""
    given = [
        c.name for c in kind.columns if c.type in ("consent", "opt_out") and c.name in hmap.fields
    ]
    if not given:
        return None
    values = normalized[CONSENT_FIELD]
    invalid = np.zeros(len(values), dtype=bool)
    for name in given:
        read = pc.is_in(normalized[name], pa.array(["true", "false"], normalized[name].type))
        invalid |= ~nz.blank(raw[name]) & ~pc.fill_null(read, False).to_numpy(zero_copy_only=False)
    yes = pc.fill_null(pc.equal(values, "true"), False).to_numpy(zero_copy_only=False)
    no = pc.fill_null(pc.equal(values, "false"), False).to_numpy(zero_copy_only=False)
    return ConsentCounts(
        CONSENT_FIELD,
        " and ".join(sheet.headers[hmap.fields[name]] for name in given),
        int((yes & ~invalid).sum()),
        int((no & ~invalid).sum()),
        int((~yes & ~no & ~invalid).sum()),
        int(invalid.sum()),
    )


# ---------------------------------------------------------------------------------------------
# Sheet shape


def _check_shape(
    sheet: Sheet, hmap: HeaderMap, kind: SheetKind, out: Collector, opts: ValidateOptions
) -> None:
    header_hint: str | None = None
    for col in kind.columns:
        if not col.required or col.name in hmap.fields:
            continue
        if opts.all_rows_value(col):
            continue
        if header_hint is None:
            header_hint = _header_row_hint(sheet, kind, opts) or _other_kind_hint(sheet, kind)
        hint = ""
        if col.aliases:
            hint = f" (also accepted: {', '.join(repr(a) for a in col.aliases[:4])}; or --map)"
        if col.all_rows_option:  # --tag, --campaign-id: one value for every row
            hint += f" or give {col.all_rows_option} for every row"
        unmatched = [sheet.headers[i] for i in hmap.unknown if sheet.headers[i].strip()]
        if unmatched and not header_hint:
            listing = ", ".join(repr(h) for h in unmatched[:6])
            hint += f'; unmatched headers: {listing}; pass --map "Header={col.name}"'
        out.add_header(
            None,
            "column.missing",
            "error",
            f"the sheet has no {col.name} column{hint}{header_hint}",
            col.name,
            all_rows_invalid=True,
        )
    for group in kind.one_of:
        if not any(g in hmap.fields for g in group):
            out.add_header(
                None,
                "column.missing",
                "error",
                f"the sheet needs a {' or '.join(group)} column",
                group[0],
                all_rows_invalid=True,
            )
    used_by_merge: set[str] = set()
    if kind.merge_text is not None:
        given = opts.all_rows_value(kind.column(kind.merge_text))
        idx = hmap.fields.get(kind.merge_text)
        texts = (
            nz.to_arrow(sheet.column(idx))
            if idx is not None
            else pa.array([given or ""], pa.large_string())
        )
        if given is not None:
            texts = pa.concat_arrays([texts, pa.array([given], pa.large_string())])
        for t in pc.unique(texts).to_pylist():
            used_by_merge.update(header_key(f) for f in merge_fields(t or ""))
    reads_consent = any(c.type == "consent" for c in kind.columns)
    for index in hmap.unknown:
        header = sheet.headers[index]
        if reads_consent and _consent_unread(sheet, index, out):
            continue
        if header_key(header) in used_by_merge or opts.extra_columns == "ignore":
            continue
        if kind.allows_properties:
            hint = "; name it property:<name> or pass --extra-columns properties to import it"
        elif kind.merge_text is not None:
            hint = "; use it as a {{merge field}} or remove it"
        else:
            hint = ""
        out.add_header(
            index,
            "column.unknown",
            "warning",
            f"{kind.name} sheets have no column {header!r}; ignored{hint}",
        )
    named = set(hmap.fields.values()) | {p.index for p in hmap.properties} | set(hmap.unknown)
    for index, header in enumerate(sheet.headers):
        if index in named or header.strip():
            continue
        arr = nz.to_arrow(sheet.column(index))
        filled = int(pc.sum(pc.greater(pc.utf8_length(nz.strip(arr)), 0)).as_py() or 0)
        if filled:
            out.add_header(
                index,
                "column.unnamed",
                "warning",
                f"{nz.plural(filled, 'value')} in column {column_letter(index)} "
                f"{'has' if filled == 1 else 'have'} no header; "
                f"{'it is' if filled == 1 else 'they are'} ignored (give the column a header)",
            )
    _check_extra_cells(sheet, hmap, out)
    # what is read from a formula cell: an imported column, or any column of a sheet whose
    # texts may name it as a {{merge field}}
    read = set(hmap.fields.values()) | {p.index for p in hmap.properties}
    if "text" in hmap.fields:
        read |= set(hmap.unknown)
    for rownum, col_index, formula in sheet.uncomputed:
        if col_index in read:  # else a column not imported: nothing is read from it
            shown = f"={formula}" if formula else "a shared formula"
            _cell_error(
                sheet,
                out,
                rownum,
                col_index,
                "excel.formula_not_computed",
                f"{shown} has no value in the workbook (Excel never computed it), so it reads "
                "as blank: open the workbook in Excel and save it, or type the value",
            )
    for rownum, col_index, lines in sheet.swallowed:
        _cell_error(
            sheet,
            out,
            rownum,
            col_index,
            "csv.unbalanced_quote",
            f"this quoted value runs over {lines} lines, some shaped like whole rows: a stray "
            '" probably merged the rows below into this cell. Check the quotes on this row',
        )


def _cell_error(
    sheet: Sheet, out: Collector, rownum: int, col: int, code: str, message: str
) -> None:
    """An error on one cell that reading the sheet found, by its sheet row number (nothing for
    a row that is not a data row: above the header)."""
    at = int(np.searchsorted(sheet.row_numbers, rownum))
    if at < len(sheet.row_numbers) and sheet.row_numbers[at] == rownum:
        out.add(np.array([at]), col, nz.to_arrow(sheet.column(col)), code, "error", message)


#: Words of a header that may hold SMS consent (with the values of it, :func:`_consent_unread`).
_CONSENT_HINTS = ("consent", "opt", "subscri", "dnc", "do not", "permission", "sms", "text",
                  "marketing", "status", "stop")  # fmt: skip


def _consent_unread(sheet: Sheet, index: int, out: Collector) -> bool:
    """An unknown column that looks like SMS consent (a header with a consent word, not one
    about email, and only consent values: yes/no, subscribed/unsubscribed...) is an error of
    the header: read as nothing, it would leave someone who said no to be texted (a send
    sheet) or subscribed (a new customer). Found by a double-send trial ("SMS Subscription
    Status: unsubscribed" was texted)."""
    header = sheet.headers[index]
    key = header_key(header)
    if "mail" in key or not any(hint in key for hint in _CONSENT_HINTS):
        return False
    values = pc.unique(nz.strip(nz.to_arrow(sheet.column(index)))).to_pylist()
    words = {value_word(str(v)) for v in values if v}
    known = set(CONSENT_WORDS[True]) | set(CONSENT_WORDS[False])
    if not words or not words <= known:
        return False
    shown = ", ".join(sorted(words)[:4])
    out.add_header(
        index,
        "column.consent_unread",
        "error",
        f"{header!r} looks like SMS consent ({shown}), but it is not a column sonar-bulk "
        "reads, and nobody may be texted on a guess: pass --map "
        f"{header + '=subscribed'!r} (yes: consented) or --map {header + '=opted_out'!r} "
        "(yes: opted out), or rename or remove the column",
    )
    return True


def _check_extra_cells(sheet: Sheet, hmap: HeaderMap, out: Collector) -> None:
    """Cells beyond the last header would be lost: one ``row.extra_cells`` error per row. So
    are cells left in the ``sonar__extra_N`` columns where a split file keeps them."""
    spill: dict[int, list[str]] = {}
    for rownum, cells in sheet.extra_cells:
        pos = int(np.searchsorted(sheet.row_numbers, rownum))
        if pos < len(sheet.row_numbers) and sheet.row_numbers[pos] == rownum:
            spill[pos] = [c for c in cells if c.strip()]
    if spill:
        if sheet.format == "csv":
            why = "a delimiter inside an unquoted value?"
        else:
            why = "give the column a header, or move the values into the right column"
        positions = sorted(spill)
        out.add(
            np.asarray(positions),
            None,
            [" | ".join(spill[p]) for p in positions],
            "row.extra_cells",
            "error",
            [
                f"{nz.plural(len(spill[p]), 'value')} beyond the last header column would be "
                f"lost; {why}"
                for p in positions
            ],
            "(extra cells)",
        )
    for index in hmap.extra:
        values = nz.strip(nz.to_arrow(sheet.column(index)))
        filled = pc.greater(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
        out.add(
            np.flatnonzero(filled),
            index,
            values,
            "row.extra_cells",
            "error",
            "this cell stood beyond the last header column of the original file; move it into "
            "the right column or clear it",
        )


def _check_example_row(sheet: Sheet, kind: SheetKind, hmap: HeaderMap, out: Collector) -> None:
    """A row that is still the template's example row (every template column present holds its
    example value) is an error, so a template filled in below its example never sends it."""
    from sonar_bulk.templates import template_example, template_headers

    by_key = {header_key(h): i for i, h in enumerate(sheet.headers)}
    for name, index in hmap.fields.items():
        by_key[header_key(name)] = index
    same: np.ndarray | None = None
    compared: set[str] = set()
    for header, example in zip(template_headers(kind), template_example(kind), strict=True):
        idx = by_key.get(header_key(header))
        if idx is None or not example:
            continue
        equal = pc.equal(nz.strip(nz.to_arrow(sheet.column(idx))), example)
        hit = equal.to_numpy(zero_copy_only=False)
        same = hit if same is None else same & hit
        compared.add(header)
    if not all(c.name in compared for c in kind.columns if c.required):
        return  # the example's key is not in this sheet: no row can be the example
    if same is None or not same.any():
        return
    key = next(c.name for c in kind.columns if c.required)
    idx = by_key[header_key(key)]
    out.add(
        np.flatnonzero(same),
        idx,
        nz.to_arrow(sheet.column(idx)),
        "row.example",
        "error",
        "this is the template's example row; replace it with real data or delete it",
        key,
    )


def _other_kind_hint(sheet: Sheet, kind: SheetKind) -> str:
    """When the headers hold every required column of another kind, name that kind."""
    best: tuple[int, str] | None = None
    for other in KINDS.values():
        if other.name == kind.name:
            continue
        found = match_headers(other, sheet.headers).fields
        needed = [c.name for c in other.columns if c.required and not c.all_rows_option]
        groups_ok = all(any(g in found for g in group) for group in other.one_of)
        if needed and all(n in found for n in needed) and groups_ok:
            if best is None or len(found) > best[0]:
                best = (len(found), other.name)
    if best is None:
        return ""
    article = "an" if best[1][0] in "aeiou" else "a"
    return f"; this looks like {article} {best[1]} sheet (--kind {best[1]})"


def _header_row_hint(sheet: Sheet, kind: SheetKind, opts: ValidateOptions) -> str:
    """When a row below holds the kind's required headers (an export with a title line on top),
    say which one to pass as --header-row."""
    row = header_row_guess(sheet, [kind], opts.mapping)
    if row is None:
        return ""
    return f"; row {row} looks like the header: pass --header-row {row}"


def header_row_guess(
    sheet: Sheet, kinds: Iterable[SheetKind], mapping: dict[str, str] | None = None
) -> int | None:
    """The sheet row (1-based) among the first ten below the one read as the header that holds
    every required header of one of ``kinds``, when the header row read holds none's (a title
    line on top of an export); None otherwise."""
    kinds = list(kinds)

    def complete(kind: SheetKind, cells: list[str]) -> bool:
        found = match_headers(kind, cells, mapping=mapping).fields
        return all(c.name in found for c in kind.columns if c.required and not c.all_rows_option)

    if any(complete(kind, sheet.headers) for kind in kinds):
        return None
    for position, row in enumerate(sheet.data.slice(0, 10).to_pylist()):
        cells = [str(v or "") for v in row.values()]
        if any(complete(kind, cells) for kind in kinds):
            return int(sheet.row_numbers[position])
    return None


# ---------------------------------------------------------------------------------------------
# Campaign scheduling: the instant now and --default-send-time (the checks are in checks.py)


def utc_now() -> dt.datetime:
    """The time now, UTC (one place, so a test can move it)."""
    return dt.datetime.now(dt.UTC)


def _default_send_time(opts: ValidateOptions) -> dt.time | None:
    """``--default-send-time`` as a time of day; ValueError (a usage error) when it is not one."""
    if opts.default_send_time is None:
        return None
    try:
        return nz.parse_clock_time(opts.default_send_time)
    except ValueError as exc:
        raise ValueError(f"--default-send-time: {exc}") from None
