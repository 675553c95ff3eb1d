"""Property-based tests (Hypothesis): generated input thrown at the pure parsers and at both
functions' HTTP layer on the local stack.

Whatever arrives: no 500 and no hang (every call has a timeout); bad input gets a clear 4xx, or
on Twilio's message paths a 200 reply saying what to do; refused input records nothing; a signed
callback never leaves its request claimed and never sends a second message.

These properties found nine bugs, all fixed since and pinned by the regression tests at the
end: JSON nested past Python's recursion limit (a 500 from generate, a stuck request in
composite); counts written in superscript digits; pictures too small for the frame, and PNGs
whose chunk stream breaks; NUL and lone surrogates from vendors reaching PostgreSQL (and NUL in
a Twilio SID); phone numbers in non-ASCII digits; an operator key holding a lone surrogate;
prompts of only invisible characters called too long; and a lone surrogate in a log line,
which a deployed function's stdout cannot encode. The properties now generate all of those
inputs. The HTTP properties log through such a stdout (DeployedStdout), since pytest's capture
would write "?" and hide the last one.

A bug found later should be pinned the same way until fixed: a strict xfail regression test,
with the inputs that reach it kept out of the properties and marked KNOWN BUG.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import sys
import time
import unicodedata
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import jwt
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from twilio.request_validator import RequestValidator

from devstack.qstash import DEV_CURRENT_SIGNING_KEY, make_signature
from devstack.stack import DEMO_FROM
from shared import logs
from shared.callbacks import QStashCallback, parse_callback
from shared.delivery import CallbackOutcome
from shared.errors import BadRequest, EmptyPrompt, HiddenNumber, PromptTooLong, ProviderError
from shared.framing import MIN_EDGE, frame_image
from shared.generation import classify_provider_failure, read_generated_image
from shared.intake import (
    Command,
    check_pair,
    clean_prompt,
    interpret_message,
    parse_address,
    parse_picture_request,
    parse_studio_request,
)
from shared.records import Channel, FailureReason
from shared.services import get_services
from shared.settings import Settings
from shared.twilio_webhooks import twiml_message
from tests.conftest import StackClient
from tests.secret_scan import find_leaks

pytestmark = [
    pytest.mark.stack,
    # functions-framework draws each request's execution id from the global `random`; when
    # QStash calls composite in the background while Hypothesis generates an example,
    # Hypothesis blames the strategy. Nothing here uses `random`.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

# --- how hard to try ---------------------------------------------------------------------------

PURE = settings(max_examples=300, deadline=timedelta(seconds=1))
IMAGES = settings(max_examples=60, deadline=timedelta(seconds=3))
HTTP = settings(
    max_examples=60,
    deadline=None,  # a hang is caught by HTTP_TIMEOUT_S instead
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HTTP_TIMEOUT_S = 20
GENERATE_MAX_BODY = 64 * 1024  # generate/main.py MAX_BODY_BYTES
STORED_ADDRESS = re.compile(r"^(whatsapp:)?\+[1-9][0-9]{6,14}$")  # the requests table's check

# --- strategies: text ----------------------------------------------------------------------------

T = TypeVar("T")


def mostly(
    common: st.SearchStrategy[T], other: st.SearchStrategy[T], share: int = 3
) -> st.SearchStrategy[T]:
    """`common` `share` times in `share + 1`, else `other` (st.one_of does not weight)."""
    return st.sampled_from([True] * share + [False]).flatmap(lambda pick: common if pick else other)


#: Characters that break careless text handling: NUL and other C0/C1 controls, DEL, a
#: no-break space, a combining mark, zero-width and bidi marks (RTL override, isolates), line
#: and paragraph separators, a BOM, and emoji (one with a zero-width joiner).
AWKWARD_CHARACTERS = (
    "\x00\x01\x07\t\n\r\x0b\x0c\x1b\x1f\x7f\x85\xa0\u0301\u200b\u200d\u200e\u200f"
    "\u202e\u2066\u2069\u2028\u2029\ufeff\U0001f980\U0001f469\U0001f3a8"
)
#: Any character that UTF-8 can encode (so forms, URLs and headers can carry it).
any_character = st.one_of(st.characters(codec="utf-8"), st.sampled_from(AWKWARD_CHARACTERS))
#: Characters that leave a prompt nothing to draw besides whitespace, controls and format
#: characters (bidi and zero-width marks, joiners, emoji tags, a BOM): variation selectors, the
#: combining grapheme joiner, a Mongolian selector, Hangul fillers, and noncharacters.
#: Private-use and plain unassigned code points are not among them: intake keeps those (an
#: unassigned one may be an emoji newer than our Unicode database).
DRAWING_NOTHING = "\ufe0f\ufe00\U000e0100\U000e01ef\u034f\u180b\u115f\u3164\uffa0"
DRAWING_NOTHING += "\ufdd0\ufdef\ufffe\uffff\U0010ffff"
#: Characters with nothing to draw: whitespace, controls, format characters and the above.
invisible_character = st.one_of(
    st.sampled_from(
        [ch for ch in AWKWARD_CHARACTERS if ch.isspace() or unicodedata.category(ch)[0] == "C"]
        + list(DRAWING_NOTHING)
    ),
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"], codec="utf-8"),
)

texts = st.text(any_character, max_size=60)
#: Text with nothing to draw in it, though not blank to str.strip().
invisible_texts = st.text(invisible_character, min_size=1, max_size=12)
ten_thousand_character_texts = st.text(any_character, min_size=1, max_size=4).map(
    lambda piece: (piece * 10_000)[:10_000]
)
#: What a person might say or type: short awkward text, only invisible characters, or 10 000
#: characters of awkward text.
person_texts = st.one_of(texts, invisible_texts, ten_thousand_character_texts)
#: Prompts a person might give, within the limit and not blank (but awkward).
plausible_prompts = st.text(any_character, min_size=1, max_size=60).filter(
    lambda text: any(not ch.isspace() and unicodedata.category(ch)[0] != "C" for ch in text)
)

#: Text with at least one lone surrogate, which only JSON can carry ("\ud800" escapes).
lone_surrogates = st.characters(categories=["Cs"])
texts_with_lone_surrogates = st.builds(
    "{}{}{}".format,
    st.text(any_character, max_size=8),
    lone_surrogates,
    st.text(st.one_of(lone_surrogates, any_character), max_size=11),
)

#: Printable ASCII that `requests` will put in a header as it is.
header_texts = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)

# --- strategies: JSON ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63)),
    st.floats(),  # NaN and infinities too: Python's json reads them back
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def nested_document(depth: int, brackets: tuple[str, str], closed: bool) -> bytes:
    opener, closer = brackets
    return (opener * depth + ("1" + closer * depth if closed else "")).encode()


#: Deeper than json.loads can read (it raises RecursionError past about 1000 levels), still
#: under generate's 64 KiB as objects.
MAX_NESTING = 5000

#: Arrays or objects nested up to MAX_NESTING deep, closed or cut off.
nested_json_documents = st.builds(
    nested_document,
    st.integers(1, MAX_NESTING),
    st.sampled_from([("[", "]"), ('{"a":', "}")]),
    st.booleans(),
)

# --- strategies: phone numbers -----------------------------------------------------------------

#: Placeholders the HTTP tests replace with a value no other example used, so that requests
#: let through never share a number (the per-number limit is 5 an hour) or a Twilio SID.
FRESH_NUMBER = "{fresh-number}"
FRESH_SID = "{fresh-sid}"

#: A CallSid or MessageSid as Twilio writes them; generate ignores any other source_ref.
TWILIO_SID = re.compile(r"[A-Za-z]{2}[0-9A-Za-z]{32}")


def not_an_address(value: str) -> bool:
    """Not what intake.parse_address takes (once trimmed): E.164 in ASCII digits, maybe
    after "whatsapp:"."""
    return STORED_ADDRESS.match(value.strip()) is None


#: Phone numbers that are not E.164: how people write them, too short, too long, a leading
#: zero, digits of other scripts, Studio placeholders, SIP and client addresses, random text.
not_e164_numbers = st.one_of(
    st.builds(
        "+1{}{}{}".format,
        st.from_regex(r"[0-9]{0,6}", fullmatch=True),
        st.characters(categories=["Nd"], exclude_characters="0123456789"),
        st.text(st.characters(categories=["Nd"]), min_size=6, max_size=8),
    ),
    st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    st.from_regex(r"\+[0-9]{0,6}", fullmatch=True),
    st.from_regex(r"\+0[0-9]{6,14}", fullmatch=True),
    st.from_regex(r"\+[1-9][0-9]{15,20}", fullmatch=True),
    st.from_regex(r"\+1 ?\(?555\)? ?[0-9]{3}[ .-][0-9]{4}", fullmatch=True),
    st.from_regex(r"whatsapp: ?[0-9+]{0,6}", fullmatch=True),
    st.sampled_from(
        [
            "",
            "+",
            "whatsapp:",
            "{{contact.channel.address}}",
            "client:alice",
            "sip:alice@example.com",
            "tel:+15551234567",
            "+15551234567;ext=1",
            "whatsapp:whatsapp:+15551234567",
        ]
    ),
    texts,
).filter(not_an_address)

valid_numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


def addresses(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A usable address (plain, WhatsApp, padded with whitespace) or something that is not."""
    return st.one_of(
        valid,
        valid.map(lambda number: f"whatsapp:{number}"),
        valid.map(lambda number: f" \t{number}\n"),
        not_e164_numbers,
    )


