"""Issue 18, point 4: an .xlsx output of a workbook keeps each cell's type and number format
(results, failed rows, split files, the page's fixed sheet), the workbook's other worksheets
as they were, and what is sent still comes from the sheet as read (the displayed text)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.worksheet import Worksheet

from sonar_bulk.cli import cli
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.outputs import write_table
from sonar_bulk.sheets import read_sheet
from sonar_bulk.workbook import typed_for

from .test_bulk_cli import bulk, emu, server, state  # noqa: F401
from .test_hidden_rows import _ods
from .test_web import rows, upload
from .web_helpers import Page

HEADERS = [
    "phone_number",
    "first_name",
    "property:spend:number",
    "property:joined:date",
    "property:vip",
    "zip_code",
    "property:share",
    "property:price",
    "property:seen:datetime",
    "Notes",
    "property:total:number",
]
INJECTION = '=HYPERLINK("http://evil.example","x")'
FORMATS = {
    "C": "0.00",
    "D": "dd mmm yyyy",
    "F": "@",
    "G": "0%",
    "H": '"$"#,##0.00',
    "I": "yyyy-mm-dd hh:mm",
    "K": "#,##0.00",
}


def typed_workbook(
    path: Path,
    phones: tuple[str, ...] = ("+13105550101", "+13105550102"),
    edit: Callable[[Worksheet], None] | None = None,
) -> Path:
    """A customers sheet of typed cells (numbers with formats, dates, booleans, text with
    leading zeros, a text cell that looks like a formula, empty cells, a formula with its
    cached value), a hidden column, and a second sheet with a formula naming the first, a
    styled cell, merged cells and a column width."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Customers"
    ws.append(HEADERS)
    ws.append(
        [phones[0], "Ana", 235.33, dt.date(2024, 3, 5), True, "02134", 0.25, 1234.5,
         dt.datetime(2024, 3, 5, 14, 30), None, 7]
    )  # fmt: skip
    ws.append(
        [phones[1], "Bob", 1000, dt.date(2023, 12, 31), False, "00501", 0.5, 99.99,
         dt.datetime(2023, 1, 2, 3, 4, 5), None, 8]
    )  # fmt: skip
    notes = ws["J2"]
    notes.value = INJECTION
    notes.data_type = "s"  # text that looks like a formula, as a CSV import leaves it
    for r in (2, 3):
        for column, fmt in FORMATS.items():
            ws[f"{column}{r}"].number_format = fmt
    ws["B2"].font = Font(italic=True)
    ws.column_dimensions["B"].width = 30
    ws.column_dimensions["J"].hidden = True
    if edit is not None:
        edit(ws)
    other = wb.create_sheet("Lookup")
    other["A1"] = "total"
    other["B1"] = "=SUM(Customers!C2:C3)"
    other["A2"] = "styled"
    other["A2"].font = Font(bold=True, color="FFFF0000")
    other["A2"].fill = PatternFill("solid", fgColor="FFFFFF00")
    other["A4"] = "merged"
    other.merge_cells("A4:C4")
    other.column_dimensions["A"].width = 40
    wb.save(path)
    # K2 and K3 become formulas with their cached values, as Excel saves them
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    for ref, value in (("K2", "7"), ("K3", "8")):
        sheet = re.sub(
            rf'(<c r="{ref}"[^>]*>)<v>{value}</v>',
            rf"\1<f>3+{int(value) - 3}</f><v>{value}</v>",
            sheet,
        )
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def cells(path: Path, sheet: str) -> dict[str, Cell]:
    book = load_workbook(path)
    return {c.coordinate: c for row in book[sheet].iter_rows() for c in row}


def header(path: Path, sheet: str) -> list[Any]:
    book = load_workbook(path, read_only=True)
    try:
        return [c.value for c in next(book[sheet].iter_rows(max_row=1))]
    finally:
        book.close()


