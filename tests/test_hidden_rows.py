"""Rows hidden in a workbook (by hand, by an AutoFilter, in a collapsed outline group): read as
a mask aligned with the data rows, and never sent by a bulk run unless --include-hidden."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook
from openpyxl.worksheet.filters import FilterColumn, Filters

from sonar_bulk.errors import InputError
from sonar_bulk.sheets import hidden_row_ranges, read_sheet

from .conftest import write_csv

HIDDEN_TEXT = "skipped (hidden in the sheet)"


def hidden_workbook(path: Path) -> Path:
    """A messages sheet as Excel saves one after hiding and filtering: row 3 hidden by hand
    (the DO NOT CONTACT row), row 5 filtered out by the AutoFilter on Status, rows 7-8 in a
    collapsed outline group, row 6 empty and hidden (dropped as empty), rows 2, 4 and 9 shown.
    """
    wb = Workbook()
    ws = wb.active
    ws.title = "Send"
    ws.append(["to", "text", "Status"])
    ws.append(["+13105550101", "Hi Ana", "ok"])  # 2
    ws.append(["+13105550102", "Hi Bob", "DO NOT CONTACT"])  # 3: hidden by hand
    ws.append(["+13105550103", "Hi Cy", "ok"])  # 4
    ws.append(["+13105550104", "Hi Di", "bounced"])  # 5: filtered out
    ws.append([])  # 6: empty (and hidden)
    ws.append(["+13105550106", "Hi Ed", "ok"])  # 7: collapsed group
    ws.append(["+13105550107", "Hi Flo", "ok"])  # 8: collapsed group
    ws.append(["+13105550108", "Hi Gus", "ok"])  # 9
    ws.row_dimensions[3].hidden = True
    # Excel saves an AutoFilter with its criteria, and the rows it filters out as hidden
    ws.auto_filter.ref = "A1:C9"
    ws.auto_filter.filterColumn.append(FilterColumn(colId=2, filters=Filters(filter=["ok"])))
    ws.row_dimensions[5].hidden = True
    ws.row_dimensions[6].hidden = True
    ws.row_dimensions.group(7, 8, outline_level=1, hidden=True)
    wb.save(path)
    return path


# -- reading -----------------------------------------------------------------------------------


def test_the_mask_follows_the_data_rows(tmp_path: Path) -> None:
    path = hidden_workbook(tmp_path / "send.xlsx")
    raw = zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml").decode()
    assert '<autoFilter ref="A1:C9">' in raw and re.search(r'<row r="7"[^>]*hidden="1"', raw)
    sheet = read_sheet(path)
    assert list(sheet.row_numbers) == [2, 3, 4, 5, 7, 8, 9]
    assert sheet.empty_rows == 1
    assert sheet.hidden is not None
    assert sheet.hidden.tolist() == [False, True, False, True, True, True, False]
    assert sheet.hidden_rows == 4
    assert [r[0] for r in sheet.iter_rows(~sheet.hidden)] == [
        "+13105550101",
        "+13105550103",
        "+13105550108",
    ]


def test_each_sheet_has_its_own_hidden_rows(tmp_path: Path) -> None:
    wb = Workbook()
    first = wb.active
    first.title = "A & B"
    second = wb.create_sheet("Other")
    for ws in (first, second):
        ws.append(["phone"])
        for i in range(4):
            ws.append([f"+1310555010{i}"])
    first.row_dimensions[2].hidden = True
    second.row_dimensions[4].hidden = True
    second.row_dimensions[5].hidden = True
    wb.save(tmp_path / "two.xlsx")
    a = read_sheet(tmp_path / "two.xlsx")
    b = read_sheet(tmp_path / "two.xlsx", sheet="Other")
    assert a.sheet_name == "A & B" and a.hidden is not None
    assert a.hidden.tolist() == [True, False, False, False]
    assert b.hidden is not None and b.hidden.tolist() == [False, False, True, True]


def test_no_hidden_rows_and_csv(tmp_path: Path) -> None:
    wb = Workbook()
    wb.active.append(["phone"])
    wb.active.append(["+13105550101"])
    wb.save(tmp_path / "plain.xlsx")
    plain = read_sheet(tmp_path / "plain.xlsx")
    assert plain.hidden is not None and not plain.hidden.any() and plain.hidden_rows == 0
    csv_sheet = read_sheet(write_csv(tmp_path / "a.csv", "phone\n+13105550101\n"))
    assert csv_sheet.hidden is None and csv_sheet.hidden_rows == 0


def test_rows_without_their_number_are_counted(tmp_path: Path) -> None:
    """``r`` is optional on a row tag: rows are then numbered one after another."""
    wb = Workbook()
    for i in range(4):
        wb.active.append([f"h{i}"] if i == 0 else [f"+1310555010{i}"])
    wb.active.row_dimensions[3].hidden = True
    wb.save(tmp_path / "a.xlsx")
    out = tmp_path / "no-r.xlsx"
    with zipfile.ZipFile(tmp_path / "a.xlsx") as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb'(<row) r="\d+"', rb"\1", data)
                assert b'<row hidden="1">' in data
            dst.writestr(item, data)
    sheet = read_sheet(out)
    assert list(sheet.row_numbers) == [2, 3, 4]
    assert sheet.hidden is not None and sheet.hidden.tolist() == [False, True, False]


def _ods(path: Path, tables: str) -> Path:
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f"<office:body><office:spreadsheet>{tables}</office:spreadsheet></office:body>"
        "</office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet")
        z.writestr("META-INF/manifest.xml", manifest)
        z.writestr("content.xml", content)
    return path


def _ods_row(values: list[str], attrs: str = "") -> str:
    cells = "".join(
        f'<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>'
        for v in values
    )
    return f"<table:table-row{attrs}>{cells}</table:table-row>"


def test_ods_collapsed_and_filtered_rows(tmp_path: Path) -> None:
    """table:visibility collapsed (hidden, or a collapsed group) or filter; a repeated row
    stands for several rows; another sheet's hidden rows don't count."""
    other = _ods_row(["x"], ' table:visibility="collapsed"')
    body = (
        _ods_row(["to", "text"])
        + _ods_row(["+13105550101", "a"])
        + _ods_row(["+13105550102", "b"], ' table:visibility="collapsed"')
        + "<table:table-row-group>"
        + _ods_row(
            ["+13105550103", "c"], ' table:number-rows-repeated="2" table:visibility="filter"'
        )
        + "</table:table-row-group>"
        + _ods_row(["+13105550104", "d"])
    )
    path = _ods(
        tmp_path / "a.ods",
        f'<table:table table:name="Other">{other}</table:table>'
        f'<table:table table:name="M &amp; S">{body}</table:table>',
    )
    sheet = read_sheet(path, sheet="M & S")
    assert list(sheet.row_numbers) == [2, 3, 4, 5, 6]
    assert sheet.hidden is not None
    assert sheet.hidden.tolist() == [False, True, True, True, False]


def test_a_workbook_whose_sheet_part_is_missing_is_refused(tmp_path: Path) -> None:
    """Hidden rows can't be told when the workbook's relationships lead nowhere: one line
    naming the file, no traceback (sending rows the person hid is worse than refusing)."""
    path = hidden_workbook(tmp_path / "send.xlsx")
    broken = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if item.filename != "xl/worksheets/sheet1.xml":
                dst.writestr(item, src.read(item.filename))
    with pytest.raises(InputError) as info:
        hidden_row_ranges(path, broken.getvalue(), "Send")
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: cannot tell which rows")
    assert hidden_row_ranges(tmp_path / "a.xls", b"", "Send") is None
