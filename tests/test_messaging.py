"""Reading what Twilio answers, without ever letting an odd answer raise."""

from __future__ import annotations

import pytest

from shared.messaging import twilio_error_code


@pytest.mark.parametrize(
    ("code", "read"),
    [
        (21610, 21610),
        ("21610", 21610),
        ("9" * 5000, None),
        ("abc", None),
        (None, None),
        (True, None),
    ],
)
def test_twilio_error_codes_are_read_without_ever_raising(code: object, read: int | None) -> None:
    assert twilio_error_code(code) == read
