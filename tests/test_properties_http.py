"""Property-based tests (Hypothesis) of both functions' HTTP layer on the local stack:
generated requests to generate (without credentials, as the operator's JSON, as Twilio-signed
Studio requests and message webhooks) and to composite (forged, and signed callbacks of any
shape).

Whatever arrives: no 500 and no hang (every call has a timeout); bad input gets a clear 4xx, or
on Twilio's message paths a 200 reply saying what to do; refused input records nothing; a signed
callback never leaves its request claimed and never sends a second message. The functions log
through a stdout as a deployed function has it (the deployed_stdout fixture), since pytest's
capture would write "?" for a lone surrogate and hide a log line that breaks a request.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from urllib.parse import urlencode

import jwt
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devstack.qstash import DEV_CURRENT_SIGNING_KEY, make_signature
from devstack.stack_client import StackClient, count_rows, queued_row
from shared.callbacks import parse_callback
from shared.delivery_decisions import CallbackOutcome
from shared.errors import BadRequest, EmptyPrompt, HiddenNumber, PromptTooLong
from shared.intake import (
    Command,
    check_pair,
    interpret_message,
    parse_address,
    parse_picture_request,
    parse_studio_request,
)
from shared.records import Channel
from shared.services import get_services
from shared.settings import Settings
from tests.strategies import (
    HTTP_TIMEOUT_S,
    IGNORE_RANDOM_IN_THE_BACKGROUND,
    STOP_START_HELP,
    caller_addresses,
    composite_url,
    describe,
    fresh_number,
    header_texts,
    json_bytes,
    json_values,
    mostly,
    nested_json_documents,
    not_e164_numbers,
    number_pairs,
    our_addresses,
    person_texts,
    plausible_prompts,
    post_signed_callback,
    post_signed_form,
    resolve_fields,
    sid_as_kept,
    signed_bodies,
    texts,
    texts_with_lone_surrogates,
    twilio_sids,
)

pytestmark = [pytest.mark.stack, IGNORE_RANDOM_IN_THE_BACKGROUND]

# --- how hard to try ---------------------------------------------------------------------------

HTTP = settings(
    max_examples=60,
    deadline=None,  # a hang is caught by HTTP_TIMEOUT_S instead
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GENERATE_MAX_BODY = 64 * 1024  # generate/main.py MAX_BODY_BYTES

# --- checks ------------------------------------------------------------------------------------


def live_settings() -> Settings:
    """The settings the in-process functions run with (max prompt length, keyword, …)."""
    return get_services().settings


def nesting_depth(raw: bytes) -> int:
    """How deep brackets nest in `raw` (counting any inside strings: at least the depth)."""
    depth = deepest = 0
    for byte in raw:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth = max(depth - 1, 0)
    return deepest


def nested_to_the_recursion_limit(raw: bytes) -> bool:
    """Whether json.loads reads `raw` depends on how deep the stack already is: nested just
    under the recursion limit (which Hypothesis raises while a test runs, for the functions'
    threads too), it may be read here and not in the function, or the other way round.
    Deeper is never read; both function threads and this one sit less than 300 frames deep."""
    limit = sys.getrecursionlimit()
    return limit - 300 < nesting_depth(raw) <= limit


def assert_json_error(response: requests.Response, method: str = "POST") -> None:
    """A refusal says what was wrong, as JSON `{"error": "..."}` (HEAD gets no body)."""
    assert response.headers.get("Content-Type", "").startswith("application/json"), describe(
        response
    )
    if method != "HEAD":
        error = response.json()["error"]
        assert isinstance(error, str) and error, describe(response)


def assert_request_left_consistent(
    stack: StackClient, request_id: str, number: str, statuses: list[int], all_refused: bool
) -> None:
    """After its callbacks were answered: nobody holds the request, at most one message went
    out, and the row agrees with what went out."""
    stack.stack.wait_idle(10)
    row = stack.row(request_id)
    messages = stack.messages_to(number)
    event(f"request left {row['status']}")
    assert (row["claim_token"], row["claimed_until"]) == (None, None), row
    assert len(messages) <= 1, messages
    if 503 not in statuses:  # only a run asked to be retried may leave a request half-done
        assert row["status"] not in ("composing", "sending"), row
    if all_refused:
        assert (row["status"], row["attempts"]) == ("queued", 0), row
    if row["status"] == "queued":
        assert messages == []
    if row["status"] == "delivered":
        assert len(messages) == 1 and messages[0]["media"], messages
        assert row["message_sid"] == messages[0]["sid"]
    if row["status"] == "failed":
        assert len(messages) == (1 if row["notified"] else 0), (row, messages)
        assert not any(message.get("media") for message in messages)


# --- generate over HTTP: anything, without credentials -------------------------------------------

FORM = "application/x-www-form-urlencoded"
#: POST half the time, any other method (some unknown to HTTP) the other half.
methods = mostly(
    st.just("POST"),
    st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND", "FOO"]),
    share=1,
)
CONTENT_TYPES: list[str | None] = [
    None,
    "",
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    'application/json;charset="utf-16"',
    "application/JSON",
    "application/vnd.api+json",
    FORM,
    f"{FORM}; charset=utf-8",
    f"{FORM}; charset=bogus",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/xml",
    "application/octet-stream",
    "image/jpeg",
    "*/*",
]


def repeated(piece: bytes, size: int) -> bytes:
    return (piece * (size // len(piece) + 1))[:size]


#: Bodies from 60 KB to 100 KB (the limit is 64 KiB).
large_bodies = st.builds(repeated, st.binary(min_size=1, max_size=16), st.integers(60_000, 100_000))
multipart_bodies = st.builds(
    lambda name, value: (
        f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n--xyz--\r\n'
    ).encode(),
    header_texts,
    texts,
)
raw_bodies = st.one_of(
    st.binary(max_size=2000),
    large_bodies,
    json_values.map(json_bytes),
    nested_json_documents,
    st.dictionaries(texts, texts, max_size=5).map(lambda form: urlencode(form).encode()),
    multipart_bodies,
)
#: Credentials that are not the real ones (a random Twilio signature, a wrong operator key).
forged_credentials = st.fixed_dictionaries(
    {},
    optional={
        "X-Twilio-Signature": header_texts,
        "X-Operator-Key": header_texts.filter(lambda key: "devstack-operator-key" not in key),
    },
)


def statuses_without_credentials(method: str, content_type: str | None, body: bytes) -> set[int]:
    """What generate must answer a request that proves nothing."""
    if len(body) > GENERATE_MAX_BODY:
        return {413}
    if method != "POST":
        return {405}
    if content_type not in CONTENT_TYPES:
        return {400, 401, 403, 415}
    mimetype = (content_type or "").split(";")[0].strip().lower()
    if mimetype == FORM:
        return {403}
    if mimetype == "application/json" or mimetype.endswith("+json"):
        if nested_to_the_recursion_limit(body):
            return {400, 401}
        try:
            json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to read
            return {400}
        return {401}
    return {415}


@pytest.mark.usefixtures("deployed_stdout")
@HTTP
@given(
    method=methods,
    content_type=mostly(st.sampled_from(CONTENT_TYPES), header_texts),
    body=raw_bodies,
    credentials=forged_credentials,
)
def test_generate_refuses_whatever_arrives_without_credentials_and_records_nothing(
    calm_stack: StackClient,
    method: str,
    content_type: str | None,
    body: bytes,
    credentials: dict[str, str],
) -> None:
    headers = dict(credentials)
    if content_type is not None:
        headers["Content-Type"] = content_type
    before = count_rows(calm_stack)
    response = requests.request(
        method, calm_stack.env["GENERATE_URL"], data=body, headers=headers, timeout=HTTP_TIMEOUT_S
    )
    event(f"HTTP {response.status_code}")
    assert response.status_code in statuses_without_credentials(method, content_type, body), (
        describe(response)
    )
    assert_json_error(response, method)
    assert count_rows(calm_stack) == before


# --- generate over HTTP: the operator's JSON -----------------------------------------------------


@st.composite
def operator_payloads(draw: st.DrawFn) -> object:
    """Operator JSON: a request that should be taken with at most one field made wrong
    (another type, not E.164, mixed WhatsApp/plain, a 100 KB prompt, missing), random
    fields, or JSON that is not an object at all."""
    shape = draw(st.sampled_from(["request"] * 3 + ["random_fields", "not_an_object"]))
    if shape == "not_an_object":
        return draw(json_values)
    if shape == "random_fields":
        return draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "to": st.one_of(caller_addresses, json_values),
                    "from": st.one_of(our_addresses, json_values),
                    "prompt": st.one_of(person_texts, json_values),
                },
            )
        )
    to, sender = draw(number_pairs())
    payload: dict[str, object] = {"to": to, "prompt": draw(plausible_prompts)}
    if draw(st.booleans()):
        payload["from"] = sender
    wrong = draw(st.sampled_from(["nothing"] * 3 + ["extra", "to", "from", "prompt"]))
    if wrong in ("to", "from", "prompt"):
        spoiled = st.one_of(
            json_values,
            st.just(None),
            texts_with_lone_surrogates,
            person_texts if wrong == "prompt" else not_e164_numbers,
            st.integers(50_000, 100_000).map(lambda n: "x" * n),
        )
        payload[wrong] = draw(spoiled)
    if wrong == "extra":
        payload.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    return payload


KEY_PLACEMENTS = [
    "header",
    "body",
    "header_and_body",
    "wrong_header_right_body",
    "wrong_header",
    "wrong_body",
    "list_in_body",
    "surrogates_in_body",
    "key_and_surrogates_in_body",
    "missing",
]
#: Where the operator key goes; most often somewhere that lets the request in.
key_placements = mostly(
    st.sampled_from(["header", "body", "header_and_body"]), st.sampled_from(KEY_PLACEMENTS), share=2
)


def place_operator_key(
    placement: str, payload: object, key: str, surrogates: str
) -> tuple[dict[str, str], object, bool]:
    """(headers, payload, authorised): the key where `placement` says, and whether the
    function should let the request past its key check (the header wins over the body).
    `surrogates` (text holding lone surrogates, which UTF-8 cannot encode) is the body's key,
    alone or after the real one, where `placement` says so."""
    headers: dict[str, str] = {}
    if placement in ("header", "header_and_body"):
        headers["X-Operator-Key"] = key
    if placement in ("wrong_header", "wrong_header_right_body"):
        headers["X-Operator-Key"] = f"not-{key}"
    in_body: object = {
        "body": key,
        "header_and_body": key,
        "wrong_header_right_body": key,
        "wrong_body": key.upper(),
        "list_in_body": [key],
        "surrogates_in_body": surrogates,
        "key_and_surrogates_in_body": key + surrogates,
    }.get(placement)
    if isinstance(payload, dict) and in_body is not None:
        payload = {**payload, "operator_key": in_body}
    given_key = headers.get("X-Operator-Key")
    if given_key is None and isinstance(payload, dict):
        given_key = payload.get("operator_key")
    return headers, payload, given_key == key


@pytest.mark.usefixtures("deployed_stdout")
@HTTP
@given(payload=operator_payloads(), placement=key_placements, surrogates=texts_with_lone_surrogates)
def test_generate_takes_operator_json_exactly_when_intake_accepts_it(
    calm_stack: StackClient, payload: object, placement: str, surrogates: str
) -> None:
    settings = live_settings()
    if isinstance(payload, dict):
        payload = resolve_fields(payload)
    headers, payload, authorised = place_operator_key(
        placement, payload, calm_stack.env["OPERATOR_KEY"], surrogates
    )
    raw = json_bytes(payload)
    before = count_rows(calm_stack)
    response = requests.post(
        calm_stack.env["GENERATE_URL"],
        data=raw,
        headers={**headers, "Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT_S,
    )
    created = count_rows(calm_stack) - before
    event(f"HTTP {response.status_code}")
    if len(raw) > GENERATE_MAX_BODY or not authorised:
        assert response.status_code == (413 if len(raw) > GENERATE_MAX_BODY else 401)
        assert_json_error(response)
        assert created == 0
        return
    try:
        request = parse_picture_request(
            payload, settings.max_prompt_chars, settings.twilio_from_number
        )
    except BadRequest as exc:
        assert response.status_code == 400, describe(response)
        assert response.json() == {"error": exc.message}
        assert created == 0
        return
    assert response.status_code == 202, describe(response)
    assert created == 1
    row = calm_stack.row(response.json()["request_id"])
    assert (row["recipient"], row["sender"], row["prompt"], row["status"]) == (
        request.recipient,
        request.sender,
        request.prompt,
        "queued",
    )


# --- generate over HTTP: Twilio-signed Studio requests and message webhooks ----------------------

SEPARATORS = ["", " ", "  ", ":", ", ", "-", ".", "\n", "\t", "\xa0", "\u200f"]

#: Texts as people send them to a number whose keyword is DRAW (the local stack's).
draw_messages = st.one_of(
    st.builds("DRAW {}".format, plausible_prompts),
    st.builds(
        lambda *parts: "".join(parts),
        st.sampled_from(["DRAW", "draw", "Draw"]),
        st.sampled_from(SEPARATORS),
        person_texts,
    ),
    person_texts,
    st.sampled_from(STOP_START_HELP),
)
studio_channels = st.one_of(st.sampled_from(["voice", "message"]), texts)
stir_verdicts = st.one_of(
    st.sampled_from(
        [
            "TN-Validation-Passed-A",
            "TN-Validation-Passed-B",
            "TN-Validation-Passed-C",
            "TN-Validation-Failed-A",
            "No-TN-Validation",
            "",
        ]
    ),
    texts,
)


@st.composite
def studio_forms(draw: st.DrawFn) -> dict[str, str]:
    """Studio's form: `prompt` from a call or `body` from a text, numbers valid or not."""
    caller, ours = draw(number_pairs())
    form = {"to": caller, "from": ours}
    if draw(st.booleans()):
        form["prompt"] = draw(st.one_of(plausible_prompts, person_texts))
    else:
        form["body"] = draw(draw_messages)
    form.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "channel": studio_channels,
                    "source_ref": twilio_sids,
                    "stir_verstat": stir_verdicts,
                },
            )
        )
    )
    return form


