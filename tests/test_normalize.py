"""Normalizers: phones, booleans, emails, time zones, dates, properties, SMS text."""

from __future__ import annotations

import datetime as dt

import numpy as np
import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonar_bulk import normalize as nz


@pytest.mark.parametrize(
    ("text", "e164", "code"),
    [
        pytest.param("+13105550101", "+13105550101", "", id="e164"),
        pytest.param("(310) 555-0101", "+13105550101", "", id="parens"),
        pytest.param("310.555.0101", "+13105550101", "", id="dots"),
        pytest.param("13105550101", "+13105550101", "", id="trunk-1"),
        pytest.param(" +1 646 555 0105 ", "+16465550105", "", id="spaces"),
        pytest.param("+442079460958", "+442079460958", "", id="uk-e164"),
        pytest.param("1.31056E+10", "", "excel.damaged_number", id="scientific"),
        pytest.param("555-01", "", "phone.invalid", id="too-short"),
        pytest.param("555-0199", "", "phone.invalid", id="no-area-code"),
        pytest.param("hello", "", "phone.invalid", id="not-a-number"),
        pytest.param("020 7946 0958", "", "phone.ambiguous_region", id="uk-national"),
        pytest.param("447911123456", "", "phone.ambiguous_region", id="missing-plus"),
        pytest.param("+1 212 555 0142 ext 12", "+12125550142", "phone.extension", id="extension"),
        pytest.param("", "", "", id="blank"),
    ],
)
def test_normalize_phone(text: str, e164: str, code: str) -> None:
    """Each form gives its E.164 number or its issue code."""
    result = nz.normalize_phone(text, "US")
    assert (result.e164, result.code) == (e164, code)
    if code:
        assert result.message


def test_lost_leading_zero_from_a_number_cell() -> None:
    """Where the 0 belongs to the number (Italian landlines), a number cell that lost it is
    reported; where the 0 is only a trunk prefix (UK), the number is still right."""
    result = nz.normalize_phone("612345678", "IT", was_number=True)
    assert result.code == "excel.lost_leading_zero"
    assert "+390612345678" in result.message
    result = nz.normalize_phone("2079460958", "GB", was_number=True)
    assert result.code == "" and result.e164 == "+442079460958"


def vector_column(
    cells: list[str], region: str, flags: list[bool] | None = None, blocks: bool = False
) -> nz.PhoneColumn:
    """phones_column on its vectorized path, however few the cells (below
    ``_VECTORIZE_FROM`` it would use the scalar path); ``blocks``: cells read a few at a
    time, as big columns are."""
    was_number = np.asarray(flags, dtype=bool) if flags is not None else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nz, "_VECTORIZE_FROM", 0)
        if blocks:
            mp.setattr(nz, "_BLOCK_ROWS", 3)
        return nz.phones_column(pa.array(cells, pa.large_string()), region, was_number)


def test_phones_column_number_cells() -> None:
    """A number cell (was_number) of 8 digits that lost its leading 0 is reported as such;
    the same digits typed as text are looked up in other regions, as normalize_phone does."""
    cells = ["61234567", "61234567", "612345678", "2079460958", "+39 06 1234 5678", "1234"]
    flags = [True, False, False, True, True, True]
    col = vector_column(cells, "IT", flags)
    codes = [p.code if p is not None else "" for p in col.problems]
    assert codes == [
        "excel.lost_leading_zero",
        "phone.ambiguous_region",
        "excel.lost_leading_zero",
        "excel.lost_leading_zero",
        "",
        "phone.invalid",
    ]
    assert col.e164.to_pylist()[4] == "+390612345678"
    assert_column_is_scalar(cells, "IT", flags)


def test_unknown_region_is_refused() -> None:
    from sonar_bulk.phonemeta import region_country_code

    with pytest.raises(ValueError, match="unknown region"):
        region_country_code("XX")


