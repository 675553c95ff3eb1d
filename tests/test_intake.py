from __future__ import annotations

import pytest

from shared.errors import BadRequest
from shared.intake import clean_prompt, parse_picture_request
from shared.records import Channel


def test_parse_picture_request_accepts_numbers_and_trims_the_prompt() -> None:
    parsed = parse_picture_request(
        {"to": " +15551230001 ", "from": "+15005550006", "prompt": "  a crab\n holding a saber "},
        max_prompt_chars=1000,
    )
    assert parsed.recipient == "+15551230001"
    assert parsed.sender == "+15005550006"
    assert parsed.prompt == "a crab holding a saber"
    assert parsed.channel is Channel.API


def test_parse_picture_request_marks_whatsapp_pairs() -> None:
    parsed = parse_picture_request(
        {"to": "whatsapp:+447700900123", "from": "whatsapp:+15005550006", "prompt": "a fox"}, 100
    )
    assert parsed.channel is Channel.WHATSAPP


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "JSON object"),
        ({"from": "+15005550006", "prompt": "x"}, "'to' is required"),
        ({"to": "5551230001", "from": "+15005550006", "prompt": "x"}, "E.164"),
        ({"to": "+0551230001", "from": "+15005550006", "prompt": "x"}, "E.164"),
        ({"to": "+15551230001", "from": "tel:+1", "prompt": "x"}, "'from'"),
        ({"to": "whatsapp:+15551230001", "from": "+15005550006", "prompt": "x"}, "both"),
        ({"to": "+15551230001", "from": "+15005550006"}, "'prompt' is required"),
        ({"to": "+15551230001", "from": "+15005550006", "prompt": 42}, "'prompt' is required"),
        ({"to": "+15551230001", "from": "+15005550006", "prompt": " \t\n"}, "empty"),
        ({"to": "+15551230001", "from": "+15005550006", "prompt": "\x00\x07"}, "empty"),
        ({"to": "+15551230001", "from": "+15005550006", "prompt": "y" * 11}, "too long"),
    ],
)
def test_parse_picture_request_rejects_bad_input(payload: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_picture_request(payload, max_prompt_chars=10)


def test_clean_prompt_replaces_control_characters() -> None:
    assert clean_prompt("a\x00crab\u202eon\ttoast", 100) == "a crab on toast"
