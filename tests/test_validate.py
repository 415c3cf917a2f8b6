"""Validation: every issue code, on small sheets written as a person would write them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sonar_bulk.cli import cli
from sonar_bulk.issues import CODES, column_letter
from sonar_bulk.schema import KINDS, header_key, match_headers, parse_map_option
from sonar_bulk.sheets import read_sheet
from sonar_bulk.validation import ValidateOptions, Validation, validate_sheet

from .conftest import write_csv

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def run(tmp_path: Path, kind: str, text: str, **options: object) -> Validation:
    path = write_csv(tmp_path / "in.csv", text)
    opts = ValidateOptions(now=NOW, **options)  # type: ignore[arg-type]
    return validate_sheet(read_sheet(path), KINDS[kind], opts)


def found(v: Validation) -> list[tuple[int, str, str]]:
    return [(r, code, sev) for r, _c, _v, code, sev, _m in v.issues.rows()]


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Phone", "phone_number"),
        ("Phone Number", "phone_number"),
        ("MOBILE", "phone_number"),
        ("Cell", "phone_number"),
        ("\ufeffphone_number", "phone_number"),
        ("E-mail", "email"),
        ("Email Address", "email"),
        ("First Name", "first_name"),
        ("first-name", "first_name"),
        ("Surname", "last_name"),
        ("Zip Code", "zip_code"),
        ("Time Zone", "timezone"),
    ],
)
def test_header_aliases(header: str, field: str) -> None:
    hmap = match_headers(KINDS["customers"], [header])
    assert hmap.fields == {field: 0}


def test_header_key_folds_case_space_punctuation_bom() -> None:
    assert header_key("\ufeff E-Mail  Address!") == "emailaddress"


def test_map_option_overrides_aliases() -> None:
    mapping = parse_map_option(["Contact=phone_number", "Phone=email"])
    hmap = match_headers(KINDS["customers"], ["Contact", "Phone"], mapping=mapping)
    assert hmap.fields == {"phone_number": 0, "email": 1}
    with pytest.raises(ValueError, match="Source Header=field"):
        parse_map_option(["nonsense"])
    with pytest.raises(ValueError, match="not a customers column"):
        match_headers(KINDS["customers"], ["a"], mapping={"a": "bogus"})


def test_property_columns() -> None:
    hmap = match_headers(
        KINDS["customers"], ["phone", "property:plan", "Property: LTV : number", "Shoe size"]
    )
    assert [(p.name, p.type) for p in hmap.properties] == [("plan", None), ("LTV", "number")]
    assert hmap.unknown == [3]
    hmap = match_headers(KINDS["customers"], ["phone", "Shoe size"], extra_columns="properties")
    assert [(p.name, p.type) for p in hmap.properties] == [("Shoe size", None)]


def test_column_letter() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]


# --- codes -----------------------------------------------------------------------------------


def test_clean_customers(tmp_path: Path) -> None:
    v = run(
        tmp_path,
        "customers",
        "phone,first name,email,subscribed,zip,timezone,property:plan\n"
        "(310) 555-0101,Ana,ana@example.com,yes,90210,america/los_angeles,gold\n",
    )
    assert found(v) == []
    assert v.normalized["phone_number"].to_pylist() == ["+13105550101"]
    assert v.normalized["subscribed"].to_pylist() == ["true"]
    assert v.normalized["timezone"].to_pylist() == ["America/Los_Angeles"]
    assert v.properties["plan"][1].to_pylist() == ["gold"]
    assert (v.rows, v.valid_rows, v.invalid_rows, v.warnings) == (1, 1, 0, 0)


#: (kind, sheet text, options, expected issues): at least one case per documented code.
CASES: list[tuple[str, str, dict[str, object], list[tuple[int, str, str]]]] = [
    ("customers", "phone,email\n,a@example.com\n", {}, [(2, "required.missing", "error")]),
    ("customers", "phone\n555-01\n", {}, [(2, "phone.invalid", "error")]),
    ("customers", "phone\n020 7946 0958\n", {}, [(2, "phone.ambiguous_region", "error")]),
    ("customers", "phone\n+1 212 555 0142 ext 9\n", {}, [(2, "phone.extension", "warning")]),
    ("customers", "phone\n1.31056E+10\n", {}, [(2, "excel.damaged_number", "error")]),
    ("customers", "phone,email\n+13105550101,ana@\n", {}, [(2, "email.invalid", "error")]),
    ("customers", "phone,email\n+13105550101,ana@gmial.com\n", {}, [(2, "email.typo", "warning")]),
    ("customers", "phone,picture_url\n+13105550101,pic.png\n", {}, [(2, "url.invalid", "error")]),
    ("customers", "phone,subscribed\n+13105550101,maybe\n", {}, [(2, "bool.invalid", "error")]),
    ("customers", "phone,timezone\n+13105550101,Pacific\n", {}, [(2, "timezone.invalid", "error")]),
    (
        "customers",
        "phone,zip\n+13105550101,2134\n",
        {},
        [(2, "excel.lost_leading_zero", "warning")],
    ),
    ("customers", "phone,zip\n+13105550101,###\n", {}, [(2, "zip.invalid", "warning")]),
    ("customers", "phone,CC\n+13105550101,Atlantis\n", {}, [(2, "country.unknown", "warning")]),
    ("customers", "phone\n+13105550101\n(310) 555-0101\n", {}, [(3, "duplicate.key", "warning")]),
    (
        "messages",
        "to,text,SMS Subscription Status,Consent Date\n+13105550101,hi,unsubscribed,2024-01-01\n",
        {},
        [(1, "column.consent_unread", "error"), (1, "column.unknown", "warning")],
    ),
    (
        "customers",
        "phone,sms consent\n+13105550101,yes\n(310) 555-0101,no\n+13105550101,\n",
        {},
        [
            (2, "consent.conflict", "error"),
            (3, "duplicate.key", "warning"),
            (3, "consent.conflict", "error"),
            (4, "duplicate.key", "warning"),
        ],
    ),
    (
        "customers",
        "phone,property:n:number\n+13105550101,lots\n",
        {},
        [(2, "number.invalid", "error")],
    ),
    (
        "customers",
        "phone,property:d:date\n+13105550101,2024-13-01\n",
        {},
        [(2, "datetime.invalid", "error")],
    ),
    (
        "customers",
        "phone,property:x:colour\n+13105550101,red\n",
        {},
        [(1, "column.property_type", "error")],
    ),
    ("customers", "phone,shoe\n+13105550101,42\n", {}, [(1, "column.unknown", "warning")]),
    ("customers", "first_name\nAna\n", {}, [(1, "column.missing", "error")]),
    # two phone columns are no error: the mobile wins, the phone is its fallback (issue 18)
    ("customers", "phone,mobile\n+13105550101,+13105550102\n", {}, []),
    (
        "customers",
        "phone,email,e-mail\n+13105550101,a@example.com,b@example.com\n",
        {},
        [(1, "column.duplicate", "error")],
    ),
    ("customers", "phone,\n+13105550101,stray\n", {}, [(1, "column.unnamed", "warning")]),
    (
        "customers",
        "phone,first_name\n+13105550101,Ana,extra\n",
        {},
        [(2, "row.extra_cells", "error")],
    ),
    (
        "properties",
        "phone,email,property_name,value\n,,plan,gold\n",
        {},
        [(2, "required.missing", "error")],
    ),
    (
        "properties",
        "phone,property_name,value,type\n+13105550101,plan,gold,colour\n",
        {},
        [(2, "property.type_invalid", "error")],
    ),
    (
        "properties",
        "phone,property_name,value,type\n+13105550101,vip,perhaps,boolean\n",
        {},
        [(2, "bool.invalid", "error")],
    ),
    (
        "properties",
        "phone,property_name,value\n+13105550101,plan,a\n+13105550101,plan,b\n",
        {},
        [(3, "duplicate.key", "warning")],
    ),
    ("messages", "to,text\n+13105550101,Hi {{name}}\n", {}, [(2, "merge.unknown_field", "error")]),
    (
        "messages",
        "to,text,name\n+13105550101,Hi {{name}},\n",
        {},
        [(2, "merge.blank", "error")],
    ),
    (
        "messages",
        "to,text,name\n+13105550101,Hi {{name}},\n",
        {"allow_blank_merge": True},
        [(2, "merge.empty_value", "warning")],
    ),
    ("messages", "to,text,name\n+13105550101,Hi {{name|there}},\n", {}, []),
    ("messages", "to,text\n+13105550101,\n", {}, [(2, "required.missing", "error")]),
    (
        "messages",
        "to,text\n+13105550101,hi\n+13105550101,hi\n",
        {},
        [(3, "duplicate.key", "error")],
    ),
    ("messages", "to,text,junk\n+13105550101,hi,x\n", {}, [(1, "column.unknown", "warning")]),
    (
        "campaign_recipients",
        "to,campaign_id,send_at\n+13105550101,c1,2020-01-01T00:00Z\n",
        {},
        [(2, "datetime.past", "error")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id,send_at\n+13105550101,c1,soon\n",
        {},
        [(2, "datetime.invalid", "error")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id,send_at\n+13105550101,c1,2030-01-01 10:00\n",
        {},
        [(2, "datetime.no_timezone", "error")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id,send_at\n+13105550101,c1,03/04/2030 10:00 -05:00\n",
        {},
        [(2, "datetime.ambiguous", "warning")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id,send_at,timezone\n+13105550101,c1,2027-01-15,America/New_York\n",
        {},
        [(2, "datetime.no_time", "error")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id,send_at,timezone\n+13105550101,c1,2027-03-14 02:30,America/New_York\n",
        {},
        [(2, "datetime.dst_gap", "error")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id,send_at,timezone\n+13105550101,c1,2027-11-07 01:30,America/New_York\n",
        {},
        [(2, "datetime.dst_repeated", "warning")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id\n+13105550101,c1\n+13105550101,c1\n",
        {},
        [(3, "duplicate.key", "error")],
    ),
    (
        "campaign_recipients",
        "to,campaign_id\n+13105550101,\n",
        {},
        [(2, "required.missing", "error")],
    ),
    ("message_tags", "message id,tag\nabc,vip\nabc,vip\n", {}, [(3, "duplicate.key", "warning")]),
    ("message_tags", "message id,tag\n,vip\n", {}, [(2, "required.missing", "error")]),
    ("customer_keys", "phone\n+13105550101\n12\n", {}, [(3, "phone.invalid", "error")]),
    (
        "messages",
        'to,text,first name\n+13105550101,"Hi {{ first name }}, {{unclosed",Ana\n',
        {},
        [(2, "merge.syntax", "error")],
    ),
    ("messages", "to,text\n+13105550101,Hi }} there\n", {}, [(2, "merge.syntax", "error")]),
    ("messages", "to,text\n+13105550101,Hi {{}}\n", {}, [(2, "merge.syntax", "error")]),
    (
        "customers",
        "phone,first_name\n+13105550101,Ana\n",
        {"mapping": {"Nope": "first_name"}},
        [(1, "map.unknown_header", "error")],
    ),
    (
        "customers",
        'phone,first_name,last_name\n+13105550101,"Ann,Lee\n+13105550102,Bob,Lee\n"\n',
        {},
        [(2, "csv.unbalanced_quote", "error")],
    ),
    (
        "customers",
        "phone_number,first_name,last_name\n+13105550100,Ana,Lopez\n",
        {},
        [(2, "row.example", "error")],
    ),
]


@pytest.mark.parametrize(("kind", "text", "options", "expected"), CASES)
def test_issue_codes(
    tmp_path: Path,
    kind: str,
    text: str,
    options: dict[str, object],
    expected: list[tuple[int, str, str]],
) -> None:
    v = run(tmp_path, kind, text, **options)
    assert found(v) == expected
    for _r, column, _value, code, _s, message in v.issues.rows():
        assert code in CODES
        assert message and column


def test_every_documented_code_is_tested(tmp_path: Path) -> None:
    """Running the cases above produces every code in CODES, and no code that isn't there
    (but those only a workbook can have, tested with one: tests/test_excel_fidelity.py)."""
    produced: set[str] = set()
    for kind, text, options, _expected in CASES:
        produced.update(code for _r, code, _s in found(run(tmp_path, kind, text, **options)))
    assert produced | {"excel.formula_not_computed"} == set(CODES)


def test_issue_fields(tmp_path: Path) -> None:
    """An issue names the header as written, the value, and how to fix it."""
    v = run(tmp_path, "customers", "Mobile Phone,E-Mail\n(310) 555-0101,ana@\n")
    ((row, column, value, code, severity, message),) = v.issues.rows()
    assert (row, column, value, code, severity) == (2, "E-Mail", "ana@", "email.invalid", "error")
    assert message == "not a valid email address: there must be something after the @-sign"


def test_duplicate_names_first_row(tmp_path: Path) -> None:
    v = run(tmp_path, "customers", "phone\n+13105550101\n\n310.555.0101\n")
    ((row, _c, value, _code, _s, message),) = v.issues.rows()
    assert row == 4 and value == "310.555.0101"
    assert "duplicate of row 2 (+13105550101)" in message


def test_default_region(tmp_path: Path) -> None:
    v = run(tmp_path, "customer_keys", "phone\n020 7946 0958\n", default_region="GB")
    assert found(v) == []
    assert v.normalized["phone_number"].to_pylist() == ["+442079460958"]


def test_campaign_id_option_and_timezone_option(tmp_path: Path) -> None:
    text = "to,send_at\n+13105550101,2030-01-01 10:00\n+13105550102,\n"
    v = run(tmp_path, "campaign_recipients", text, campaign_id="fall", timezone="America/Chicago")
    assert found(v) == []
    assert v.normalized["campaign_id"].to_pylist() == ["fall", "fall"]
    assert v.normalized["send_at"].to_pylist() == ["2030-01-01T10:00:00-06:00", ""]


def test_timezone_column_wins_over_option(tmp_path: Path) -> None:
    text = "to,campaign_id,send_at,timezone\n+13105550101,c,2030-07-01 10:00,Europe/Paris\n"
    v = run(tmp_path, "campaign_recipients", text, timezone="America/Chicago")
    assert v.normalized["send_at"].to_pylist() == ["2030-07-01T10:00:00+02:00"]


def test_bad_options_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown region"):
        run(tmp_path, "customer_keys", "phone\n+13105550101\n", default_region="XX")
    with pytest.raises(ValueError, match="--timezone"):
        run(tmp_path, "customer_keys", "phone\n+13105550101\n", timezone="Mars/Base")


def test_messages_render_and_count_segments(tmp_path: Path) -> None:
    text = (
        'to,text,First Name\n+13105550101,"Hi {{first_name}}!",Ana\n'
        '+13105550102,"Привет {{ First Name }}",Борис\n'
    )
    v = run(tmp_path, "messages", text)
    assert found(v) == []
    assert v.normalized["text"].to_pylist() == ["Hi Ana!", "Привет Борис"]
    assert v.segments == {"messages": 2, "segments": 2, "gsm7": 1, "ucs2": 1, "max_segments": 1}


def test_tags_are_split(tmp_path: Path) -> None:
    v = run(tmp_path, "messages", 'to,text,tags\n+13105550101,hi,"a; b ,a,,c"\n')
    assert v.normalized["tag_names"].to_pylist() == ["a,b,c"]


def test_long_format_properties_infer_one_type_per_name(tmp_path: Path) -> None:
    text = (
        "phone,property_name,value\n+13105550101,ltv,10\n+13105550102,ltv,20.5\n"
        "+13105550103,vip,yes\n"
    )
    v = run(tmp_path, "properties", text)
    assert v.normalized["type"].to_pylist() == ["number", "number", "boolean"]
    assert v.normalized["value"].to_pylist() == ["10", "20.5", "true"]


def test_extra_columns_properties(tmp_path: Path) -> None:
    v = run(tmp_path, "customers", "phone,Shoe Size\n+13105550101,42\n", extra_columns="properties")
    assert found(v) == []
    assert v.properties["Shoe Size"][0] == "number"


def test_missing_column_points_at_the_real_header_row(tmp_path: Path) -> None:
    v = run(tmp_path, "customers", "Export of 2026-11-01\n\nPhone #,E-mail\n+13105550101,a@b.co\n")
    (message,) = [m for _r, _c, _v, code, _s, m in v.issues.rows() if code == "column.missing"]
    assert "pass --header-row 3" in message


# --- send_at is read out loud: a date alone, DST gaps and repeats ------------------------------

RECIPIENTS = "to,campaign_id,send_at,timezone\n"


def send_at(
    tmp_path: Path, cell: str, zone: str = "America/New_York", **options: object
) -> Validation:
    return run(
        tmp_path, "campaign_recipients", f"{RECIPIENTS}+13105550101,c1,{cell},{zone}\n", **options
    )


@pytest.mark.parametrize("cell", ["2027-01-15", "1/15/2027", "15 Jan 2027", "15.01.2027"])
def test_a_date_alone_is_an_error_that_names_it_and_the_flag(tmp_path: Path, cell: str) -> None:
    v = send_at(tmp_path, cell)
    ((row, column, value, code, severity, message),) = v.issues.rows()
    assert (row, column, value, code, severity) == (2, "send_at", cell, "datetime.no_time", "error")
    assert message.startswith(f"{cell} is a date with no time")
    assert "--default-send-time HH:MM" in message and "2027-01-15 09:00" in message
    assert v.normalized["send_at"].to_pylist() == [""]
    assert v.invalid_rows == 1


def test_an_excel_date_cell_without_a_time_is_a_date_alone(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["to", "campaign_id", "send_at", "timezone"])
    sheet.append(["+13105550101", "c1", dt.date(2027, 1, 15), "America/New_York"])
    book.save(tmp_path / "in.xlsx")
    opts = ValidateOptions(now=NOW)
    v = validate_sheet(read_sheet(tmp_path / "in.xlsx"), KINDS["campaign_recipients"], opts)
    assert found(v) == [(2, "datetime.no_time", "error")]


def test_default_send_time_gives_a_date_alone_its_local_time(tmp_path: Path) -> None:
    text = (
        RECIPIENTS + "+13105550101,c1,2027-01-15,America/New_York\n"
        "+13105550102,c1,7/15/2027,America/Los_Angeles\n"
        "+13105550103,c1,2027-01-15,\n"  # the zone of --timezone
        "+13105550104,c1,2027-01-15 14:00,America/New_York\n"  # its own time wins
        "+13105550105,c1,2027-01-15T10:00:00Z,\n"
    )
    v = run(
        tmp_path, "campaign_recipients", text, default_send_time="9:00", timezone="Europe/Paris"
    )
    assert found(v) == []
    assert v.normalized["send_at"].to_pylist() == [
        "2027-01-15T09:00:00-05:00",
        "2027-07-15T09:00:00-07:00",
        "2027-01-15T09:00:00+01:00",
        "2027-01-15T14:00:00-05:00",
        "2027-01-15T10:00:00+00:00",
    ]


def test_default_send_time_fills_a_send_at_option_without_a_time(tmp_path: Path) -> None:
    text = RECIPIENTS + "+13105550101,c1,,America/Chicago\n"
    v = run(tmp_path, "campaign_recipients", text, send_at="2027-02-01")
    assert found(v) == [(2, "datetime.no_time", "error")]
    v = run(tmp_path, "campaign_recipients", text, send_at="2027-02-01", default_send_time="08:30")
    assert v.normalized["send_at"].to_pylist() == ["2027-02-01T08:30:00-06:00"]


def test_a_time_in_the_spring_gap_is_an_error_naming_the_zone_and_the_gap(tmp_path: Path) -> None:
    v = send_at(tmp_path, "2027-03-14 02:30")
    ((_r, _c, value, code, severity, message),) = v.issues.rows()
    assert (value, code, severity) == ("2027-03-14 02:30", "datetime.dst_gap", "error")
    assert message.startswith(
        "2027-03-14 02:30 does not exist in America/New_York (clocks jump from 02:00 to 03:00)"
    )
    assert v.normalized["send_at"].to_pylist() == [""]


def test_a_default_send_time_in_the_gap_is_an_error_too(tmp_path: Path) -> None:
    v = send_at(tmp_path, "2027-03-14", default_send_time="02:30")
    ((_r, _c, _v, code, _s, message),) = v.issues.rows()
    assert code == "datetime.dst_gap"
    assert "2027-03-14 02:30 does not exist in America/New_York" in message
    assert "--default-send-time" in message


def test_a_repeated_time_is_a_warning_naming_the_offset_chosen(tmp_path: Path) -> None:
    v = send_at(tmp_path, "2027-11-07 01:30")
    ((_r, _c, value, code, severity, message),) = v.issues.rows()
    assert (value, code, severity) == ("2027-11-07 01:30", "datetime.dst_repeated", "warning")
    assert message.startswith(
        "2027-11-07 01:30 happens twice in America/New_York (clocks go back from 02:00 to "
        "01:00); read as the first, -04:00 (EDT)"
    )
    assert "2027-11-07T01:30-05:00" in message  # how to say the second
    assert v.invalid_rows == 0
    assert v.normalized["send_at"].to_pylist() == ["2027-11-07T01:30:00-04:00"]


@pytest.mark.parametrize(
    ("cell", "iso"),
    [
        ("2027-11-07T01:30:00-05:00", "2027-11-07T01:30:00-05:00"),
        ("2027-11-07T01:30:00-04:00", "2027-11-07T01:30:00-04:00"),
        ("2027-03-14T02:30:00-05:00", "2027-03-14T02:30:00-05:00"),
        ("2027-03-14T07:30:00Z", "2027-03-14T07:30:00+00:00"),
        ("11/07/2027 1:30 AM -05:00", "2027-11-07T01:30:00-05:00"),
    ],
)
def test_an_explicit_offset_is_never_ambiguous(tmp_path: Path, cell: str, iso: str) -> None:
    v = send_at(tmp_path, cell)
    assert [code for _r, code, _s in found(v)] in ([], ["datetime.ambiguous"])  # 11/07: m/d
    assert v.normalized["send_at"].to_pylist() == [iso]


def test_an_ordinary_local_time_is_read_silently(tmp_path: Path) -> None:
    v = send_at(tmp_path, "2027-03-14 03:30")
    assert found(v) == []
    assert v.normalized["send_at"].to_pylist() == ["2027-03-14T03:30:00-04:00"]


@pytest.mark.parametrize("bad", ["25:00", "9am", "09:00:00", ""])
def test_a_bad_default_send_time_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="--default-send-time: .* 24-hour clock"):
        send_at(tmp_path, "2027-01-15", default_send_time=bad)


# --- SMS consent -----------------------------------------------------------------------------

#: A Shopify customers export (its consent columns say yes/no) ...
SHOPIFY = (
    "First Name,Last Name,Email,Accepts Email Marketing,Phone,Accepts SMS Marketing\n"
    "Ana,Lopez,ana@example.com,yes,+13105550101,no\n"
    "Ben,Okafor,ben@example.com,no,+13105550102,yes\n"
    "Cy,Ng,cy@example.com,yes,+13105550103,\n"
)
#: ... and a Klaviyo profiles export (SUBSCRIBED / UNSUBSCRIBED / NEVER_SUBSCRIBED).
KLAVIYO = (
    "Phone Number,First Name,Email,SMS Marketing Consent,Email Marketing Consent\n"
    "+13105550101,Ana,ana@example.com,NEVER_SUBSCRIBED,SUBSCRIBED\n"
    "+13105550102,Ben,ben@example.com,SUBSCRIBED,NEVER_SUBSCRIBED\n"
    "+13105550103,Cy,cy@example.com,UNSUBSCRIBED,SUBSCRIBED\n"
    "+13105550104,Di,di@example.com,,SUBSCRIBED\n"
)


@pytest.mark.parametrize(
    "header",
    [
        "Accepts SMS Marketing",
        "SMS Marketing Consent",
        "SMS Opt-in",
        "SMS opt in",
        "sms_opt_in",
        "SMS Optin",
        "SMS consent",
        "Opted in to SMS",
        "Opted into SMS",
        "Accepts Marketing SMS",
        "SMS Marketing",
        "subscribed",
        "Opted In",
    ],
)
def test_sms_consent_headers_are_subscribed(header: str) -> None:
    hmap = match_headers(KINDS["customers"], ["Phone", header])
    assert hmap.fields == {"phone_number": 0, "subscribed": 1}


@pytest.mark.parametrize(
    "header",
    [
        "Accepts Email Marketing",
        "Email Marketing Consent",
        "Email opt in",
        "Email Opt-In",
        "email_opt_in",
        "Accepts Marketing",  # Shopify's older export: consent to email
        "Email Subscribed",
        "Email Consent",
        "Subscribed to Email",
        "Opted in to email",
    ],
)
def test_email_consent_headers_are_never_sms_consent(header: str) -> None:
    for extra in ("warn", "properties"):
        hmap = match_headers(KINDS["customers"], ["Phone", header], extra_columns=extra)
        assert "subscribed" not in hmap.fields, (header, extra)
    assert match_headers(KINDS["customers"], ["Phone", header]).unknown == [1]


def test_no_consent_alias_mentions_email() -> None:
    for kind in KINDS.values():
        for col in kind.columns:
            if col.type == "consent":
                assert col.aliases
                assert not [a for a in col.aliases if "mail" in header_key(a)], col.name


def test_shopify_export_sms_no_is_false_whatever_email_says(tmp_path: Path) -> None:
    v = run(tmp_path, "customers", SHOPIFY)
    assert v.headers.fields["subscribed"] == 5
    assert v.normalized["subscribed"].to_pylist() == ["false", "true", ""]
    assert v.errors == 0
    assert found(v) == [(1, "column.unknown", "warning")]  # Accepts Email Marketing, ignored
    (message,) = [m for *_x, m in v.issues.rows()]
    assert "'Accepts Email Marketing'; ignored" in message
    assert v.consent is not None
    assert (v.consent.consented, v.consent.not_consented, v.consent.unknown) == (1, 1, 1)
    assert (v.consent.column, v.consent.invalid) == ("Accepts SMS Marketing", 0)


def test_shopify_export_with_only_email_consent_leaves_subscribed_out(tmp_path: Path) -> None:
    text = "First Name,Email,Accepts Email Marketing,Phone\nAna,ana@example.com,yes,+13105550101\n"
    v = run(tmp_path, "customers", text)
    assert "subscribed" not in v.normalized
    assert v.consent is None
    assert found(v) == [(1, "column.unknown", "warning")]


def test_klaviyo_export_never_subscribed_is_false(tmp_path: Path) -> None:
    v = run(tmp_path, "customers", KLAVIYO)
    assert v.headers.fields["subscribed"] == 3
    assert v.normalized["subscribed"].to_pylist() == ["false", "true", "false", ""]
    assert found(v) == [(1, "column.unknown", "warning")]  # Email Marketing Consent
    assert v.consent is not None
    assert (v.consent.consented, v.consent.not_consented, v.consent.unknown) == (1, 2, 1)


def test_an_unknown_consent_value_is_an_error_naming_row_and_column(tmp_path: Path) -> None:
    text = "Phone,SMS Opt-in\n+13105550101,yes\n+13105550102,pending\n+13105550103,Opted Out\n"
    v = run(tmp_path, "customers", text)
    assert v.issues.rows() == [
        (
            3,
            "SMS Opt-in",
            "pending",
            "bool.invalid",
            "error",
            "not an SMS-consent value; use yes/no, true/false, 1/0, "
            "subscribed/unsubscribed/never_subscribed or opted in/opted out (blank leaves it "
            "as is)",
        )
    ]
    assert v.invalid.tolist() == [False, True, False]
    assert v.normalized["subscribed"].to_pylist() == ["true", "", "false"]
    assert v.consent is not None
    assert (v.consent.consented, v.consent.not_consented, v.consent.invalid) == (1, 1, 1)


def test_two_consent_columns_are_a_duplicate_and_no_row_goes_out(tmp_path: Path) -> None:
    """The schema's rule for two columns of one field (column.duplicate, every row invalid):
    a "no" in either is never sent as the other's "yes"."""
    text = "Phone,Accepts SMS Marketing,SMS Opt-in\n+13105550101,no,yes\n+13105550102,yes,no\n"
    v = run(tmp_path, "customers", text)
    assert found(v) == [(1, "column.duplicate", "error")]
    assert v.invalid.all() and v.valid_rows == 0
    (message,) = [m for *_x, m in v.issues.rows()]
    assert "both 'Accepts SMS Marketing' and 'SMS Opt-in' map to subscribed" in message
    # choosing one with --map drops the other: its "no" rows are sent as false
    v = run(tmp_path, "customers", text, mapping={"Accepts SMS Marketing": "skip"})
    assert v.errors == 0
    assert v.normalized["subscribed"].to_pylist() == ["true", "false"]