def test_phones_column_matches_scalar_rules() -> None:
    """The vectorized path and the scalar path agree on a mixed column."""
    cells = [
        "(310) 555-0101",
        "",
        "1.31056E+10",
        "+33612345678",
        "555-01",
        "13105550104",
        "+1 212 555 0142 ext 12",
        "999-555-0101",
    ]
    for col in (nz.phones_column(pa.array(cells, pa.large_string())), vector_column(cells, "US")):
        for i, cell in enumerate(cells):
            expected = nz.normalize_phone(cell, "US")
            assert col.e164[i].as_py() == expected.e164, cell
            got = col.problems[i].code if col.problems[i] is not None else ""
            assert got == expected.code, cell


nanp = st.builds(
    lambda npa, nxx, line, style: style.format(npa=npa, nxx=nxx, line=line),
    st.integers(200, 999),
    st.integers(0, 999).map(lambda x: f"{x:03d}"),
    st.integers(0, 9999).map(lambda x: f"{x:04d}"),
    st.sampled_from(
        [
            "+1{npa}{nxx}{line}",
            "({npa}) {nxx}-{line}",
            "{npa}.{nxx}.{line}",
            "1{npa}{nxx}{line}",
            "{npa}{nxx}{line}",
            "{npa}-{nxx}-{line}",
        ]
    ),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(nanp, min_size=1, max_size=80))
def test_fast_path_agrees_with_libphonenumber(cells: list[str]) -> None:
    """For every North American form, validity and E.164 equal phonenumbers' own verdict."""
    col = vector_column(cells, "US")
    for i, cell in enumerate(cells):
        num = phonenumbers.parse(cell, "US")
        valid = phonenumbers.is_valid_number(num)
        expected = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        assert col.e164[i].as_py() == (expected if valid else ""), cell


@given(st.text(max_size=25))
def test_normalize_phone_never_raises(text: str) -> None:
    """Arbitrary text gives a result, never an exception."""
    result = nz.normalize_phone(text, "US")
    assert bool(result.e164) or bool(result.code) or not text.strip()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("Yes", True),
        ("1", True),
        (" y ", True),
        ("FALSE", False),
        ("no", False),
        ("0", False),
        ("n", False),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_bool(text: str, value: bool | None) -> None:
    assert nz.parse_bool(text) is value


