"""Build studio/flow.json, the Twilio Studio flow, from the language catalogues.

`make flow` (``python -m studio.build_flow``) rewrites the file; a test checks that the
committed file is this module's output, so adding a language is adding its
`shared/languages/<code>.toml` and running `make flow`.

The flow, for a call::

    lookup_caller ──▶ caller_language ──▶ has_picture_<L> ──▶ ask_for_change_<L>  (welcome back)
    (has_picture,     (split on the        (one branch per     ask_for_picture_<L> (welcome)
     language)         lookup's language)   language L)          │ a key: the language menu
                                                                 ▼
      open_menu_<L> ──▶ language_menu_en ──▶ language_menu_es ──▶ … ──▶ back_from_menu
      (where from)       "For English,        "Para español,            (no key: back to the
                          press 1." │          oprime 2." │              caller's branch)
                                    ▼                     ▼
                              menu_key_en ─────────▶ menu_choice ──▶ has_picture_<chosen>

Each branch speaks, hears (`gather_language`) and asks `generate` (`language=<L>`) in its
language; texts go straight to `generate`, which answers in the texter's language. The flow
is built for DEFAULT_LANGUAGE `en`: `point_default_language` re-points it at another
language's branch (deploy/studio.py's `load_flow` does, from DEFAULT_LANGUAGE).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.catalogue import CATALOGUES, REFERENCE_LANGUAGE, Phrasebook

FLOW_FILE = Path(__file__).resolve().with_name("flow.json")
# What deploy/studio.py fills in: generate's URL, and the key that proves a request is ours.
URL_PLACEHOLDER = "https://YOUR-GENERATE-FUNCTION-URL"
FLOW_KEY_PLACEHOLDER = "YOUR-STUDIO-FLOW-KEY"
DESCRIPTION = "Picture Line: call or text a description, get a picture by MMS"

State = dict[str, Any]

# --- widget names --------------------------------------------------------------------------

LOOKUP = "lookup_caller"
LANGUAGE_SPLIT = "caller_language"
MENU_CHOICE = "menu_choice"
BACK_FROM_MENU = "back_from_menu"
TEXT_SORRY = "text_sorry"


def has_picture(code: str) -> str:
    """The first widget of language `code`'s branch."""
    return f"has_picture_{code}"


def ask_for_picture(code: str) -> str:
    return f"ask_for_picture_{code}"


def language_menu(code: str) -> str:
    return f"language_menu_{code}"


# --- the properties every widget of a kind shares --------------------------------------------

_FORM = "application/x-www-form-urlencoded;charset=utf-8"
# Speech: the phone-call model, a pause of 2 s ending the answer ("auto" ends it at the first
# pause, too soon for a description), profanity masked.
_SPEECH = {
    "speech_model": "phone_call",
    "speech_timeout": "2",
    "profanity_filter": "true",
}
_KEYS = {"stop_gather": True, "finish_on_key": "#", "number_of_digits": 1}
_ANSWER_TIMEOUT_S = 6
_MENU_TIMEOUT_S = 2  # each language's line of the menu waits this long for its key

# --- the canvas ----------------------------------------------------------------------------
# The text path to the right of the trigger; to the left, one column per language (English
# nearest), each a band of _SLOTS slots, with the language menu along their foot.
_SLOT = 300
_ROW = 240
_SLOTS = 5
_BAND = (_SLOTS + 1) * _SLOT
_MENU_ROW = 8  # the menu's row, below every branch


def _at(x: int, y: int) -> dict[str, dict[str, int]]:
    return {"offset": {"x": x, "y": y}}


def _in_band(index: int, slot: float, row: int) -> dict[str, dict[str, int]]:
    """Position `slot` (0 = the band's left) of `row` in the band of the index-th language."""
    left = -(index + 1) * _BAND
    return _at(left + int(slot * _SLOT), 2 * _ROW + row * _ROW)


# --- widgets -------------------------------------------------------------------------------


def _transition(event: str, target: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"event": event, **({} if target is None else {"next": target}), **extra}


def _condition(name: str, input_: str, kind: str, value: str) -> dict[str, Any]:
    return {"friendly_name": name, "arguments": [input_], "type": kind, "value": value}


def _split(
    name: str,
    place: Mapping[str, Any],
    input_: str,
    no_match: str | None,
    matches: list[tuple[str, str, str, str]],
) -> State:
    """A split; each match is (next, friendly name, condition type, value)."""
    transitions = [_transition("noMatch", no_match)]
    transitions += [
        _transition("match", target, conditions=[_condition(label, input_, kind, value)])
        for target, label, kind, value in matches
    ]
    return {
        "name": name,
        "type": "split-based-on",
        "properties": {**place, "input": input_},
        "transitions": transitions,
    }


