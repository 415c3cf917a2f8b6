"""The customer exports of common platforms import with no --map (issue 18, point 2): Shopify
(both layouts), HubSpot, Mailchimp, Klaviyo, Google Contacts (both layouts), Outlook and
Salesforce reports.

Each sheet is synthetic, made here in the platform's header set with fake people (555-01xx
numbers, example.com addresses), validated with the CLI and upserted into the emulator over
loopback. The table in sonar_bulk/docs/exports.md is :func:`exports_table` of the same header
sets, so the docs say what match_headers really does (``python -m tests.test_platform_exports``
prints it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import Workbook, load_workbook

from sonar_bulk.cli import cli
from sonar_bulk.emulator.server import EmulatorServer
from sonar_bulk.outputs import neutralize
from sonar_bulk.schema import CUSTOMERS, guess_kind, match_headers

from .test_bulk_cli import (
    bulk,
    emu,  # noqa: F401 (a fixture)
    read_dicts,
    server,  # noqa: F401 (a fixture)
    state,
    write_sheet,
)

ROOT = Path(__file__).resolve().parent.parent
EXPORTS_DOC = ROOT / "sonar_bulk" / "docs" / "exports.md"


@dataclass
class Export:
    """A platform's customer export: its headers, a few fake rows (header → cell; the other
    cells blank), and what must come of them."""

    name: str
    headers: list[str]
    rows: list[dict[str, str]]
    #: field → the header that feeds it (phone_number: every phone column, best first)
    fields: dict[str, str | list[str]]
    #: the country columns, best first
    countries: list[str] = field(default_factory=list)
    #: what the emulator holds afterwards, by first name
    stored: dict[str, dict[str, object]] = field(default_factory=dict)
    #: sonar__phone_from of each row
    phone_from: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


SHOPIFY = Export(
    "Shopify customers",
    [
        "Customer ID",
        "First Name",
        "Last Name",
        "Email",
        "Accepts Email Marketing",
        "Default Address Company",
        "Default Address Address1",
        "Default Address Address2",
        "Default Address City",
        "Default Address Province Code",
        "Default Address Country Code",
        "Default Address Zip",
        "Default Address Phone",
        "Phone",
        "Accepts SMS Marketing",
        "Total Spent",
        "Total Orders",
        "Note",
        "Tax Exempt",
        "Tags",
    ],
    [
        {
            "Customer ID": "7001",
            "First Name": "Ana",
            "Last Name": "Ito",
            "Email": "ana@example.com",
            "Accepts Email Marketing": "yes",
            "Default Address Country Code": "US",
            "Default Address Zip": "'02134",
            "Default Address Phone": "'+14155550110",
            "Phone": "'+14155550111",
            "Accepts SMS Marketing": "yes",
            "Total Spent": "120.50",
            "Tags": "vip, newsletter",
        },
        {
            "Customer ID": "7002",
            "First Name": "Bo",
            "Last Name": "Lee",
            "Email": "bo@example.com",
            "Default Address Country Code": "CA",
            "Default Address Zip": "K1A 0B1",
            "Default Address Phone": "(506) 234-5678",
            "Accepts SMS Marketing": "no",
        },
        {
            "Customer ID": "7003",
            "First Name": "Cy",
            "Last Name": "Ray",
            "Email": "cy@example.com",
            "Default Address Country Code": "GB",
            "Default Address Zip": "SW1A 1AA",
            "Phone": "'07400 123456",
        },
    ],
    {
        "phone_number": ["Phone", "Default Address Phone"],
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "subscribed": "Accepts SMS Marketing",
        "zip_code": "Default Address Zip",
    },
    ["Default Address Country Code"],
    {
        "Ana": {"phone_number": "+14155550111", "zip_code": "02134", "subscribed": True},
        "Bo": {"phone_number": "+15062345678", "zip_code": "K1A 0B1", "subscribed": False},
        "Cy": {"phone_number": "+447400123456", "zip_code": "SW1A 1AA"},
    },
    ["Phone", "Default Address Phone", "Phone"],
)

SHOPIFY_OLD = Export(
    "Shopify customers (older layout)",
    [
        "First Name",
        "Last Name",
        "Email",
        "Accepts Email Marketing",
        "Company",
        "Address1",
        "Address2",
        "City",
        "Province",
        "Province Code",
        "Country",
        "Country Code",
        "Zip",
        "Phone",
        "Accepts SMS Marketing",
        "Total Spent",
        "Total Orders",
        "Tags",
        "Note",
        "Tax Exempt",
    ],
    [
        {
            "First Name": "Ana",
            "Last Name": "Ito",
            "Email": "ana@example.com",
            "Country": "United States",
            "Country Code": "US",
            "Zip": "'02134",
            "Phone": "'+14155550111",
            "Accepts SMS Marketing": "yes",
        },
        {
            "First Name": "Bo",
            "Last Name": "Lee",
            "Email": "bo@example.com",
            "Country": "Australia",
            "Country Code": "AU",
            "Zip": "2000",
            "Phone": "0412 345 678",
        },
    ],
    {
        "phone_number": "Phone",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "subscribed": "Accepts SMS Marketing",
        "zip_code": "Zip",
    },
    ["Country", "Country Code"],
    {
        "Ana": {"phone_number": "+14155550111", "zip_code": "02134"},
        "Bo": {"phone_number": "+61412345678", "zip_code": "2000"},
    },
)

HUBSPOT = Export(
    "HubSpot contacts",
    [
        "Record ID",
        "First Name",
        "Last Name",
        "Email",
        "Phone Number",
        "Mobile Phone Number",
        "Company Name",
        "Job Title",
        "Street Address",
        "City",
        "State/Region",
        "Postal Code",
        "Country/Region",
        "Contact owner",
        "Lifecycle Stage",
        "Lead Status",
        "Marketing contact status",
        "Create Date",
        "Last Activity Date",
    ],
    [
        {
            "Record ID": "51",
            "First Name": "Ana",
            "Last Name": "Ito",
            "Email": "ana@example.com",
            "Phone Number": "(415) 555-0120",
            "Mobile Phone Number": "(415) 555-0121",
            "Postal Code": "94107",
            "Country/Region": "United States",
            "Lifecycle Stage": "customer",
        },
        {
            "Record ID": "52",
            "First Name": "Bo",
            "Last Name": "Lee",
            "Email": "bo@example.com",
            "Phone Number": "415-555-0122",
            "Country/Region": "",
        },
        {
            "Record ID": "53",
            "First Name": "Cy",
            "Last Name": "Ray",
            "Email": "cy@example.com",
            "Mobile Phone Number": "06 12 34 56 78",
            "Country/Region": "France",
        },
    ],
    {
        "phone_number": ["Mobile Phone Number", "Phone Number"],
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "zip_code": "Postal Code",
    },
    ["Country/Region"],
    {
        "Ana": {"phone_number": "+14155550121", "zip_code": "94107"},
        "Bo": {"phone_number": "+14155550122"},
        "Cy": {"phone_number": "+33612345678"},
    },
    ["Mobile Phone Number", "Phone Number", "Mobile Phone Number"],
)

MAILCHIMP = Export(
    "Mailchimp audience",
    [
        "Email Address",
        "First Name",
        "Last Name",
        "Address",
        "Phone Number",
        "Birthday",
        "MEMBER_RATING",
        "OPTIN_TIME",
        "OPTIN_IP",
        "CONFIRM_TIME",
        "CONFIRM_IP",
        "LATITUDE",
        "LONGITUDE",
        "GMTOFF",
        "DSTOFF",
        "TIMEZONE",
        "CC",
        "REGION",
        "LAST_CHANGED",
        "LEID",
        "EUID",
        "NOTES",
        "TAGS",
    ],
    [
        {
            "Email Address": "ana@example.com",
            "First Name": "Ana",
            "Last Name": "Ito",
            "Address": "1 Main St  Boston  MA  02134  US",
            "Phone Number": "(617) 555-0130",
            "MEMBER_RATING": "2",
            "OPTIN_TIME": "2024-03-01 10:00:00",
            "TIMEZONE": "America/New_York",
            "CC": "US",
            "REGION": "MA",
            "LEID": "101",
            "EUID": "ab12cd",
        },
        {
            "Email Address": "bo@example.com",
            "First Name": "Bo",
            "Last Name": "Lee",
            "Phone Number": "01512 3456789",
            "TIMEZONE": "Europe/Berlin",
            "CC": "DE",
            "TAGS": '"Berlin"',
        },
        {
            "Email Address": "cy@example.com",
            "First Name": "Cy",
            "Last Name": "Ray",
            "Phone Number": "+1 415 555 0131",
            "CC": "",
        },
    ],
    {
        "phone_number": "Phone Number",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email Address",
        "timezone": "TIMEZONE",
    },
    ["CC"],
    {
        "Ana": {"phone_number": "+16175550130", "timezone": "America/New_York"},
        "Bo": {"phone_number": "+4915123456789", "timezone": "Europe/Berlin"},
        "Cy": {"phone_number": "+14155550131"},
    },
)

KLAVIYO = Export(
    "Klaviyo profiles",
    [
        "Email",
        "Phone Number",
        "First Name",
        "Last Name",
        "Organization",
        "Title",
        "Address",
        "Address 2",
        "City",
        "State / Region",
        "Country",
        "Zip Code",
        "Timezone",
        "Source",
        "Email Marketing Consent",
        "SMS Marketing Consent",
        "Profile ID",
        "Date Added",
        "Last Active",
    ],
    [
        {
            "Email": "ana@example.com",
            "Phone Number": "+14155550140",
            "First Name": "Ana",
            "Last Name": "Ito",
            "Organization": "Example Co",
            "Country": "United States",
            "Zip Code": "94107",
            "Timezone": "America/Los_Angeles",
            "Email Marketing Consent": "SUBSCRIBED",
            "SMS Marketing Consent": "SUBSCRIBED",
            "Profile ID": "01HXYZ",
        },
        {
            "Email": "bo@example.com",
            "Phone Number": "06 12345678",
            "First Name": "Bo",
            "Last Name": "Lee",
            "Country": "Netherlands",
            "Zip Code": "1012 AB",
            "Email Marketing Consent": "SUBSCRIBED",
            "SMS Marketing Consent": "NEVER_SUBSCRIBED",
        },
    ],
    {
        "phone_number": "Phone Number",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "subscribed": "SMS Marketing Consent",
        "zip_code": "Zip Code",
        "timezone": "Timezone",
    },
    ["Country"],
    {
        "Ana": {"phone_number": "+14155550140", "subscribed": True},
        "Bo": {"phone_number": "+31612345678", "subscribed": False, "zip_code": "1012 AB"},
    },
)

GOOGLE = Export(
    "Google Contacts",
    [
        "First Name",
        "Middle Name",
        "Last Name",
        "Phonetic First Name",
        "Phonetic Middle Name",
        "Phonetic Last Name",
        "Name Prefix",
        "Name Suffix",
        "Nickname",
        "File As",
        "Organization Name",
        "Organization Title",
        "Organization Department",
        "Birthday",
        "Notes",
        "Photo",
        "Labels",
        "E-mail 1 - Label",
        "E-mail 1 - Value",
        "E-mail 2 - Label",
        "E-mail 2 - Value",
        "Phone 1 - Label",
        "Phone 1 - Value",
        "Phone 2 - Label",
        "Phone 2 - Value",
        "Address 1 - Label",
        "Address 1 - Formatted",
        "Address 1 - Street",
        "Address 1 - City",
        "Address 1 - PO Box",
        "Address 1 - Region",
        "Address 1 - Postal Code",
        "Address 1 - Country",
        "Address 1 - Extended Address",
        "Website 1 - Label",
        "Website 1 - Value",
    ],
    [
        {
            "First Name": "Ana",
            "Last Name": "Ito",
            "Labels": "* myContacts",
            "E-mail 1 - Label": "Work",
            "E-mail 1 - Value": "ana@work.example.com",
            "E-mail 2 - Label": "* Home",
            "E-mail 2 - Value": "ana@example.com",
            "Phone 1 - Label": "Work",
            "Phone 1 - Value": "(415) 555-0150",
            "Phone 2 - Label": "Mobile",
            "Phone 2 - Value": "(415) 555-0151",
            "Address 1 - Postal Code": "94107",
            "Address 1 - Country": "United States",
        },
        {
            "First Name": "Bo",
            "Last Name": "Lee",
            "E-mail 1 - Label": "* Other",
            "E-mail 1 - Value": "bo@example.com",
            "Phone 1 - Label": "Work Fax",
            "Phone 1 - Value": "(415) 555-0152",
            "Phone 2 - Label": "Main",
            "Phone 2 - Value": "07400 123456",
            "Address 1 - Country": "UK",
        },
        {
            "First Name": "Cy",
            "Last Name": "Ray",
            "E-mail 1 - Label": "Home",
            "E-mail 1 - Value": "cy@example.com",
            "Phone 1 - Label": "Mobile",
            "Phone 1 - Value": "+1 415-555-0153 ::: +1 415-555-0154",
            "Phone 2 - Label": "Home",
            "Phone 2 - Value": "+1 415-555-0155",
        },
    ],
    {
        "phone_number": ["Phone 1 - Value", "Phone 2 - Value"],
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": ["E-mail 1 - Value", "E-mail 2 - Value"],
        "picture_url": "Photo",
        "zip_code": "Address 1 - Postal Code",
    },
    ["Address 1 - Country"],
    {
        "Ana": {"phone_number": "+14155550151", "email": "ana@example.com"},
        "Bo": {"phone_number": "+447400123456", "email": "bo@example.com"},
        "Cy": {"phone_number": "+14155550153", "email": "cy@example.com"},
    },
    ["Phone 2 - Value", "Phone 2 - Value", "Phone 1 - Value"],
)

GOOGLE_OLD = Export(
    "Google Contacts (older layout)",
    [
        "Name",
        "Given Name",
        "Additional Name",
        "Family Name",
        "Yomi Name",
        "Given Name Yomi",
        "Additional Name Yomi",
        "Family Name Yomi",
        "Name Prefix",
        "Name Suffix",
        "Initials",
        "Nickname",
        "Short Name",
        "Maiden Name",
        "Birthday",
        "Gender",
        "Location",
        "Billing Information",
        "Directory Server",
        "Mileage",
        "Occupation",
        "Hobby",
        "Sensitivity",
        "Priority",
        "Subject",
        "Notes",
        "Language",
        "Photo",
        "Group Membership",
        "E-mail 1 - Type",
        "E-mail 1 - Value",
        "Phone 1 - Type",
        "Phone 1 - Value",
        "Phone 2 - Type",
        "Phone 2 - Value",
        "Address 1 - Type",
        "Address 1 - Formatted",
        "Address 1 - Street",
        "Address 1 - City",
        "Address 1 - PO Box",
        "Address 1 - Region",
        "Address 1 - Postal Code",
        "Address 1 - Country",
        "Address 1 - Extended Address",
        "Organization 1 - Type",
        "Organization 1 - Name",
        "Organization 1 - Title",
    ],
    [
        {
            "Name": "Ana Ito",
            "Given Name": "Ana",
            "Family Name": "Ito",
            "Group Membership": "* My Contacts",
            "E-mail 1 - Type": "* Home",
            "E-mail 1 - Value": "ana@example.com",
            "Phone 1 - Type": "Home",
            "Phone 1 - Value": "+1 415-555-0160",
            "Phone 2 - Type": "Mobile",
            "Phone 2 - Value": "+1 415-555-0161",
        },
        {
            "Name": "Bo Lee",
            "Given Name": "Bo",
            "Family Name": "Lee",
            "E-mail 1 - Type": "* Work",
            "E-mail 1 - Value": "bo@example.com",
            "Phone 1 - Type": "Work",
            "Phone 1 - Value": "+1 415-555-0162",
        },
    ],
    {
        "phone_number": ["Phone 1 - Value", "Phone 2 - Value"],
        "first_name": "Given Name",
        "last_name": "Family Name",
        "email": "E-mail 1 - Value",
        "picture_url": "Photo",
        "zip_code": "Address 1 - Postal Code",
    },
    ["Address 1 - Country"],
    {"Ana": {"phone_number": "+14155550161"}, "Bo": {"phone_number": "+14155550162"}},
    ["Phone 2 - Value", "Phone 1 - Value"],
)

OUTLOOK = Export(
    "Outlook contacts",
    [
        "First Name",
        "Middle Name",
        "Last Name",
        "Title",
        "Suffix",
        "Nickname",
        "Given Yomi",
        "Surname Yomi",
        "E-mail Address",
        "E-mail 2 Address",
        "E-mail 3 Address",
        "Home Phone",
        "Home Phone 2",
        "Business Phone",
        "Business Phone 2",
        "Mobile Phone",
        "Car Phone",
        "Other Phone",
        "Primary Phone",
        "Pager",
        "Business Fax",
        "Home Fax",
        "Other Fax",
        "Company Main Phone",
        "Callback",
        "Radio Phone",
        "Telex",
        "TTY/TDD Phone",
        "IMAddress",
        "Job Title",
        "Department",
        "Company",
        "Office Location",
        "Manager's Name",
        "Assistant's Name",
        "Assistant's Phone",
        "Company Yomi",
        "Business Street",
        "Business City",
        "Business State",
        "Business Postal Code",
        "Business Country/Region",
        "Home Street",
        "Home City",
        "Home State",
        "Home Postal Code",
        "Home Country/Region",
        "Other Street",
        "Other City",
        "Other State",
        "Other Postal Code",
        "Other Country/Region",
        "Personal Web Page",
        "Spouse",
        "Schools",
        "Hobby",
        "Location",
        "Web Page",
        "Birthday",
        "Anniversary",
        "Notes",
    ],
    [
        {
            "First Name": "Ana",
            "Last Name": "Ito",
            "E-mail Address": "ana@example.com",
            "Home Phone": "(415) 555-0170",
            "Business Phone": "(415) 555-0171",
            "Mobile Phone": "(415) 555-0172",
            "Business Fax": "(415) 555-0179",
            "Home Postal Code": "94107",
            "Home Country/Region": "United States of America",
            "Birthday": "0/0/00",
        },
        {
            "First Name": "Bo",
            "Last Name": "Lee",
            "E-mail Address": "bo@example.com",
            "Home Phone": "(415) 555-0173",
            "Business Phone": "(415) 555-0174",
            "Primary Phone": "(415) 555-0175",
        },
        {
            "First Name": "Cy",
            "Last Name": "Ray",
            "E-mail Address": "cy@example.com",
            "Business Phone": "0412 345 678",
            "Business Country/Region": "Australia",
        },
    ],
    {
        "phone_number": ["Mobile Phone", "Primary Phone", "Home Phone", "Business Phone"]
        + ["Other Phone"],
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "E-mail Address",
        "zip_code": "Home Postal Code",
    },
    ["Business Country/Region", "Home Country/Region", "Other Country/Region"],
    {
        "Ana": {"phone_number": "+14155550172", "zip_code": "94107"},
        "Bo": {"phone_number": "+14155550175"},
        "Cy": {"phone_number": "+61412345678"},
    },
    ["Mobile Phone", "Primary Phone", "Business Phone"],
)

SALESFORCE_CONTACTS = Export(
    "Salesforce contacts report",
    [
        "Contact ID",
        "Salutation",
        "First Name",
        "Last Name",
        "Title",
        "Account Name",
        "Email",
        "Phone",
        "Mobile",
        "Mailing Street",
        "Mailing City",
        "Mailing State/Province",
        "Mailing Zip/Postal Code",
        "Mailing Country",
        "Contact Owner",
        "Lead Source",
        "Email Opt Out",
        "Do Not Call",
        "Created Date",
    ],
    [
        {
            "Contact ID": "0035g00000AbCdE",
            "Salutation": "Ms.",
            "First Name": "Ana",
            "Last Name": "Ito",
            "Account Name": "Example Co",
            "Email": "ana@example.com",
            "Phone": "(415) 555-0180",
            "Mobile": "(415) 555-0181",
            "Mailing Zip/Postal Code": "94107",
            "Mailing Country": "USA",
            "Email Opt Out": "0",
            "Do Not Call": "0",
        },
        {
            "Contact ID": "0035g00000AbCdF",
            "First Name": "Bo",
            "Last Name": "Lee",
            "Email": "bo@example.com",
            "Phone": "085 012 3456",
            "Mailing Country": "Ireland",
            "Do Not Call": "1",
        },
    ],
    {
        "phone_number": ["Mobile", "Phone"],
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "zip_code": "Mailing Zip/Postal Code",
        "opted_out": "Do Not Call",
    },
    ["Mailing Country"],
    {
        "Ana": {"phone_number": "+14155550181", "subscribed": True},
        "Bo": {"phone_number": "+353850123456", "subscribed": False},  # Do Not Call
    },
    ["Mobile", "Phone"],
)

SALESFORCE_LEADS = Export(
    "Salesforce leads report",
    [
        "Lead ID",
        "First Name",
        "Last Name",
        "Title",
        "Company",
        "Email",
        "Phone",
        "Mobile",
        "Street",
        "City",
        "State/Province",
        "Zip/Postal Code",
        "Country",
        "Lead Status",
        "Lead Source",
        "Lead Owner",
        "Email Opt Out",
        "Created Date",
    ],
    [
        {
            "Lead ID": "00Q5g00000XyZ",
            "First Name": "Ana",
            "Last Name": "Ito",
            "Company": "Example Co",
            "Email": "ana@example.com",
            "Phone": "(415) 555-0190",
            "Zip/Postal Code": "94107",
            "Country": "US",
            "Lead Status": "Open",
        },
        {
            "Lead ID": "00Q5g00000XzA",
            "First Name": "Bo",
            "Last Name": "Lee",
            "Email": "bo@example.com",
            "Phone": "+1 415 555 0191",
            "Mobile": "222 123 4567",
            "Country": "Mexico",
        },
    ],
    {
        "phone_number": ["Mobile", "Phone"],
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "zip_code": "Zip/Postal Code",
    },
    ["Country"],
    {"Ana": {"phone_number": "+14155550190"}, "Bo": {"phone_number": "+522221234567"}},
    ["Phone", "Mobile"],
)

EXPORTS = [
    SHOPIFY,
    SHOPIFY_OLD,
    HUBSPOT,
    MAILCHIMP,
    KLAVIYO,
    GOOGLE,
    GOOGLE_OLD,
    OUTLOOK,
    SALESFORCE_CONTACTS,
    SALESFORCE_LEADS,
]
#: Written as .xlsx (text cells) as well as .csv.
AS_XLSX = {SHOPIFY.name, GOOGLE.name, OUTLOOK.name}


def write_export(export: Export, path: Path) -> Path:
    """The export's sheet at ``path`` (.csv or .xlsx, every cell text)."""
    rows = [[row.get(h, "") for h in export.headers] for row in export.rows]
    for typed in export.rows:
        assert set(typed) <= set(export.headers), set(typed) - set(export.headers)
    if path.suffix == ".csv":
        return write_sheet(path, export.headers, rows)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(export.headers)
    for row in rows:
        sheet.append(row)
    for column in sheet.iter_cols():
        for cell in column:
            cell.number_format = "@"
    book.save(path)
    return path


