"""Unknown sends settled with evidence: the pure matcher, the journal learning it, and end to
end over real sockets: ``sonar-bulk --emulate messages send`` against an emulator that
answers 500 to some sends (after sending some of them), then ``--resume --retry-unknown``,
and ``sonar-bulk settle`` on a results file and a store."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.emulator import server as emulator_server
from sonar_bulk.engine.journal import Journal
from sonar_bulk.events.settle import Outbound, Settled, Unknown, match, normalize_text
from sonar_bulk.events.store import EventStore, Incoming

PHONES = [f"+1310555{n:04d}" for n in range(701, 707)]
T0 = 1_800_000_000.0


# -- the matcher ------------------------------------------------------------------------------


def event(uuid: str, at: float, phone: str, text: str = "", **kw: str) -> Outbound:
    return Outbound(uuid, at, phone, text, **kw)


def test_normalize_text_as_a_spreadsheet_or_a_csv_writer_may_have_changed_it() -> None:
    assert normalize_text("Cafe\u0301\r\nok\u00a0 ") == "Café\nok"
    assert normalize_text("'=1+1") == "=1+1"  # the formula-neutralizing quote
    assert normalize_text("  Hi\rthere ") == "Hi\nthere"
    assert normalize_text("Hi") != normalize_text("Hi!")


def test_a_row_with_an_external_id_matches_its_event_only() -> None:
    row = Unknown(0, PHONES[0], "Hi", external_id="ID-1", since=T0)
    other = event("e-other", T0 + 1, PHONES[0], "Hi", external_id="ID-2")
    mine = event("e-mine", T0 - 50, PHONES[0], "not the same text", external_id="ID-1")
    found = match([row], [other, mine])
    assert found == {0: Settled(0, mine)}  # by id, whenever it came and whatever its text
    assert found[0].proof == "outbound_message event e-mine at 2027-01-15T07:59:10.000Z"


def test_phone_and_normalized_text_within_the_window() -> None:
    rows = [
        Unknown(0, PHONES[0], "Hi Ana,\r\nyour order shipped", since=T0),
        Unknown(1, PHONES[1], "Hi Ben", since=T0),
        Unknown(2, PHONES[2], "Hi Cy", since=T0),
    ]
    events = [
        event("a", T0 + 2, PHONES[0], "'Hi Ana,\nyour order shipped\u00a0"),
        event("b", T0 + 2, PHONES[1], "Hi Ben, again"),  # another text
        event("c", T0 + 2, PHONES[0], "Hi Cy"),  # another phone
    ]
    assert sorted(match(rows, events)) == [0]


def test_each_event_settles_one_row() -> None:
    rows = [Unknown(i, PHONES[0], "Same text", since=T0) for i in range(2)]
    first = event("one", T0 + 1, PHONES[0], "Same text")
    assert match(rows, [first]) == {0: Settled(0, first)}
    second = event("two", T0 + 3, PHONES[0], "Same text")
    assert match(rows, [second, first]) == {0: Settled(0, first), 1: Settled(1, second)}


def test_events_outside_the_window_prove_nothing() -> None:
    row = Unknown(0, PHONES[0], "Hi", since=T0)
    before = event("before", T0 - 0.5, PHONES[0], "Hi")
    after = event("after", T0 + 100, PHONES[0], "Hi")
    assert match([row], [before, after], until=T0 + 60) == {}
    assert match([row], [before, after])[0].event.uuid == "after"  # no end: it counts


def test_an_event_of_a_send_sonar_answered_settles_no_other_row() -> None:
    row = Unknown(1, PHONES[0], "Hi", since=T0)
    answered = event("x", T0 + 1, PHONES[0], "Hi", external_id="QUEUED-ROW-ID")
    assert match([row], [answered], answered_ids={"QUEUED-ROW-ID"}) == {}
    assert match([row], [answered]) == {1: Settled(1, answered)}


def test_a_campaign_send_matches_phone_and_campaign() -> None:
    row = Unknown(0, PHONES[0], campaign="fall_sale", since=T0)
    other = event("o", T0 + 1, PHONES[0], "Sale!", campaign="spring")
    mine = event("m", T0 + 2, PHONES[0], "Sale!", campaign="fall_sale")
    assert match([row], [other]) == {}
    assert match([row], [other, mine]) == {0: Settled(0, mine)}


def test_nothing_to_compare_and_no_event_settle_nothing() -> None:
    assert match([Unknown(0, PHONES[0], since=T0)], [event("e", T0 + 1, PHONES[0], "")]) == {}
    assert match([Unknown(0, PHONES[0], "Hi", since=T0)], []) == {}


def test_the_journal_learns_settled_rows_of_one_run_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    common: dict[str, Any] = {"http_status": 500, "attempts": 1, "outputs": {}, "urgent": True}
    first = journal.start_run("messages send", "emu", tmp_path / "m.csv", "x", "")
    journal.outcome("k-old", 0, status="unknown", error="500", finished_at="t0", **common)
    second = journal.start_run("messages send", "emu", tmp_path / "m.csv", "x", "")
    journal.outcome("k0", 0, status="unknown", error="500", finished_at="t1", **common)
    journal.outcome("k1", 1, status="queued", error="", finished_at="t1", **common)
    changed = journal.settle(second, {0: ("queued", "settled by e1"), 1: ("queued", "e2")})
    entries = journal.lookup(["k-old", "k0", "k1"])
    journal.close()
    assert changed == 1 and first != second
    assert (entries["k0"].status, entries["k0"].error) == ("queued", "settled by e1")
    assert entries["k-old"].status == "unknown"  # another run's row 0
    assert entries["k1"].error is None  # was not unknown: untouched


# -- end to end ---------------------------------------------------------------------------------


class Recorder:
    """What each emulator --emulate started held when its command ended."""

    faults: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Recorder]]:
    """``--emulate`` starts an emulator that plays ``Recorder.faults`` on /messages (scripted
    in order) and records its state when the command ends."""
    base = emulator_server.EmulatorServer

    class Scripted(base):  # type: ignore[misc, valid-type]
        def __enter__(self) -> Any:
            entered = super().__enter__()
            for fault in Recorder.faults:
                self.admin("POST", "/faults", {**fault, "path": "/api/v1/messages"})
            return entered

        def __exit__(self, *exc: Any) -> Any:
            Recorder.states.append(self.admin("GET", "/state"))
            return super().__exit__(*exc)

    Recorder.faults, Recorder.states = [], []
    monkeypatch.setattr(emulator_server, "EmulatorServer", Scripted)
    yield Recorder


def write_sheet(tmp_path: Path) -> Path:
    sheet = tmp_path / "messages.csv"
    sheet.write_text(
        "to,text,first_name\n"
        + "".join(
            f"{p},Hi {{{{first_name}}}}\u00a0- your code,N{n}\n" for n, p in enumerate(PHONES)
        ),
        encoding="utf-8",
    )
    return sheet


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def send(sheet: Path, *more: str) -> Any:
    argv = ["--emulate", "messages", "send", str(sheet), "--yes", "--rate", "0"]
    return CliRunner().invoke(cli, [*argv, "--concurrency", "1", *more])


FAULTS = [
    {"fault": "500_after", "count": 2},  # rows 0 and 1: sent, answered 500
    {"fault": "500_before", "count": 1},  # row 2: not sent, answered 500
]


def test_an_emulated_send_settles_itself_and_a_resume_sends_only_the_rest(
    faulty: type[Recorder], tmp_path: Path
) -> None:
    sheet = write_sheet(tmp_path)
    faulty.faults = FAULTS
    started = time.monotonic()
    first = send(sheet)
    assert time.monotonic() - started < 10  # the window ended once nothing more could come
    assert first.exit_code == 1, first.output  # one unknown send remains
    rows = read_rows(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 2 + ["unknown"] + ["queued"] * 3
    assert all(r["sonar__settled_by"].startswith("outbound_message event ") for r in rows[:2])
    assert [r["sonar__settled_by"] for r in rows[2:]] == [""] * 4
    assert "settled 2 unknown sends" in first.stderr
    assert "1 unknown send remains" in first.stderr and "sonar-bulk settle" in first.stderr
    journal = Journal(tmp_path / "messages.send.journal.sqlite")
    assert journal.counts() == {"queued": 5, "unknown": 1}
    journal.close()

    journal_arg = str(tmp_path / "messages.send.journal.sqlite")
    hint = "did not go out again (those that did would be texted twice): sonar-bulk"
    assert hint in first.stderr and first.stderr.count("--retry-unknown") == 1
    faulty.faults = [{"fault": "500_before", "count": 1}]  # the retried send: not sent, 500
    still = send(sheet, "--resume", journal_arg, "--retry-unknown", "--collect-events", "off")
    assert still.exit_code == 1, still.output
    said = next(line for line in still.stderr.splitlines() if hint in line)
    assert said.count("--retry-unknown") == 1  # the hint does not repeat the flag given
    faulty.faults = []
    again = send(sheet, "--resume", journal_arg, "--retry-unknown")
    assert again.exit_code == 0, again.output
    assert "waiting" not in again.stderr  # no unknown send: no wait at all
    per_phone = Counter(m["to"] for m in faulty.states[-1]["messages"])
    assert per_phone == Counter(PHONES)  # everybody texted, nobody twice
    rows = read_rows(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 6
    assert rows[0]["sonar__error"].startswith("settled by outbound_message event")


def test_collect_events_off_leaves_unknown_sends_unknown(
    faulty: type[Recorder], tmp_path: Path
) -> None:
    sheet = write_sheet(tmp_path)
    faulty.faults = FAULTS
    result = send(sheet, "--collect-events", "off")
    assert result.exit_code == 1, result.output
    rows = read_rows(tmp_path / "messages.send.results.csv")
    assert [r["sonar__status"] for r in rows][:3] == ["unknown"] * 3  # no event, no proof
    assert "sonar__settled_by" not in rows[0]
    assert not (tmp_path / "messages.send.events.sqlite").exists()


def store_of(path: Path, messages: list[dict[str, Any]], at: float) -> Path:
    """An event store holding an outbound_message event per message (as a collector that
    ran beside the send, ``sonar-bulk webhooks collect``, would have stored them)."""
    store = EventStore(path)
    items = []
    for n, m in enumerate(messages):
        payload = {
            "uuid": f"evt-{n}",
            "action": "outbound_message",
            "external_id": m["external_id"],
            "text": m["text"],
            "customer": {"phone_number": m["to"]},
        }
        items.append(Incoming(json.dumps(payload).encode(), payload, at))
    store.add_many(items)
    store.close()
    return path


def test_settle_after_the_fact_with_a_store(faulty: type[Recorder], tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path)
    faulty.faults = FAULTS
    sent = send(sheet, "--collect-events", "off")
    assert sent.exit_code == 1, sent.output
    store = store_of(tmp_path / "collected.sqlite", faulty.states[-1]["messages"], time.time())
    results = tmp_path / "messages.send.results.csv"
    before = results.read_bytes()

    settled = CliRunner().invoke(cli, ["settle", str(results), "--store", str(store)])
    assert settled.exit_code == 1, settled.output  # one unknown send remains
    assert "settled 2 of 3 unknown sends" in settled.stderr
    assert "1 unknown send remains" in settled.stderr
    assert results.read_bytes() == before  # the input is never written
    rows = read_rows(tmp_path / "messages.send.settled.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 2 + ["unknown"] + ["queued"] * 3
    assert rows[0]["sonar__settled_by"].startswith("outbound_message event evt-")
    assert [r["to"] for r in rows] == PHONES  # the user's cells as they were
    journal = Journal(tmp_path / "messages.send.journal.sqlite")
    assert journal.counts() == {"queued": 5, "unknown": 1}
    journal.close()

    # written by sonar-bulk: replaced; the same answer again
    again = CliRunner().invoke(cli, ["settle", str(results), "--store", str(store)])
    assert again.exit_code == 1, again.output

    faulty.faults = []
    resumed = send(
        sheet, "--resume", str(tmp_path / "messages.send.journal.sqlite"), "--retry-unknown"
    )
    assert resumed.exit_code == 0, resumed.output
    assert Counter(m["to"] for m in faulty.states[-1]["messages"]) == Counter(PHONES)


def test_settle_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["settle", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "nope.csv: no such file" in missing.stderr
    plain = tmp_path / "messages.csv"
    plain.write_text("to,text\n+13105550701,Hi\n")
    not_results = runner.invoke(cli, ["settle", str(plain)])
    assert not_results.exit_code == 2 and "not a results sheet" in not_results.stderr
    results = tmp_path / "m.results.csv"
    results.write_text(
        "to,text,sonar__row,sonar__status,sonar__http_status,sonar__error,sonar__attempts,"
        "sonar__finished_at\n+13105550701,Hi,2,unknown,500,boom,1,2026-01-01T00:00:00Z\n"
    )
    no_store = runner.invoke(cli, ["settle", str(results)])
    assert no_store.exit_code == 2 and "no event store" in no_store.stderr
    theirs = tmp_path / "m.settled.csv"
    theirs.write_text("mine,not yours\n")
    store = EventStore(tmp_path / "e.sqlite")
    store.close()
    kept = runner.invoke(cli, ["settle", str(results), "--store", str(tmp_path / "e.sqlite")])
    assert kept.exit_code == 2 and "did not write it" in kept.stderr
    assert theirs.read_text() == "mine,not yours\n"
    since = runner.invoke(
        cli,
        ["settle", str(results), "--store", str(tmp_path / "e.sqlite"), "--force"],
    )
    assert since.exit_code == 2 and "--since" in since.stderr  # a CSV alone: when?
    forced = runner.invoke(
        cli,
        [
            "settle",
            str(results),
            "--store",
            str(tmp_path / "e.sqlite"),
            "--force",
            "--since",
            "2026-01-01T00:00:00Z",
        ],
    )
    assert forced.exit_code == 1 and "settled 0 of 1" in forced.stderr
    assert read_rows(theirs)[0]["sonar__status"] == "unknown"  # no event: still unknown
