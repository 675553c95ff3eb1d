"""The local Studio flow runner: real HTTP to a signature-checking endpoint, real SMS to the
Twilio stand-in, and check_flow against one small broken flow per class of problem."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
import requests
from twilio.request_validator import RequestValidator

from devstack.flow_checker import check_flow
from devstack.serving import serve_in_thread
from devstack.studio_runner import (
    Caller,
    Execution,
    Turn,
    TwilioAccount,
    format_transcript,
    run_call,
    run_message,
)
from devstack.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, TwilioConfig, create_app

OUR_NUMBER = "+15017122661"
ALICE = "+15558675310"
WAIT_S = 10.0

Flow = dict[str, Any]


# --- Flow building ---------------------------------------------------------------------------


def widget(name: str, type_: str, properties: dict[str, Any], **events: str | None) -> Flow:
    """A state whose transitions are `events` (event -> next; None ends the branch)."""
    transitions = []
    for event, target in events.items():
        transitions.append({"event": event} if target is None else {"event": event, "next": target})
    return {
        "name": name,
        "type": type_,
        "transitions": transitions,
        "properties": {"offset": {"x": 0, "y": 0}, **properties},
    }


def trigger(call: str | None = None, message: str | None = None) -> Flow:
    return widget(
        "Trigger",
        "trigger",
        {},
        incomingMessage=message,
        incomingCall=call,
        incomingConversationMessage=None,
        incomingRequest=None,
        incomingParent=None,
    )


def say(name: str, text: str, then: str | None = None, **properties: Any) -> Flow:
    return widget(name, "say-play", {"say": text, **properties}, audioComplete=then)


def gather(
    name: str,
    prompt: str,
    speech: str | None,
    timeout: str | None,
    keypress: str | None = None,
    **properties: Any,
) -> Flow:
    props = {"say": prompt, "speech_timeout": "auto", "timeout": 5, **properties}
    return widget(
        name, "gather-input-on-call", props, keypress=keypress, speech=speech, timeout=timeout
    )


def http(
    name: str,
    url: str,
    success: str | None,
    failed: str | None,
    params: dict[str, str] | None = None,
    **properties: Any,
) -> Flow:
    props: dict[str, Any] = {
        "method": "POST",
        "url": url,
        "content_type": "application/x-www-form-urlencoded;charset=utf-8",
        "parameters": [{"key": key, "value": value} for key, value in (params or {}).items()],
        **properties,
    }
    return widget(name, "make-http-request", props, success=success, failed=failed)


def send(name: str, body: str, sent: str | None, failed: str | None, **properties: Any) -> Flow:
    return widget(name, "send-message", {"body": body, **properties}, sent=sent, failed=failed)


def set_variables(name: str, then: str | None, **variables: str) -> Flow:
    items = [{"key": key, "value": value} for key, value in variables.items()]
    return widget(name, "set-variables", {"variables": items}, next=then)


def split(
    name: str, input_: str, matches: list[tuple[str | None, str, str]], no_match: str | None
) -> Flow:
    """A split; each match is (next, condition type, value)."""
    transitions: list[dict[str, Any]] = [{"event": "noMatch"} | _next(no_match)]
    for target, kind, value in matches:
        condition = {"friendly_name": kind, "arguments": [input_], "type": kind, "value": value}
        transitions.append({"event": "match", "conditions": [condition]} | _next(target))
    return {
        "name": name,
        "type": "split-based-on",
        "transitions": transitions,
        "properties": {"offset": {"x": 0, "y": 0}, "input": input_},
    }


def _next(target: str | None) -> dict[str, str]:
    return {} if target is None else {"next": target}


def envelope(*states: Flow) -> Flow:
    return {
        "description": "test flow",
        "states": list(states),
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def picture_flow(base_url: str) -> Flow:
    """A complete flow in the shape of the project's: voice and SMS into `generate`."""
    generate_params = {
        "prompt": "{{widgets.ask.SpeechResult}}{{widgets.ask_again.SpeechResult}}",
        "confidence": "{{widgets.ask.Confidence}}",
        "to": "{{contact.channel.address}}",
        "from": "{{flow.channel.address}}",
        "source": "voice",
        "request_id": "{{trigger.call.CallSid}}",
    }
    sms_params = {
        "prompt": "{{flow.variables.prompt}}",
        "to": "{{contact.channel.address}}",
        "from": "{{flow.channel.address}}",
        "source": "sms",
        "request_id": "{{trigger.message.MessageSid}}",
    }
    heard = "I heard {{widgets.ask.SpeechResult}}{{widgets.ask_again.SpeechResult}}."
    return envelope(
        trigger(call="ask", message="split_stop"),
        gather("ask", "Describe your picture.", "heard", "ask_again", profanity_filter="true"),
        gather("ask_again", "Sorry, I did not catch that.", "heard", "goodbye"),
        say("heard", heard, "generate_call"),
        http("generate_call", f"{base_url}/generate", "thanks", "sorry", generate_params),
        say("thanks", "{{widgets.generate_call.parsed.message}}"),
        say("sorry", "Something went wrong."),
        say("goodbye", "Goodbye."),
        split(
            "split_stop",
            "{{trigger.message.Body}}",
            [(None, "matches_any_of", "STOP, HELP")],
            "remember",
        ),
        set_variables("remember", "generate_sms", prompt="{{trigger.message.Body | strip}}"),
        http("generate_sms", f"{base_url}/generate", "reply", "reply_sorry", sms_params),
        send("reply", "{{widgets.generate_sms.parsed.message}}", None, "sms_failed"),
        send("reply_sorry", "Sorry, something went wrong.", None, "sms_failed"),
        set_variables("sms_failed", None, error="{{widgets.reply.outbound.ErrorMessage}}"),
    )


