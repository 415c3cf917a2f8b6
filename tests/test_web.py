"""The web page's HTTP API over real sockets (its security rules first), and ``sonar-bulk ui``
as a process. The page itself is driven in a browser by test_web_browser.py."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sonar_bulk.api.endpoints import EMULATOR_TOKEN
from sonar_bulk.schema import guess_kind, match_headers
from tests.conftest import SAMPLES
from tests.emulator_helpers import wait_for
from tests.web_helpers import Page, start_run, ui_process


def upload(page: Page, path: Path, name: str | None = None) -> dict[str, Any]:
    data = base64.b64encode(path.read_bytes()).decode()
    response = page.client.post("/api/upload", json={"name": name or path.name, "data": data})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows(page: Page, errors: bool = False) -> dict[str, Any]:
    response = page.client.get(f"/api/rows?offset=0&limit=100&errors={int(errors)}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def plan(page: Page, **body: Any) -> dict[str, Any]:
    """A dry run, to its end: its facts."""
    started = page.client.post("/api/plan", json=body)
    assert started.status_code == 200, started.text
    done = wait_done(page)
    assert done["state"] == "done", done
    facts: dict[str, Any] = done["facts"]
    return facts


def wait_done(page: Page, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        state: dict[str, Any] = page.client.get("/api/progress").json()
        return state if state["state"] in ("done", "failed") else None

    result: dict[str, Any] = wait_for(done, timeout)
    return result


def stopped_midway(page: Page, sheet: Path) -> dict[str, Any]:
    """``sheet`` uploaded and run slowly (40 ms an answer, 20 a second), stopped once 5 rows
    are done: the progress it ended with."""
    page.emulator.admin("POST", "/config", {"latency_ms": 40})
    upload(page, sheet)
    start_run(page.client, {"confirm": True, "rate": 20})
    wait_for(lambda: page.client.get("/api/progress").json()["done"] >= 5, 20)
    assert page.client.post("/api/stop", json={}).status_code == 200
    return wait_done(page)


# -- security ----------------------------------------------------------------------------------


def test_the_key_is_needed_once_then_kept_in_a_strict_cookie(page: Page) -> None:
    with httpx.Client(trust_env=False, timeout=10, follow_redirects=False) as stranger:
        assert stranger.get(page.base + "/").status_code == 401
        assert stranger.get(page.base + "/api/info").status_code == 401
        assert stranger.get(page.base + "/?key=wrong").status_code == 401
        assert stranger.get(page.base + "/download/fixed").status_code == 401
        let_in = stranger.get(page.launch)
        assert let_in.status_code == 303 and let_in.headers["location"] == "/"
        cookie = let_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert stranger.get(page.base + "/api/info").status_code == 200  # the cookie, kept
        index = stranger.get(page.base + "/")
        assert index.status_code == 200 and 'type="module"' in index.text
        assert "default-src 'self'" in index.headers["content-security-policy"]


def test_host_json_and_origin_rules(page: Page) -> None:
    client = page.client
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host
    assert client.get("/api/info", headers={"Host": "evil.example"}).status_code == 400
    port = page.base.rsplit(":", 1)[1]
    assert client.get("/api/info", headers={"Host": f"localhost:{port}"}).status_code == 200
    # writes are JSON only: an HTML form can't post here
    form = client.post("/api/plan", content=b"a=1", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    multipart = client.post("/api/upload", files={"f": ("a.csv", b"x")})
    assert multipart.status_code == 415
    foreign = client.post("/api/stop", json={}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    own = client.post("/api/stop", json={}, headers={"Origin": page.base})
    assert own.status_code == 400 and own.json() == {"error": "nothing is running"}
    # a page on another port of this machine is "same-site": the browser says so
    other = client.get("/api/info", headers={"Sec-Fetch-Site": "same-site"})
    assert other.status_code == 403
    mine = client.get("/api/info", headers={"Sec-Fetch-Site": "same-origin"})
    assert mine.status_code == 200


def test_the_token_never_reaches_the_browser(page: Page) -> None:
    upload(page, SAMPLES / "customers.csv")
    answers = [page.client.get("/api/info").text, json.dumps(plan(page))]
    answers.append(start_run(page.client, {"confirm": True, "rate": 0}).text)
    wait_done(page)
    answers += [page.client.get("/api/progress").text, page.client.get("/api/results").text]
    answers += [page.client.get("/download/results").text]
    assert all(EMULATOR_TOKEN not in text for text in answers)


# -- the flow ----------------------------------------------------------------------------------


def test_upload_guesses_the_kind_and_reads_the_sheet_as_the_cli_does(page: Page) -> None:
    described = upload(page, SAMPLES / "customers.messy.csv")
    assert described["kind"] == "customers"
    assert (described["encoding"], described["delimiter"]) == ("cp1252", ";")
    assert described["choices"][:2] == ["phone_number", "first_name"]
    assert described["summary"]["invalid"] == 4
    grid = rows(page)
    assert grid["total"] == 7
    bad = next(r for r in grid["rows"] if r["row"] == 4)
    assert bad["invalid"] is True
    assert {(i["column"], i["code"]) for i in bad["issues"]} >= {(0, "phone.invalid")}
    assert rows(page, errors=True)["total"] == 4
    messages = upload(page, SAMPLES / "messages.csv")
    assert messages["kind"] == "messages"
    first = rows(page)["rows"][0]
    assert first["message"]["text"].startswith("Hi Ana, your order A1001")
    assert first["message"]["segments"] == 1


def test_mapping_by_hand_is_remembered_for_the_same_headers(page: Page, tmp_path: Path) -> None:
    upload(page, SAMPLES / "customers.messy.csv")
    choices = {"Plan": "property:plan", "Notes": "skip", "Zip": ""}
    mapped = page.client.post("/api/mapping", json={"kind": "customers", "choices": choices})
    assert mapped.status_code == 200, mapped.text
    body = mapped.json()
    headers = body["headers"]
    assert body["choices"][headers.index("Plan")] == "property:plan"
    assert body["choices"][headers.index("Notes")] == "skip"
    assert "--map Plan=property:plan" in body["command_line"]
    assert "column.unknown" not in body["summary"]["by_code"]  # Plan imported, Notes skipped
    again = upload(page, SAMPLES / "customers.messy.csv", "copy of customers.csv")
    assert again["remembered"] is True
    assert again["choices"][headers.index("Plan")] == "property:plan"
    wrong = page.client.post(
        "/api/mapping", json={"kind": "customers", "choices": {"Plan": "nope"}}
    )
    assert wrong.status_code == 400 and "not a customers column" in wrong.json()["error"]
    assert page.client.post("/api/mapping", json={"kind": "pets", "choices": {}}).status_code == 400


def test_an_edit_is_validated_at_once_and_the_fixed_sheet_keeps_the_input_format(
    page: Page,
) -> None:
    upload(page, SAMPLES / "customers.messy.csv")
    bad = next(r for r in rows(page)["rows"] if r["row"] == 4)
    fixed = page.client.post(
        "/api/edit",
        json={"changes": [{"index": bad["index"], "column": 0, "value": "+13105550199"}]},
    )
    assert fixed.status_code == 200, fixed.text
    row = fixed.json()["rows"][0]
    assert not [i for i in row["issues"] if i["column"] == 0]
    assert fixed.json()["summary"]["errors"] < 7
    download = page.client.get("/download/fixed")
    assert download.status_code == 200
    assert "customers.messy.fixed.csv" in download.headers["content-disposition"]
    text = download.content.decode("cp1252")  # the input's own encoding and delimiter
    lines = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert lines[0][0] == "Phone" and lines[3][0] == "+13105550199"
    original = (SAMPLES / "customers.messy.csv").read_bytes().decode("cp1252")
    assert list(csv.reader(io.StringIO(original), delimiter=";"))[1] == lines[1]  # as typed
    nowhere = page.client.post("/api/edit", json={"changes": [{"index": 99, "column": 0}]})
    assert nowhere.status_code == 400


def test_dry_run_then_run_against_the_emulator(page: Page) -> None:
    upload(page, SAMPLES / "customers.csv")
    facts = plan(page, diff=True)  # comparing with Sonar: only when asked
    assert facts["to_run"] == 10 and facts["diff"] == {"create": 10}
    assert facts["target_kind"] == "custom" and facts["sends"] is False
    assert page.emulator.admin("GET", "/state")["customers"] == []  # a dry run sends nothing
    assert start_run(page.client, {"rate": 0}).status_code == 400  # not confirmed
    started = start_run(page.client, {"confirm": True, "rate": 0})
    assert started.status_code == 200
    done = wait_done(page)
    assert done["counts"] == {"created": 10} and done["exit_code"] == 0
    assert len(page.emulator.admin("GET", "/state")["customers"]) == 10
    results = page.client.get("/api/results?status=created").json()
    assert results["total"] == 10 and results["rows"][0]["status"] == "created"
    sheet = page.client.get("/download/results")
    assert sheet.status_code == 200 and "sonar__status" in sheet.text
    assert page.client.get("/download/failed").status_code == 400  # nothing failed


def test_a_plan_is_quick_by_default_and_shows_each_row_as_sent(page: Page) -> None:
    upload(page, SAMPLES / "customers.csv")
    assert page.client.get("/api/plan/rows").status_code == 400  # no plan yet
    assert page.client.get("/download/plan").status_code == 400
    before = len(page.emulator.admin("GET", "/requests"))
    facts = plan(page, rate=0)
    assert facts["diff"] == {} and facts["to_run"] == 10  # not compared: no GET per row
    assert len(page.emulator.admin("GET", "/requests")) == before
    table = page.client.get("/api/plan/rows?offset=0&limit=5").json()
    assert table["columns"] == ["Plan", "Reason", "Row", "Fields to send"]
    assert table["total"] == 10 and len(table["rows"]) == 5
    first = table["rows"][0]["values"]
    assert first[:3] == ["planned", "", "2"] and "phone_number: +1" in first[3]
    assert "sonar__" not in json.dumps(table["columns"])
    # compared: each field's change, old -> new
    plan(page, rate=0, diff=True)
    compared = page.client.get("/api/plan/rows").json()
    assert compared["columns"] == ["Plan", "Reason", "Row", "Change", "Fields to send"]
    assert compared["rows"][0]["values"][3] == "create"
    # the plan file the engine wrote, downloaded
    sheet = page.client.get("/download/plan")
    assert sheet.status_code == 200
    assert "customers.upsert.plan.csv" in sheet.headers["content-disposition"]
    assert (
        "sonar__request" in sheet.text and page.emulator.admin("GET", "/state")["customers"] == []
    )


def test_a_plan_of_messages_shows_each_final_text(page: Page) -> None:
    upload(page, SAMPLES / "messages.csv")
    plan(page, rate=0)
    table = page.client.get("/api/plan/rows").json()
    assert table["columns"][:6] == [
        "Plan",
        "Reason",
        "Row",
        "Message text",
        "SMS segments",
        "Encoding",
    ]
    values = table["rows"][0]["values"]
    assert values[3].startswith("Hi Ana, your order A1001 has shipped")  # merge fields filled
    assert values[4] == "1" and values[5] == "GSM-7"
    assert "to: +13105550101" in values[-1] and "text:" not in values[-1]
    assert page.emulator.admin("GET", "/state")["messages"] == []


def test_stop_then_resume_sends_nobody_twice(page: Page, tmp_path: Path) -> None:
    phones = [f"+1310555{n:04d}" for n in range(1000, 1040)]
    sheet = tmp_path / "slow messages.csv"
    sheet.write_text("to,text\n" + "".join(f"{p},Hello there\n" for p in phones))
    stopped = stopped_midway(page, sheet)
    assert stopped["resumable"] is True and stopped["stopped"]
    sent_first = stopped["counts"].get("queued", 0)
    assert 0 < sent_first < 40
    page.emulator.admin("POST", "/config", {"latency_ms": 0})
    resumed = start_run(page.client, {"confirm": True, "rate": 0, "resume": True})
    assert resumed.status_code == 200, resumed.text
    final = wait_done(page)
    assert final["counts"].get("queued", 0) + final["counts"].get("skipped", 0) == 40
    messages = page.emulator.admin("GET", "/state")["messages"]
    sent = [m["to"] for m in messages]
    assert sorted(sent) == sorted(phones)  # each phone exactly once


def test_a_second_stop_lets_the_requests_in_flight_finish(page: Page, tmp_path: Path) -> None:
    """Found by an attack: Stop clicked twice (or from two tabs) was the command line's second
    Ctrl-C, which cuts the requests in flight off, so texts that went out were left unknown."""
    phones = [f"+1310555{n:04d}" for n in range(1100, 1116)]
    sheet = tmp_path / "twice.csv"
    sheet.write_text("to,text\n" + "".join(f"{p},Hello there\n" for p in phones))
    # answers over 0-0.5 s: within the second a stop gives the requests in flight
    page.emulator.admin("POST", "/config", {"jitter_ms": 500})
    upload(page, sheet)
    assert start_run(page.client, {"confirm": True, "rate": 0}).status_code == 200
    wait_for(lambda: len(page.emulator.admin("GET", "/state")["messages"]) >= 1, 20)
    assert page.client.post("/api/stop", json={}).status_code == 200
    assert page.client.post("/api/stop", json={}).status_code == 200  # the double click
    stopped = wait_done(page)
    page.emulator.admin("POST", "/config", {"jitter_ms": 0})
    got = page.client.get("/api/results?offset=0&limit=20").json()
    assert "unknown" not in stopped["counts"], [r["values"][:2] for r in got["rows"]]
    sent = len(page.emulator.admin("GET", "/state")["messages"])
    assert stopped["counts"].get("queued", 0) == sent


def test_a_run_is_the_one_planned(page: Page, tmp_path: Path) -> None:
    """Found by an attack: a run started with no plan, or after another sheet was uploaded
    (from a second tab) since the plan, ran what nobody had seen planned. A run follows the
    plan of the same sheet, columns and choices; one plan, one run."""
    small = tmp_path / "small.csv"
    small.write_text("to,text\n+13105551201,Hi\n+13105551202,Hi\n")
    big = tmp_path / "big.csv"
    big.write_text("to,text\n" + "".join(f"+1310555{n:04d},Hi\n" for n in range(1210, 1260)))
    upload(page, small)
    bare = page.client.post("/api/run", json={"confirm": True, "rate": 0})
    assert bare.status_code == 400 and bare.json()["error"] == (
        "make the plan first: a run follows its plan"
    )
    assert plan(page, rate=0)["to_run"] == 2
    upload(page, big)  # another tab
    stale = page.client.post("/api/run", json={"confirm": True, "rate": 0})
    assert stale.status_code == 400 and "changed since the plan" in stale.json()["error"]
    assert plan(page, rate=0)["to_run"] == 50
    other = page.client.post("/api/run", json={"confirm": True, "rate": 0, "skip_invalid": True})
    assert other.status_code == 400 and "changed since the plan" in other.json()["error"]
    assert page.emulator.admin("GET", "/state")["messages"] == []
    assert page.client.post("/api/run", json={"confirm": True, "rate": 0}).status_code == 200
    assert wait_done(page)["counts"] == {"queued": 50}
    again = page.client.post("/api/run", json={"confirm": True, "rate": 0})
    assert again.status_code == 400 and "make the plan first" in again.json()["error"]


def test_send_again_is_the_page_s_control_for_what_its_reasons_offer(
    page: Page, tmp_path: Path
) -> None:
    """Found by an attack: a month's news under last month's file name was skipped with
    "(--resend sends it)", a flag the page has no control for. The reason names "Send again"
    in Plan, and that control sends; an unsubscribed person is never texted, whatever it says."""
    phones = ["+13105551301", "+13105551302", "+13105551303"]
    page.emulator.admin("POST", "/inbound", {"phone_number": phones[2], "text": "STOP"})
    news = tmp_path / "news.csv"
    news.write_text("to,text\n" + "".join(f"{p},September news\n" for p in phones))
    upload(page, news)
    assert start_run(page.client, {"confirm": True, "rate": 0}).status_code == 200
    assert wait_done(page)["counts"] == {"queued": 2, "unsubscribed": 1}
    news.write_text("to,text\n" + "".join(f"{p},October news\n" for p in phones))
    upload(page, news)
    facts = plan(page, rate=0)  # found by a re-test: the plan's own lines named --resend
    assert facts["guarded_rows"] and all("--" not in line for line in facts["guarded_rows"])
    planned = page.client.get("/api/plan/rows?offset=0&limit=10").json()
    assert [r["status"] for r in planned["rows"]][:2] == ["sent before", "sent before"]
    assert start_run(page.client, {"confirm": True, "rate": 0}).status_code == 200
    assert wait_done(page)["counts"] == {"skipped": 3}
    got = page.client.get("/api/results?offset=0&limit=10").json()
    reasons = [r["values"][1] for r in got["rows"]]
    assert all("--" not in r for r in reasons), reasons
    assert '(ticking "Send again" in Plan sends it)' in reasons[0]
    page.emulator.admin("POST", "/clock", {"advance": 10})
    again = start_run(page.client, {"confirm": True, "rate": 0, "resend": True})
    assert again.status_code == 200, again.text
    assert wait_done(page)["counts"] == {"queued": 2, "skipped": 1}
    texts = [(m["to"], m["text"]) for m in page.emulator.admin("GET", "/state")["messages"]]
    outbound = [t for t in texts if t[0] in phones[:2]]
    assert sorted(outbound) == sorted(
        [(p, t) for p in phones[:2] for t in ("September news", "October news")]
    )
    assert all(to != phones[2] or "news" not in text for to, text in texts)


def test_messages_name_the_page_s_files_not_where_the_server_keeps_them(
    page: Page, tmp_path: Path
) -> None:
    """Found by an attack: a header row set on an empty line was refused naming the server's
    data folder."""
    from sonar_bulk.web.session import ui_dir

    path = write_csv(tmp_path / "title.csv", [["A title"], [], ["Phone"], ["3105550101"]])
    upload(page, path)
    empty = page.client.post("/api/settings", json={"header_row": 2})
    assert empty.status_code == 400
    assert str(ui_dir()) not in empty.json()["error"] and "title.csv" in empty.json()["error"]


def test_a_campaign_plan_s_schedule_counts_only_the_rows_that_go_out(
    page: Page, tmp_path: Path
) -> None:
    """Found by a new-user trial: the plan's "Scheduled sends from ... to ..." counted a row
    the plan itself skipped."""
    rows = [["to", "campaign_id", "send_at"]]
    rows += [["+13105551401", "spring", "2030-01-01T10:00:00-08:00"]]
    rows += [["555", "spring", "2030-03-01T10:00:00-08:00"]]  # invalid: left out
    upload(page, write_csv(tmp_path / "spring.csv", rows))
    facts = plan(page, rate=0, skip_invalid=True)
    assert facts["to_run"] == 1
    assert facts["scheduled"] == ["2030-01-01T10:00:00-08:00", "2030-01-01T10:00:00-08:00"]


def test_bad_uploads_are_one_line_errors(page: Page) -> None:
    bad = page.client.post("/api/upload", json={"name": "x.pdf", "data": ""})
    assert bad.status_code == 400 and "use a .csv" in bad.json()["error"]
    junk = page.client.post("/api/upload", json={"name": "x.csv", "data": "!!!"})
    assert junk.status_code == 400 and "not base64" in junk.json()["error"]
    empty = page.client.post(
        "/api/upload", json={"name": "../../etc/passwd.csv", "data": base64.b64encode(b"").decode()}
    )
    assert empty.status_code == 400 and "\n" not in empty.json()["error"]
    assert "passwd.csv" in empty.json()["error"]
    assert page.client.post("/api/upload", json={"data": ""}).status_code == 400
    assert page.client.get("/api/rows").status_code == 400  # no sheet yet
    # found by an attack: Python's JSON reader takes Infinity, and int(inf) was a 500
    for path, body in [
        ("/api/edit", '{"changes": [{"index": Infinity, "column": 0, "value": "x"}]}'),
        ("/api/delete", '{"indexes": [-Infinity]}'),
        ("/api/settings", '{"header_row": NaN}'),
    ]:
        answer = page.client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json() == {"error": "the body is not JSON"}


def test_guess_kind_and_skip_in_the_library() -> None:
    from sonar_bulk.schema import KINDS

    assert guess_kind(["to", "text"]) == "messages"
    assert guess_kind(["Phone", "Message", "First Name"]) == "messages"  # not customers
    assert guess_kind(["Phone", "campaign_id"]) == "campaign_recipients"
    assert guess_kind(["nothing", "known"]) == "customers"
    hmap = match_headers(KINDS["customers"], ["Phone", "Notes"], mapping={"Notes": "skip"})
    assert hmap.skipped == [1] and 1 not in hmap.unknown


# -- the command -----------------------------------------------------------------------------


def test_ui_command_prints_its_address_and_stops_on_ctrl_c() -> None:
    with ui_process() as ui:
        assert ui.base.startswith("http://127.0.0.1:")
        with httpx.Client(trust_env=False, timeout=10, follow_redirects=True) as client:
            assert client.get(ui.base).status_code == 401
            assert client.get(f"{ui.base}/?key={ui.key}").status_code == 200  # let in
        started = time.monotonic()
        assert ui.interrupt() == 0
        assert time.monotonic() - started < 20


def test_ctrl_c_stops_a_run_in_progress_gracefully(private_user_dirs: Path) -> None:
    with ui_process() as ui, ui.client() as client:
        admin = httpx.post(ui.emulator + "/__emulator__/config", json={"latency_ms": 60})
        assert admin.status_code == 200
        phones = [f"+1310555{n:04d}" for n in range(3000, 3040)]
        text = "to,text\n" + "".join(f"{p},Last call\n" for p in phones)
        data = base64.b64encode(text.encode()).decode()
        assert client.post("/api/upload", json={"name": "last.csv", "data": data}).is_success
        run = start_run(client, {"confirm": True, "rate": 10})
        assert run.status_code == 200, run.text
        wait_for(lambda: client.get("/api/progress").json()["done"] >= 3, 20)
        # the page follows the run on its progress stream while the server stops
        with client.stream("GET", "/api/progress/stream") as stream:
            assert next(stream.iter_lines()).startswith("data: ")
            assert ui.interrupt() == 0
        rest = ui.lines.rest(10)
    assert "Traceback" not in rest and "Exception in ASGI" not in rest, rest
    folder = private_user_dirs / "data" / "sonar-bulk" / "ui" / "last"
    results = folder / "last.send.results.csv"
    assert results.is_file(), rest
    statuses = [
        r["sonar__status"] for r in csv.DictReader(io.StringIO(results.read_text("utf-8-sig")))
    ]
    assert len(statuses) == 40  # every row, with a status
    assert 0 < statuses.count("queued") < 40 and statuses.count("skipped") > 0
    assert (folder / "last.send.journal.sqlite").is_file()  # kept for Resume


def test_quiet_hours_in_the_plan(page: Page) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    upload(page, SAMPLES / "messages.csv")
    # quiet all day but one minute, 12 hours from now on the US west coast: every recipient
    # (all in US zones) is in the quiet window whenever this runs
    gap = dt.datetime.now(ZoneInfo("America/Los_Angeles")) + dt.timedelta(hours=12)
    window = f"{gap + dt.timedelta(minutes=1):%H:%M}-{gap:%H:%M}"
    facts = plan(page, quiet_hours=window, quiet_policy="skip", rate=0)
    assert facts["sends"] is True and facts["to_run"] == 0
    bad = page.client.post("/api/plan", json={"quiet_hours": "late"})
    assert bad.status_code == 400 and "HH:MM-HH:MM" in bad.json()["error"]


# -- found by an attack and a new user's trial ---------------------------------------------------


def test_a_re_upload_after_an_edited_run_finds_its_journal(page: Page, tmp_path: Path) -> None:
    phones = [f"+1310555{n:04d}" for n in range(4000, 4030)]
    sheet = tmp_path / "orders.csv"
    sheet.write_text("to,text\n" + "".join(f"{p},Your order is ready\n" for p in phones))
    page.emulator.admin("POST", "/config", {"latency_ms": 40})
    upload(page, sheet)
    edit = {"index": 29, "column": 1, "value": "Your order is ready (edited)"}
    assert page.client.post("/api/edit", json={"changes": [edit]}).status_code == 200
    start_run(page.client, {"confirm": True, "rate": 20})
    wait_for(lambda: page.client.get("/api/progress").json()["done"] >= 5, 20)
    during = page.client.post("/api/edit", json={"changes": [edit]})
    assert during.status_code == 400 and "a run is in progress" in during.json()["error"]
    assert page.client.get("/download/fixed").status_code == 400
    page.client.post("/api/stop", json={})
    first = wait_done(page)["counts"].get("queued", 0)
    assert 0 < first < 30
    page.emulator.admin("POST", "/config", {"latency_ms": 0})
    again = upload(page, sheet)  # the same file again, its edit gone: the upload's journal
    assert again["resumable"] is True  # the page offers Resume, even after a reload
    facts = plan(page)
    assert facts["sent_before"] == first and facts["to_run"] == 30 - first
    start_run(page.client, {"confirm": True, "rate": 0})
    wait_done(page)
    sent = [m["to"] for m in page.emulator.admin("GET", "/state")["messages"]]
    assert sorted(sent) == sorted(phones)  # nobody twice


def test_an_edit_the_input_encoding_cannot_hold_is_kept(page: Page, tmp_path: Path) -> None:
    sheet = tmp_path / "names.csv"
    sheet.write_bytes("phone_number;first_name\r\n+13105550401;José\r\n".encode("cp1252"))
    upload(page, sheet)
    change = {"index": 0, "column": 1, "value": "Łukasz 😀"}
    assert page.client.post("/api/edit", json={"changes": [change]}).status_code == 200
    fixed = page.client.get("/download/fixed").content
    assert fixed.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM: nothing typed is lost
    assert "Łukasz 😀" in fixed.decode("utf-8-sig")
    assert ";" in fixed.decode("utf-8-sig").splitlines()[0]  # the input's delimiter kept
    start_run(page.client, {"confirm": True, "rate": 0})
    wait_done(page)
    results = page.client.get("/download/results").content.decode("utf-8-sig")
    assert "Łukasz 😀" in results
    assert page.emulator.admin("GET", "/state")["customers"][0]["first_name"] == "Łukasz 😀"


@pytest.mark.parametrize("rate", ["inf", "nan", -1, 1e9, "fast"])
def test_a_rate_out_of_range_is_refused(page: Page, rate: Any) -> None:
    upload(page, SAMPLES / "customers.csv")
    answer = start_run(page.client, {"confirm": True, "rate": rate})
    assert answer.status_code == 400 and "requests per second" in answer.json()["error"]
    assert page.client.get("/api/progress").json()["state"] == "idle"


def test_bad_requests_never_wedge_the_page(page: Page) -> None:
    upload(page, SAMPLES / "customers.messy.csv")
    odd = page.client.post("/api/mapping", json={"kind": "customers", "choices": {"Phone": 1}})
    assert odd.status_code == 400
    assert page.client.get("/api/info").status_code == 200
    nested = page.client.post(
        "/api/edit", content=b"[" * 5000 + b"]" * 5000, headers={"Content-Type": "application/json"}
    )
    assert nested.status_code == 400
    many = [{"index": 0, "column": 0, "value": "x"}] * 10_001
    too_many = page.client.post("/api/edit", json={"changes": many})
    assert too_many.status_code == 400 and "at most 10,000" in too_many.json()["error"]
    # a failed upload leaves no sheet behind to be run by mistake, and names the user's file
    bad = page.client.post(
        "/api/upload",
        json={"name": "fake.csv", "data": base64.b64encode(b"%PDF-1.4\x00\x01").decode()},
    )
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("fake.csv:") and "/ui/" not in bad.json()["error"]
    assert "sheet" not in page.client.get("/api/info").json()
    assert page.client.post("/api/plan", json={}).status_code == 400


def test_a_dry_run_can_be_stopped(page: Page, tmp_path: Path) -> None:
    sheet = tmp_path / "many.csv"
    sheet.write_text("phone_number\n" + "".join(f"+1310555{n:04d}\n" for n in range(5000, 5200)))
    page.emulator.admin("POST", "/config", {"latency_ms": 20})
    upload(page, sheet)
    assert page.client.post("/api/plan", json={"rate": 20, "diff": True}).status_code == 200
    wait_for(lambda: page.client.get("/api/progress").json()["done"] >= 2, 20)
    assert page.client.post("/api/stop", json={}).status_code == 200
    done = wait_done(page)
    assert done["facts"]["stopped"] is True
    assert page.client.get("/api/rows").status_code == 200  # the page was never frozen


def test_a_run_can_collect_webhook_events_and_join_them(page: Page, tmp_path: Path) -> None:
    phones = ["+13105550601", "+13105550602"]
    sheet = tmp_path / "promo.csv"
    sheet.write_text("to,text\n" + "".join(f"{p},Big sale today\n" for p in phones))
    page.emulator.admin("POST", "/config", {"time_scale": 0.001})
    upload(page, sheet)
    bad = start_run(page.client, {"confirm": True, "collect_events": "soon"})
    assert bad.status_code == 400 and "minutes" in bad.json()["error"]
    started = start_run(page.client, {"confirm": True, "rate": 0, "collect_events": 30})
    assert started.status_code == 200, started.text
    wait_for(lambda: page.client.get("/api/progress").json().get("phase") == "events", 20)
    page.emulator.admin("POST", "/inbound", {"phone_number": phones[0], "text": "Count me in"})
    wait_for(lambda: page.client.get("/api/progress").json()["events_received"] >= 5, 20)
    page.client.post("/api/stop", json={})  # ends the wait, keeps the events
    done = wait_done(page)
    assert done["events"] is True and done["counts"] == {"queued": 2}
    results = list(csv.DictReader(io.StringIO(page.client.get("/download/results").text)))
    assert [r["sonar__reply_text"] for r in results] == ["Count me in", ""]
    assert [r["sonar__outbound_confirmed"] for r in results] == ["yes", "yes"]
    events = page.client.get("/download/events")
    assert events.status_code == 200 and "new_unassigned_message" in events.text
    assert page.emulator.admin("GET", "/state")["webhooks"] == []  # the webhook is gone


def test_a_copy_uploaded_under_another_name_is_not_sent_again(page: Page, tmp_path: Path) -> None:
    sheet = tmp_path / "april.csv"
    sheet.write_text("to,text\n+13105550701,See you soon\n+13105550702,See you soon\n")
    upload(page, sheet)
    start_run(page.client, {"confirm": True, "rate": 0})
    assert wait_done(page)["counts"] == {"queued": 2}
    copy = tmp_path / "april (1).csv"
    copy.write_bytes(sheet.read_bytes())
    upload(page, copy)  # its own folder and journal; the ledger knows the sends
    facts = plan(page)
    assert facts["sent_before"] == 2 and facts["to_run"] == 0
    assert len(page.emulator.admin("GET", "/state")["messages"]) == 2


def test_rows_with_errors_are_told_in_the_page_s_words(page: Page) -> None:
    """The engine names no flags: a plan refused for rows with errors points at the grid and
    the page's own checkbox, not at --skip-invalid."""
    upload(page, SAMPLES / "customers.messy.csv")
    started = page.client.post("/api/plan", json={"rate": 0})
    assert started.status_code == 200, started.text
    done = wait_done(page)
    assert done["state"] == "failed"
    assert "Fix them in the grid" in done["error"] and "Leave out rows with errors" in done["error"]
    assert "--" not in done["error"]
    assert page.emulator.admin("GET", "/state")["customers"] == []


