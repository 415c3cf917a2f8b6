"""Real exports in (issue 18): the headers and habits of store and CRM exports import right
with no --map. Every sheet here is synthetic, made in the test, in a platform's header set."""

from __future__ import annotations

from pathlib import Path

from sonar_bulk.emulator.server import EmulatorServer

from .test_bulk_cli import (
    bulk,
    emu,  # noqa: F401 (a fixture)
    read_dicts,
    server,  # noqa: F401 (a fixture)
    state,
    write_sheet,
)


def _phones(emu: EmulatorServer) -> dict[str, str]:
    """Customers Sonar has, by first name: their phone."""
    return {c.get("first_name", ""): c["phone_number"] for c in state(emu)["customers"]}


def test_a_crm_export_s_mobile_wins_over_its_phone(emu: EmulatorServer, tmp_path: Path) -> None:
    """HubSpot and Outlook export "Phone Number" (often a landline) and "Mobile Phone": a row's
    SMS phone is its mobile, the phone only where the mobile is blank, and the results say
    which."""
    sheet = write_sheet(
        tmp_path / "hubspot.csv",
        ["First Name", "Last Name", "Email", "Phone Number", "Mobile Phone"],
        [
            ["Ana", "Ito", "ana@example.com", "(415) 555-0100", "(415) 555-0101"],
            ["Bo", "Lee", "bo@example.com", "(415) 555-0102", ""],
            ["Cy", "Ray", "cy@example.com", "", "415.555.0103"],
        ],
    )
    result = bulk(emu, "customers", "upsert", str(sheet))
    assert result.exit_code == 0, result.output
    assert _phones(emu) == {"Ana": "+14155550101", "Bo": "+14155550102", "Cy": "+14155550103"}
    rows = read_dicts(tmp_path / "hubspot.upsert.results.csv")
    assert [r["sonar__phone_from"] for r in rows] == [
        "Mobile Phone",
        "Phone Number",
        "Mobile Phone",
    ]
    assert [r["sonar__status"] for r in rows] == ["created"] * 3


def test_a_store_export_falls_back_to_the_address_phone(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Shopify's customer export: "Phone", then "Default Address Phone" where it is blank, with
    the apostrophes Shopify writes to keep Excel from mangling numbers and ZIP codes."""
    sheet = write_sheet(
        tmp_path / "shopify.csv",
        [
            "First Name",
            "Last Name",
            "Email",
            "Default Address Phone",
            "Phone",
            "Default Address Zip",
        ],
        [
            ["Ana", "Ito", "ana@example.com", "'+14155550110", "'+14155550111", "'02134"],
            ["Bo", "Lee", "bo@example.com", "'+14155550112", "", "'94107"],
            ["Cy", "Ray", "cy@example.com", "", "", ""],
        ],
    )
    checked = bulk(emu, "customers", "upsert", str(sheet), "--dry-run")
    assert "from 'Phone' else 'Default Address Phone'" in checked.output
    result = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert result.exit_code == 1, result.output  # Cy has no phone at all: invalid, reported
    assert _phones(emu) == {"Ana": "+14155550111", "Bo": "+14155550112"}
    rows = read_dicts(tmp_path / "shopify.upsert.results.csv")
    assert [r["sonar__phone_from"] for r in rows] == ["Phone", "Default Address Phone", ""]
    assert [r["sonar__status"] for r in rows] == ["created", "created", "invalid"]


def test_map_picks_one_phone_column_alone(emu: EmulatorServer, tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "two.csv",
        ["first_name", "Phone", "Mobile"],
        [["Ana", "+14155550120", "+14155550121"], ["Bo", "+14155550122", ""]],
    )
    result = bulk(emu, "customers", "upsert", str(sheet), "--map", "Phone=phone_number")
    assert result.exit_code == 0, result.output
    assert _phones(emu) == {"Ana": "+14155550120", "Bo": "+14155550122"}
    assert "sonar__phone_from" not in read_dicts(tmp_path / "two.upsert.results.csv")[0]


def test_customers_get_never_replaces_a_list_it_did_not_write(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Issue 18 (8): a master list whose header is a backup's is the user's, never cut to a
    header line; a backup sonar-bulk wrote is written again, until the user edits it."""
    keys = write_sheet(tmp_path / "keys.csv", ["phone_number"], [["+14155550130"]])
    header = ["phone_number", "first_name", "last_name", "email", "subscribed"]
    master = write_sheet(
        tmp_path / "master.csv", header, [["+14155550130", "Ana", "Ito", "a@example.com", "true"]]
    )
    before = master.read_bytes()
    upsert = write_sheet(
        tmp_path / "new.csv", ["phone_number", "first_name"], [["+14155550130", "Ana"]]
    )
    assert bulk(emu, "customers", "upsert", str(upsert)).exit_code == 0
    refused = bulk(emu, "customers", "get", str(keys), "-o", str(master))
    assert refused.exit_code == 2 and "sonar-bulk did not write it" in refused.output
    assert master.read_bytes() == before
    backup = tmp_path / "backup.csv"
    for _ in range(2):  # its own backup: written again
        got = bulk(emu, "customers", "get", str(keys), "-o", str(backup))
        assert got.exit_code == 0, got.output
    assert read_dicts(backup)[0]["first_name"] == "Ana"
    backup.write_text(
        backup.read_text(encoding="utf-8") + "+14155550199,Zed,,,\n", encoding="utf-8"
    )
    edited = bulk(emu, "customers", "get", str(keys), "-o", str(backup))
    assert edited.exit_code == 2 and "Zed" in backup.read_text(encoding="utf-8")


def test_a_template_is_written_again_until_it_is_filled_in(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sonar_bulk.cli import cli

    out = tmp_path / "t.csv"
    for _ in range(2):
        made = CliRunner().invoke(cli, ["template", "customers", "-o", str(out)])
        assert made.exit_code == 0, made.output
    out.write_text(out.read_text(encoding="utf-8") + "+14155550140,Ana\n", encoding="utf-8")
    again = CliRunner().invoke(cli, ["template", "customers", "-o", str(out)])
    assert again.exit_code == 2 and "+14155550140" in out.read_text(encoding="utf-8")


def test_a_column_named_as_the_field_is_the_one_meant(emu: EmulatorServer, tmp_path: Path) -> None:
    """Found by an attack: a messages sheet's own `to` column is never overridden by a
    `Mobile` column beside it (nor falls back to it): the other column is not used."""
    sheet = write_sheet(
        tmp_path / "m.csv",
        ["to", "Mobile", "text"],
        [["+13105557701", "+13105557801", "hello"], ["+13105557702", "+13105557802", "hi"]],
    )
    result = bulk(emu, "messages", "send", str(sheet), "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(m["to"] for m in state(emu)["messages"]) == ["+13105557701", "+13105557702"]
    assert "sonar__phone_from" not in read_dicts(tmp_path / "m.send.results.csv")[0]
