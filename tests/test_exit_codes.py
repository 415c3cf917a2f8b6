"""Errors and exit codes in one place (issue 17): the :class:`ExitCode` enum, the exception tree
drawn in ``sonar_bulk.errors``' docstring, the one mapping :func:`exit_code_for`, and the same
failure ending every command with the same code (Click's CliRunner against a real emulator over
loopback, and a closed port on 127.0.0.1)."""

from __future__ import annotations

import csv
import importlib
import json
import pkgutil
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

import sonar_bulk
from sonar_bulk import cli as cli_module
from sonar_bulk import errors
from sonar_bulk.api.endpoints import secret_forms
from sonar_bulk.api.transport import Transport
from sonar_bulk.cli import bulk as cli_bulk
from sonar_bulk.cli import cli
from sonar_bulk.cli import connect as cli_connect
from sonar_bulk.emulator.app import EmulatorConfig
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.engine import bulk as bulk_engine
from sonar_bulk.errors import (
    Aborted,
    ApiError,
    CallFailed,
    ExitCode,
    FatalApiError,
    OutcomeUnknown,
    Retryable,
    RowFailed,
    SonarBulkError,
    Unreachable,
    UsageError,
    exit_code_for,
    exit_codes_markdown,
    exit_codes_text,
)

from .conftest import SAMPLES

GOOD = "g00d+tok/en-1"
BAD = "b4d+tok/en-2"  # unknown to the emulator: a 401
NO_SUBSCRIPTION = "n0sub+tok/en-3"  # known, but its account has no subscription: a 403


# -- the enum --------------------------------------------------------------------------------


def test_the_codes_are_the_decided_ones() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "ROWS": 1,
        "USAGE": 2,
        "UNREACHABLE": 3,
        "RESULTS_LOST": 4,
        "REFUSED": 5,
        "INTERNAL": 70,
        "ABORTED": 130,
    }
    for code in ExitCode:
        assert code.meaning and "\n" not in code.meaning
        assert code.detail and "\n" not in code.detail and "|" not in code.detail


def test_the_old_names_are_the_enum_and_aborted_is_not_unreachable() -> None:
    assert cli_module.EXIT_OK is ExitCode.OK
    assert cli_module.EXIT_INVALID is ExitCode.ROWS
    assert cli_module.EXIT_USAGE is ExitCode.USAGE
    assert cli_module.EXIT_UNREACHABLE is ExitCode.UNREACHABLE
    assert cli_module.EXIT_REFUSED is ExitCode.REFUSED
    assert cli_module.EXIT_INTERNAL is ExitCode.INTERNAL
    assert cli_module.EXIT_INTERRUPTED is cli_module.EXIT_ABORTED is ExitCode.ABORTED
    assert bulk_engine.EXIT_RESULTS_LOST is ExitCode.RESULTS_LOST
    assert len({int(c) for c in ExitCode}) == len(ExitCode)


# -- the docs come from the enum ---------------------------------------------------------------


def test_the_top_level_help_lists_every_code_from_the_enum() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    listed = lines[lines.index("Exit codes (the same in every command):") + 1 :]
    assert listed == [f"{code.value:<4}{code.meaning}".strip() for code in ExitCode]


def test_the_cli_module_docstring_is_the_enum() -> None:
    assert exit_codes_text() in (cli_module.__doc__ or "")
    listed = re.findall(r"(?m)^  (\d+) +\S", cli_module.__doc__ or "")
    assert [int(n) for n in listed] == [int(code) for code in ExitCode]


def test_the_readme_table_is_made_from_the_enum() -> None:
    table = exit_codes_markdown().splitlines()
    assert table[:2] == ["| code | meaning |", "|---|---|"]
    assert table[2:] == [f"| {code.value} | {code.detail} |" for code in ExitCode]
    from .conftest import ROOT

    assert exit_codes_markdown() in (ROOT / "README.md").read_text(encoding="utf-8")


# -- the tree in sonar_bulk.errors' docstring ----------------------------------------------------

