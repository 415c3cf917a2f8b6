"""Shared fixtures: paths, a clean environment, the CLI runner and golden-file helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/ from the current output.",
    )


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SONAR_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("SONAR_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(autouse=True)
def private_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Profiles and the world --emulate keeps go to fresh folders for every test, never to the
    real home (platformdirs reads XDG_CONFIG_HOME and XDG_DATA_HOME)."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    yield home


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Any:
    """Compare text with tests/golden/NAME, or rewrite it under --update-golden."""
    update = request.config.getoption("--update-golden")

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if update or not path.exists():
            path.write_text(text, encoding="utf-8")
            if not update:
                pytest.fail(f"golden file {name} was missing and has been written; rerun")
        assert text == path.read_text(encoding="utf-8"), f"differs from golden/{name}"

    return check


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` exactly (newlines as given) to ``path``."""
    path.write_bytes(text.encode(encoding))
    return path


def as_json(text: str) -> Any:
    return json.loads(text)
