"""Regression tests for the bugs the property tests (test_properties_rules and
test_properties_http) found, all fixed since: JSON nested past Python's recursion limit (a 500
from generate, a stuck request in composite); counts written in superscript digits; pictures
too small for the frame, and PNGs whose chunk stream breaks; NUL and lone surrogates from
vendors reaching PostgreSQL (and NUL in a Twilio SID); phone numbers in non-ASCII digits; an
operator key holding a lone surrogate; prompts of only invisible characters called too long;
and a lone surrogate in a log line, which a deployed function's stdout cannot encode (the
deployed_stdout fixture writes as that stdout does, where pytest's capture would write "?").
The properties now generate all of those inputs.

A bug found later should be pinned the same way until fixed: a strict xfail regression test,
with the inputs that reach it kept out of the properties and marked KNOWN BUG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pytest
import requests
from PIL import Image

from devstack.stack import DEMO_FROM
from devstack.stack_client import StackClient, count_rows, queued_row
from shared import logs
from shared.callbacks import parse_callback
from shared.delivery_decisions import CallbackOutcome
from shared.errors import BadRequest, ProviderError
from shared.framing import MIN_EDGE, frame_image
from shared.generation import classify_provider_failure, read_generated_image
from shared.intake import Command, interpret_message
from shared.records import FailureReason
from tests.strategies import (
    FRESH_NUMBER,
    HTTP_TIMEOUT_S,
    IGNORE_RANDOM_IN_THE_BACKGROUND,
    b64,
    composite_url,
    describe,
    fresh_number,
    json_bytes,
    picture_answer,
    post_signed_callback,
    post_signed_form,
    resolve,
)

pytestmark = [pytest.mark.stack, IGNORE_RANDOM_IN_THE_BACKGROUND]

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
    request_id = queued_row(stack, number)
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
