"""Normalizers: booleans, emails, time zones, dates, properties."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonar_bulk import normalize as nz


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
        ("élif.4@example.com", True),
        ("ana..b@example.com", False),
    ],
)
def test_email_fast_pattern(text: str, ok: bool) -> None:
    """The pattern the validator runs with Arrow's regex engine before email-validator: what
    it accepts is valid (what it does not accept goes to the library)."""
    import pyarrow.compute as pc

    from sonar_bulk.emails import FAST_PATTERN, address_problem

    fast = pc.match_substring_regex(nz.to_arrow([text]), FAST_PATTERN).to_pylist()
    assert fast == [ok]
    assert (address_problem(text) is None) == ok


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
