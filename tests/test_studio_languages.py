"""Every language of shared/languages/ on the phone. studio/flow.json is built from the
catalogues (studio/build_flow.py); a call in each language, chosen in the call's menu or
guessed from the caller's country, is greeted, heard, read back, answered and sent its picture
in that language, run the way Studio runs it (devstack.studio_runner) into the local stack.
A new catalogue is covered by every test here without a change."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.studio import FLOW_FILE, FLOW_KEY_PLACEHOLDER, URL_PLACEHOLDER, load_flow, main
from devstack.call import choosing, play_call
from devstack.flow_checker import check_flow
from devstack.serving import RunningServer, serve_in_thread
from devstack.stack_client import StackClient, pictures_to
from devstack.studio_runner import Caller, Execution, Turn, TwilioAccount, run_call
from devstack.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, TwilioConfig, create_app
from devstack.vendor_calls import prompt_in
from shared.catalogue import CATALOGUES, REFERENCE_LANGUAGE, Phrasebook
from shared.records import reference_for
from shared.replies import accepted_by_voice, picture_caption
from studio.build_flow import build_flow, flow_text

LANGUAGES = list(CATALOGUES)
# The change a caller asks for after their picture (the picture: vendor_calls.prompt_in); a
# language not listed here is asked in English (any words will do).
CHANGES = {
    "en": "make it a starry night",  # not "make it night": test_conversations looks for that edit
    "es": "hazla de noche",
    "fr": "qu'il fasse nuit",
    "de": "mach es nachts",
    "pt": "deixe de noite",
    "it": "rendila notturna",
}
NUMBER = "+15005550006"


def change_in(code: str) -> str:
    return CHANGES.get(code, CHANGES[REFERENCE_LANGUAGE])


def greeting(book: Phrasebook, key: str = "call_welcome") -> str:
    return f"{book.text(key)} {book.text('call_other_languages')}"


def menu_line(book: Phrasebook) -> str:
    return book.text("call_choose", key=book.menu_key)


def spoken(execution: Execution) -> list[Turn]:
    return [turn for turn in execution.transcript if turn.who == "flow"]


def said_in(execution: Execution, text: str) -> Turn:
    """The last turn in which the flow said `text`."""
    found = [turn for turn in spoken(execution) if turn.text == text]
    assert found, f"never said {text!r}: {[turn.text for turn in spoken(execution)]}"
    return found[-1]


def assert_in_voice_of(turn: Turn, book: Phrasebook) -> None:
    assert (turn.voice, turn.language) == (book.speech.voice, book.speech.voice_language), turn


# --- the flow file -----------------------------------------------------------------------------


def test_the_committed_flow_is_the_builders_output() -> None:
    assert FLOW_FILE.read_text(encoding="utf-8") == flow_text(build_flow()), (
        "studio/flow.json is out of date: run make flow"
    )


def test_the_flow_is_valid_with_a_branch_and_a_menu_line_per_language() -> None:
    flow = build_flow()
    names = {state["name"]: state for state in flow["states"]}
    assert check_flow(flow) == []
    # Ten widgets for the lookup, the menu's two splits and the text path; 18 per language.
    assert len(flow["states"]) == 10 + 18 * len(CATALOGUES)
    for code, book in CATALOGUES.items():
        for base in ("has_picture", "ask_for_change", "ask_for_picture", "ask_again"):
            assert f"{base}_{code}" in names
        for request in (f"request_by_call_{code}", f"request_change_{code}"):
            parameters = names[request]["properties"]["parameters"]
            assert {"key": "language", "value": code} in parameters
        for gather in (f"ask_for_picture_{code}", f"ask_for_change_{code}", f"ask_again_{code}"):
            properties = names[gather]["properties"]
            assert properties["gather_language"] == book.speech.gather_language
            assert (properties["voice"], properties["language"]) == (
                book.speech.voice,
                book.speech.voice_language,
            )
            assert (properties["speech_model"], properties["speech_timeout"]) == ("phone_call", "2")
        assert names[f"language_menu_{code}"]["properties"]["say"] == menu_line(book)
    lookup = {p["key"]: p["value"] for p in names["lookup_caller"]["properties"]["parameters"]}
    assert lookup["country"] == "{{trigger.call.FromCountry}}"


@pytest.mark.parametrize("code", LANGUAGES)
def test_the_default_language_greets_callers_of_no_known_language(code: str) -> None:
    flow = load_flow("https://generate.example", "a-key", default_language=code)
    states = {state["name"]: state for state in flow["states"]}

    def target(widget: str, event: str) -> str:
        return next(str(t["next"]) for t in states[widget]["transitions"] if t["event"] == event)

    assert target("lookup_caller", "failed") == f"ask_for_picture_{code}"
    assert target("caller_language", "noMatch") == f"has_picture_{code}"
    assert target("back_from_menu", "noMatch") == f"has_picture_{code}"
    sorry = CATALOGUES[code].text("cannot_take_request")
    assert states["text_sorry"]["properties"]["body"] == sorry
    assert check_flow(flow) == []
    # Just as if the file had been built for that language.
    built = flow_text(build_flow(default_language=code))
    assert flow == json.loads(
        built.replace(URL_PLACEHOLDER, "https://generate.example").replace(
            FLOW_KEY_PLACEHOLDER, "a-key"
        )
    )


def test_a_default_language_with_no_branch_is_refused() -> None:
    with pytest.raises(ValueError, match="no branch for language 'xx'"):
        load_flow("https://generate.example", default_language="xx")


# --- the calls, without generate (the lookup fails) -------------------------------------------------


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/generate"


def call_nowhere(default_language: str, *inputs: str | None) -> Execution:
    """A call through the flow with `generate` out of reach."""
    flow = load_flow(closed_port_url(), default_language=default_language)
    account = TwilioAccount(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, closed_port_url())
    return run_call(
        flow, from_="+15551230002", to=NUMBER, caller=Caller(list(inputs)), account=account
    )


@pytest.mark.parametrize("code", LANGUAGES)
def test_without_generate_the_call_is_in_the_default_language(code: str) -> None:
    book = CATALOGUES[code]

    execution = call_nowhere(code, prompt_in(code))

    assert execution.status == "ended", execution.error
    assert execution.path[-1] == f"say_sorry_{code}"
    assert_in_voice_of(said_in(execution, greeting(book)), book)
    assert_in_voice_of(said_in(execution, book.text("call_sorry")), book)


def test_the_menu_speaks_each_language_in_its_voice_and_goes_back_without_a_key() -> None:
    silence = [None] * len(CATALOGUES)

    execution = call_nowhere(REFERENCE_LANGUAGE, "dtmf:*", *silence, None, None)

    assert execution.status == "ended", execution.error
    lines = [turn for turn in spoken(execution) if turn.text in map(menu_line, CATALOGUES.values())]
    assert [turn.text for turn in lines] == [menu_line(book) for book in CATALOGUES.values()]
    for turn, book in zip(lines, CATALOGUES.values(), strict=True):
        assert_in_voice_of(turn, book)
    english = CATALOGUES[REFERENCE_LANGUAGE]
    # Back where the caller pressed *: asked again, then said goodbye to.
    assert execution.path[-3:] == ["ask_for_picture_en", "ask_again_en", "no_answer_en"]
    assert_in_voice_of(said_in(execution, english.text("call_no_answer")), english)


# --- deploy.sh studio ------------------------------------------------------------------------------


@pytest.fixture
def twilio(tmp_path: Path) -> Iterator[RunningServer]:
    app = create_app(TwilioConfig(outbox_dir=tmp_path, phone_numbers=(NUMBER,)))
    server = serve_in_thread(app)
    yield server
    server.stop()
    app.extensions["twilio"].close()


def published(twilio: RunningServer) -> dict[str, Any]:
    [flow] = requests.get(f"{twilio.url}/__dev/flows", timeout=5).json()["flows"]
    definition: dict[str, Any] = flow["definition"]
    return definition


def deploy_studio(twilio: RunningServer, monkeypatch: pytest.MonkeyPatch, language: str) -> int:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", DEV_ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEV_AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_API_BASE_URL", twilio.url)
    monkeypatch.setenv("DEFAULT_LANGUAGE", language)
    return main(["--generate-url", "https://generate.example", "--number", NUMBER])


def test_deploy_studio_greets_unknown_callers_in_the_default_language(
    twilio: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deploy_studio(twilio, monkeypatch, "es") == 0
    definition = published(twilio)
    lookup = next(s for s in definition["states"] if s["name"] == "lookup_caller")
    failed = next(t for t in lookup["transitions"] if t["event"] == "failed")
    assert failed["next"] == "ask_for_picture_es"
    assert definition == load_flow("https://generate.example", default_language="es")


def test_deploy_studio_refuses_a_default_language_we_do_not_speak(
    twilio: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy_studio(twilio, monkeypatch, "xx") == 2
    assert "DEFAULT_LANGUAGE=xx" in capsys.readouterr().err
    assert requests.get(f"{twilio.url}/__dev/flows", timeout=5).json()["flows"] == []


# --- the calls, into the local stack ----------------------------------------------------------------


def delivered_by_call(
    stack: StackClient, caller: str, execution: Execution, widget: str
) -> dict[str, Any]:
    """The request the call's `widget` made, once delivered, and the MMS it brought."""
    assert execution.status == "ended", execution.error
    request_id = execution.widgets[widget]["parsed"]["request_id"]
    row = stack.wait_finished(request_id)
    assert (row["status"], row["channel"]) == ("delivered", "voice"), row
    return row


