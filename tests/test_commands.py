"""One command line: every command shows an example, -o is --output everywhere, every command
that prints a summary takes --json with keys named the same way (as sonar_bulk/docs/json.md
lists them), sibling bulk commands list their options in one order, and the CLI reference
page is every command's --help."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.cli.reference import PAGE, REGENERATE, reference_markdown, walk
from sonar_bulk.plan import OPERATIONS

from .conftest import ROOT, SAMPLES

COMMANDS = [(ctx.command_path, command) for ctx, command in walk(cli)]
BY_PATH = dict(COMMANDS)
#: The bulk commands: each runs a sheet through the API.
BULK = [f"sonar-bulk {name}" for name in OPERATIONS]
#: Commands without --json, and why: they print no summary.
NO_SUMMARY = {
    "sonar-bulk": "a group",
    "sonar-bulk api": "prints Sonar's answer, which is JSON already",
    "sonar-bulk webhooks list": "prints Sonar's answer, which is JSON already",
    "sonar-bulk webhooks create": "prints Sonar's answer, which is JSON already",
    "sonar-bulk webhooks update": "prints Sonar's answer, which is JSON already",
    "sonar-bulk webhooks delete": "prints Sonar's answer, which is JSON already",
    "sonar-bulk emulator": "a server in the foreground",
    "sonar-bulk ui": "a server in the foreground",
    "sonar-bulk demo": "a guided tour for people",
}


def help_of(path: str) -> str:
    result = CliRunner().invoke(cli, [*path.split()[1:], "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def option_names(command: click.Command) -> list[str]:
    """Each option's first long name, in the order --help lists them."""
    return [
        next(o for o in p.opts if o.startswith("--"))
        for p in command.params
        if isinstance(p, click.Option)
    ]


# -- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS])
def test_every_command_shows_an_example(path: str) -> None:
    """`--help` of every command and group ends its text with an `Example:` followed by an
    indented command line that starts with sonar-bulk (the command itself, for a command)."""
    text = help_of(path)
    found = re.search(r"^  Example:\n((?:    .*\n)+)", text, re.M)
    assert found, f"{path} --help has no Example: block"
    lines = [line.strip() for line in found.group(1).splitlines()]
    assert lines[0].startswith("sonar-bulk "), lines
    if path != "sonar-bulk" and not isinstance(BY_PATH[path], click.Group):
        words = path.split()[1:]
        assert any(
            re.search(r"(^|\s)" + re.escape(" ".join(words)) + r"(\s|$)", line) for line in lines
        ), (path, lines)


def test_the_reference_page_is_every_commands_help() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference_markdown(), (
        f"sonar_bulk/docs/cli.md is out of date: run {REGENERATE}"
    )


def test_the_reference_page_is_shipped_with_the_package() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = project["tool"]["setuptools"]["package-data"]
    assert "docs/*" in data["sonar_bulk"], data
    assert PAGE.parent == ROOT / "sonar_bulk" / "docs"


