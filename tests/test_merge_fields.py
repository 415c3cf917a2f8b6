"""Merge fields (issue 18, point 6): a blank ``{{field}}`` is an error for its row, so no
"Hi , ..." ever goes out; ``{{field|fallback}}`` gives a fallback; ``--allow-blank-merge``
sends the gap. The renderer, validation, ``validate``, ``messages send`` against the emulator
over loopback, the Python API and the web page's JSON API agree."""

# The fixtures imported from test_bulk_cli are named again as test parameters, as pytest wants.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sonar_bulk as sb
from sonar_bulk import normalize as nz
from sonar_bulk.cli import cli
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.schema import KINDS
from sonar_bulk.sheets import read_sheet
from sonar_bulk.sms import SPACES, Field, parse_merge
from sonar_bulk.validation import ValidateOptions, Validation, validate_sheet
from tests.web_helpers import Page, start_run

from .test_bulk_cli import (
    TOKEN,
    bulk,
    emu,  # noqa: F401 (a fixture)
    read_dicts,
    server,  # noqa: F401 (a fixture)
    state,
    write_sheet,
)

HEADER = ["to", "text", "First Name"]
#: Three people; Ben's first name is blank.
PEOPLE = [
    ["+13105550101", "Hi {{first_name}}, your order shipped", "Ana"],
    ["+13105550102", "Hi {{first_name}}, your order shipped", ""],
    ["+13105550103", "Hi {{first_name}}, your order shipped", "Chen"],
]


def sent_texts(emu: EmulatorServer) -> dict[str, str]:
    return {m["to"]: m["text"] for m in state(emu)["messages"] if m["direction"] == "outbound"}


def check(tmp_path: Path, header: list[str], rows: list[list[str]], **opts: Any) -> Validation:
    path = write_sheet(tmp_path / "m.csv", header, rows)
    return validate_sheet(read_sheet(path), KINDS["messages"], ValidateOptions(**opts))


def issues(v: Validation) -> list[tuple[int, str, str, str, str]]:
    return [(r, col, code, sev, msg) for r, col, _v, code, sev, msg in v.issues.rows()]


# -- the renderer ------------------------------------------------------------------------------


def test_a_fallback_fills_a_blank_value_only() -> None:
    tpl = parse_merge("Hi {{first_name|there}}!")
    assert tpl.parts == ("Hi ", Field("first_name", "there"), "!")
    assert tpl.render({"first_name": "Ana"}) == "Hi Ana!"
    assert tpl.render({"first_name": ""}) == "Hi there!"
    assert tpl.render({}) == "Hi there!"  # a missing value is blank too
    assert tpl.fields == ["first_name"] and tpl.bare_fields == []
    assert tpl.blanks({"first_name": ""}) == []


@pytest.mark.parametrize(
    "blank",
    [
        "",
        "   ",
        "\t",
        "\u00a0",
        "\u200b",
        " \u3000\ufeff ",
        # found by an attack: an em space, a line separator, joiners, a word joiner, a soft
        # hyphen, the Mongolian vowel separator, a Hangul filler, a blank Braille pattern
        "\u2003",
        "\u2028",
        "\u200d\u200c",
        "\u2060",
        "\u00ad",
        "\u180e",
        "\u3164",
        "\u2800",
    ],
)
def test_a_value_of_spaces_alone_is_blank(blank: str) -> None:
    assert parse_merge("Hi {{a|you}}").render({"a": blank}) == "Hi you"
    assert parse_merge("Hi {{a}}").blanks({"a": blank}) == ["a"]
    assert parse_merge("Hi {{a}}").render({"a": f" {blank}Ana{blank} "}) == "Hi Ana"


def test_the_renderer_trims_what_validation_trims() -> None:
    assert SPACES == nz._SPACES


@pytest.mark.parametrize(
    ("tag", "field"),
    [
        ("{{first_name|there}}", Field("first_name", "there")),
        ("{{ first_name | there }}", Field("first_name", "there")),
        ("{{First Name|dear customer}}", Field("First Name", "dear customer")),
        ("{{a|x|y}}", Field("a", "x|y")),  # the first | starts the fallback; the rest is text
        ("{{a||}}", Field("a", "|")),
        ("{{a|}}", Field("a", "")),  # blank is fine here
        ("{{ a | }}", Field("a", "")),
        ("{{a}}", Field("a", None)),
    ],
)
def test_tag_shapes(tag: str, field: Field) -> None:
    tpl = parse_merge(tag)
    assert not tpl.errors and tpl.parts == (field,)


