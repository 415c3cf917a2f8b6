"""Blank input sheets generated from the schemas (``sonar-bulk template`` and ``templates/``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sonar_bulk.errors import UsageError
from sonar_bulk.outputs import CsvFormat, atomic_path, write_table
from sonar_bulk.schema import KINDS, PROPERTY_TYPES, SheetKind

#: Said in every template's Instructions sheet.
EXAMPLE_NOTE = (
    "Row 2 of the sheet is an example: replace it with real data or delete it. sonar-bulk "
    "refuses to send it (validate reports it as row.example)."
)

#: Fixed document timestamps, so regenerated templates differ only when their content does.
_STAMP = dt.datetime(2026, 1, 1)


def template_headers(kind: SheetKind) -> list[str]:
    """Header row of a kind's template: its columns, then example extra columns."""
    return [c.name for c in kind.columns] + list(kind.extra_examples)


def template_example(kind: SheetKind) -> list[str]:
    """The one example row of a kind's template."""
    return [c.example for c in kind.columns] + list(kind.extra_examples.values())


def instructions(kind: SheetKind) -> list[list[str]]:
    """Rows of the Instructions sheet: column, required, format, example, description, aliases."""
    rows = [["column", "required", "format", "example", "description", "also accepted headers"]]
    for c in kind.columns:
        required = "yes" if c.required else ""
        if any(c.name in group for group in kind.one_of):
            required = "one of " + " / ".join(g for grp in kind.one_of for g in grp)
        rows.append([c.name, required, c.format, c.example, c.description, ", ".join(c.aliases)])
    if kind.allows_properties:
        rows.append(
            [
                "property:<name>[:<type>]",
                "",
                "Custom property; type is one of "
                + ", ".join(PROPERTY_TYPES)
                + " (inferred when omitted)",
                "gold",
                "Any extra column named property:plan sets the property plan",
                "",
            ]
        )
    if kind.merge_text is not None:
        rows.append(
            [
                "<any other column>",
                "",
                "Text",
                "Ana",
                "Usable as a {{merge field}} in " + kind.merge_text + ", e.g. {{first_name}}",
                "",
            ]
        )
    return rows


def write_template(kind_name: str, path: str | Path) -> Path:
    """Write the template of ``kind_name`` to ``path`` (.xlsx or .csv). UsageError otherwise."""
    kind = KINDS.get(kind_name)
    if kind is None:
        raise UsageError(f"unknown kind {kind_name!r}; choose from {', '.join(KINDS)}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        fmt = CsvFormat(bom=False, newline="\n")
        write_table(p, template_headers(kind), [template_example(kind)], csv_format=fmt)
        return p
    if suffix != ".xlsx":
        raise UsageError(f"{p}: a template is .xlsx or .csv")
    with atomic_path(p) as partial:
        _write_xlsx(kind, partial)
    return p


def _write_xlsx(kind: SheetKind, path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = Workbook()
    ws = wb.active
    ws.title = kind.name[:31]
    headers = template_headers(kind)
    ws.append(headers)
    ws.append(template_example(kind))
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    last_row = 5000
    for i, name in enumerate(headers, start=1):
        letter = get_column_letter(i)
        head = ws.cell(row=1, column=i)
        head.font = bold
        head.fill = fill
        ws.column_dimensions[letter].width = max(14, len(name) + 4)
        col = next((c for c in kind.columns if c.name == name), None)
        # Every column is Text: phones keep their +, ZIP codes their leading 0.
        ws.column_dimensions[letter].number_format = "@"
        ws.cell(row=2, column=i).number_format = "@"
        if col is not None and col.type in ("bool", "consent", "opt_out"):
            dv = DataValidation(type="list", formula1='"true,false"', allow_blank=True)
            dv.error = "Use true or false (blank leaves it as is)"
            dv.add(f"{letter}2:{letter}{last_row}")
            ws.add_data_validation(dv)
        if col is not None and col.type == "property_type":
            dv = DataValidation(
                type="list", formula1='"' + ",".join(PROPERTY_TYPES) + '"', allow_blank=True
            )
            dv.add(f"{letter}2:{letter}{last_row}")
            ws.add_data_validation(dv)
    ws.freeze_panes = "A2"
    info = wb.create_sheet("Instructions")
    for row in instructions(kind):
        info.append(row)
    for cell in info[1]:
        cell.font = bold
    for letter, width in zip("ABCDEF", (26, 12, 60, 30, 50, 50), strict=True):
        info.column_dimensions[letter].width = width
    info.append([])
    info.append([kind.description])
    info.append([EXAMPLE_NOTE])
    info.append(["Check a filled sheet with: sonar-bulk validate FILE --kind " + kind.name])
    wb.properties.created = _STAMP
    wb.properties.modified = _STAMP
    wb.properties.creator = "sonar-bulk"
    wb.save(path)
