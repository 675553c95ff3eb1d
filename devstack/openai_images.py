"""Stand-in for OpenAI's Images API (`POST /v1/images/generations`), `POST /v1/moderations`
and the models endpoints (`GET /v1/models`, `GET /v1/models/{id}`).

It speaks the wire protocol of the GPT image models closely enough that the official `openai`
SDK works against it unchanged (`OpenAI(api_key=DEV_API_KEY, base_url=url + "/v1")`):
bearer auth, the request fields and their validation errors, the `ImagesResponse` JSON with
base64 images and token usage, OpenAI's error envelope and its rate-limit headers. Models come
from :data:`MODEL_CATALOGUE` and shut down on their `shutdown_date` (see `OpenAIConfig.today`).

Pictures are drawn locally by :mod:`devstack.picture_drawing`: a deterministic landscape
seeded by the prompt, with the prompt printed on it.

Dev-only endpoints under `/__dev/` (no auth) inject faults (rate limits, outages, safety
blocks, slow or malformed answers), add models or move their shutdown dates (`/__dev/models`)
and expose a log of the generation requests received.
This module is named `openai_images` so it never shadows the `openai` package.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import flask

from .picture_drawing import draw_scene, encode_picture

DEV_API_KEY = "sk-devstack-local-only-0000000000000000"

# --- models ------------------------------------------------------------------------------------
#
# One catalogue for GET /v1/models, GET /v1/models/{id} and the `model` checks of both
# endpoints. A model is served while today < shutdown_date: [UNCONFIRMED] we read the
# shutdown date as the first day (UTC) the model no longer answers. [DOC deprecations page]
# image models get at least 3 months' notice and [DOC] GET /v1/models shows the announced
# date in `shutdown_date` (null if none), so a client that watches it has time to move.


@dataclass(frozen=True)
class CatalogueModel:
    """One model: the fields of OpenAI's Model object plus what the stand-in needs to know."""

    id: str
    created: int  # unix seconds; [UNCONFIRMED] plausible times near each release
    shutdown_date: datetime.date | None = None  # None: no shutdown announced
    owned_by: str = "system"
    kind: str = "image"  # "image" or "moderation": which endpoint accepts the model
    # Arbitrary WIDTHxHEIGHT sizes; without them only CLASSIC_SIZES (and "auto").
    flexible_sizes: bool = False
    extra_qualities: bool = False  # also takes EXTRA_QUALITIES ("xhigh", "max")
    replacement: str = "a GPT image model"  # named in the 404 once the model is shut down

    def served_on(self, today: datetime.date) -> bool:
        return self.shutdown_date is None or today < self.shutdown_date

    def model_object(self) -> dict[str, Any]:
        """The Model object of GET /v1/models [DOC; SDK openai/types/model.py]."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            "shutdown_date": self.shutdown_date.isoformat() if self.shutdown_date else None,
        }


_SHUTDOWN_2026_05_12 = datetime.date(2026, 5, 12)
_SHUTDOWN_2026_10_23 = datetime.date(2026, 10, 23)
_SHUTDOWN_2026_12_01 = datetime.date(2026, 12, 1)
_USE_2_5 = "gpt-image-2.5-sunburst or gpt-image-2.5-flare"
_USE_2_6 = "gpt-image-2.6-sunburst or gpt-image-2.6-flare"


def _image_2x(model_id: str, created: int, *, extra: bool) -> CatalogueModel:
    """A model of the gpt-image-2 family: flexible sizes, maybe the extra quality tiers."""
    return CatalogueModel(model_id, created, flexible_sizes=True, extra_qualities=extra)


def _moderation(model_id: str, created: int) -> CatalogueModel:
    return CatalogueModel(model_id, created, kind="moderation")


_CATALOGUE_ROWS: tuple[CatalogueModel, ...] = (
    # [DOC deprecations page; SDK ImageModel docstring] DALL-E 2 and 3 retired on 2026-05-12.
    CatalogueModel("dall-e-3", 1698785189, _SHUTDOWN_2026_05_12),
    CatalogueModel("dall-e-2", 1698798177, _SHUTDOWN_2026_05_12),
    # [DOC deprecations page; SDK ImageModel docstring] shut down 2026-10-23, use the 2.5 pair.
    CatalogueModel("gpt-image-1", 1745517030, _SHUTDOWN_2026_10_23, replacement=_USE_2_5),
    # [DOC deprecations page] shut down 2026-12-01, recommended replacements the 2.6 pair.
    # [SDK image_generate_params.py] none of the gpt-image-1 family takes arbitrary sizes.
    CatalogueModel("gpt-image-1-mini", 1759773600, _SHUTDOWN_2026_12_01, replacement=_USE_2_6),
    CatalogueModel("gpt-image-1.5", 1765908000, _SHUTDOWN_2026_12_01, replacement=_USE_2_6),
    CatalogueModel(
        "gpt-image-1.5-2025-12-16", 1765908000, _SHUTDOWN_2026_12_01, replacement=_USE_2_6
    ),
    CatalogueModel("chatgpt-image-latest", 1765908000, _SHUTDOWN_2026_12_01, replacement=_USE_2_6),
    # [DOC deprecations page] current, no shutdown date. [SDK image_generate_params.py]
    # gpt-image-2 and the 2.5 models (with snapshots) take arbitrary sizes; only the 2.5
    # models take xhigh/max.
    _image_2x("gpt-image-2", 1776794400, extra=False),
    _image_2x("gpt-image-2-2026-04-21", 1776794400, extra=False),
    _image_2x("gpt-image-2.5-sunburst", 1788890400, extra=True),
    _image_2x("gpt-image-2.5-sunburst-2026-09-08", 1788890400, extra=True),
    _image_2x("gpt-image-2.5-flare", 1788890400, extra=True),
    _image_2x("gpt-image-2.5-flare-2026-09-08", 1788890400, extra=True),
    # [UNCONFIRMED] The SDK doc names only gpt-image-2 and the 2.5 models for arbitrary sizes
    # and xhigh/max; our reference note says "gpt-image-2 and later", so the 2.6 pair gets both.
    _image_2x("gpt-image-2.6-sunburst", 1794333600, extra=True),
    _image_2x("gpt-image-2.6-flare", 1794333600, extra=True),
    # The moderation models this module serves (MODERATION_MODELS); no shutdown announced.
    _moderation("omni-moderation-latest", 1731693600),
    _moderation("omni-moderation-2024-09-26", 1727373600),
    _moderation("text-moderation-latest", 1660154400),
    _moderation("text-moderation-stable", 1660154400),
)
MODEL_CATALOGUE: Mapping[str, CatalogueModel] = {m.id: m for m in _CATALOGUE_ROWS}
_ADDED_MODEL_CREATED = 1796083200  # 2026-12-01T00:00Z: fixed, so a listing stays stable


def added_model(model_id: str) -> CatalogueModel:
    """A model the catalogue lacks, added at runtime: like gpt-image-2 and later."""
    return CatalogueModel(model_id, _ADDED_MODEL_CREATED, flexible_sizes=True)


# [SDK image_generate_params.py] The three classic sizes work on every GPT image model; the
# SDK says `auto` works "for models that allow automatic sizing", taken here as all of them.
CLASSIC_SIZES: Mapping[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "1536x1024": (1536, 1024),
    "1024x1536": (1024, 1536),
    "auto": (1024, 1024),
}
# [SDK image_generate_params.py] Flexible sizes: both edges divisible by 16, aspect ratio
# between 1:3 and 3:1 (read as inclusive), at most 3840x2160 (read as: long edge <= 3840,
# short edge <= 2160, so 2160x3840 works too). Sizes above 2560x1440 are "experimental".
SIZE_MULTIPLE = 16
MAX_ASPECT_RATIO = 3
MAX_LONG_EDGE = 3840
MAX_SHORT_EDGE = 2160
# [UNCONFIRMED] "the model's pixel limits": the floor is a guess (1024x640); the ceiling
# follows from the edge limits.
MIN_FLEXIBLE_PIXELS = 655_360
_SIZE_PATTERN = re.compile(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})")

# [SDK image_generate_params.py] low/medium/high/auto on every GPT image model.
QUALITIES = ("low", "medium", "high", "auto")
EXTRA_QUALITIES = ("xhigh", "max")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
PREVIEW_OUTPUT_FORMATS = ("gif", "svg")
PROMPT_MAX_CHARS = 32_000

# Output image tokens per picture (1024x1024, 1536x1024 or 1024x1536). low/medium/high follow
# third-party reports for the GPT image models; xhigh/max are guesses (twice the tier below).
# [UNCONFIRMED] Other sizes cost in proportion to their pixel count (see picture_tokens).
_OUTPUT_TOKENS: Mapping[str, tuple[int, int]] = {
    "low": (272, 408),
    "medium": (1056, 1584),
    "high": (4160, 6240),
    "xhigh": (8320, 12480),
    "max": (16640, 24960),
}

# Fields the images endpoint knows. Anything else is refused the way OpenAI refuses unknown
# parameters, which catches typos in our own client code. `response_format` and `style` are
# legacy DALL-E fields that GPT image models do not support.
_LEGACY_FIELDS = frozenset({"response_format", "style"})
_KNOWN_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "quality",
        "output_format",
        "output_compression",
        "background",
        "moderation",
        "safety_identifier",
        "user",
        "stream",
        "partial_images",
        "complexity",
        "frame_count",
        "frame_duration_ms",
        "svg",
    }
)

# --- moderation --------------------------------------------------------------------------------

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# The omni models score images only for these categories; the rest are text-only.
_IMAGE_CATEGORIES = frozenset(
    {
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "violence",
        "violence/graphic",
    }
)
MODERATION_MODELS: Mapping[str, str] = {  # requested name -> name reported back
    "omni-moderation-latest": "omni-moderation-2024-09-26",
    "omni-moderation-2024-09-26": "omni-moderation-2024-09-26",
    "text-moderation-latest": "text-moderation-007",
    "text-moderation-stable": "text-moderation-007",
}
DEFAULT_FLAGGED_WORDS: Mapping[str, str] = {
    "behead": "violence/graphic",
    "gore": "violence/graphic",
    "massacre": "violence",
    "murder": "violence",
    "nude": "sexual",
    "porn": "sexual",
    "suicide": "self-harm",
    "bomb": "illicit/violent",
}
_DEFAULT_WORD_CATEGORY = "violence"  # for flagged words given as a plain list


@dataclass
class OpenAIConfig:
    """Knobs of the stand-in. Fields are read per request, so tests may change them live."""

    api_key: str = DEV_API_KEY
    latency_s: float = 0.0  # simulated generation time per request
    # Words that get a prompt flagged, matched case-insensitively at the start of a word (so
    # "murder" also catches "murderers"). A mapping gives each word its moderation category;
    # a plain list of words puts them all under "violence".
    flagged_words: Collection[str] = field(default_factory=lambda: dict(DEFAULT_FLAGGED_WORDS))
    # The real images endpoint runs its own safety check on the prompt; mirror it by refusing
    # flagged prompts with `moderation_blocked` (stage "input").
    block_flagged_prompts: bool = True
    # Reported in the x-ratelimit-* headers only; nothing is enforced (use the "429" fault).
    requests_per_minute: int = 50
    # The day that decides which models are shut down; None means the real date (UTC), so
    # the stand-in retires models on the same day OpenAI does. Tests set it to move time.
    today: datetime.date | None = None
    # Shutdown dates added to or overriding MODEL_CATALOGUE (None: no date announced). An id
    # the catalogue lacks becomes a new image model with flexible sizes. POST /__dev/models
    # does the same at runtime and wins over this; /__dev/reset forgets only the latter.
    shutdown_dates: Mapping[str, datetime.date | None] = field(default_factory=dict)


# ================================================================================================
# Errors
# ================================================================================================


class ApiError(Exception):
    """An error answered in OpenAI's envelope: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "message": message,
            "type": type_,
            "param": param,
            "code": code,
            **(extra or {}),
        }
        self.headers = dict(headers or {})

    def response(self) -> flask.Response:
        resp = flask.jsonify({"error": self.body})
        resp.status_code = self.status
        resp.headers.update(self.headers)
        return resp


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _bad_type(param: str, expected: str, value: Any) -> ApiError:
    got = type(value).__name__
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


