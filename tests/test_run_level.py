"""Issue 18, point 7: run-level failures stop the run. An answer that condemns every row
sharing something (an unknown campaign id's 404) stops those rows after a few such answers,
with one clear message; a refused token or account stops the whole run at the first. Over
real sockets, against the emulator."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sonar_bulk.api.endpoints import RUN_LEVEL_AFTER, Errors
from sonar_bulk.emulator.server import EmulatorServer

from .test_bulk_cli import (
    NO_SUBSCRIPTION,
    TOKEN,
    bulk,
    emu,  # noqa: F401 (a fixture)
    read_dicts,
    server,  # noqa: F401 (a fixture)
    state,
    us_numbers,
    write_sheet,
)

CAMPAIGNS = "/api/v1/campaigns"
KNOWN = "fall_sale_2026"  # seeded by the emulator (state.DEFAULT_CAMPAIGNS)
HEADER = ["to", "campaign_id"]


def campaign_posts(emu: EmulatorServer) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = emu.admin("GET", "/requests")
    return [e for e in log if e["method"] == "POST" and e["path"] == CAMPAIGNS]


def form_to(entry: dict[str, Any]) -> str:
    """The recipient of a logged campaign send."""
    return str(parse_qs(entry["body"])["to"][0])


def reason(campaign: str) -> str:
    return (
        f"not sent: campaign {campaign} was not found by Sonar (404 {Errors.CAMPAIGN_NOT_FOUND}, "
        f"{RUN_LEVEL_AFTER} times)"
    )


def journal_statuses(path: Path) -> Counter[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT state, status FROM rows").fetchall()
    return Counter(status if state == "done" else state for state, status in rows)


def lines_with(text: str, output: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_an_unknown_campaign_costs_a_few_requests_not_one_per_row(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """200 rows of a campaign Sonar does not know: three 404s, then the other 197 rows are
    skipped without a request, with one line saying why; exit 1."""
    phones = us_numbers(470, 200)
    sheet = write_sheet(tmp_path / "blast.csv", HEADER, [[p, "fal_sale_2026"] for p in phones])
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    # the default 16 workers: still one request at a time until an answer is not a 404
    assert [e["status"] for e in campaign_posts(emu)] == [404] * RUN_LEVEL_AFTER
    rows = read_dicts(tmp_path / "blast.campaign.results.csv")
    assert len(rows) == 200
    assert [r["to"] for r in rows] == phones
    failed, skipped = rows[:RUN_LEVEL_AFTER], rows[RUN_LEVEL_AFTER:]
    for r in failed:
        assert r["sonar__status"] == "failed", r
        assert r["sonar__http_status"] == "404"
        assert Errors.CAMPAIGN_NOT_FOUND in r["sonar__error"]
        assert r["sonar__attempts"] == "1"
    for r in skipped:
        assert r["sonar__status"] == "skipped", r
        assert r["sonar__error"] == reason("fal_sale_2026")
        assert r["sonar__http_status"] == "" and r["sonar__attempts"] == "0"
    # one clear line, on stderr; the resume command follows
    (line,) = lines_with("was not found by Sonar", result.stderr)
    assert line == f"sonar-bulk: warning: 197 rows not sent: {reason('fal_sale_2026')[10:]}"
    assert "error:" not in result.stderr
    assert "resume with:" in result.stderr
    assert "campaigns send: 197 skipped, 3 failed in" in result.stderr
    # the journal knows every row: a resume sends the skipped ones again
    assert journal_statuses(tmp_path / "blast.campaign.journal.sqlite") == {
        "failed": 3,
        "skipped": 197,
    }
    assert state(emu)["messages"] == [] and state(emu)["scheduled"] == []
    # found by a new-user trial: the failed rows held only the 3 refused, so a user who fixed
    # the id and ran that file reached 3 people of 200; the skipped ones are there too
    again = read_dicts(tmp_path / "blast.campaign.failed.csv")
    assert [r["to"] for r in again] == phones
    assert "the rows skipped for it are in the failed rows too" in result.stderr


def test_a_resume_meets_the_same_404_then_sends_once_the_campaign_exists(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(471, 40)
    sheet = write_sheet(tmp_path / "later.csv", HEADER, [[p, "winter_2026"] for p in phones])
    journal = tmp_path / "later.campaign.journal.sqlite"
    first = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--json")
    assert first.exit_code == 1, first.output
    summary = json.loads(first.stdout)
    assert summary["counts"] == {"skipped": 37, "failed": 3}
    assert summary["stopped"] == reason("winter_2026")
    assert summary["resume"].endswith(f"--resume {journal}")
    # still unknown: a resume sends nothing blindly; three more 404s and it stops again
    again = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--resume", str(journal))
    assert again.exit_code == 1, again.output
    assert len(campaign_posts(emu)) == 2 * RUN_LEVEL_AFTER
    assert Counter(
        r["sonar__status"] for r in read_dicts(tmp_path / "later.campaign.results.csv")
    ) == {
        "failed": 3,
        "skipped": 37,
    }
    assert len(lines_with("37 rows not sent: campaign winter_2026", again.stderr)) == 1
    # the campaign is made in Sonar: the resume sends every row, the failed and the skipped
    emu.admin("POST", "/campaigns", {"campaign_id": "winter_2026", "text": "Winter is here."})
    done = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--resume", str(journal))
    assert done.exit_code == 0, done.output
    assert [r["sonar__status"] for r in read_dicts(tmp_path / "later.campaign.results.csv")] == [
        "queued"
    ] * 40
    assert "not sent" not in done.stderr
    assert len(campaign_posts(emu)) == 2 * RUN_LEVEL_AFTER + 40
    sent = Counter(m["to"] for m in state(emu)["messages"])
    assert sent == dict.fromkeys(phones, 1)
    assert journal_statuses(journal) == {"queued": 40}


def test_a_mixed_sheet_sends_every_row_of_the_known_campaign(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Rows of two unknown campaigns among rows of a known one: each unknown id costs three
    404s and its other rows are skipped; every row of the known campaign goes out."""
    phones = us_numbers(472, 90)
    ids = [KNOWN, "gone_a", "gone_b"]
    rows = [[p, ids[i % 3]] for i, p in enumerate(phones)]
    sheet = write_sheet(tmp_path / "mixed.csv", HEADER, rows)
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes")
    assert result.exit_code == 1, result.output
    results = read_dicts(tmp_path / "mixed.campaign.results.csv")
    by_campaign: dict[str, Counter[str]] = {}
    for r in results:
        by_campaign.setdefault(r["campaign_id"], Counter())[r["sonar__status"]] += 1
    assert by_campaign == {
        KNOWN: Counter(queued=30),
        "gone_a": Counter(failed=3, skipped=27),
        "gone_b": Counter(failed=3, skipped=27),
    }
    for r in results:
        if r["sonar__status"] == "skipped":
            assert r["sonar__error"] == reason(r["campaign_id"])
    statuses = Counter(e["status"] for e in campaign_posts(emu))
    assert statuses == {202: 30, 404: 2 * RUN_LEVEL_AFTER}
    assert Counter(m["campaign_id"] for m in state(emu)["messages"]) == {KNOWN: 30}
    # one line per unknown campaign
    assert len(lines_with("27 rows not sent: campaign gone_a was not found", result.stderr)) == 1
    assert len(lines_with("27 rows not sent: campaign gone_b was not found", result.stderr)) == 1
    assert len(lines_with("not sent", result.stderr)) == 2


