"""Reading CSV and workbooks: text cells, Excel row numbers, encodings, bad input."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from sonar_bulk import sheets
from sonar_bulk.errors import InputError
from sonar_bulk.sheets import read_sheet

from .conftest import SAMPLES, write_csv


def cells(sheet: sheets.Sheet) -> list[tuple[str, ...]]:
    return list(sheet.iter_rows())


def test_utf8_csv_keeps_text(tmp_path: Path) -> None:
    """Phones keep their + and zeros; every cell is text."""
    path = write_csv(tmp_path / "a.csv", "phone,zip\n+13105550101,02134\n0044 20,007\n")
    sheet = read_sheet(path)
    assert sheet.headers == ["phone", "zip"]
    assert cells(sheet) == [("+13105550101", "02134"), ("0044 20", "007")]
    assert list(sheet.row_numbers) == [2, 3]
    assert sheet.encoding == "utf-8" and sheet.delimiter == ","


@pytest.mark.parametrize(
    ("encoding", "expected", "bom"),
    [
        ("utf-8-sig", "utf-8", True),
        ("utf-16", "utf-16-le", True),
        ("utf-16-be", "utf-16-be", False),
        ("cp1252", "cp1252", False),
    ],
)
def test_encodings(tmp_path: Path, encoding: str, expected: str, bom: bool) -> None:
    """BOM-marked UTF-8/UTF-16 are detected; cp1252 is a fallback reported as a warning. The
    sheet records the codec and the BOM, so that split files are written back the same way."""
    text = "name,city\nJosé,Zürich\n"
    if encoding == "utf-16-be":
        raw = codecs.BOM_UTF16_BE + text.encode("utf-16-be")
        path = tmp_path / "a.csv"
        path.write_bytes(raw)
    else:
        path = write_csv(tmp_path / "a.csv", text, encoding)
    sheet = read_sheet(path)
    assert sheet.headers == ["name", "city"]
    assert cells(sheet) == [("José", "Zürich")]
    assert sheet.encoding == (expected if encoding != "utf-16-be" else "utf-16-be")
    assert sheet.bom is (bom or encoding == "utf-16-be")
    assert bool(sheet.warnings) == (encoding == "cp1252")


def test_encoding_override(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "name\nJosé\n", "latin-1")
    assert cells(read_sheet(path, encoding="latin-1")) == [("José",)]
    with pytest.raises(InputError, match="unknown encoding"):
        read_sheet(path, encoding="klingon")


@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, delim: str) -> None:
    text = delim.join(["phone", "name", "note"]) + "\n"
    text += delim.join(["+13105550101", "Ana", "a, b; c"]) + "\n"
    if delim in ",;":
        text = text.replace("a, b; c", '"a, b; c"')
    sheet = read_sheet(write_csv(tmp_path / "a.csv", text))
    assert sheet.delimiter == delim
    assert cells(sheet) == [("+13105550101", "Ana", "a, b; c")]


def test_delimiter_override(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "a;b\n1;2\n")
    assert read_sheet(path, delimiter=",").headers == ["a;b"]
    assert read_sheet(path, delimiter=";").headers == ["a", "b"]


def test_multiline_records_keep_excel_row_numbers(tmp_path: Path) -> None:
    """A quoted field spanning lines is one Excel row; later rows are numbered as Excel does."""
    text = 'phone,note\n+13105550101,"line one\nline two\nline three"\n+13105550102,x\n'
    sheet = read_sheet(write_csv(tmp_path / "a.csv", text))
    assert list(sheet.row_numbers) == [2, 3]
    assert cells(sheet)[0][1] == "line one\nline two\nline three"


def test_empty_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    text = "phone,name\n\n+13105550101,Ana\n,\n\n+13105550102,Ben\n"
    sheet = read_sheet(write_csv(tmp_path / "a.csv", text))
    assert list(sheet.row_numbers) == [3, 6]
    assert sheet.empty_rows == 3


def test_ragged_rows(tmp_path: Path) -> None:
    """Short rows are padded; values beyond the header are kept aside, never dropped."""
    text = "a,b,c\n1,2\n1,2,3,4\n"
    sheet = read_sheet(write_csv(tmp_path / "a.csv", text))
    assert cells(sheet) == [("1", "2", ""), ("1", "2", "3")]
    assert sheet.extra_cells == [(3, ["4"])]


rows_strategy = st.lists(
    st.lists(
        st.text(alphabet=st.sampled_from('ab,;"\n +0123é'), max_size=6), min_size=3, max_size=3
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy)
def test_fast_and_exact_readers_agree(tmp_path: Path, rows: list[list[str]]) -> None:
    """The Arrow fast path gives exactly what Python's csv module gives."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["x", "y", "z"])
    writer.writerows(rows)
    text = buf.getvalue()
    path = tmp_path / "p.csv"
    fast = sheets._read_csv_arrow(path, text.encode("utf-8"), ",")
    exact = sheets._read_csv_python(path, text, ",")
    if fast is not None:
        assert list(fast.iter_rows()) == list(exact.iter_rows())
        assert list(fast.row_numbers) == list(exact.row_numbers)


