"""The files a run writes (issue 18, points 3 and 8): named by operation, in --out-dir when
asked, lock files gone at the end, a file the user edited never replaced, every CSV inert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.errors import UsageError
from sonar_bulk.owned import hold
from sonar_bulk.run_files import journal_path_for

from .test_bulk_cli import (
    CUSTOMERS,
    MESSAGES,
    bulk,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    form,
    messages_sheet,
    posts,
    read_dicts,
    read_rows,
    server,  # noqa: F401 (a fixture)
    statuses,
    us_numbers,
    write_sheet,
)

# -- lock files -----------------------------------------------------------------------------------


def test_a_lock_file_is_removed_when_let_go(tmp_path: Path) -> None:
    held = hold(tmp_path / "j.sqlite", "busy")
    assert (tmp_path / "j.sqlite.lock").exists()
    with pytest.raises(UsageError, match="busy"):
        hold(tmp_path / "j.sqlite", "busy")
    held.close()
    held.close()  # twice is once
    assert list(tmp_path.iterdir()) == []
    with hold(tmp_path / "j.sqlite", "busy"):  # free again, and a context manager
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_stale_lock_file_is_taken(tmp_path: Path) -> None:
    """A lock file left by a process killed with -9 holds no lock: the next run takes it."""
    (tmp_path / "j.sqlite.lock").write_text("")
    with hold(tmp_path / "j.sqlite", "busy"):
        with pytest.raises(UsageError):
            hold(tmp_path / "j.sqlite", "busy")
    assert not (tmp_path / "j.sqlite.lock").exists()


def _race(target: Path, marker: Path, rounds: int) -> int:
    """Take and let go of the lock on ``target`` ``rounds`` times; inside, make ``marker``
    (O_EXCL: fails if another holder is inside too) and remove it. Exit 3 on an overlap."""
    import os

    taken = 0
    for _ in range(rounds):
        try:
            held = hold(target, "busy")
        except UsageError:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            os._exit(3)
        os.close(fd)
        os.unlink(marker)
        taken += 1
        held.close()
    return taken


def _racer(target: Path, marker: Path, rounds: int) -> None:
    import os

    os._exit(0 if _race(target, marker, rounds) else 4)


def test_holders_racing_never_hold_at_once(tmp_path: Path) -> None:
    """Processes take and let go of one lock as fast as they can: never two inside at once,
    however the removal of the lock file interleaves with another's open; each got in; no
    lock file is left."""
    import multiprocessing

    target, marker = tmp_path / "sheet.journal.sqlite", tmp_path / "inside"
    context = multiprocessing.get_context("fork")
    racers = [context.Process(target=_racer, args=(target, marker, 3000)) for _ in range(3)]
    for r in racers:
        r.start()
    for r in racers:
        r.join(60)
    assert [r.exitcode for r in racers] == [0, 0, 0]
    assert list(tmp_path.iterdir()) == []


def test_a_taker_of_a_removed_lock_file_tries_again(tmp_path: Path) -> None:
    """The race itself, made to happen: B opens the lock file, A removes it and lets go, C
    takes a new one; B, once locked, sees its file is no longer the one named and opens the
    name again, where C holds it: refused."""
    import fcntl
    import os

    name = str(tmp_path / "j.sqlite.lock")
    a = hold(tmp_path / "j.sqlite", "busy")
    b_file = open(name, "a")  # noqa: SIM115 - B has opened the file A holds
    a.close()
    c = hold(tmp_path / "j.sqlite", "busy")
    fcntl.flock(b_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # B's lock: on a removed file
    assert os.fstat(b_file.fileno()).st_ino != os.stat(name).st_ino
    with pytest.raises(UsageError):
        hold(tmp_path / "j.sqlite", "busy")  # what hold() does for B next: C has the name
    b_file.close()
    c.close()
    assert not Path(name).exists()


# -- named by operation ---------------------------------------------------------------------------


def test_every_operation_has_a_short_unique_file_name() -> None:
    import re

    from sonar_bulk.plan import OPERATIONS

    shorts = [op.short for op in OPERATIONS.values()]
    assert len(set(shorts)) == len(shorts) == len(OPERATIONS)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)?", s) for s in shorts), shorts
    # the docs name each one
    from .conftest import ROOT

    page = (ROOT / "sonar_bulk" / "docs" / "bulk-runs.md").read_text(encoding="utf-8")
    assert all(f"`{s}`" in page for s in shorts)


def test_a_later_command_never_replaces_an_earlier_ones_files(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = customers_sheet(tmp_path / "list.csv", us_numbers(420, 3))
    upsert = bulk(emu, "customers", "upsert", str(sheet))
    assert upsert.exit_code == 0, upsert.output
    get = bulk(emu, "customers", "get", str(sheet), "-o", str(tmp_path / "backup.csv"))
    assert get.exit_code == 0, get.output
    assert statuses(tmp_path / "list.upsert.results.csv") == ["created"] * 3
    assert statuses(tmp_path / "list.get.results.csv") == ["ok"] * 3
    # the same command again: its own journal, and it says where its results went
    again = bulk(emu, "customers", "upsert", str(sheet))
    assert again.exit_code == 0, again.output
    assert f"journal: {tmp_path / 'list.upsert.journal.sqlite'}" in again.stderr
    assert f"results: {tmp_path / 'list.upsert.results.csv'}" in again.stderr
    assert statuses(tmp_path / "list.upsert.results.csv") == ["updated"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backup.csv",
        "list.csv",
        "list.get.journal.sqlite",
        "list.get.results.csv",
        "list.upsert.journal.sqlite",
        "list.upsert.results.csv",
    ]  # no lock file left


def test_out_dir_keeps_the_inputs_folder_clean(emu: EmulatorServer, tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "runs" / "march"
    inbox.mkdir()
    sheet = messages_sheet(inbox / "promo.csv", us_numbers(421, 3))
    before = sorted(inbox.iterdir())
    planned = bulk(emu, "messages", "send", str(sheet), "--dry-run", "--out-dir", str(out))
    assert planned.exit_code == 0, planned.output
    sent = bulk(emu, "messages", "send", str(sheet), "--yes", "--out-dir", str(out), "--json")
    assert sent.exit_code == 0, sent.output
    assert sorted(inbox.iterdir()) == before  # nothing new: no results, journal or lock
    assert sorted(p.name for p in out.iterdir()) == [
        "promo.send.journal.sqlite",
        "promo.send.plan.csv",
        "promo.send.results.csv",
    ]
    assert statuses(out / "promo.send.results.csv") == ["queued"] * 3
    summary = json.loads(sent.stdout)
    assert summary["results"] == str(out / "promo.send.results.csv")
    assert summary["journal"] == str(out / "promo.send.journal.sqlite")
    # the journal in --out-dir is found again: nobody is texted twice
    again = bulk(emu, "messages", "send", str(sheet), "--yes", "--out-dir", str(out))
    assert again.exit_code == 0, again.output
    assert "not sent again" in read_dicts(out / "promo.send.results.csv")[0]["sonar__error"]
    assert len(posts(emu, MESSAGES)) == 3
    # a file where the folder should be
    (tmp_path / "afile").write_text("x")
    refused = bulk(emu, "messages", "send", str(sheet), "--out-dir", str(tmp_path / "afile"))
    assert refused.exit_code == 2 and "is a file" in refused.stderr


def test_a_journal_of_the_old_name_is_still_found(emu: EmulatorServer, tmp_path: Path) -> None:
    """A journal an older sonar-bulk named <stem>.journal.sqlite is this operation's while it
    holds runs of it: its sends are known, and the resume command names it."""
    sheet = messages_sheet(tmp_path / "promo.csv", us_numbers(422, 3))
    old = tmp_path / "promo.journal.sqlite"
    first = bulk(emu, "messages", "send", str(sheet), "--yes", "--journal", str(old))
    assert first.exit_code == 0, first.output
    again = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert again.exit_code == 0, again.output
    assert f"journal: {old}" in again.stderr
    assert not (tmp_path / "promo.send.journal.sqlite").exists()
    rows = read_dicts(tmp_path / "promo.send.results.csv")
    assert all("the journal shows it queued" in r["sonar__error"] for r in rows), rows
    assert len(posts(emu, MESSAGES)) == 3
    # another operation on the same sheet starts its own journal
    assert journal_path_for(sheet, "messages tag") == tmp_path / "promo.tag.journal.sqlite"
    assert journal_path_for(sheet, "messages send", tmp_path / "out") == old


def test_the_python_api_takes_an_out_dir(tmp_path: Path) -> None:
    import sonar_bulk as sb

    sheet = customers_sheet(tmp_path / "list.csv", us_numbers(423, 2))
    report = sb.run("customers upsert", sheet, emulate=True, out_dir=tmp_path / "out")
    assert report.counts == {"created": 2}
    assert report.results_path == tmp_path / "out" / "list.upsert.results.csv"
    assert report.journal == tmp_path / "out" / "list.upsert.journal.sqlite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.csv", "out"]


# -- your files are yours -------------------------------------------------------------------------


def test_failed_rows_fixed_in_place_are_never_written_over(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    good = us_numbers(424, 2)
    sheet = write_sheet(
        tmp_path / "list.csv",
        ["phone_number", "first_name"],
        [[good[0], "Ana"], ["555", "Bo"], [good[1], "Cy"]],
    )
    first = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert first.exit_code == 1, first.output
    failed = tmp_path / "list.upsert.failed.csv"
    assert [r["first_name"] for r in read_dicts(failed)] == ["Bo"]
    # the user fixes the row in place
    fixed = failed.read_text(encoding="utf-8-sig").replace("555,", "(212) 424-0099,")
    failed.write_text(fixed, encoding="utf-8-sig")
    mine = failed.read_bytes()
    again = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert again.exit_code == 1, again.output
    assert failed.read_bytes() == mine  # never written over
    second = tmp_path / "list.upsert.failed-2.csv"
    assert [r["first_name"] for r in read_dicts(second)] == ["Bo"]
    assert f"{failed} was changed since sonar-bulk wrote it" in again.stderr
    assert f"failed rows are in {second}" in again.stderr
    # its own -2 is its own to write again; the user's file still stands
    third = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid", "--json")
    assert json.loads(third.stdout)["failed"] == str(second)
    assert not (tmp_path / "list.upsert.failed-3.csv").exists()
    # the fixed file run: its own files, the fix itself untouched
    fed = bulk(emu, "customers", "upsert", str(failed))
    assert fed.exit_code == 0, fed.output
    assert statuses(tmp_path / "list.upsert.failed.upsert.results.csv") == ["created"]
    assert failed.read_bytes() == mine
    # the sheet fixed too: no failed rows; the stale -2 goes, the user's file stays
    sheet.write_text(sheet.read_text().replace("555,", "(212) 424-0099,"))
    clean = bulk(emu, "customers", "upsert", str(sheet))
    assert clean.exit_code == 0, clean.output
    assert not second.exists() and failed.read_bytes() == mine
    assert "this run has no failed rows" in clean.stderr
    assert not list(tmp_path.glob("*.lock"))


def test_results_edited_by_hand_are_kept(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = customers_sheet(tmp_path / "list.csv", us_numbers(425, 2))
    assert bulk(emu, "customers", "upsert", str(sheet)).exit_code == 0
    results = tmp_path / "list.upsert.results.csv"
    with results.open("a", encoding="utf-8") as f:
        f.write("my note,,,,\r\n")
    mine = results.read_bytes()
    again = bulk(emu, "customers", "upsert", str(sheet))
    assert again.exit_code == 0, again.output
    assert results.read_bytes() == mine
    assert statuses(tmp_path / "list.upsert.results-2.csv") == ["updated"] * 2
    assert f"results: {tmp_path / 'list.upsert.results-2.csv'}" in again.stderr
    assert "was changed since sonar-bulk wrote it" in again.stderr
    # named with --results, an edited file is replaced only with --force
    named = bulk(emu, "customers", "upsert", str(sheet), "--results", str(results))
    assert named.exit_code == 2 and "was edited since sonar-bulk wrote it" in named.stderr
    assert results.read_bytes() == mine
    forced = bulk(emu, "customers", "upsert", str(sheet), "--results", str(results), "--force")
    assert forced.exit_code == 0, forced.output
    assert statuses(results) == ["updated"] * 2


# -- every output is inert ------------------------------------------------------------------------

LINK = '=HYPERLINK("http://x","y")'


def test_a_formula_cell_is_inert_in_every_csv_and_comes_back_as_typed(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """=HYPERLINK(...) in a customer's name: quoted in the results, the failed rows and the
    customers backup (a spreadsheet shows it as text); fed back in, the name is sent as typed,
    never with the quote."""
    from sonar_bulk.sheets import read_sheet

    phones = us_numbers(426, 2)
    sheet = write_sheet(
        tmp_path / "list.csv",
        ["phone_number", "first_name", "last_name"],
        [[phones[0], LINK, "@ana"], ["555", LINK, "+vip"]],
    )
    first = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert first.exit_code == 1, first.output
    sent = [form(e) for e in posts(emu, CUSTOMERS)]
    assert [(f["first_name"], f["last_name"]) for f in sent] == [(LINK, "@ana")]
    for written in ("list.upsert.results.csv", "list.upsert.failed.csv"):
        rows = read_rows(tmp_path / written)
        assert all(not cell.startswith(("=", "@")) for row in rows for cell in row), written
        assert rows[1][1:3] == ["'" + LINK, "'@ana" if "results" in written else "'+vip"]
    # the failed row fixed in place and fed back: sent as typed
    failed = tmp_path / "list.upsert.failed.csv"
    failed.write_text(failed.read_text(encoding="utf-8-sig").replace("555,", f"{phones[1]},"))
    assert read_sheet(failed).column(1).to_pylist() == [LINK]
    fed = bulk(emu, "customers", "upsert", str(failed))
    assert fed.exit_code == 0, fed.output
    last = form(posts(emu, CUSTOMERS)[-1])
    assert (last["first_name"], last["last_name"]) == (LINK, "+vip")
    # what Sonar holds, backed up: inert, and read back as it was
    backup = tmp_path / "backup.csv"
    got = bulk(emu, "customers", "get", str(sheet), "--skip-invalid", "-o", str(backup))
    assert got.exit_code == 1, got.output  # the invalid key row
    rows = read_rows(backup)
    assert rows[0][-1] == "sonar__row" and rows[1][-1] == "2"
    assert rows[1][1:3] == ["'" + LINK, "'@ana"]
    back = read_sheet(backup)
    assert back.column(1).to_pylist() == [LINK] and back.column(2).to_pylist() == ["@ana"]
    restored = bulk(emu, "customers", "upsert", str(backup))
    assert restored.exit_code == 0, restored.output
    again = form(posts(emu, CUSTOMERS)[-1])
    assert (again["first_name"], again["last_name"]) == (LINK, "@ana")


def test_the_page_words_a_kept_file() -> None:
    from sonar_bulk.engine.talk import OutputKept
    from sonar_bulk.web.session import _web_text

    text = _web_text(
        OutputKept("failed rows", Path("d/x.upsert.failed.csv"), Path("d/x.upsert.failed-2.csv"))
    )
    assert text == (
        "x.upsert.failed.csv was changed since sonar-bulk wrote it: kept as it is; this run's "
        "failed rows: x.upsert.failed-2.csv"
    )


def test_a_cell_the_user_quoted_comes_back_with_its_quote(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by an attack: a cell the user typed as '=x or '@ana came back from a failed rows
    file as =x and @ana (the quote taken for the tool's): it is written with one more quote,
    and fed back it is sent exactly as the original sheet sends it."""
    phones = us_numbers(427, 1)
    sheet = write_sheet(
        tmp_path / "q.csv",
        ["phone_number", "first_name", "last_name", "email"],
        [["555", "'=x", "'@ana", "bad"]],
    )
    first = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert first.exit_code == 1, first.output
    failed = tmp_path / "q.upsert.failed.csv"
    assert read_rows(failed)[1][1:3] == ["''=x", "''@ana"]
    fixed = failed.read_text(encoding="utf-8-sig").replace("555,", f"{phones[0]},")
    failed.write_text(fixed.replace(",bad,", ",a@example.com,"))
    fed = bulk(emu, "customers", "upsert", str(failed))
    assert fed.exit_code == 0, fed.output
    sent = form(posts(emu, CUSTOMERS)[-1])
    assert (sent["first_name"], sent["last_name"]) == ("'=x", "'@ana")


