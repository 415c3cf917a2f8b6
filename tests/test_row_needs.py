"""validate, validate --split and the runs agree on which rows a command can send: for every
operation, the rows validate calls valid are the rows its run plans (a dry run against the
emulator, over loopback), and the rows it calls invalid are the rows the run refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.plan import OPERATIONS
from sonar_bulk.schema import KINDS
from sonar_bulk.sheets import read_sheet
from sonar_bulk.validation import ValidateOptions, validate_sheet

from .test_bulk_cli import bulk, emu, read_dicts, server, write_sheet  # noqa: F401

#: Per kind: a header and rows that validate calls valid or not, with the edges of each kind
#: (a key given another way, a value its command can't send, a blank the request needs).
SHEETS: dict[str, tuple[list[str], list[list[str]]]] = {
    "customers": (
        ["phone_number", "email", "first_name"],
        [
            ["+13105550101", "ana@example.com", "Ana"],
            ["", "ben@example.com", "Ben"],  # email alone: the upsert finds customers by phone
            ["+13105550103", "élif.4@example.com", "Elif"],  # internationalized: valid
            ["+13105550104", "dana@gmial.com", "Dana"],  # a typo: a warning, still sent
            ["+13105550105", "chen@@example.com", "Chen"],
            ["555-01O5", "", "Olga"],
        ],
    ),
    "properties": (
        ["phone_number", "email", "property_name", "value", "type"],
        [
            ["+13105550101", "", "plan", "gold", ""],
            ["", "ben@example.com", "plan", "gold", ""],  # set by email alone: refused by set
            ["", "ben@example.com", "vip", "", ""],  # a delete by email: fine
            ["+13105550104", "dana@example.com", "ltv", "$1,250.50", "number"],
            ["", "", "plan", "gold", ""],
            ["+13105550106", "", "", "gold", ""],
        ],
    ),
    "messages": (
        ["to", "text", "first_name"],
        [
            ["+13105550101", "Hi {{first_name}}", "Ana"],
            ["+13105550102", "Hi {{first_name}}", ""],  # a gap: an error
            ["+13105550103", "{{first_name|}}", ""],  # renders to nothing: no text to send
            ["+13105550104", "", "Dana"],
            ["(999) 000-0000", "Hello", "Eve"],
        ],
    ),
    "campaign_recipients": (
        ["to", "campaign_id"],
        [
            ["+13105550101", "fall"],
            ["+13105550102", ""],
            ["+13105550103", "fall"],
            ["31O-555-0104", "fall"],
        ],
    ),
    "message_tags": (
        ["external_message_id", "tag_name"],
        [["m1", "vip"], ["m2", ""], ["", "vip"]],
    ),
    "customer_keys": (
        ["phone_number"],
        # (a blank phone is an empty row there, skipped)
        [["+13105550101"], ["12"], ["(123) 456-7890"], ["+13105550104"]],
    ),
}


def valid_rows(path: Path, kind: str, command: str | None) -> list[bool]:
    v = validate_sheet(read_sheet(path), KINDS[kind], ValidateOptions(command=command))
    return [not bad for bad in v.invalid.tolist()]


@pytest.mark.parametrize("command", list(OPERATIONS))
def test_validate_split_and_the_run_agree(
    emu: EmulatorServer,  # noqa: F811
    tmp_path: Path,
    command: str,
) -> None:
    op = OPERATIONS[command]
    header, rows = SHEETS[op.kind]
    sheet = write_sheet(tmp_path / "in.csv", header, rows)

    checked = valid_rows(sheet, op.kind, None)
    for_command = valid_rows(sheet, op.kind, command)
    assert any(checked) and not all(checked)  # each sheet has both

    split = CliRunner().invoke(cli, ["validate", str(sheet), "--kind", op.kind, "--split"])
    assert split.exit_code == 1, split.output
    kept = read_dicts(tmp_path / "in.valid.csv")
    assert [list(r.values())[: len(header)] for r in kept] == [
        r for r, ok in zip(rows, checked, strict=True) if ok
    ]

    extra = ["-o", str(tmp_path / "records.csv")] if command == "customers get" else []
    planned = bulk(emu, *command.split(), str(sheet), "--dry-run", "--skip-invalid", *extra)
    assert planned.exit_code in (0, 1), planned.output
    plan = tmp_path / f"in.{op.short}.plan.csv"
    statuses = [r["sonar__status"] for r in read_dicts(plan)]
    # the run plans exactly the rows validate calls valid for this command, and refuses the rest
    assert statuses == ["planned" if ok else "invalid" for ok in for_command], planned.output
    # and every row validate (for every command of the kind) calls valid is planned
    assert all(s == "planned" for s, ok in zip(statuses, checked, strict=True) if ok)
    for row in read_dicts(plan):
        if row["sonar__status"] == "invalid":
            assert row["sonar__error"], row


def test_validate_checks_every_command_of_the_kind_and_a_run_its_own(tmp_path: Path) -> None:
    """A properties row keyed by email alone with a value: validate and properties set refuse
    it (and say why), properties delete deletes by email."""
    header, rows = SHEETS["properties"]
    sheet = write_sheet(tmp_path / "p.csv", header, rows[:3])
    v = validate_sheet(read_sheet(sheet), KINDS["properties"], ValidateOptions())
    ((row, column, _value, code, severity, message),) = v.issues.rows()
    assert (row, column, code, severity) == (3, "phone_number", "required.missing", "error")
    assert message.startswith("properties set needs phone_number: ")
    assert "properties delete" in message
    assert valid_rows(sheet, "properties", "properties set") == [True, False, True]
    assert valid_rows(sheet, "properties", "properties delete") == [True, True, True]


def test_a_text_its_merge_fields_leave_empty_is_not_sent(tmp_path: Path) -> None:
    """{{first_name|}} on a row without a first name renders nothing, and Sonar refuses a
    message without text: an error before the run, not a 400 during it."""
    header, rows = SHEETS["messages"]
    sheet = write_sheet(tmp_path / "m.csv", header, rows[:3])
    assert valid_rows(sheet, "messages", None) == [True, False, False]
    v = validate_sheet(read_sheet(sheet), KINDS["messages"], ValidateOptions())
    empty = [m for r, _c, _v, code, _s, m in v.issues.rows() if r == 4]
    assert empty == [
        "the text is empty once its merge fields are filled in on this row; Sonar needs a text "
        "(give a fallback that is not empty: {{field|fallback}})"
    ]