@pytest.mark.parametrize("text", ["maybe", "2", "yess", "on"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="true/false"):
        nz.parse_bool(text)


@given(
    st.booleans(),
    st.sampled_from([str.lower, str.upper, str.title]),
    st.sampled_from(["true/false", "yes/no", "1/0"]),
)
def test_parse_bool_roundtrip(value: bool, case: object, style: str) -> None:
    yes, no = style.split("/")
    text = case(yes if value else no)  # type: ignore[operator]
    assert nz.parse_bool(f" {text} ") is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # Shopify "Accepts SMS Marketing"
        ("yes", True),
        ("no", False),
        # Klaviyo "SMS Marketing Consent"
        ("SUBSCRIBED", True),
        ("UNSUBSCRIBED", False),
        ("NEVER_SUBSCRIBED", False),
        ("never subscribed", False),
        (" Never-Subscribed ", False),
        # generic opt-in columns
        ("Opted In", True),
        ("opted-in", True),
        ("OPTED_OUT", False),
        ("opt out", False),
        ("not subscribed", False),
        ("TRUE", True),
        ("0", False),
        ("y", True),
        ("N", False),
        ("\u00a0yes\t", True),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_consent(text: str, value: bool | None) -> None:
    assert nz.parse_consent(text) is value


@pytest.mark.parametrize(
    "text", ["maybe", "pending", "SUPPRESSED", "subscribe", "-1", "_1", "2", "yes please", "on"]
)
def test_parse_consent_never_guesses(text: str) -> None:
    """A value that is not plainly yes or no is an error, never taken for yes."""
    with pytest.raises(ValueError, match="not an SMS-consent value .*never_subscribed"):
        nz.parse_consent(text)


def test_consent_words_are_the_bool_words_and_more() -> None:
    """One vocabulary: every bool word means the same as consent, no word means both, and the
    bool type itself does not take the consent words (a property "subscribed" stays text)."""
    assert nz.TRUE_WORDS < nz.CONSENT_TRUE_WORDS and nz.FALSE_WORDS < nz.CONSENT_FALSE_WORDS
    assert not nz.CONSENT_TRUE_WORDS & nz.CONSENT_FALSE_WORDS
    for word in nz.CONSENT_TRUE_WORDS | nz.CONSENT_FALSE_WORDS:
        assert nz.parse_consent(word.upper()) is (word in nz.CONSENT_TRUE_WORDS)
    with pytest.raises(ValueError):
        nz.parse_bool("subscribed")
    assert nz.infer_property_type(["SUBSCRIBED", "NEVER_SUBSCRIBED"]) == "string"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("ana@example.com", True),
        ("a.b+tag@sub.example.co.uk", True),
        ("ana@example", False),
        ("chen@@example.com", False),
        ("no at sign", False),
        ("ana@exa mple.com", False),
    ],
)
def test_email_pattern(text: str, ok: bool) -> None:
    """The pattern the validator runs with Arrow's regex engine."""
    import pyarrow.compute as pc

    assert pc.match_substring_regex(nz.to_arrow([text]), nz.EMAIL_PATTERN).to_pylist() == [ok]


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("America/Los_Angeles", "America/Los_Angeles"),
        ("america/los_angeles", "America/Los_Angeles"),
        ("UTC", "UTC"),
        ("Europe/London", "Europe/London"),
        ("", ""),
        ("Pacific", None),
        ("Mars/Olympus_Mons", None),
    ],
)
def test_canonical_timezone(text: str, zone: str | None) -> None:
    assert nz.canonical_timezone(text) == zone


@pytest.mark.parametrize(
    ("text", "iso", "has_time", "ambiguous"),
    [
        ("2030-12-01T09:30:00-08:00", "2030-12-01T09:30:00-08:00", True, False),
        ("2030-12-01T17:30:00Z", "2030-12-01T17:30:00+00:00", True, False),
        ("2030-12-01 09:30", "2030-12-01T09:30:00", True, False),
        ("2030-12-01", "2030-12-01T00:00:00", False, False),
        ("12/01/2030 9:30 AM", "2030-12-01T09:30:00", True, True),
        ("12/31/2030", "2030-12-31T00:00:00", False, False),
        ("31.12.2030 18:00", "2030-12-31T18:00:00", True, False),
        ("Dec 1, 2030", "2030-12-01T00:00:00", False, False),
        ("12/01/2030 09:30 -05:00", "2030-12-01T09:30:00-05:00", True, True),
    ],
)
def test_parse_datetime(text: str, iso: str, has_time: bool, ambiguous: bool) -> None:
    parsed = nz.parse_datetime(text)
    assert parsed.value.isoformat() == iso
    assert (parsed.has_time, parsed.ambiguous) == (has_time, ambiguous)


@pytest.mark.parametrize("text", ["next tuesday", "2024-13-01", "31/02/2026", "", "12:30"])
def test_parse_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        nz.parse_datetime(text)


@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=-8))]),
)
def test_parse_datetime_roundtrips_iso(value: dt.datetime, tz: dt.tzinfo | None) -> None:
    value = value.replace(microsecond=0, tzinfo=tz)
    assert nz.parse_datetime(value.isoformat()).value == value


# --- wall-clock times in a zone: a time of day, DST gaps and repeats ---------------------------


@pytest.mark.parametrize(
    ("text", "clock"),
    [
        ("09:00", dt.time(9)),
        ("9:00", dt.time(9)),
        (" 21:30 ", dt.time(21, 30)),
        ("0:00", dt.time()),
    ],
)
def test_parse_clock_time(text: str, clock: dt.time) -> None:
    assert nz.parse_clock_time(text) == clock