# -- Columns: what validation uses; advice in the page's own terms --------------------------------


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def column(page: Page, header: str) -> dict[str, Any]:
    body = page.client.get("/api/columns").json()
    found: dict[str, Any] = next(c for c in body["columns"] if c["header"] == header)
    return found


def test_phone_number_and_mobile_phone_both_feed_the_phone_mobile_first(
    page: Page, tmp_path: Path
) -> None:
    """The issue's sheet: "Phone Number" and "Mobile Phone". The page shows both as used,
    the mobile first (the several-phones rule), and every row is valid."""
    rows = [["First Name", "Phone Number", "Mobile Phone"]]
    for i in range(500):
        cell = f"+1 213 555 {2000 + i:04d}" if i % 2 else ""
        rows.append([f"P{i}", f"(310) 555-{1000 + i:04d}", cell])
    described = upload(page, write_csv(tmp_path / "phones.csv", rows))
    assert described["summary"]["valid"] == 500 and described["summary"]["invalid"] == 0
    assert described["choices"] == ["first_name", "phone_number", "phone_number"]
    mobile, phone = column(page, "Mobile Phone"), column(page, "Phone Number")
    assert mobile["target"] == "phone_number (1st choice)"
    assert phone["target"] == "phone_number (2nd choice, where 'Mobile Phone' is blank)"
    assert mobile["samples"] == ["+1 213 555 2001", "+1 213 555 2003", "+1 213 555 2005"]
    assert phone["samples"] == ["(310) 555-1000", "(310) 555-1001", "(310) 555-1002"]
    assert mobile["issues"] == [] and mobile["fix"] is None
    # the page posts back what it shows: nothing changes, no --map is needed
    choices = {c["header"]: c["choice"] for c in described["columns"]}
    mapped = page.client.post("/api/mapping", json={"kind": "customers", "choices": choices})
    assert mapped.status_code == 200, mapped.text
    assert mapped.json()["summary"]["valid"] == 500
    assert mapped.json()["command_line"] == "sonar-bulk customers upsert phones.csv"
    # "Don't import" on the mobile: the plain phone alone
    choices["Mobile Phone"] = column(page, "Mobile Phone")["off"]
    alone = page.client.post("/api/mapping", json={"kind": "customers", "choices": choices}).json()
    assert alone["choices"] == ["first_name", "phone_number", "skip"]
    assert "--map 'Mobile Phone=skip'" in alone["command_line"]