#: The person who calls or writes (gets the picture), and the number they contacted.
caller_addresses = addresses(st.just(FRESH_NUMBER))
our_addresses = addresses(st.just(DEMO_FROM))


#: Whitespace Twilio would never add but a careless client might; parse_address trims it.
paddings = st.sampled_from(["", "", "", " ", "\t", "\n", " \r\n", "\xa0"])


@st.composite
def number_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """(caller, our number): most often as Twilio sends them (both plain or both WhatsApp,
    maybe padded with whitespace), else one WhatsApp and one plain (which every path
    refuses), else anything."""
    kind = draw(st.sampled_from(["plain"] * 3 + ["whatsapp"] * 2 + ["mixed"] + ["anything"] * 2))
    if kind == "anything":
        return draw(caller_addresses), draw(our_addresses)
    pad = [draw(paddings) for _ in range(4)]
    caller_prefix = ours_prefix = "whatsapp:" if kind == "whatsapp" else ""
    if kind == "mixed":
        caller_prefix, ours_prefix = draw(st.sampled_from([("whatsapp:", ""), ("", "whatsapp:")]))
    return (
        f"{pad[0]}{caller_prefix}{FRESH_NUMBER}{pad[1]}",
        f"{pad[2]}{ours_prefix}{DEMO_FROM}{pad[3]}",
    )


def not_a_sid(text: str) -> bool:
    return TWILIO_SID.fullmatch(text) is None


def sid_as_kept(value: str | None) -> str | None:
    """The source_ref generate records for a CallSid or MessageSid: only a real-looking SID."""
    return value if value is not None and TWILIO_SID.fullmatch(value) else None


#: CallSids and MessageSids: none, a fresh one, or text that is no SID (a NUL, padding, too
#: short, random text). generate ignores those and takes the request without deduplicating
#: it, so they need not be unique: examples repeating one must each be taken.
twilio_sids = st.one_of(
    st.just(""),
    st.just(FRESH_SID),
    st.sampled_from(["CA\x00", "SM", "SM" + "0" * 31, f" SM{'0' * 32}", f"SM{'0' * 32}\n"]),
    texts.filter(not_a_sid),
)

# --- strategies: QStash callbacks and provider answers -----------------------------------------

STATUS_CODES = [0, 1, 100, 199, 200, 201, 204, 299, 300, 400, 401, 403, 404, 408, 409, 429]
STATUS_CODES += [500, 502, 503, 504, 599, 999, -1, -200, -500]

