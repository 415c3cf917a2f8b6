"""One bulk run (``engine.run.run_sheet``) driven directly with a recording Ui, and the
Python API (``import sonar_bulk as sb``): against the real emulator over loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import sonar_bulk as sb
from sonar_bulk.connection import Connection
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.engine import talk
from sonar_bulk.engine.bulk import BulkOptions, InvalidRows, StopSignal
from sonar_bulk.engine.run import run_sheet
from sonar_bulk.errors import Aborted, UsageError

from .test_bulk_cli import (
    TOKEN,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    messages_sheet,
    outbound,
    server,  # noqa: F401 (a fixture)
    state,
    us_numbers,
    write_sheet,
)


def _conn(emu: EmulatorServer) -> Connection:
    return Connection(emu.api_url, TOKEN)


def _kinds(ui: talk.RecordingUi) -> list[str]:
    return [type(n).__name__ for n in ui.notices]


# -- run_sheet, told and asked as data ---------------------------------------------------------


def test_an_upsert_tells_what_it_does_and_asks_nothing(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = customers_sheet(tmp_path / "c.csv", us_numbers(401, 3))
    ui = talk.RecordingUi()
    report = run_sheet("customers upsert", sheet, _conn(emu), BulkOptions(rate=0), ui)
    assert report.exit_code == 0 and report.summary.counts == {"created": 3}
    assert _kinds(ui) == ["Validated", "Starting", "Finished"]
    assert ui.questions == []
    assert ui.of(talk.Starting)[0].prepared.to_run == 3
    assert ui.of(talk.Finished)[0].report is report
    assert len(state(emu)["customers"]) == 3


def test_a_send_asks_with_the_count_and_the_first_message(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(402, 2)
    sheet = messages_sheet(tmp_path / "m.csv", phones)
    no = talk.RecordingUi(answers={"ConfirmSend": False})
    with pytest.raises(Aborted, match="not confirmed"):
        run_sheet("messages send", sheet, _conn(emu), BulkOptions(rate=0), no)
    (asked,) = no.questions
    assert isinstance(asked, talk.ConfirmSend)
    assert (asked.count, asked.first_to, asked.first_text) == (2, phones[0], "Hi P0, row 0")
    assert not outbound(emu)

    yes = talk.RecordingUi()
    report = run_sheet("messages send", sheet, _conn(emu), BulkOptions(rate=0), yes)
    assert report.summary.counts == {"queued": 2} and sum(outbound(emu).values()) == 2


def test_a_copy_of_a_sent_sheet_asks_before_resending_and_no_skips(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = messages_sheet(tmp_path / "m.csv", us_numbers(403, 2))
    run_sheet("messages send", sheet, _conn(emu), BulkOptions(rate=0), talk.RecordingUi())
    copy = shutil.copyfile(sheet, tmp_path / "copy.csv")
    ui = talk.RecordingUi(answers={"ConfirmResend": False})
    report = run_sheet("messages send", copy, _conn(emu), BulkOptions(rate=0), ui)
    resend = [q for q in ui.questions if isinstance(q, talk.ConfirmResend)]
    assert len(resend) == 1 and resend[0].count == 2 and len(resend[0].lines) == 2
    assert not any(isinstance(q, talk.ConfirmSend) for q in ui.questions)  # nothing to send
    assert report.summary.counts == {"skipped": 2}
    assert sum(outbound(emu).values()) == 2


def test_rows_with_errors_stop_the_run_before_any_connection(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "bad.csv", ["phone_number"], [["not a phone"]])

    def never() -> Connection:
        raise AssertionError("no connection for a sheet with errors")

    ui = talk.RecordingUi()
    with pytest.raises(InvalidRows):
        run_sheet("customers upsert", sheet, never, BulkOptions(), ui)  # type: ignore[arg-type]
    assert _kinds(ui) == ["Validated"]


def test_a_stop_is_told_and_reported_as_data(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = customers_sheet(tmp_path / "c.csv", us_numbers(404, 5))
    stop = StopSignal()
    stop.request()  # before the first request: nothing starts
    ui = talk.RecordingUi()
    report = run_sheet("customers upsert", sheet, _conn(emu), BulkOptions(rate=0, stop=stop), ui)
    assert report.stop == talk.Stop(talk.StopKind.INTERRUPTED, "Stop")
    (stopping,) = ui.of(talk.Stopping)
    assert stopping.cause == "Stop" and stopping.warning
    assert report.exit_code == 130 and report.summary.counts.get("created", 0) < 5


def test_a_plan_is_told_with_its_facts(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = messages_sheet(tmp_path / "m.csv", us_numbers(405, 3))
    ui = talk.RecordingUi()
    run_sheet("messages send", sheet, _conn(emu), BulkOptions(rate=2, dry_run=True), ui)
    (planned,) = ui.of(talk.Planned)
    assert planned.facts["recipients"] == 3 and planned.facts["seconds"] == 1.5
    assert planned.facts["guarded"] == 0 and planned.facts["stopped"] is False
    assert ui.questions == [] and not outbound(emu)


# -- the Python API ----------------------------------------------------------------------------


def test_validate_a_list_of_dicts_as_validate_json_does(tmp_path: Path) -> None:
    rows = [
        {"phone_number": "+13105550101", "first_name": "Ana"},
        {"phone_number": "not a phone", "first_name": "Bo"},
    ]
    checked = sb.validate(rows, kind="customers", folder=tmp_path)
    assert (checked.rows, checked.valid_rows, checked.invalid_rows) == (2, 1, 1)
    assert not checked.ready
    (issue,) = [i for i in checked.issues if i["severity"] == "error"]
    assert issue["row"] == 3 and issue["column"] == "phone_number"
    assert checked.summary["issues_by_code"] == {issue["code"]: 1}
    with pytest.raises(UsageError, match="kind 'customer'"):
        sb.validate(rows, kind="customer", folder=tmp_path)


def test_run_a_dataframe_against_the_emulator(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "phone_number": ["+13105550101", "(310) 555-0102"],
            "first_name": ["Ana", None],
            "zip_code": [2134.0, float("nan")],  # a float column pandas made: kept as typed
        }
    )
    report = sb.run("customers upsert", frame, emulate=True, name="week1", folder=tmp_path)
    assert report.ok and report.counts == {"created": 2}
    assert report.results_path == tmp_path / "week1.upsert.results.csv"
    table = report.results.to_pandas()
    assert list(table.columns[:3]) == ["phone_number", "first_name", "zip_code"]
    assert table["sonar__status"].tolist() == ["created", "created"]
    assert table["zip_code"].tolist() == ["2134", ""] and table["first_name"].tolist()[1] == ""


def test_a_script_sends_only_with_yes_and_never_twice(tmp_path: Path) -> None:
    rows = [{"to": "+13105550101", "text": "Hello {{first_name}}", "first_name": "Ana"}]
    with pytest.raises(Aborted, match="pass yes=True"):
        sb.run("messages send", rows, emulate=True, folder=tmp_path)
    sent = sb.run("messages send", rows, emulate=True, yes=True, folder=tmp_path)
    assert sent.counts == {"queued": 1}
    assert sent.results.column("sonar__status").to_pylist() == ["queued"]
    again = sb.run("messages send", rows, emulate=True, yes=True, folder=tmp_path, name="copy")
    assert again.results.column("sonar__status").to_pylist() == ["skipped"]
    assert any(isinstance(n, talk.Starting) for n in again.notices)


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="operation 'customer upsert'"):
        sb.run("customer upsert", [], emulate=True)
    with pytest.raises(UsageError, match="a file path, a pandas DataFrame or a list of dicts"):
        sb.run("customers upsert", 42, emulate=True)
    with pytest.raises(UsageError, match="unknown option 'txt'"):
        sb.run("messages send", [{"to": "+13105550101"}], emulate=True, txt="hi", folder=tmp_path)
    with pytest.raises(UsageError, match="name"):
        sb.run("customers upsert", [{"phone_number": "+13105550101"}], name="../x")


def test_the_readme_s_python_example_runs_as_shown(tmp_path: Path) -> None:
    """The README's example, run as a script in a fresh folder: what its comments say it
    prints is what it prints."""
    import re
    import subprocess
    import sys

    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "2 0" and lines[1] == "0 {'created': 2}"
    assert "sonar__status" in lines[2] and lines[3].split()[-1] == "created"
    assert (tmp_path / "data" / "sonar-bulk" / "python" / "data.upsert.results.csv").is_file()


def test_data_never_overwrites_a_file_the_user_has(tmp_path: Path) -> None:
    """A list of dicts is written as <name>.csv: over its own earlier copy (edited data run
    again), never over the user's file of that name, nor over our copy once edited by hand."""
    mine = tmp_path / "data.csv"
    mine.write_text("phone_number\n+13105550199\n", encoding="utf-8")
    rows = [{"phone_number": "+13105550101"}]
    with pytest.raises(UsageError, match="sonar-bulk did not write it"):
        sb.validate(rows, kind="customers", folder=tmp_path)
    assert mine.read_text(encoding="utf-8") == "phone_number\n+13105550199\n"
    first = sb.validate(rows, kind="customers", folder=tmp_path, name="week")
    again = sb.validate(
        rows + [{"phone_number": "x"}], kind="customers", folder=tmp_path, name="week"
    )
    assert (first.rows, again.rows) == (1, 2)
    (tmp_path / "week.csv").write_text("phone_number\n+13105550177\n", encoding="utf-8")
    with pytest.raises(UsageError, match="edited since"):
        sb.validate(rows, kind="customers", folder=tmp_path, name="week")
    assert sb.validate(rows, kind="customers", folder=tmp_path, name="week", force=True).rows == 1


