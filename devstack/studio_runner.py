"""Run a Twilio Studio flow definition (Flow API v2 JSON) locally, the way Studio executes it.

Twilio cannot be reached from the dev machine, so this runner is how we prove that the Studio
flow does what we expect: it walks the widgets from the trigger, renders every Liquid property
with python-liquid, plays a scripted caller against the gathers, makes real (signed) HTTP
requests to our functions and sends messages through the Twilio REST stand-in::

    execution = run_call(flow, from_="+15558675310", to="+15017122661",
                         caller=Caller(["a crab holding a light saber"]), account=account)
    print(format_transcript(execution))

Flow definitions are checked by :func:`devstack.flow_checker.check_flow`.

Supported widgets: trigger, say-play, gather-input-on-call, make-http-request, send-message,
split-based-on, set-variables. Anything else fails the execution with an error naming it.

Chosen where Studio's behaviour is not pinned down (see the project's Twilio notes):

* A gather prompt with ``loop`` > 1 is heard once when the caller answers (barge-in) and
  ``loop`` times before a timeout.
* make-http-request sends ``parameters`` only in form mode (body for POST, query for GET) and
  ``body`` only in JSON POST mode; the form ``Content-Type`` header is the widget's
  ``content_type`` as written. A request that gets no response leaves the widget's outputs empty.
* split-based-on tests the widget's ``input`` (Studio writes it into each condition's
  ``arguments`` too); all conditions of a ``match`` transition must hold; comparisons are
  case-insensitive and ignore surrounding whitespace; ``regex`` is a Python ``re.search`` on the
  raw input; ``less_than``/``greater_than`` compare numbers and are false for non-numbers.
* send-message: an empty ``from``/``to`` falls back to the flow/contact address.
* A say-play or gather whose voice Twilio lacks, whose Polly voice does not speak its
  ``language``, or whose ``language``/``gather_language`` is no language-COUNTRY tag ("en"
  instead of "en-US") fails the execution with Twilio's warning code (13511, 13321, 13331):
  Twilio reports these as warnings of the call, and the say or gather fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from liquid import Environment, is_undefined
from liquid.exceptions import LiquidError
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from .flow_checker import (
    CONTENT_TYPES,
    FORM,
    GATHER_LANGUAGE_WARNING,
    GATHER_SAY_VOICE_WARNING,
    JSON_TYPE,
    SAY_VOICE_WARNING,
    State,
    Transition,
    is_language_tag,
    key_value_items,
    media_type,
    next_widget,
    transition_for,
    voice_problem,
    widget_properties,
    widget_transitions,
)

API_VERSION = "2010-04-01"
HTTP_TIMEOUT_S = 10.0  # Studio's make-http-request limit
MAX_HTTP_BODY_BYTES = 64 * 1024  # Studio keeps at most 64 kB of a response body
USER_AGENT = "TwilioProxy/1.1"


# --------------------------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------------------------


@dataclass
class TwilioAccount:
    account_sid: str
    auth_token: str  # signs make-http-request calls (X-Twilio-Signature), like Studio
    api_base_url: str  # where send-message widgets send (the Twilio REST stand-in)


@dataclass
class Caller:
    """Scripted caller input, consumed one item per gather: a str is speech, None is silence
    (timeout), and "dtmf:<digits>" is a keypress."""

    inputs: list[str | None]
    confidence: float = 0.92


@dataclass
class Turn:
    # "flow" (said/played to the caller), "caller" (speech/silence/keys), "http" (request +
    # status), "sms" (message sent by a send-message widget), "end"
    who: str
    text: str
    # What the flow spoke with (its voice and TTS language), or the language speech was
    # recognised in (a caller's words); "" when the widget leaves it to Twilio's default.
    voice: str = ""
    language: str = ""


@dataclass
class Execution:
    transcript: list[Turn]
    widgets: dict[str, dict[str, Any]]  # outputs by widget name, as Liquid sees them
    path: list[str]  # widget names visited, in order
    status: str  # "ended" (a transition with no next) or "failed" (runner error)
    error: str | None = None


# --------------------------------------------------------------------------------------------
# Execution state
# --------------------------------------------------------------------------------------------


class _RunnerError(Exception):
    """Stops the execution with status "failed"."""


def _to_json(value: Any) -> str:
    return "null" if is_undefined(value) else json.dumps(value)


_LIQUID = Environment()
_LIQUID.filters["to_json"] = _to_json  # used in Twilio's own flows


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class _Run:
    """Everything one execution reads and writes."""

    account: TwilioAccount
    http: requests.Session
    trigger_key: str  # "call" or "message"
    trigger: dict[str, str]
    caller: Caller | None = None
    flow_sid: str = field(default_factory=lambda: _sid("FW"))
    execution_sid: str = field(default_factory=lambda: _sid("FN"))
    transcript: list[Turn] = field(default_factory=list)
    widgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    inputs_used: int = 0

    def context(self) -> dict[str, Any]:
        return {
            "trigger": {self.trigger_key: self.trigger},
            "widgets": self.widgets,
            "flow": {
                "channel": {"address": self.trigger["To"]},
                "variables": self.variables,
                "data": {},
                "sid": self.execution_sid,
                "flow_sid": self.flow_sid,
            },
            "contact": {"channel": {"address": self.trigger["From"]}},
        }

    def render(self, template: Any, where: str) -> str:
        """`template` rendered with Liquid; non-strings (numbers) are used as their text."""
        if template is None:
            return ""
        if not isinstance(template, str):
            return str(template)
        try:
            return _LIQUID.from_string(template).render(**self.context())
        except LiquidError as error:
            raise _RunnerError(f"{where}: Liquid error: {error}") from error

    def prop(self, state: State, name: str, default: str = "") -> str:
        value = widget_properties(state).get(name)
        return self.render(default if value is None else value, f"{state['name']}.{name}")

    def say(self, text: str, voice: str = "", language: str = "") -> None:
        self.transcript.append(Turn("flow", text, voice, language))

    def require_call(self, state: State) -> dict[str, str]:
        if self.trigger_key != "call":
            raise _RunnerError(f"widget {state['name']!r} ({state['type']}) needs a voice call")
        return self.trigger

    def next_input(self) -> str | None:
        """The caller's next input; silence once the script is used up."""
        inputs = self.caller.inputs if self.caller else []
        if self.inputs_used >= len(inputs):
            return None
        self.inputs_used += 1
        return inputs[self.inputs_used - 1]