@pytest.mark.parametrize("text", ["24:00", "9", "9am", "09:60", "09:00:00", "", "nine"])
def test_parse_clock_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM on a 24-hour clock"):
        nz.parse_clock_time(text)


def test_read_local_an_ordinary_time() -> None:
    local = nz.read_local(dt.datetime(2027, 1, 15, 9, 0), "America/New_York")
    assert local.value.isoformat() == "2027-01-15T09:00:00-05:00"
    assert (local.missing, local.second, local.jump) == (False, None, None)


def test_read_local_a_time_in_the_spring_gap() -> None:
    local = nz.read_local(dt.datetime(2027, 3, 14, 2, 30), "America/New_York")
    assert local.missing and local.second is None
    assert local.jump == (dt.datetime(2027, 3, 14, 2, 0), dt.datetime(2027, 3, 14, 3, 0))


def test_read_local_a_repeated_time_is_the_first() -> None:
    local = nz.read_local(dt.datetime(2027, 11, 7, 1, 30), "America/New_York")
    assert not local.missing
    assert local.value.isoformat() == "2027-11-07T01:30:00-04:00"
    assert local.second is not None and local.second.isoformat() == "2027-11-07T01:30:00-05:00"
    assert local.jump == (dt.datetime(2027, 11, 7, 2, 0), dt.datetime(2027, 11, 7, 1, 0))
    assert nz.offset_text(local.value) == "-04:00 (EDT)"


@pytest.mark.parametrize(
    ("naive", "zone", "missing", "jump"),
    [
        # Europe changes at 01:00 UTC: 02:00 -> 03:00 in spring, 03:00 -> 02:00 in autumn
        (dt.datetime(2027, 3, 28, 2, 15), "Europe/Berlin", True, ("02:00", "03:00")),
        (dt.datetime(2027, 10, 31, 2, 15), "Europe/Berlin", False, ("03:00", "02:00")),
        # a half-hour change, and a gap at midnight
        (dt.datetime(2027, 4, 4, 1, 45), "Australia/Lord_Howe", False, ("02:00", "01:30")),
        (dt.datetime(2027, 9, 5, 0, 30), "America/Santiago", True, ("00:00", "01:00")),
    ],
)
def test_read_local_finds_the_change_in_other_zones(
    naive: dt.datetime, zone: str, missing: bool, jump: tuple[str, str]
) -> None:
    local = nz.read_local(naive, zone)
    assert local.missing is missing
    assert local.jump is not None
    assert tuple(nz.wall_text(j, naive) for j in local.jump) == jump


def test_offset_text_without_an_abbreviation() -> None:
    when = dt.datetime(2027, 4, 4, 1, 45, tzinfo=dt.timezone(dt.timedelta(hours=10, minutes=30)))
    assert nz.offset_text(when) == "+10:30"
    assert nz.offset_text(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == "+00:00"


@pytest.mark.parametrize(
    ("text", "ptype", "out"),
    [
        ("1,250.50", "number", "1250.50"),
        ("42", "number", "42"),
        ("Yes", "boolean", "true"),
        ("2024-03-14", "date", "2024-03-14"),
        ("03/14/2024", "date", "2024-03-14"),
        ("2024-05-02 15:30", "datetime", "2024-05-02T15:30:00"),
        ("gold", "string", "gold"),
    ],
)
def test_coerce_property(text: str, ptype: str, out: str) -> None:
    assert nz.coerce_property(text, ptype) == out


@pytest.mark.parametrize(
    ("values", "ptype"),
    [
        (["1", "2.5", ""], "number"),
        (["02134", "90210"], "string"),
        (["yes", "no"], "boolean"),
        (["2024-01-02", "2024-02-03"], "date"),
        (["2024-01-02 10:00"], "datetime"),
        (["gold", "1"], "string"),
        ([], "string"),
    ],
)
def test_infer_property_type(values: list[str], ptype: str) -> None:
    assert nz.infer_property_type(values) == ptype


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("hello", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("€" * 80, "GSM-7", 1),
        ("€" * 81, "GSM-7", 2),
        ("🍂", "UCS-2", 1),
        ("é" * 70 + "ж", "UCS-2", 2),
        ("", "GSM-7", 0),
    ],
)
def test_sms_segments(text: str, encoding: str, segments: int) -> None:
    result = nz.sms_segments(text)
    assert (result.encoding, result.segments) == (encoding, segments)


