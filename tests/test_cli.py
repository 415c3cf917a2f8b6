"""The CLI end to end through Click's CliRunner (and one real subprocess)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from sonar_bulk.cli import cli
from sonar_bulk.schema import KINDS

from .conftest import ROOT, SAMPLES, write_csv

SAMPLE_FILES = sorted(
    p.name
    for p in SAMPLES.iterdir()
    if p.suffix in (".csv", ".xlsx")
    and len(p.suffixes) <= 2  # not a user's split of a sample
    and not p.name.endswith((".valid" + p.suffix, ".invalid" + p.suffix))
)


def kind_of(name: str) -> str:
    return name.split(".")[0]


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_samples_match_golden_json(
    runner: CliRunner, golden: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate --json over every sample equals its golden file; clean samples exit 0,
    messy ones exit 1."""
    monkeypatch.chdir(ROOT)
    result = invoke(runner, "validate", f"samples/{name}", "--kind", kind_of(name), "--json")
    assert result.exit_code == (1 if ".messy" in name else 0), result.output
    doc = json.loads(result.stdout)
    assert {"kind", "rows", "valid_rows", "invalid_rows", "warnings", "issues"} <= set(doc)
    for issue in doc["issues"]:
        assert list(issue) == ["row", "column", "value", "code", "severity", "message"]
    golden(f"{name}.json", result.stdout)


def test_human_summary_goes_to_stderr(runner: CliRunner) -> None:
    result = invoke(runner, "validate", str(SAMPLES / "customers.messy.csv"), "--kind", "customers")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "NOT READY" in result.stderr
    assert "excel.damaged_number" in result.stderr
    assert "(310) 555-0111 -> +13105550111" in result.stderr


def test_report_csv_and_xlsx(runner: CliRunner, tmp_path: Path, golden: Any) -> None:
    src = str(SAMPLES / "customers.messy.csv")
    out_csv, out_xlsx = tmp_path / "r.csv", tmp_path / "r.xlsx"
    assert (
        invoke(
            runner, "validate", src, "--kind", "customers", "--report", str(out_csv), "-q"
        ).exit_code
        == 1
    )
    assert (
        invoke(
            runner, "validate", src, "--kind", "customers", "--report", str(out_xlsx), "-q"
        ).exit_code
        == 1
    )
    text = out_csv.read_text(encoding="utf-8-sig")
    golden("customers.messy.report.csv", text.replace("\r\n", "\n"))
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["row", "column", "value", "code", "severity", "message"]
    ws = load_workbook(out_xlsx).active
    xlsx_rows = [[("" if c is None else str(c)) for c in r] for r in ws.iter_rows(values_only=True)]
    assert xlsx_rows == rows