def test_consent_counts_in_json_and_summary(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sonar_bulk.cli import cli

    path = write_csv(tmp_path / "klaviyo.csv", KLAVIYO)
    result = CliRunner().invoke(cli, ["validate", str(path), "--kind", "customers", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["consent"] == {
        "field": "subscribed",
        "column": "SMS Marketing Consent",
        "consented": 1,
        "not_consented": 2,
        "unknown": 1,
        "invalid": 0,
    }
    assert (
        "  sms consent (subscribed, from 'SMS Marketing Consent'): 1 consented, 2 not consented "
        "(subscribed=false), 1 unknown (blank: left as is in Sonar; a new customer is subscribed)"
    ) in result.stderr.splitlines()
    # a sheet without a consent column has no counts, and says what Sonar does then
    path = write_csv(tmp_path / "plain.csv", "Phone,First Name\n+13105550101,Ana\n")
    result = CliRunner().invoke(cli, ["validate", str(path), "--kind", "customers", "--json"])
    assert result.exit_code == 0, result.output
    assert "consent" not in json.loads(result.stdout)
    assert "consented" not in result.stderr
    assert "sms consent: no consent column; each new customer is subscribed" in result.stderr


def test_a_sheet_with_no_consent_column_says_new_customers_are_subscribed(tmp_path: Path) -> None:
    """Five of the seven platforms' exports carry no SMS consent: validate and the run say
    that Sonar subscribes each customer they create (a properties set creates them too)."""
    hubspot = tmp_path / "hubspot.csv"
    hubspot.write_text("First Name,Email,Phone Number\nAna,ana@example.com,(617) 555-0188\n")
    said = CliRunner().invoke(cli, ["validate", str(hubspot), "--kind", "customers"])
    assert said.exit_code == 0, said.output
    assert "sms consent: no consent column; each new customer is subscribed" in said.output
    props = tmp_path / "props.csv"
    props.write_text("phone_number,property_name,value\n+16175550188,plan,gold\n")
    said = CliRunner().invoke(cli, ["validate", str(props), "--kind", "properties"])
    assert "a phone Sonar does not know becomes a new customer, subscribed" in said.output
    assert "--existing-only" in said.output
    ran = CliRunner().invoke(cli, ["customers", "upsert", str(hubspot), "--dry-run"])
    assert "no consent column; each new customer is subscribed" in ran.output, ran.output
    messages = tmp_path / "m.csv"
    messages.write_text("to,text\n+16175550188,Hi\n")
    said = CliRunner().invoke(cli, ["validate", str(messages), "--kind", "messages"])
    assert "sms consent" not in said.output


def test_values_without_a_header_are_counted_in_words(tmp_path: Path) -> None:
    """Found by a trial: "1 values in column B have no header"."""
    from sonar_bulk.validation import ValidateOptions, validate_sheet

    cases = [
        (["stray"], "1 value in column B has no header; it is ignored"),
        (["a", "b"], "2 values in column B have no header; they are ignored"),
    ]
    for n, (cells, said) in enumerate(cases):
        path = tmp_path / f"s{n}.csv"
        path.write_text("phone,\n" + "".join(f"+1310555{i:04d},{c}\n" for i, c in enumerate(cells)))
        v = validate_sheet(read_sheet(path), KINDS["customers"], ValidateOptions())
        messages = [m for *_, m in v.issues.iter_rows()]
        assert any(m.startswith(said) for m in messages), messages
