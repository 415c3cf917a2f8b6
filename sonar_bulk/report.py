"""Write what validation found: issue sheets, JSON, split files and the human summary.

Output sheets are written from plain header + rows, CSV and XLSX by the same function
(:func:`sonar_bulk.outputs.write_table`), so the two formats never drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sonar_bulk import normalize as nz
from sonar_bulk.errors import UsageError
from sonar_bulk.issues import ISSUE_COLUMNS
from sonar_bulk.outputs import CsvFormat, atomic_path, head_rows, write_table
from sonar_bulk.schema import (
    ISSUES_COLUMN,
    ROW_COLUMN,
    is_extra_column,
    is_tool_column,
)
from sonar_bulk.sheets import WORKBOOK_SUFFIXES, Sheet
from sonar_bulk.sms import Segments, sms_segments
from sonar_bulk.validation import Validation
from sonar_bulk.workbook import typed_for


def write_issues(validation: Validation, path: Path) -> None:
    """Write the issues as a sheet with columns row, column, value, code, severity, message."""
    write_table(path, ISSUE_COLUMNS, validation.issues.iter_rows(), "issues")


def summary_dict(validation: Validation) -> dict[str, Any]:
    """The ``--json`` document's counts and facts (everything but the issue and message lists,
    which :func:`write_json` streams)."""
    doc: dict[str, Any] = {
        "command": "validate",
        "input": str(validation.sheet.path),
        "kind": validation.kind.name,
        "rows": validation.rows,
        "valid_rows": validation.valid_rows,
        "invalid_rows": validation.invalid_rows,
        "warnings": validation.warnings,
        "errors": validation.errors,
        "empty_rows_skipped": validation.sheet.empty_rows,
        "hidden_rows": validation.sheet.hidden_rows,
        "read_warnings": list(validation.sheet.warnings),
        "issues_by_code": validation.by_code(),
    }
    if validation.segments:
        doc["sms"] = validation.segments
    if validation.consent is not None:
        doc["consent"] = dataclasses.asdict(validation.consent)
    return doc


#: A sheet with no SMS-consent column that can create customers: what Sonar does then.
NO_CONSENT_COLUMN = {
    "customers": (
        "  sms consent: no consent column; each new customer is subscribed (Sonar's default), "
        "existing ones are left as they are. To import consent, add a column such as "
        "'SMS Consent' (yes/no)"
    ),
    "properties": (
        "  sms consent: a phone Sonar does not know becomes a new customer, subscribed "
        "(Sonar's default); properties set --existing-only leaves such rows out"
    ),
}


def consent_line(validation: Validation) -> str | None:
    """The SMS-consent column's rows by consent, as a summary line. Without the column, a
    sheet that can create customers (customers; properties, whose set creates a phone Sonar
    does not know) says that Sonar subscribes each new one; other kinds: None."""
    c = validation.consent
    if c is None:
        if validation.options.command == "properties delete":
            return None
        return NO_CONSENT_COLUMN.get(validation.kind.name)
    source = c.field if c.column.strip() == c.field else f"{c.field}, from {c.column!r}"
    if validation.kind.name == "customers":
        no, blank = f"{c.field}=false", "left as is in Sonar; a new customer is subscribed"
    else:
        no, blank = "never sent", "sent: Sonar's own subscription applies"
    line = (
        f"  sms consent ({source}): {c.consented:,} consented, "
        f"{c.not_consented:,} not consented ({no}), {c.unknown:,} unknown (blank: {blank})"
    )
    if c.invalid:
        line += f", {c.invalid:,} not a consent value (errors)"
    return _printable(line)


def rendered_messages(validation: Validation) -> list[dict[str, Any]]:
    """Messages only: each row's text as it will be sent, with its SMS cost (rows whose text
    could not be rendered are left out; their issues say why)."""
    texts = validation.normalized.get("text")
    if texts is None:
        return []
    to = validation.normalized.get("to")
    to_list = to.to_pylist() if to is not None else [""] * len(texts)
    hidden = validation.sheet.hidden
    cost: dict[str, Segments] = {}
    out = []
    for i, text in enumerate(texts.to_pylist()):
        if not text:
            continue
        seg = cost.get(text) or cost.setdefault(text, sms_segments(text))
        out.append(
            {
                "row": int(validation.sheet.row_numbers[i]),
                "to": to_list[i],
                "text": text,
                "encoding": seg.encoding,
                "segments": seg.segments,
                "valid": not bool(validation.invalid[i]),
                "hidden": bool(hidden is not None and hidden[i]),
            }
        )
    return out


def write_json(validation: Validation, stream: Any, extra: dict[str, Any] | None = None) -> None:
    """Write the ``--json`` document: the summary (and ``extra``, the command's own facts),
    then ``issues`` (and for messages ``rendered``) one object per line, streamed so half a
    million issues stay fast and small."""
    head = json.dumps({**summary_dict(validation), **(extra or {})}, ensure_ascii=False, indent=1)
    stream.write(head[: head.rindex("}")].rstrip() + ",\n")
    lists: list[tuple[str, Iterable[dict[str, Any]]]] = [
        (
            "issues",
            (dict(zip(ISSUE_COLUMNS, r, strict=True)) for r in validation.issues.iter_rows()),
        ),
    ]
    if validation.segments:
        lists.append(("rendered", rendered_messages(validation)))
    for n, (name, items) in enumerate(lists):
        stream.write(f' "{name}": [')
        for i, item in enumerate(items):
            stream.write(("\n  " if i == 0 else ",\n  ") + json.dumps(item, ensure_ascii=False))
        stream.write("\n ]" + (",\n" if n < len(lists) - 1 else "\n"))
    stream.write("}\n")


def split_paths(source: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """``<stem>.valid.<ext>`` and ``<stem>.invalid.<ext>`` beside the source (or in out_dir).

    A delimited source keeps its extension (``x.txt`` and ``x.csv`` never share split files);
    a workbook gives ``.xlsx`` outputs.
    """
    ext = ".xlsx" if source.suffix.lower() in WORKBOOK_SUFFIXES else source.suffix
    folder = out_dir or source.parent
    return folder / f"{source.stem}.valid{ext}", folder / f"{source.stem}.invalid{ext}"


def row_issue_texts(validation: Validation) -> dict[int, str]:
    """Per Excel row number: that row's issues as ``column: message; ...`` (warnings marked).

    Errors on the header row (a missing column, a bad --map) make every row invalid, so they
    start every row's text.
    """
    header_row = validation.sheet.header_row
    per_row: dict[int, list[str]] = {}
    header_errors: list[str] = []
    for row, column, _value, _code, severity, message in validation.issues.iter_rows():
        if row == header_row:
            if severity == "error":
                header_errors.append(f"{column}: {message}")
            continue
        text = f"{column}: {message}" + (" (warning)" if severity == "warning" else "")
        per_row.setdefault(int(row), []).append(text)
    out = {row: _cap("; ".join(texts)) for row, texts in per_row.items()}
    if header_errors:
        head = "; ".join(header_errors)
        for row in validation.sheet.row_numbers[validation.invalid].tolist():
            out[row] = _cap(head + ("; " + out[row] if row in out else ""))
    return out


#: Longest ``sonar__issues`` text: a file written by the tool must stay readable by it.
ISSUES_TEXT_LIMIT = 2000


def _cap(text: str) -> str:
    return text if len(text) <= ISSUES_TEXT_LIMIT else text[: ISSUES_TEXT_LIMIT - 1] + "…"


def _split_layout(validation: Validation) -> tuple[list[str], list[int], list[int]]:
    """(headers as typed, the columns both split files keep, the columns of the valid file)."""
    headers = validation.sheet.header_cells or validation.sheet.headers
    # Columns an earlier split added are stale; user cells kept in sonar__extra_N are not.
    kept = [i for i, h in enumerate(headers) if not is_tool_column(h) or is_extra_column(h)]
    plain = [i for i in kept if not is_extra_column(headers[i])]
    return headers, kept, plain


def check_split(validation: Validation, force: bool = False, out_dir: Path | None = None) -> None:
    """UsageError when a split file to be written exists and is not sonar-bulk's own as it
    wrote it (:class:`~sonar_bulk.owned.Written`: a file of the user's, or an invalid file
    fixed in place), unless ``force``. A file the registry does not know is taken for one
    sonar-bulk wrote when its header ends as a split file's does (``sonar__row``, and
    ``sonar__issues`` in the invalid one)."""
    from sonar_bulk.owned import Written

    if force:
        return
    sheet = validation.sheet
    header_at = len(sheet.preamble)
    written = Written()
    for path, ending in zip(
        split_paths(sheet.path, out_dir), ([ROW_COLUMN], [ROW_COLUMN, ISSUES_COLUMN]), strict=True
    ):
        if not path.exists():
            continue
        state = written.state(path)
        if state == "edited":
            raise UsageError(
                f"--split: {path} was edited since sonar-bulk wrote it; move it away or pass "
                "--force to replace it"
            )
        rows = head_rows(path, header_at + 1, csv_format(sheet))
        header = rows[header_at] if len(rows) > header_at else []
        if state == "unknown" and header[-len(ending) :] != ending:
            raise UsageError(
                f"--split: {path} exists and sonar-bulk did not write it; move it away or pass "
                "--force to replace it"
            )


def csv_format(sheet: Sheet) -> CsvFormat | None:
    """How split files of ``sheet`` are written: its own CSV format (None for a workbook)."""
    if sheet.format != "csv":
        return None
    return CsvFormat(sheet.delimiter or ",", sheet.encoding or "utf-8", sheet.bom, sheet.newline)


def write_split(validation: Validation, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write the valid and the invalid rows to two files beside the input.

    Both keep the input's headers, cell text, delimiter, encoding, BOM and line ending, so
    they can be fixed and fed back in, and end with ``sonar__row`` (the row number in the
    input, as the report gives it). The invalid file also keeps cells beyond the last header
    (in ``sonar__extra_N`` columns) and ends with ``sonar__issues`` (the row's issues);
    reading a sheet ignores those columns. CSV cells that could run as a formula are
    neutralized, and read back as typed (see :mod:`sonar_bulk.outputs`). The two files
    appear together or not at all.
    """
    from sonar_bulk.results import Spill

    sheet = validation.sheet
    valid_path, invalid_path = split_paths(sheet.path, out_dir)
    fmt = csv_format(sheet)
    headers, kept, plain = _split_layout(validation)
    phones = {
        idx
        for name, idx in validation.headers.fields.items()
        if validation.kind.column(name).type == "phone"
    }
    bad = np.asarray(validation.invalid, dtype=bool)
    title = sheet.sheet_name or validation.kind.name

    def valid_rows() -> Iterable[list[str]]:
        good = sheet.row_numbers[~bad].tolist()
        for rownum, row in zip(good, sheet.iter_rows(~bad), strict=True):
            yield [row[i] for i in plain] + [str(rownum)]

    spill = Spill(sheet, headers, kept)
    issues = row_issue_texts(validation)
    numbers = sheet.row_numbers[bad].tolist()

    def invalid_rows() -> Iterable[list[str]]:
        for rownum, row in zip(numbers, sheet.iter_rows(bad), strict=True):
            yield (
                [row[i] for i in kept] + spill.cells(rownum) + [str(rownum), issues.get(rownum, "")]
            )

    outputs = (
        (valid_path, [headers[i] for i in plain] + [ROW_COLUMN], valid_rows(), plain),
        (
            invalid_path,
            [headers[i] for i in kept] + spill.names + [ROW_COLUMN, ISSUES_COLUMN],
            invalid_rows(),
            kept,
        ),
    )
    # in a workbook, the cells beyond the last header stand right after it
    typed = {
        valid_path: typed_for(sheet, np.flatnonzero(~bad), plain, {ROW_COLUMN}),
        invalid_path: typed_for(
            sheet,
            np.flatnonzero(bad),
            kept + spill.columns,
            {ROW_COLUMN},
        ),
    }
    # rows the workbook hides stay hidden (a hidden "DO NOT CONTACT" row must not be sent
    # from the split file)
    hiding = {
        valid_path: sheet.hidden[~bad].tolist() if sheet.hidden is not None else None,
        invalid_path: sheet.hidden[bad].tolist() if sheet.hidden is not None else None,
    }
    with contextlib.ExitStack() as stack:  # both renamed into place at the end, or neither
        for path, names, rows, columns in outputs:
            write_table(
                path,
                names,
                rows,
                title,
                text_columns=[n for n, i in enumerate(columns) if i in phones],
                csv_format=fmt,
                preamble=sheet.preamble,
                into=stack.enter_context(atomic_path(path)),
                hidden=hiding[path],
                typed=typed[path],
            )
    from sonar_bulk.owned import Written

    written = Written()
    for path in (valid_path, invalid_path):
        written.note(path)  # ours to write again while nobody changes it
    return valid_path, invalid_path