def test_a_conflict_is_marked_on_its_columns_with_a_one_click_fix(
    page: Page, tmp_path: Path
) -> None:
    rows = [["Landline", "Mobile (work)", "Plan"], ["3105550101", "2135550101", "3"]]
    upload(page, write_csv(tmp_path / "two.csv", rows))
    both = {"Landline": "phone_number", "Mobile (work)": "phone_number", "Plan": ""}
    mapped = page.client.post("/api/mapping", json={"kind": "customers", "choices": both}).json()
    assert mapped["summary"]["valid"] == 0  # two columns for one field: every row invalid
    second = next(c for c in mapped["columns"] if c["header"] == "Mobile (work)")
    assert second["choice"] == "phone_number" and second["role"] == "conflict"
    assert [i["code"] for i in second["issues"]] == ["column.duplicate"]
    assert "--" not in second["issues"][0]["message"]
    fix = second["fix"]
    assert fix == column(page, "Landline")["fix"]  # marked on both columns, one fix
    assert fix["label"] == "Keep 'Mobile (work)' (mobile first); don't import 'Landline'"
    fixed = page.client.post(
        "/api/mapping", json={"kind": "customers", "choices": {**both, **fix["choices"]}}
    ).json()
    assert fixed["summary"]["valid"] == 1
    assert fixed["choices"][:2] == ["", "phone_number"]
    assert all(c["fix"] is None and c["role"] != "conflict" for c in fixed["columns"])
    # a custom property with a type
    typed = {**both, **fix["choices"], "Plan": "property:Plan:number"}
    answer = page.client.post("/api/mapping", json={"kind": "customers", "choices": typed}).json()
    assert answer["choices"][2] == "property:Plan:number"
    assert column(page, "Plan")["target"] == "custom property Plan (number)"