#: `status` as QStash might (never) send it: any int, a huge one, or not a number at all.
callback_statuses = st.one_of(
    st.sampled_from(STATUS_CODES), st.integers(), json_scalars, json_values
)
#: retried / maxRetries / createdAt: counts, negative, huge, digit strings in any script
#: (superscripts, circled digits and other digits int() cannot read too), or not numbers.
callback_counts = st.one_of(
    st.integers(-3, 5),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**300),
    st.from_regex(r"-?[0-9]{1,30}", fullmatch=True),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=6),
    json_values,
)
#: What QStash's ids look like (msg_…, 1725323658779-0): the only sourceMessageId and dlqId
#: parse_callback keeps.
QSTASH_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}", re.ASCII)
#: sourceMessageId and dlqId: QStash-like ids, text (NUL too), lone surrogates, or not text.
callback_ids = st.one_of(
    st.from_regex(r"(msg_)?[A-Za-z0-9_.:-]{1,40}", fullmatch=True),
    texts,
    texts_with_lone_surrogates,
    json_values,
)


@st.composite
def provider_errors(draw: st.DrawFn) -> bytes:
    """An error body like OpenAI's, with random codes, types and messages (NUL and lone
    surrogates too: the text that gets stored is cleaned first)."""
    code_or_type = st.one_of(
        st.sampled_from(
            [
                "moderation_blocked",
                "content_policy_violation",
                "insufficient_quota",
                "billing_hard_limit_reached",
                "org_spend_limit_exceeded",
                "rate_limit_exceeded",
                "server_error",
                "invalid_request_error",
            ]
        ),
        json_values,
        texts_with_lone_surrogates,
    )
    error = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "code": code_or_type,
                "type": code_or_type,
                "message": st.one_of(json_values, texts_with_lone_surrogates),
                "param": json_values,
            },
        )
    )
    return json_bytes({"error": draw(st.one_of(st.just(error), json_values))})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: A successful provider answer's shape, around a random or real picture.
provider_successes = st.builds(
    lambda encoded, usage: json_bytes({"created": 1, "data": [{"b64_json": encoded}], **usage}),
    st.one_of(st.binary(max_size=200).map(b64), json_values),
    st.fixed_dictionaries({}, optional={"usage": json_values}),
)

#: What the provider may answer, as QStash passes it on (base64 in the callback's `body`).
provider_answers = st.one_of(
    st.binary(max_size=600),
    json_values.map(json_bytes),
    nested_json_documents,
    provider_errors(),
    provider_successes,
)


def truncated(encoded: str, keep: float) -> str:
    return encoded[: int(len(encoded) * keep)]


#: The callback's `body`: base64 of a provider answer, cut off (as at QStash's size limit),
#: not base64 at all, or not a string.
callback_bodies = st.one_of(
    provider_answers.map(b64),
    st.builds(truncated, provider_answers.map(b64), st.floats(0, 1)),
    texts,
    json_values,
)

#: Callback-shaped JSON objects whose fields have random types and values.
callback_payloads = st.fixed_dictionaries(
    {},
    optional={
        "status": callback_statuses,
        "body": callback_bodies,
        "retried": callback_counts,
        "maxRetries": callback_counts,
        "createdAt": callback_counts,
        "sourceMessageId": callback_ids,
        "dlqId": callback_ids,
        "header": json_values,
        "url": texts,
        "method": st.sampled_from(["POST", "GET", ""]),
        "topicName": texts,
    },
)

# --- strategies: pictures ------------------------------------------------------------------------

PICTURE_FORMATS = {"JPEG": ["RGB", "L"], "PNG": ["RGB", "RGBA", "L", "P"], "WEBP": ["RGB", "RGBA"]}
LARGEST_SIDE = 128  # of the generated pictures

#: (width, height) of a picture frame_image takes: MIN_EDGE px a side or more.
framable_sizes = st.tuples(st.integers(MIN_EDGE, LARGEST_SIDE), st.integers(MIN_EDGE, LARGEST_SIDE))
#: (width, height) with at least one side under MIN_EDGE px, down to 1 px.
too_small_sizes = st.one_of(
    st.tuples(st.integers(1, MIN_EDGE - 1), st.integers(1, LARGEST_SIDE)),
    st.tuples(st.integers(1, LARGEST_SIDE), st.integers(1, MIN_EDGE - 1)),
)
any_sizes = st.one_of(framable_sizes, too_small_sizes)


@st.composite
def pictures(draw: st.DrawFn, sizes: st.SearchStrategy[tuple[int, int]] = any_sizes) -> bytes:
    """A small real JPEG, PNG or WEBP, of a size drawn from `sizes`."""
    image_format = draw(st.sampled_from(sorted(PICTURE_FORMATS)))
    mode = draw(st.sampled_from(PICTURE_FORMATS[image_format]))
    size = draw(sizes)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(180)))
    image = image.convert(mode) if mode != "P" else image.quantize(draw(st.integers(2, 64)))
    out = io.BytesIO()
    image.save(out, image_format)
    return out.getvalue()


@st.composite
def damaged_pictures(draw: st.DrawFn) -> bytes:
    """A real picture (mostly one big enough to be decoded) cut off, with bytes overwritten
    (often in the header), or both."""
    data = bytearray(draw(mostly(pictures(framable_sizes), pictures(too_small_sizes))))
    damage = draw(st.sampled_from(["truncate", "overwrite", "both", "drop_middle"]))
    if damage in ("overwrite", "both"):
        anywhere = st.integers(0, len(data) - 1)
        in_header = st.integers(0, min(len(data), 96) - 1)
        for position in draw(st.lists(st.one_of(in_header, anywhere), min_size=1, max_size=8)):
            data[position] = draw(st.integers(0, 255))
    if damage in ("truncate", "both"):
        data = data[: draw(st.integers(0, len(data) - 1))]
    if damage == "drop_middle":
        start = draw(st.integers(0, len(data) - 1))
        data = data[:start] + data[start + draw(st.integers(1, 64)) :]
    return bytes(data)


