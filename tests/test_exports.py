"""Real exports in (issue 18): the headers and habits of store and CRM exports import right
with no --map. Every sheet here is synthetic, made in the test, in a platform's header set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sonar_bulk.cli import cli
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


def _validate_json(sheet: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, ["validate", str(sheet), "--kind", "customers", "--json", *args]
    )
    assert result.exit_code in (0, 1), result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


GOOGLE_HEADERS = [
    "First Name",
    "E-mail 1 - Label",
    "E-mail 1 - Value",
    "E-mail 2 - Label",
    "E-mail 2 - Value",
    "Phone 1 - Label",
    "Phone 1 - Value",
    "Phone 2 - Label",
    "Phone 2 - Value",
]


def test_google_s_labelled_pairs_text_the_mobile(emu: EmulatorServer, tmp_path: Path) -> None:
    """Google Contacts' Phone N - Label says which Phone N - Value is the mobile, row by row: a
    mobile (of any spelling, starred first) before a plain number before a work or home one; a
    fax is never texted; of several numbers in one cell (:::), the best by its own label. The
    starred (primary) email is the one sent. Issues name the column the value came from."""
    sheet = write_sheet(
        tmp_path / "google.csv",
        GOOGLE_HEADERS,
        [
            ["Ana", "Work", "ana@work.example.com", "* Home", "ana@example.com"]
            + ["Work", "+14155550200", "Mobile", "+14155550201"],
            ["Bo", "", "bo@example.com", "", ""]
            + ["* Mobile", "+14155550202", "Mobile", "+14155550203"],
            ["Cy", "", "cy@example.com", "", ""]
            + ["Work ::: Mobile", "+14155550204 ::: +14155550205", "Main", "+14155550206"],
            ["Di", "", "di@example.com", "", ""] + ["Cy's cell", "+14155550207", "", ""],
            ["Ed", "", "ed@example.com", "", ""] + ["Home Fax", "+14155550208", "", ""],
            ["Flo", "", "flo@example.com", "", ""]
            + ["Work Fax", "+14155550209", "Main", "+14155550210"],
            ["Gil", "", "gil@example.com", "", ""]
            + ["Google Voice", "+14155550211", "Mobile", "555-01"],
        ],
    )
    doc = _validate_json(sheet)
    issues = [(i["row"], i["column"], i["code"], i["message"]) for i in doc["issues"]]
    assert [i[:3] for i in issues] == [
        (6, "Phone 1 - Value", "required.missing"),
        (8, "Phone 2 - Value", "phone.invalid"),
    ]
    assert "labelled fax or pager, never texted" in issues[0][3]
    assert not any(i["code"] == "column.unknown" for i in doc["issues"])  # labels are read
    said = CliRunner().invoke(cli, ["validate", str(sheet), "--kind", "customers"])
    assert "from 'Phone 1 - Value', 'Phone 2 - Value' by their labels" in said.output
    assert "+14155550204 ::: +14155550205 -> +14155550205" not in said.output
    result = bulk(emu, "customers", "upsert", str(sheet), "--skip-invalid")
    assert result.exit_code == 1, result.output  # Ed and Gil: invalid, reported
    people = {c["first_name"]: c for c in state(emu)["customers"]}
    assert {name: c["phone_number"] for name, c in people.items()} == {
        "Ana": "+14155550201",
        "Bo": "+14155550202",
        "Cy": "+14155550205",
        "Di": "+14155550207",
        "Flo": "+14155550210",
    }
    assert people["Ana"]["email"] == "ana@example.com"
    rows = read_dicts(tmp_path / "google.upsert.results.csv")
    assert [r["sonar__phone_from"] for r in rows] == [
        "Phone 2 - Value",
        "Phone 1 - Value",
        "Phone 1 - Value",
        "Phone 1 - Value",
        "",
        "Phone 2 - Value",
        "Phone 2 - Value",
    ]
    assert rows[2]["Phone 1 - Value"] == "'+14155550204 ::: +14155550205"  # kept as typed


def test_a_single_google_pair_and_its_label(tmp_path: Path) -> None:
    """One labelled pair alone still reads its label (a fax is not texted, ::: is split), and
    a label whose value column is mapped away is an unknown column like any other."""
    from sonar_bulk.schema import CUSTOMERS, match_headers

    headers = ["Phone 1 - Type", "Phone 1 - Value", "E-mail 1 - Type", "E-mail 1 - Value"]
    hmap = match_headers(CUSTOMERS, headers)
    assert hmap.fields == {"phone_number": 1, "email": 3} and hmap.labels == {1: 0, 3: 2}
    assert hmap.unknown == [] and hmap.alternates == {}
    mapped = match_headers(CUSTOMERS, [*headers, "Cell"], mapping={"Cell": "phone_number"})
    assert mapped.fields["phone_number"] == 4 and mapped.unknown == [0, 1]
    props = match_headers(
        CUSTOMERS, [*headers, "Cell"], mapping={"Cell": "phone_number"}, extra_columns="properties"
    )
    assert [p.header for p in props.properties] == ["Phone 1 - Type", "Phone 1 - Value"]
    sheet = write_sheet(
        tmp_path / "one.csv",
        headers,
        [
            ["Mobile", "+14155550220 ::: +14155550221", "", "a@example.com"],
            ["Fax", "+14155550222", "", ""],
        ],
    )
    doc = _validate_json(sheet)
    assert [(i["row"], i["code"]) for i in doc["issues"]] == [(3, "required.missing")]


def test_a_country_column_sets_each_row_s_region(emu: EmulatorServer, tmp_path: Path) -> None:
    """A country column (Mailchimp's CC here) reads each row's national number in its own
    country, whether it holds a code, a name in English or another language, or a calling
    code; blank is --default-region; a value that names no country is a warning naming its
    row and column, and the row is read in --default-region."""
    sheet = write_sheet(
        tmp_path / "mailchimp.csv",
        ["First Name", "Phone Number", "CC", "Zip"],
        [
            ["Ana", "01512 3456789", "DE", "10115"],
            ["Bo", "06 12 34 56 78", "france", "75001"],
            ["Cy", "0412 345 678", "Australia", "2000"],
            ["Di", "06 12345678", "Nederland", "1012 AB"],
            ["Ed", "07400 123456", "+44", "SW1A 1AA"],
            ["Flo", "07400 123457", "", ""],
            ["Gil", "07400 123458", "Atlantis", ""],
            ["Hal", "+1 415 555 0230", "DE", ""],
        ],
    )
    doc = _validate_json(sheet, "--default-region", "GB")
    assert [(i["row"], i["column"], i["code"], i["severity"]) for i in doc["issues"]] == [
        (8, "CC", "country.unknown", "warning")
    ]
    assert "read as GB numbers" in doc["issues"][0]["message"]
    said = CliRunner().invoke(
        cli, ["validate", str(sheet), "--kind", "customers", "--default-region", "GB"]
    )
    assert "8 numbers normalized to E.164 (region from 'CC' where given, else GB)" in said.output
    assert "01512 3456789 -> +4915123456789" in said.output
    result = bulk(emu, "customers", "upsert", str(sheet), "--default-region", "GB")
    assert result.exit_code == 0, result.output
    assert _phones(emu) == {
        "Ana": "+4915123456789",
        "Bo": "+33612345678",
        "Cy": "+61412345678",
        "Di": "+31612345678",
        "Ed": "+447400123456",
        "Flo": "+447400123457",
        "Gil": "+447400123458",
        "Hal": "+14155550230",
    }


def test_a_country_column_by_map_or_skipped(tmp_path: Path) -> None:
    """--map "Land=country" makes any column the country column; --map "Country=skip" leaves
    the phones to --default-region (so a German number is an error in the US)."""
    sheet = write_sheet(
        tmp_path / "land.csv", ["phone", "Land", "Country"], [["01512 3456789", "DE", "DE"]]
    )
    assert _validate_json(sheet, "--map", "Land=country")["errors"] == 0
    skipped = _validate_json(sheet, "--map", "Country=skip")
    assert [i["code"] for i in skipped["issues"]] == ["column.unknown", "phone.ambiguous_region"]
    assert _validate_json(sheet)["errors"] == 0  # Country, the person's, is read; Land unknown


def test_a_country_column_says_where_zip_codes_lose_a_zero(tmp_path: Path) -> None:
    """A four-digit ZIP is a US ZIP that lost its leading 0 only in a US (or other +1) row: in
    Australia, 2000 is a postcode."""
    sheet = write_sheet(
        tmp_path / "zips.csv",
        ["phone", "Zip", "Country"],
        [
            ["+14155550240", "2134", "US"],
            ["+61412345678", "2000", "AU"],
            ["+14155550241", "2135", ""],
        ],
    )
    doc = _validate_json(sheet)
    assert [(i["row"], i["code"]) for i in doc["issues"]] == [
        (2, "excel.lost_leading_zero"),
        (4, "excel.lost_leading_zero"),
    ]


def test_a_row_s_own_country_is_never_second_guessed(tmp_path: Path) -> None:
    """Found by a new-user trial: a GB row's number not valid in GB was suggested as German
    (+497700900013). A row whose country cell names its region gets no foreign guess; a row
    without one still does."""
    sheet = write_sheet(
        tmp_path / "mc.csv",
        ["Email Address", "Phone Number", "CC"],
        [
            ["a@example.com", "07700 900013", "GB"],
            ["b@example.com", "030 12345678", ""],
        ],
    )
    doc = _validate_json(sheet)
    found = {
        i["row"]: (i["code"], i["message"]) for i in doc["issues"] if i["column"] == "Phone Number"
    }
    assert found[2][0] == "phone.invalid" and "DE" not in found[2][1]
    assert found[3][0] == "phone.ambiguous_region" and "if it is +" in found[3][1]