def _workbook(path: Path, rows: list[list[object]], hidden_first: bool = False) -> Path:
    wb = Workbook()
    ws = wb.active
    if hidden_first:
        ws.title = "hidden"
        ws.sheet_state = "hidden"
        ws.append(["secret"])
        ws.append(["hidden value"])
        ws = wb.create_sheet("Data")
    else:
        ws.title = "Data"
    for row in rows:
        ws.append(row)
    wb.save(path)
    return path


def test_xlsx_cells_become_text(tmp_path: Path) -> None:
    """Numbers lose no digits and gain no .0; dates become ISO; number cells are flagged."""
    path = _workbook(
        tmp_path / "a.xlsx",
        [
            ["phone", "when", "at", "amount", "flag", "big"],
            [13105550101, dt.date(2024, 3, 14), dt.datetime(2024, 3, 14, 9, 30), 3.5, True, 1e20],
        ],
    )
    sheet = read_sheet(path)
    assert cells(sheet) == [
        ("13105550101", "2024-03-14", "2024-03-14T09:30:00", "3.5", "true", "100000000000000000000")
    ]
    assert sheet.numeric[0].tolist() == [True]
    assert 1 not in sheet.numeric
    assert sheet.sheet_name == "Data"


def test_xlsx_first_visible_sheet_and_sheet_option(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "a.xlsx", [["phone"], ["+13105550101"]], hidden_first=True)
    assert read_sheet(path).sheet_name == "Data"
    assert cells(read_sheet(path, sheet="hidden")) == [("hidden value",)]
    with pytest.raises(InputError, match="no sheet named 'Nope'"):
        read_sheet(path, sheet="Nope")


def test_xlsx_row_numbers_and_empty_rows(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "a.xlsx", [["phone"], ["+13105550101"], [None], ["+13105550102"]])
    sheet = read_sheet(path)
    assert list(sheet.row_numbers) == [2, 4]
    assert sheet.empty_rows == 1


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (13105550101.0, "13105550101"),
        (3.5, "3.5"),
        (1e20, "100000000000000000000"),
        (0.1, "0.1"),
        (1.5e-7, "0.00000015"),
        (7, "7"),
    ],
)
def test_excel_number_text(number: float, text: str) -> None:
    assert sheets.excel_number_text(number) == text


def test_xlsx_samples_hold_the_csv_samples() -> None:
    """Each samples/<kind>.xlsx holds the same cells as samples/<kind>.csv."""
    for csv_path in sorted(SAMPLES.glob("*.csv")):
        xlsx = csv_path.with_suffix(".xlsx")
        if ".messy" in csv_path.name or not xlsx.exists():
            continue
        a, b = read_sheet(csv_path), read_sheet(xlsx)
        assert (a.headers, list(a.iter_rows())) == (b.headers, list(b.iter_rows())), csv_path.name


# --- bad input: one clear InputError each -------------------------------------------------


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _encrypted_xlsx(tmp_path: Path) -> Path:
    msoffcrypto = pytest.importorskip("msoffcrypto")
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = _workbook(tmp_path / "plain.xlsx", [["phone"], ["+13105550101"]])
    out = tmp_path / "locked.xlsx"
    with plain.open("rb") as src, out.open("wb") as dst:
        OOXMLFile(src).encrypt("secret", dst)
    assert msoffcrypto is not None
    return out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda d: d / "missing.csv", "no such file", id="missing"),
        pytest.param(lambda d: d, "is a directory", id="directory"),
        pytest.param(lambda d: write_csv(d / "e.csv", ""), "is empty", id="empty"),
        pytest.param(
            lambda d: write_csv(d / "h.csv", "phone,name\n"), "no data rows", id="header-only"
        ),
        pytest.param(
            lambda d: write_csv(d / "h.csv", "phone,name\n,\n\n"),
            "no data rows",
            id="only-empty-rows",
        ),
        pytest.param(
            lambda d: write_csv(d / "a.pdf", "%PDF-1.4"),
            "unsupported file type",
            id="wrong-extension",
        ),
        pytest.param(
            lambda d: write_csv(d / "c.xlsx", "phone,name\n1,2\n"),
            "looks like CSV",
            id="csv-named-xlsx",
        ),
        pytest.param(
            lambda d: _bytes(d / "z.xlsx", b"PK\x03\x04garbage" * 10), "workbook", id="corrupt-xlsx"
        ),
        pytest.param(
            lambda d: _bytes(d / "r.csv", bytes(range(256)) * 40), "binary", id="random-binary"
        ),
        pytest.param(
            lambda d: _bytes(d / "r2.csv", bytes(range(1, 256)) * 40),
            "binary",
            id="binary-without-nul",
        ),
        pytest.param(
            lambda d: write_csv(d / "big.csv", "phone,note\n1," + "x" * 10_485_760 + "\n"),
            "row 2, column 'note': cell has 10,485,760 characters",
            id="10MB-cell",
        ),
        pytest.param(_encrypted_xlsx, "password-protected", id="encrypted-xlsx"),
    ],
)
def test_bad_input(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message) as info:
        read_sheet(path)
    assert "\n" not in str(info.value)


