from __future__ import annotations

import base64
import json

import pytest

from shared.errors import ProviderError
from shared.generation import (
    classify_provider_failure,
    generation_body,
    read_generated_image,
    safety_identifier,
)
from shared.records import FailureReason
from shared.settings import ImageOptions


def test_generation_body_asks_a_gpt_image_model_for_jpeg() -> None:
    body = generation_body(ImageOptions(), "a crab", "pl_abc")
    assert body["model"] == "gpt-image-2.6-flare"
    assert body["output_format"] == "jpeg"
    assert body["output_compression"] == 80
    assert body["n"] == 1
    assert body["safety_identifier"] == "pl_abc"
    assert "response_format" not in body


def test_safety_identifier_is_stable_salted_and_hides_the_number() -> None:
    one = safety_identifier("salt", "+15551230001")
    assert one == safety_identifier("salt", "+15551230001")
    assert one != safety_identifier("other-salt", "+15551230001")
    assert "5551230001" not in one


def _response(b64: object, usage: object = None) -> bytes:
    payload: dict[str, object] = {"created": 1, "data": [{"b64_json": b64}]}
    if usage is not None:
        payload["usage"] = usage
    return json.dumps(payload).encode()


def test_read_generated_image_decodes_the_picture_and_usage() -> None:
    usage = {
        "input_tokens": 12,
        "output_tokens": 272,
        "output_tokens_details": {"image_tokens": 270},
    }
    image = read_generated_image(_response(base64.b64encode(b"JPEG").decode(), usage))
    assert image.data == b"JPEG"
    assert image.input_tokens == 12
    assert image.output_image_tokens == 270


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b'{"data": []}',
        b'{"data": [{"url": "https://example.com/x.png"}]}',
        _response("not base64!!"),
        _response(""),
        _response(None),
        _response(base64.b64encode(b"JPEG").decode())[:-20],  # truncated by QStash
    ],
)
def test_read_generated_image_rejects_unusable_answers(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        read_generated_image(body)
    assert caught.value.retryable is False


def _error(code: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps(
        {"error": {"message": "m", "type": kind, "param": None, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "reason", "retryable"),
    [
        (
            400,
            _error("moderation_blocked", "image_generation_user_error"),
            FailureReason.REFUSED,
            False,
        ),
        (400, _error("content_policy_violation"), FailureReason.REFUSED, False),
        (400, _error("billing_hard_limit_reached"), FailureReason.PROVIDER_ERROR, False),
        (
            429,
            _error("insufficient_quota", "insufficient_quota"),
            FailureReason.PROVIDER_ERROR,
            False,
        ),
        (429, _error("rate_limit_exceeded", "requests"), FailureReason.PROVIDER_BUSY, True),
        (503, _error("server_is_overloaded", "server_error"), FailureReason.PROVIDER_BUSY, True),
        (500, _error("server_error", "server_error"), FailureReason.PROVIDER_ERROR, True),
        (502, b"<html>bad gateway</html>", FailureReason.PROVIDER_ERROR, True),
        (401, _error("invalid_api_key"), FailureReason.PROVIDER_ERROR, False),
        (400, _error("unknown_parameter"), FailureReason.PROVIDER_ERROR, False),
        (404, _error("model_not_found"), FailureReason.MODEL_UNAVAILABLE, False),
        (None, b"", FailureReason.PROVIDER_ERROR, True),
    ],
)
def test_classify_provider_failure(
    status: int | None, body: bytes, reason: FailureReason, retryable: bool
) -> None:
    failure = classify_provider_failure(status, body)
    assert (failure.reason, failure.retryable) == (reason, retryable)