def picture_answer(picture: bytes) -> bytes:
    """The provider's success JSON around `picture`."""
    usage = {"input_tokens": 9, "output_tokens": 272}
    return json_bytes({"created": 1, "data": [{"b64_json": b64(picture)}], "usage": usage})


#: Callbacks carrying a real picture (whole, too small, or damaged), with random other fields.
picture_callbacks = st.builds(
    lambda picture, fields: {**fields, "status": 200, "body": b64(picture_answer(picture))},
    mostly(
        pictures(framable_sizes), st.one_of(pictures(too_small_sizes), damaged_pictures()), share=1
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "retried": callback_counts,
            "maxRetries": callback_counts,
            "sourceMessageId": callback_ids,
        },
    ),
)

#: Anything QStash might sign: callback-shaped or not, JSON or not.
signed_bodies = mostly(
    mostly(picture_callbacks, callback_payloads, share=1).map(json_bytes),
    st.one_of(json_values.map(json_bytes), st.binary(max_size=400), nested_json_documents),
)

# --- checks shared by several properties -------------------------------------------------------


#: What a prompt never keeps: controls, lone surrogates, bidi embeddings, overrides and
#: isolates, and noncharacters (U+FDD0..FDEF, and the last two of every plane).
NEVER_KEPT = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef]"
    "|[\ufffe\uffff\U0001fffe\U0001ffff\U0010fffe\U0010ffff]"
)
#: Letters that draw nothing (Hangul fillers).
BLANK_LETTERS = "\u115f\u1160\u3164\uffa0"


def draws_something(ch: str) -> bool:
    """A character that certainly shows: a letter, digit, punctuation mark or symbol (not a
    Hangul filler), or a private-use one."""
    category = unicodedata.category(ch)
    return (category[0] in "LNPS" and ch not in BLANK_LETTERS) or category == "Co"


def assert_clean_text(text: str, max_chars: int) -> None:
    """What intake promises for a prompt: 1..max_chars characters, trimmed, single spaces,
    something visible, nothing unsafe to store, show or put in XML (joiners, variation selectors
    and characters it does not know stay)."""
    assert 1 <= len(text) <= max_chars
    assert text == " ".join(text.split())
    assert any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf") for ch in text)
    assert not NEVER_KEPT.search(text), repr(text)
    ElementTree.fromstring(twiml_message(text))  # noqa: S314 - XML we made, checked for validity


def assert_well_formed(callback: QStashCallback) -> None:
    assert callback.status is None or (type(callback.status) is int and callback.status != 0)
    assert isinstance(callback.body, bytes)
    assert type(callback.retried) is int and callback.retried >= 0
    assert type(callback.max_retries) is int and callback.max_retries >= 0
    assert callback.created_at_ms is None or (
        type(callback.created_at_ms) is int and callback.created_at_ms > 0
    )
    for text in (callback.source_message_id, callback.dlq_id):
        assert text is None or (isinstance(text, str) and QSTASH_ID.fullmatch(text)), text
    assert isinstance(callback.header, dict)
    assert isinstance(callback.succeeded, bool) and isinstance(callback.is_final, bool)