def _execute(flow: dict[str, Any], run: _Run, event: str, max_steps: int) -> Execution:
    try:
        _walk(flow, run, event, max_steps)
    except _RunnerError as error:
        run.transcript.append(Turn("end", f"failed: {error}"))
        return Execution(run.transcript, run.widgets, run.path, "failed", str(error))
    run.transcript.append(Turn("end", "hang up" if run.trigger_key == "call" else "flow ended"))
    return Execution(run.transcript, run.widgets, run.path, "ended")


def _index_states(flow: Any) -> dict[str, State]:
    if not isinstance(flow, dict) or not isinstance(flow.get("states"), list):
        raise _RunnerError("the flow definition has no 'states' list")
    states: dict[str, State] = {}
    for state in flow["states"]:
        if isinstance(state, dict) and isinstance(state.get("name"), str):
            states.setdefault(state["name"], state)  # Studio refuses duplicates; first wins
    return states


def _walk(flow: dict[str, Any], run: _Run, event: str, max_steps: int) -> None:
    states = _index_states(flow)
    initial = flow.get("initial_state")
    trigger = states.get(initial) if isinstance(initial, str) else None
    if trigger is None or trigger.get("type") != "trigger":
        raise _RunnerError(f"initial_state {initial!r} is not a trigger widget")
    run.path.append(trigger["name"])
    transition = transition_for(trigger, event)
    steps = 0
    while (name := next_widget(transition)) is not None:
        if steps >= max_steps:
            raise _RunnerError(f"stopped after {max_steps} widgets without ending (a loop?)")
        steps += 1
        state = states.get(name)
        if state is None:
            raise _RunnerError(f"a transition points at unknown widget {name!r}")
        run.path.append(name)
        kind = state.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise _RunnerError(f"widget {name!r} has unsupported type {kind!r}")
        transition = handler(run, state)


# --------------------------------------------------------------------------------------------
# Voice widgets
# --------------------------------------------------------------------------------------------


def _loop_count(state: State) -> int:
    loop = widget_properties(state).get("loop", 1)
    return loop if isinstance(loop, int) and loop > 0 else 1