def _set(name: str, place: Mapping[str, Any], then: str | None, **variables: str) -> State:
    return {
        "name": name,
        "type": "set-variables",
        "properties": {
            **place,
            "variables": [{"key": key, "value": value} for key, value in variables.items()],
        },
        "transitions": [_transition("next", then)],
    }


def _say(
    name: str, book: Phrasebook, place: Mapping[str, Any], text: str, then: str | None
) -> State:
    return {
        "name": name,
        "type": "say-play",
        "properties": {**_voice(book), "loop": 1, **place, "say": text},
        "transitions": [_transition("audioComplete", then)],
    }


def _voice(book: Phrasebook) -> dict[str, str]:
    return {"voice": book.speech.voice, "language": book.speech.voice_language}


def _gather(
    name: str,
    book: Phrasebook,
    place: Mapping[str, Any],
    text: str,
    hints: str,
    *,
    keypress: str,
    speech: str,
    timeout: str,
) -> State:
    """A question the caller answers in words (or a key)."""
    properties = {
        **_voice(book),
        "gather_language": book.speech.gather_language,
        **_SPEECH,
        "hints": hints,
        "timeout": _ANSWER_TIMEOUT_S,
        "loop": 1,
        **_KEYS,
        **place,
        "say": text,
    }
    return {
        "name": name,
        "type": "gather-input-on-call",
        "properties": properties,
        "transitions": [
            _transition("keypress", keypress),
            _transition("speech", speech),
            _transition("timeout", timeout),
        ],
    }


def _request(
    name: str, place: Mapping[str, Any], parameters: list[tuple[str, str]], ok: str, failed: str
) -> State:
    """A form POST to `generate`, with the flow key."""
    return {
        "name": name,
        "type": "make-http-request",
        "properties": {
            **place,
            "method": "POST",
            "content_type": _FORM,
            "url": URL_PLACEHOLDER,
            "add_twilio_auth": False,
            "parameters": [
                {"key": key, "value": value}
                for key, value in [("flow_key", FLOW_KEY_PLACEHOLDER), *parameters]
            ],
        },
        "transitions": [_transition("success", ok), _transition("failed", failed)],
    }


def _send(name: str, place: Mapping[str, Any], body: str) -> State:
    return {
        "name": name,
        "type": "send-message",
        "properties": {
            **place,
            "from": "{{flow.channel.address}}",
            "to": "{{contact.channel.address}}",
            "body": body,
        },
        "transitions": [_transition("sent"), _transition("failed", "reply_not_sent")],
    }


# --- the flow ------------------------------------------------------------------------------

_CALL_PARAMETERS = [
    ("prompt", "{{flow.variables.prompt}}"),
    ("to", "{{contact.channel.address}}"),
    ("from", "{{flow.channel.address}}"),
    ("channel", "voice"),
    ("source_ref", "{{trigger.call.CallSid}}"),
    ("stir_verstat", "{{trigger.call.StirVerstat}}"),
]


def _choose(book: Phrasebook) -> str:
    """The menu's line for `book`'s language: "Para español, oprime 2."."""
    return book.text("call_choose", key=book.menu_key)