def count_as_read(value: object) -> int:
    """A callback count: an int from 0 to 2**53 or up to 16 ASCII digits of one; anything else,
    a bool, a negative or absurd number, or digits int() cannot read ('²', '①') or of another
    script ('٣'), counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str) and re.fullmatch("[0-9]{1,16}", value):
        value = int(value)
    if isinstance(value, int) and 0 <= value <= 2**53:
        return value
    return 0


def id_as_read(value: object) -> str | None:
    """A callback id: kept if it looks like QStash's ids, else absent (so no NUL, lone
    surrogate or other stray text ever reaches the database)."""
    return value if isinstance(value, str) and QSTASH_ID.fullmatch(value) else None


# --- the pure functions --------------------------------------------------------------------------


@PURE
@given(
    raw=st.one_of(
        st.binary(max_size=2000),
        json_values.map(json_bytes),
        texts_with_lone_surrogates.map(lambda text: json_bytes({"sourceMessageId": text})),
        nested_json_documents,
    )
)
def test_parse_callback_reads_any_bytes_or_refuses_them_with_bad_request(raw: bytes) -> None:
    try:
        callback = parse_callback(raw)
    except BadRequest as exc:
        assert exc.message
        return
    assert_well_formed(callback)


@PURE
@given(payload=callback_payloads)
def test_parse_callback_refuses_an_object_only_for_a_status_that_is_not_a_number(
    payload: dict[str, Any],
) -> None:
    status = payload.get("status")
    status_is_a_number = status is None or (type(status) is int)
    try:
        callback = parse_callback(json_bytes(payload))
    except BadRequest as exc:
        assert not status_is_a_number, exc.message
        return
    assert status_is_a_number
    assert callback.status == (status or None)
    assert callback.retried == count_as_read(payload.get("retried"))
    assert callback.max_retries == count_as_read(payload.get("maxRetries"))
    assert callback.created_at_ms == (count_as_read(payload.get("createdAt")) or None)
    assert callback.source_message_id == id_as_read(payload.get("sourceMessageId"))
    assert callback.dlq_id == id_as_read(payload.get("dlqId"))
    assert_well_formed(callback)


@PURE
@given(body=provider_answers)
def test_read_generated_image_returns_a_picture_or_raises_provider_error(body: bytes) -> None:
    try:
        image = read_generated_image(body)
    except ProviderError as exc:
        assert exc.retryable is False
        return
    assert isinstance(image.data, bytes)
    for tokens in (image.input_tokens, image.output_image_tokens):
        assert tokens is None or type(tokens) is int


@PURE
@given(
    status=st.one_of(st.none(), st.sampled_from(STATUS_CODES), st.integers()),
    body=provider_answers,
)
def test_classify_provider_failure_always_decides(status: int | None, body: bytes) -> None:
    failure = classify_provider_failure(status, body)
    assert isinstance(failure.reason, FailureReason)
    assert isinstance(failure.retryable, bool)
    assert isinstance(failure.detail, str) and failure.detail
    if status is None:
        assert failure.retryable


KEYWORDS = ["DRAW", "", "PIC", "ZEICHNE", "描く"]
STOP_START_HELP = ["STOP", "stop", " Stop\n", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
STOP_START_HELP += ["OPTOUT", "revoke", "Stop.", "STOP!", "START", "yes", "UNSTOP", "HELP", "info"]
# No keywords, though Python upper-cases them to STOP and START: a long s (U+017F) and the
# "st" ligature (U+FB06).
STOP_START_HELP += ["\u017ftop", "\ufb06op", "\u017ftart"]


@st.composite
def text_messages(draw: st.DrawFn) -> tuple[str, str]:
    """(keyword, message): the keyword the number is set up with, and a text someone sent."""
    keyword = draw(
        st.one_of(
            st.sampled_from(KEYWORDS),
            st.text(st.characters(categories=["Lu", "Ll", "Nd"]), max_size=6).map(str.upper),
        )
    )
    spelled = st.sampled_from([keyword, keyword.lower(), keyword.title()])
    separator = st.sampled_from(["", " ", "  ", ":", ", ", "-", ".", "\n", "\t", "\xa0", "\u200f"])
    message = draw(
        st.one_of(
            person_texts,
            texts_with_lone_surrogates,
            st.builds(lambda *parts: "".join(parts), spelled, separator, person_texts),
            st.sampled_from(STOP_START_HELP),
        )
    )
    return keyword, message


@PURE
@given(
    keyword_and_message=text_messages(),
    max_chars=st.integers(1, 4000),
    opt_out_type=st.one_of(st.none(), st.sampled_from(["STOP", "START", "HELP"]), texts),
)
def test_interpret_message_always_answers_and_any_prompt_is_clean(
    keyword_and_message: tuple[str, str], max_chars: int, opt_out_type: str | None
) -> None:
    keyword, message = keyword_and_message
    command = interpret_message(message, keyword, max_chars, opt_out_type)
    assert isinstance(command.command, Command)
    event(f"command: {command.command.value}")
    if command.command is Command.PROMPT:
        assert command.prompt is not None
        assert_clean_text(command.prompt, max_chars)
    else:
        assert command.prompt is None
    if command.command is Command.TOO_LONG:
        assert command.length > max_chars


@PURE
@given(
    keyword=st.sampled_from(KEYWORDS),
    separator=st.sampled_from(["", " ", ": ", "\n"]),
    invisible=invisible_texts,
    max_chars=st.integers(1, 4000),
)
def test_a_prompt_of_only_invisible_characters_is_empty_everywhere(
    keyword: str, separator: str, invisible: str, max_chars: int
) -> None:
    """Controls, format characters and spaces leave nothing to draw, however many there are:
    never "too long", never a picture."""
    with pytest.raises(EmptyPrompt):
        clean_prompt(invisible, max_chars)
    text = f"{keyword} {separator}{invisible}" if keyword else invisible
    assert interpret_message(text, keyword, max_chars).command is Command.EMPTY_PROMPT
    form = {"to": "+15557654321", "from": DEMO_FROM, "prompt": invisible}
    with pytest.raises(EmptyPrompt):
        parse_studio_request(form, max_chars)


#: Operator JSON for the pure parser: valid numbers are ordinary ones, not placeholders.
prompt_values = st.one_of(person_texts, texts_with_lone_surrogates, json_values)
operator_payloads_for_the_parser = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "to": st.one_of(addresses(valid_numbers), json_values),
            "from": st.one_of(addresses(valid_numbers), json_values),
            "prompt": prompt_values,
            "operator_key": json_values,
        },
    ),
    json_values,
)


@PURE
@given(
    payload=operator_payloads_for_the_parser,
    max_chars=st.integers(1, 4000),
    default_sender=st.one_of(st.none(), st.just(DEMO_FROM), valid_numbers),
)
def test_parse_picture_request_returns_a_clean_request_or_raises_bad_request(
    payload: object, max_chars: int, default_sender: str | None
) -> None:
    try:
        request = parse_picture_request(payload, max_chars, default_sender)
    except BadRequest as exc:
        assert exc.message
        return
    assert isinstance(payload, dict)
    assert request.recipient == payload["to"].strip()
    for address in (request.recipient, request.sender):
        assert STORED_ADDRESS.match(address), address
    assert request.recipient.startswith("whatsapp:") == request.sender.startswith("whatsapp:")
    assert_clean_text(request.prompt, max_chars)


@PURE
@given(value=prompt_values, max_chars=st.integers(1, 12_000))
def test_clean_prompt_never_returns_unsafe_characters(value: object, max_chars: int) -> None:
    try:
        text = clean_prompt(value, max_chars)
    except EmptyPrompt as exc:
        assert isinstance(value, str) and "prompt" in exc.message
        assert not [ch for ch in value if draws_something(ch)], repr(value)
        return
    except PromptTooLong as exc:
        assert isinstance(value, str) and "prompt" in exc.message
        assert max_chars < exc.length <= len(value)
        return
    except BadRequest as exc:
        assert not isinstance(value, str) and "prompt" in exc.message
        return
    assert_clean_text(text, max_chars)


#: How a number may be written where it gets logged: its digits, split into groups.
number_gaps = st.sampled_from([" ", "-", ".", " (", ") ", "/", "\xa0", "%20"])


@st.composite
def written_numbers(draw: st.DrawFn) -> str:
    """A phone number as some log line may hold it: E.164, URL-encoded, behind a URI scheme,
    with letters after it, or split into groups by spaces, dashes, brackets..."""
    digits = draw(valid_numbers)[1:]
    form = draw(st.sampled_from(["+{}", "%2B{}", "%252B{}", "whatsapp:+{}", "tel:{}", "+{}abc"]))
    if draw(st.booleans()):
        cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=4)))
        groups = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
        digits = "".join(group + draw(number_gaps) for group in groups[:-1]) + groups[-1]
    return form.format(digits)


@PURE
@given(number=written_numbers(), before=texts, after=texts)
def test_mask_phone_leaves_no_full_number_in_a_log_line(
    number: str, before: str, after: str
) -> None:
    line = json.dumps({"message": logs.mask_phone(f"{before} {number} {after}")})
    assert find_leaks([line], {}) == [], line


def assert_frames_or_refuses(data: bytes) -> None:
    try:
        framed = frame_image(data, brand="x")
    except ProviderError as exc:
        event("refused")
        assert exc.retryable is False
        return
    event("framed")
    assert min(framed.width, framed.height) >= MIN_EDGE
    assert framed.jpeg.startswith(b"\xff\xd8\xff")
    with Image.open(io.BytesIO(framed.jpeg)) as result:
        assert result.format == "JPEG"
        assert result.size == (framed.width, framed.height)


@IMAGES
@given(data=st.binary(max_size=4000))
def test_frame_image_of_arbitrary_bytes_frames_or_raises_provider_error(data: bytes) -> None:
    assert_frames_or_refuses(data)


@IMAGES
@given(data=damaged_pictures())
def test_frame_image_of_a_damaged_picture_frames_or_raises_provider_error(data: bytes) -> None:
    assert_frames_or_refuses(data)


@IMAGES
@given(picture=pictures(framable_sizes))
def test_frame_image_frames_every_intact_picture_of_64_px_or_more_at_its_own_size(
    picture: bytes,
) -> None:
    framed = frame_image(picture, brand="x")
    with Image.open(io.BytesIO(picture)) as original:
        assert (framed.width, framed.height) == original.size


@IMAGES
@given(picture=pictures(too_small_sizes))
def test_frame_image_refuses_every_picture_with_a_side_under_64_px(picture: bytes) -> None:
    with pytest.raises(ProviderError) as refused:
        frame_image(picture, brand="x")
    assert refused.value.retryable is False


# --- the local stack -----------------------------------------------------------------------------

_serial = itertools.count(1)
_PLACEHOLDER = re.compile("|".join(map(re.escape, (FRESH_NUMBER, FRESH_SID))))


def fresh_number() -> str:
    """A number no other example or test uses (+15554… is this module's own range)."""
    return f"+15554{next(_serial):06d}"


def resolve(value: str) -> str:
    """Replace each placeholder in `value` with a value no other example used."""

    def fill(match: re.Match[str]) -> str:
        if match[0] == FRESH_NUMBER:
            return fresh_number()
        return f"SM{uuid.uuid4().hex}"

    return _PLACEHOLDER.sub(fill, value)


def resolve_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: resolve(v) if isinstance(v, str) else v for k, v in fields.items()}