def studio_verdict(form: Mapping[str, str], settings: Settings) -> tuple[int, Command | None]:
    """(status, command) generate must answer with: the command is what a text asks for, or
    PROMPT when a call's picture should be taken, or EMPTY_PROMPT / TOO_LONG when it should
    not. Numbers that are not E.164, or one WhatsApp and one plain, are a broken flow: 400."""
    if len(urlencode(form)) > GENERATE_MAX_BODY:
        return 413, None
    if "body" in form:
        try:
            sender = parse_address(form.get("to"), "to")
        except HiddenNumber:
            return 200, None  # told that a hidden number cannot get a picture
        except BadRequest:
            return 400, None
        try:
            check_pair(sender, parse_address(form.get("from"), "from"))
        except BadRequest:
            return 400, None
        command = interpret_message(form["body"], settings.sms_keyword, settings.max_prompt_chars)
        return 200, command.command
    try:
        request = parse_studio_request(form, settings.max_prompt_chars)
    except HiddenNumber:
        return 200, None
    except EmptyPrompt:
        return 200, Command.EMPTY_PROMPT
    except PromptTooLong:
        return 200, Command.TOO_LONG
    except BadRequest:
        return 400, None
    vouched = form.get("stir_verstat") in ("TN-Validation-Passed-A", "TN-Validation-Passed-B")
    if request.channel is Channel.VOICE and not vouched:
        return 200, None  # told to text instead: the caller ID is not vouched for
    return 200, Command.PROMPT


