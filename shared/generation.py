"""The image provider's request and response (OpenAI Images API, GPT image models).

GPT image models always answer with base64 (`data[0].b64_json`); `response_format` is a legacy
DALL·E parameter they reject, so it is never sent. All functions here are pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ProviderError
from .records import FailureReason
from .settings import ImageOptions

if TYPE_CHECKING:
    # The SDK's own parameter types make mypy refuse a key or value OpenAI does not take; the
    # functions never import openai at run time (it is a dev dependency).
    from openai.types.image_generate_params import (
        ImageGenerateParamsNonStreaming as GenerationBody,
    )
else:
    GenerationBody = dict


def safety_identifier(salt: str, recipient: str) -> str:
    """A stable, salted hash of the recipient: lets the provider track abuse per person
    without ever seeing a phone number."""
    digest = hmac.new(salt.encode(), recipient.encode(), hashlib.sha256).hexdigest()
    return f"pl_{digest[:40]}"


def generation_body(
    options: ImageOptions, prompt: str, safety_id: str, *, model: str | None = None
) -> GenerationBody:
    """The JSON for `POST /v1/images/generations` (`model` overrides the configured one)."""
    return {
        "model": model or options.model,
        "prompt": prompt,
        "n": 1,
        "size": options.size,
        "quality": options.quality,
        # JPEG keeps the callback far below QStash's 1 MB message limit and the MMS small.
        "output_format": "jpeg",
        "output_compression": options.compression,
        "safety_identifier": safety_id,
    }


def edit_body(
    options: ImageOptions,
    instruction: str,
    safety_id: str,
    image_url: str,
    *,
    model: str | None = None,
) -> dict[str, object]:
    """The JSON for `POST /v1/images/edits`: change the picture at `image_url` as `instruction`
    says. The JSON form takes `images: [{image_url}]` [DOC OpenAPI EditImageBodyJsonParam];
    the SDK's types cover only its multipart form, so this body is checked by the stand-in's
    validation rather than by mypy. `input_fidelity: high` keeps what was not asked to change.
    """
    return {
        "model": model or options.model_for_edits,
        "prompt": instruction,
        "images": [{"image_url": image_url}],
        "n": 1,
        "size": options.size,
        "quality": options.quality,
        "input_fidelity": "high",
        "output_format": "jpeg",
        "output_compression": options.compression,
        "safety_identifier": safety_id,
    }


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    input_tokens: int | None = None
    output_image_tokens: int | None = None
    input_image_tokens: int | None = None  # an edit's input pictures, billed at image rates


def read_generated_image(body: bytes) -> GeneratedImage:
    """Take the picture out of a successful provider response, or raise `ProviderError`."""
    try:
        payload = json.loads(body)
        encoded = payload["data"][0]["b64_json"]
        if not isinstance(encoded, str) or not encoded:
            raise TypeError("b64_json is empty")
        data = base64.b64decode(encoded, validate=True)
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error, RecursionError) as exc:
        raise ProviderError(
            "the provider's answer holds no readable picture",
            retryable=False,
            detail=f"{type(exc).__name__}; {len(body)} bytes",
        ) from exc
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    details = usage.get("output_tokens_details") if isinstance(usage, dict) else None
    image_tokens = details.get("image_tokens") if isinstance(details, dict) else None
    inputs = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    return GeneratedImage(
        data=data,
        input_tokens=_int_or_none(usage.get("input_tokens")),
        output_image_tokens=_int_or_none(
            image_tokens if image_tokens is not None else usage.get("output_tokens")
        ),
        input_image_tokens=_int_or_none(inputs.get("image_tokens"))
        if isinstance(inputs, dict)
        else None,
    )


# Token counts are bookkeeping: one that would not fit the row's integer column is recorded as
# unknown rather than failing a delivery whose picture is fine.
_MAX_TOKENS = 2**31 - 1


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TOKENS:
        return value
    return None


@dataclass(frozen=True)
class ProviderFailure:
    """What a failed provider attempt means for us."""

    reason: FailureReason
    retryable: bool
    detail: str


MODEL_NOT_FOUND = "model_not_found"
_REFUSAL_CODES = {"moderation_blocked", "content_policy_violation"}
_MONEY_CODES = {
    "insufficient_quota",
    "billing_hard_limit_reached",
    "credit_balance_exhausted",
}


def classify_provider_failure(status: int | None, body: bytes) -> ProviderFailure:
    """Decide from the provider's status and error body whether trying again can help.

    `status` is None when the provider never answered (QStash timed out or could not connect).
    """
    if status is None:
        return ProviderFailure(FailureReason.PROVIDER_ERROR, True, "no answer (timeout)")
    code, message = _error_code(body)
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if code in _REFUSAL_CODES:
        return ProviderFailure(FailureReason.REFUSED, False, detail)
    if code == MODEL_NOT_FOUND:
        # A retired or unknown model [DOC]: only another model can help (see delivery.py).
        return ProviderFailure(FailureReason.MODEL_UNAVAILABLE, False, detail)
    if code in _MONEY_CODES or (code and code.endswith("_spend_limit_exceeded")):
        return ProviderFailure(FailureReason.PROVIDER_ERROR, False, detail)
    if status == 429 or status == 503:
        return ProviderFailure(FailureReason.PROVIDER_BUSY, True, detail)
    if status in (408, 409) or status >= 500:
        return ProviderFailure(FailureReason.PROVIDER_ERROR, True, detail)
    # Invalid requests, bad keys, unknown models: the same request will fail the same way.
    return ProviderFailure(FailureReason.PROVIDER_ERROR, False, detail)


def _error_code(body: bytes) -> tuple[str | None, str | None]:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None, None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (
        str(code) if code else None,
        str(message)[:200] if message else None,
    )
