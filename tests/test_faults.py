"""Runs that survive the machine: a failure at each write point (the journal, the results) or a
signal never hangs a run, never loses its results, and never ends in a traceback.

Write failures are injected (an ``OSError(ENOSPC)`` where the disk would be full); signals are
real, sent to a real process, with requests hanging in the emulator.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.engine import bulk as bulk_engine
from sonar_bulk.engine import execute as engine_execute
from sonar_bulk.engine.journal import Journal

from .emulator_helpers import signal_when, wait_for
from .test_bulk_cli import (
    MESSAGES,
    bulk,
    command,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    messages_sheet,
    outbound,
    read_dicts,
    server,  # noqa: F401 (a fixture)
    state,
    us_numbers,
)


def full_disk(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def disk_fills(monkeypatch: pytest.MonkeyPatch, where: str, after: int, journal: Path) -> None:
    """The journal's disk fills after ``after`` calls of its ``where`` (intent, outcome)."""
    original = getattr(Journal, where)
    calls = 0

    def failing(self: Journal, *args: Any, **kw: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > after:
            raise full_disk(str(journal))
        original(self, *args, **kw)

    monkeypatch.setattr(Journal, where, failing)


def test_a_stopped_run_with_unknown_sends_says_the_safe_resume_first(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first send is answered 500 after it went out (unknown), then the journal's disk
    fills: the run stops. Its resume (which holds the unknown send) is said before the command
    that would send the unknown one again (found by a new-user trial: the risky one came
    first, to be copied first)."""
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(341, 10))
    journal_path = tmp_path / "s.send.journal.sqlite"
    emu.admin("POST", "/faults", {"fault": "500_after", "path": MESSAGES, "method": "POST"})
    disk_fills(monkeypatch, "intent", 3, journal_path)
    result = bulk(
        emu, "messages", "send", str(sheet), "--yes", "--concurrency", "1",
        "--collect-events", "off",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    said = result.output
    assert said.index("resume with:") < said.index("did not go out again"), said
    assert sum(outbound(emu).values()) == 3


@pytest.mark.parametrize("where", ["intent", "outcome"])
def test_a_journal_on_a_full_disk_stops_the_run_with_its_results(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    phones = us_numbers(340, 30)
    sheet = messages_sheet(tmp_path / "s.csv", phones)
    journal_path = tmp_path / "s.send.journal.sqlite"
    disk_fills(monkeypatch, where, 5, journal_path)
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--concurrency", "2")
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert f"{journal_path}: No space left on device" in result.output
    assert "resume with:" in result.output
    rows = read_dicts(tmp_path / "s.send.results.csv")
    assert len(rows) == 30  # every row, each with a status
    sent = outbound(emu)
    by_status = Counter(r["sonar__status"] for r in rows)
    assert set(by_status) <= {"queued", "skipped", "unknown"}
    # a row reported skipped was never sent; a queued one was, once
    for r in rows:
        if r["sonar__status"] == "skipped":
            assert sent[r["to"]] == 0
        if r["sonar__status"] == "queued":
            assert sent[r["to"]] == 1
    assert by_status["skipped"] >= 20


def test_results_that_cannot_be_written_go_beside_the_journal_or_the_data_folder(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = us_numbers(341, 5)
    sheet = messages_sheet(tmp_path / "s.csv", phones)
    asked = tmp_path / "out" / "r.csv"
    asked.parent.mkdir()
    original = engine_execute.write_results  # type: ignore[attr-defined]

    def full(sheet_: Any, results: Any, path: Path, *args: Any, **kw: Any) -> Any:
        if path.parent == asked.parent:
            raise full_disk(str(path))
        return original(sheet_, results, path, *args, **kw)

    monkeypatch.setattr(engine_execute, "write_results", full)
    result = bulk(emu, "messages", "send", str(sheet), "--yes", "--results", str(asked))
    assert result.exit_code == 0, result.output
    fallback = tmp_path / "r.csv"  # beside the journal
    assert f"could not be written to {asked} (No space left on device)" in result.output
    assert str(fallback) in result.output
    assert [r["sonar__status"] for r in read_dicts(fallback)] == ["queued"] * 5


def test_results_written_nowhere_end_with_exit_4_and_the_way_back(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(342, 3))

    def full(sheet_: Any, results: Any, path: Path, *args: Any, **kw: Any) -> Any:
        raise full_disk(str(path))

    monkeypatch.setattr(engine_execute, "write_results", full)
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == bulk_engine.EXIT_RESULTS_LOST == 4, result.output
    assert "every outcome is in the journal" in result.output
    assert f"--resume {tmp_path / 's.send.journal.sqlite'}" in result.output
    assert sum(outbound(emu).values()) == 3
    monkeypatch.undo()
    again = bulk(
        emu,
        "messages",
        "send",
        str(sheet),
        "--yes",
        "--resume",
        str(tmp_path / "s.send.journal.sqlite"),
    )
    assert again.exit_code == 0, again.output
    assert [r["sonar__status"] for r in read_dicts(tmp_path / "s.send.results.csv")] == [
        "queued"
    ] * 3
    assert sum(outbound(emu).values()) == 3  # the resume wrote the results, sent nothing


def test_rows_an_xlsx_cannot_hold_are_refused_before_anything_is_sent(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonar_bulk import outputs

    monkeypatch.setattr(outputs, "XLSX_MAX_ROWS", 4)  # the real one: 1,048,576
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(343, 6))
    result = bulk(
        emu, "messages", "send", str(sheet), "--yes", "--results", str(tmp_path / "r.xlsx")
    )
    assert result.exit_code == 2, result.output
    assert "do not fit in an .xlsx sheet" in result.output
    assert state(emu)["messages"] == []


@pytest.mark.parametrize(
    ("sig", "name"),
    [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"), (signal.SIGINT, "Ctrl-C")],
)
def test_one_signal_ends_a_run_at_once_even_with_requests_hanging(
    emu: EmulatorServer, tmp_path: Path, sig: signal.Signals, name: str
) -> None:
    phones = us_numbers(344, 6)
    sheet = messages_sheet(tmp_path / "s.csv", phones)
    emu.admin("POST", "/config", {"hang_seconds": 60})
    emu.admin("POST", "/faults", {"fault": "hang_after", "count": 2, "path": "/api/v1/messages"})
    proc = subprocess.Popen(
        [
            *command(emu, "messages", "send", str(sheet), "--yes", "--concurrency", "2"),
            "--timeout",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr, took = signal_when(proc, lambda: len(state(emu)["messages"]) >= 2, sig)
    assert proc.returncode == 130, stderr
    assert took < 15, took  # not the 50 s --timeout of the hanging requests
    assert "Traceback" not in stderr
    assert f"interrupted ({name}" in stderr
    rows = read_dicts(tmp_path / "s.send.results.csv")
    assert len(rows) == 6
    hung = [r for r in rows if r["sonar__status"] == "unknown"]
    assert len(hung) == 2  # in flight when cancelled: they may have gone out
    assert all(r["sonar__status"] in ("unknown", "skipped") for r in rows)


# -- bad environments -----------------------------------------------------------------------------


def test_an_input_that_never_ends_is_refused_with_its_size(tmp_path: Path) -> None:
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    result = CliRunner().invoke(cli, ["validate", str(link), "--kind", "messages"])
    assert result.exit_code == 2
    assert result.output.strip().endswith(f"{link}: is a device, not a sheet")
    big = messages_sheet(tmp_path / "big.csv", us_numbers(345, 2000))
    capped = CliRunner().invoke(
        cli, ["validate", str(big), "--kind", "messages"], env={"SONAR_BULK_MAX_INPUT_MB": "0.01"}
    )
    assert capped.exit_code == 2
    assert "97,800 bytes, more than the 10,485 bytes sonar-bulk reads" in capped.output


def test_an_endless_pipe_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        ["bash", "-c", f"yes 'to,text' > {shlex.quote(str(fifo))} 2>/dev/null"],
        start_new_session=True,
    )
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sonar_bulk", "validate", str(fifo), "--kind", "messages"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SONAR_BULK_MAX_INPUT_MB": "1"},
        )
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    assert result.returncode == 2, result.stderr
    assert "still going (a pipe or a file that never ends?)" in result.stderr


@pytest.mark.parametrize("closed", ["2>&-", ">&-", "<&-"])
def test_a_closed_standard_stream_works(emu: EmulatorServer, tmp_path: Path, closed: str) -> None:
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(346, 2))
    argv = " ".join(shlex.quote(a) for a in command(emu, "messages", "send", str(sheet), "--yes"))
    done = subprocess.run(
        ["bash", "-c", f"{argv} --json {closed}"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert b"internal error" not in done.stdout + done.stderr
    assert sum(outbound(emu).values()) == 2


def test_a_broken_ledger_or_journal_names_its_file_and_what_to_do(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    from sonar_bulk.engine.ledger import ledger_path

    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(347, 2))
    ledger = ledger_path()
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 2, result.output
    assert f"send ledger {ledger}:" in result.output and "restore it from a backup" in result.output
    ledger.unlink()
    assert state(emu)["messages"] == []

    first = bulk(emu, "messages", "send", str(sheet), "--yes", "--limit", "1")
    assert first.exit_code == 0, first.output
    journal = tmp_path / "s.send.journal.sqlite"
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    newer = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert newer.exit_code == 2, newer.output
    assert "written by a newer sonar-bulk (version 99)" in newer.output
    assert sum(outbound(emu).values()) == 1


# -- statuses and words ---------------------------------------------------------------------------


def test_a_base_url_with_a_query_or_fragment_is_a_usage_error(tmp_path: Path) -> None:
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(348, 1))
    for url in ("http://127.0.0.1:9/api/v1?", "http://127.0.0.1:9/api/v1#x"):
        result = CliRunner().invoke(
            cli, ["messages", "send", str(sheet), "--yes", "--base-url", url, "--token", "t"]
        )
        assert result.exit_code == 2, result.output
        assert "expected no ?query or #fragment" in result.output


def test_a_timezone_column_quiet_hours_use_is_not_called_ignored(tmp_path: Path) -> None:
    sheet = tmp_path / "m.csv"
    sheet.write_text("to,text,timezone\n+13105550101,hi,Europe/London\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(sheet), "--kind", "messages"])
    assert result.exit_code == 0, result.output
    assert "ignored" not in result.output and "column.unknown" not in result.output


def test_an_emulator_state_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    from sonar_bulk.emulator.app import EmulatorConfig
    from sonar_bulk.errors import InputError

    state_file = tmp_path / "state.sqlite"
    with EmulatorServer(EmulatorConfig(state_file=str(state_file))):
        pass
    with sqlite3.connect(state_file) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        db.execute("PRAGMA user_version=7")
    with pytest.raises(InputError, match=r"written by a newer sonar-bulk \(version 7\)"):
        with EmulatorServer(EmulatorConfig(state_file=str(state_file))):
            pass


def test_a_cancelled_upsert_is_made_again_on_resume(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(352, 4)
    sheet = customers_sheet(tmp_path / "c.csv", phones)
    emu.admin("POST", "/config", {"hang_seconds": 60})
    emu.admin("POST", "/faults", {"fault": "hang_after", "count": 1, "path": "/api/v1/customers"})
    proc = subprocess.Popen(
        [*command(emu, "customers", "upsert", str(sheet), "--concurrency", "1"), "--timeout", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr, _ = signal_when(proc, lambda: len(state(emu)["customers"]) >= 1, signal.SIGTERM)
    assert proc.returncode == 130, stderr
    rows = read_dicts(tmp_path / "c.upsert.results.csv")
    assert rows[0]["sonar__status"] == "skipped"  # in flight: safe to make again
    resumed = bulk(
        emu,
        "customers",
        "upsert",
        str(sheet),
        "--resume",
        str(tmp_path / "c.upsert.journal.sqlite"),
    )
    assert resumed.exit_code == 0, resumed.output
    assert {r["sonar__status"] for r in read_dicts(tmp_path / "c.upsert.results.csv")} <= {
        "created",
        "updated",
    }


def test_a_ledger_that_fails_after_the_run_leaves_the_results_whole(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonar_bulk.engine.ledger import Ledger

    def broken(self: Ledger, *args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "settle", broken)
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(353, 3))
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 0, result.output
    assert "could not record this run's sends (database or disk is full)" in result.output
    assert [r["sonar__status"] for r in read_dicts(tmp_path / "s.send.results.csv")] == [
        "queued"
    ] * 3


def test_closing_the_terminal_stops_the_run_and_keeps_its_results(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The window closes (the pty hangs up: SIGHUP, then every write fails with EIO)."""
    import pty
    import threading

    phones = us_numbers(354, 30)
    sheet = messages_sheet(tmp_path / "s.csv", phones)
    emu.admin("POST", "/config", {"hang_seconds": 60, "latency_ms": 20})
    emu.admin("POST", "/faults", {"fault": "hang_after", "count": 2, "path": "/api/v1/messages"})
    leader, follower = pty.openpty()
    name = os.ttyname(follower)

    def own_terminal() -> None:
        os.setsid()
        os.close(os.open(name, os.O_RDWR))  # the session's controlling terminal

    proc = subprocess.Popen(
        [
            *command(emu, "messages", "send", str(sheet), "--yes", "--concurrency", "4"),
            "--timeout",
            "50",
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        preexec_fn=own_terminal,  # noqa: PLW1509
    )
    os.close(follower)

    def drain() -> None:
        with contextlib.suppress(OSError):
            while os.read(leader, 65536):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(state(emu)["messages"]) >= 10 or proc.poll() is not None, 30)
        assert proc.poll() is None
        started = time.monotonic()
        os.close(leader)  # the window closes
        code = proc.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert code == 130
    assert took < 15, took  # not the hanging requests' 50 s
    rows = read_dicts(tmp_path / "s.send.results.csv")
    assert len(rows) == 30
    sent = outbound(emu)
    for r in rows:
        if r["sonar__status"] == "skipped":
            assert sent[r["to"]] == 0
    assert sum(r["sonar__status"] == "unknown" for r in rows) == 2


def test_ctrl_c_at_the_question_is_an_interruption_not_an_error(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonar_bulk.cli import talk as cli_talk

    monkeypatch.setattr(cli_talk, "is_terminal", lambda: True)
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(355, 2))
    result = bulk(emu, "messages", "send", str(sheet), input="")  # EOF at "Send [y/N]"
    assert result.exit_code == 130, result.output
    assert "internal error" not in result.output
    assert "interrupted" in result.output
    assert state(emu)["messages"] == []


@pytest.mark.parametrize("value", ["inf", "-1", "abc", "1e400", "0"])
def test_an_odd_input_cap_is_one_clear_line(tmp_path: Path, value: str) -> None:
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(356, 1))
    result = CliRunner().invoke(
        cli, ["validate", str(sheet), "--kind", "messages"], env={"SONAR_BULK_MAX_INPUT_MB": value}
    )
    assert result.exit_code == 2, result.output
    assert (
        "SONAR_BULK_MAX_INPUT_MB" in result.output and "expected a number of MiB" in result.output
    )


def test_one_signal_while_the_results_are_written_waits_for_them(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(357, 3))
    original = engine_execute.write_results  # type: ignore[attr-defined]

    def interrupted(*args: Any, **kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the results are written
        return original(*args, **kw)

    monkeypatch.setattr(engine_execute, "write_results", interrupted)
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 0, result.output
    assert [r["sonar__status"] for r in read_dicts(tmp_path / "s.send.results.csv")] == [
        "queued"
    ] * 3


def test_a_journal_that_cannot_start_a_run_sends_nothing(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Journal, *args: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Journal, "start_run", full)
    sheet = messages_sheet(tmp_path / "s.csv", us_numbers(358, 2))
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 2, result.output
    assert "database or disk is full; nothing was sent" in result.output
    assert "internal error" not in result.output
    assert state(emu)["messages"] == []