def flags_outside_the_command_line(value: Any, key: str = "") -> list[str]:
    """Every text in an API answer that names a command-line option, but the command line
    box's own field."""
    from sonar_bulk.advice import FLAG

    if key == "command_line":
        return []
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in flags_outside_the_command_line(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in flags_outside_the_command_line(v, key)]
    return [value] if isinstance(value, str) and FLAG.search(value) else []


def test_a_column_another_column_s_choice_replaced_is_not_called_unknown(
    page: Page, tmp_path: Path
) -> None:
    """Found by a new-user trial: "Last Name" chosen as first_name left "First Name" out
    with a message calling it a column customers sheets don't have. Its note says what
    happened, with the fix, and nothing calls it unknown."""
    path = write_csv(
        tmp_path / "names.csv", [["Phone", "First Name", "Last Name"], ["3105550101", "Ann", "Lee"]]
    )
    upload(page, path)
    choices = {"Phone": "phone_number", "First Name": "first_name", "Last Name": "first_name"}
    answer = page.client.post("/api/mapping", json={"kind": "customers", "choices": choices})
    assert answer.status_code == 200, answer.text
    left = column(page, "First Name")
    assert left["note"] == "not imported: your choice of 'Last Name' gives first_name"
    assert left["issues"] == [] and left["fix"] is not None
    assert "no column" not in json.dumps(left)


