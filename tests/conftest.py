"""Shared fixtures: paths, a clean environment, the CLI runner and golden-file helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

if TYPE_CHECKING:
    from sonar_bulk.emulator.server import EmulatorServer
    from tests.web_helpers import Page

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


# -- the web page (tests/test_web*.py) -----------------------------------------------------


@pytest.fixture(scope="module")
def web_emulator() -> Iterator[EmulatorServer]:
    """The emulator the page's runs go to (one per test module)."""
    from sonar_bulk.emulator.app import EmulatorConfig
    from sonar_bulk.emulator.server import EmulatorServer

    with EmulatorServer(EmulatorConfig()) as srv:
        yield srv


@pytest.fixture
def page(web_emulator: EmulatorServer) -> Iterator[Page]:
    """A fresh page over an empty emulator with default knobs."""
    from sonar_bulk.emulator.app import Knobs
    from tests.web_helpers import serve_page

    web_emulator.admin("POST", "/reset")
    web_emulator.emulator.knobs.__dict__.update(Knobs().__dict__)
    with serve_page(web_emulator) as p:
        yield p
    web_emulator.emulator.knobs.__dict__.update(Knobs().__dict__)