def test_found_by_a_new_user(tmp_path: Path) -> None:
    """A typo is told its right name, a number that isn't one is a usage error, the API is in
    dir(sb), and no object of a run shows the token."""
    rows = [{"phone_number": "+13105550101"}]
    with pytest.raises(UsageError, match="did you mean 'dry_run'"):
        sb.run("customers upsert", rows, emulate=True, dryrun=True, folder=tmp_path)
    with pytest.raises(UsageError, match="rate='fast': a number from 0"):
        sb.run("customers upsert", rows, emulate=True, rate="fast", folder=tmp_path)  # type: ignore[arg-type]
    assert {"run", "validate", "OPERATION_NAMES"} <= set(dir(sb)) and "Any" not in dir(sb)
    assert "messages send" in sb.OPERATION_NAMES
    conn = Connection("http://127.0.0.1:9/api/v1", "tok-SECRET-123", "pk-SECRET-456")
    assert "SECRET" not in repr(conn)
    report = sb.run("customers upsert", rows, emulate=True, folder=tmp_path)
    assert report.journal == tmp_path / "data.upsert.journal.sqlite"
    shown = repr(report.notices) + repr(report)
    assert "token=" not in shown and "emulator-token" not in shown.lower()


# -- found by an attack ------------------------------------------------------------------------


