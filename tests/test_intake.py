from __future__ import annotations

import pytest

from shared.errors import BadRequest, EmptyPrompt, HiddenNumber
from shared.intake import (
    WITHHELD_CALLER_IDS,
    Command,
    clean_prompt,
    interpret_message,
    is_hidden_number,
    parse_address,
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


@pytest.mark.parametrize(
    ("prompt", "cleaned"),
    [
        pytest.param("a\x00crab\x1bon\x7ftoast\x85", "a crab on toast", id="controls-are-spaces"),
        pytest.param(" a\tcrab \n\u2028on  toast ", "a crab on toast", id="whitespace-collapses"),
        pytest.param("a crab\u202e on\u2066 toast\u2069", "a crab on toast", id="bidi-controls"),
        pytest.param("a \ud800crab\udfff", "a crab", id="lone-surrogates"),
        pytest.param("a \ufdd0crab\ufffe\uffff\U0010ffff", "a crab", id="noncharacters"),
    ],
)
def test_clean_prompt_drops_what_is_unsafe(prompt: str, cleaned: str) -> None:
    assert clean_prompt(prompt, 100) == cleaned


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("\U0001f469\u200d\U0001f469\u200d\U0001f467 at the beach", id="emoji-zwj"),
        pytest.param("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", id="persian-zwnj"),
        pytest.param("\u0915\u094d\u200d\u0937", id="devanagari-zwj"),
        pytest.param(
            "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
            id="flag-tags",
        ),
        pytest.param("a red \u2764\ufe0f", id="variation-selector"),
        pytest.param("\u8fba\U000e0101 kanji", id="ideographic-variation-selector"),
        pytest.param("\U0001fae8", id="emoji-newer-than-our-unicode-database"),
        pytest.param("an \ue000 logo", id="private-use"),
        pytest.param("\u05e9\u05dc\u05d5\u05dd\u200f!", id="right-to-left-mark"),
    ],
)
def test_clean_prompt_keeps_joiners_selectors_tags_and_characters_it_does_not_know(
    prompt: str,
) -> None:
    assert clean_prompt(prompt, 100) == prompt


@pytest.mark.parametrize(
    "prompt",
    [
        "\u200d",
        "\u200c \u200d",
        "\ufe0f",
        "\U000e0101",
        "\U000e0067\U000e007f",
        "\u3164",
        "\u200d" * 500,
    ],
)
def test_clean_prompt_of_only_joiners_or_selectors_is_empty(prompt: str) -> None:
    with pytest.raises(EmptyPrompt):
        clean_prompt(prompt, 100)


def test_interpret_message_takes_a_prompt_in_other_scripts_whole() -> None:
    for prompt in (
        "\U0001f469\u200d\U0001f469\u200d\U0001f467",
        "\u0915\u094d\u200d\u0937",
        "\U0001fae8",
    ):
        assert interpret_message(f"DRAW {prompt}", "DRAW", 100).prompt == prompt


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
        # Twilio's whole list: OPTOUT and REVOKE are opt-outs too.
        ("OPTOUT", "DRAW", Command.STOP, None),
        ("revoke", "", Command.STOP, None),
        ("unstop", "DRAW", Command.START, None),
        # Whether Twilio takes "Stop." is unconfirmed: an opt-out wins, START and HELP do not.
        ("Stop.", "DRAW", Command.STOP, None),
        ("STOP!!", "", Command.STOP, None),
        ("\u201cquit\u201d \U0001f64f", "", Command.STOP, None),
        ("Start!", "", Command.PROMPT, "Start!"),
        ("help?", "DRAW", Command.HELP, None),
        ("stop, thanks", "", Command.PROMPT, "stop, thanks"),
        # Not Twilio's ASCII words, though Python upper-cases them to START and STOP.
        ("\u017ftart", "", Command.PROMPT, "\u017ftart"),
        ("\ufb06op", "", Command.PROMPT, "\ufb06op"),
        ("\ufb06op", "DRAW", Command.HELP, None),
        ("\u0455top", "", Command.PROMPT, "\u0455top"),  # Cyrillic dze, not s
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


# --- withheld caller IDs --------------------------------------------------------------------

HIDDEN = [*WITHHELD_CALLER_IDS.values(), "anonymous", "Restricted", " +266696687\n"]


@pytest.mark.parametrize("caller", HIDDEN)
def test_parse_studio_request_refuses_a_withheld_caller_id(caller: str) -> None:
    form = {"prompt": "a crab", "to": caller, "from": "+15005550006", "channel": "voice"}
    with pytest.raises(HiddenNumber, match="'to' is a withheld caller ID"):
        parse_studio_request(form, 1000)


@pytest.mark.parametrize("sender", [*HIDDEN, "whatsapp:+266696687"])
def test_a_text_from_a_withheld_caller_id_is_refused(sender: str) -> None:
    """Texts (Studio's and the webhook's) read the sender with parse_address."""
    with pytest.raises(HiddenNumber, match="'From' is a withheld caller ID"):
        parse_address(sender, "From")


def test_an_operator_request_to_a_withheld_caller_id_is_refused() -> None:
    with pytest.raises(HiddenNumber):
        parse_picture_request({"to": "+86282452253", "from": "+15005550006", "prompt": "x"}, 10)


def test_withheld_caller_ids_spell_their_word_on_a_phone_keypad() -> None:
    keys = {"2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS", "8": "TUV"}
    keys["9"] = "WXYZ"
    digit = {letter: key for key, letters in keys.items() for letter in letters}
    for word, number in WITHHELD_CALLER_IDS.items():
        assert number == "+" + "".join(digit[letter] for letter in word), word


@pytest.mark.parametrize(
    "number", ["+15551230001", "+2666966870", "+1266696687", "+73787428330", "anonymous caller"]
)
def test_is_hidden_number_leaves_other_addresses_alone(number: str) -> None:
    assert not is_hidden_number(number)