def test_merge_fields_and_render() -> None:
    text = "Hi {{first_name}}, order {{ order_id }} / {{first_name}}"
    assert nz.merge_fields(text) == ["first_name", "order_id"]
    rendered = nz.parse_merge(text).render({"first_name": "Ana", "order_id": "A1"})
    assert rendered == "Hi Ana, order A1 / Ana"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["+13105550101", "+13105550102", "+442079460958", "x", "y"]),
        min_size=1,
        max_size=40,
    )
)
def test_first_occurrence(keys: list[str]) -> None:
    """first_occurrence equals the naive definition, for string keys and E.164 keys."""
    arr = pa.array(keys, pa.large_string())
    expected = np.array([keys.index(k) for k in keys])
    assert (nz.first_occurrence(arr) == expected).all()
    phones = [k for k in keys if k.startswith("+")]
    if phones:
        parr = pa.array(phones, pa.large_string())
        assert (
            nz.first_occurrence(parr, e164=(True,)) == np.array([phones.index(k) for k in phones])
        ).all()
    pairs = nz.first_occurrence(arr, pa.array(list(reversed(keys)), pa.large_string()))
    tuples = list(zip(keys, reversed(keys), strict=True))
    assert (pairs == np.array([tuples.index(t) for t in tuples])).all()


# ---------------------------------------------------------------------------------------------
# phones_column against the scalar rules: every path of the vectorized parser

PUNCT = st.sampled_from(["", "", " ", "-", ".", "(", ")", " - ", ") "])


@st.composite
def punctuated(draw: st.DrawFn, digits: str, plus: bool = False) -> str:
    """``digits`` as someone might type them: separators between random groups."""
    out, i = [], 0
    while i < len(digits):
        step = draw(st.integers(1, 4))
        out.append(draw(PUNCT) + digits[i : i + step])
        i += step
    text = "".join(out).strip()
    return ("+" if plus else "") + text


@st.composite
def any_phone(draw: st.DrawFn) -> str:
    """Digit strings behind the prefixes parse() treats specially: "+", international
    prefixes (00, 011...), country codes without "+", national prefixes, "+0", unknown codes."""
    prefix = draw(
        st.sampled_from(
            ["", "", "", "0", "00", "011", "1", "44", "0044", "01144", "61", "55", "90", "0015"]
        )
    )
    body = draw(st.text("0123456789", min_size=1, max_size=14))
    return draw(punctuated(prefix + body, plus=draw(st.booleans())))


@st.composite
def nanp_any(draw: st.DrawFn) -> str:
    """North American shapes with any area and exchange codes (000-199 are never valid)."""
    npa, nxx = draw(st.integers(0, 999)), draw(st.integers(0, 999))
    digits = f"{npa:03d}{nxx:03d}{draw(st.integers(0, 9999)):04d}"
    lead = draw(st.sampled_from(["", "", "1", "+1", "011 1", "0"]))
    return draw(punctuated(lead.lstrip("+") + digits, plus=lead.startswith("+")))


@st.composite
def uk_phone(draw: st.DrawFn) -> str:
    """UK numbers as typed in the UK (07xxx xxxxxx, 020 xxxx xxxx...), with or without +44,
    including the Crown dependencies' ranges (07624: Isle of Man, 07781: Guernsey...)."""
    head = draw(st.sampled_from(["7", "20", "1481", "1534", "1624", "7624", "7781", "3", "8"]))
    rest = draw(st.text("0123456789", min_size=5, max_size=10 - len(head) + 1))
    lead = draw(st.sampled_from(["0", "0", "+44", "44", "0044", "", "+440"]))
    return draw(punctuated(lead.lstrip("+") + head + rest, plus=lead.startswith("+")))


