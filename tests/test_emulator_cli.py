"""`sonar-bulk emulator` failing early: one line, exit 2, before the banner. Each run is a
subprocess with a timeout, so a regression that starts serving cannot hang the suite."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sonar_bulk.emulator.state import Store
from sonar_bulk.errors import InputError


def emulator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sonar_bulk", "emulator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sonar-bulk: error: ")
    assert "Sonar emulator" not in done.stderr and done.stdout == ""  # no banner
    return done.stderr.removeprefix("sonar-bulk: error: ").rstrip("\n")


def test_a_port_in_use_fails_before_the_banner() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = emulator("--port", str(port))
    assert one_error_line(done).startswith(f"cannot listen on 127.0.0.1:{port}: ")


def test_a_state_file_in_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "state.db"
    message = one_error_line(emulator("--port", "0", "--state", str(missing)))
    assert message == f"--state {missing}: folder {missing.parent} does not exist"


def test_a_state_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the rows you are looking for\n" * 100)
    with pytest.raises(InputError, match="not an emulator state file"):
        Store(state_file=path)


def test_a_state_file_that_cannot_be_written(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot keep the emulator's state there"):
        Store(state_file=tmp_path)  # a folder


def test_request_log_line() -> None:
    from sonar_bulk.emulator.app import format_request

    entry = {
        "method": "POST",
        "path": "/api/v1/customers?token=[REDACTED]",
        "status": 201,
        "duration_ms": 1.26,
        "fault": None,
        "side_effect": "applied",
    }
    assert format_request(entry) == "POST /api/v1/customers?token=[REDACTED] 201 1.3 ms"
    entry.update(status=500, fault="500_after")
    assert format_request(entry).endswith(" 500 1.3 ms (fault: 500_after; side effect: applied)")
