"""Rows hidden in a workbook (by hand, by an AutoFilter, in a collapsed outline group): read as
a mask aligned with the data rows, and never sent by a bulk run unless --include-hidden."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from openpyxl import Workbook, load_workbook
from openpyxl.worksheet.filters import FilterColumn, Filters

from sonar_bulk.cli import bulk as cli_bulk
from sonar_bulk.cli import cli
from sonar_bulk.connection import emulator_state_path
from sonar_bulk.emulator.app import EmulatorConfig, Knobs
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.errors import InputError
from sonar_bulk.sheets import hidden_row_ranges, read_sheet

from .conftest import write_csv
from .test_bulk_cli import TOKEN, bulk, posts, state

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


# -- bulk runs ---------------------------------------------------------------------------------

SHOWN = ["+13105550101", "+13105550103", "+13105550108"]
HIDDEN = ["+13105550102", "+13105550104", "+13105550106", "+13105550107"]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(tokens={TOKEN: "valid"})) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> Iterator[EmulatorServer]:
    server.admin("POST", "/reset")
    server.emulator.knobs.__dict__.update(Knobs().__dict__)
    yield server


def results_rows(path: Path) -> list[dict[str, Any]]:
    """The Results sheet of an xlsx results (or plan) file, as dicts."""
    book = load_workbook(path, read_only=True)
    try:
        rows = [list(r) for r in book["Results"].iter_rows(values_only=True)]
    finally:
        book.close()
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def texted(srv: EmulatorServer) -> list[str]:
    return sorted(m["to"] for m in srv.admin("GET", "/state")["messages"])


def emulated_world() -> EmulatorServer:
    """An emulator on the world ``--emulate`` kept (in this test's private data folder)."""
    return EmulatorServer(EmulatorConfig(state_file=str(emulator_state_path())))


def test_hidden_rows_are_not_texted_unless_included(tmp_path: Path) -> None:
    """The DO NOT CONTACT row hidden by hand, the row the AutoFilter hides and the collapsed
    group are skipped with their reason; --include-hidden sends them."""
    path = hidden_workbook(tmp_path / "send.xlsx")
    result = CliRunner().invoke(
        cli, ["--emulate", "messages", "send", str(path), "--yes", "--rate", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "7 rows from" in result.stderr and "3 to run" in result.stderr
    assert "hidden in the sheet: 4 rows, skipped" in result.stderr
    with emulated_world() as world:
        assert texted(world) == SHOWN
    rows = results_rows(tmp_path / "send.send.results.xlsx")
    assert [r["sonar__row"] for r in rows] == [2, 3, 4, 5, 7, 8, 9]  # numbers in an .xlsx
    assert [r["to"] for r in rows] == [
        "+13105550101",
        "+13105550102",
        "+13105550103",
        "+13105550104",
        "+13105550106",
        "+13105550107",
        "+13105550108",
    ]
    by_row = {r["sonar__row"]: r for r in rows}
    assert by_row[3]["Status"] == "DO NOT CONTACT"
    for number in (3, 5, 7, 8):
        assert by_row[number]["sonar__status"] == "skipped"
        assert by_row[number]["sonar__error"] == HIDDEN_TEXT
    for number in (2, 4, 9):
        assert by_row[number]["sonar__status"] == "queued"
        assert not by_row[number]["sonar__error"]

    # the results fed back in (they can't hide rows): the rows they report hidden stay so
    fed = shutil.copyfile(tmp_path / "send.send.results.xlsx", tmp_path / "fed.xlsx")
    back = CliRunner().invoke(cli, ["--emulate", "messages", "send", str(fed), "--yes"])
    assert back.exit_code == 0, back.output
    with emulated_world() as world:
        assert texted(world) == SHOWN
    fed_rows = results_rows(tmp_path / "fed.send.results.xlsx")
    assert [r["sonar__error"] == HIDDEN_TEXT for r in fed_rows] == [
        False, True, False, True, True, True, False
    ]  # fmt: skip

    again = CliRunner().invoke(
        cli,
        ["--emulate", "messages", "send", str(path), "--yes", "--rate", "0", "--include-hidden"],
    )
    assert again.exit_code == 0, again.output
    assert "4 to run" in again.stderr  # the 3 shown were sent by the first run
    with emulated_world() as world:
        assert texted(world) == sorted(SHOWN + HIDDEN)
    statuses = [r["sonar__status"] for r in results_rows(tmp_path / "send.send.results.xlsx")]
    assert statuses == ["queued"] * 7  # the shown ones from the first run


def test_the_plan_and_the_confirmation_leave_hidden_rows_out(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = hidden_workbook(tmp_path / "send.xlsx")
    plan = bulk(emu, "messages", "send", str(path), "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert "3 to plan" in plan.stderr and "recipients: 3" in plan.stderr
    rows = results_rows(tmp_path / "send.send.plan.xlsx")
    assert [r["sonar__status"] for r in rows] == [
        "planned",
        "skipped",
        "planned",
        "skipped",
        "skipped",
        "skipped",
        "planned",
    ]
    assert {r["sonar__error"] for r in rows if r["sonar__status"] == "skipped"} == {HIDDEN_TEXT}
    assert not posts(emu, "/api/v1/messages")

    asked: list[str] = []
    real_init = cli_bulk.CliUi.__init__

    def as_a_terminal(self: cli_bulk.CliUi, quiet: bool, yes: bool) -> None:
        real_init(self, quiet, yes)
        self.tty = True

    def answer(self: cli_bulk.CliUi, question: str) -> bool:
        asked.append(question)
        return True

    monkeypatch.setattr(cli_bulk.CliUi, "__init__", as_a_terminal)
    monkeypatch.setattr(cli_bulk.CliUi, "confirm", answer)
    sent = bulk(emu, "messages", "send", str(path))
    assert sent.exit_code == 0, sent.output
    assert len(asked) == 1 and asked[0].startswith("Send to 3 recipients")
    assert sorted(m["to"] for m in state(emu)["messages"]) == SHOWN


def _invalid_hidden_row(path: Path) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.append(["to", "text"])
    ws.append(["+13105550101", "Hi"])
    ws.append(["not a phone", "Hi"])
    ws.append(["+13105550103", "Hi"])
    ws.row_dimensions[3].hidden = True
    wb.save(path)
    return path


def test_errors_in_hidden_rows_do_not_stop_the_run(emu: EmulatorServer, tmp_path: Path) -> None:
    """validate still reports them (exit 1), and says the row is hidden; a run skips the row
    and goes ahead; with --include-hidden the error stops it, as any error does."""
    path = _invalid_hidden_row(tmp_path / "send.xlsx")
    checked = CliRunner().invoke(cli, ["validate", str(path), "--kind", "messages", "--json"])
    assert checked.exit_code == 1
    assert (
        "1 hidden row (not sent unless --include-hidden); 1 of them with errors" in checked.stderr
    )
    doc = json.loads(checked.stdout)
    assert doc["hidden_rows"] == 1 and doc["invalid_rows"] == 1

    refused = bulk(emu, "messages", "send", str(path), "--yes", "--include-hidden")
    assert refused.exit_code == 1
    assert "1 of 3 rows has errors; nothing was sent" in refused.stderr
    assert not posts(emu, "/api/v1/messages")

    sent = bulk(emu, "messages", "send", str(path), "--yes")
    assert sent.exit_code == 0, sent.output
    assert sorted(m["to"] for m in state(emu)["messages"]) == ["+13105550101", "+13105550103"]
    rows = results_rows(tmp_path / "send.send.results.xlsx")
    assert [(r["sonar__status"], r["sonar__error"] or "") for r in rows] == [
        ("queued", ""),
        ("skipped", HIDDEN_TEXT),
        ("queued", ""),
    ]
    assert not (tmp_path / "send.send.failed.xlsx").exists()


def test_validate_counts_hidden_rows(tmp_path: Path) -> None:
    path = hidden_workbook(tmp_path / "send.xlsx")
    result: Result = CliRunner().invoke(
        cli, ["validate", str(path), "--kind", "messages", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "4 hidden rows (not sent unless --include-hidden)" in result.stderr
    assert "of them with errors" not in result.stderr
    doc = json.loads(result.stdout)
    assert doc["hidden_rows"] == 4
    assert [m["row"] for m in doc["rendered"] if m["hidden"]] == [3, 5, 7, 8]
    # the summary's preview of what will be sent leaves the hidden DO NOT CONTACT row out
    assert "row 2 to +13105550101" in result.stderr and "row 3 to" not in result.stderr
    plain = write_csv(tmp_path / "a.csv", "to,text\n+13105550101,Hi\n")
    result = CliRunner().invoke(cli, ["validate", str(plain), "--kind", "messages", "--json"])
    assert result.exit_code == 0 and "hidden row" not in result.stderr
    assert json.loads(result.stdout)["hidden_rows"] == 0


def test_split_files_keep_hidden_rows_hidden(emu: EmulatorServer, tmp_path: Path) -> None:
    """validate --split, then the valid file sent: the hidden DO NOT CONTACT row stays out."""
    path = hidden_workbook(tmp_path / "send.xlsx")
    split = CliRunner().invoke(cli, ["validate", str(path), "--kind", "messages", "--split"])
    assert split.exit_code in (0, 1), split.output
    valid = tmp_path / "send.valid.xlsx"
    assert read_sheet(valid).hidden is not None
    assert int(read_sheet(valid).hidden.sum()) == 4  # type: ignore[union-attr]
    sent = bulk(emu, "messages", "send", str(valid), "--yes")
    assert sent.exit_code == 0, sent.output
    assert texted(emu) == SHOWN