def test_an_empty_fallback_is_a_gap_on_purpose() -> None:
    tpl = parse_merge("Hi {{first|}} {{last}}")
    assert tpl.bare_fields == ["last"]
    assert tpl.blanks({"first": "", "last": "Lopez"}) == []
    assert tpl.render({"first": "", "last": "Lopez"}) == "Hi  Lopez"


def test_a_field_with_and_without_a_fallback_is_blank_where_bare() -> None:
    tpl = parse_merge("{{a|friend}}, {{a}}")
    assert tpl.fields == ["a"] and tpl.bare_fields == ["a"]
    assert tpl.blanks({"a": ""}) == ["a"]
    assert tpl.render({"a": "Ana"}) == "Ana, Ana"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Hi {{|there}}", "{{|there}} at character 4 has no column name before its |"),
        ("Hi {{ | }}", "{{|}} at character 4 has no column name before its |"),
        ("Hi {{a|b{c}}", "{{ at character 4 holds a brace"),
        ("Hi {{a|there", "{{ at character 4 is never closed with }}"),
        # found by an attack: a third brace went out as text ("Hi Ana}, sale")
        ("Hi {{first_name}}}, sale", "} at character 18 is a stray brace after {{first_name}}"),
    ],
)
def test_broken_fallback_tags_are_syntax_errors(text: str, error: str) -> None:
    (message,) = parse_merge(text).errors
    assert message.startswith(error)


# -- validation -------------------------------------------------------------------------------


def test_a_blank_merge_value_is_an_error_naming_field_and_column(tmp_path: Path) -> None:
    v = check(tmp_path, HEADER, PEOPLE)
    ((row, column, code, severity, message),) = issues(v)
    assert (row, column, code, severity) == (3, "text", "merge.blank", "error")
    assert "{{first_name}} (column 'First Name') is blank on this row" in message
    assert "{{first_name|fallback}}" in message and "--allow-blank-merge" in message
    assert v.invalid.tolist() == [False, True, False]
    texts = v.normalized["text"].to_pylist()
    assert texts == ["Hi Ana, your order shipped", "", "Hi Chen, your order shipped"]
    assert v.segments["messages"] == 2  # the blank row is not counted as a message


def test_spaces_alone_are_blank_too(tmp_path: Path) -> None:
    rows = [["+13105550101", "Hi {{First Name}}", "  \u00a0 "]]
    v = check(tmp_path, HEADER, rows)
    assert [i[2] for i in issues(v)] == ["merge.blank"] and v.invalid.all()


def test_every_blank_field_of_a_row_is_named_in_one_issue(tmp_path: Path) -> None:
    header = ["to", "text", "First Name", "city"]
    rows = [["+13105550101", "{{first_name}} in {{City}}, {{first_name}}: hello", "", ""]]
    ((_r, _c, code, _s, message),) = issues(check(tmp_path, header, rows))
    assert code == "merge.blank"
    assert message.startswith("{{first_name}} (column 'First Name'), {{City}} (column 'city') are")


def test_allow_blank_merge_sends_the_gap_with_a_warning(tmp_path: Path) -> None:
    v = check(tmp_path, HEADER, PEOPLE, allow_blank_merge=True)
    ((row, _c, code, severity, message),) = issues(v)
    assert (row, code, severity) == (3, "merge.empty_value", "warning")
    assert "(column 'First Name')" in message and "gap" in message
    assert not v.invalid.any()
    assert v.normalized["text"].to_pylist()[1] == "Hi , your order shipped"


def test_a_fallback_or_an_empty_fallback_is_no_issue(tmp_path: Path) -> None:
    rows = [
        ["+13105550101", "Hi {{first_name|there}}!", ""],
        ["+13105550102", "Hi {{ First Name | there }}!", "Ben"],
        ["+13105550103", "Hi{{first_name|}}!", ""],
    ]
    v = check(tmp_path, HEADER, rows)
    assert issues(v) == []
    assert v.normalized["text"].to_pylist() == ["Hi there!", "Hi Ben!", "Hi!"]