def assert_a_call_in(
    stack: StackClient, caller: str, execution: Execution, code: str, prompt: str
) -> dict[str, Any]:
    """Greeted, heard, read back, answered and sent the picture of `prompt` in `code`."""
    book = CATALOGUES[code]
    assert_in_voice_of(said_in(execution, greeting(book)), book)
    [words] = [
        turn for turn in execution.transcript if turn.who == "caller" and turn.text == prompt
    ]
    assert words.language == book.speech.gather_language
    assert_in_voice_of(said_in(execution, book.text("call_read_back", prompt=prompt)), book)
    goodbye = f"{accepted_by_voice(code)} {book.text('call_goodbye')}"
    assert spoken(execution)[-1].text == goodbye
    assert_in_voice_of(spoken(execution)[-1], book)
    row = delivered_by_call(stack, caller, execution, f"request_by_call_{code}")
    # generate got the words exactly as spoken, and the call's language.
    assert (row["prompt"], row["language"]) == (prompt, code)
    [picture] = pictures_to(stack, caller)
    assert picture["body"] == picture_caption(prompt, reference_for(str(row["id"])), code)
    return row


@pytest.mark.stack
@pytest.mark.parametrize("code", LANGUAGES)
def test_a_caller_chooses_their_language_in_the_menu(
    calm_stack: StackClient, caller: str, code: str
) -> None:
    prompt = prompt_in(code)

    execution = play_call(calm_stack.env, [*choosing(code), prompt], caller)

    english = CATALOGUES[REFERENCE_LANGUAGE]
    assert_in_voice_of(spoken(execution)[0], english)  # a caller of no known country
    assert f"language_menu_{code}" in execution.path
    assert_in_voice_of(said_in(execution, menu_line(CATALOGUES[code])), CATALOGUES[code])
    assert_a_call_in(calm_stack, caller, execution, code, prompt)