def test_cells_beyond_the_header_stay_in_the_results_and_the_failed_rows(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by an attack: a cell beyond the last header (a row.extra_cells error: "would be
    lost") was dropped from the failed rows, and the row fed back then passed. It is kept in
    a sonar__extra_N column of the results and the failed rows, and fed back the row is
    still to be fixed."""
    phones = us_numbers(428, 2)
    sheet = tmp_path / "e.csv"
    sheet.write_text(f"phone_number,first_name\n{phones[0]},Ann,EXTRA NOTE\n{phones[1]},Bo\n")
    first = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert first.exit_code == 1, first.output
    results = read_rows(tmp_path / "e.upsert.results.csv")
    assert results[0][:3] == ["phone_number", "first_name", "sonar__extra_1"]
    assert [r[2] for r in results[1:]] == ["EXTRA NOTE", ""]
    failed = read_rows(tmp_path / "e.upsert.failed.csv")
    assert failed[0][:3] == ["phone_number", "first_name", "sonar__extra_1"]
    assert failed[1][:3] == [phones[0], "Ann", "EXTRA NOTE"]
    again = CliRunner().invoke(
        cli, ["validate", str(tmp_path / "e.upsert.failed.csv"), "--kind", "customers"]
    )
    assert again.exit_code == 1, again.output
    assert "row.extra_cells" in again.output


def test_two_sheets_of_one_name_never_share_an_out_dir(emu: EmulatorServer, tmp_path: Path) -> None:
    """Found by an attack: a/x.csv and b/x.csv run into one --out-dir shared a journal, and
    the second's results replaced the first's. The second is refused, naming the first."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = customers_sheet(tmp_path / "a" / "x.csv", us_numbers(429, 2))
    second = customers_sheet(tmp_path / "b" / "x.csv", us_numbers(430, 2))
    out = tmp_path / "out"
    done = bulk(emu, "customers", "upsert", str(first), "--out-dir", str(out))
    assert done.exit_code == 0, done.output
    kept = (out / "x.upsert.results.csv").read_bytes()
    refused = bulk(emu, "customers", "upsert", str(second), "--out-dir", str(out))
    assert refused.exit_code == 2, refused.output
    assert "is the journal of another sheet of the same name" in refused.output
    assert str(first) in refused.output
    assert (out / "x.upsert.results.csv").read_bytes() == kept
    again = bulk(emu, "customers", "upsert", str(first), "--out-dir", str(out))
    assert again.exit_code == 0, again.output  # the same sheet again: its own journal


def test_the_same_name_check_does_not_depend_on_the_folder_a_run_starts_in(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an attack: the journal named its sheet as typed (x.csv), so the check read it
    against whatever folder the next run started in: another sheet got through from one
    folder, and the same sheet was refused from another. The journal names it absolutely."""
    for name in ("d1", "d2"):
        (tmp_path / name).mkdir()
    first = customers_sheet(tmp_path / "d1" / "x.csv", us_numbers(431, 1))
    customers_sheet(tmp_path / "d2" / "x.csv", us_numbers(432, 1))
    monkeypatch.chdir(tmp_path / "d1")
    done = bulk(emu, "customers", "upsert", "x.csv", "--out-dir", "../out")
    assert done.exit_code == 0, done.output
    monkeypatch.chdir(tmp_path)
    other = bulk(emu, "customers", "upsert", "d2/x.csv", "--out-dir", "out")
    assert other.exit_code == 2, other.output
    assert "is the journal of another sheet of the same name" in other.output
    monkeypatch.chdir(tmp_path / "d2")  # its own x.csv is here; the run names d1's
    same = bulk(emu, "customers", "upsert", str(first), "--out-dir", "../out")
    assert same.exit_code == 0, same.output


def test_cells_beyond_the_header_never_take_a_name_the_sheet_has(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Found by an attack: a sheet with its own sonar__extra_2 (a failed rows file fed back)
    and new cells beyond it got a second sonar__extra_2 column."""
    phones = us_numbers(433, 2)
    sheet = tmp_path / "s.csv"
    sheet.write_text(
        f"phone_number,first_name,sonar__extra_2\n{phones[0]},A,k\n{phones[1]},B,m,z1,z2\n"
    )
    bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    header = read_rows(tmp_path / "s.upsert.results.csv")[0]
    assert header[:5] == [
        "phone_number",
        "first_name",
        "sonar__extra_2",
        "sonar__extra_3",
        "sonar__extra_4",
    ]
    assert len(set(header)) == len(header)