def test_report_never_overwrites_the_input(runner: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_bytes((SAMPLES / "customers.csv").read_bytes())
    result = invoke(runner, "validate", str(src), "--kind", "customers", "--report", str(src))
    assert result.exit_code == 2 and "that is the input file" in result.stderr
    assert src.read_bytes() == (SAMPLES / "customers.csv").read_bytes()


def test_report_needs_a_table_extension(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(
        runner,
        "validate",
        str(SAMPLES / "customers.csv"),
        "--kind",
        "customers",
        "--report",
        str(tmp_path / "r.txt"),
    )
    assert result.exit_code == 2
    assert "use a .csv or .xlsx" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_split_refeeds(runner: CliRunner, tmp_path: Path, suffix: str) -> None:
    """--split writes valid and invalid rows with the original headers; the valid file
    validates clean and the two hold every row."""
    source = (
        SAMPLES / "customers.messy.csv" if suffix == ".csv" else SAMPLES / "customers.messy.xlsx"
    )
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    result = invoke(runner, "validate", str(copy), "--kind", "customers", "--split", "--json")
    doc = json.loads(result.stdout)
    valid = tmp_path / f"customers.messy.valid{suffix}"
    invalid = tmp_path / f"customers.messy.invalid{suffix}"
    assert valid.exists() and invalid.exists()
    again = invoke(runner, "validate", str(valid), "--kind", "customers", "--json")
    redo = json.loads(again.stdout)
    assert again.exit_code == 0, again.output
    assert redo["rows"] == doc["valid_rows"]
    bad = json.loads(
        invoke(runner, "validate", str(invalid), "--kind", "customers", "--json").stdout
    )
    assert bad["rows"] == doc["invalid_rows"] and bad["valid_rows"] == 0
    from sonar_bulk.sheets import read_sheet

    # the original headers, then the row each came from in the input
    assert read_sheet(valid).headers == [*read_sheet(copy).headers, "sonar__row"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nope.csv", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: write_csv(d / "e.csv", ""), "is empty"),
        (lambda d: write_csv(d / "h.csv", "phone\n"), "no data rows"),
        (lambda d: write_csv(d / "x.docx", "hello"), "unsupported file type"),
    ],
)
@pytest.mark.parametrize("json_flag", [False, True])
def test_bad_input_exits_2(
    runner: CliRunner, tmp_path: Path, make: Any, message: str, json_flag: bool
) -> None:
    args = ["validate", str(make(tmp_path)), "--kind", "customers"]
    result = invoke(runner, *(args + (["--json"] if json_flag else [])))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("sonar-bulk: error:")
    assert "Traceback" not in result.output
    if json_flag:
        assert message in json.loads(result.stdout)["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--default-region", "XX"], "unknown region 'XX'; use a two-letter code"),
        (["--map", "broken"], "--map 'broken': expected \"Source Header=field\""),
        (["--map", "Phone=nonsense"], "--map target 'nonsense' is not a customers column"),
        (["--map", "Phone=nonsense"], "property:<name>[:<type>]"),
        (["--timezone", "Mars/Base"], "--timezone 'Mars/Base' is not an IANA time zone name"),
        (["--kind", "martians"], "'martians' is not one of 'customers'"),
        (["--max-issues", "lots"], "'lots' is not a valid integer"),
        (["--max-issues", "-1"], "-1 is not in the range x>=0"),
        (["--encoding", "hex"], "is not a text encoding"),
        (["--encoding", "undefined"], "cannot be read as undefined"),
        (["--map", "Plan=property:"], "write property:<name> or property:<name>:<type>"),
        (["--map", "Plan=property:a:b:c"], "write property:<name> or property:<name>:<type>"),
        (
            ["--default-send-time", "25:00"],
            "Invalid value for '--default-send-time': '25:00' is not a time of day; write HH:MM",
        ),
        (["--default-send-time", "9am"], "'9am' is not a time of day"),
    ],
)
def test_usage_errors_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    """Usage errors are one line of ours on stderr, exit 2, no traceback."""
    base = ["validate", str(SAMPLES / "customers.csv")]
    if "--kind" not in args:
        base += ["--kind", "customers"]
    result = invoke(runner, *(base + args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sonar-bulk: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_options_reach_validation(runner: CliRunner, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "Contact;Extra\n020 7946 0958;x\n")
    result = invoke(
        runner,
        "validate",
        str(path),
        "--kind",
        "customers",
        "--map",
        "Contact=phone_number",
        "--default-region",
        "gb",
        "--extra-columns",
        "properties",
        "--json",
    )
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["issues"] == []


def test_validate_reads_send_at_out_loud(runner: CliRunner, tmp_path: Path) -> None:
    """validate: a date alone is an error until --default-send-time gives the time; a DST gap
    is an error and a repeated hour a warning, each naming the zone."""
    path = write_csv(
        tmp_path / "recipients.csv",
        "to,campaign_id,send_at,timezone\n"
        "+13105550101,fall,2027-01-15,America/New_York\n"
        "+13105550102,fall,2027-03-14 02:30,America/New_York\n"
        "+13105550103,fall,2027-11-07 01:30,America/New_York\n"
        "+13105550104,fall,2027-11-07T01:30:00-05:00,America/New_York\n",
    )
    args = ["validate", str(path), "--kind", "campaign_recipients", "--json"]
    result = invoke(runner, *args)
    assert result.exit_code == 1, result.output
    issues = [(i["row"], i["code"], i["severity"]) for i in json.loads(result.stdout)["issues"]]
    assert issues == [
        (2, "datetime.no_time", "error"),
        (3, "datetime.dst_gap", "error"),
        (4, "datetime.dst_repeated", "warning"),
    ]
    human = invoke(runner, *args[:-1]).stderr
    assert "2027-01-15 is a date with no time" in human and "--default-send-time" in human
    assert "(clocks jump from 02:00 to 03:00)" in human
    assert "read as the first, -04:00 (EDT)" in human

    timed = invoke(runner, *args, "--default-send-time", "09:00")
    left = [(i["row"], i["code"]) for i in json.loads(timed.stdout)["issues"]]
    assert left == [(3, "datetime.dst_gap"), (4, "datetime.dst_repeated")]


def test_encoding_delimiter_sheet_options(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("phone|first_name\n+13105550101|José\n".encode("latin-1"))
    result = invoke(
        runner,
        "validate",
        str(path),
        "--kind",
        "customers",
        "--encoding",
        "latin-1",
        "--delimiter",
        "|",
        "--json",
    )
    assert result.exit_code == 0, result.output
    result = invoke(
        runner,
        "validate",
        str(SAMPLES / "customers.xlsx"),
        "--kind",
        "customers",
        "--sheet",
        "missing",
    )
    assert result.exit_code == 2 and "no sheet named" in result.stderr


def test_template_command(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "t.xlsx"
    result = invoke(runner, "template", "messages", "-o", str(out))
    assert result.exit_code == 0 and out.exists()
    result = invoke(runner, "template", "messages", "-o", str(tmp_path / "t.txt"))
    assert result.exit_code == 2
    result = invoke(runner, "template", "messages", "-o", str(tmp_path / "no" / "t.csv"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_template_validates(runner: CliRunner, tmp_path: Path) -> None:
    """A template's example row is valid for its own kind (in both formats) except that it is
    the example: validate refuses it until it is replaced."""
    for kind in KINDS:
        for suffix in (".csv", ".xlsx"):
            out = tmp_path / f"{kind}{suffix}"
            invoke(runner, "template", kind, "-o", str(out))
            result = invoke(runner, "validate", str(out), "--kind", kind, "--json")
            assert result.exit_code == 1, (kind, result.output)
            # its only problem: the example row is still there, and is never sent
            assert json.loads(result.stdout)["issues_by_code"] == {"row.example": 1}


@pytest.mark.parametrize("command", [[], ["validate"], ["template"]])
def test_help(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output or not command
    if command == ["validate"]:
        for kind in KINDS:
            assert kind in result.output


def test_the_tables_come_from_the_schema() -> None:
    """The sheets page's kinds and codes tables are the schema's own; the README's command
    table has every command."""
    from sonar_bulk.issues import codes_table
    from sonar_bulk.schema import kinds_table

    sheets = (ROOT / "sonar_bulk" / "docs" / "sheets.md").read_text(encoding="utf-8")
    assert kinds_table() in sheets
    assert codes_table() in sheets
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in cli.list_commands(click.Context(cli)):
        assert f"| `sonar-bulk {command}" in readme


def test_python_dash_m_and_exit_code_in_a_subprocess() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sonar_bulk",
            "validate",
            str(SAMPLES / "messages.messy.csv"),
            "--kind",
            "messages",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["kind"] == "messages"


def test_xlsx_output_keeps_text_exactly(tmp_path: Path) -> None:
    """Written cells stay text: no formula from '=...', no number from '007' or '+1...'."""
    from sonar_bulk.outputs import write_table

    path = tmp_path / "t.xlsx"
    cells = ["=1+1", "+13105550101", "007", "https://example.com", "1.5E+10"]
    write_table(path, ["value", "n"], [[c, i] for i, c in enumerate(cells)], "t", text_columns=(0,))
    ws = load_workbook(path).active
    got = [(row[0].value, row[0].data_type, row[1].value) for row in ws.iter_rows(min_row=2)]
    assert got == [(c, "s", i) for i, c in enumerate(cells)]
    assert ws["A1"].font.b
