"""SMS text: segments (GSM-7, UCS-2) and merge-field templates."""

from __future__ import annotations

import pytest

from sonar_bulk import sms


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
    result = sms.sms_segments(text)
    assert (result.encoding, result.segments) == (encoding, segments)


def test_merge_fields_and_render() -> None:
    text = "Hi {{first_name}}, order {{ order_id }} / {{first_name}}"
    assert sms.merge_fields(text) == ["first_name", "order_id"]
    rendered = sms.parse_merge(text).render({"first_name": "Ana", "order_id": "A1"})
    assert rendered == "Hi Ana, order A1 / Ana"