def call_flow(*states: Flow, first: str) -> Flow:
    return envelope(trigger(call=first), *states)


def message_flow(*states: Flow, first: str) -> Flow:
    return envelope(trigger(message=first), *states)


def find(flow: Flow, name: str) -> Flow:
    return next(state for state in flow["states"] if state["name"] == name)


def texts(execution: Execution, who: str) -> list[str]:
    return [turn.text for turn in execution.transcript if turn.who == who]


# --- Servers ---------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """Our stand-in function: checks X-Twilio-Signature like `generate` will, records requests."""

    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)


def signed_url(request: flask.Request) -> str:
    # The raw query string, as Twilio signed it (request.url may re-encode it).
    query = request.query_string.decode()
    return request.base_url + (f"?{query}" if query else "")


def endpoint_app(holder: Endpoint) -> flask.Flask:
    app = flask.Flask("functions")
    validator = RequestValidator(DEV_AUTH_TOKEN)

    def check(payload: Any) -> bool:
        request = flask.request
        signature = request.headers.get("X-Twilio-Signature", "")
        valid = validator.validate(signed_url(request), payload, signature)
        holder.seen.append(
            {
                "url": signed_url(request),
                "headers": dict(request.headers),
                "form": request.form.to_dict(),
                "data": request.get_data(as_text=True),
                "valid": valid,
            }
        )
        return bool(valid)

    @app.post("/generate")
    def generate() -> Any:
        if not check(flask.request.form):
            return "bad signature", 403
        return {"message": f"Drawing {flask.request.form['prompt']} for you."}

    @app.post("/json")
    def json_endpoint() -> Any:
        if not check(flask.request.get_data(as_text=True)):  # raw str: the body hash is checked
            return "bad signature", 403
        return {"message": f"JSON got {flask.request.get_json()['prompt']}"}

    @app.get("/lookup")
    def lookup() -> Any:
        if not check({}):
            return "bad signature", 403
        return {"echo": flask.request.args["q"]}

    @app.route("/status/<int:code>", methods=["GET", "POST"])
    def status(code: int) -> Any:
        return flask.Response('{"message": "nope"}', status=code, mimetype="application/json")

    @app.get("/object")
    def json_object() -> Any:
        return {"message": "an object"}

    @app.get("/array")
    def json_array() -> Any:
        return flask.Response("[1, 2]", mimetype="application/json")

    @app.get("/text")
    def text() -> Any:
        return flask.Response('{"message": "looks like JSON"}', mimetype="text/plain")

    @app.get("/redirect")
    def redirect() -> Any:
        return flask.redirect("/object")

    return app


@pytest.fixture(scope="module")
def endpoint_server() -> Iterator[Endpoint]:
    holder = Endpoint(url="")
    server = serve_in_thread(endpoint_app(holder))
    holder.url = server.url
    yield holder
    server.stop()


@pytest.fixture
def endpoint(endpoint_server: Endpoint) -> Endpoint:
    endpoint_server.seen.clear()
    return endpoint_server