def assert_says_what_is_wrong(command: Command | None, message: str, max_chars: int) -> None:
    """An empty prompt is asked for words; a long one is told the limit."""
    if command is Command.EMPTY_PROMPT:
        assert "Tell us what to draw" in message, message
    if command is Command.TOO_LONG:
        assert f"in {max_chars:,} or fewer" in message, message  # as English writes numbers


@pytest.mark.usefixtures("deployed_stdout")
@HTTP
@given(form=studio_forms())
def test_studio_requests_get_words_to_say_or_a_clear_400_and_refusals_record_nothing(
    calm_stack: StackClient, form: dict[str, str]
) -> None:
    form = resolve_fields(form)
    settings = live_settings()
    status, command = studio_verdict(form, settings)
    before = count_rows(calm_stack)
    response = post_signed_form(calm_stack, form)
    created = count_rows(calm_stack) - before
    event(f"HTTP {response.status_code}, {command.value if command else 'refused'}")
    assert response.status_code == status, describe(response)
    if status != 200:
        assert_json_error(response)
        assert created == 0
        return
    answer = response.json()
    assert answer["accepted"] is (command is Command.PROMPT), answer
    assert isinstance(answer["message"], str)
    if command not in (Command.STOP, Command.START):  # Twilio confirms those itself
        assert answer["message"], answer
    assert_says_what_is_wrong(command, answer["message"], settings.max_prompt_chars)
    if command is Command.PROMPT:
        assert created == 1
        row = calm_stack.row(answer["request_id"])
        assert row["recipient"] == form["to"].strip()
        assert row["source_ref"] == sid_as_kept(form.get("source_ref"))
    else:
        assert created == 0
        assert "request_id" not in answer