@pytest.mark.stack
@pytest.mark.parametrize("code", LANGUAGES)
def test_a_caller_is_first_greeted_in_their_countrys_language(
    calm_stack: StackClient, caller: str, code: str
) -> None:
    book = CATALOGUES[code]
    country = sorted(book.countries)[0]
    prompt = prompt_in(code)

    execution = play_call(calm_stack.env, [prompt], caller, from_country=country)

    assert spoken(execution)[0].text == greeting(book)
    assert not any(name.startswith("language_menu") for name in execution.path)
    assert_a_call_in(calm_stack, caller, execution, code, prompt)


@pytest.mark.stack
@pytest.mark.parametrize("code", LANGUAGES)
def test_a_second_call_is_in_the_language_chosen_before_and_offers_a_change(
    calm_stack: StackClient, caller: str, code: str
) -> None:
    book = CATALOGUES[code]
    first = assert_a_call_in(
        calm_stack,
        caller,
        play_call(calm_stack.env, [*choosing(code), prompt_in(code)], caller),
        code,
        prompt_in(code),
    )
    change = change_in(code)

    # No country, no menu: generate remembers the language the first call chose.
    again = play_call(calm_stack.env, [change], caller)

    assert not any(name.startswith("language_menu") for name in again.path)
    assert spoken(again)[0].text == greeting(book, "call_welcome_back")
    assert_in_voice_of(spoken(again)[0], book)
    [words] = [turn for turn in again.transcript if turn.who == "caller"]
    assert (words.text, words.language) == (change, book.speech.gather_language)
    assert_in_voice_of(said_in(again, book.text("call_read_back", prompt=change)), book)
    assert spoken(again)[-1].text == f"{accepted_by_voice(code)} {book.text('call_goodbye')}"
    row = delivered_by_call(calm_stack, caller, again, f"request_change_{code}")
    assert (row["kind"], row["parent_id"], row["language"]) == ("refine", first["id"], code)
    latest = pictures_to(calm_stack, caller)[-1]
    assert latest["body"] == picture_caption(row["prompt"], reference_for(str(row["id"])), code)
