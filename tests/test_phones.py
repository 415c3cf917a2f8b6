"""Phones: one cell (normalize_phone) and whole columns (phones_column), whose vectorized path
gives, row by row, what the scalar rules give."""

from __future__ import annotations

import numpy as np
import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonar_bulk import phones


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
    result = phones.normalize_phone(text, "US")
    assert (result.e164, result.code) == (e164, code)
    if code:
        assert result.message


def test_lost_leading_zero_from_a_number_cell() -> None:
    """Where the 0 belongs to the number (Italian landlines), a number cell that lost it is
    reported; where the 0 is only a trunk prefix (UK), the number is still right."""
    result = phones.normalize_phone("612345678", "IT", was_number=True)
    assert result.code == "excel.lost_leading_zero"
    assert "+390612345678" in result.message
    result = phones.normalize_phone("2079460958", "GB", was_number=True)
    assert result.code == "" and result.e164 == "+442079460958"


def vector_column(
    cells: list[str], region: str, flags: list[bool] | None = None, blocks: bool = False
) -> phones.PhoneColumn:
    """phones_column on its vectorized path, however few the cells (below
    ``_VECTORIZE_FROM`` it would use the scalar path); ``blocks``: cells read a few at a
    time, as big columns are."""
    was_number = np.asarray(flags, dtype=bool) if flags is not None else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(phones, "_VECTORIZE_FROM", 0)
        if blocks:
            mp.setattr(phones, "_BLOCK_ROWS", 3)
        return phones.phones_column(pa.array(cells, pa.large_string()), region, was_number)


def test_phones_column_number_cells() -> None:
    """A number cell (was_number) of 8 digits that lost its leading 0 is reported as such;
    the same digits typed as text are looked up in other regions, as normalize_phone does, and
    found in none (Germany, where they are valid, would write them 061234567)."""
    cells = ["61234567", "61234567", "612345678", "2079460958", "+39 06 1234 5678", "1234"]
    flags = [True, False, False, True, True, True]
    col = vector_column(cells, "IT", flags)
    codes = [p.code if p is not None else "" for p in col.problems]
    assert codes == [
        "excel.lost_leading_zero",
        "phone.invalid",
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
    for col in (
        phones.phones_column(pa.array(cells, pa.large_string())),
        vector_column(cells, "US"),
    ):
        for i, cell in enumerate(cells):
            expected = phones.normalize_phone(cell, "US")
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
    result = phones.normalize_phone(text, "US")
    assert bool(result.e164) or bool(result.code) or not text.strip()


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
        want = phones.normalize_phone(cell, region, was_number=bool(flags and flags[i]))
        got = col.problems[i] if col.problems[i] is not None else phones.PhoneResult(want.e164)
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
    expected = [phones.normalize_phone(c, region) for c in cells]
    calls: list[str] = []
    scalar = phones.normalize_phone

    def counting(text: str, region: str = "US", *, was_number: bool = False) -> phones.PhoneResult:
        calls.append(text)
        return scalar(text, region, was_number=was_number)

    monkeypatch.setattr(phones, "normalize_phone", counting)
    col = vector_column(cells, region)
    assert calls == []
    for i, want in enumerate(expected):
        got = col.problems[i]
        assert col.e164[i].as_py() == want.e164
        pair = (got.code, got.message) if got is not None else ("", "")
        assert pair == (want.code, want.message)


def test_phones_by_region_is_normalize_phone_in_each_row_s_region() -> None:
    """Each row read in its own region (a country column) gives, row by row, what
    normalize_phone gives in that region, the vectorized path included (40+ rows a region)."""
    from phonenumbers import PhoneNumberType

    regions = ["US", "GB", "DE", "FR", "AU", "MX"]
    cells: list[str] = []
    row_regions: list[str] = []
    for i in range(240):
        region = regions[i % len(regions)]
        other = regions[(i // len(regions)) % len(regions)]
        example = phonenumbers.example_number_for_type(other, PhoneNumberType.MOBILE)
        assert example is not None
        national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
        cells.append(
            [national, f"+{example.country_code}{example.national_number}", "555-01"][i % 3]
        )
        row_regions.append(region)
    col = phones.phones_by_region(
        pa.array(cells, pa.large_string()), np.array(row_regions, dtype="U3")
    )
    got = list(zip(col.e164.to_pylist(), [p.code if p else "" for p in col.problems], strict=True))
    want = []
    for cell, region in zip(cells, row_regions, strict=True):
        result = phones.normalize_phone(cell, region)
        want.append((result.e164, result.code))
    assert got == want
    assert {code for _, code in got} >= {"", "phone.invalid"}