def _changed_examples(validation: Validation, name: str, limit: int = 3) -> list[tuple[str, str]]:
    """Up to ``limit`` (as typed, E.164) pairs of the phone column ``name`` that changed."""
    out: list[tuple[str, str]] = []
    original = validation.picked.get(name)
    if original is None:
        original = nz.strip(nz.to_arrow(validation.sheet.column(validation.headers.fields[name])))
    normalized = validation.normalized[name]
    head = min(len(original), 5000)
    for a, b in zip(
        original.slice(0, head).to_pylist(), normalized.slice(0, head).to_pylist(), strict=True
    ):
        if a and b and a != b and (a, b) not in out:
            out.append((a, b))
            if len(out) >= limit:
                break
    return out


def _hidden_line(v: Validation) -> str:
    """How many rows the workbook hides, and how many of them have errors (a bulk run skips
    them, so their errors don't stop it)."""
    hidden = v.sheet.hidden
    assert hidden is not None
    line = f"  {nz.plural(int(hidden.sum()), 'hidden row')} (not sent unless --include-hidden)"
    invalid = int((hidden & v.invalid).sum())
    if invalid:
        line += f"; {invalid:,} of them with errors, which don't stop a run without it"
    return line


def _count_filled(arr: pa.Array) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.not_equal(arr, "")).as_py() or 0)


