"""Check a Twilio Studio flow definition (Flow API v2 JSON) the way Studio validates one.

:func:`check_flow` reports structural problems Studio's validator (or a Studio run) would trip
over, plus a few rules of our own (failure branches handled, no Twilio credentials sent, and
the voices and languages Twilio refuses on the call, which Studio itself only reports then). The
Twilio stand-in's Studio Flows API runs it on every definition it receives and answers a
failing one with Studio's 81022; the tests run it on studio/flow.json.

It lives apart from the runner (devstack/studio_runner.py) because checking a definition is
pure data work that needs no HTTP, Liquid or caller. The few readers of a definition both need
(a widget's properties and transitions, content types) live here, so the runner imports them
and this module imports nothing of the runner's.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_URL = "https://schemas.twilio.com/studio/draft/2019-09/flow-definition"
MAX_STATES = 1000
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
CONTENT_TYPES = (FORM, f"{FORM};charset=utf-8", JSON_TYPE, f"{JSON_TYPE};charset=utf-8")

State = dict[str, Any]
Transition = dict[str, Any]


# --------------------------------------------------------------------------------------------
# What Studio knows about each widget type
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WidgetSpec:
    events: tuple[str, ...]  # every event the type has
    required_events: tuple[str, ...]  # events a definition must list (Console exports do)
    properties: Mapping[str, str]  # known property -> JSON type ("any": not checked)
    must_handle: tuple[str, ...] = ()  # failure events our flows must wire to a widget
    repeatable: tuple[str, ...] = ()  # events that may be listed more than once


_TRIGGER_EVENTS = (
    "incomingMessage",
    "incomingCall",
    "incomingConversationMessage",
    "incomingRequest",
    "incomingParent",
)

_WIDGETS: dict[str, _WidgetSpec] = {
    # Older exports lack the conversation and parent events, so only the rest are required.
    "trigger": _WidgetSpec(
        _TRIGGER_EVENTS, ("incomingMessage", "incomingCall", "incomingRequest"), {}
    ),
    "gather-input-on-call": _WidgetSpec(
        ("keypress", "speech", "timeout"),
        ("keypress", "speech", "timeout"),
        {
            "say": "string",
            "play": "string",
            "voice": "string",
            "language": "string",
            "loop": "integer",
            "timeout": "integer",
            "finish_on_key": "string",
            "number_of_digits": "integer",
            "stop_gather": "boolean",
            "gather_language": "string",
            "speech_timeout": "string",
            "speech_model": "string",
            "profanity_filter": "string",
            "hints": "string",
        },
        must_handle=("timeout",),
    ),
    "say-play": _WidgetSpec(
        ("audioComplete",),
        ("audioComplete",),
        {
            "say": "string",
            "play": "string",
            "digits": "string",
            "voice": "string",
            "language": "string",
            "loop": "integer",
        },
    ),
    "make-http-request": _WidgetSpec(
        ("success", "failed"),
        ("success", "failed"),
        {
            "method": "string",
            "url": "string",
            "content_type": "string",
            "body": "string",
            "parameters": "array",
            "add_twilio_auth": "boolean",
        },
        must_handle=("failed",),
    ),
    "send-message": _WidgetSpec(
        ("sent", "failed"),
        ("sent", "failed"),
        {
            "body": "string",
            "from": "string",
            "to": "string",
            "service": "string",
            "channel": "string",
            "media_url": "string",
            "attributes": "any",
            "message_type": "string",
            "content_sid": "string",
            "content_variables": "array",
        },
        must_handle=("failed",),
    ),
    "split-based-on": _WidgetSpec(
        ("match", "noMatch"), ("noMatch",), {"input": "string"}, repeatable=("match",)
    ),
    "set-variables": _WidgetSpec(("next",), ("next",), {"variables": "array"}),
    # The runner cannot run these, but they are known well enough to check.
    "run-function": _WidgetSpec(
        ("success", "fail"),
        ("success", "fail"),
        {
            "service_sid": "string",
            "environment_sid": "string",
            "function_sid": "string",
            "url": "string",
            "parameters": "array",
        },
    ),
    "send-and-wait-for-reply": _WidgetSpec(
        ("incomingMessage", "timeout", "deliveryFailure"),
        ("incomingMessage", "timeout", "deliveryFailure"),
        {
            "body": "string",
            "from": "string",
            "to": "string",
            "timeout": "string",
            "service": "string",
            "channel": "string",
            "media_url": "string",
            "attributes": "any",
        },
    ),
}

# Studio's widget type enum: other types are valid Studio but unchecked and not runnable locally.
_STUDIO_TYPES = frozenset(
    {
        "add-member-to-chat-channel",
        "add-twiml-redirect",
        "capture-payments",
        "connect-call-to",
        "create-chat-channel",
        "create-task",
        "enqueue-call",
        "fork-stream",
        "make-outgoing-call-v1",
        "make-outgoing-call-v2",
        "record-call",
        "record-voicemail",
        "run-function-v2",
        "send-to-flex",
        "run-subflow",
        "understand",
        "update-sync-object",
        "connect-virtual-agent",
        "connect-virtual-agent-v2",
        "start-conversation",
        "resume-conversation",
        "run-conversation-relay",
        *_WIDGETS,
    }
)

_OPERATORS = frozenset(
    {
        "equal_to",
        "not_equal_to",
        "matches_any_of",
        "does_not_match_any_of",
        "contains",
        "does_not_contain",
        "starts_with",
        "does_not_start_with",
        "is_blank",
        "is_not_blank",
        "regex",
        "less_than",
        "greater_than",
    }
)
# Studio knows these too; the runner cannot evaluate them.
_DATE_OPERATORS = frozenset({"is_before_date", "is_after_date", "is_before_time", "is_after_time"})


# --------------------------------------------------------------------------------------------
# Voices and languages (the runner refuses the same at run time)
# --------------------------------------------------------------------------------------------

# Amazon Polly's voices and the languages each speaks, from "Available voices" in the Amazon
# Polly Developer Guide (https://docs.aws.amazon.com/polly/latest/dg/available-voices.html).
# Twilio names them Polly.<Name>; Polly.<Name>-Neural (and -Generative) is the same voice on
# another engine. Not every voice: the ones of our languages and their neighbours.
POLLY_VOICES: dict[str, frozenset[str]] = {
    name: frozenset(languages.split())
    for name, languages in {
        # English
        "Joanna": "en-US",
        "Matthew": "en-US",
        "Ivy": "en-US",
        "Kendra": "en-US",
        "Kimberly": "en-US",
        "Salli": "en-US",
        "Joey": "en-US",
        "Justin": "en-US",
        "Kevin": "en-US",
        "Ruth": "en-US",
        "Stephen": "en-US",
        "Danielle": "en-US",
        "Gregory": "en-US",
        "Amy": "en-GB",
        "Emma": "en-GB",
        "Brian": "en-GB",
        "Arthur": "en-GB",
        "Nicole": "en-AU",
        "Olivia": "en-AU",
        "Russell": "en-AU",
        "Aria": "en-NZ",
        "Ayanda": "en-ZA",
        "Niamh": "en-IE",
        "Raveena": "en-IN",
        "Aditi": "en-IN hi-IN",
        "Kajal": "en-IN hi-IN",
        # Spanish
        "Lupe": "es-US",
        "Penelope": "es-US",
        "Miguel": "es-US",
        "Pedro": "es-US",
        "Mia": "es-MX",
        "Andres": "es-MX",
        "Lucia": "es-ES",
        "Conchita": "es-ES",
        "Enrique": "es-ES",
        "Sergio": "es-ES",
        # French
        "Lea": "fr-FR",
        "Celine": "fr-FR",
        "Mathieu": "fr-FR",
        "Remi": "fr-FR",
        "Chantal": "fr-CA",
        "Gabrielle": "fr-CA",
        "Liam": "fr-CA",
        "Isabelle": "fr-BE",
        # German
        "Vicki": "de-DE",
        "Marlene": "de-DE",
        "Hans": "de-DE",
        "Daniel": "de-DE",
        "Hannah": "de-AT",
        "Sabrina": "de-CH",
        # Portuguese
        "Camila": "pt-BR",
        "Vitoria": "pt-BR",
        "Ricardo": "pt-BR",
        "Thiago": "pt-BR",
        "Ines": "pt-PT",
        "Cristiano": "pt-PT",
        # Italian
        "Bianca": "it-IT",
        "Carla": "it-IT",
        "Giorgio": "it-IT",
        "Adriano": "it-IT",
    }.items()
}
_POLLY_ENGINES = ("-Neural", "-Generative")
# Twilio's own voices, which speak many languages; and Google's, named after their locale.
_BASIC_VOICES = frozenset({"man", "woman", "alice"})
# Twilio takes a full BCP-47 language-COUNTRY tag: "en" is refused, "en-US" taken
# [DOC twilio.com/docs/api/errors/13512, 13331].
_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}-[A-Z]{2}")
# The warnings Twilio reports on the call (and the gather or say then fails).
GATHER_LANGUAGE_WARNING = "13331 Gather: Invalid language value"  # 13512 in older docs
SAY_VOICE_WARNING = "13511 Say: Invalid voice value"
GATHER_SAY_VOICE_WARNING = "13321 Gather->Say: Invalid voice value"


def is_language_tag(value: str) -> bool:
    """Whether `value` is a language-COUNTRY tag Twilio takes ("en-US", not "en")."""
    return _LANGUAGE_TAG.fullmatch(value) is not None


def polly_languages(voice: str) -> frozenset[str] | None:
    """The languages Polly voice `voice` ("Polly.Lupe", "Polly.Lupe-Neural") speaks; None
    when it is no Polly voice we know."""
    name = voice.removeprefix("Polly.")
    for engine in _POLLY_ENGINES:
        name = name.removesuffix(engine)
    return POLLY_VOICES.get(name) if voice.startswith("Polly.") else None


def voice_problem(voice: str, language: str) -> str | None:
    """Why Twilio would not speak with `voice` in `language` (either may be empty: not set),
    or None. A Polly voice speaks its own languages only; the TTS language must be a full
    tag ("Using an invalid combination of voice and language may result in error and <Say>
    instruction failure" [DOC twilio.com/docs/voice/twiml/say])."""
    if language and not is_language_tag(language):
        return f"language {language!r} is not a language-COUNTRY tag like en-US"
    if not voice or voice in _BASIC_VOICES or voice.startswith("Google."):
        return None
    languages = polly_languages(voice)
    if languages is None:
        return f"{voice!r} is not a voice Twilio has"
    if language and language not in languages:
        return f"{voice} speaks {', '.join(sorted(languages))}, not {language}"
    return None


def _has_liquid(value: str) -> bool:
    return "{{" in value or "{%" in value


# --------------------------------------------------------------------------------------------
# Reading a definition (the runner uses these too)
# --------------------------------------------------------------------------------------------


def widget_properties(state: Mapping[str, Any]) -> dict[str, Any]:
    properties = state.get("properties")
    return properties if isinstance(properties, dict) else {}


def widget_transitions(state: Mapping[str, Any]) -> list[Transition]:
    transitions = state.get("transitions")
    if not isinstance(transitions, list):
        return []
    return [item for item in transitions if isinstance(item, dict)]


def transition_for(state: Mapping[str, Any], event: str) -> Transition | None:
    return next((item for item in widget_transitions(state) if item.get("event") == event), None)


def next_widget(transition: Transition | None) -> str | None:
    """The state a transition leads to; None (or "") ends the execution."""
    if transition is None:
        return None
    target = transition.get("next")
    return target if isinstance(target, str) and target else None


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def key_value_items(value: Any) -> list[dict[str, Any]]:
    """The ``[{key, value}]`` items of `parameters`/`variables` (malformed items dropped)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _json_type_ok(value: Any, kind: str) -> bool:
    match kind:
        case "string":
            return isinstance(value, str)
        case "integer":  # bool is an int in Python, not in JSON
            return isinstance(value, int) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
    return True


# --------------------------------------------------------------------------------------------
# check_flow
# --------------------------------------------------------------------------------------------


def check_flow(flow: dict[str, Any]) -> list[str]:
    """Structural problems of a flow definition, as human-readable lines; [] when fine."""
    if not isinstance(flow, dict):
        return ["the flow definition must be a JSON object"]
    problems = _check_envelope(flow)
    states = _state_list(flow, problems)
    names = _check_names(states, problems)
    _check_initial_state(flow, names, problems)
    for state in states:
        _check_state(state, names, problems)
    _check_reachable(flow, names, problems)
    return problems


def _check_envelope(flow: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if not isinstance(flow.get("description"), str):
        problems.append("'description' must be a string")
    if not isinstance(flow.get("initial_state"), str) or not flow.get("initial_state"):
        problems.append("'initial_state' must be a non-empty string")
    flags = flow.get("flags")
    if not isinstance(flags, dict) or not isinstance(flags.get("allow_concurrent_calls"), bool):
        problems.append("'flags' must be an object with a boolean 'allow_concurrent_calls'")
    states = flow.get("states")
    if not isinstance(states, list) or not 1 <= len(states) <= MAX_STATES:
        problems.append(f"'states' must be a list of 1 to {MAX_STATES} widgets")
    if "$schema" in flow and flow["$schema"] != SCHEMA_URL:
        problems.append(f"'$schema' must be {SCHEMA_URL}")
    known = {"description", "states", "initial_state", "flags", "$schema"}
    problems.extend(f"unexpected top-level key {key!r}" for key in flow if key not in known)
    return problems


def _state_list(flow: dict[str, Any], problems: list[str]) -> list[State]:
    """The well-formed states; the others are reported and left out of further checks."""
    raw = flow.get("states")
    states: list[State] = []
    for index, state in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(state, dict):
            problems.append(f"states[{index}] must be an object")
        elif not isinstance(state.get("name"), str) or not state["name"]:
            problems.append(f"states[{index}] needs a non-empty string 'name'")
        elif not isinstance(state.get("type"), str):
            problems.append(f"widget {state['name']!r} needs a string 'type'")
        else:
            states.append(state)
    return states


def _check_names(states: list[State], problems: list[str]) -> dict[str, State]:
    names: dict[str, State] = {}
    for state in states:
        if state["name"] in names:
            problems.append(f"duplicate widget name {state['name']!r}")
        else:
            names[state["name"]] = state
    triggers = [state["name"] for state in states if state["type"] == "trigger"]
    if len(triggers) > 1:
        problems.append(f"more than one trigger widget: {', '.join(triggers)}")
    return names


def _check_initial_state(
    flow: dict[str, Any], names: dict[str, State], problems: list[str]
) -> None:
    initial = flow.get("initial_state")
    if not isinstance(initial, str) or not initial:
        return  # reported with the envelope
    if initial not in names:
        problems.append(f"initial_state {initial!r} is not a widget of the flow")
    elif names[initial]["type"] != "trigger":
        problems.append(f"initial_state {initial!r} is a {names[initial]['type']}, not a trigger")


def _check_state(state: State, names: dict[str, State], problems: list[str]) -> None:
    label = f"widget {state['name']!r} ({state['type']})"
    if state["type"] not in _STUDIO_TYPES:
        problems.append(f"{label}: unknown widget type")
    if not isinstance(state.get("properties"), dict):
        problems.append(f"{label}: 'properties' must be an object")
    if not isinstance(state.get("transitions"), list):
        problems.append(f"{label}: 'transitions' must be a list")
    _check_transitions(state, label, names, problems)
    spec = _WIDGETS.get(state["type"])
    if spec is None:
        return
    _check_events(state, spec, label, problems)
    _check_properties(state, spec, label, problems)
    check = _WIDGET_CHECKS.get(state["type"])
    if check is not None:
        check(state, label, problems)


def _check_transitions(
    state: State, label: str, names: dict[str, State], problems: list[str]
) -> None:
    raw = state.get("transitions")
    for index, transition in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(transition, dict) or not isinstance(transition.get("event"), str):
            problems.append(f"{label}: transitions[{index}] needs a string 'event'")
            continue
        target = transition.get("next")
        if target is not None and not isinstance(target, str):
            problems.append(f"{label}: transition {transition['event']!r} has a non-string next")
        elif target and target not in names:
            problems.append(
                f"{label}: transition {transition['event']!r} points at missing widget {target!r}"
            )


def _check_events(state: State, spec: _WidgetSpec, label: str, problems: list[str]) -> None:
    events = [item.get("event") for item in widget_transitions(state)]
    for event in events:
        if isinstance(event, str) and event not in spec.events:
            problems.append(
                f"{label}: {event!r} is not an event of this widget type "
                f"(expected one of {', '.join(spec.events)})"
            )
    for event in spec.required_events:
        if event not in events:
            problems.append(f"{label}: event {event!r} is not listed")
    for event in set(spec.events) - set(spec.repeatable):
        if events.count(event) > 1:
            problems.append(f"{label}: event {event!r} is listed more than once")
    for event in spec.must_handle:
        if event in events and next_widget(transition_for(state, event)) is None:
            problems.append(f"{label}: failure event {event!r} is not handled (it has no next)")


def _check_properties(state: State, spec: _WidgetSpec, label: str, problems: list[str]) -> None:
    for name, value in widget_properties(state).items():
        if name == "offset":
            continue  # canvas position, on every widget
        kind = spec.properties.get(name)
        if kind is None:
            problems.append(f"{label}: unknown property {name!r}")
        elif not _json_type_ok(value, kind):
            problems.append(f"{label}: property {name!r} must be a JSON {kind}")


def _check_pairs(value: Any, what: str, label: str, problems: list[str]) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else []
    good = [item for item in items if isinstance(item, dict) and isinstance(item.get("key"), str)]
    if not isinstance(value, list) or len(good) != len(items):
        problems.append(f"{label}: {what} must be a list of {{key, value}} objects")


def _check_http(state: State, label: str, problems: list[str]) -> None:
    props = widget_properties(state)
    if props.get("method") not in ("GET", "POST"):
        problems.append(f"{label}: method must be GET or POST")
    if not isinstance(props.get("url"), str) or not props["url"].strip():
        problems.append(f"{label}: url is required")
    if props.get("add_twilio_auth") is True:
        problems.append(
            f"{label}: add_twilio_auth sends our Twilio credentials; never use it for our functions"
        )
    _check_http_payload(props, label, problems)


def _check_http_payload(props: dict[str, Any], label: str, problems: list[str]) -> None:
    content_type = props.get("content_type", FORM)
    if not isinstance(content_type, str):
        return  # reported as a wrong JSON type
    if content_type.replace(" ", "").lower() not in CONTENT_TYPES:
        problems.append(f"{label}: content_type {content_type!r} is not form or JSON")
    _check_pairs(props.get("parameters"), "parameters", label, problems)
    keys = [item.get("key") for item in key_value_items(props.get("parameters"))]
    if "method" in keys:
        problems.append(f"{label}: a parameter named 'method' is Studio error 81014")
    body = props.get("body")
    if not isinstance(body, str) or not body.strip():
        return
    if keys:
        problems.append(f"{label}: use either parameters (form) or body (JSON), not both")
    if media_type(content_type) == JSON_TYPE:
        problems.extend(f"{label}: {problem}" for problem in _json_body_problems(body))


def _check_split(state: State, label: str, problems: list[str]) -> None:
    props = widget_properties(state)
    if not isinstance(props.get("input"), str):
        problems.append(f"{label}: input is required")
    for transition in widget_transitions(state):
        if transition.get("event") != "match":
            continue
        conditions = transition.get("conditions")
        if not isinstance(conditions, list) or not conditions:
            problems.append(f"{label}: a match transition needs conditions")
            continue
        for condition in conditions:
            _check_condition(condition, props.get("input"), label, problems)


def _check_condition(condition: Any, input_: Any, label: str, problems: list[str]) -> None:
    if not isinstance(condition, dict):
        problems.append(f"{label}: conditions must be objects")
        return
    kind = condition.get("type")
    if kind not in _OPERATORS | _DATE_OPERATORS:
        problems.append(f"{label}: unknown condition type {kind!r}")
    arguments = condition.get("arguments")
    # The Console writes the widget input into every condition; a hand edit that changes only
    # one of them is a mistake.
    if arguments is not None and arguments != [input_]:
        problems.append(f"{label}: condition arguments {arguments!r} differ from input {input_!r}")


def _check_set_variables(state: State, label: str, problems: list[str]) -> None:
    _check_pairs(widget_properties(state).get("variables"), "variables", label, problems)


def _check_send_message(state: State, label: str, problems: list[str]) -> None:
    props = widget_properties(state)
    if props.get("message_type") != "content_template" and not props.get("body"):
        problems.append(f"{label}: body is required")


def _check_speech(state: State, label: str, problems: list[str]) -> None:
    """Voices, TTS languages and speech languages Twilio would refuse on the call. These are
    runtime warnings at Twilio, not Studio validation errors: checked here too, so a flow
    that would fail on every call is caught before it is published."""
    props = widget_properties(state)
    gather = state["type"] == "gather-input-on-call"
    voice, language = props.get("voice", ""), props.get("language", "")
    if not isinstance(voice, str) or not isinstance(language, str):
        return  # reported as a wrong JSON type
    if props.get("say") and not _has_liquid(voice + language):
        problem = voice_problem(voice, language)
        warning = GATHER_SAY_VOICE_WARNING if gather else SAY_VOICE_WARNING
        if problem is not None:
            where = "language" if problem.startswith("language") else "voice"
            problems.append(f"{label}: property {where!r}: {problem} (Twilio warning {warning})")
    heard = props.get("gather_language")
    if gather and isinstance(heard, str) and not _has_liquid(heard) and not is_language_tag(heard):
        problems.append(
            f"{label}: property 'gather_language': {heard!r} is not a language-COUNTRY tag"
            f" like en-US (Twilio warning {GATHER_LANGUAGE_WARNING})"
        )


_WIDGET_CHECKS: dict[str, Callable[[State, str, list[str]], None]] = {
    "gather-input-on-call": _check_speech,
    "say-play": _check_speech,
    "make-http-request": _check_http,
    "split-based-on": _check_split,
    "set-variables": _check_set_variables,
    "send-message": _check_send_message,
}


_LIQUID_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def _json_body_problems(body: str) -> list[str]:
    """Liquid outside a quoted JSON string, and bodies that are not JSON even with Liquid filled.

    Liquid substitutes plain text, so an unquoted expression yields invalid JSON for most values.
    (A quoted one still breaks on quotes in what the caller said; form parameters avoid both.)
    """
    # Liquid markup is skipped as a whole: quotes inside it are Liquid's, not JSON's.
    markup = {match.start(): match.end() for match in _LIQUID_MARKUP.finditer(body)}
    problems: list[str] = []
    in_string = False
    index = 0
    while index < len(body):
        if index in markup:
            if not in_string:
                expression = body[index : markup[index]]
                problems.append(f"JSON body has Liquid outside a quoted value: {expression}")
            index = markup[index]
            continue
        if body[index] == "\\" and in_string:
            index += 1  # skip the escaped character
        elif body[index] == '"':
            in_string = not in_string
        index += 1
    if not problems:
        try:
            json.loads(_LIQUID_MARKUP.sub("x", body))
        except ValueError as error:
            problems.append(f"JSON body is not valid JSON: {error}")
    return problems


def _check_reachable(flow: dict[str, Any], names: dict[str, State], problems: list[str]) -> None:
    initial = flow.get("initial_state")
    if not isinstance(initial, str) or initial not in names:
        return
    seen = {initial}
    queue = deque([initial])
    while queue:
        for transition in widget_transitions(names[queue.popleft()]):
            target = next_widget(transition)
            if target in names and target not in seen:
                seen.add(target)
                queue.append(target)
    problems.extend(
        f"widget {name!r} is unreachable from {initial!r}" for name in names if name not in seen
    )