@st.composite
def webhook_forms(draw: st.DrawFn) -> dict[str, str]:
    """Twilio's incoming-message form, with any text and any optional fields."""
    sender, ours = draw(number_pairs())
    form = {"From": sender, "To": ours, "Body": draw(draw_messages)}
    form.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "MessageSid": twilio_sids,
                    "OptOutType": st.one_of(st.sampled_from(["STOP", "START", "HELP"]), texts),
                    "NumMedia": st.sampled_from(["0", "1", "x"]),
                    "ProfileName": texts,
                    "SmsStatus": st.just("received"),
                },
            )
        )
    )
    return form


@pytest.mark.usefixtures("deployed_stdout")
@HTTP
@given(form=webhook_forms())
def test_signed_message_webhooks_get_twiml_and_only_prompts_are_recorded(
    calm_stack: StackClient, form: dict[str, str]
) -> None:
    settings = live_settings()
    form = resolve_fields(form)
    before = count_rows(calm_stack)
    response = post_signed_form(calm_stack, form)
    created = count_rows(calm_stack) - before
    event(f"HTTP {response.status_code}")
    if len(urlencode(form)) > GENERATE_MAX_BODY:
        assert response.status_code == 413, describe(response)
        assert created == 0
        return
    try:
        check_pair(parse_address(form["From"], "From"), parse_address(form["To"], "To"))
    except BadRequest as exc:  # Twilio sends both, alike: a broken setup, not a person
        assert response.status_code == 400, describe(response)
        assert response.json() == {"error": exc.message}
        assert created == 0
        return
    assert response.status_code == 200, describe(response)
    assert response.headers["Content-Type"].startswith("text/xml")
    root = ElementTree.fromstring(response.content)  # noqa: S314 - our own function's reply
    assert root.tag == "Response"
    replies = [element.text or "" for element in root.iter("Message")]
    command = interpret_message(
        form["Body"], settings.sms_keyword, settings.max_prompt_chars, form.get("OptOutType")
    ).command
    event(f"command: {command.value}")
    if command is Command.PROMPT:
        assert len(replies) == 1 and "on its way" in replies[0], replies
        assert created == 1
        rows = calm_stack.sql(
            "select source_ref from public.requests where recipient = %s", form["From"].strip()
        )
        assert rows == [{"source_ref": sid_as_kept(form.get("MessageSid"))}], rows
        return
    assert created == 0
    if command in (Command.STOP, Command.START):
        assert replies == []
    else:
        assert len(replies) == 1 and replies[0].strip(), replies
        assert_says_what_is_wrong(command, replies[0], settings.max_prompt_chars)