def test_one_name_is_one_run_at_a_time(tmp_path: Path) -> None:
    """Two runs of data under one name at once would write and read each other's sheet: the
    second is refused while the first holds it; another name runs."""
    from sonar_bulk.owned import hold

    rows = [{"phone_number": "+13105550101"}]
    held = hold(tmp_path / "data.csv", "busy")
    try:
        with pytest.raises(UsageError, match="another sonar_bulk.run is using this name"):
            sb.run("customers upsert", rows, emulate=True, folder=tmp_path)
        other = sb.run("customers upsert", rows, emulate=True, folder=tmp_path, name="other")
        assert other.counts == {"created": 1}
    finally:
        held.close()
    assert not (tmp_path / "data.csv").exists()


def test_a_run_from_async_code_or_a_notebook(tmp_path: Path) -> None:
    """In a running event loop (Jupyter, async code) a run makes its loop in another thread."""
    import asyncio

    async def inside() -> sb.RunReport:
        rows = [{"phone_number": "+13105550101"}]
        return sb.run("customers upsert", rows, emulate=True, folder=tmp_path)

    assert asyncio.run(inside()).counts == {"created": 1}


def test_ctrl_c_stops_the_script_too(tmp_path: Path) -> None:
    """A Ctrl-C during sb.run stops the script (a loop of runs does not go on to the next),
    after the run has written its results and journal."""
    import signal
    import subprocess
    import sys

    from .emulator_helpers import Lines

    script = f"""
import sonar_bulk as sb
rows = [{{"phone_number": f"+1212410{{i:04d}}"}} for i in range(200)]
try:
    for n in range(3):
        print("run", n, flush=True)
        sb.run("customers upsert", rows, emulate=True, folder={str(tmp_path)!r}, name=f"w{{n}}",
               rate=20)
except KeyboardInterrupt as exc:
    print("stopped:", exc, flush=True)
    raise SystemExit(130)
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    lines = Lines(proc.stdout)
    try:
        assert lines.next(60) == "run 0\n"
        from .emulator_helpers import wait_for

        wait_for(lambda: _journal_rows(tmp_path / "w0.upsert.journal.sqlite") >= 5, 60)  # mid-run
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = lines.rest()
    proc.stdout.close()
    assert rest.startswith("stopped: customers upsert stopped (Ctrl-C)") and "run 1" not in rest
    assert (tmp_path / "w0.upsert.results.csv").is_file() and not (tmp_path / "w1.csv").exists()


def _journal_rows(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            # a run appends to the log; rows are brought up to date at its end
            sql = "SELECT (SELECT count(*) FROM rows) + (SELECT count(*) FROM log)"
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_shopify_s_apostrophes_are_not_part_of_phones_and_zips(tmp_path: Path) -> None:
    """Shopify writes '+14155550123 and '02134 so Excel keeps them; the apostrophe is not sent
    (issue 18: a leading apostrophe is stripped)."""
    import json
    import sqlite3

    rows = [{"Phone": "'+14155550123", "Zip": "'02134", "First Name": "Ana"}]
    checked = sb.validate(rows, kind="customers", folder=tmp_path)
    assert checked.issues == [] and checked.valid_rows == 1
    assert checked.validation.normalized["zip_code"].to_pylist() == ["02134"]
    report = sb.run("customers upsert", rows, emulate=True, folder=tmp_path)
    assert report.counts == {"created": 1}
    # what the emulator stored, as Sonar would
    from sonar_bulk.connection import emulator_state_path

    db = sqlite3.connect(emulator_state_path())
    try:
        query = "SELECT value FROM kv WHERE collection = 'customers'"
        (stored,) = [json.loads(r[0]) for r in db.execute(query)]
    finally:
        db.close()
    assert stored["phone_number"] == "+14155550123" and stored["zip_code"] == "02134"


def test_one_row_reads_as_one_row(tmp_path: Path) -> None:
    """Plurals read right (issue 18): one bad row of one is "1 of 1 row has errors"."""
    from sonar_bulk.errors import InvalidRows

    with pytest.raises(InvalidRows, match=r"^1 of 1 row has errors; nothing was sent\. Fix it "):
        sb.run("customers upsert", [{"phone_number": "nope"}], emulate=True, folder=tmp_path)
