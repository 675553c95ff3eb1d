from __future__ import annotations

import pytest

from shared.errors import BadRequest
from shared.intake import (
    Command,
    clean_prompt,
    interpret_message,
    parse_picture_request,
    parse_studio_request,
)
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


# --- incoming texts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "keyword", "command", "prompt"),
    [
        (
            "DRAW a crab holding a light saber",
            "DRAW",
            Command.PROMPT,
            "a crab holding a light saber",
        ),
        ("draw: a fox", "DRAW", Command.PROMPT, "a fox"),
        ("  Draw   a   fox  ", "DRAW", Command.PROMPT, "a fox"),
        ("drawing of a fox", "DRAW", Command.HELP, None),
        ("a fox", "DRAW", Command.HELP, None),
        ("a fox", "", Command.PROMPT, "a fox"),
        ("DRAW", "DRAW", Command.EMPTY_PROMPT, None),
        ("draw   ", "DRAW", Command.EMPTY_PROMPT, None),
        ("STOP", "DRAW", Command.STOP, None),
        ("stop", "", Command.STOP, None),
        (" Unsubscribe ", "DRAW", Command.STOP, None),
        ("stop please", "", Command.PROMPT, "stop please"),
        ("START", "DRAW", Command.START, None),
        ("yes", "DRAW", Command.START, None),
        ("HELP", "DRAW", Command.HELP, None),
        ("info", "", Command.HELP, None),
        ("", "DRAW", Command.HELP, None),
    ],
)
def test_interpret_message(body: str, keyword: str, command: Command, prompt: str | None) -> None:
    result = interpret_message(body, keyword, 1000)
    assert (result.command, result.prompt) == (command, prompt)


def test_interpret_message_measures_an_over_long_prompt() -> None:
    result = interpret_message("DRAW " + "x" * 30, "DRAW", 20)
    assert (result.command, result.length) == (Command.TOO_LONG, 30)


def test_interpret_message_trusts_twilios_opt_out_type() -> None:
    assert interpret_message("arrêt", "DRAW", 100, "STOP").command is Command.STOP


def test_parse_studio_request_marks_the_channel_and_keeps_the_call_sid() -> None:
    form = {
        "prompt": "a crab",
        "to": "+15551230001",
        "from": "+15005550006",
        "channel": "voice",
        "source_ref": "CA" + "1" * 32,
    }
    parsed = parse_studio_request(form, 1000)
    assert parsed.channel is Channel.VOICE
    assert parsed.source_ref == "CA" + "1" * 32
    assert parse_studio_request({**form, "channel": "message"}, 1000).channel is Channel.SMS


def test_parse_picture_request_uses_the_default_sender() -> None:
    parsed = parse_picture_request({"to": "+15551230001", "prompt": "a fox"}, 100, "+15005550006")
    assert parsed.sender == "+15005550006"
    whatsapp = parse_picture_request(
        {"to": "whatsapp:+15551230001", "prompt": "a fox"}, 100, "+15005550006"
    )
    assert whatsapp.sender == "whatsapp:+15005550006"
    with pytest.raises(BadRequest, match="TWILIO_FROM_NUMBER"):
        parse_picture_request({"to": "+15551230001", "prompt": "a fox"}, 100, None)