def test_the_reference_is_the_help_at_a_fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page does not depend on the terminal it was made in."""
    monkeypatch.setenv("COLUMNS", "40")
    narrow = reference_markdown()
    monkeypatch.setenv("COLUMNS", "250")
    assert reference_markdown() == narrow
    for path, _ in COMMANDS:
        assert f"\n## {path}\n" in narrow


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS])
def test_dash_o_is_output_everywhere(path: str) -> None:
    for param in BY_PATH[path].params:
        if "-o" in param.opts:
            assert "--output" in param.opts, (path, param.opts)
        if "--output" in param.opts:
            assert "-o" in param.opts, (path, param.opts)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS])
def test_every_command_that_prints_a_summary_takes_json(path: str) -> None:
    command = BY_PATH[path]
    names = option_names(command)
    if isinstance(command, click.Group) or path in NO_SUMMARY:
        assert "--json" not in names, path
        return
    assert "--json" in names, f"{path} prints a summary but takes no --json"
    assert json_help(path) == json_help("sonar-bulk validate")  # the same words everywhere


def json_help(path: str) -> str | None:
    options = [p for p in BY_PATH[path].params if isinstance(p, click.Option)]
    return next(p.help for p in options if "--json" in p.opts)


def test_sibling_bulk_commands_list_their_options_in_one_order() -> None:
    """Any two bulk commands list the options they share in the same order: each its own
    first, then reading the sheet, which rows, sending, speed, files, events, the
    connection, --json and -q."""
    assert len(BULK) == 9, BULK
    orders = {path: option_names(BY_PATH[path]) for path in BULK}
    for path, names in orders.items():
        for other, theirs in orders.items():
            assert [n for n in names if n in theirs] == [n for n in theirs if n in names], (
                path,
                other,
            )
        assert names[-2:] == ["--json", "--quiet"], path
        own = names[: names.index("--sheet")]
        assert all(sum(n in o for o in orders.values()) == 1 for n in own), (path, own)


# -- --json -------------------------------------------------------------------------------------


def documented_keys() -> dict[str, set[str]]:
    """sonar_bulk/docs/json.md's table: the keys each command's --json summary may have."""
    text = (ROOT / "sonar_bulk" / "docs" / "json.md").read_text(encoding="utf-8")
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        found = re.match(r"\| (`sonar-bulk [^|]+) \| (.*) \|$", line)
        if found:
            for name in re.findall(r"`(sonar-bulk [^`]+)`", found.group(1)):
                table[name] = set(re.findall(r"`([a-z_]+)`", found.group(2)))
    return table


def summary(*args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == code, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["exit_code"] == code
    return doc


def check_keys(path: str, doc: dict[str, Any]) -> None:
    documented = documented_keys()
    assert doc["command"] == path.removeprefix("sonar-bulk ")
    assert set(doc) <= documented[path], (path, sorted(set(doc) - documented[path]))
    assert "file" not in doc  # the sheet read is "input" everywhere


def test_json_md_documents_every_command_with_json() -> None:
    with_json = {p for p, c in COMMANDS if "--json" in option_names(c)}
    assert set(documented_keys()) == with_json


def test_json_summaries_name_their_keys_the_same_way(tmp_path: Path) -> None:
    for name in ("messages.csv", "customers.csv"):
        shutil.copyfile(SAMPLES / name, tmp_path / name)

    validate = summary("validate", str(tmp_path / "customers.csv"), "--kind", "customers")
    check_keys("sonar-bulk validate", validate)
    assert validate["input"] == str(tmp_path / "customers.csv")
    assert validate["report"] is None and validate["split"] is None

    upsert = summary("--emulate", "customers", "upsert", str(tmp_path / "customers.csv"))
    check_keys("sonar-bulk customers upsert", upsert)
    assert upsert["input"] == validate["input"] and upsert["counts"] == {"created": 10}

    sent = summary("--emulate", "messages", "send", str(tmp_path / "messages.csv"), "--yes")
    check_keys("sonar-bulk messages send", sent)
    results = Path(sent["results"])

    settled = summary("settle", str(results))
    check_keys("sonar-bulk settle", settled)
    assert settled["input"] == str(results) and settled["journal"] == sent["journal"]
    assert (settled["rows"], settled["settled"], settled["unknown"]) == (5, 0, 0)
    assert Path(settled["output"]).name == "messages.send.settled.csv"

    store = settled["store"]
    assert Path(store).name == "messages.send.events.sqlite"
    out = tmp_path / "events.csv"
    exported = summary("webhooks", "export", "--store", store, "-o", str(out))
    check_keys("sonar-bulk webhooks export", exported)
    assert (exported["store"], exported["output"]) == (store, str(out))
    assert exported["events"] == 5 and exported["since"] is None

    collected = summary(
        "--emulate",
        "webhooks",
        "collect",
        "--for",
        "0.2s",
        "--listen",
        "127.0.0.1:0",
        "--store",
        str(tmp_path / "events.sqlite"),
        "-o",
        str(tmp_path / "window.csv"),
    )
    check_keys("sonar-bulk webhooks collect", collected)
    assert collected["output"] == str(tmp_path / "window.csv")
    assert (collected["events"], collected["deliveries"]) == (0, 0)

    template = summary("template", "customers", "-o", str(tmp_path / "t.csv"))
    check_keys("sonar-bulk template", template)
    assert template["output"] == str(tmp_path / "t.csv")

    connect = summary("connect", "--emulate")
    check_keys("sonar-bulk connect", connect)
    assert connect["saved"] is False and connect["status"] == "404 Not Found"

    reset = summary("emulator-reset")
    check_keys("sonar-bulk emulator-reset", reset)
    assert reset["forgot"] is True


def test_a_summary_command_reports_its_error_as_json_too(tmp_path: Path) -> None:
    for args in (
        ["settle", str(tmp_path / "none.csv")],
        ["webhooks", "export", "--store", str(tmp_path / "no.sqlite"), "-o", "x.csv"],
        ["template", "customers", "-o", str(tmp_path / "no" / "t.txt")],
    ):
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 2, (args, result.output)
        assert list(json.loads(result.stdout)) == ["error"], args


def test_a_bulk_summary_names_its_plan_and_its_output(tmp_path: Path) -> None:
    """Found by a new user: a dry run's summary says so (its results file is the plan), and
    customers get names the records file it wrote."""
    for name in ("customers.csv", "customer_keys.csv"):
        shutil.copyfile(SAMPLES / name, tmp_path / name)
    planned = summary(
        "--emulate", "customers", "upsert", str(tmp_path / "customers.csv"), "--dry-run"
    )
    check_keys("sonar-bulk customers upsert", planned)
    assert planned["dry_run"] is True and planned["results"].endswith("customers.upsert.plan.csv")
    summary("--emulate", "customers", "upsert", str(tmp_path / "customers.csv"))
    backup = tmp_path / "backup.csv"
    got = summary(
        "--emulate", "customers", "get", str(tmp_path / "customer_keys.csv"), "-o", str(backup)
    )
    check_keys("sonar-bulk customers get", got)
    assert got["output"] == str(backup) and backup.is_file() and got["dry_run"] is False
