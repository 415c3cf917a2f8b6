"""--changed-only: next week's export of the same list sends only what changed."""

from __future__ import annotations

from pathlib import Path

from sonar_bulk.emulator.server import EmulatorServer

from .test_bulk_cli import (
    CUSTOMERS,
    bulk,
    customers_sheet,
    emu,  # noqa: F401 (a fixture)
    posts,
    read_dicts,
    server,  # noqa: F401 (a fixture)
    us_numbers,
    write_sheet,
)


def test_next_weeks_export_sends_only_the_changed_rows(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(350, 20)
    first = customers_sheet(tmp_path / "week1.csv", phones)
    assert bulk(emu, "customers", "upsert", str(first)).exit_code == 0
    assert len(posts(emu, CUSTOMERS)) == 20
    # next week: the same people re-exported in another order, three of them changed
    rows = [[p, f"N{i}", "Test"] for i, p in enumerate(phones)]
    for i in (2, 7, 11):
        rows[i][1] = f"Changed{i}"
    week2 = write_sheet(
        tmp_path / "week2.csv", ["phone_number", "first_name", "last_name"], rows[::-1]
    )
    again = bulk(emu, "customers", "upsert", str(week2), "--changed-only")
    assert again.exit_code == 0, again.output
    assert len(posts(emu, CUSTOMERS)) == 23  # only the three changed rows went out
    results = read_dicts(tmp_path / "week2.upsert.results.csv")
    changed = {f"Changed{i}" for i in (2, 7, 11)}
    for r in results:
        if r["first_name"] in changed:
            assert r["sonar__status"] == "updated"
        else:
            assert r["sonar__status"] == "unchanged"
            assert r["sonar__error"].startswith("unchanged (sent 20")
            assert "week1.csv" in r["sonar__error"]
    # week 3 is week 1 again: the three names changed back are changes (the last request
    # applied to those customers was week 2's)
    week3 = tmp_path / "week3.csv"
    week3.write_bytes(first.read_bytes())
    back = bulk(emu, "customers", "upsert", str(week3), "--changed-only")
    assert back.exit_code == 0, back.output
    assert len(posts(emu, CUSTOMERS)) == 26
    assert (
        sum(
            r["sonar__status"] == "updated"
            for r in read_dicts(tmp_path / "week3.upsert.results.csv")
        )
        == 3
    )
    # without the flag, everything goes
    assert bulk(emu, "customers", "upsert", str(week2)).exit_code == 0
    assert len(posts(emu, CUSTOMERS)) == 46


def test_properties_set_changed_only_and_not_for_sends(emu: EmulatorServer, tmp_path: Path) -> None:
    phones = us_numbers(351, 4)
    rows = [[p, "tier", "gold"] for p in phones]
    sheet = write_sheet(tmp_path / "p.csv", ["phone_number", "property_name", "value"], rows)
    assert bulk(emu, "properties", "set", str(sheet)).exit_code == 0
    rows[0][2] = "platinum"
    sheet2 = write_sheet(tmp_path / "p2.csv", ["phone_number", "property_name", "value"], rows)
    again = bulk(emu, "properties", "set", str(sheet2), "--changed-only")
    assert again.exit_code == 0, again.output
    assert len(posts(emu, CUSTOMERS)) == 5
    statuses = [r["sonar__status"] for r in read_dicts(tmp_path / "p2.properties-set.results.csv")]
    assert statuses == ["ok", "unchanged", "unchanged", "unchanged"]
    # the first sheet again: gold is a change back from platinum
    sheet3 = tmp_path / "p3.csv"
    sheet3.write_bytes(sheet.read_bytes())
    assert bulk(emu, "properties", "set", str(sheet3), "--changed-only").exit_code == 0
    assert len(posts(emu, CUSTOMERS)) == 6
    messages = write_sheet(tmp_path / "m.csv", ["to", "text"], [[phones[0], "hi"]])
    refused = bulk(emu, "messages", "send", str(messages), "--yes", "--changed-only")
    assert refused.exit_code == 2 and "No such option '--changed-only'" in refused.output