_TREE_LINE = re.compile(
    r"^    (?P<rails>(?:│   |    )*)(?P<branch>├── |└── )?(?P<name>[A-Za-z]+) \.+ +"
    r"(?:(?P<code>\d+) (?P<member>[A-Z_]+)|(?P<cause>= its cause))"
)


def _drawn_tree() -> dict[str, tuple[str | None, str]]:
    """{class name: (parent name, "3 UNREACHABLE" or "= its cause")} as the docstring draws
    it."""
    drawn: dict[str, tuple[str | None, str]] = {}
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        depth = len(match["rails"]) // 4 + (1 if match["branch"] else 0)
        del stack[depth:]
        assert len(stack) == depth, f"a line without its parent: {line!r}"
        parent = stack[-1] if stack else None
        said = match["cause"] or f"{match['code']} {match['member']}"
        drawn[match["name"]] = (parent, said)
        stack.append(match["name"])
    return drawn


def _every_module() -> None:
    """Import every module of the package, so that every exception class exists."""
    for info in pkgutil.walk_packages(sonar_bulk.__path__, "sonar_bulk."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _real_tree() -> dict[str, tuple[str | None, type[SonarBulkError]]]:
    tree: dict[str, tuple[str | None, type[SonarBulkError]]] = {}

    def walk(cls: type[SonarBulkError], parent: str | None) -> None:
        tree[cls.__name__] = (parent, cls)
        for sub in cls.__subclasses__():
            walk(sub, cls.__name__)

    walk(SonarBulkError, None)
    return tree


def test_every_error_class_lives_in_errors_py() -> None:
    _every_module()
    elsewhere = {
        f"{cls.__module__}.{name}"
        for name, (_, cls) in _real_tree().items()
        if cls.__module__ != "sonar_bulk.errors"
    }
    assert elsewhere == set()


def test_the_docstring_draws_the_real_tree_with_each_code() -> None:
    _every_module()
    drawn = _drawn_tree()
    real = _real_tree()
    assert set(drawn) == set(real)
    for name, (parent, cls) in real.items():
        drawn_parent, said = drawn[name]
        assert drawn_parent == parent, name
        if said == "= its cause":
            assert cls is CallFailed
            continue
        number, member = said.split()
        assert ExitCode[member] == int(number) == cls.exit_code, name


def test_a_call_failed_ends_as_its_cause() -> None:
    refused = CallFailed("list webhooks: 401", FatalApiError("401", status=401))
    assert refused.status == 401 and exit_code_for(refused) is ExitCode.REFUSED
    missing = CallFailed("delete webhook: 404", RowFailed("404", status=404))
    assert exit_code_for(missing) is ExitCode.ROWS
    silent = CallFailed("list webhooks: no answer", Retryable("no answer"))
    assert silent.status is None and exit_code_for(silent) is ExitCode.UNREACHABLE


# -- the one mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (Aborted("nothing was sent (not confirmed)"), ExitCode.ABORTED),
        (FatalApiError("401 Unauthorized", status=401), ExitCode.REFUSED),
        (FatalApiError("403 Forbidden: No Active Subscription", status=403), ExitCode.REFUSED),
        (Unreachable("could not reach", not_sent=True), ExitCode.UNREACHABLE),
        (OutcomeUnknown("no answer within 30 s"), ExitCode.UNREACHABLE),
        (Retryable("the connection failed before an answer"), ExitCode.UNREACHABLE),
        (OutcomeUnknown("500 Internal Server Error", status=500), ExitCode.ROWS),
        (RowFailed("404 Not Found", status=404), ExitCode.ROWS),
        (ApiError("429", status=429), ExitCode.ROWS),
        (KeyboardInterrupt(), ExitCode.ABORTED),
        (click.exceptions.Abort(), ExitCode.ABORTED),
        (click.BadParameter("nope"), ExitCode.USAGE),
        (click.UsageError("nope"), ExitCode.USAGE),
        (OSError(28, "No space left on device"), ExitCode.USAGE),
        (ValueError("a bug"), ExitCode.INTERNAL),
    ],
)
def test_exit_code_for(exc: BaseException, code: ExitCode) -> None:
    assert exit_code_for(exc) is code


