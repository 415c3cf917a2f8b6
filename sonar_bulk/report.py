"""Write what validation found: issue sheets, JSON, split files and the human summary.

Output sheets are written from plain header + rows, CSV and XLSX by the same function
(:func:`write_table`), so the two formats never drift apart.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sonar_bulk import normalize as nz
from sonar_bulk.errors import UsageError
from sonar_bulk.validate import ISSUE_COLUMNS, Validation

TABLE_SUFFIXES = (".csv", ".xlsx")
XLSX_MAX_ROWS = 1_048_576


def check_output_path(path: str | Path, what: str) -> Path:
    """A writable ``.csv``/``.xlsx`` output path; UsageError otherwise."""
    p = Path(path)
    if p.suffix.lower() not in TABLE_SUFFIXES:
        raise UsageError(f"{what} {p}: use a .csv or .xlsx file name")
    if p.exists() and p.is_dir():
        raise UsageError(f"{what} {p}: is a directory")
    if not p.parent.exists():
        raise UsageError(f"{what} {p}: folder {p.parent} does not exist")
    return p


def write_table(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    sheet_title: str = "Sheet1",
    text_columns: Sequence[int] = (),
) -> None:
    """Write rows as CSV (UTF-8 with a BOM, so Excel shows accents) or XLSX, by extension.

    In XLSX every value is written as given (strings stay text, so phones keep their ``+``);
    ``text_columns`` are also formatted as Text so that new entries typed by hand stay text.
    """
    if path.suffix.lower() == ".csv":
        with path.open("w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(headers)
            writer.writerows(rows)
        return
    import xlsxwriter

    # Cell text must stay exactly as given: no formulas from "=...", no hyperlinks, no numbers
    # from digit strings (that is how phones lose their + and ZIP codes their 0).
    wb = xlsxwriter.Workbook(
        str(path),
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    try:
        ws = wb.add_worksheet(sheet_title[:31])
        text = wb.add_format({"num_format": "@"})
        for i in text_columns:
            ws.set_column(i, i, None, text)
        ws.write_row(0, 0, list(headers), wb.add_format({"bold": True}))
        for r, row in enumerate(rows, start=1):
            if r >= XLSX_MAX_ROWS:
                raise UsageError(
                    f"{path}: more than {XLSX_MAX_ROWS - 1:,} rows do not fit in an .xlsx "
                    "sheet; write a .csv instead"
                )
            ws.write_row(r, 0, row)
    finally:
        wb.close()


def write_issues(validation: Validation, path: Path) -> None:
    """Write the issues as a sheet with columns row, column, value, code, severity, message."""
    write_table(path, ISSUE_COLUMNS, validation.issues.iter_rows(), "issues")


def summary_dict(validation: Validation) -> dict[str, Any]:
    """The ``--json`` document's counts and facts (everything but the issue and message lists,
    which :func:`write_json` streams)."""
    doc: dict[str, Any] = {
        "kind": validation.kind.name,
        "rows": validation.rows,
        "valid_rows": validation.valid_rows,
        "invalid_rows": validation.invalid_rows,
        "warnings": validation.warnings,
        "errors": validation.errors,
        "file": str(validation.sheet.path),
        "empty_rows_skipped": validation.sheet.empty_rows,
        "read_warnings": list(validation.sheet.warnings),
        "issues_by_code": validation.by_code(),
    }
    if validation.segments:
        doc["sms"] = validation.segments
    return doc


def rendered_messages(validation: Validation) -> list[dict[str, Any]]:
    """Messages only: each row's text as it will be sent, with its SMS cost (rows whose text
    could not be rendered are left out; their issues say why)."""
    texts = validation.normalized.get("text")
    if texts is None:
        return []
    to = validation.normalized.get("to")
    to_list = to.to_pylist() if to is not None else [""] * len(texts)
    cost: dict[str, nz.Segments] = {}
    out = []
    for i, text in enumerate(texts.to_pylist()):
        if not text:
            continue
        seg = cost.get(text) or cost.setdefault(text, nz.sms_segments(text))
        out.append(
            {
                "row": int(validation.sheet.row_numbers[i]),
                "to": to_list[i],
                "text": text,
                "encoding": seg.encoding,
                "segments": seg.segments,
                "valid": not bool(validation.invalid[i]),
            }
        )
    return out


def write_json(validation: Validation, stream: Any) -> None:
    """Write the ``--json`` document: the summary, then ``issues`` (and for messages
    ``rendered``) one object per line, streamed so half a million issues stay fast and small."""
    head = json.dumps(summary_dict(validation), ensure_ascii=False, indent=1)
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

    A workbook source gives ``.xlsx`` outputs; any delimited source gives ``.csv``.
    """
    ext = (
        ".xlsx" if source.suffix.lower() in (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods") else ".csv"
    )
    folder = out_dir or source.parent
    return folder / f"{source.stem}.valid{ext}", folder / f"{source.stem}.invalid{ext}"


def write_split(validation: Validation, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write valid and invalid rows to two files with the original headers and cell text."""
    sheet = validation.sheet
    valid_path, invalid_path = split_paths(sheet.path, out_dir)
    bad = validation.invalid
    phone_cols = [
        idx
        for name, idx in validation.headers.fields.items()
        if validation.kind.column(name).type == "phone"
    ]
    for path, keep in ((valid_path, ~bad), (invalid_path, bad)):
        chosen = sheet.iter_rows(np.asarray(keep, dtype=bool))
        write_table(path, sheet.headers, chosen, validation.kind.name, text_columns=phone_cols)
    return valid_path, invalid_path


def _changed_examples(validation: Validation, limit: int = 3) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, idx in validation.headers.fields.items():
        if validation.kind.column(name).type != "phone" or name not in validation.normalized:
            continue
        original = nz.strip(nz.to_arrow(validation.sheet.column(idx)))
        normalized = validation.normalized[name]
        head = min(len(original), 5000)
        for a, b in zip(
            original.slice(0, head).to_pylist(), normalized.slice(0, head).to_pylist(), strict=True
        ):
            if b and a != b and (a, b) not in out:
                out.append((a, b))
                if len(out) >= limit:
                    return out
    return out


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _count_filled(arr: pa.Array) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.not_equal(arr, "")).as_py() or 0)


def human_summary(validation: Validation, max_issues: int = 10) -> str:
    """The summary printed on stderr: counts, issues by code, first issues, phones, SMS."""
    v = validation
    sheet = v.sheet
    where = f"{sheet.path}" + (f" [{sheet.sheet_name}]" if sheet.sheet_name else "")
    lines = [
        f"{where}: {v.kind.name}, {_plural(v.rows, 'row')}"
        + (f" ({_plural(sheet.empty_rows, 'empty row')} skipped)" if sheet.empty_rows else "")
    ]
    for w in sheet.warnings:
        lines.append(f"  note: {w}")
    verdict = "OK" if v.errors == 0 else "NOT READY"
    lines.append(
        f"  {verdict}: {v.valid_rows:,} valid, {v.invalid_rows:,} invalid, "
        f"{_plural(v.errors, 'error')}, {_plural(v.warnings, 'warning')}"
    )
    codes = v.by_code()
    if codes:
        lines.append("  issues by code:")
        width = max(len(c) for c in codes)
        for code, count in codes.items():
            lines.append(f"    {code:<{width}}  {count:,}")
        shown = v.issues.rows(max_issues)
        lines.append(f"  first {len(shown)} of {len(v.issues):,} issues:")
        for r, c, val, code, sev, msg in shown:
            value = val if len(str(val)) <= 40 else str(val)[:37] + "..."
            lines.append(f"    row {r}, {c}: {value!r} {code} ({sev}): {msg}")
    phones = [n for n in v.normalized if n in v.headers.fields and v.kind.column(n).type == "phone"]
    for name in phones:
        filled = _count_filled(v.normalized[name])
        lines.append(
            f"  {name}: {_plural(filled, 'number')} normalized to E.164 "
            f"(default region {v.options.default_region})"
        )
        for a, b in _changed_examples(v):
            lines.append(f"    {a} -> {b}")
        break
    if v.segments:
        s = v.segments
        lines.append(
            f"  sms: {_plural(s['messages'], 'message')}, {_plural(s['segments'], 'segment')} "
            f"(GSM-7: {s['gsm7']:,}, UCS-2: {s['ucs2']:,}; longest: "
            f"{_plural(s['max_segments'], 'segment')})"
        )
        texts = v.normalized.get("text")
        if texts is not None:
            to = v.normalized.get("to")
            shown_n = 0
            for i, t in enumerate(texts.slice(0, 50).to_pylist()):
                if t and not v.invalid[i]:
                    seg = nz.sms_segments(t)
                    dest = to[i].as_py() if to is not None else ""
                    preview = t if len(t) <= 70 else t[:67] + "..."
                    lines.append(
                        f"    row {int(sheet.row_numbers[i])} to {dest}: {preview!r} "
                        f"[{seg.encoding}, {seg.segments} seg]"
                    )
                    shown_n += 1
                    if shown_n >= 3:
                        break
    return "\n".join(lines)