# --- composite over HTTP ---------------------------------------------------------------------

FORGERIES = [
    "missing",
    "garbage",
    "wrong_key",
    "other_body",
    "other_request",
    "other_host",
    "expired",
    "alg_none",
]
WRONG_KEY = "sig_" + "7" * 40


def forged_signature(forgery: str, url: str, body: bytes, garbage: str) -> str | None:
    """An Upstash-Signature that must not verify, made the way `forgery` says."""
    key = DEV_CURRENT_SIGNING_KEY
    if forgery == "missing":
        return None
    if forgery == "garbage":
        return garbage
    if forgery == "wrong_key":
        return make_signature(WRONG_KEY, url, body)
    if forgery == "other_body":
        return make_signature(key, url, body + b" ")
    if forgery == "other_request":
        return make_signature(key, url.split("?")[0] + f"?request={uuid.uuid4()}", body)
    if forgery == "other_host":
        return make_signature(key, url.replace("127.0.0.1", "localhost"), body)
    if forgery == "expired":
        return make_signature(key, url, body, now=time.time() - 3600)
    # The classic: the right claims in an unsigned token ("alg": "none").
    claims = jwt.decode(make_signature(key, url, body), options={"verify_signature": False})
    return jwt.encode(claims, "", algorithm="none")


@pytest.mark.usefixtures("deployed_stdout")
@HTTP
@given(
    body=signed_bodies,
    forgery=st.sampled_from(FORGERIES),
    garbage=header_texts,
    method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "HEAD"]),
)
def test_composite_refuses_unsigned_or_forged_callbacks_and_changes_nothing(
    calm_stack: StackClient, body: bytes, forgery: str, garbage: str, method: str
) -> None:
    number = fresh_number()
    request_id = queued_row(calm_stack, number)
    url = composite_url(calm_stack, request_id)
    headers = {"Content-Type": "application/json"}
    if (signature := forged_signature(forgery, url, body, garbage)) is not None:
        headers["Upstash-Signature"] = signature
    response = requests.request(method, url, data=body, headers=headers, timeout=HTTP_TIMEOUT_S)
    event(f"HTTP {response.status_code}")
    assert response.status_code == (401 if method == "POST" else 405), describe(response)
    assert_json_error(response, method)
    row = calm_stack.row(request_id)
    assert (row["status"], row["attempts"], row["claim_token"]) == ("queued", 0, None)
    assert calm_stack.messages_to(number) == []