def test_fewer_refusals_than_the_limit_fail_their_rows_and_stop_nothing(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    phones = us_numbers(473, 10)
    rows = [[p, KNOWN if i >= RUN_LEVEL_AFTER else "typo_id"] for i, p in enumerate(phones)]
    sheet = write_sheet(tmp_path / "few.csv", HEADER, rows)
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes")
    assert result.exit_code == 1, result.output  # failed rows
    statuses = [r["sonar__status"] for r in read_dicts(tmp_path / "few.campaign.results.csv")]
    assert statuses == ["failed"] * RUN_LEVEL_AFTER + ["queued"] * 7
    assert "not sent" not in result.stderr
    assert "resume with:" not in result.stderr


def test_a_refused_account_still_stops_the_run_at_the_first_answer(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """A 403 No Active Subscription condemns every row, whatever its campaign: one request."""
    phones = us_numbers(474, 50)
    sheet = write_sheet(tmp_path / "nosub.csv", HEADER, [[p, "fal_sale_2026"] for p in phones])
    result = bulk(emu, "campaigns", "send", str(sheet), "--yes", token=NO_SUBSCRIPTION)
    assert result.exit_code == 5, result.output
    assert [e["status"] for e in campaign_posts(emu)] == [403]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("sonar-bulk: error:")]
    assert Errors.NO_SUBSCRIPTION in line
    rows = read_dicts(tmp_path / "nosub.campaign.results.csv")
    assert rows[0]["sonar__status"] == "failed" and rows[0]["sonar__http_status"] == "403"
    assert {r["sonar__status"] for r in rows[1:]} == {"skipped"}
    assert all("fatal" in r["sonar__error"] for r in rows[1:])
    assert "was not found by Sonar" not in result.stderr


def test_a_token_revoked_mid_run_stops_it_at_once(emu: EmulatorServer, tmp_path: Path) -> None:
    """The token stops working after the tenth send: the eleventh answer is a 401, and no
    request follows it."""
    phones = us_numbers(475, 50)
    sheet = write_sheet(tmp_path / "revoked.csv", HEADER, [[p, KNOWN] for p in phones])
    config = emu.emulator.config
    seen: list[int] = []

    def revoke(entry: dict[str, Any]) -> None:
        if entry["path"] == CAMPAIGNS:
            seen.append(entry["status"])
            if len(seen) == 10:
                config.tokens.pop(TOKEN, None)

    config.on_request = revoke
    try:
        result = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--concurrency", "1")
    finally:
        config.on_request = None
        config.tokens[TOKEN] = "valid"
    assert result.exit_code == 5, result.output
    assert [e["status"] for e in campaign_posts(emu)] == [202] * 10 + [401]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("sonar-bulk: error:")]
    assert Errors.TOKEN_NOT_FOUND in line
    rows = read_dicts(tmp_path / "revoked.campaign.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued"] * 10 + ["failed"] + ["skipped"] * 39
    assert rows[10]["sonar__http_status"] == "401"
    assert all("fatal" in r["sonar__error"] for r in rows[11:])
    assert len(state(emu)["messages"]) == 10