def test_a_title_line_with_trailing_commas_is_found_and_the_kind_read_below_it(
    page: Page, tmp_path: Path
) -> None:
    sheet = tmp_path / "export.csv"
    sheet.write_text(
        "Recipients - generated 2026-01-05,,\n,,\nto,campaign_id,first_name\n"
        "+13105550101,spring,Ann\n"
    )
    described = upload(page, sheet)
    assert described["header_row_auto"] == 3 and described["kind"] == "campaign_recipients"
    assert described["summary"]["valid"] == 1 and described["rows"] == 1
    reset = page.client.post("/api/settings", json={"header_row": None}).json()
    assert reset["header_row_auto"] == 3  # "auto" finds it again


def test_advice_names_the_page_s_controls_and_flags_stay_in_the_command_line(
    page: Page, tmp_path: Path
) -> None:
    """A title line above the headers, unknown columns, a national number: the advice names
    "Header row", "Import extra columns as properties" and "Default region", each a control
    of the page that does what it says; flags appear only in the command line box."""
    rows = [["Customer export"], [], ["Phone", "First Name", "Plan"]]
    rows += [["020 7946 0018", "Ann", "gold"], ["3105550101", "Bob", "silver"]]
    path = write_csv(tmp_path / "title.csv", rows)
    answers = [upload(page, path)]
    # found by a new-user trial: the title line was read as the header; the row below that
    # holds the headers is found, and the page says so (and the command line gets it too)
    assert answers[0]["header_row_auto"] == 3 and answers[0]["headers"][0] == "Phone"
    assert "--header-row 3" in answers[0]["command_line"]
    assert answers[0]["summary"]["valid"] == 1
    first = page.client.post("/api/settings", json={"header_row": 1})  # set by hand
    answers.append(first.json())
    missing = first.json()["summary"]["sheet_issues"][0]["message"]
    assert 'set "Header row" to 3' in missing and first.json()["summary"]["valid"] == 0
    answers.append(page.client.get("/api/columns").json())

    moved = page.client.post("/api/settings", json={"header_row": 3})
    assert moved.status_code == 200, moved.text
    answers.append(moved.json())
    assert moved.json()["summary"]["valid"] == 1  # the London number is no US number
    assert "--header-row 3" in moved.json()["command_line"]
    unknown = column(page, "Plan")["issues"][0]["message"]
    assert 'tick "Import extra columns as properties"' in unknown
    answers.append(page.client.get("/api/rows?offset=0&limit=10").json())
    said = [i["message"] for r in answers[-1]["rows"] for i in r["issues"]]
    assert any(
        m.endswith('write it with + and the country code, or set "Default region"') for m in said
    )

    extra = page.client.post("/api/settings", json={"extra_columns": True}).json()
    assert extra["choices"][2] == "property:Plan" and extra["columns"][2]["issues"] == []
    assert "--extra-columns properties" in extra["command_line"]
    answers.append(extra)

    gb = page.client.post("/api/settings", json={"default_region": "gb"}).json()
    assert gb["settings"]["default_region"] == "GB" and "--default-region GB" in gb["command_line"]
    assert gb["summary"]["valid"] == 1  # now the US number is the one out
    answers.append(gb)
    bad = page.client.post("/api/settings", json={"default_region": "Narnia"})
    assert bad.status_code == 400 and "two letters" in bad.json()["error"]
    answers += [bad.json(), page.client.get("/api/info").json()]

    assert flags_outside_the_command_line(answers) == []
    for answer in answers[2:]:
        if "command_line" in answer:
            assert answer["command_line"].startswith("sonar-bulk customers upsert title.csv")