# ================================================================================================
# Models
# ================================================================================================


def utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def find_model(
    models: Mapping[str, CatalogueModel],
    model_id: str,
    today: datetime.date,
    kind: str | None = None,
) -> CatalogueModel:
    """The served catalogue entry for `model_id` (of `kind`, if given), or OpenAI's 404.

    [DOC] An unknown or shut-down model is 404 `model_not_found` with param "model", on
    /v1/images/generations as on GET /v1/models/{id}.
    """
    info = models.get(model_id)
    if info is None:
        raise _model_not_found(
            f"The model '{model_id}' does not exist or you do not have access to it."
        )
    shutdown = info.shutdown_date
    if shutdown is not None and not info.served_on(today):
        raise _model_not_found(
            f"The model '{model_id}' was shut down on {shutdown.isoformat()};"
            f" use {info.replacement} instead."
        )
    if kind is not None and info.kind != kind:
        raise _model_not_found(f"The model '{model_id}' is not {_KIND_NAMES[kind]}.")
    return info


_KIND_NAMES: Mapping[str, str] = {"image": "an image model", "moderation": "a moderation model"}


def _model_not_found(message: str) -> ApiError:
    return ApiError(404, message, param="model", code="model_not_found")


def _served_models(models: Mapping[str, CatalogueModel], today: datetime.date) -> dict[str, Any]:
    """GET /v1/models: every model still served, with its announced shutdown date [DOC]."""
    data = [m.model_object() for m in models.values() if m.served_on(today)]
    return {"object": "list", "data": data}