def _cases() -> list[object]:
    cases: list[object] = []
    for export in EXPORTS:
        for suffix in (".csv", ".xlsx") if export.name in AS_XLSX else (".csv",):
            cases.append(pytest.param(export, suffix, id=f"{export.slug}{suffix}"))
    return cases


def mapping_of(export: Export) -> tuple[dict[str, str | list[str]], list[str], list[str]]:
    """What match_headers makes of the export's headers: field → header (a phone or email
    several columns feed: all of them, best first), the country columns, the unknown ones."""
    hmap = match_headers(CUSTOMERS, export.headers)
    fields: dict[str, str | list[str]] = {}
    for name, index in hmap.fields.items():
        several = hmap.alternates.get(name)
        fields[name] = [export.headers[i] for i in several] if several else export.headers[index]
    countries = [export.headers[i] for i in hmap.countries]
    unknown = [export.headers[i] for i in hmap.unknown]
    return fields, countries, unknown


@pytest.mark.parametrize(("export", "suffix"), _cases())
def test_a_platform_export_imports_with_no_map(
    emu: EmulatorServer, tmp_path: Path, export: Export, suffix: str
) -> None:
    """The export is a customers sheet; each of its columns maps where it should; validate
    finds no error; customers upsert stores each person with the phone of the right column,
    in E.164 (a national number read in the row's country), and the names and email."""
    assert guess_kind(export.headers) == "customers"
    fields, countries, unknown = mapping_of(export)
    assert fields == export.fields
    assert countries == export.countries
    labels = [h for h in export.headers if h.endswith((" - Label", " - Type"))]
    labels = [h for h in labels if h.startswith(("Phone", "E-mail"))]
    assert sorted(unknown) == sorted(
        set(export.headers)
        - {h for f in fields.values() for h in ([f] if isinstance(f, str) else f)}
        - set(countries)
        - set(labels)
    )
    sheet = write_export(export, tmp_path / f"{export.slug}{suffix}")

    checked = CliRunner().invoke(cli, ["validate", str(sheet), "--kind", "customers", "--json"])
    assert checked.exit_code == 0, checked.output
    summary = json.loads(checked.stdout)
    assert summary["errors"] == 0 and summary["valid_rows"] == len(export.rows)
    assert set(summary["issues_by_code"]) <= {"column.unknown"}, summary["issues_by_code"]
    assert summary["issues_by_code"].get("column.unknown", 0) == len(unknown)

    result = bulk(emu, "customers", "upsert", str(sheet))
    assert result.exit_code == 0, result.output
    stored = {c["first_name"]: c for c in state(emu)["customers"]}
    assert set(stored) == {row[_first_name(export)] for row in export.rows}
    for row in export.rows:
        customer = stored[row[_first_name(export)]]
        assert customer["last_name"] == row[str(export.fields["last_name"])]
        expected: dict[str, object] = {"email": row.get(str(export.fields["email"]))}
        expected.update(export.stored[customer["first_name"]])
        for key, value in expected.items():
            assert customer[key] == value, (customer["first_name"], key)
    if export.phone_from:
        results = read_results(sheet.with_name(f"{export.slug}.upsert.results{suffix}"))
        assert [r["sonar__phone_from"] for r in results] == export.phone_from
        typed = [row.get(h, "") for row in export.rows for h in export.headers]
        if suffix == ".csv":  # a CSV cell that would start a formula is written as text
            typed = [neutralize(v) for v in typed]
        assert [r[h] for r in results for h in export.headers] == typed  # every cell, kept


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a results sheet (.csv or .xlsx) as header → text."""
    if path.suffix == ".csv":
        return read_dicts(path)
    book = load_workbook(path, read_only=True)
    sheet = book.worksheets[0]
    rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    book.close()
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def _first_name(export: Export) -> str:
    return str(export.fields["first_name"])


# -- the docs' table ---------------------------------------------------------------------------

#: The fields of the docs' table, in its column order.
TABLE_FIELDS = ("phone_number", "first_name", "last_name", "email", "subscribed", "zip_code")


def exports_table() -> str:
    """What each platform's columns become, in Markdown: the table in sonar_bulk/docs/
    exports.md, made with match_headers from the header sets the tests above import."""
    head = ["export", *(f"`{f}`" for f in TABLE_FIELDS), "other fields", "phones' country"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for export in EXPORTS:
        fields, countries, _ = mapping_of(export)

        def cell(value: str | list[str] | None) -> str:
            if value is None:
                return "-"
            if isinstance(value, str):
                return value
            if any(v.endswith(" - Value") for v in value):  # Google's: ranked by their labels
                return " / ".join(value) + " (by label)"
            return ", then ".join(value)

        others = [f"{cell(v)} → `{f}`" for f, v in fields.items() if f not in TABLE_FIELDS]
        row = [export.name, *(cell(fields.get(f)) for f in TABLE_FIELDS)]
        row += ["; ".join(others) or "-", ", then ".join(countries) or "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ignored_table() -> str:
    """The columns of each export that are no customer field, in Markdown (exports.md)."""
    lines = ["| export | columns reported as unknown and not sent |", "|---|---|"]
    for export in EXPORTS:
        _, _, unknown = mapping_of(export)
        lines.append(f"| {export.name} | {', '.join(unknown)} |")
    return "\n".join(lines)


def test_the_docs_table_is_what_match_headers_does() -> None:
    """exports.md shows what the header sets above map to (``python -m
    tests.test_platform_exports`` prints the tables to paste)."""
    doc = EXPORTS_DOC.read_text(encoding="utf-8")
    assert exports_table() in doc
    assert ignored_table() in doc


if __name__ == "__main__":
    print(exports_table())
    print()
    print(ignored_table())