def human_summary(validation: Validation, max_issues: int = 10) -> str:
    """The summary printed on stderr: counts, issues by code, first issues, phones, SMS."""
    v = validation
    sheet = v.sheet
    where = f"{sheet.path}" + (f" [{sheet.sheet_name}]" if sheet.sheet_name else "")
    lines = [
        f"{where}: {v.kind.name}, {nz.plural(v.rows, 'row')}"
        + (f" ({nz.plural(sheet.empty_rows, 'empty row')} skipped)" if sheet.empty_rows else "")
    ]
    if sheet.hidden_rows:
        lines.append(_hidden_line(v))
    for w in sheet.warnings:
        lines.append(f"  note: {w}")
    verdict = "OK" if v.errors == 0 else "NOT READY"
    lines.append(
        f"  {verdict}: {v.valid_rows:,} valid, {v.invalid_rows:,} invalid, "
        f"{nz.plural(v.errors, 'error')}, {nz.plural(v.warnings, 'warning')}"
    )
    codes = v.by_code()
    if codes:
        lines.append("  issues by code:")
        width = max(len(c) for c in codes)
        for code, count in codes.items():
            lines.append(f"    {code:<{width}}  {count:,}")
        shown = v.issues.first(max_issues)
        if shown:
            lines.append(f"  first {len(shown)} of {len(v.issues):,} issues (errors first):")
        for r, c, val, code, sev, msg in shown:
            value = val if len(str(val)) <= 40 else str(val)[:37] + "..."
            lines.append(f"    row {r}, {c}: {value!r} {code} ({sev}): {msg}")
    phones = [n for n in v.normalized if n in v.headers.fields and v.kind.column(n).type == "phone"]
    for name in phones:
        filled = _count_filled(v.normalized[name])
        region = f"default region {v.options.default_region}"
        if v.headers.countries:
            given = " else ".join(repr(v.sheet.headers[i]) for i in v.headers.countries)
            region = f"region from {given} where given, else {v.options.default_region}"
        lines.append(f"  {name}: {nz.plural(filled, 'number')} normalized to E.164 ({region})")
        for a, b in _changed_examples(v, name):
            lines.append(f"    {_printable(a)} -> {b}")
        columns = v.headers.alternates.get(name)
        if columns and any(i in v.headers.labels for i in columns):
            order = ", ".join(repr(v.sheet.headers[i]) for i in sorted(columns))
            lines.append(
                f"    from {order} by their labels: a mobile first, a fax or pager never "
                "(sonar__phone_from)"
            )
        elif columns:
            order = " else ".join(repr(v.sheet.headers[i]) for i in columns)
            lines.append(f"    from {order}: the first that is not blank (sonar__phone_from)")
    consent = consent_line(v)
    if consent is not None:
        lines.append(consent)
    if v.segments:
        s = v.segments
        lines.append(
            f"  sms: {nz.plural(s['messages'], 'message')}, {nz.plural(s['segments'], 'segment')} "
            f"(GSM-7: {s['gsm7']:,}, UCS-2: {s['ucs2']:,}; longest: "
            f"{nz.plural(s['max_segments'], 'segment')})"
        )
        texts = v.normalized.get("text")
        if texts is not None:
            to = v.normalized.get("to")
            hidden = sheet.hidden  # a hidden row is not sent (unless --include-hidden)
            shown_n = 0
            for i, t in enumerate(texts.slice(0, 50).to_pylist()):
                if t and not v.invalid[i] and not (hidden is not None and hidden[i]):
                    seg = sms_segments(t)
                    dest = to[i].as_py() if to is not None else ""
                    preview = t if len(t) <= 70 else t[:67] + "..."
                    lines.append(
                        f"    row {int(sheet.row_numbers[i])} to {dest}: {preview!r} "
                        f"[{seg.encoding}, {seg.segments} seg]"
                    )
                    shown_n += 1
                    if shown_n >= 3:
                        break
    return "\n".join(_printable(line) for line in lines)


def _printable(text: str) -> str:
    """``text`` with control characters shown as escapes: a cell can't move the cursor or
    rewrite what the terminal shows."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