REGIONS = ["US", "GB", "CA", "AU", "DE", "FR", "IN", "BR", "MX", "IT", "IE", "NZ", "GG", "IM"]
REGIONS += ["JE", "AG", "PR", "AR", "JP", "RU", "KZ", "NO", "FI", "SM", "NF", "SG", "HU", "DK"]


def assert_column_is_scalar(cells: list[str], region: str, flags: list[bool] | None = None) -> None:
    """phones_column gives, row by row, exactly what normalize_phone gives (columns of an even
    length read in blocks of 3 cells)."""
    col = vector_column(cells, region, flags, blocks=len(cells) % 2 == 0)
    assert len(col.e164) == len(cells) == len(col.problems)
    for i, cell in enumerate(cells):
        want = nz.normalize_phone(cell, region, was_number=bool(flags and flags[i]))
        got = col.problems[i] if col.problems[i] is not None else nz.PhoneResult(want.e164)
        assert col.e164[i].as_py() == want.e164, (region, cell)
        assert (got.code, got.message, got.severity) == (want.code, want.message, want.severity)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(nanp_any(), any_phone()), min_size=1, max_size=80))
def test_phones_column_us_invalid_and_odd_forms(cells: list[str]) -> None:
    """Invalid NANP numbers (and odd prefixes) get the same issue, message included, as the
    scalar path: ambiguous_region with the region libphonenumber finds, lost leading zero..."""
    assert_column_is_scalar(cells, "US")


@settings(max_examples=30, deadline=None)
@given(st.lists(uk_phone(), min_size=1, max_size=60), st.sampled_from(["US", "GB", "GG", "CA"]))
def test_phones_column_uk_numbers(cells: list[str], region: str) -> None:
    """UK lists with the US default region (ambiguous_region: +44...) and with GB (valid,
    including the Isle of Man, Guernsey and Jersey ranges), as libphonenumber says."""
    assert_column_is_scalar(cells, region)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(any_phone(), uk_phone()), st.booleans()), min_size=1, max_size=40),
    st.sampled_from(REGIONS),
)
def test_phones_column_any_region(cells: list[tuple[str, bool]], region: str) -> None:
    """Every default region (national prefixes with carrier codes and transform rules: BR, AR,
    AG, GG...) and number cells (was_number) give the scalar result."""
    texts = [c for c, _ in cells]
    assert_column_is_scalar(texts, region, [f for _, f in cells])


@pytest.mark.parametrize(
    ("cells", "region"),
    [
        (["07911 123456", "07624 123456", "+44 7911 123456", "020 7946 0958"], "US"),
        (["07911 123456", "07624 123456", "(07911) 123456", "07700 900123"], "GB"),
        (["310 055 0101", "(213) 196-5991", "1 646 010 0968", "212-898-2961"], "US"),
        (["0412 345 678", "+61 412 345 678", "02 9876 5432"], "AU"),
    ],
)
def test_phones_column_vectorizes_common_shapes(
    cells: list[str], region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common shapes never reach the scalar path (valid, invalid, other regions), so messy
    and non-US sheets stay fast."""
    expected = [nz.normalize_phone(c, region) for c in cells]
    calls: list[str] = []
    scalar = nz.normalize_phone

    def counting(text: str, region: str = "US", *, was_number: bool = False) -> nz.PhoneResult:
        calls.append(text)
        return scalar(text, region, was_number=was_number)

    monkeypatch.setattr(nz, "normalize_phone", counting)
    col = vector_column(cells, region)
    assert calls == []
    for i, want in enumerate(expected):
        got = col.problems[i]
        assert col.e164[i].as_py() == want.e164
        pair = (got.code, got.message) if got is not None else ("", "")
        assert pair == (want.code, want.message)
