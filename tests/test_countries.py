"""A country column's cells (countries.country_region) and the ranks of labelled pairs and
country columns (schema)."""

from __future__ import annotations

import pytest

from sonar_bulk.countries import country_region, describe_unknown
from sonar_bulk.schema import country_rank, label_rank, labelled_pair


@pytest.mark.parametrize(
    ("cell", "region"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        (" 'GB ", "GB"),  # Shopify's apostrophe
        ("DEU", "DE"),
        ("Germany", "DE"),
        ("GERMANY", "DE"),
        ("Deutschland", "DE"),  # pycountry's German name
        ("Alemania", "DE"),
        ("États-Unis", "US"),
        ("United States of America", "US"),
        ("U.S.A.", "US"),
        ("USA", "US"),
        ("UK", "GB"),
        ("England", "GB"),
        ("the Netherlands", "NL"),
        ("Holland", "NL"),
        ("Korea, Republic of", "KR"),
        ("Republic of Korea", "KR"),
        ("South Korea", "KR"),
        ("Côte d'Ivoire", "CI"),
        ("Cote d'Ivoire", "CI"),
        ("Ivory Coast", "CI"),
        ("Bosnia & Herzegovina", "BA"),
        ("Congo", "CG"),
        ("Democratic Republic of the Congo", "CD"),
        ("Puerto Rico", "PR"),  # a region of +1 of its own
        ("+44", "GB"),
        ("1", "US"),
        ("49", "DE"),
        ("", ""),
        ("   ", ""),
        ("Korea", None),  # two countries
        ("Atlantis", None),
        ("AQ", None),  # Antarctica: ISO, but no numbering plan
        ("ZZ", None),
        ("999", None),
    ],
)
def test_country_region(cell: str, region: str | None) -> None:
    assert country_region(cell) == region


def test_why_a_country_is_not_used() -> None:
    assert describe_unknown("AQ") == "Antarctica has no phone numbering plan of its own"
    assert "not a country code or name" in describe_unknown("Atlantis")


@pytest.mark.parametrize(
    ("label", "phone", "rank"),
    [
        ("* Mobile", True, 0),
        ("Mobile", True, 1),
        ("Cell", True, 1),
        ("Ana's cell", True, 1),
        ("iPhone", True, 1),
        ("* Main", True, 2),
        ("Main", True, 3),
        ("", True, 3),
        ("Work", True, 5),
        ("Google Voice", True, 5),
        ("Work Fax", True, None),
        ("fax", True, None),
        ("Pager", True, None),
        ("* Work", False, 0),
        ("Home", False, 1),
    ],
)
def test_label_rank(label: str, phone: bool, rank: int | None) -> None:
    assert label_rank(label, phone) == rank


def test_labelled_pair_and_country_rank() -> None:
    assert labelled_pair("Phone 12 - Value") == ("phone", "12", True)
    assert labelled_pair("\ufeffE-mail 1 - Label") == ("email", "1", False)
    assert labelled_pair("Email 1 - Type") == ("email", "1", False)
    assert labelled_pair("Address 1 - Country") is None
    assert labelled_pair("E-mail 2 Address") is None  # Outlook's: a plain column
    assert [country_rank(h) for h in ("CC", "Country/Region", "Mailing Country", "Land")] == [
        0,
        0,
        1,
        None,
    ]