def assert_typed_row(got: dict[str, Cell], out_row: int, src_row: int) -> None:
    """Row ``out_row`` of an output holds the typed cells of ``typed_workbook``'s row
    ``src_row`` (columns A..K in place)."""
    first = src_row == 2
    c = {k: got[f"{k}{out_row}"] for k in "ABCDEFGHIJK"}
    assert c["A"].data_type == "s" and c["A"].value == ("+13105550101" if first else c["A"].value)
    assert (c["C"].data_type, c["C"].number_format) == ("n", "0.00")
    assert c["C"].value == (235.33 if first else 1000)
    assert c["D"].is_date and c["D"].number_format == "dd mmm yyyy"
    assert c["D"].value == (dt.datetime(2024, 3, 5) if first else dt.datetime(2023, 12, 31))
    assert (c["E"].data_type, c["E"].value) == ("b", first)
    assert (c["F"].data_type, c["F"].value, c["F"].number_format) == (
        "s", "02134" if first else "00501", "@"
    )  # fmt: skip
    assert (c["G"].data_type, c["G"].value, c["G"].number_format) == (
        "n", 0.25 if first else 0.5, "0%"
    )  # fmt: skip
    assert c["H"].value == (1234.5 if first else 99.99) and c["H"].number_format == '"$"#,##0.00'
    assert c["I"].is_date and c["I"].number_format == "yyyy-mm-dd hh:mm"
    assert c["I"].value == (
        dt.datetime(2024, 3, 5, 14, 30) if first else dt.datetime(2023, 1, 2, 3, 4, 5)
    )
    if first:  # text that looks like a formula stays text
        assert (c["J"].data_type, c["J"].value) == ("s", INJECTION)
    else:
        assert c["J"].value is None  # an empty cell stays empty
    # a formula's cached value, typed, without the formula
    assert (c["K"].data_type, c["K"].value, c["K"].number_format) == (
        "n", 7 if first else 8, "#,##0.00"
    )  # fmt: skip


def assert_other_sheet_kept(path: Path, data_title: str) -> None:
    got = cells(path, "Lookup")
    assert got["B1"].data_type == "f" and got["B1"].value == f"=SUM({data_title}!C2:C3)"
    assert got["A2"].font.bold and got["A2"].font.color.rgb == "FFFF0000"
    assert got["A2"].fill.fgColor.rgb == "FFFFFF00"
    book = load_workbook(path)
    assert [str(r) for r in book["Lookup"].merged_cells.ranges] == ["A4:C4"]
    assert book["Lookup"].column_dimensions["A"].width == 40


# -- results ------------------------------------------------------------------------------------


def test_results_keep_types_formats_and_other_sheets(emu: EmulatorServer, tmp_path: Path) -> None:
    """235.33 with "0.00" and a date with its own format are sent as read and written back as
    a number with "0.00" and a date with the same format; the other sheet is kept."""
    path = typed_workbook(tmp_path / "typed.xlsx")
    read = read_sheet(path)
    result = bulk(emu, "customers", "upsert", str(path))
    assert result.exit_code == 0, result.output
    customers = {c["phone_number"]: c for c in state(emu)["customers"]}
    sent = customers["+13105550101"]["properties"]
    # sent as read: the read path's text, not the workbook's numbers or the output's types
    assert sent["spend"] == "235.33" == read.column(2)[0].as_py()
    assert sent["joined"] == "2024-03-05" == read.column(3)[0].as_py()
    assert sent["total"] == "7"

    out = tmp_path / "typed.upsert.results.xlsx"
    assert load_workbook(out, read_only=True).sheetnames == ["Results", "Lookup", "Summary"]
    got = cells(out, "Results")
    assert_typed_row(got, 2, 2)
    assert_typed_row(got, 3, 3)
    assert got["B2"].font.italic  # the cell's own style
    names = header(out, "Results")
    assert names[: len(HEADERS)] == HEADERS
    status = names.index("sonar__status") + 1
    row_at = names.index("sonar__row") + 1
    assert [got[f"{chr(64 + status)}{r}"].value for r in (2, 3)] == ["created", "created"]
    assert [got[f"{chr(64 + row_at)}{r}"].value for r in (2, 3)] == [2, 3]  # numbers
    book = load_workbook(out)
    assert book["Results"].column_dimensions["B"].width == 30
    assert book["Results"].column_dimensions["J"].hidden  # a hidden column stays hidden
    assert_other_sheet_kept(out, "Results")

    # the results fed back in: read as the same text, the old Summary replaced, not doubled
    fed = shutil.copyfile(out, tmp_path / "fed.xlsx")
    again = bulk(emu, "customers", "upsert", str(fed))
    assert again.exit_code == 0, again.output
    refed = tmp_path / "fed.upsert.results.xlsx"
    assert load_workbook(refed, read_only=True).sheetnames == ["Results", "Lookup", "Summary"]
    assert_typed_row(cells(refed, "Results"), 2, 2)
    assert read_sheet(refed).column(2).to_pylist() == read.column(2).to_pylist()