def test_advice_needing_an_option_the_page_lacks_says_what_to_do_in_the_sheet(
    page: Page, tmp_path: Path
) -> None:
    """A date with no time, a time with no zone, a blank merge field, a sheet not in UTF-8:
    the command line's advice names --default-send-time, --timezone, --allow-blank-merge and
    --encoding, which the page has no control for; the page says what to do in the sheet."""
    rows = [["to", "campaign_id", "send_at"], ["+13105550101", "spring", "2030-05-01"]]
    rows += [["+13105550102", "spring", "2030-05-01 09:00"]]
    answers = [upload(page, write_csv(tmp_path / "campaign.csv", rows))]
    answers.append(page.client.get("/api/rows?offset=0&limit=10").json())
    messages = [i["message"] for r in answers[-1]["rows"] for i in r["issues"]]
    rows = [["to", "text", "first_name"], ["+13105550103", "Hi {{first_name}}", ""]]
    answers.append(upload(page, write_csv(tmp_path / "sends.csv", rows)))
    answers.append(page.client.get("/api/rows?offset=0&limit=10").json())
    messages += [i["message"] for r in answers[-1]["rows"] for i in r["issues"]]
    assert any(m.endswith("add a time, such as 2030-05-01 09:00") for m in messages), messages
    assert any("add one (…-08:00), or a timezone column" in m for m in messages), messages
    assert any(
        m.endswith("write {{first_name|fallback}} to send a fallback instead") for m in messages
    )

    accents = tmp_path / "accents.csv"
    accents.write_bytes("phone_number,first_name\n+13105550104,José\n".encode("cp1252"))
    answers.append(upload(page, accents))
    said = json.dumps(answers[-1], ensure_ascii=False)
    assert "If accents look wrong, save it as UTF-8" in said

    assert flags_outside_the_command_line(answers) == []