@dataclass
class StandIn:
    url: str
    app: flask.Flask

    def outbox(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/__dev/outbox", timeout=WAIT_S)
        return list(response.json()["messages"])


@pytest.fixture(scope="module")
def stand_in_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    outbox: Path = tmp_path_factory.mktemp("outbox")
    app = create_app(TwilioConfig(outbox_dir=outbox))
    server = serve_in_thread(app)
    yield StandIn(server.url, app)
    app.extensions["twilio"].close()
    server.stop()


@pytest.fixture
def stand_in(stand_in_server: StandIn) -> StandIn:
    assert stand_in_server.app.extensions["twilio"].wait_idle(WAIT_S)
    requests.post(f"{stand_in_server.url}/__dev/reset", timeout=WAIT_S).raise_for_status()
    return stand_in_server


@pytest.fixture
def account(stand_in: StandIn) -> TwilioAccount:
    return TwilioAccount(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, stand_in.url)


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/generate"


def call(flow: Flow, account: TwilioAccount, *inputs: str | None, **kw: Any) -> Execution:
    return run_call(
        flow, from_=ALICE, to=OUR_NUMBER, caller=Caller(list(inputs)), account=account, **kw
    )


def message(flow: Flow, account: TwilioAccount, body: str, **kw: Any) -> Execution:
    return run_message(flow, from_=ALICE, to=OUR_NUMBER, body=body, account=account, **kw)


# --- Voice ----------------------------------------------------------------------------------


def test_voice_flow_gathers_speech_and_posts_a_signed_form(endpoint, account):
    flow = picture_flow(endpoint.url)

    execution = call(flow, account, "a crab holding a light saber")

    assert execution.status == "ended", execution.error
    assert execution.path == ["Trigger", "ask", "heard", "generate_call", "thanks"]
    assert texts(execution, "flow") == [
        "Describe your picture.",
        "I heard a crab holding a light saber.",
        "Drawing a crab holding a light saber for you.",
    ]
    assert texts(execution, "caller") == ["a crab holding a light saber"]
    assert texts(execution, "http") == [f"POST {endpoint.url}/generate -> 200"]
    assert execution.transcript[-1] == Turn("end", "hang up")
    ask = execution.widgets["ask"]
    assert ask["SpeechResult"] == "a crab holding a light saber"
    assert ask["Confidence"] == "0.92"
    assert ask["From"] == ALICE and ask["To"] == OUR_NUMBER
    assert re.fullmatch(r"CA[0-9a-f]{32}", ask["CallSid"])
    result = execution.widgets["generate_call"]
    assert result["status_code"] == 200
    assert result["content_type"] == "application/json"
    assert result["parsed"] == {"message": "Drawing a crab holding a light saber for you."}
    assert json.loads(result["body"]) == result["parsed"]

    (request,) = endpoint.seen
    assert request["valid"]
    assert request["form"] == {
        "prompt": "a crab holding a light saber",
        "confidence": "0.92",
        "to": ALICE,
        "from": OUR_NUMBER,
        "source": "voice",
        "request_id": ask["CallSid"],
    }
    headers = request["headers"]
    assert headers["User-Agent"] == "TwilioProxy/1.1"
    assert headers["I-Twilio-Idempotency-Token"]
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")


def test_a_timeout_takes_the_retry_path(endpoint, account):
    execution = call(picture_flow(endpoint.url), account, None, "a red fox")

    assert execution.status == "ended"
    assert execution.path == ["Trigger", "ask", "ask_again", "heard", "generate_call", "thanks"]
    assert texts(execution, "caller") == ["(silence)", "a red fox"]
    assert "SpeechResult" not in execution.widgets["ask"]
    assert endpoint.seen[0]["form"]["prompt"] == "a red fox"


def test_running_out_of_caller_input_is_silence(endpoint, account):
    execution = call(picture_flow(endpoint.url), account)

    assert execution.status == "ended"
    assert execution.path == ["Trigger", "ask", "ask_again", "goodbye"]
    assert texts(execution, "flow")[-1] == "Goodbye."
    assert endpoint.seen == []


def test_speech_is_not_recognised_when_the_speech_transition_is_unwired(account):
    flow = call_flow(
        gather("ask", "Press a key.", speech=None, timeout="nothing", keypress="pressed"),
        say("nothing", "Nothing heard."),
        say("pressed", "You pressed {{widgets.ask.Digits}}."),
        first="ask",
    )

    spoken = call(flow, account, "hello there")
    pressed = call(flow, account, "dtmf:42")

    assert spoken.path == ["Trigger", "ask", "nothing"]
    assert "SpeechResult" not in spoken.widgets["ask"]
    assert "not heard" in texts(spoken, "caller")[0]
    assert pressed.path == ["Trigger", "ask", "pressed"]
    assert pressed.widgets["ask"]["Digits"] == "42"
    assert texts(pressed, "flow")[-1] == "You pressed 42."


def test_keypress_digits_stop_at_the_finish_key_and_digit_count(account):
    flow = call_flow(
        gather("ask", "Your PIN?", None, None, "done", finish_on_key="#", number_of_digits=4),
        say("done", "{{widgets.ask.Digits}}"),
        first="ask",
    )

    assert call(flow, account, "dtmf:12#34").widgets["ask"]["Digits"] == "12"
    assert call(flow, account, "dtmf:123456").widgets["ask"]["Digits"] == "1234"


def test_profanity_filter_masks_all_but_the_first_letter(account):
    flow = call_flow(
        gather("ask", "Say it.", "echo", None, profanity_filter="true"),
        say("echo", "{{widgets.ask.SpeechResult}}"),
        first="ask",
    )
    unfiltered = copy.deepcopy(flow)
    find(unfiltered, "ask")["properties"]["profanity_filter"] = "false"

    assert texts(call(flow, account, "a shit crab"), "flow")[-1] == "a s*** crab"
    assert texts(call(unfiltered, account, "a shit crab"), "flow")[-1] == "a shit crab"


def test_prompts_honour_loop(account):
    flow = call_flow(
        say("hello", "Hello!", "ask", loop=2),
        gather("ask", "Describe it.", "done", None, loop=3),
        say("done", "Thanks."),
        first="hello",
    )

    answered = call(flow, account, "a cat")
    silent = call(flow, account, None)

    assert texts(answered, "flow") == ["Hello!", "Hello!", "Describe it.", "Thanks."]
    assert texts(silent, "flow") == ["Hello!", "Hello!"] + ["Describe it."] * 3


def test_play_widgets_show_the_audio_url(account):
    flow = call_flow(say("music", "", play="https://example.com/hold.mp3"), first="music")
    del find(flow, "music")["properties"]["say"]

    assert texts(call(flow, account), "flow") == ["[plays https://example.com/hold.mp3]"]


def test_trigger_and_flow_variables_reach_liquid(account):
    text = (
        "{{trigger.call.CallSid}}|{{trigger.call.AccountSid}}|{{trigger.call.Direction}}|"
        "{{trigger.call.CallStatus}}|{{trigger.call.Caller}}|{{trigger.call.Called}}|"
        "{{flow.sid}}|{{flow.flow_sid}}|{{flow.channel.address}}|{{contact.channel.address}}|"
        "[{{widgets.nothing.here}}{{flow.data.x}}]"
    )
    execution = call(call_flow(say("show", text), first="show"), account)

    fields = texts(execution, "flow")[0].split("|")
    assert re.fullmatch(r"CA[0-9a-f]{32}", fields[0])
    assert fields[1:6] == [DEV_ACCOUNT_SID, "inbound", "in-progress", ALICE, OUR_NUMBER]
    assert re.fullmatch(r"FN[0-9a-f]{32}", fields[6])
    assert re.fullmatch(r"FW[0-9a-f]{32}", fields[7])
    assert fields[8:] == [OUR_NUMBER, ALICE, "[]"]  # missing variables render empty


def test_to_json_filter_quotes_values(account):
    flow = call_flow(
        say("show", "{{trigger.call.From | to_json}} {{nothing | to_json}}"), first="show"
    )

    assert texts(call(flow, account), "flow") == [f'"{ALICE}" null']


def test_the_callers_country_reaches_liquid_when_twilio_knows_it(account):
    flow = call_flow(say("show", "[{{trigger.call.FromCountry}}]"), first="show")

    assert texts(call(flow, account, from_country="MX"), "flow") == ["[MX]"]
    assert texts(call(flow, account), "flow") == ["[]"]  # a number Twilio cannot place


# --- voices and languages ---------------------------------------------------------------------


def spanish_gather(**properties: Any) -> Flow:
    """A flow that asks in Spanish and says back what it heard."""
    asked = {"voice": "Polly.Lupe", "language": "es-US", "gather_language": "es-US"}
    return call_flow(
        gather("ask", "Describe tu imagen.", "echo", None, **{**asked, **properties}),
        say("echo", "Entendí: {{widgets.ask.SpeechResult}}.", voice="Polly.Lupe", language="es-US"),
        first="ask",
    )


def test_each_turn_records_the_voice_and_the_language(account):
    execution = call(spanish_gather(), account, "un zorro en la nieve")

    assert execution.status == "ended", execution.error
    assert [(t.text, t.voice, t.language) for t in execution.transcript[:3]] == [
        ("Describe tu imagen.", "Polly.Lupe", "es-US"),
        ("un zorro en la nieve", "", "es-US"),  # heard in the gather's language
        ("Entendí: un zorro en la nieve.", "Polly.Lupe", "es-US"),
    ]
    assert format_transcript(execution).splitlines()[:2] == [
        "  Voice:  Polly.Lupe, es-US",
        "  Bot:    Describe tu imagen.",
    ]


def test_a_neural_polly_voice_is_the_same_voice(account):
    execution = call(spanish_gather(voice="Polly.Lupe-Neural"), account, "un zorro")

    assert execution.status == "ended", execution.error


@pytest.mark.parametrize("language", ["es", "spanish", "es_US"])
def test_a_gather_language_that_is_no_language_country_tag_fails_the_gather(account, language):
    flow = spanish_gather(gather_language=language)

    execution = call(flow, account, "un zorro en la nieve")

    assert execution.status == "failed"
    assert "13331" in (execution.error or "") and repr(language) in (execution.error or "")
    assert execution.path == ["Trigger", "ask"]
    assert any(
        "'gather_language'" in problem and "13331" in problem for problem in check_flow(flow)
    )


def test_a_polly_voice_that_does_not_speak_the_language_fails_the_say(account):
    flow = call_flow(say("hello", "Hello!", voice="Polly.Lupe", language="en-US"), first="hello")

    execution = call(flow, account)

    assert execution.status == "failed"
    assert "13511" in (execution.error or "") and "Polly.Lupe speaks es-US" in (
        execution.error or ""
    )
    assert texts(execution, "flow") == []  # nothing was said
    assert any("'voice'" in problem and "13511" in problem for problem in check_flow(flow))


@pytest.mark.parametrize(
    ("voice", "language", "wanted"),
    [
        ("Polly.Lupe", "en-US", "Polly.Lupe speaks es-US, not en-US"),
        ("Polly.Nobody", "en-US", "'Polly.Nobody' is not a voice Twilio has"),
        ("Joanna", "en-US", "'Joanna' is not a voice Twilio has"),
        ("Polly.Joanna", "en", "language 'en' is not a language-COUNTRY tag"),
    ],
)
def test_a_gather_prompt_in_a_voice_twilio_refuses_fails_the_gather(
    account, voice, language, wanted
):
    flow = spanish_gather(voice=voice, language=language)

    execution = call(flow, account, "un zorro")

    assert execution.status == "failed"
    assert "13321" in (execution.error or "") and wanted in (execution.error or "")
    assert any("13321" in problem and wanted in problem for problem in check_flow(flow))


def test_voices_are_checked_once_liquid_is_rendered(account):
    flow = call_flow(
        set_variables("pick", "hello", voice="Polly.Lupe"),
        say("hello", "Hello!", voice="{{flow.variables.voice}}", language="en-US"),
        first="pick",
    )

    assert check_flow(flow) == []  # nothing to judge before the call
    assert "13511" in (call(flow, account).error or "")


def test_twilios_own_voices_and_unset_languages_are_left_to_twilio(account):
    flow = call_flow(
        say("man", "Hello.", "woman", voice="man", language="en-GB"),
        say("woman", "Hallo.", "polly", voice="woman", language="de-DE"),
        say("polly", "Ciao.", None, voice="Polly.Bianca"),
        first="man",
    )

    assert call(flow, account).status == "ended"
    assert check_flow(flow) == []


# --- make-http-request ----------------------------------------------------------------------


def failing_flow(url: str, **properties: Any) -> Flow:
    return call_flow(
        http("req", url, "ok", "failed", {"prompt": "x"}, **properties),
        say("ok", "ok {{widgets.req.status_code}}"),
        say("failed", "failed {{widgets.req.status_code}}"),
        first="req",
    )


def test_an_error_status_takes_the_failed_branch(endpoint, account):
    execution = call(failing_flow(f"{endpoint.url}/status/500"), account)

    assert execution.path == ["Trigger", "req", "failed"]
    assert texts(execution, "flow") == ["failed 500"]
    assert texts(execution, "http") == [f"POST {endpoint.url}/status/500 -> 500"]
    # Studio still exposes what came back.
    assert execution.widgets["req"]["parsed"] == {"message": "nope"}


def test_an_unreachable_url_takes_the_failed_branch(account):
    url = closed_port_url()

    execution = call(failing_flow(url), account)

    assert execution.status == "ended"
    assert execution.path == ["Trigger", "req", "failed"]
    assert texts(execution, "http") == [f"POST {url} -> ConnectionError"]
    assert execution.widgets["req"] == {}


def test_a_bad_signature_is_refused_by_the_endpoint(endpoint, account):
    wrong = TwilioAccount(account.account_sid, "0" * 32, account.api_base_url)

    execution = call(failing_flow(f"{endpoint.url}/generate"), wrong)

    assert execution.path[-1] == "failed"
    assert endpoint.seen[0]["valid"] is False


@pytest.mark.parametrize(
    ("path", "parsed"),
    [
        ("/object", {"message": "an object"}),
        ("/array", None),  # JSON, but not an object
        ("/text", None),  # an object, but not served as JSON
        ("/redirect", {"message": "an object"}),  # 3xx is followed
    ],
)
def test_parsed_is_only_set_for_json_objects(endpoint, account, path, parsed):
    flow = failing_flow(f"{endpoint.url}{path}", method="GET", parameters=[])

    execution = call(flow, account)

    assert execution.path[-1] == "ok"
    assert execution.widgets["req"].get("parsed") == parsed
    assert execution.widgets["req"]["body"]


def test_get_parameters_go_in_the_signed_query_string(endpoint, account):
    flow = failing_flow(
        f"{endpoint.url}/lookup",
        method="GET",
        parameters=[{"key": "q", "value": "{{contact.channel.address}} & co"}],
    )

    execution = call(flow, account)

    assert execution.path[-1] == "ok", execution.transcript
    assert execution.widgets["req"]["parsed"] == {"echo": f"{ALICE} & co"}
    assert endpoint.seen[0]["valid"]


def test_json_bodies_are_signed_with_body_sha256(endpoint, account):
    body = '{"prompt": "{{widgets.ask.SpeechResult}}", "to": "{{contact.channel.address}}"}'
    flow = call_flow(
        gather("ask", "Describe it.", "req", None),
        http(
            "req", f"{endpoint.url}/json", "done", None, content_type="application/json", body=body
        ),
        say("done", "{{widgets.req.parsed.message}}"),
        first="ask",
    )

    execution = call(flow, account, "a blue whale")

    assert execution.status == "ended"
    assert texts(execution, "flow")[-1] == "JSON got a blue whale"
    (request,) = endpoint.seen
    assert request["valid"]
    assert json.loads(request["data"]) == {"prompt": "a blue whale", "to": ALICE}
    query = parse_qs(urlsplit(request["url"]).query)
    assert query["bodySHA256"] == [hashlib.sha256(request["data"].encode()).hexdigest()]
    signature = request["headers"]["X-Twilio-Signature"]
    tampered = request["data"].replace("whale", "shark")
    assert not RequestValidator(DEV_AUTH_TOKEN).validate(request["url"], tampered, signature)


def test_a_parameter_named_method_is_studio_error_81014(endpoint, account):
    flow = failing_flow(f"{endpoint.url}/generate")
    find(flow, "req")["properties"]["parameters"].append({"key": "method", "value": "x"})

    execution = call(flow, account)

    assert execution.status == "failed"
    assert "81014" in (execution.error or "")
    assert endpoint.seen == []
    assert execution.transcript[-1].who == "end"


def test_add_twilio_auth_is_refused(endpoint, account):
    execution = call(failing_flow(f"{endpoint.url}/generate", add_twilio_auth=True), account)

    assert execution.status == "failed"
    assert "add_twilio_auth" in (execution.error or "")
    assert endpoint.seen == []


# --- Messages ---------------------------------------------------------------------------------


def test_sms_flow_generates_and_replies_through_the_twilio_stand_in(endpoint, account, stand_in):
    execution = message(picture_flow(endpoint.url), account, "  a cat in a hat ")

    assert execution.status == "ended", execution.error
    assert execution.path == ["Trigger", "split_stop", "remember", "generate_sms", "reply"]
    assert endpoint.seen[0]["form"]["prompt"] == "a cat in a hat"
    assert endpoint.seen[0]["form"]["request_id"].startswith("SM")
    reply = "Drawing a cat in a hat for you."
    assert texts(execution, "sms") == [f"to {ALICE}: {reply}"]
    outbound = execution.widgets["reply"]["outbound"]
    assert outbound["Sid"].startswith("SM")
    assert (outbound["To"], outbound["From"], outbound["Body"]) == (ALICE, OUR_NUMBER, reply)
    (sent,) = stand_in.outbox()
    assert (sent["sid"], sent["to"], sent["from"], sent["body"]) == (
        outbound["Sid"],
        ALICE,
        OUR_NUMBER,
        reply,
    )


@pytest.mark.parametrize("body", ["STOP", "stop", " Help "])
def test_sms_keywords_end_the_flow_at_the_split(endpoint, account, stand_in, body):
    execution = message(picture_flow(endpoint.url), account, body)

    assert execution.status == "ended"
    assert execution.path == ["Trigger", "split_stop"]
    assert stand_in.outbox() == []
    assert endpoint.seen == []


def test_set_variables_and_send_message_with_media(account, stand_in):
    flow = message_flow(
        set_variables(
            "vars",
            "reply",
            word="{{trigger.message.Body | upcase}}",
            both="{{flow.variables.word}}!",
        ),
        send("reply", "{{flow.variables.both}}", None, None, media_url="https://example.com/a.jpg"),
        first="vars",
    )

    execution = message(flow, account, "hi")

    assert execution.status == "ended"
    assert texts(execution, "sms") == [f"to {ALICE}: HI! [media https://example.com/a.jpg]"]
    (sent,) = stand_in.outbox()
    assert sent["body"] == "HI!"
    assert [item["url"] for item in sent["media"]] == ["https://example.com/a.jpg"]


def test_a_refused_message_takes_the_failed_branch(account, stand_in):
    flow = message_flow(
        send("reply", "hello", None, "note", to="not-a-number"),
        set_variables("note", None, error="{{widgets.reply.outbound.ErrorCode}}"),
        first="reply",
    )

    execution = message(flow, account, "hi")

    assert execution.path == ["Trigger", "reply", "note"]
    outbound = execution.widgets["reply"]["outbound"]
    assert outbound["Status"] == "failed"
    assert outbound["ErrorCode"] == "21211"
    assert "failed" in texts(execution, "sms")[0]
    assert stand_in.outbox() == []


@pytest.mark.parametrize(
    ("kind", "value", "body", "matched"),
    [
        ("equal_to", "Yes", "yes", True),
        ("equal_to", "yes", "yes please", False),
        ("not_equal_to", "yes", "no", True),
        ("matches_any_of", "STOP,END , quit", "Quit", True),
        ("matches_any_of", "STOP,END", "stopping", False),
        ("does_not_match_any_of", "STOP,END", "draw", True),
        ("contains", "CAT", "a black cat", True),
        ("does_not_contain", "dog", "a black cat", True),
        ("starts_with", "draw", "Draw a cat", True),
        ("does_not_start_with", "draw", "paint a cat", True),
        ("is_blank", "", "   ", True),
        ("is_not_blank", "", "x", True),
        ("regex", r"^\d{3}$", "123", True),
        ("regex", r"^\d{3}$", "1234", False),
        ("less_than", "10", "9.5", True),
        ("greater_than", "10", "9", False),
        ("greater_than", "10", "ten", False),
    ],
)
def test_split_operators(account, kind, value, body, matched):
    flow = message_flow(
        split("check", "{{trigger.message.Body}}", [("yes", kind, value)], "no"),
        set_variables("yes", None),
        set_variables("no", None),
        first="check",
    )

    execution = message(flow, account, body)

    assert execution.path[-1] == ("yes" if matched else "no")


def test_the_first_matching_transition_wins(account):
    flow = message_flow(
        split(
            "check",
            "{{trigger.message.Body}}",
            [("first", "contains", "a"), ("second", "contains", "ab")],
            None,
        ),
        set_variables("first", None),
        set_variables("second", None),
        first="check",
    )

    assert message(flow, account, "abc").path == ["Trigger", "check", "first"]


# --- Runner errors ------------------------------------------------------------------------------


def test_an_unknown_widget_type_fails_the_execution(account):
    flow = call_flow(widget("pay", "capture-payments", {}, success=None), first="pay")

    execution = call(flow, account)

    assert execution.status == "failed"
    assert execution.path == ["Trigger", "pay"]
    assert "capture-payments" in (execution.error or "")


def test_a_transition_to_a_missing_widget_fails_the_execution(account):
    execution = call(call_flow(say("hello", "Hi", "nowhere"), first="hello"), account)

    assert execution.status == "failed"
    assert "'nowhere'" in (execution.error or "")


def test_voice_widgets_fail_in_a_message_execution(account):
    execution = message(message_flow(say("hello", "Hi"), first="hello"), account, "hi")

    assert execution.status == "failed"
    assert "voice call" in (execution.error or "")


def test_the_loop_guard_stops_endless_flows(account):
    flow = call_flow(say("ping", "ping", "pong"), say("pong", "pong", "ping"), first="ping")

    execution = call(flow, account, max_steps=5)

    assert execution.status == "failed"
    assert len(execution.path) == 6  # the trigger plus five widgets
    assert "5 widgets" in (execution.error or "")


def test_a_liquid_syntax_error_fails_the_execution(account):
    execution = call(call_flow(say("hello", "Hi {{ oops"), first="hello"), account)

    assert execution.status == "failed"
    assert "hello.say" in (execution.error or "")


def test_format_transcript(endpoint, account, stand_in):
    execution = call(picture_flow(endpoint.url), account, "a crab holding a light saber")
    sms = message(picture_flow(endpoint.url), account, "a cat")

    lines = format_transcript(execution).splitlines()

    assert lines[0] == "  Bot:    Describe your picture."
    assert lines[1] == "  Caller: a crab holding a light saber"
    assert lines[3] == f"  HTTP:   POST {endpoint.url}/generate -> 200"
    assert lines[-1] == "  End:    hang up"
    assert f"  SMS:    to {ALICE}: Drawing a cat for you." in format_transcript(sms).splitlines()


# --- check_flow -------------------------------------------------------------------------------


def set_prop(flow: Flow, name: str, key: str, value: Any) -> None:
    find(flow, name)["properties"][key] = value


def set_next(flow: Flow, name: str, event: str, target: str | None) -> None:
    transition = next(item for item in find(flow, name)["transitions"] if item["event"] == event)
    transition.pop("next", None)
    if target is not None:
        transition["next"] = target


def drop_event(flow: Flow, name: str, event: str) -> None:
    state = find(flow, name)
    state["transitions"] = [item for item in state["transitions"] if item["event"] != event]


def add_state(flow: Flow, state: Flow) -> None:
    flow["states"].append(state)


Mutation = Callable[[Flow], Any]

BROKEN: list[tuple[str, Mutation, str]] = [
    ("no description", lambda f: f.pop("description"), "'description' must be a string"),
    ("no states", lambda f: f.update(states=[]), "'states' must be a list"),
    ("no initial state", lambda f: f.pop("initial_state"), "'initial_state' must be"),
    ("flags without key", lambda f: f.update(flags={}), "allow_concurrent_calls"),
    (
        "flag not boolean",
        lambda f: f.update(flags={"allow_concurrent_calls": "yes"}),
        "allow_concurrent_calls",
    ),
    (
        "initial not trigger",
        lambda f: f.update(initial_state="ask"),
        "is a gather-input-on-call, not a trigger",
    ),
    (
        "duplicate name",
        lambda f: add_state(f, say("sorry", "again")),
        "duplicate widget name 'sorry'",
    ),
    (
        "missing target",
        lambda f: set_next(f, "thanks", "audioComplete", "nowhere"),
        "missing widget 'nowhere'",
    ),
    (
        "invalid event",
        lambda f: find(f, "generate_call")["transitions"][1].update(event="fail"),
        "'fail' is not an event",
    ),
    ("missing event", lambda f: drop_event(f, "ask", "keypress"), "'keypress' is not listed"),
    (
        "missing trigger event",
        lambda f: drop_event(f, "Trigger", "incomingRequest"),
        "'incomingRequest' is not listed",
    ),
    ("unreachable", lambda f: add_state(f, say("orphan", "Hi")), "'orphan' is unreachable"),
    (
        "http failed unhandled",
        lambda f: set_next(f, "generate_call", "failed", None),
        "failure event 'failed'",
    ),
    (
        "send failed unhandled",
        lambda f: set_next(f, "reply", "failed", None),
        "'reply' (send-message): failure event 'failed'",
    ),
    (
        "gather timeout unhandled",
        lambda f: set_next(f, "ask_again", "timeout", None),
        "'ask_again' (gather-input-on-call): failure event 'timeout'",
    ),
    (
        "unknown type",
        lambda f: find(f, "sorry").update(type="say-something"),
        "unknown widget type",
    ),
    (
        "unknown property",
        lambda f: set_prop(f, "ask", "num_digits", 1),
        "unknown property 'num_digits'",
    ),
    (
        "unknown http property",
        lambda f: set_prop(f, "generate_call", "headers", {}),
        "unknown property 'headers'",
    ),
    (
        "profanity_filter bool",
        lambda f: set_prop(f, "ask", "profanity_filter", True),
        "'profanity_filter' must be a JSON string",
    ),
    (
        "speech_timeout int",
        lambda f: set_prop(f, "ask", "speech_timeout", 3),
        "'speech_timeout' must be a JSON string",
    ),
    (
        "timeout str",
        lambda f: set_prop(f, "ask", "timeout", "5"),
        "'timeout' must be a JSON integer",
    ),
    ("loop str", lambda f: set_prop(f, "thanks", "loop", "1"), "'loop' must be a JSON integer"),
    (
        "number_of_digits str",
        lambda f: set_prop(f, "ask", "number_of_digits", "1"),
        "'number_of_digits' must be a JSON integer",
    ),
    (
        "timeout bool",
        lambda f: set_prop(f, "ask", "timeout", True),
        "'timeout' must be a JSON integer",
    ),
    (
        "stop_gather str",
        lambda f: set_prop(f, "ask", "stop_gather", "true"),
        "'stop_gather' must be a JSON boolean",
    ),
    (
        "add_twilio_auth str",
        lambda f: set_prop(f, "generate_call", "add_twilio_auth", "false"),
        "'add_twilio_auth' must be a JSON boolean",
    ),
    (
        "add_twilio_auth true",
        lambda f: set_prop(f, "generate_call", "add_twilio_auth", True),
        "add_twilio_auth sends our Twilio credentials",
    ),
    (
        "method parameter",
        lambda f: find(f, "generate_call")["properties"]["parameters"].append(
            {"key": "method", "value": "x"}
        ),
        "81014",
    ),
    (
        "bad method",
        lambda f: set_prop(f, "generate_call", "method", "PUT"),
        "method must be GET or POST",
    ),
    (
        "bad content type",
        lambda f: set_prop(f, "generate_call", "content_type", "text/plain"),
        "is not form or JSON",
    ),
    (
        "unquoted JSON Liquid",
        lambda f: json_body(f, '{"prompt": {{widgets.ask.SpeechResult}}}'),
        "Liquid outside a quoted value: {{widgets.ask.SpeechResult}}",
    ),
    (
        "invalid JSON",
        lambda f: json_body(f, '{"prompt": "{{widgets.ask.SpeechResult}}",}'),
        "not valid JSON",
    ),
    (
        "match without conditions",
        lambda f: find(f, "split_stop")["transitions"][1].pop("conditions"),
        "needs conditions",
    ),
    (
        "unknown operator",
        lambda f: find(f, "split_stop")["transitions"][1]["conditions"][0].update(
            type="sounds_like"
        ),
        "unknown condition type 'sounds_like'",
    ),
]


BROKEN += [
    (
        "gather language without country",
        lambda f: set_prop(f, "ask", "gather_language", "en"),
        "property 'gather_language': 'en' is not a language-COUNTRY tag",
    ),
    (
        "say language without country",
        lambda f: find(f, "thanks")["properties"].update(voice="Polly.Joanna", language="en"),
        "'thanks' (say-play): property 'language': language 'en' is not a language-COUNTRY",
    ),
    (
        "voice of another language",
        lambda f: find(f, "sorry")["properties"].update(voice="Polly.Mia", language="fr-FR"),
        "Polly.Mia speaks es-MX, not fr-FR (Twilio warning 13511",
    ),
    (
        "gather voice unknown",
        lambda f: find(f, "ask")["properties"].update(voice="Polly.Zorro", language="es-ES"),
        "property 'voice': 'Polly.Zorro' is not a voice Twilio has (Twilio warning 13321",
    ),
]


def json_body(flow: Flow, body: str) -> None:
    properties = find(flow, "generate_call")["properties"]
    properties.update(content_type="application/json;charset=utf-8", body=body, parameters=[])


def test_check_flow_accepts_good_flows():
    assert check_flow(picture_flow("https://example.com")) == []
    good_json = picture_flow("https://example.com")
    # Quotes inside a Liquid expression are Liquid's, not JSON's.
    json_body(good_json, '{"prompt": "{{ widgets.ask.SpeechResult | default: "none" }}", "n": 1}')
    assert check_flow(good_json) == []


@pytest.mark.parametrize(
    ("mutate", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_check_flow_reports(mutate, expected):
    flow = picture_flow("https://example.com")
    mutate(flow)

    problems = check_flow(flow)

    assert any(expected in problem for problem in problems), problems


def test_check_flow_rejects_a_non_object():
    assert check_flow([]) != []  # type: ignore[arg-type]
