"""Issue 18, point 9: rows reported as what really happened, against the real emulator over
loopback: ``properties set`` on a phone Sonar does not know creates the customer (reported
``created``, ``--existing-only`` skips it); a recipient who unsubscribed is skipped on reruns;
``messages tag`` reads a ``messages send`` results file and takes ``--tag``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sonar_bulk.connection import Connection
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.engine import talk
from sonar_bulk.engine.bulk import BulkOptions
from sonar_bulk.engine.run import run_sheet
from sonar_bulk.events.run import RunEvents
from sonar_bulk.events.store import EventStore, Filter

from .emulator_helpers import wait_for
from .test_bulk_cli import (
    TOKEN,
    bulk,
    customers_by_phone,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    form,
    log,
    read_dicts,
    server,  # noqa: F401 (a fixture)
    state,
    us_numbers,
    write_sheet,
)

# -- properties set on a phone Sonar does not know --------------------------------------------


def _properties(path: Path, phones: list[str]) -> Path:
    rows = [[p, "plan", f"gold{i}"] for i, p in enumerate(phones)]
    return write_sheet(path, ["phone_number", "property_name", "value"], rows)


def test_properties_set_on_an_unknown_phone_reports_created(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    known, new = us_numbers(405, 2)
    assert (
        bulk(
            emu, "customers", "upsert", str(customers_sheet(tmp_path / "c.csv", [known]))
        ).exit_code
        == 0
    )
    sheet = _properties(tmp_path / "props.csv", [known, new])
    result = bulk(emu, "properties", "set", str(sheet))
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "props.properties-set.results.csv")
    assert [(r["sonar__status"], r["sonar__http_status"]) for r in rows] == [
        ("ok", "200"),
        ("created", "201"),
    ]
    # Sonar sets properties through the upsert: the new phone is a customer now
    customers = customers_by_phone(emu)
    assert customers[new]["properties"] == {"plan": "gold1"}
    assert "1 created" in result.stderr and "1 ok" in result.stderr


def test_existing_only_skips_phones_sonar_does_not_know(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    known, new, other = us_numbers(406, 3)
    assert (
        bulk(
            emu, "customers", "upsert", str(customers_sheet(tmp_path / "c.csv", [known]))
        ).exit_code
        == 0
    )
    sheet = _properties(tmp_path / "props.csv", [known, new, other])

    planned = bulk(emu, "properties", "set", str(sheet), "--existing-only", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert {e["method"] for e in log(emu) if "customers" in e["path"]} >= {"GET"}
    assert "--existing-only: reading the current customers (GET only)" in planned.stderr
    plan = read_dicts(tmp_path / "props.properties-set.plan.csv")
    assert [r["sonar__status"] for r in plan] == ["planned", "skipped", "skipped"]
    assert plan[1]["sonar__change"] == "skip: not a Sonar customer"

    before = {e["path"] for e in log(emu) if e["method"] == "POST"}
    result = bulk(emu, "properties", "set", str(sheet), "--existing-only")
    assert result.exit_code == 0, result.output
    rows = read_dicts(tmp_path / "props.properties-set.results.csv")
    assert [r["sonar__status"] for r in rows] == ["ok", "skipped", "skipped"]
    assert rows[1]["sonar__error"] == (
        f"not sent: Sonar has no customer {new} (--existing-only leaves out customers it "
        "does not have)"
    )
    customers = customers_by_phone(emu)
    assert new not in customers and other not in customers  # nobody created
    assert customers[known]["properties"] == {"plan": "gold0"}
    posted = [e for e in log(emu) if e["method"] == "POST"]
    assert len(posted) == 1 + len(before)  # the known customer's upsert only
    assert "1 ok, 2 skipped" in result.stderr


def test_existing_only_is_for_properties_set(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = customers_sheet(tmp_path / "c.csv", us_numbers(407, 1))
    result = bulk(emu, "customers", "upsert", str(sheet), "--existing-only")
    assert result.exit_code == 2
    assert "No such option '--existing-only'" in result.output
    import sonar_bulk as sb
    from sonar_bulk.errors import UsageError

    try:
        sb.run("customers upsert", sheet, base_url=emu.api_url, token="t", existing_only=True)
    except UsageError as exc:
        assert "--existing-only applies to properties set" in str(exc)
    else:
        raise AssertionError("existing_only on customers upsert was accepted")
    assert log(emu) == []


# -- messages tag: a results file, --tag ------------------------------------------------------


def _sent(emu: EmulatorServer, tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """A messages send of ``count`` rows; its results file and the message ids in it."""
    sheet = write_sheet(
        tmp_path / "send.csv",
        ["to", "text"],
        [[p, f"Hello {i}"] for i, p in enumerate(us_numbers(408, count))],
    )
    sent = bulk(emu, "messages", "send", str(sheet), "--yes", "--collect-events", "off")
    assert sent.exit_code == 0, sent.output
    results = tmp_path / "send.send.results.csv"
    ids = [r["sonar__external_message_id"] for r in read_dicts(results)]
    assert len(set(ids)) == count and all(ids)
    return results, ids


def _tags(emu: EmulatorServer) -> dict[str, list[str]]:
    return {m["external_id"]: m["tags"] for m in state(emu)["messages"]}


def test_messages_tag_reads_a_send_results_file_with_one_tag_for_all(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    results, ids = _sent(emu, tmp_path, 3)
    tagged = bulk(
        emu, "messages", "tag", str(results), "--tag", "vip", "--results", str(tmp_path / "t.csv")
    )
    assert tagged.exit_code == 0, tagged.output
    assert [r["sonar__status"] for r in read_dicts(tmp_path / "t.csv")] == ["ok"] * 3
    assert {i: t for i, t in _tags(emu).items()} == {i: ["vip"] for i in ids}
    # the send's own columns are not the tag's: no error, and the send's rows are kept
    kept = read_dicts(tmp_path / "t.csv")
    assert [r["text"] for r in kept] == ["Hello 0", "Hello 1", "Hello 2"]


def test_messages_tag_without_a_tag_says_how_to_give_one(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    results, _ids = _sent(emu, tmp_path, 1)
    before = len(log(emu))
    refused = bulk(emu, "messages", "tag", str(results))
    assert refused.exit_code != 0
    assert "--tag" in refused.output
    assert len(log(emu)) == before  # nothing tagged


def test_tag_fills_only_the_rows_without_their_own(emu: EmulatorServer, tmp_path: Path) -> None:
    _results, ids = _sent(emu, tmp_path, 2)
    sheet = write_sheet(
        tmp_path / "tags.csv", ["external_message_id", "tag_name"], [[ids[0], "gold"], [ids[1], ""]]
    )
    tagged = bulk(emu, "messages", "tag", str(sheet), "--tag", "vip")
    assert tagged.exit_code == 0, tagged.output
    assert _tags(emu) == {ids[0]: ["gold"], ids[1]: ["vip"]}


def test_a_results_row_that_was_not_sent_has_no_message_to_tag(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    results, ids = _sent(emu, tmp_path, 2)
    rows = read_dicts(results)
    rows[1]["sonar__external_message_id"] = ""  # as a failed send's row has it
    rows[1]["sonar__status"] = "failed"
    edited = write_sheet(tmp_path / "edited.csv", list(rows[0]), [list(r.values()) for r in rows])
    # found by a new-user trial: such a row was an error, and the whole run refused
    done = bulk(emu, "messages", "tag", str(edited), "--tag", "vip")
    assert done.exit_code == 0, done.output
    rows = read_dicts(tmp_path / "edited.tag.results.csv")
    assert [r["sonar__status"] for r in rows] == ["ok", "skipped"]
    assert rows[1]["sonar__error"] == (
        "no message to tag: the messages send did not send this row (failed)"
    )
    assert _tags(emu) == {ids[0]: ["vip"], ids[1]: []}
    # a row added by hand, with no id and no status, is still an error
    rows = read_dicts(results)
    rows[1]["sonar__external_message_id"] = rows[1]["sonar__status"] = ""
    added = write_sheet(tmp_path / "added.csv", list(rows[0]), [list(r.values()) for r in rows])
    refused = bulk(emu, "messages", "tag", str(added), "--tag", "vip")
    assert refused.exit_code == 1
    assert "external_message_id is required" in refused.output


def statuses_of(path: Path) -> list[str]:
    return [r["sonar__status"] for r in read_dicts(path)]


# -- unsubscribed recipients are not offered again ----------------------------------------


def test_an_unsubscribed_answer_keeps_the_recipient_from_every_later_send(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    gone, other = us_numbers(409, 2)
    emu.admin("POST", "/inbound", {"phone_number": gone, "text": "STOP"})  # before any send
    sheet = write_sheet(tmp_path / "m.csv", ["to", "text"], [[gone, "Hi"], [other, "Hi"]])
    first = bulk(emu, "messages", "send", str(sheet), "--yes", "--collect-events", "off")
    assert first.exit_code == 0, first.output
    assert statuses_of(tmp_path / "m.send.results.csv") == ["unsubscribed", "queued"]
    reasons = [r["sonar__error"] for r in read_dicts(tmp_path / "m.send.results.csv")]
    assert reasons == ["not texted: Sonar answered that the customer is unsubscribed", ""]

    # the same sheet, a copy, another sheet with another text, even --resend: skipped
    copy = write_sheet(tmp_path / "copy.csv", ["to", "text"], [[gone, "Hi"], [other, "Hi"]])
    later = write_sheet(tmp_path / "later.csv", ["to", "text"], [[gone, "Sale today!"]])
    for path, extra in ((sheet, ()), (copy, ()), (later, ()), (later, ("--resend",))):
        before = len(posts_to_messages(emu))
        again = bulk(emu, "messages", "send", str(path), "--yes", "--collect-events", "off", *extra)
        assert again.exit_code == 0, again.output
        row = read_dicts(path.with_name(f"{path.stem}.send.results.csv"))[0]
        assert row["sonar__status"] == "skipped", (path, row)
        assert row["sonar__error"].startswith(f"unsubscribed: {gone} was unsubscribed"), row
        assert len(posts_to_messages(emu)) == before  # nobody texted
        assert ", 0 to run against" in again.stderr  # not counted among the texts to send
    # not counted among the texts to send, and said on screen
    planned = bulk(emu, "messages", "send", str(later), "--dry-run")
    assert "later.csv, 0 to plan" in planned.stderr
    assert "unsubscribed before (a STOP, or Sonar said so): 1, never texted again" in (
        planned.stderr
    )
    # a campaign to that recipient neither
    campaign = write_sheet(tmp_path / "c.csv", ["to", "campaign_id"], [[gone, "fall_sale_2026"]])
    sent = bulk(emu, "campaigns", "send", str(campaign), "--yes", "--collect-events", "off")
    assert statuses_of(tmp_path / "c.campaign.results.csv") == ["skipped"], sent.output

    # a customers upsert that subscribes the customer again (--resubscribe: a sheet's yes
    # alone does not lift a STOP) lets later sends through
    resub = write_sheet(tmp_path / "r.csv", ["phone_number", "subscribed"], [[gone, "true"]])
    assert bulk(emu, "customers", "upsert", str(resub), "--resubscribe").exit_code == 0
    fresh = write_sheet(tmp_path / "fresh.csv", ["to", "text"], [[gone, "Welcome back"]])
    back = bulk(emu, "messages", "send", str(fresh), "--yes", "--collect-events", "off")
    assert back.exit_code == 0, back.output
    assert statuses_of(tmp_path / "fresh.send.results.csv") == ["queued"]


def posts_to_messages(emu: EmulatorServer) -> list[dict[str, object]]:
    return [e for e in log(emu) if e["method"] == "POST" and e["path"] == "/api/v1/messages"]


@dataclass
class StopReplyUi(talk.RecordingUi):
    """After the send, ``phone`` texts STOP; waits until its events are stored."""

    emu: EmulatorServer | None = None
    phone: str = ""

    def wait_for_events(self, window: talk.EventsWindow) -> None:
        assert self.emu is not None
        self.emu.admin("POST", "/inbound", {"phone_number": self.phone, "text": "STOP"})

        def arrived() -> bool:
            store = EventStore(window.store, create=False)
            try:
                return store.counts(Filter(events=("customer_unsubscribed",)))[0] > 0
            finally:
                store.close()

        wait_for(arrived, 10)


def test_a_stop_reply_keeps_the_recipient_from_a_rerun(emu: EmulatorServer, tmp_path: Path) -> None:
    stopper, other = us_numbers(410, 2)
    sheet = write_sheet(tmp_path / "m.csv", ["to", "text"], [[stopper, "Hi"], [other, "Hi"]])
    events = RunEvents(30, "127.0.0.1:0", None)
    ui = StopReplyUi(emu=emu, phone=stopper)
    conn = Connection(emu.api_url, TOKEN)
    report = run_sheet("messages send", sheet, conn, BulkOptions(rate=0), ui, events)
    assert report.summary.counts == {"queued": 2}
    rows = read_dicts(tmp_path / "m.send.results.csv")
    assert [r["sonar__replied"] for r in rows] == ["stop", ""]

    # (another text for the other: the same one again within 7 s is Sonar's duplicate)
    copy = write_sheet(tmp_path / "copy.csv", ["to", "text"], [[stopper, "Hi"], [other, "Hey"]])
    again = bulk(emu, "messages", "send", str(copy), "--yes", "--resend", "--collect-events", "off")
    assert again.exit_code == 0, again.output
    rows = read_dicts(tmp_path / "copy.send.results.csv")
    assert rows[0]["sonar__status"] == "skipped"
    assert rows[0]["sonar__error"].startswith(f"unsubscribed: {stopper} replied STOP at ")
    assert rows[1]["sonar__status"] == "queued"  # --resend: the other one is sent again
    assert [p["to"] for p in map(form, posts_to_messages(emu))].count(stopper) == 1


@dataclass
class StopBeforeSendingUi(talk.RecordingUi):
    """While the send is being confirmed, another run learns that ``phone`` replied STOP (it
    writes the send ledger): after this run was prepared, before it sends."""

    conn: Connection | None = None
    phone: str = ""

    def ask(self, question: talk.Question) -> bool:
        from sonar_bulk.engine.ledger import Ledger

        assert self.conn is not None
        ledger = Ledger()
        try:
            ledger.note_unsubscribed(
                [(self.conn.target, self.phone, "2026-12-07T03:00:00Z", "replied STOP", "x.csv")]
            )
        finally:
            ledger.close()
        return super().ask(question)


def test_a_stop_learned_after_the_run_was_prepared_is_kept_at_send_time(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The send guard asks the ledger at the moment of each send, under its one lock: a STOP
    another run learned after this one was prepared keeps the recipient from this run's text
    (every row to that phone, --resend included)."""
    stopper, other = us_numbers(415, 2)
    sheet = write_sheet(
        tmp_path / "m.csv",
        ["to", "text"],
        [[stopper, "Hi"], [other, "Hi"], [stopper, "Second text"]],
    )
    conn = Connection(emu.api_url, TOKEN)
    ui = StopBeforeSendingUi(conn=conn, phone=stopper, yes=True)
    report = run_sheet("messages send", sheet, conn, BulkOptions(rate=0, resend=True), ui)
    assert any(isinstance(q, talk.ConfirmSend) for q in ui.questions)
    assert report.summary.counts == {"queued": 1, "skipped": 2}
    rows = read_dicts(tmp_path / "m.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["skipped", "queued", "skipped"]
    for row in (rows[0], rows[2]):
        assert row["sonar__error"] == (
            f"unsubscribed: {stopper} replied STOP at 2026-12-07T03:00:00Z; not texted again"
        )
    assert [p["to"] for p in map(form, posts_to_messages(emu))] == [other]


def test_a_stale_export_s_yes_does_not_lift_a_stop(emu: EmulatorServer, tmp_path: Path) -> None:
    """Found by a consent trial: a customers upsert whose consent column said yes subscribed
    again a customer who had replied STOP (an export older than the STOP), and the next
    campaign texted them. Their subscribed is left out, and said; --resubscribe sends it."""
    from sonar_bulk.engine.ledger import Ledger

    stopper, other = us_numbers(416, 2)
    emu.admin("POST", "/inbound", {"phone_number": stopper, "text": "STOP"})
    conn = Connection(emu.api_url, TOKEN)
    ledger = Ledger()
    try:
        ledger.note_unsubscribed(
            [(conn.target, stopper, "2026-12-07T03:00:00Z", "replied STOP", "m.csv")]
        )
    finally:
        ledger.close()
    stale = write_sheet(
        tmp_path / "stale.csv",
        ["Phone", "First Name", "Accepts SMS Marketing"],
        [[stopper, "New", "yes"], [other, "Bo", "yes"]],
    )
    done = bulk(emu, "customers", "upsert", str(stale))
    assert done.exit_code == 0, done.output
    assert (
        f"1 row say subscribed=yes for people who replied STOP ({stopper}): subscribed is left "
        "out for them" in " ".join(done.output.split())
    )
    people = customers_by_phone(emu)
    assert people[stopper]["first_name"] == "New"  # the rest of the row is sent
    assert people[stopper]["subscribed"] is False and people[other]["subscribed"] is True
    sheet = write_sheet(tmp_path / "m.csv", ["to", "text"], [[stopper, "Hi"], [other, "Hi"]])
    sent = bulk(emu, "messages", "send", str(sheet), "--yes", "--collect-events", "off")
    assert sent.exit_code == 0, sent.output
    assert [p["to"] for p in map(form, posts_to_messages(emu))] == [other]

    again = bulk(emu, "customers", "upsert", str(stale), "--resubscribe")
    assert again.exit_code == 0, again.output
    assert customers_by_phone(emu)[stopper]["subscribed"] is True
    ledger = Ledger()
    try:
        assert ledger.unsubscribed(conn.target, [stopper]) == {}
    finally:
        ledger.close()