def _branch(book: Phrasebook, index: int, menu: str) -> list[State]:
    """Everything said and asked on a call in `book`'s language (the index-th); a key opens
    the language menu at widget `menu`."""
    code = book.code

    def place(slot: float, row: int) -> dict[str, dict[str, int]]:
        return _in_band(index, slot, row)

    def said(key: str, **values: str) -> str:
        return book.text(key, **values)

    def name(base: str) -> str:
        return f"{base}_{code}"

    other_languages = said("call_other_languages")
    heard = said("call_read_back", prompt="{{flow.variables.prompt}}")
    goodbye = said("call_goodbye")
    has_it = "{{widgets.lookup_caller.parsed.has_picture}}"
    return [
        _split(
            has_picture(code),
            place(2, 0),
            has_it,
            ask_for_picture(code),
            [(name("ask_for_change"), "the caller has a picture to change", "equal_to", "true")],
        ),
        # A caller with a picture: a change to it ("make it night", "again", "new ...").
        _gather(
            name("ask_for_change"),
            book,
            place(0, 1),
            f"{said('call_welcome_back')} {other_languages}",
            book.words.hints_change,
            keypress=name("open_menu"),
            speech=name("remember_change"),
            timeout=ask_for_picture(code),
        ),
        _set(
            name("remember_change"),
            place(0, 2),
            name("read_back_change"),
            prompt=f"{{{{widgets.ask_for_change_{code}.SpeechResult}}}}",
        ),
        _say(name("read_back_change"), book, place(0, 3), heard, name("request_change")),
        _request(
            name("request_change"),
            place(0, 4),
            [*_CALL_PARAMETERS, ("follow_up", "1"), ("language", code)],
            name("say_change_result"),
            name("say_sorry"),
        ),
        _say(
            name("say_change_result"),
            book,
            place(0, 5),
            f"{{{{widgets.request_change_{code}.parsed.message}}}} {goodbye}",
            None,
        ),
        # A new picture.
        _gather(
            ask_for_picture(code),
            book,
            place(3, 1),
            f"{said('call_welcome')} {other_languages}",
            book.words.hints_picture,
            keypress=name("open_menu"),
            speech=name("remember_first_answer"),
            timeout=name("ask_again"),
        ),
        _gather(
            name("ask_again"),
            book,
            place(3, 2),
            said("call_ask_again"),
            book.words.hints_picture,
            keypress=name("no_answer"),
            speech=name("remember_second_answer"),
            timeout=name("no_answer"),
        ),
        _set(
            name("remember_first_answer"),
            place(4, 2),
            name("read_back"),
            prompt=f"{{{{widgets.ask_for_picture_{code}.SpeechResult}}}}",
        ),
        _set(
            name("remember_second_answer"),
            place(3, 3),
            name("read_back"),
            prompt=f"{{{{widgets.ask_again_{code}.SpeechResult}}}}",
        ),
        _say(name("read_back"), book, place(4, 4), heard, name("request_by_call")),
        _request(
            name("request_by_call"),
            place(4, 5),
            [*_CALL_PARAMETERS, ("language", code)],
            name("say_result"),
            name("say_sorry"),
        ),
        _say(
            name("say_result"),
            book,
            place(4, 6),
            f"{{{{widgets.request_by_call_{code}.parsed.message}}}} {goodbye}",
            None,
        ),
        _say(name("say_sorry"), book, place(2, 6), said("call_sorry"), None),
        _say(name("no_answer"), book, place(2, 3), said("call_no_answer"), None),
        # A key pressed at the first question: the menu, and back here if none is chosen.
        _set(name("open_menu"), place(2, 2), menu, language=code),
    ]


def _menu(books: list[Phrasebook]) -> list[State]:
    """One line per language, each in its own voice, then back where the caller came from."""
    states: list[State] = []
    for index, book in enumerate(books):
        following = books[index + 1].code if index + 1 < len(books) else None
        states.append(
            {
                "name": language_menu(book.code),
                "type": "gather-input-on-call",
                "properties": {
                    **_voice(book),
                    "timeout": _MENU_TIMEOUT_S,
                    "loop": 1,
                    **_KEYS,
                    **_in_band(index, 1, _MENU_ROW),
                    "say": _choose(book),
                },
                "transitions": [
                    _transition("keypress", f"menu_key_{book.code}"),
                    _transition("speech"),  # keys only: speech recognition stays off
                    _transition(
                        "timeout", language_menu(following) if following else BACK_FROM_MENU
                    ),
                ],
            }
        )
        states.append(
            _set(
                f"menu_key_{book.code}",
                _in_band(index, 1, _MENU_ROW + 1),
                MENU_CHOICE,
                menu_key=f"{{{{widgets.{language_menu(book.code)}.Digits}}}}",
            )
        )
    return states


def _text_path(book: Phrasebook) -> list[State]:
    """A text goes to `generate`, which answers in the texter's language; if it cannot be
    reached, the apology is in `book`'s (the default) language."""
    return [
        _request(
            "request_by_text",
            _at(400, 220),
            [
                ("body", "{{trigger.message.Body}}"),
                ("to", "{{contact.channel.address}}"),
                ("from", "{{flow.channel.address}}"),
                ("channel", "message"),
                ("source_ref", "{{trigger.message.MessageSid}}"),
                ("media_url", "{{trigger.message.MediaUrl0}}"),
                ("media_type", "{{trigger.message.MediaContentType0}}"),
            ],
            "has_reply",
            TEXT_SORRY,
        ),
        _split(
            "has_reply",
            _at(250, 460),
            "{{widgets.request_by_text.parsed.message}}",
            None,
            [("send_reply", "there is a reply", "is_not_blank", "Is Not Blank")],
        ),
        _send("send_reply", _at(250, 700), "{{widgets.request_by_text.parsed.message}}"),
        _send(TEXT_SORRY, _at(600, 460), book.text("cannot_take_request")),
        _set("reply_not_sent", _at(450, 940), None, reply_not_sent="true"),
    ]