# -- the same failure, the same code, in every command -------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    tokens: dict[str, Any] = {GOOD: "valid", NO_SUBSCRIPTION: "no_subscription"}
    with EmulatorServer(EmulatorConfig(tokens=tokens)) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> EmulatorServer:
    server.admin("POST", "/reset")
    return server


@pytest.fixture
def closed_url() -> Iterator[str]:
    """An API URL on 127.0.0.1 whose port refuses connections (bound, not listening)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{closed.getsockname()[1]}/api/v1"


def _sample(tmp_path: Path, name: str) -> str:
    copy = tmp_path / name
    shutil.copyfile(SAMPLES / name, copy)
    return str(copy)


COMMANDS = ["customers upsert", "messages send", "api", "connect", "webhooks list"]


def _argv(command: str, tmp_path: Path) -> list[str]:
    """The command's arguments, before --base-url and --token (a run retries nothing: an
    unreachable API stops it at once)."""
    run = ["--rate", "0", "--max-retries", "0"]
    return {
        "customers upsert": ["customers", "upsert", _sample(tmp_path, "customers.csv"), *run],
        "messages send": ["messages", "send", _sample(tmp_path, "messages.csv"), "--yes", *run],
        "api": ["api", "GET", "/customers", "-p", "phone_number=+13105550101"],
        "connect": ["connect", "--profile", "checked"],
        "webhooks list": ["webhooks", "list"],
    }[command]


def invoke(argv: list[str], base_url: str, token: str, **kw: Any) -> Result:
    return CliRunner().invoke(cli, [*argv, "--base-url", base_url, "--token", token], **kw)


def assert_clean(result: Result, *tokens: str) -> None:
    """No traceback, and no form of any token anywhere in the output."""
    assert "Traceback" not in result.output
    for form in secret_forms(*tokens):
        assert form not in result.output


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("sonar-bulk: error: ")]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_good_token_is_ok_everywhere(emu: EmulatorServer, tmp_path: Path, command: str) -> None:
    """The baseline: each command of these tests works with a valid token (a customer
    GET answers 404 before the upsert: the api command runs after it)."""
    if command == "api":
        invoke(_argv("customers upsert", tmp_path), emu.api_url, GOOD)
    result = invoke(_argv(command, tmp_path), emu.api_url, GOOD)
    assert result.exit_code == ExitCode.OK, result.output
    assert_clean(result, GOOD)


@pytest.mark.parametrize("token", [BAD, NO_SUBSCRIPTION])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_token_or_account_is_exit_5_everywhere(
    emu: EmulatorServer, tmp_path: Path, command: str, token: str
) -> None:
    result = invoke(_argv(command, tmp_path), emu.api_url, token)
    assert result.exit_code == 5, result.output  # ExitCode.REFUSED
    assert_clean(result, token)
    if command != "api":  # api prints the answer, the others one error line naming the refusal
        (line,) = error_lines(result)
        assert ("401" if token == BAD else "No Active Subscription") in line
    else:
        assert result.stderr.startswith("401" if token == BAD else "403")
    if command == "connect":
        from sonar_bulk import connection

        assert not connection.profiles_path().exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_api_is_exit_3_everywhere(
    closed_url: str, tmp_path: Path, command: str
) -> None:
    result = invoke(_argv(command, tmp_path), closed_url, GOOD)
    assert result.exit_code == 3, result.output  # ExitCode.UNREACHABLE
    assert_clean(result, GOOD)
    (line,) = error_lines(result)
    assert f"could not reach the API at {closed_url}" in line


@pytest.mark.parametrize("command", ["api", "connect", "webhooks list"])
def test_ctrl_c_during_a_call_is_exit_130(
    emu: EmulatorServer, tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def interrupted(*args: Any, **kwargs: Any) -> httpx.Response:
        raise KeyboardInterrupt

    monkeypatch.setattr(Transport, "exchange", interrupted)
    result = invoke(_argv(command, tmp_path), emu.api_url, GOOD)
    assert result.exit_code == 130, result.output  # ExitCode.ABORTED
    assert "sonar-bulk: interrupted" in result.stderr
    assert_clean(result, GOOD)


def _as_a_terminal(monkeypatch: pytest.MonkeyPatch, answer: Any) -> list[str]:
    """The bulk commands' questions go to ``answer`` as if asked in a terminal."""
    asked: list[str] = []
    real_init = cli_bulk.CliUi.__init__

    def init(self: cli_bulk.CliUi, quiet: bool, yes: bool) -> None:
        real_init(self, quiet, yes)
        self.tty = True

    def confirm(self: cli_bulk.CliUi, question: str) -> bool:
        asked.append(question)
        return bool(answer())

    monkeypatch.setattr(cli_bulk.CliUi, "__init__", init)
    monkeypatch.setattr(cli_bulk.CliUi, "confirm", confirm)
    return asked