# -- issue 19: results in the page's words, Resume counts the rows left ------------------------


def test_the_resume_plan_counts_the_rows_really_left(page: Page, tmp_path: Path) -> None:
    """A customers upsert stopped partway: the plan before Resume (the confirmation's count)
    is the rows not done, and the resumed run runs exactly those."""
    sheet = tmp_path / "members.csv"
    sheet.write_text(
        "phone_number,first_name\n"
        + "".join(f"+1310555{n:04d},Name {n}\n" for n in range(5000, 5040))
    )
    stopped = stopped_midway(page, sheet)
    assert stopped["resumable"] is True
    done = sum(stopped["counts"].get(s, 0) for s in ("created", "updated", "unchanged"))
    assert 0 < done < 40
    page.emulator.admin("POST", "/config", {"latency_ms": 0})
    facts = plan(page, diff=False, rate=0, resume=True)
    assert facts["to_run"] == 40 - done  # the confirmation's count: not the sheet's 40 rows
    assert plan(page, diff=False, rate=0)["to_run"] == 40  # a new run would run every row
    resumed = start_run(page.client, {"confirm": True, "rate": 0, "resume": True})
    assert resumed.status_code == 200, resumed.text
    final = wait_done(page)
    assert final["total"] == 40 - done and final["done"] == 40 - done
    assert len(page.emulator.admin("GET", "/state")["customers"]) == 40


def test_results_come_status_and_reason_first_with_friendly_names(page: Page) -> None:
    from sonar_bulk.schema import RESULT_COLUMNS
    from sonar_bulk.web.session import result_label

    assert all(not result_label(c).startswith("sonar") for c in RESULT_COLUMNS)
    assert result_label("sonar__http_status") == "HTTP"
    assert result_label("sonar__phone_from") == "Phone from"
    upload(page, SAMPLES / "customers.messy.csv")
    start_run(page.client, {"confirm": True, "rate": 0, "skip_invalid": True})
    assert wait_done(page)["state"] == "done"
    results = page.client.get("/api/results").json()
    columns = results["columns"]
    assert columns[:3] == ["Status", "Reason", "Row"]
    assert {"HTTP", "Attempts", "Finished at"} <= set(columns)
    assert not [c for c in columns if "sonar__" in c]
    assert results["counts"] == {"created": 2, "updated": 1, "invalid": 4}
    for row in results["rows"]:
        assert len(row["values"]) == len(columns)
        assert row["values"][:3] == [row["status"], row["error"], str(row["row"])]
    invalid = page.client.get("/api/results?status=invalid").json()
    assert invalid["total"] == results["counts"]["invalid"]
    assert {r["status"] for r in invalid["rows"]} == {"invalid"}


# -- issue 19: Review, issues by code and fixes in bulk ----------------------------------------


def review_sheet(tmp_path: Path) -> Path:
    """Customers with a lost leading zero (ZIP codes), a national number of another
    country, an extension, an email domain typo, and one good row."""
    rows = [["Phone", "First Name", "Email", "Zip"]]
    rows += [
        ["3105550104", "Ann", "ann@gmial.com", "2134"],
        ["3105550101 ext. 12", "Bob", "bob@gmial.com", "90210"],
        ["02079460018", "Cy", "cy@example.com", "10001"],
        ["3105550102", "Di", "di@example.com", "2139"],
        ["3105550103", "Ed", "ed@example.com", "60601"],
    ]
    return write_csv(tmp_path / "review.csv", rows)


def issue(summary: dict[str, Any], code: str) -> dict[str, Any]:
    found = [e for e in summary["issues"] if e["code"] == code]
    assert found, [e["code"] for e in summary["issues"]]
    entry: dict[str, Any] = found[0]
    return entry


def test_issues_are_listed_by_code_and_filter_the_rows(page: Page, tmp_path: Path) -> None:
    """Each code once, with its count, its rows, its first cell and its fix; the rows of one
    code come alone."""
    summary = upload(page, review_sheet(tmp_path))["summary"]
    typo = issue(summary, "email.typo")
    assert typo["count"] == 2 and typo["rows"] == 2 and typo["fixable"] == 2
    assert typo["first"] == {"index": 0, "column": 2} and typo["fix"] == "Fix the email domain"
    assert "did you mean ann@gmail.com?" in typo["example"]
    zero = issue(summary, "excel.lost_leading_zero")
    assert zero["count"] == 2 and zero["fix"] == "Restore the leading zero"
    assert sum(summary["by_code"].values()) == sum(e["count"] for e in summary["issues"])
    assert flags_outside_the_command_line(summary["issues"]) == []
    only = page.client.get("/api/rows?offset=0&limit=10&code=email.typo").json()
    assert only["total"] == 2 and [r["row"] for r in only["rows"]] == [2, 3]