def test_failed_rows_keep_types(emu: EmulatorServer, tmp_path: Path) -> None:
    """An invalid row skipped is in the failed file with its typed cells and the other
    sheet."""
    path = typed_workbook(tmp_path / "g.xlsx", ("+13105550101", "555-01"))
    result = bulk(emu, "customers", "upsert", str(path), "--skip-invalid")
    failed = tmp_path / "g.upsert.failed.xlsx"
    assert result.exit_code in (0, 1), result.output
    assert failed.exists(), result.output
    got = cells(failed, "Failed")
    assert_typed_row(got, 2, 3)
    assert got["A2"].value == "555-01"
    assert "A3" not in got or got["A3"].value is None  # only the failed row
    assert load_workbook(failed, read_only=True).sheetnames == ["Failed", "Lookup"]
    assert_other_sheet_kept(failed, "Failed")


def test_a_formula_never_computed_is_kept_as_its_text(emu: EmulatorServer, tmp_path: Path) -> None:
    """Found by a new-user trial: a formula with no cached value (openpyxl writes none) came
    out blank in the results; it is kept as its text, a text cell (inert)."""
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["phone_number", "first_name", "Link"])
    ws.append(["+13105550101", "Ana", '=HYPERLINK("http://x","y")'])
    ws.append(["+13105550102", "Bo", None])
    book.save(tmp_path / "f.xlsx")
    result = bulk(emu, "customers", "upsert", str(tmp_path / "f.xlsx"))
    assert result.exit_code == 0, result.output
    got = cells(tmp_path / "f.upsert.results.xlsx", "Results")
    assert got["C2"].value == '=HYPERLINK("http://x","y")'
    assert got["C2"].data_type == "s"  # text, never a formula
    assert "C3" not in got or got["C3"].value is None


# -- split files --------------------------------------------------------------------------------


def test_split_files_keep_types_and_other_sheets(tmp_path: Path) -> None:
    def beyond(ws: Worksheet) -> None:
        ws["M2"] = 42.5  # a cell beyond the last header, typed
        ws["M2"].number_format = "0.0"

    path = typed_workbook(tmp_path / "s.xlsx", ("555-01", "+13105550102"), beyond)
    split = CliRunner().invoke(cli, ["validate", str(path), "--kind", "customers", "--split"])
    assert split.exit_code == 1, split.output
    valid, invalid = tmp_path / "s.valid.xlsx", tmp_path / "s.invalid.xlsx"
    assert load_workbook(valid, read_only=True).sheetnames == ["Customers", "Lookup"]
    assert_typed_row(cells(valid, "Customers"), 2, 3)
    assert_other_sheet_kept(valid, "Customers")
    got = cells(invalid, "Customers")
    assert got["A2"].value == "555-01"
    assert got["C2"].value == 235.33 and got["C2"].number_format == "0.00"
    names = header(invalid, "Customers")
    # L2 is blank, M2 holds the number: sonar__extra_1 and sonar__extra_2
    assert names[len(HEADERS) : len(HEADERS) + 2] == ["sonar__extra_1", "sonar__extra_2"]
    extra = got[f"{chr(65 + len(HEADERS) + 1)}2"]
    assert (extra.value, extra.number_format) == (42.5, "0.0")
    # fed back in, the valid file reads as the input's text
    assert read_sheet(valid).column(2).to_pylist() == ["1000"]


def test_the_split_of_a_workbook_changed_since_it_was_read_is_its_text(tmp_path: Path) -> None:
    """The workbook is copied only while it is the file that was read."""
    path = typed_workbook(tmp_path / "c.xlsx")
    sheet = read_sheet(path)
    path.write_bytes(path.read_bytes() + b"\0")  # changed on disk
    out = tmp_path / "out.xlsx"
    write_table(
        out,
        sheet.headers,
        sheet.iter_rows(),
        "Customers",
        as_typed=True,
        typed=typed_for(sheet, None, range(len(sheet.headers))),
    )
    got = cells(out, "Customers")
    assert (got["C2"].data_type, got["C2"].value) == ("s", "235.33")
    assert load_workbook(out, read_only=True).sheetnames == ["Customers"]