def test_a_text_option_template_is_checked_the_same_way(tmp_path: Path) -> None:
    header = ["to", "first_name"]
    rows = [["+13105550101", "Ana"], ["+13105550102", ""]]
    v = check(tmp_path, header, rows, text="Hi {{first_name}}")
    ((row, column, code, _s, message),) = issues(v)
    assert (row, column, code) == (3, "text", "merge.blank")  # the text, not another column
    assert "(column 'first_name')" in message
    fallback = check(tmp_path, header, rows, text="Hi {{first_name|there}}")
    assert fallback.normalized["text"].to_pylist() == ["Hi Ana", "Hi there"]


def test_single_braces_with_a_fallback_are_caught(tmp_path: Path) -> None:
    v = check(tmp_path, HEADER, [["+13105550101", "Hi {first_name|there}", "Ana"]])
    (message,) = [m for _r, _c, code, _s, m in issues(v) if code == "merge.syntax"]
    assert "write {{first_name|there}}" in message


# -- validate ---------------------------------------------------------------------------------


def test_validate_reports_the_blank_row_and_exits_1(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "m.csv", HEADER, PEOPLE)
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(sheet), "--kind", "messages"])
    assert result.exit_code == 1, result.output
    assert "row 3, text:" in result.stderr and "merge.blank (error)" in result.stderr
    assert "{{first_name|fallback}}" in result.stderr

    as_json = runner.invoke(cli, ["validate", str(sheet), "--kind", "messages", "--json"])
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["issues_by_code"] == {"merge.blank": 1} and doc["invalid_rows"] == 1
    assert [m["row"] for m in doc["rendered"]] == [2, 4]
    assert all("Hi ," not in m["text"] for m in doc["rendered"])

    allowed = runner.invoke(
        cli, ["validate", str(sheet), "--kind", "messages", "--allow-blank-merge", "--json"]
    )
    assert allowed.exit_code == 0, allowed.output
    doc = json.loads(allowed.stdout)
    assert doc["issues_by_code"] == {"merge.empty_value": 1} and doc["warnings"] == 1
    assert doc["rendered"][1]["text"] == "Hi , your order shipped"


# -- messages send, against the emulator -------------------------------------------------------