def _prompt(run: _Run, state: State) -> str | None:
    """What the caller hears from a say/play property, or None if neither is set."""
    props = widget_properties(state)
    if props.get("say"):
        return run.prop(state, "say")
    if props.get("play"):
        return f"[plays {run.prop(state, 'play')}]"
    return None


def _speaking(run: _Run, state: State, warning: str) -> tuple[str, str]:
    """The voice and language a widget's `say` is spoken with; a voice Twilio lacks or one
    that does not speak the language fails the widget, as Twilio's `warning` does the call."""
    voice, language = run.prop(state, "voice").strip(), run.prop(state, "language").strip()
    if widget_properties(state).get("say"):
        problem = voice_problem(voice, language)
        if problem is not None:
            raise _RunnerError(f"widget {state['name']!r}: Twilio warning {warning}: {problem}")
    return voice, language


def _run_say_play(run: _Run, state: State) -> Transition | None:
    run.require_call(state)
    voice, language = _speaking(run, state, SAY_VOICE_WARNING)
    prompt = _prompt(run, state)
    for _ in range(_loop_count(state)):
        if prompt is not None:
            run.say(prompt, voice, language)
    if widget_properties(state).get("digits"):
        run.say(f"[sends digits {run.prop(state, 'digits')}]")
    run.widgets[state["name"]] = {}
    return transition_for(state, "audioComplete")


# Twilio's speech profanity filter masks all but the first letter; a tiny list is enough here.
_PROFANITY = re.compile(
    r"\b(fuck(?:ing|ed|er)?|shit(?:ty)?|bitch|bastard|asshole|dickhead|crap)\b", re.IGNORECASE
)


def _mask_profanity(text: str) -> str:
    """Mask profane words except their first letter, as Twilio's speech profanity filter does."""
    return _PROFANITY.sub(lambda match: match[0][0] + "*" * (len(match[0]) - 1), text)


def _keys(state: State, digits: str) -> str:
    """Digits as Gather reports them: up to the finish key, at most number_of_digits."""
    props = widget_properties(state)
    finish = props.get("finish_on_key")
    if isinstance(finish, str) and finish and finish in digits:
        digits = digits[: digits.index(finish)]
    limit = props.get("number_of_digits")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        digits = digits[:limit]
    return digits


def _hearing(run: _Run, state: State) -> str:
    """The gather's speech-recognition language; one that is no language-COUNTRY tag fails
    the gather, as Twilio's warning 13331 does."""
    language = run.prop(state, "gather_language").strip()
    if language and not is_language_tag(language):
        raise _RunnerError(
            f"widget {state['name']!r}: Twilio warning {GATHER_LANGUAGE_WARNING}:"
            f" {language!r} is not a language-COUNTRY tag like en-US"
        )
    return language


def _run_gather(run: _Run, state: State) -> Transition | None:
    call = run.require_call(state)
    voice, language = _speaking(run, state, GATHER_SAY_VOICE_WARNING)
    hearing = _hearing(run, state)
    outputs: dict[str, Any] = {key: call[key] for key in ("CallSid", "From", "To")}
    run.widgets[state["name"]] = outputs
    heard = run.next_input()
    # Speech recognition is only switched on when the speech transition leads somewhere.
    speech_on = next_widget(transition_for(state, "speech")) is not None
    answered = heard is not None and (heard.startswith("dtmf:") or speech_on)
    prompt = _prompt(run, state)
    for _ in range(1 if answered else _loop_count(state)):
        if prompt is not None:
            run.say(prompt, voice, language)
    if heard is None:
        run.transcript.append(Turn("caller", "(silence)"))
        return transition_for(state, "timeout")
    if heard.startswith("dtmf:"):
        digits = _keys(state, heard.removeprefix("dtmf:"))
        run.transcript.append(Turn("caller", f"[presses {digits}]"))
        outputs["Digits"] = digits
        return transition_for(state, "keypress")
    if not speech_on:
        run.transcript.append(Turn("caller", f"{heard} (not heard: speech is not wired)"))
        return transition_for(state, "timeout")
    run.transcript.append(Turn("caller", heard, language=hearing))
    filtered = widget_properties(state).get("profanity_filter") == "true"
    outputs["SpeechResult"] = _mask_profanity(heard) if filtered else heard
    confidence = run.caller.confidence if run.caller else 0.0
    outputs["Confidence"] = str(confidence)  # Studio hands it over as text
    return transition_for(state, "speech")