# ================================================================================================
# Request validation
# ================================================================================================


@dataclass(frozen=True)
class ImageRequest:
    """A validated generation request, with `auto` values already resolved."""

    prompt: str
    model: str
    n: int
    size: str
    width: int
    height: int
    quality: str
    output_format: str
    output_compression: int
    background: str
    safety_identifier: str | None


def _opt_str(body: Mapping[str, Any], key: str, allowed: Collection[str], default: str) -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad_type(key, "a string", value)
    if value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed)
        raise _invalid(key, f"Invalid value: '{value}'. Supported values are: {choices}.")
    return value


def _opt_int(body: Mapping[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    # bool is an int subclass in Python but not an integer in JSON terms.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad_type(key, "an integer", value)
    if not lo <= value <= hi:
        raise _invalid(key, f"Invalid '{key}': expected a value from {lo} to {hi}, got {value}.")
    return value


def _check_field_names(body: Mapping[str, Any]) -> None:
    for key in body:
        if key in _LEGACY_FIELDS or key not in _KNOWN_FIELDS:
            raise ApiError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def _check_model(
    body: Mapping[str, Any], models: Mapping[str, CatalogueModel], today: datetime.date
) -> CatalogueModel:
    model = body.get("model")
    if model is None:
        raise ApiError(
            400,
            "Missing required parameter: 'model'. Specify a GPT image model explicitly.",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(model, str):
        raise _bad_type("model", "a string", model)
    return find_model(models, model, today, kind="image")


def flexible_size_problem(width: int, height: int) -> str | None:
    """Why a gpt-image-2-family model cannot make `width`x`height`, or None if it can."""
    long_edge, short_edge = max(width, height), min(width, height)
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        return f"width and height must both be multiples of {SIZE_MULTIPLE}"
    if long_edge > MAX_ASPECT_RATIO * short_edge:
        return f"the aspect ratio must be between 1:{MAX_ASPECT_RATIO} and {MAX_ASPECT_RATIO}:1"
    if long_edge > MAX_LONG_EDGE or short_edge > MAX_SHORT_EDGE:
        return (
            f"too large: the maximum is {MAX_LONG_EDGE}x{MAX_SHORT_EDGE}"
            f" or {MAX_SHORT_EDGE}x{MAX_LONG_EDGE}"
        )
    if width * height < MIN_FLEXIBLE_PIXELS:
        return f"too small: at least {MIN_FLEXIBLE_PIXELS:,} pixels are needed"
    return None


def _check_size(body: Mapping[str, Any], model: CatalogueModel) -> tuple[int, int]:
    """[SDK image_generate_params.py] The classic sizes everywhere, any valid size on flex."""
    value = body.get("size")
    if value is None:
        return CLASSIC_SIZES["auto"]
    if not isinstance(value, str):
        raise _bad_type("size", "a string", value)
    if value in CLASSIC_SIZES:
        return CLASSIC_SIZES[value]
    if not model.flexible_sizes:
        choices = ", ".join(f"'{a}'" for a in CLASSIC_SIZES)
        raise _invalid(
            "size",
            f"Invalid value: '{value}'. Supported values are: {choices}."
            f" '{model.id}' makes only these sizes.",
        )
    match = _SIZE_PATTERN.fullmatch(value)
    if not match:
        raise _invalid(
            "size", f"Invalid value: '{value}'. Expected 'auto' or WIDTHxHEIGHT, e.g. '1536x864'."
        )
    width, height = int(match[1]), int(match[2])
    problem = flexible_size_problem(width, height)
    if problem:
        raise _invalid("size", f"Invalid size '{value}' for '{model.id}': {problem}.")
    return width, height


def _check_prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(
            400,
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not isinstance(prompt, str):
        raise _bad_type("prompt", "a string", prompt)
    if not prompt:
        raise _invalid("prompt", "Invalid 'prompt': empty string. Expected at least 1 character.")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise _invalid(
            "prompt",
            f"Invalid 'prompt': string too long. Expected at most {PROMPT_MAX_CHARS} characters,"
            f" got {len(prompt)}.",
            code="string_above_max_length",
        )
    return prompt


def _check_unsupported_modes(body: Mapping[str, Any]) -> None:
    """Features of the real API this stand-in does not implement: refuse them loudly."""
    if body.get("stream"):
        raise _invalid("stream", "Streaming is not supported by the devstack stand-in.")
    if body.get("partial_images") is not None:
        raise _invalid("partial_images", "'partial_images' is only supported with stream=true.")
    for key in ("frame_count", "frame_duration_ms", "svg"):
        if body.get(key) is not None:
            raise _invalid(key, f"'{key}' needs gif or svg output, which needs preview access.")
    _opt_str(body, "complexity", ("low", "medium", "high"), "medium")


def _check_output(body: Mapping[str, Any]) -> tuple[str, int, str]:
    """Return (output_format, output_compression, effective background)."""
    fmt = body.get("output_format")
    if fmt in PREVIEW_OUTPUT_FORMATS:
        raise _invalid(
            "output_format",
            f"Output format '{fmt}' requires access to the preview; this organization has none.",
        )
    fmt = _opt_str(body, "output_format", OUTPUT_FORMATS, "png")
    compression = _opt_int(body, "output_compression", 0, 100, 100)
    if fmt == "png" and compression != 100:
        raise _invalid(
            "output_compression",
            "'output_compression' is only supported with output_format 'jpeg' or 'webp'.",
        )
    background = _opt_str(body, "background", ("transparent", "opaque", "auto"), "auto")
    if background == "transparent" and fmt == "jpeg":
        raise _invalid("background", "Transparent background needs output_format 'png' or 'webp'.")
    return fmt, compression, "transparent" if background == "transparent" else "opaque"


def _opt_identifier(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad_type(key, "a string", value)
    return value or None


def parse_image_request(
    body: Any,
    models: Mapping[str, CatalogueModel] = MODEL_CATALOGUE,
    today: datetime.date | None = None,
) -> ImageRequest:
    """Validate a generation body the way the API does for a GPT image model.

    `today` (default: the real date) decides which models of `models` are shut down.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    _check_field_names(body)
    prompt = _check_prompt(body)
    model = _check_model(body, models, today or utc_today())
    n = _opt_int(body, "n", 1, 10, 1)
    width, height = _check_size(body, model)
    qualities = QUALITIES + (EXTRA_QUALITIES if model.extra_qualities else ())
    quality = _opt_str(body, "quality", qualities, "auto")
    fmt, compression, background = _check_output(body)
    _opt_str(body, "moderation", ("low", "auto"), "auto")
    _check_unsupported_modes(body)
    # `user` is the deprecated spelling; it only counts when safety_identifier is empty.
    ident = _opt_identifier(body, "safety_identifier") or _opt_identifier(body, "user")
    return ImageRequest(
        prompt=prompt,
        model=model.id,
        n=n,
        size=f"{width}x{height}",
        width=width,
        height=height,
        quality="medium" if quality == "auto" else quality,
        output_format=fmt,
        output_compression=compression,
        background=background,
        safety_identifier=ident,
    )


# ================================================================================================
# Faults
# ================================================================================================

FAULT_KINDS = (
    "429",
    "insufficient_quota",
    "500",
    "503",
    "moderation_blocked",
    "billing",
    "timeout",
    "garbage",
    "bad_base64",
    "not_an_image",
)


@dataclass
class Fault:
    """One injected failure. `times` counts down per matching request; -1 never runs out."""

    id: int
    kind: str
    times: int = 1
    prompt_contains: str | None = None
    delay_s: float = 30.0  # "timeout" only
    retry_after_s: int = 1  # "429" only
    moderation_stage: str = "input"  # "moderation_blocked" only

    def matches(self, prompt: str) -> bool:
        return self.times != 0 and (self.prompt_contains is None or self.prompt_contains in prompt)


def _parse_fault(body: Any, fault_id: int) -> Fault:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    kind = body.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
    times = body.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or times == 0 or times < -1:
        raise ValueError("times must be a positive integer, or -1 for 'until cleared'")
    contains = body.get("prompt_contains")
    if contains is not None and not isinstance(contains, str):
        raise ValueError("prompt_contains must be a string")
    delay = body.get("delay_s", 30.0)
    retry_after = body.get("retry_after_s", 1)
    if not isinstance(delay, int | float) or delay < 0:
        raise ValueError("delay_s must be a non-negative number")
    if not isinstance(retry_after, int) or retry_after < 0:
        raise ValueError("retry_after_s must be a non-negative integer")
    stage = body.get("moderation_stage", "input")
    if stage not in ("input", "output"):
        raise ValueError("moderation_stage must be 'input' or 'output'")
    return Fault(fault_id, kind, times, contains, float(delay), retry_after, stage)


def _fault_error(fault: Fault, model: str, limit: int) -> ApiError | None:
    """The error a fault answers with, or None for faults that answer 200 (or sleep first)."""
    kind = fault.kind
    if kind == "429":
        wait = fault.retry_after_s
        return ApiError(
            429,
            f"Rate limit reached for {model} on images per minute (devstack). "
            f"Please try again in {wait}s.",
            type_="requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": str(wait),
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-reset-requests": f"{wait}s",
                "x-ratelimit-remaining-requests": "0",
            },
        )
    if kind == "insufficient_quota":
        return ApiError(
            429,
            "You exceeded your current quota; check your plan and billing details (devstack).",
            type_="insufficient_quota",
            code="insufficient_quota",
        )
    if kind == "500":
        return ApiError(
            500,
            "The server hit an error while processing your request (devstack). Retry later.",
            type_="server_error",
            code="server_error",
        )
    if kind == "503":
        return ApiError(
            503,
            "The engine is currently overloaded (devstack). Please try again later.",
            type_="server_error",
            code="server_is_overloaded",
        )
    if kind == "billing":
        return ApiError(
            400,
            "Billing hard limit reached for this organization (devstack).",
            type_="image_generation_user_error",
            code="billing_hard_limit_reached",
        )
    if kind == "moderation_blocked":
        return _moderation_blocked(fault.moderation_stage, ["violence"])
    return None


def _moderation_blocked(stage: str, categories: list[str]) -> ApiError:
    return ApiError(
        400,
        "Your request was rejected by the safety system (devstack). "
        f"safety_violations=[{', '.join(categories)}]",
        type_="image_generation_user_error",
        code="moderation_blocked",
        extra={"moderation_details": {"moderation_stage": stage, "categories": categories}},
    )


# ================================================================================================
# Server state
# ================================================================================================


@dataclass
class _State:
    config: OpenAIConfig
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[Fault] = field(default_factory=list)
    next_fault_id: int = 1
    requests: list[dict[str, Any]] = field(default_factory=list)
    recent: deque[float] = field(default_factory=deque)  # monotonic times, last minute
    model_overrides: dict[str, CatalogueModel] = field(default_factory=dict)  # /__dev/models

    def today(self) -> datetime.date:
        return self.config.today or utc_today()

    def models(self) -> dict[str, CatalogueModel]:
        """The catalogue now: built-in rows, then config.shutdown_dates, then /__dev/models."""
        models = dict(MODEL_CATALOGUE)
        for model_id, shutdown in dict(self.config.shutdown_dates).items():
            base = models.get(model_id) or added_model(model_id)
            models[model_id] = replace(base, shutdown_date=shutdown)
        with self.lock:
            models.update(self.model_overrides)
        return models

    def take_fault(self, prompt: str) -> Fault | None:
        """First matching fault in registration order; consumes one of its `times`."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(prompt):
                    if fault.times > 0:
                        fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def rate_headers(self) -> dict[str, str]:
        """Count this request in a sliding minute and describe it like OpenAI's headers do."""
        now = time.monotonic()
        with self.lock:
            self.recent.append(now)
            while self.recent and self.recent[0] <= now - 60:
                self.recent.popleft()
            used, oldest = len(self.recent), self.recent[0]
        limit = self.config.requests_per_minute
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(max(0, limit - used)),
            "x-ratelimit-reset-requests": _duration(max(0.0, oldest + 60 - now)),
        }

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()
            self.recent.clear()
            self.model_overrides.clear()


def _duration(seconds: float) -> str:
    """Format like OpenAI's reset headers: '20ms', '1.5s', '6m0s'."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"


_LOG_LIMIT = 1000  # newest generation requests kept for /__dev/requests


def _request_id() -> str:
    return "req_" + secrets.token_hex(16)


# ================================================================================================
# Auth and bodies
# ================================================================================================


def _check_auth(config: OpenAIConfig) -> None:
    header = flask.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(
            401,
            "No API key provided. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    # compare_digest: no timing hints, and the key itself never appears in the message.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), config.api_key.encode()
    ):
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")


def _json_body() -> Any:
    try:
        return json.loads(flask.request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400,
            "The body of your request is not valid JSON. Send a JSON object with "
            "'Content-Type: application/json'.",
        ) from None


def _log_entry() -> dict[str, Any]:
    """What the request log keeps: never the Authorization header, so never the API key."""
    headers = {k: v for k, v in flask.request.headers.items() if k.lower() != "authorization"}
    try:
        body: Any = json.loads(flask.request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError):
        body = None
    return {
        "time": time.time(),
        "method": flask.request.method,
        "path": flask.request.path,
        "headers": headers,
        "json": body,
        "status": None,
        "fault": None,
    }


# ================================================================================================
# Generation responses
# ================================================================================================


def picture_tokens(quality: str, width: int, height: int) -> int:
    """Output tokens for one picture: the _OUTPUT_TOKENS figure, scaled by pixel count.

    The table's non-square figures are exactly 1.5x the square ones, as 1536x1024 has 1.5x
    the pixels of 1024x1024, so other sizes scale the square figure the same way.
    """
    square, other = _OUTPUT_TOKENS[quality]
    if (width, height) == (1024, 1024):
        return square
    if {width, height} == {1024, 1536}:
        return other
    return math.ceil(square * width * height / (1024 * 1024))


def _usage(req: ImageRequest) -> dict[str, Any]:
    # About four characters per text token is the usual rule of thumb.
    text_tokens = max(1, math.ceil(len(req.prompt) / 4))
    image_tokens = picture_tokens(req.quality, req.width, req.height) * req.n
    return {
        "input_tokens": text_tokens,
        "output_tokens": image_tokens,
        "total_tokens": text_tokens + image_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
        "output_tokens_details": {"text_tokens": 0, "image_tokens": image_tokens},
    }


def _render(req: ImageRequest, index: int) -> bytes:
    img, opaque = draw_scene(req.prompt, req.width, req.height, index)
    if req.background == "transparent":
        img.putalpha(opaque)
    return encode_picture(img, req.output_format, req.output_compression)


def _images_payload(req: ImageRequest, datas: list[str]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": d} for d in datas],
        "background": req.background,
        "output_format": req.output_format,
        "quality": req.quality,
        "size": req.size,
        "usage": _usage(req),
    }
    if req.safety_identifier:
        payload["safety_identifier"] = req.safety_identifier
    return payload


def _generate(req: ImageRequest, fault: Fault | None) -> flask.Response:
    """The 200 answer, possibly corrupted by a 'garbage'/'bad_base64'/'not_an_image' fault."""
    kind = fault.kind if fault else None
    if kind == "garbage":
        return flask.Response(
            "<html><body><h1>200 OK</h1><p>devstack: this is not JSON</p></body></html>",
            status=200,
            content_type="text/html; charset=utf-8",
        )
    if kind == "bad_base64":
        # After dropping the non-alphabet characters 15 remain, which no decoder accepts.
        datas = ["@@ this is not base64 @@"] * req.n
    elif kind == "not_an_image":
        junk = b"devstack: these bytes are not an image\n" * 8
        datas = [base64.b64encode(junk).decode()] * req.n
    else:
        datas = [base64.b64encode(_render(req, i)).decode() for i in range(req.n)]
    return flask.jsonify(_images_payload(req, datas))


def _flagged_categories(text: str, config: OpenAIConfig) -> list[str]:
    words = config.flagged_words
    found: list[str] = []
    for word in words:
        if re.search(r"\b" + re.escape(word.lower()), text.lower()):
            category = words[word] if isinstance(words, Mapping) else _DEFAULT_WORD_CATEGORY
            if category not in found:
                found.append(category)
    return found


def _handle_generation(state: _State, entry: dict[str, Any]) -> flask.Response:
    config = state.config
    _check_auth(config)
    req = parse_image_request(_json_body(), state.models(), state.today())
    fault = state.take_fault(req.prompt)
    if fault:
        with state.lock:
            entry["fault"] = fault.kind
        error = _fault_error(fault, req.model, config.requests_per_minute)
        if error:
            raise error
        if fault.kind == "timeout":
            time.sleep(fault.delay_s)
    if config.block_flagged_prompts and (cats := _flagged_categories(req.prompt, config)):
        raise _moderation_blocked("input", cats)
    if config.latency_s > 0:
        time.sleep(config.latency_s)
    resp = _generate(req, fault)
    resp.headers.update(state.rate_headers())
    return resp


# ================================================================================================
# Moderations
# ================================================================================================


def _moderation_inputs(raw: Any, text_only: bool) -> list[tuple[str, bool]]:
    """Split `input` into moderated units: (text, has_image)."""
    if isinstance(raw, str):
        return [(raw, False)]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return [(x, False) for x in raw]  # one result per string
    if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        # A list of content parts is one input (text and images judged together).
        texts = [str(p.get("text", "")) for p in raw if p.get("type") == "text"]
        has_image = any(p.get("type") == "image_url" for p in raw)
        if has_image and text_only:
            raise _invalid("input", "Image inputs need an omni-moderation model.")
        return [(" ".join(texts), has_image)]
    raise _invalid("input", "'input' must be a string, a list of strings or a list of parts.")


def _score(text: str, category: str, flagged: bool) -> float:
    digest = hashlib.sha256(f"{category}\x00{text}".encode()).digest()
    unit = int.from_bytes(digest[:4], "big") / 2**32
    # Flagged: 0.90..0.99; clean: 1e-6..1e-3, like a confident classifier.
    return round(0.9 + 0.09 * unit, 6) if flagged else round(10 ** (-6 + 3 * unit), 8)


def _moderation_result(text: str, has_image: bool, config: OpenAIConfig) -> dict[str, Any]:
    hits = set(_flagged_categories(text, config))
    # A sub-category hit (e.g. "violence/graphic") also implies its parent ("violence").
    hits |= {c.split("/")[0] for c in hits if c.split("/")[0] in MODERATION_CATEGORIES}
    return {
        "flagged": bool(hits),
        "categories": {c: c in hits for c in MODERATION_CATEGORIES},
        "category_scores": {c: _score(text, c, c in hits) for c in MODERATION_CATEGORIES},
        "category_applied_input_types": {
            c: ["text", "image"] if has_image and c in _IMAGE_CATEGORIES else ["text"]
            for c in MODERATION_CATEGORIES
        },
    }


def _handle_moderation(state: _State) -> flask.Response:
    config = state.config
    _check_auth(config)
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model") or "omni-moderation-latest"
    if not isinstance(model, str):
        raise _bad_type("model", "a string", model)
    find_model(state.models(), model, state.today(), kind="moderation")
    if "input" not in body:
        raise ApiError(
            400,
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    units = _moderation_inputs(body["input"], text_only=model.startswith("text-"))
    return flask.jsonify(
        {
            "id": "modr-" + secrets.token_hex(12),
            "model": MODERATION_MODELS.get(model, model),
            "results": [_moderation_result(t, img, config) for t, img in units],
        }
    )


# ================================================================================================
# Models endpoints
# ================================================================================================


def _handle_list_models(state: _State) -> flask.Response:
    _check_auth(state.config)
    return flask.jsonify(_served_models(state.models(), state.today()))


def _handle_retrieve_model(state: _State, model_id: str) -> flask.Response:
    _check_auth(state.config)
    return flask.jsonify(find_model(state.models(), model_id, state.today()).model_object())


_DEV_MODEL_KEYS = frozenset(
    {"id", "shutdown_date", "flexible_sizes", "extra_qualities", "replacement"}
)
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _parse_shutdown_date(value: Any) -> datetime.date | None:
    if value is None:
        return None
    # fromisoformat alone would also take "20261201"; the API's format is YYYY-MM-DD only.
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("shutdown_date must be a date 'YYYY-MM-DD', or null for none announced")


def _parse_dev_model(body: Any, models: Mapping[str, CatalogueModel]) -> CatalogueModel:
    """A POST /__dev/models body, applied to the model's current row (or a new one)."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    if unknown := sorted(set(body) - _DEV_MODEL_KEYS):
        raise ValueError(f"unknown keys {unknown}; known: {sorted(_DEV_MODEL_KEYS)}")
    model_id = body.get("id")
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        raise ValueError("id must be a model id such as 'gpt-image-2'")
    # Required rather than defaulting to null, so a misspelt date cannot un-retire a model.
    if "shutdown_date" not in body:
        raise ValueError("shutdown_date is required: 'YYYY-MM-DD', or null for none announced")
    changes: dict[str, Any] = {"shutdown_date": _parse_shutdown_date(body["shutdown_date"])}
    for key in ("flexible_sizes", "extra_qualities"):
        if key in body:
            if not isinstance(body[key], bool):
                raise ValueError(f"{key} must be true or false")
            changes[key] = body[key]
    if "replacement" in body:
        if not isinstance(body["replacement"], str) or not body["replacement"]:
            raise ValueError("replacement must be a non-empty string")
        changes["replacement"] = body["replacement"]
    return replace(models.get(model_id) or added_model(model_id), **changes)


def _dev_model_view(model: CatalogueModel, today: datetime.date) -> dict[str, Any]:
    """The Model object plus what only the stand-in knows, for GET /__dev/models."""
    return {
        **model.model_object(),
        "kind": model.kind,
        "flexible_sizes": model.flexible_sizes,
        "extra_qualities": model.extra_qualities,
        "replacement": model.replacement,
        "served": model.served_on(today),
    }


# ================================================================================================
# App
# ================================================================================================


def _dev_json() -> Any:
    return flask.request.get_json(force=True, silent=True)


def _register_dev_routes(app: flask.Flask, state: _State) -> None:
    @app.post("/__dev/faults")
    def add_fault() -> tuple[flask.Response, int]:
        with state.lock:
            fault_id = state.next_fault_id
            state.next_fault_id += 1
        try:
            fault = _parse_fault(_dev_json(), fault_id)
        except ValueError as exc:
            return flask.jsonify({"error": str(exc)}), 400
        with state.lock:
            state.faults.append(fault)
        return flask.jsonify(asdict(fault)), 201

    @app.get("/__dev/faults")
    def list_faults() -> flask.Response:
        with state.lock:
            return flask.jsonify([asdict(f) for f in state.faults])

    @app.delete("/__dev/faults")
    def clear_faults() -> flask.Response:
        with state.lock:
            state.faults.clear()
        return flask.jsonify({"ok": True})

    @app.get("/__dev/requests")
    def list_requests() -> flask.Response:
        with state.lock:
            return flask.jsonify(list(state.requests))

    @app.post("/__dev/models")
    def put_model() -> tuple[flask.Response, int]:
        models = state.models()
        try:
            model = _parse_dev_model(_dev_json(), models)
        except ValueError as exc:
            return flask.jsonify({"error": str(exc)}), 400
        with state.lock:
            state.model_overrides[model.id] = model
        status = 200 if model.id in models else 201
        return flask.jsonify(_dev_model_view(model, state.today())), status

    @app.get("/__dev/models")
    def all_models() -> flask.Response:
        today = state.today()
        views = [_dev_model_view(m, today) for m in state.models().values()]
        return flask.jsonify({"today": today.isoformat(), "data": views})

    @app.post("/__dev/reset")
    def reset() -> flask.Response:
        state.reset()
        return flask.jsonify({"ok": True})


def _api_route(
    handler: Callable[[], flask.Response], after: Callable[[int], None] | None = None
) -> flask.Response:
    """Run a /v1 handler, turning ApiError into OpenAI's envelope."""
    try:
        resp = handler()
    except ApiError as err:
        resp = err.response()
    if after:
        after(resp.status_code)
    return resp


def create_app(config: OpenAIConfig | None = None) -> flask.Flask:
    """A Flask app serving the Images and Moderations endpoints plus the /__dev/ controls."""
    state = _State(config or OpenAIConfig())
    app = flask.Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep OpenAI's field order

    @app.post("/v1/images/generations")
    def images_generations() -> flask.Response:
        entry = _log_entry()
        with state.lock:
            state.requests.append(entry)
            del state.requests[:-_LOG_LIMIT]  # a long-running dev stack must not grow forever

        def done(status: int) -> None:
            with state.lock:  # /__dev/requests may be serialising the log right now
                entry["status"] = status

        return _api_route(lambda: _handle_generation(state, entry), done)

    @app.post("/v1/moderations")
    def moderations() -> flask.Response:
        return _api_route(lambda: _handle_moderation(state))

    @app.get("/v1/models")
    def list_models() -> flask.Response:
        return _api_route(lambda: _handle_list_models(state))

    # <path:>: an id is one path segment today, but fine-tuned ids may hold slashes one day.
    @app.get("/v1/models/<path:model_id>")
    def retrieve_model(model_id: str) -> flask.Response:
        return _api_route(lambda: _handle_retrieve_model(state, model_id))

    @app.errorhandler(404)
    @app.errorhandler(405)
    def unknown_route(exc: Exception) -> flask.Response:
        req = flask.request
        status = getattr(exc, "code", 404)
        return ApiError(status, f"Invalid URL ({req.method} {req.path})").response()

    @app.after_request
    def add_common_headers(resp: flask.Response) -> flask.Response:
        if flask.request.path.startswith("/v1/"):
            resp.headers.setdefault("x-request-id", _request_id())
            resp.headers.setdefault("openai-version", "2020-10-01")
        return resp

    _register_dev_routes(app, state)
    return app