def test_hidden_rows_stay_hidden_in_split_files_not_in_results(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    def hide(ws: Worksheet) -> None:
        ws.append(["+13105550103", "Cy"])
        ws.row_dimensions[3].hidden = True

    path = typed_workbook(tmp_path / "h.xlsx", edit=hide)
    split = CliRunner().invoke(cli, ["validate", str(path), "--kind", "customers", "--split"])
    assert split.exit_code == 0, split.output
    valid = load_workbook(tmp_path / "h.valid.xlsx")["Customers"]
    assert valid.row_dimensions[3].hidden and not valid.row_dimensions[2].hidden
    result = bulk(emu, "customers", "upsert", str(path))
    assert result.exit_code == 0, result.output
    results = load_workbook(tmp_path / "h.upsert.results.xlsx")["Results"]
    assert not any(results.row_dimensions[r].hidden for r in (2, 3, 4))
    assert results["B4"].value == "Cy"


# -- other workbooks ----------------------------------------------------------------------------


def test_an_xlsm_gives_an_xlsx_without_its_macros(emu: EmulatorServer, tmp_path: Path) -> None:
    path = typed_workbook(tmp_path / "m.xlsx")
    xlsm = tmp_path / "m.xlsm"
    macro_ct = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(xlsm, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "[Content_Types].xml":
                data = re.sub(rb"application/vnd\.openxmlformats-officedocument\.spreadsheetml"
                              rb"\.sheet\.main\+xml", macro_ct.encode(), data)  # fmt: skip
                data = data.replace(
                    b"</Types>",
                    b'<Default Extension="bin" ContentType="application/vnd.ms-office.'
                    b'vbaProject"/></Types>',
                )
            if name == "xl/_rels/workbook.xml.rels":
                data = data.replace(
                    b"</Relationships>",
                    b'<Relationship Id="rIdVba" Type="http://schemas.microsoft.com/office/2006/'
                    b'relationships/vbaProject" Target="vbaProject.bin"/></Relationships>',
                )
            out.writestr(name, data)
        out.writestr("xl/vbaProject.bin", b"not really a macro")
    result = bulk(emu, "customers", "upsert", str(xlsm))
    assert result.exit_code == 0, result.output
    out_path = tmp_path / "m.upsert.results.xlsx"
    with zipfile.ZipFile(out_path) as z:
        assert "xl/vbaProject.bin" not in z.namelist()
        assert macro_ct.encode() not in z.read("[Content_Types].xml")
        assert b"vbaProject" not in z.read("xl/_rels/workbook.xml.rels")
    assert_typed_row(cells(out_path, "Results"), 2, 2)


def test_an_ods_keeps_its_cells_types(emu: EmulatorServer, tmp_path: Path) -> None:
    """A workbook that can't be copied (.ods): numbers, booleans and dates keep their type."""
    cell = '<table:table-cell office:value-type="{0}" {1}><text:p>{2}</text:p></table:table-cell>'
    row = (
        "<table:table-row>"
        + cell.format("string", "", "+13105550101")
        + cell.format("float", 'office:value="235.33"', "235.33")
        + cell.format("date", 'office:date-value="2024-03-05"', "05/03/2024")
        + cell.format("boolean", 'office:boolean-value="true"', "TRUE")
        + cell.format("string", "", "02134")
        + "</table:table-row>"
    )
    head = "<table:table-row>" + "".join(
        cell.format("string", "", h)
        for h in ("phone_number", "property:spend:number", "property:joined:date",
                  "property:vip", "zip_code")
    ) + "</table:table-row>"  # fmt: skip
    path = _ods(tmp_path / "o.ods", f'<table:table table:name="C">{head}{row}</table:table>')
    result = bulk(emu, "customers", "upsert", str(path))
    assert result.exit_code == 0, result.output
    assert state(emu)["customers"][0]["properties"]["spend"] == "235.33"
    got = cells(tmp_path / "o.upsert.results.xlsx", "Results")
    assert (got["A2"].data_type, got["A2"].value) == ("s", "+13105550101")
    assert (got["B2"].data_type, got["B2"].value) == ("n", 235.33)
    assert got["C2"].is_date and got["C2"].value == dt.datetime(2024, 3, 5)
    assert (got["D2"].data_type, got["D2"].value) == ("b", True)
    assert (got["E2"].data_type, got["E2"].value) == ("s", "02134")


# -- the web page's fixed sheet -----------------------------------------------------------------


def test_the_pages_fixed_sheet_keeps_types_and_its_edits(page: Page, tmp_path: Path) -> None:
    path = typed_workbook(tmp_path / "w.xlsx", ("555-01", "+13105550102"))
    upload(page, path)
    bad = next(r for r in rows(page)["rows"] if r["row"] == 2)
    edit = page.client.post(
        "/api/edit",
        json={
            "changes": [
                {"index": bad["index"], "column": 0, "value": "+13105550199"},
                {"index": bad["index"], "column": 2, "value": "240.5"},
            ]
        },
    )
    assert edit.status_code == 200, edit.text
    download = page.client.get("/download/fixed")
    assert download.status_code == 200
    assert "w.fixed.xlsx" in download.headers["content-disposition"]
    fixed = tmp_path / "fixed.xlsx"
    fixed.write_bytes(download.content)
    got = cells(fixed, "Customers")
    assert (got["A2"].data_type, got["A2"].value) == ("s", "+13105550199")
    assert (got["C2"].data_type, got["C2"].value, got["C2"].number_format) == ("n", 240.5, "0.00")
    assert_typed_row(got, 3, 3)
    assert got["D2"].is_date and got["D2"].number_format == "dd mmm yyyy"
    assert_other_sheet_kept(fixed, "Customers")


def test_a_data_sheet_named_with_a_quote_is_renamed_with_every_reference(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by an attack: a data sheet named Bob's List was not renamed while the formulas
    naming it were (Results!... named no sheet); and the formulas of another sheet's data
    validation and conditional format kept the old name."""
    from openpyxl.formatting.rule import FormulaRule
    from openpyxl.worksheet.datavalidation import DataValidation

    book = Workbook()
    data = book.active
    assert data is not None
    data.title = "Bob's List"
    data.append(["phone_number", "first_name"])
    data.append(["+13105550101", "Ana"])
    data.append(["555", "Bo"])
    other = book.create_sheet("Other")
    other["A1"] = "='Bob''s List'!B2"
    check = DataValidation(type="list", formula1="'Bob''s List'!$B$2:$B$3")
    other.add_data_validation(check)
    check.add("B1")
    other.conditional_formatting.add(
        "C1", FormulaRule(formula=["'Bob''s List'!$A$2=\"x\""], fill=PatternFill("solid"))
    )
    book.save(tmp_path / "q.xlsx")
    result = bulk(emu, "customers", "upsert", str(tmp_path / "q.xlsx"), "--skip-invalid")
    assert result.exit_code == 1, result.output
    for name, title in (("q.upsert.results.xlsx", "Results"), ("q.upsert.failed.xlsx", "Failed")):
        out = load_workbook(tmp_path / name)
        assert out.sheetnames[0] == title
        sheet = out["Other"]
        assert sheet["A1"].value == f"={title}!B2"
        assert sheet.data_validations.dataValidation[0].formula1 == f"{title}!$B$2:$B$3"
        rules = [r for rng in sheet.conditional_formatting for r in rng.rules]
        assert rules[0].formula == [f'{title}!$A$2="x"']


def test_a_formula_excel_never_computed_is_an_error_not_a_blank(tmp_path: Path) -> None:
    """Found by an attack: a workbook a program wrote holds formulas with no value (Excel
    computes them when it opens the file); read, they were blank, and a blank first name was
    sent. Each such cell of an imported column is an error naming its formula."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["phone_number", "first_name", "notes"])
    sheet.append(["+13105550101", '=CONCAT("A","na")', "=1+1"])
    sheet.append(["+13105550102", "Ben", "=2+2"])
    path = tmp_path / "written.xlsx"
    book.save(path)
    read = read_sheet(path)
    assert read.uncomputed == [(2, 1, 'CONCAT("A","na")'), (2, 2, "1+1"), (3, 2, "2+2")]
    result = CliRunner().invoke(cli, ["validate", str(path), "--kind", "customers"])
    assert result.exit_code == 1
    assert (
        'row 2, first_name: \'\' excel.formula_not_computed (error): =CONCAT("A","na") has no '
        "value in the workbook (Excel never computed it), so it reads as blank"
    ) in result.output
    assert "row 2, notes" not in result.output  # not imported: nothing read from it