def build_flow(
    books: Mapping[str, Phrasebook] = CATALOGUES, default_language: str = REFERENCE_LANGUAGE
) -> dict[str, Any]:
    """The flow definition for the languages `books` (in their order, which is the menu's),
    greeting callers of no known language in `default_language`."""
    if default_language not in books:
        raise ValueError(f"there is no catalogue for language {default_language!r}")
    languages = list(books.values())
    menu = language_menu(languages[0].code)
    states: list[State] = [
        {
            "name": "Trigger",
            "type": "trigger",
            "properties": _at(0, 0),
            "transitions": [
                _transition("incomingMessage", "request_by_text"),
                _transition("incomingCall", LOOKUP),
                _transition("incomingConversationMessage"),
                _transition("incomingRequest"),
                _transition("incomingParent"),
            ],
        },
        # Has the caller a picture to change, and which language do they hear first?
        _request(
            LOOKUP,
            _at(-400, 0),
            [
                ("lookup", "1"),
                ("to", "{{contact.channel.address}}"),
                ("from", "{{flow.channel.address}}"),
                ("country", "{{trigger.call.FromCountry}}"),
            ],
            LANGUAGE_SPLIT,
            ask_for_picture(default_language),
        ),
        _split(
            LANGUAGE_SPLIT,
            _at(-400, _ROW),
            "{{widgets.lookup_caller.parsed.language}}",
            has_picture(default_language),
            [(has_picture(b.code), b.english_name, "equal_to", b.code) for b in languages],
        ),
    ]
    for index, book in enumerate(languages):
        states += _branch(book, index, menu)
    states += _menu(languages)
    states += [
        _split(
            MENU_CHOICE,
            _in_band(0, 3, _MENU_ROW + 2),
            "{{flow.variables.menu_key}}",
            BACK_FROM_MENU,
            [
                (has_picture(b.code), f"{b.english_name}: {b.menu_key}", "equal_to", b.menu_key)
                for b in languages
            ],
        ),
        # No key (or one of no language): back to the branch the caller pressed a key in.
        _split(
            BACK_FROM_MENU,
            _in_band(0, 0, _MENU_ROW + 2),
            "{{flow.variables.language}}",
            has_picture(default_language),
            [(has_picture(b.code), b.english_name, "equal_to", b.code) for b in languages],
        ),
    ]
    states += _text_path(books[default_language])
    return {
        "description": DESCRIPTION,
        "states": states,
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def point_default_language(
    flow: dict[str, Any], code: str, books: Mapping[str, Phrasebook] = CATALOGUES
) -> None:
    """Re-point a built flow (studio/flow.json is built for `en`) as `build_flow` would have
    built it for `code`: the lookup's failure, a language the flow has no branch for, and the
    menu left without a key lead to `code`'s branch, and a text that cannot reach `generate`
    is apologised for in `code`. A flow not built here (no language split) is left as it is;
    one without a branch for `code` is a ValueError."""
    states = {state.get("name"): state for state in flow.get("states", [])}
    if LANGUAGE_SPLIT not in states:
        return
    if has_picture(code) not in states or code not in books:
        raise ValueError(f"the flow has no branch for language {code!r}")
    targets = {
        (LOOKUP, "failed"): ask_for_picture(code),
        (LANGUAGE_SPLIT, "noMatch"): has_picture(code),
        (BACK_FROM_MENU, "noMatch"): has_picture(code),
    }
    for (widget, event), target in targets.items():
        for transition in states.get(widget, {}).get("transitions", []):
            if transition.get("event") == event:
                transition["next"] = target
    if TEXT_SORRY in states:
        states[TEXT_SORRY]["properties"]["body"] = books[code].text("cannot_take_request")


def flow_text(flow: Mapping[str, Any]) -> str:
    """The flow as studio/flow.json holds it."""
    return json.dumps(flow, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=FLOW_FILE)
    parser.add_argument(
        "--check", action="store_true", help="only say whether the file is up to date"
    )
    args = parser.parse_args(argv)
    flow = build_flow()
    text = flow_text(flow)
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run make flow", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
    languages = ", ".join(CATALOGUES)
    print(f"{args.output}: {len(flow['states'])} widgets, languages {languages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