def test_declining_the_send_confirmation_is_exit_130(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _as_a_terminal(monkeypatch, lambda: False)
    sheet = _sample(tmp_path, "messages.csv")
    result = invoke(["messages", "send", sheet, "--rate", "0", "--json"], emu.api_url, GOOD)
    assert result.exit_code == ExitCode.ABORTED, result.output
    assert len(asked) == 1 and asked[0].startswith("Send to ")
    assert error_lines(result) == ["sonar-bulk: error: nothing was sent (not confirmed)"]
    assert json.loads(result.stdout) == {"error": "nothing was sent (not confirmed)"}
    assert not [r for r in emu.admin("GET", "/requests") if r["path"].endswith("/messages")]


def test_ctrl_c_at_the_send_confirmation_is_exit_130(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ctrl_c() -> bool:
        raise click.exceptions.Abort

    _as_a_terminal(monkeypatch, ctrl_c)
    sheet = _sample(tmp_path, "messages.csv")
    result = invoke(["messages", "send", sheet, "--rate", "0"], emu.api_url, GOOD)
    assert result.exit_code == ExitCode.ABORTED, result.output
    assert "sonar-bulk: interrupted" in result.stderr
    assert not [r for r in emu.admin("GET", "/requests") if r["path"].endswith("/messages")]


def test_end_of_input_at_connects_question_is_exit_130(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_connect, "_can_prompt", lambda: True)
    result = CliRunner().invoke(cli, ["connect", "--base-url", emu.api_url], input="")
    assert result.exit_code == ExitCode.ABORTED, result.output
    assert "Traceback" not in result.output


# -- --json: Click's own usage errors on stdout too ----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["validate", "{sheet}", "--kind", "bogus", "--json"], "Invalid value for '--kind'"),
        (["validate", "--json", "--kind", "customers"], "Missing argument 'FILE'"),
        (["validate", "{sheet}", "--kind", "customers", "--header-row", "0", "--json"], "0"),
        (["customers", "upsert", "--json"], "Missing argument 'FILE'"),
        (["customers", "upsert", "{sheet}", "--json", "--rate", "fast"], "'fast'"),
        (["messages", "send", "{sheet}", "--json", "--nope"], "No such option '--nope'"),
        (["customers", "upsrt", "{sheet}", "--json"], "No such command 'upsrt'"),
    ],
)
def test_json_prints_clicks_usage_errors_on_stdout(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    sheet = _sample(tmp_path, "customers.csv")
    result = CliRunner().invoke(cli, [a.replace("{sheet}", sheet) for a in argv])
    assert result.exit_code == ExitCode.USAGE, result.output
    (line,) = error_lines(result)
    (printed,) = result.stdout.splitlines()
    error = json.loads(printed)["error"]
    assert said in error and line == f"sonar-bulk: error: {error}"
    assert "Traceback" not in result.output


def test_json_usage_errors_need_json_and_a_command_that_has_it(tmp_path: Path) -> None:
    sheet = _sample(tmp_path, "customers.csv")
    for argv in (
        ["validate", sheet, "--kind", "bogus"],  # no --json
        ["api", "GET", "/customers", "--json"],  # api has no --json: that is the error
        ["validate", "--kind", "customers", "--", "--json"],  # a file called --json
    ):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == ExitCode.USAGE, (argv, result.output)
        assert result.stdout == "", argv
        assert len(error_lines(result)) == 1, argv


def _outbound(emu: EmulatorServer) -> list[str]:
    return [str(m["to"]) for m in emu.admin("GET", "/state")["messages"]]


def _send_sheet(folder: Path, rows: list[tuple[str, str]]) -> str:
    folder.mkdir(exist_ok=True)
    path = folder / "promo.csv"
    path.write_text("to,text\n" + "".join(f"{to},{text}\n" for to, text in rows))
    return str(path)


def test_rows_let_through_at_send_them_again_obey_limit_and_quiet_hours(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a double-send trial: answering yes to "Send them again?" sent every row at
    once, past --limit and inside --quiet-hours (the two were applied before the question,
    to the rows left then). The rows let through obey both."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    phones = ["+12125550141", "+12125550142", "+12125550143"]
    rows = [(p, "Spring sale") for p in phones]
    first = invoke(["messages", "send", _send_sheet(tmp_path / "a", rows), "--rate", "0", "--yes"],
                   emu.api_url, GOOD)  # fmt: skip
    assert first.exit_code == 0, first.output
    assert sorted(_outbound(emu)) == phones
    asked = _as_a_terminal(monkeypatch, lambda: True)
    emu.admin("POST", "/clock", {"advance": 3600})  # past the emulator's duplicate rule
    limited = invoke(
        ["messages", "send", _send_sheet(tmp_path / "b", rows), "--rate", "0", "--limit", "1"],
        emu.api_url,
        GOOD,
    )
    assert limited.exit_code == 0, limited.output
    assert any("Send them again?" in q for q in asked), asked
    assert len(_outbound(emu)) == 4  # one more: --limit 1
    now = dt.datetime.now(ZoneInfo("America/New_York"))
    window = f"{now - dt.timedelta(hours=1):%H:%M}-{now + dt.timedelta(hours=1):%H:%M}"
    emu.admin("POST", "/clock", {"advance": 3600})
    quiet = invoke(
        ["messages", "send", _send_sheet(tmp_path / "c", rows), "--rate", "0",
         "--quiet-hours", window, "--quiet-hours-policy", "skip"],
        emu.api_url,
        GOOD,
    )  # fmt: skip
    assert len(_outbound(emu)) == 4, quiet.output  # nobody texted inside quiet hours
    with (tmp_path / "c" / "promo.send.results.csv").open(newline="") as f:
        errors = [r["sonar__error"] for r in csv.DictReader(f)]
    assert all(f"is inside quiet hours {window}" in e for e in errors), errors


def test_the_send_question_shows_a_row_that_will_go_out(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a double-send trial: the question showed the sheet's first row, which had
    been sent before and was being skipped, not the first row that would go out."""
    sent = ("+12125550151", "First row text")
    first = invoke(["messages", "send", _send_sheet(tmp_path / "a", [sent]), "--rate", "0",
                    "--yes"], emu.api_url, GOOD)  # fmt: skip
    assert first.exit_code == 0, first.output
    asked: list[str] = _as_a_terminal(monkeypatch, lambda: "Send them again?" not in asked[-1])
    sheet = _send_sheet(tmp_path / "b", [sent, ("+12125550159", "Second row text")])
    again = invoke(["messages", "send", sheet, "--rate", "0"], emu.api_url, GOOD)
    question = next(q for q in asked if q.startswith("Send to "))
    assert "+12125550159" in question and "Second row text" in question, question
    assert "First row text" not in question
    assert again.exit_code == 0, again.output
    assert sorted(_outbound(emu)) == ["+12125550151", "+12125550159"]