# --------------------------------------------------------------------------------------------
# make-http-request
# --------------------------------------------------------------------------------------------


@dataclass
class _HttpCall:
    method: str
    url: str  # as requested, bodySHA256 included
    shown_url: str  # as the flow wrote it (plus GET parameters), for the transcript
    headers: dict[str, str]
    data: bytes | None


def _with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(pairs)


def _prepare_http(
    token: str, method: str, url: str, content_type: str, params: list[tuple[str, str]], body: str
) -> _HttpCall:
    """The request Studio would send, signed with X-Twilio-Signature like every Twilio webhook."""
    validator = RequestValidator(token)
    headers = {"User-Agent": USER_AGENT, "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
    if method == "GET":
        target = _with_query(url, params)
        headers["X-Twilio-Signature"] = validator.compute_signature(target, {})
        return _HttpCall(method, target, target, headers, None)
    headers["Content-Type"] = content_type
    if media_type(content_type) == JSON_TYPE:
        # JSON: the URL carries the body's SHA-256 and is signed alone.
        data = body.encode("utf-8")
        target = _with_query(url, [("bodySHA256", hashlib.sha256(data).hexdigest())])
        headers["X-Twilio-Signature"] = validator.compute_signature(target, {})
        return _HttpCall(method, target, url, headers, data)
    # MultiDict: the validator signs every value of a repeated key.
    headers["X-Twilio-Signature"] = validator.compute_signature(url, MultiDict(params))
    return _HttpCall(method, url, url, headers, urlencode(params).encode("ascii"))


def _http_outputs(response: requests.Response) -> dict[str, Any]:
    content_type = response.headers.get("Content-Type", "")
    body = response.content[:MAX_HTTP_BODY_BYTES].decode("utf-8", errors="replace")
    outputs: dict[str, Any] = {
        "status_code": response.status_code,
        "content_type": content_type,
        "body": body,
    }
    # Studio parses only JSON objects served as application/json.
    if media_type(content_type) == JSON_TYPE:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            outputs["parsed"] = parsed
    return outputs


def _http_params(run: _Run, state: State) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for item in key_value_items(widget_properties(state).get("parameters")):
        key = run.render(item.get("key"), f"{state['name']}.parameters")
        if key == "method":
            raise _RunnerError(
                f"widget {state['name']!r}: Studio error 81014: parameter name 'method' "
                "is a reserved word"
            )
        params.append((key, run.render(item.get("value"), f"{state['name']}.parameters.{key}")))
    return params


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. a broken IPv6 literal
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _http_call(run: _Run, state: State) -> _HttpCall:
    name = state["name"]
    if widget_properties(state).get("add_twilio_auth") is True:
        raise _RunnerError(
            f"widget {name!r}: add_twilio_auth would send our Twilio credentials; refused"
        )
    method = run.prop(state, "method", "GET").strip().upper()  # the Console's default is GET
    if method not in ("GET", "POST"):
        raise _RunnerError(f"widget {name!r}: method {method!r} is not GET or POST")
    url = run.prop(state, "url").strip()
    if not _is_http_url(url):
        raise _RunnerError(f"widget {name!r}: Studio error 81014: {url!r} is not a valid URL")
    content_type = run.prop(state, "content_type", FORM).strip()
    if content_type.replace(" ", "").lower() not in CONTENT_TYPES:
        raise _RunnerError(f"widget {name!r}: unsupported content_type {content_type!r}")
    params = _http_params(run, state)
    body = run.prop(state, "body")
    return _prepare_http(run.account.auth_token, method, url, content_type, params, body)


def _run_http(run: _Run, state: State) -> Transition | None:
    call = _http_call(run, state)
    try:
        response = run.http.request(
            call.method,
            call.url,
            data=call.data,
            headers=call.headers,
            timeout=HTTP_TIMEOUT_S,
            allow_redirects=True,
        )
    except requests.Timeout:
        return _http_failed(run, state, call, f"no answer within {HTTP_TIMEOUT_S:g} s")
    except requests.RequestException as error:
        return _http_failed(run, state, call, f"{type(error).__name__}")
    outputs = _http_outputs(response)
    run.widgets[state["name"]] = outputs
    run.transcript.append(Turn("http", f"{call.method} {call.shown_url} -> {response.status_code}"))
    succeeded = 200 <= response.status_code < 300  # redirects were followed already
    return transition_for(state, "success" if succeeded else "failed")


def _http_failed(run: _Run, state: State, call: _HttpCall, reason: str) -> Transition | None:
    run.widgets[state["name"]] = {}
    run.transcript.append(Turn("http", f"{call.method} {call.shown_url} -> {reason}"))
    return transition_for(state, "failed")


# --------------------------------------------------------------------------------------------
# send-message
# --------------------------------------------------------------------------------------------


def _send(run: _Run, form: list[tuple[str, str]]) -> tuple[dict[str, Any], str | None]:
    """POST a message to the REST API; (resource JSON, None) or (error JSON, reason)."""
    account = run.account
    url = f"{account.api_base_url.rstrip('/')}/{API_VERSION}/Accounts/{account.account_sid}"
    try:
        response = run.http.post(
            f"{url}/Messages.json",
            data=form,
            auth=(account.account_sid, account.auth_token),
            timeout=HTTP_TIMEOUT_S,
        )
    except requests.RequestException as error:
        return {}, type(error).__name__
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    if 200 <= response.status_code < 300:
        return payload, None
    return payload, f"{response.status_code} {payload.get('code', '')} {payload.get('message', '')}"


def _run_send_message(run: _Run, state: State) -> Transition | None:
    props = widget_properties(state)
    if props.get("message_type") == "content_template":
        raise _RunnerError(f"widget {state['name']!r}: content templates are not supported")
    body = run.prop(state, "body")
    from_ = run.prop(state, "from") or run.trigger["To"]
    to = run.prop(state, "to") or run.trigger["From"]
    media_url = run.prop(state, "media_url").strip()
    form = [("To", to), ("From", from_), ("Body", body)]
    if media_url:
        form.append(("MediaUrl", media_url))
    payload, error = _send(run, form)
    outbound: dict[str, Any] = {"To": to, "From": from_, "Body": body}
    media = f" [media {media_url}]" if media_url else ""
    if error is None:
        outbound.update(Sid=payload.get("sid", ""), Status=payload.get("status", ""))
        run.transcript.append(Turn("sms", f"to {to}: {body}{media}"))
    else:
        outbound.update(
            Status="failed",
            ErrorCode=str(payload.get("code", "")),
            ErrorMessage=str(payload.get("message", error)),
        )
        run.transcript.append(Turn("sms", f"to {to}: {body}{media} -> failed: {error.strip()}"))
    run.widgets[state["name"]] = {"outbound": outbound}
    return transition_for(state, "sent" if error is None else "failed")


# --------------------------------------------------------------------------------------------
# split-based-on and set-variables
# --------------------------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _compare(kind: str, subject: str, value: str) -> bool:
    number, limit = _number(subject), _number(value)
    if number is None or limit is None:
        return False
    return number < limit if kind == "less_than" else number > limit


def _condition_holds(kind: str, subject: str, value: str) -> bool:
    """Whether `subject` passes a split-based-on condition (case-insensitive, like Studio)."""
    text, wanted = subject.strip().casefold(), value.strip().casefold()
    options = [option.strip().casefold() for option in value.split(",") if option.strip()]
    match kind:
        case "equal_to":
            return text == wanted
        case "not_equal_to":
            return text != wanted
        case "matches_any_of":
            return text in options
        case "does_not_match_any_of":
            return text not in options
        case "contains":
            return wanted in text
        case "does_not_contain":
            return wanted not in text
        case "starts_with":
            return text.startswith(wanted)
        case "does_not_start_with":
            return not text.startswith(wanted)
        case "is_blank":
            return not text
        case "is_not_blank":
            return bool(text)
        case "regex":
            return re.search(value, subject) is not None
        case "less_than" | "greater_than":
            return _compare(kind, subject, value)
    raise _RunnerError(f"unsupported split condition type {kind!r}")


def _matches(run: _Run, state: State, transition: Transition, subject: str) -> bool:
    conditions = transition.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        return False
    for condition in conditions:
        if not isinstance(condition, dict):
            return False
        value = run.render(condition.get("value", ""), f"{state['name']}.conditions")
        try:
            holds = _condition_holds(str(condition.get("type")), subject, value)
        except re.error as error:
            raise _RunnerError(f"widget {state['name']!r}: bad regex {value!r}: {error}") from error
        if not holds:
            return False
    return True


def _run_split(run: _Run, state: State) -> Transition | None:
    subject = run.prop(state, "input")
    run.widgets[state["name"]] = {}
    for transition in widget_transitions(state):
        if transition.get("event") == "match" and _matches(run, state, transition, subject):
            return transition
    return transition_for(state, "noMatch")


def _run_set_variables(run: _Run, state: State) -> Transition | None:
    # One at a time, so a later value can use an earlier one.
    for item in key_value_items(widget_properties(state).get("variables")):
        key = str(item.get("key", ""))
        run.variables[key] = run.render(item.get("value", ""), f"{state['name']}.{key}")
    run.widgets[state["name"]] = {}
    return transition_for(state, "next")


_HANDLERS: dict[str, Callable[[_Run, State], Transition | None]] = {
    "say-play": _run_say_play,
    "gather-input-on-call": _run_gather,
    "make-http-request": _run_http,
    "send-message": _run_send_message,
    "split-based-on": _run_split,
    "set-variables": _run_set_variables,
}


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _run_flow(
    flow: dict[str, Any],
    run: _Run,
    event: str,
    http: requests.Session | None,
    max_steps: int,
) -> Execution:
    try:
        return _execute(flow, run, event, max_steps)
    finally:
        if http is None:
            run.http.close()  # ours; a caller's session is the caller's to close


def run_call(
    flow: dict[str, Any],
    *,
    from_: str,
    to: str,
    caller: Caller,
    account: TwilioAccount,
    http: requests.Session | None = None,
    max_steps: int = 200,
    stir_verstat: str | None = "TN-Validation-Passed-A",
    from_country: str | None = None,
) -> Execution:
    """Execute `flow` for an inbound call from `from_` to our number `to`. `stir_verstat` is
    the SHAKEN/STIR verdict Twilio adds to a call that carries one [DOC voice webhooks]; None
    leaves it out, as for a call without SHAKEN/STIR data. `from_country` is the caller's
    country as Twilio's geo lookup gives it (`{{trigger.call.FromCountry}}`, ISO 3166: "MX");
    None leaves it out, as for a number Twilio cannot place."""
    call = {
        "From": from_,
        "To": to,
        "CallSid": _sid("CA"),
        "AccountSid": account.account_sid,
        "Caller": from_,
        "Called": to,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": API_VERSION,
    }
    if stir_verstat is not None:
        call["StirVerstat"] = stir_verstat
    if from_country is not None:
        call["FromCountry"] = from_country
    run = _Run(account, http or requests.Session(), "call", call, caller)
    return _run_flow(flow, run, "incomingCall", http, max_steps)


def run_message(
    flow: dict[str, Any],
    *,
    from_: str,
    to: str,
    body: str,
    account: TwilioAccount,
    http: requests.Session | None = None,
    max_steps: int = 200,
) -> Execution:
    """Execute `flow` for an inbound SMS `body` from `from_` to our number `to`."""
    message = {
        "Body": body,
        "From": from_,
        "To": to,
        "MessageSid": _sid("SM"),
        "AccountSid": account.account_sid,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": API_VERSION,
    }
    run = _Run(account, http or requests.Session(), "message", message)
    return _run_flow(flow, run, "incomingMessage", http, max_steps)


_LABELS = {"flow": "Bot:", "caller": "Caller:", "http": "HTTP:", "sms": "SMS:", "end": "End:"}


def format_transcript(execution: Execution) -> str:
    """The transcript as aligned lines, e.g. ``  Caller: a crab holding a light saber``; a
    ``Voice:`` line says what the flow speaks with whenever that changes."""
    lines: list[str] = []
    speaking = ("", "")
    for turn in execution.transcript:
        if turn.who == "flow" and (turn.voice, turn.language) != speaking:
            speaking = (turn.voice, turn.language)
            if any(speaking):
                voice, language = turn.voice or "Twilio's default", turn.language or "default"
                lines.append(f"  {'Voice:':<8}{voice}, {language}")
        label = _LABELS.get(turn.who, f"{turn.who}:")
        first, *rest = turn.text.splitlines() or [""]
        lines.append(f"  {label:<8}{first}")
        lines.extend(f"  {'':<8}{line}" for line in rest)
    return "\n".join(lines)