#: Whom a callback is for: a fresh queued request, an unknown id, text that is not an id, or
#: no `request` parameter at all.
callback_targets = mostly(
    st.just(("queued", "")),
    st.one_of(
        st.uuids().map(lambda value: ("unknown", str(value))),
        texts.map(lambda value: ("malformed", value)),
        st.just(("absent", "")),
    ),
    share=2,
)
#: Upstash-Message-Id: a redelivery repeats it, a duplicate has another one.
owners = st.sampled_from([None, "msg_a", "msg_b"])


def is_request_id(value: str | None) -> bool:
    try:
        uuid.UUID(value or "")
    except ValueError:
        return False
    return True


def has_a_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def refused_as_unusable(request_id: str | None, raw: bytes) -> bool | None:
    """Signed but unusable: composite must refuse it (and QStash should stop retrying).
    None when that depends on the stack (nested_to_the_recursion_limit)."""
    if not is_request_id(request_id):
        return True
    if nested_to_the_recursion_limit(raw):
        return None
    try:
        parse_callback(raw)
    except BadRequest:
        return True
    return False


@pytest.mark.usefixtures("deployed_stdout")
@HTTP
@given(
    target=callback_targets,
    callbacks=st.lists(
        st.tuples(signed_bodies, owners),
        min_size=1,
        max_size=3,
    ),
)
def test_signed_callbacks_of_any_shape_never_break_a_request(
    calm_stack: StackClient, target: tuple[str, str], callbacks: list[tuple[bytes, str | None]]
) -> None:
    kind, request_id = target
    number = fresh_number()
    if kind == "queued":
        request_id = queued_row(calm_stack, number)
    url = composite_url(calm_stack, None if kind == "absent" else request_id)
    known = kind == "queued"
    statuses = []
    refusals = []
    for raw, owner in callbacks:
        response = post_signed_callback(url, raw, owner)
        statuses.append(response.status_code)
        assert response.status_code in {200, 400, 489, 503}, describe(response)
        refused = refused_as_unusable(None if kind == "absent" else request_id, raw)
        if refused is None:
            event("nested to the recursion limit")
            refused = response.status_code in {400, 489}
        refusals.append(refused)
        event(f"HTTP {response.status_code}")
        if refused:
            assert response.status_code in {400, 489}, describe(response)
            assert_json_error(response)
            continue
        assert response.status_code in {200, 503}, describe(response)
        outcome = CallbackOutcome(response.json()["outcome"])
        event(f"outcome: {outcome.value}")
        if not known:
            # A retryable failure for an unknown id is answered "already_done" (record_attempt
            # finds no row to count); mislabelled but harmless: 200, nothing done.
            assert outcome in (CallbackOutcome.UNKNOWN_REQUEST, CallbackOutcome.ALREADY_DONE)
    if known:
        assert_request_left_consistent(calm_stack, request_id, number, statuses, all(refusals))
    else:
        assert calm_stack.messages_to(number) == []