def test_a_send_refuses_a_blank_merge_row_and_skip_invalid_sends_the_others(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    sheet = write_sheet(tmp_path / "m.csv", HEADER, PEOPLE)
    refused = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert refused.exit_code == 1, refused.output
    assert "--skip-invalid" in refused.stderr
    assert sent_texts(emu) == {}

    dry = bulk(emu, "messages", "send", str(sheet), "--skip-invalid", "--dry-run", "--json")
    assert dry.exit_code == 1, dry.output
    plan = read_dicts(tmp_path / "m.send.plan.csv")
    assert [r["sonar__status"] for r in plan] == ["planned", "invalid", "planned"]
    assert plan[1]["sonar__error"].startswith("text: {{first_name}} (column 'First Name') is")
    assert json.loads(dry.stdout)["counts"] == {"invalid": 1, "planned": 2}
    assert sent_texts(emu) == {}

    done = bulk(emu, "messages", "send", str(sheet), "--yes", "--skip-invalid")
    assert done.exit_code == 1, done.output
    assert sent_texts(emu) == {
        "+13105550101": "Hi Ana, your order shipped",
        "+13105550103": "Hi Chen, your order shipped",
    }
    rows = read_dicts(tmp_path / "m.send.results.csv")
    assert [r["sonar__status"] for r in rows] == ["queued", "invalid", "queued"]
    assert "{{first_name}} (column 'First Name') is blank" in rows[1]["sonar__error"]


def test_allow_blank_merge_sends_the_gap(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "m.csv", HEADER, PEOPLE)
    done = bulk(emu, "messages", "send", str(sheet), "--yes", "--allow-blank-merge")
    assert done.exit_code == 0, done.output
    assert sent_texts(emu)["+13105550102"] == "Hi , your order shipped"
    assert len(sent_texts(emu)) == 3


def test_a_fallback_is_sent(emu: EmulatorServer, tmp_path: Path) -> None:
    rows = [[to, "Hi {{first_name|there}}", name] for to, _t, name in PEOPLE]
    sheet = write_sheet(tmp_path / "m.csv", HEADER, rows)
    done = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert done.exit_code == 0, done.output
    assert sent_texts(emu) == {
        "+13105550101": "Hi Ana",
        "+13105550102": "Hi there",
        "+13105550103": "Hi Chen",
    }


def test_a_text_option_with_a_fallback_is_sent(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "m.csv", ["to", "first_name"], [["+13105550101", "Ana"], ["+13105550102", ""]]
    )
    refused = bulk(emu, "messages", "send", str(sheet), "--text", "Hi {{first_name}}", "--yes")
    assert refused.exit_code == 1 and sent_texts(emu) == {}
    done = bulk(emu, "messages", "send", str(sheet), "--text", "Hi {{first_name|there}}", "--yes")
    assert done.exit_code == 0, done.output
    assert sent_texts(emu) == {"+13105550101": "Hi Ana", "+13105550102": "Hi there"}


# -- the Python API ----------------------------------------------------------------------------


def _records() -> list[dict[str, str]]:
    return [{"to": to, "text": text, "first_name": name} for to, text, name in PEOPLE]


def test_the_python_api_reports_and_allows_a_blank_merge(tmp_path: Path) -> None:
    checked = sb.validate(_records(), kind="messages", folder=tmp_path)
    assert not checked.ready and checked.invalid_rows == 1
    (issue,) = checked.issues
    assert (issue["row"], issue["code"], issue["severity"]) == (3, "merge.blank", "error")
    allowed = sb.validate(
        _records(), kind="messages", folder=tmp_path, name="again", allow_blank_merge=True
    )
    assert allowed.ready and [i["code"] for i in allowed.issues] == ["merge.empty_value"]


def test_the_python_api_sends_as_the_command_does(emu: EmulatorServer, tmp_path: Path) -> None:
    def send(name: str, **checks: Any) -> sb.RunReport:
        return sb.run(
            "messages send",
            _records(),
            base_url=emu.api_url,
            token=TOKEN,
            folder=tmp_path,
            name=name,
            yes=True,
            **checks,
        )

    skipped = send("one", skip_invalid=True)
    assert skipped.counts == {"queued": 2, "invalid": 1}
    assert set(sent_texts(emu)) == {"+13105550101", "+13105550103"}
    emu.admin("POST", "/reset")
    gap = send("two", allow_blank_merge=True)
    assert gap.ok and sent_texts(emu)["+13105550102"] == "Hi , your order shipped"


# -- the web page -----------------------------------------------------------------------------


def test_the_page_shows_the_blank_row_invalid_and_sends_the_others(
    page: Page, tmp_path: Path
) -> None:
    sheet = write_sheet(tmp_path / "m.csv", HEADER, PEOPLE)
    data = base64.b64encode(sheet.read_bytes()).decode()
    uploaded = page.client.post("/api/upload", json={"name": sheet.name, "data": data})
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["summary"]["by_code"] == {"merge.blank": 1}
    grid = page.client.get("/api/rows?offset=0&limit=100&errors=0").json()
    ana, ben, chen = grid["rows"]
    assert ben["invalid"] is True and ben["message"] is None
    (issue,) = ben["issues"]
    assert (issue["column"], issue["code"], issue["severity"]) == (1, "merge.blank", "error")
    assert "(column 'First Name')" in issue["message"]
    assert ana["message"]["text"] == "Hi Ana, your order shipped" and not ana["invalid"]
    assert chen["message"]["text"] == "Hi Chen, your order shipped"

    planned = page.client.post("/api/plan", json={"rate": 0})
    assert planned.status_code == 200, planned.text
    failed = _wait(page)
    assert failed["state"] == "failed" and "1 of 3 rows has errors" in failed["error"]
    refused = page.client.post("/api/run", json={"confirm": True, "rate": 0})
    assert refused.status_code == 400 and "make the plan first" in refused.json()["error"]
    assert _outbound(page) == {}
    started = start_run(page.client, {"confirm": True, "rate": 0, "skip_invalid": True})
    assert started.status_code == 200, started.text
    _wait(page)
    assert _outbound(page) == {
        "+13105550101": "Hi Ana, your order shipped",
        "+13105550103": "Hi Chen, your order shipped",
    }


def _outbound(page: Page) -> dict[str, str]:
    world: dict[str, Any] = page.emulator.admin("GET", "/state")
    return {m["to"]: m["text"] for m in world["messages"] if m["direction"] == "outbound"}


def _wait(page: Page) -> dict[str, Any]:
    from tests.emulator_helpers import wait_for

    def done() -> dict[str, Any] | None:
        got: dict[str, Any] = page.client.get("/api/progress").json()
        return got if got["state"] in ("done", "failed") else None

    result: dict[str, Any] = wait_for(done, 30)
    return result