def test_header_row_option(tmp_path: Path) -> None:
    """Exports with a title on top: --header-row names the header; rows above are skipped."""
    text = "Customer export,\nGenerated today,\n\nphone,name\n+13105550101,Ana\n"
    path = write_csv(tmp_path / "t.csv", text)
    sheet = read_sheet(path, header_row=4)
    assert sheet.headers == ["phone", "name"] and list(sheet.iter_rows()) == [
        ("+13105550101", "Ana")
    ]
    assert sheet.header_row == 4 and list(sheet.row_numbers) == [5]
    with pytest.raises(InputError, match="row 3 \\(--header-row\\) is empty"):
        read_sheet(path, header_row=3)
    with pytest.raises(InputError, match="fewer than 9 rows"):
        read_sheet(path, header_row=9)
    xlsx = _workbook(tmp_path / "t.xlsx", [["Title"], [None], ["phone"], ["+13105550101"]])
    sheet = read_sheet(xlsx, header_row=3)
    assert sheet.headers == ["phone"] and list(sheet.row_numbers) == [4]


def test_a_stray_cell_far_away_is_one_error_not_an_abort(tmp_path: Path) -> None:
    """Found by an attack: a workbook with one stray cell at XFD1048576 (or a reference
    beyond any sheet) made calamine ask for 512 GB and abort the process. It is one line
    naming the file and the range, exit 2."""
    import zipfile

    from click.testing import CliRunner
    from openpyxl import Workbook

    from sonar_bulk.cli import cli

    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["phone_number", "first_name"])
    ws.append(["+13105550101", "Ana"])
    ws["XFD1048576"] = "stray"
    book.save(tmp_path / "stray.xlsx")
    result = CliRunner().invoke(
        cli, ["validate", str(tmp_path / "stray.xlsx"), "--kind", "customers"]
    )
    assert result.exit_code == 2, result.output
    assert "spans A1:XFD1048576: a cell far from the data" in result.output
    assert len(result.output.strip().splitlines()) == 1

    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["phone_number", "first_name"])
    ws.append(["+13105550101", "Ana"])
    book.save(tmp_path / "ok.xlsx")
    with (
        zipfile.ZipFile(tmp_path / "ok.xlsx") as src,
        zipfile.ZipFile(tmp_path / "bad.xlsx", "w") as dst,
    ):
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                body = body.replace(b'r="B2"', b'r="ZZZZZZ2"')
            dst.writestr(item, body)
    result = CliRunner().invoke(
        cli, ["validate", str(tmp_path / "bad.xlsx"), "--kind", "customers"]
    )
    assert result.exit_code == 2, result.output
    assert "a cell reference beyond the largest sheet (ZZZZZZ2)" in result.output
    # found by the next attack: a stale dimension, or a text that reads like a reference, is
    # no reason to refuse; a three-letter column beyond XFD is
    for name, change, refused in (
        ("stale.xlsx", (b'<dimension ref="A1:B2" />', b'<dimension ref="A1:XFD1048576" />'), ""),
        ("text.xlsx", (b"<t>Ana</t>", b'<t>say r="HELLO"</t>'), ""),
        ("zzz.xlsx", (b'r="B2"', b'r="ZZZ2"'), "beyond the largest sheet (ZZZ2)"),
    ):
        with (
            zipfile.ZipFile(tmp_path / "ok.xlsx") as src,
            zipfile.ZipFile(tmp_path / name, "w") as dst,
        ):
            for item in src.infolist():
                body = src.read(item.filename)
                if item.filename == "xl/worksheets/sheet1.xml":
                    assert change[0] in body, (name, body)
                    body = body.replace(*change)
                dst.writestr(item, body)
        result = CliRunner().invoke(cli, ["validate", str(tmp_path / name), "--kind", "customers"])
        assert result.exit_code == (2 if refused else 0), (name, result.output)
        assert refused in result.output
