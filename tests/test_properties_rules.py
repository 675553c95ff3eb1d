"""Property-based tests (Hypothesis) of shared/'s pure functions, no I/O: generated input
thrown at the parsers (QStash callbacks, provider answers, texts, Studio forms, operator JSON),
the prompt cleaner, the phone-number mask and the framer.

Whatever arrives, each one answers or refuses with its own error, never anything else: a
BadRequest with a message, a ProviderError that is not retried, an EmptyPrompt or
PromptTooLong; and what it returns is clean (a prompt with nothing unsafe to store, show or put
in XML; a callback's counts and ids as QStash writes them; a picture at least MIN_EDGE a side).
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import xml.etree.ElementTree as ElementTree
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from devstack.stack import DEMO_FROM
from shared import logs
from shared.callbacks import QStashCallback, parse_callback
from shared.errors import BadRequest, EmptyPrompt, PromptTooLong, ProviderError
from shared.framing import MIN_EDGE, frame_image
from shared.generation import classify_provider_failure, read_generated_image
from shared.intake import (
    Command,
    clean_prompt,
    interpret_message,
    parse_picture_request,
    parse_studio_request,
)
from shared.records import FailureReason
from shared.twilio_webhooks import twiml_message
from tests.secret_scan import find_leaks
from tests.strategies import (
    IGNORE_RANDOM_IN_THE_BACKGROUND,
    QSTASH_ID,
    STATUS_CODES,
    STOP_START_HELP,
    STORED_ADDRESS,
    addresses,
    callback_payloads,
    damaged_pictures,
    framable_sizes,
    invisible_texts,
    json_bytes,
    json_values,
    nested_json_documents,
    person_texts,
    pictures,
    provider_answers,
    texts,
    texts_with_lone_surrogates,
    too_small_sizes,
    valid_numbers,
)

pytestmark = IGNORE_RANDOM_IN_THE_BACKGROUND

# --- how hard to try ---------------------------------------------------------------------------

PURE = settings(max_examples=300, deadline=timedelta(seconds=1))
IMAGES = settings(max_examples=60, deadline=timedelta(seconds=3))

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