class DeployedStdout:
    """stdout as a deployed function has it: text UTF-8 cannot encode (a lone surrogate)
    raises UnicodeEncodeError. pytest's capture writes "?" for it instead, which would hide
    from these tests a log line that breaks a request. What can be encoded goes on to
    whatever sys.stdout is now (pytest's capture)."""

    def write(self, text: str) -> int:
        text.encode("utf-8")
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def deployed_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our log lines (the functions run in this process) go through DeployedStdout. pytest
    puts its capture back in sys.stdout before each test phase, so `logs` gets its own."""
    monkeypatch.setattr(logs, "sys", SimpleNamespace(stdout=DeployedStdout()))


@pytest.fixture(scope="module")
def calm_stack(local_stack: StackClient) -> Iterator[StackClient]:
    """The shared stack with no faults injected, left idle when this module is done."""
    local_stack.clear_faults()
    yield local_stack
    local_stack.stack.wait_idle(30)
    local_stack.clear_faults()


def live_settings() -> Settings:
    """The settings the in-process functions run with (max prompt length, keyword, …)."""
    return get_services().settings


def count_rows(stack: StackClient) -> int:
    return int(stack.sql("select count(*) as n from public.requests")[0]["n"])


def describe(response: requests.Response) -> str:
    return (
        f"HTTP {response.status_code} {response.headers.get('Content-Type')}: {response.text[:300]}"
    )


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


def post_signed_form(stack: StackClient, params: Mapping[str, str]) -> requests.Response:
    """POST a form to generate signed the way Twilio signs it."""
    signer = RequestValidator(stack.env["TWILIO_AUTH_TOKEN"])
    return requests.post(
        stack.env["GENERATE_URL"],
        data=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "X-Twilio-Signature": signer.compute_signature(stack.env["GENERATE_URL"], params),
        },
        timeout=HTTP_TIMEOUT_S,
    )


def insert_queued_request(stack: StackClient, recipient: str) -> str:
    """A request as generate records it, without publishing (these tests play QStash)."""
    rows = stack.sql(
        "insert into public.requests (recipient, sender, prompt, model, size, quality)"
        " values (%s, %s, 'a lighthouse at dusk', 'gpt-image-2.6-flare', '1024x1024', 'low')"
        " returning id",
        recipient,
        DEMO_FROM,
    )
    return str(rows[0]["id"])


def composite_url(stack: StackClient, request_id: str | None) -> str:
    base = stack.env["COMPOSITE_URL"]
    return base if request_id is None else f"{base}?request={quote(request_id, safe='')}"


def post_signed_callback(
    url: str, raw: bytes, owner: str | None = None, signature: str | None = None
) -> requests.Response:
    """POST `raw` to composite as QStash does, signed for exactly `url` unless told otherwise."""
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": signature or make_signature(DEV_CURRENT_SIGNING_KEY, url, raw),
    }
    if owner is not None:
        headers["Upstash-Message-Id"] = owner
    return requests.post(url, data=raw, headers=headers, timeout=HTTP_TIMEOUT_S)


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
        assert f"in {max_chars} or fewer" in message, message


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
    request_id = insert_queued_request(calm_stack, number)
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
        request_id = insert_queued_request(calm_stack, number)
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


# --- regression tests for the bugs these properties found (all fixed) ----------------------------

#: JSON nested far deeper than Python's recursion limit, still under generate's 64 KiB.
DEEP_JSON = b"[" * 30_000 + b"]" * 30_000


def tiny_picture() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def png_with_a_broken_chunk_stream() -> bytes:
    """A real PNG whose IDAT chunk claims 16 bytes, so the decoder reads the next "chunk"
    header from the middle of the compressed picture."""
    out = io.BytesIO()
    gradient = Image.linear_gradient("L").resize((64, 48))
    Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(180))).save(out, "PNG")
    data = out.getvalue()
    at = data.index(b"IDAT") - 4
    return data[:at] + (16).to_bytes(4, "big") + data[at + 4 :]


def queued_request_after(
    stack: StackClient, callback: Mapping[str, Any]
) -> tuple[requests.Response, dict[str, Any], list[dict[str, Any]]]:
    """Post `callback`, signed, for a fresh queued request: (the answer, the request's row
    once everything settled, the messages its person got)."""
    number = fresh_number()
    request_id = insert_queued_request(stack, number)
    raw = json_bytes(callback)
    response = post_signed_callback(composite_url(stack, request_id), raw, "msg_regression")
    stack.stack.wait_idle(10)
    return response, stack.row(request_id), stack.messages_to(number)


@pytest.mark.parametrize("count", ["\u00b2", "\u2460", "\u0663", "1\u00b2", "\uff13"])
def test_parse_callback_counts_digits_other_than_ascii_as_zero(count: str) -> None:
    """Superscript and circled digits pass str.isdigit() but int() cannot read them;
    Arabic-Indic and full-width digits it can, but QStash writes ASCII. All count as 0 (and
    so, with maxRetries 2, as not final)."""
    callback = parse_callback(json_bytes({"status": 500, "retried": count, "maxRetries": 2}))
    assert (callback.retried, callback.max_retries, callback.is_final) == (0, 2, False)


def test_composite_reads_a_count_in_superscript_digits_as_zero(calm_stack: StackClient) -> None:
    callback = {"status": 500, "retried": "\u00b2", "maxRetries": 2}
    response, row, messages = queued_request_after(calm_stack, callback)
    assert response.status_code == 200, describe(response)
    assert response.json()["outcome"] == CallbackOutcome.ATTEMPT_RECORDED.value
    assert (row["status"], row["attempts"]) == ("queued", 1), row
    assert messages == []


def test_deeply_nested_json_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(BadRequest):
        parse_callback(DEEP_JSON)
    with pytest.raises(ProviderError) as unreadable:
        read_generated_image(DEEP_JSON)
    assert unreadable.value.retryable is False
    for status, retryable in ((500, True), (400, False)):
        failure = classify_provider_failure(status, DEEP_JSON)
        assert (failure.reason, failure.retryable) == (FailureReason.PROVIDER_ERROR, retryable)
        assert failure.detail == f"HTTP {status}"


def test_generate_refuses_deeply_nested_json_with_a_400(calm_stack: StackClient) -> None:
    before = count_rows(calm_stack)
    response = requests.post(
        calm_stack.env["GENERATE_URL"],
        data=DEEP_JSON,
        headers={"Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 400, describe(response)
    assert response.json() == {"error": "the body is not valid JSON"}
    assert count_rows(calm_stack) == before


@pytest.mark.parametrize(
    ("provider_status", "reason"), [(200, "bad_response"), (400, "provider_error")]
)
def test_composite_fails_a_deeply_nested_provider_answer_and_tells_the_person(
    calm_stack: StackClient, provider_status: int, reason: str
) -> None:
    callback = {"status": provider_status, "body": b64(DEEP_JSON), "maxRetries": 2}
    response, row, messages = queued_request_after(calm_stack, callback)
    assert response.status_code == 200, describe(response)
    assert (row["status"], row["failure_reason"], row["notified"]) == ("failed", reason, True)
    assert len(messages) == 1 and not messages[0].get("media"), messages


@pytest.mark.parametrize("size", [(8, 8), (1, 1), (63, 64), (64, 63), (2000, 10)])
def test_frame_image_refuses_a_picture_smaller_than_its_frame(size: tuple[int, int]) -> None:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    with pytest.raises(ProviderError) as refused:
        frame_image(out.getvalue(), brand="x")
    assert refused.value.retryable is False
    assert refused.value.detail and "too small" in refused.value.detail


def test_frame_image_frames_a_picture_of_exactly_64_px() -> None:
    out = io.BytesIO()
    Image.new("RGB", (MIN_EDGE, MIN_EDGE), (200, 30, 30)).save(out, "PNG")
    framed = frame_image(out.getvalue(), brand="x")
    assert (framed.width, framed.height) == (MIN_EDGE, MIN_EDGE)


def test_composite_fails_a_tiny_picture_and_tells_the_person(calm_stack: StackClient) -> None:
    callback = {"status": 200, "body": b64(picture_answer(tiny_picture()))}
    response, row, messages = queued_request_after(calm_stack, callback)
    assert response.status_code == 200, describe(response)
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "bad_response",
        True,
    )
    assert len(messages) == 1 and not messages[0].get("media"), messages


def test_frame_image_refuses_a_png_with_a_broken_chunk_stream() -> None:
    with pytest.raises(ProviderError) as refused:
        frame_image(png_with_a_broken_chunk_stream(), brand="x")
    assert refused.value.retryable is False


@pytest.mark.parametrize(
    ("error_message", "stored"),
    [
        pytest.param("bad\x00request", "badrequest", id="nul"),
        pytest.param("bad\ud800request", "bad?request", id="lone-surrogate"),
    ],
)
def test_a_final_provider_error_postgres_cannot_store_is_cleaned_and_the_person_told(
    calm_stack: StackClient, error_message: str, stored: str
) -> None:
    error = {"error": {"code": "invalid_request_error", "message": error_message}}
    callback = {"status": 400, "body": b64(json_bytes(error)), "maxRetries": 2}
    response, row, messages = queued_request_after(calm_stack, callback)
    assert response.status_code == 200, describe(response)
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "provider_error",
        True,
    )
    assert row["failure_detail"] == f"HTTP 400 invalid_request_error: {stored}"
    assert len(messages) == 1, messages


@pytest.mark.parametrize("source_message_id", ["msg\x00source", "msg\ud800source", "msg source"])
def test_a_source_message_id_that_is_no_qstash_id_is_dropped(
    calm_stack: StackClient, source_message_id: str
) -> None:
    error = {"error": {"code": "server_error", "message": "busy"}}
    callback = {
        "status": 500,
        "body": b64(json_bytes(error)),
        "maxRetries": 2,
        "sourceMessageId": source_message_id,
    }
    response, row, messages = queued_request_after(calm_stack, callback)
    assert response.status_code == 200, describe(response)
    assert (row["status"], row["attempts"], row["qstash_message_id"]) == ("queued", 1, None)
    assert row["last_error"] == "HTTP 500 server_error: busy"
    assert messages == []


@pytest.mark.parametrize(
    "digits", [range(0x0660, 0x066A), range(0xFF10, 0xFF1A), range(0x0966, 0x0970)]
)
def test_generate_refuses_numbers_written_with_non_ascii_digits(
    calm_stack: StackClient, digits: range
) -> None:
    """Arabic-Indic, full-width and Devanagari digits: E.164 is ASCII (and so is the
    database's check)."""
    number = "+1" + "".join(chr(digits[int(d)]) for d in fresh_number()[2:])
    before = count_rows(calm_stack)
    response = requests.post(
        calm_stack.env["GENERATE_URL"],
        json={"to": number, "prompt": "a fox in the snow"},
        headers={"X-Operator-Key": calm_stack.env["OPERATOR_KEY"]},
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 400, describe(response)
    assert "E.164" in response.json()["error"]
    assert count_rows(calm_stack) == before


@pytest.mark.parametrize("key", ["\\ud800", "\\udfff", "devstack\\ud83d"])
def test_generate_answers_an_operator_key_with_a_lone_surrogate_with_401(
    calm_stack: StackClient, key: str
) -> None:
    raw = b'{"to": "%s", "prompt": "a fox", "operator_key": "%s"}' % (
        fresh_number().encode(),
        key.encode(),
    )
    before = count_rows(calm_stack)
    response = requests.post(
        calm_stack.env["GENERATE_URL"],
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 401, describe(response)
    assert count_rows(calm_stack) == before


@pytest.mark.parametrize("source_ref", ["CA\x00", f"CA{'0' * 32}\x00", f" CA{'0' * 32}", "CA"])
def test_a_studio_call_whose_call_sid_is_no_sid_is_taken_without_it(
    calm_stack: StackClient, source_ref: str
) -> None:
    form = {
        "prompt": "a fox in the snow",
        "to": fresh_number(),
        "from": DEMO_FROM,
        "channel": "voice",
        "source_ref": source_ref,
        "stir_verstat": "TN-Validation-Passed-A",
    }
    response = post_signed_form(calm_stack, form)
    assert response.status_code == 200, describe(response)
    answer = response.json()
    assert answer["accepted"] is True, answer
    assert calm_stack.row(answer["request_id"])["source_ref"] is None


@pytest.mark.parametrize("invisible", ["\x1b", "\u200f", "\ufeff", "\u200b\u200e", "\x00" * 2000])
def test_a_prompt_of_only_invisible_characters_is_empty_not_too_long(invisible: str) -> None:
    command = interpret_message(f"DRAW {invisible}", "DRAW", 1000)
    assert command.command is Command.EMPTY_PROMPT, command


def test_a_studio_call_of_only_invisible_characters_is_asked_what_to_draw(
    calm_stack: StackClient,
) -> None:
    form = {"prompt": "\u200f", "to": fresh_number(), "from": DEMO_FROM, "channel": "voice"}
    answer = post_signed_form(calm_stack, form).json()
    assert answer["accepted"] is False
    assert "Tell us what to draw" in answer["message"], answer


@pytest.mark.parametrize(
    ("sender", "ours"),
    [(f"whatsapp:{FRESH_NUMBER}", DEMO_FROM), (FRESH_NUMBER, f"whatsapp:{DEMO_FROM}")],
)
def test_a_text_between_a_whatsapp_address_and_a_plain_number_is_refused(
    calm_stack: StackClient, sender: str, ours: str
) -> None:
    """Twilio cannot bridge the two; a mixed pair is a broken setup, on every path."""
    sender = resolve(sender)
    before = count_rows(calm_stack)
    webhook = post_signed_form(calm_stack, {"From": sender, "To": ours, "Body": "DRAW a fox"})
    studio = post_signed_form(calm_stack, {"to": sender, "from": ours, "body": "DRAW a fox"})
    for response in (webhook, studio):
        assert response.status_code == 400, describe(response)
        assert "both be WhatsApp addresses or both be numbers" in response.json()["error"]
    assert count_rows(calm_stack) == before


# --- a lone surrogate in a log line ------------------------------------------------------------


@pytest.mark.usefixtures("deployed_stdout")
def test_a_log_line_holding_a_lone_surrogate_is_written() -> None:
    logs.warning("request failed", detail="HTTP 400 invalid_request_error: bad\ud800request")


@pytest.mark.usefixtures("deployed_stdout")
@pytest.mark.parametrize(
    ("provider_status", "status", "attempts"),
    [
        pytest.param(400, "failed", 0, id="final-error-after-the-person-was-told"),
        pytest.param(500, "queued", 1, id="retryable-error-after-the-attempt-was-counted"),
    ],
)
def test_composite_answers_a_provider_error_holding_a_lone_surrogate_without_a_500(
    calm_stack: StackClient, provider_status: int, status: str, attempts: int
) -> None:
    error = {"error": {"code": "invalid_request_error", "message": "bad\ud800request"}}
    callback = {"status": provider_status, "body": b64(json_bytes(error)), "maxRetries": 2}
    response, row, messages = queued_request_after(calm_stack, callback)
    assert (row["status"], row["attempts"]) == (status, attempts), row
    assert len(messages) == (1 if status == "failed" else 0), messages
    assert response.status_code == 200, describe(response)