def test_a_fix_in_bulk_edits_every_cell_with_the_issue(page: Page, tmp_path: Path) -> None:
    """Restore the leading zero (a ZIP), normalize a phone (an extension), fix an email
    domain: one action per code, its count, validated again, and the fixed sheet has the new
    cells."""
    upload(page, review_sheet(tmp_path))
    typo = page.client.post("/api/fix", json={"code": "email.typo"})
    assert typo.status_code == 200, typo.text
    assert typo.json()["changed"] == 2
    assert not [e for e in typo.json()["summary"]["issues"] if e["code"] == "email.typo"]
    zero = page.client.post("/api/fix", json={"code": "excel.lost_leading_zero"}).json()
    assert zero["changed"] == 2
    fixed = page.client.post("/api/fix", json={"code": "phone.extension"})
    assert fixed.status_code == 200, fixed.text
    # found by a new-user trial: a national number of no US shape was "normalized" to the
    # country its message guessed (07700 900123, a UK mobile, became +497700900123); a guess
    # is never applied in bulk
    guess = page.client.post("/api/fix", json={"code": "phone.ambiguous_region"})
    assert guess.status_code == 400 and "no fix in bulk" in guess.json()["error"]
    summary = page.client.get("/api/info").json()["summary"]
    assert [(e["code"], e["fix"]) for e in summary["issues"]] == [("phone.ambiguous_region", None)]
    cells = [r["cells"] for r in rows(page)["rows"]]
    assert cells[0] == ["3105550104", "Ann", "ann@gmail.com", "02134"]
    assert cells[1][0] == "+13105550101" and cells[1][2] == "bob@gmail.com"
    assert cells[2][0] == "02079460018" and cells[3][3] == "02139"
    fixed_sheet = page.client.get("/download/fixed").text
    assert "bob@gmail.com" in fixed_sheet and "02079460018" in fixed_sheet
    assert "First Name" in fixed_sheet.splitlines()[0]  # every other cell as typed
    none = page.client.post("/api/fix", json={"code": "email.typo"})
    assert none.status_code == 400 and "no cell to fix" in none.json()["error"]
    nofix = page.client.post("/api/fix", json={"code": "required.missing"})
    assert nofix.status_code == 400 and "no fix in bulk" in nofix.json()["error"]


def test_find_and_replace_in_a_column(page: Page, tmp_path: Path) -> None:
    upload(page, review_sheet(tmp_path))
    body = {"column": 2, "find": "@gmial.com", "replace": "@gmail.com"}
    answer = page.client.post("/api/replace", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] == 2
    assert [r["cells"][2] for r in rows(page)["rows"]][:2] == ["ann@gmail.com", "bob@gmail.com"]
    whole = {"column": 1, "find": "Bo", "replace": "Robert", "whole": True}
    assert page.client.post("/api/replace", json=whole).json()["changed"] == 0
    whole["find"] = "Bob"
    assert page.client.post("/api/replace", json=whole).json()["changed"] == 1
    assert rows(page)["rows"][1]["cells"][1] == "Robert"
    bad = page.client.post("/api/replace", json={"column": 9, "find": "x"})
    assert bad.status_code == 400 and "no column" in bad.json()["error"]
    empty = page.client.post("/api/replace", json={"column": 1, "find": ""})
    assert empty.status_code == 400


def test_deleted_rows_are_left_out_of_the_fixed_sheet_and_the_run(
    page: Page, tmp_path: Path
) -> None:
    """Delete selected rows, or every row with an issue: the grid, the fixed sheet and the
    plan read the rest (every row read ends in the plan with a status); edits stay on their
    cells; the upload keeps every row."""
    path = review_sheet(tmp_path)
    before = path.read_bytes()
    upload(page, path)
    page.client.post("/api/edit", json={"changes": [{"index": 4, "column": 1, "value": "Eddie"}]})
    gone = page.client.post("/api/delete", json={"code": "phone.ambiguous_region"})
    assert gone.status_code == 200, gone.text
    assert gone.json()["deleted"] == 1 and gone.json()["summary"]["deleted"] == 1
    picked = page.client.post("/api/delete", json={"indexes": [0]}).json()
    assert picked["rows"] == 3 and picked["summary"]["deleted"] == 2
    left = rows(page)["rows"]
    assert [r["row"] for r in left] == [3, 5, 6] and left[2]["cells"][1] == "Eddie"
    fixed = list(csv.reader(io.StringIO(page.client.get("/download/fixed").text)))
    assert [r[1] for r in fixed] == ["First Name", "Bob", "Di", "Eddie"]
    assert path.read_bytes() == before
    facts = plan(page, skip_invalid=True)
    assert facts["rows"] == 3, facts
    planned = page.client.get("/api/plan/rows?offset=0&limit=10").json()
    assert planned["total"] == 3 and all(r["status"] for r in planned["rows"])
    everything = page.client.post("/api/delete", json={"indexes": [0, 1, 2]})
    assert everything.status_code == 400 and "every row" in everything.json()["error"]
    nowhere = page.client.post("/api/delete", json={"indexes": [7]})
    assert nowhere.status_code == 400
    row = page.client.post("/api/settings", json={"header_row": 2})
    assert row.status_code == 400 and "header row" in row.json()["error"]


def test_the_fix_is_the_one_the_message_gives() -> None:
    """The fix read back from each check's own message: a phone's lost zero (its E.164), an
    extension, an email typo; none for other codes, nor for a national number of another
    country (its country is a guess)."""
    from sonar_bulk.fixes import suggested_fix
    from sonar_bulk.phones import normalize_phone

    lost = normalize_phone("612345678", "IT", was_number=True)
    assert lost.code == "excel.lost_leading_zero"
    assert suggested_fix(lost.code, lost.message) == "+390612345678"
    other = normalize_phone("02079460018", "US")
    assert "+442079460018 (GB)" in other.message
    assert suggested_fix(other.code, other.message) is None
    ext = normalize_phone("3105550101 x12", "US")
    assert suggested_fix(ext.code, ext.message) == "+13105550101"
    typo = "gmial.com looks like a typo of gmail.com; did you mean a.b@gmail.com? Fix the cell"
    assert suggested_fix("email.typo", typo) == "a.b@gmail.com"
    assert suggested_fix("phone.invalid", "not a valid phone number for US") is None
