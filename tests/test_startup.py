"""The command line imports only what a command uses (issue 20, point 5): ``--help`` loads
none of the data, HTTP or web stack, and ``validate`` of a small CSV none of the HTTP client,
the engine, the emulator or the web page. Which modules a fresh process holds is checked, not
how long it took (tests/bench/bench_startup.py measures that)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import click

from sonar_bulk.cli import cli
from sonar_bulk.cli.common import COMMAND_MODULES

from .conftest import ROOT, SAMPLES

#: Run in a fresh interpreter: the command through CliRunner, then which of the modules named
#: on stdin were imported (a module counts with its submodules).
PROBE = """
import json, sys
asked = json.loads(sys.stdin.read())
from click.testing import CliRunner
from sonar_bulk.cli import cli
result = CliRunner().invoke(cli, asked["args"], catch_exceptions=False)
loaded = [m for m in asked["modules"] if any(
    name == m or name.startswith(m + ".") for name in list(sys.modules))]
print(json.dumps({"exit": result.exit_code, "output": result.output, "loaded": loaded}))
"""

#: Never needed to print the help.
HEAVY = [
    "pandas",
    "pyarrow",
    "numpy",
    "httpx",
    "httpcore",
    "aiohttp",
    "phonenumbers",
    "openpyxl",
    "xlsxwriter",
    "python_calamine",
    "email_validator",
    "pycountry",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "rich",
    "asyncio",
    "sqlite3",
    "sonar_bulk.api.client",
    "sonar_bulk.engine.bulk",
    "sonar_bulk.engine.talk",
    "sonar_bulk.validation",
    "sonar_bulk.sheets",
    "sonar_bulk.emulator",
    "sonar_bulk.events.store",
    "sonar_bulk.web",
]
#: Never needed to validate a CSV.
NOT_FOR_VALIDATE = [
    "httpx",
    "httpcore",
    "aiohttp",
    "openpyxl",
    "xlsxwriter",
    "starlette",
    "uvicorn",
    "rich",
    "asyncio",
    "sonar_bulk.api.client",
    "sonar_bulk.engine",
    "sonar_bulk.emulator",
    "sonar_bulk.events",
    "sonar_bulk.web",
    "sonar_bulk.cli.bulk",
    "sonar_bulk.cli.talk",
]
#: What validate does use (so the probe is seen to see imports).
FOR_VALIDATE = ["pyarrow", "phonenumbers", "sonar_bulk.validation", "sonar_bulk.cli.validate"]


def probe(args: list[str], modules: list[str], cwd: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        input=json.dumps({"args": args, "modules": modules}),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    result = probe(["--help"], [*HEAVY, "click"], ROOT)
    assert result["exit"] == 0
    assert "customers" in str(result["output"]) and "validate" in str(result["output"])
    assert result["loaded"] == ["click"]


def test_a_command_s_help_imports_no_heavy_module(tmp_path: Path) -> None:
    result = probe(["validate", "--help"], HEAVY, ROOT)
    assert result["exit"] == 0 and "--kind" in str(result["output"])
    assert result["loaded"] == []


def test_validate_of_a_small_csv_imports_only_what_it_uses(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "customers.csv", tmp_path / "customers.csv")
    args = ["validate", "customers.csv", "--kind", "customers"]
    result = probe(args, [*NOT_FOR_VALIDATE, *FOR_VALIDATE], tmp_path)
    assert result["exit"] == 0, result["output"]
    assert "10 valid" in str(result["output"])
    assert result["loaded"] == FOR_VALIDATE


def test_every_command_is_named_with_its_module() -> None:
    """The lazy group knows every top-level command by the module that defines it: a command
    left out of COMMAND_MODULES would be missing from --help."""
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(module)
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, command in cli.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == COMMAND_MODULES[name], name
    assert cli.list_commands(click.Context(cli)) == sorted(COMMAND_MODULES)