def test_a_campaign_gone_mid_run_skips_only_rows_not_yet_sent(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """The campaign is deleted in Sonar after the tenth send, with four requests in flight at
    a time: the requests already out finish (failed), three 404s condemn the campaign, and
    only rows that never had a request are skipped."""
    phones = us_numbers(476, 60)
    sheet = write_sheet(tmp_path / "gone.csv", HEADER, [[p, KNOWN] for p in phones])
    emu.admin("POST", "/config", {"latency_ms": 20})
    store = emu.emulator.store
    sent: list[int] = []

    def delete_campaign(entry: dict[str, Any]) -> None:
        if entry["path"] == CAMPAIGNS and entry["status"] == 202:
            sent.append(1)
            if len(sent) == 10:
                store.campaigns.pop(KNOWN, None)

    emu.emulator.config.on_request = delete_campaign
    try:
        result = bulk(emu, "campaigns", "send", str(sheet), "--yes", "--concurrency", "4")
    finally:
        emu.emulator.config.on_request = None
    assert result.exit_code == 1, result.output
    statuses = Counter(e["status"] for e in campaign_posts(emu))
    assert statuses[202] >= 10 and statuses[404] >= RUN_LEVEL_AFTER
    assert set(statuses) == {202, 404}
    rows = read_dicts(tmp_path / "gone.campaign.results.csv")
    counts = Counter(r["sonar__status"] for r in rows)
    # every request is a row's answer; every other row is skipped, never one that was sent
    assert counts == {
        "queued": statuses[202],
        "failed": statuses[404],
        "skipped": 60 - sum(statuses.values()),
    }
    assert counts["skipped"] > 0
    requested = {form_to(e) for e in campaign_posts(emu)}
    for r in rows:
        if r["sonar__status"] == "skipped":
            assert r["to"] not in requested
            assert r["sonar__error"] == reason(KNOWN)
    assert len(lines_with(f"rows not sent: campaign {KNOWN} was not found", result.stderr)) == 1
