"""templates/ is generated from the schemas; this test fails when it drifts."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import load_workbook

from sonar_bulk.schema import KINDS
from sonar_bulk.templates import (
    EXAMPLE_NOTE,
    instructions,
    template_example,
    template_headers,
    write_template,
)

from .conftest import ROOT

TEMPLATES = ROOT / "templates"


def workbook_content(path: Path) -> dict[str, object]:
    """What a person sees in a template workbook: cells, Text formats, drop-downs."""
    wb = load_workbook(path)
    data = wb.worksheets[0]
    return {
        "sheets": wb.sheetnames,
        "cells": {
            ws.title: [list(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets
        },
        "text_columns": sorted(
            k for k, d in data.column_dimensions.items() if d.number_format == "@"
        ),
        "example_formats": [c.number_format for c in data[2]],
        "dropdowns": sorted(
            (dv.formula1, str(dv.sqref)) for dv in data.data_validations.dataValidation
        ),
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_templates_match_generator(tmp_path: Path, kind: str) -> None:
    for suffix in (".csv", ".xlsx"):
        fresh = write_template(kind, tmp_path / f"{kind}{suffix}")
        committed = TEMPLATES / f"{kind}{suffix}"
        assert committed.exists(), f"run: sonar-bulk template {kind} -o {committed}"
        if suffix == ".csv":
            assert fresh.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), (
                f"templates/{kind}.csv drifted; run: sonar-bulk template {kind} -o {committed}"
            )
        else:
            assert workbook_content(fresh) == workbook_content(committed), (
                f"templates/{kind}.xlsx drifted; run: sonar-bulk template {kind} -o {committed}"
            )


def test_xlsx_template_shape(tmp_path: Path) -> None:
    """Header + one example row, every column Text, booleans as a drop-down, instructions."""
    path = write_template("customers", tmp_path / "c.xlsx")
    content = workbook_content(path)
    assert content["sheets"] == ["customers", "Instructions"]
    cells = content["cells"]
    assert isinstance(cells, dict)
    assert cells["customers"][0] == template_headers(KINDS["customers"])
    assert cells["customers"][1] == template_example(KINDS["customers"])
    text_columns, formats, dropdowns = (
        content["text_columns"],
        content["example_formats"],
        content["dropdowns"],
    )
    assert isinstance(text_columns, list) and isinstance(formats, list)
    assert isinstance(dropdowns, list)
    assert "A" in text_columns  # phone_number
    assert set(formats) == {"@"}
    assert ('"true,false"', "F2:F5000") in dropdowns
    info = [[v or "" for v in row] for row in cells["Instructions"]]
    assert info[: len(instructions(KINDS["customers"]))] == instructions(KINDS["customers"])
    assert any(row[0] == EXAMPLE_NOTE for row in info)  # the example row is said to be one


def test_instructions_cover_every_column() -> None:
    for kind in KINDS.values():
        names = [row[0] for row in instructions(kind)[1:]]
        assert [c.name for c in kind.columns] == names[: len(kind.columns)]
