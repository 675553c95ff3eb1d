"""Stand-in for OpenAI's Images API (`POST /v1/images/generations`, `POST /v1/images/edits`),
`POST /v1/moderations` and the models endpoints (`GET /v1/models`, `GET /v1/models/{id}`).

It speaks the wire protocol of the GPT image models closely enough that the official `openai`
SDK works against it unchanged (`OpenAI(api_key=DEV_API_KEY, base_url=url + "/v1")`):
bearer auth, the request fields and their validation errors, the `ImagesResponse` JSON with
base64 images and token usage, OpenAI's error envelope and its rate-limit headers. Models come
from :data:`MODEL_CATALOGUE` and shut down on their `shutdown_date` (see `OpenAIConfig.today`).

Pictures are drawn locally by :mod:`devstack.picture_drawing`: a deterministic landscape
seeded by the prompt, with the prompt printed on it; an edit is the first input picture,
fitted to the requested size and tinted by a colour from the prompt, so it stays recognisable.

Edits come as multipart uploads (what the SDK's `images.edit` sends) or as JSON whose
`images` hold `image_url`s, which the stand-in downloads (http or https, so the local
Storage stand-in's signed URLs work) or decodes (data URLs). `file_id` is refused: there is
no Files API here.

Dev-only endpoints under `/__dev/` (no auth) inject faults (rate limits, outages, safety
blocks, slow or malformed answers), add models or move their shutdown dates (`/__dev/models`)
and expose a log of the image requests received (`/__dev/requests`: generations and edits;
an edit's entry also lists each input picture's sha256 and pixel size). Faults and the
simulated latency apply to edits as to generations.
This module is named `openai_images` so it never shadows the `openai` package.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import io
import json
import math
import re
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeAlias

import flask
import requests
from PIL import Image, ImageOps
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException

from .picture_drawing import draw_edit_scene, draw_scene, encode_picture

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

# --- edits -------------------------------------------------------------------------------------
#
# [SDK image_edit_params.py] POST /v1/images/edits takes multipart/form-data, which is what the
# SDK sends: `image` (or repeated `image[]`) file parts and the options as text fields.
# [DOC OpenAPI EditImageBodyJsonParam] It also takes a JSON body whose `images` holds
# ImageRefParam objects, "exactly one of" {"image_url": "<URL or data URL>"} or {"file_id"}.

MAX_INPUT_IMAGES = 16  # [SDK] "You can provide up to 16 images."
# [SDK] each upload "less than 50MB"; [UNCONFIRMED] MB read as MiB, for the mask's 4MB too.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024  # [SDK] the mask: "a valid PNG file, less than 4MB"
MAX_IMAGE_URL_BYTES = 20 * 1024 * 1024  # [DOC] an image_url (URL or data URL) "up to 20 MB"
# [SDK] inputs are png, webp or jpg. [3P prism-php/prism#725, openai-node#1468] The API goes by
# the part's declared Content-Type: a part sent as application/octet-stream (what an SDK sends
# for bare bytes without a file name) is refused with `unsupported_file_mimetype`.
INPUT_MIMETYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
_INPUT_FORMATS = ("png", "jpeg", "webp")
_PIL_FORMATS: Mapping[str, str] = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# [DOC] EditImageBodyJsonParam lists images, mask and input_fidelity on top of the generation
# options; [UNCONFIRMED] the options the SDK gained since (safety_identifier, complexity, ...)
# are taken to exist in JSON bodies too. `markup` is a multipart file part only.
_EDIT_JSON_FIELDS = _KNOWN_FIELDS | {"images", "mask", "input_fidelity"}
_EDIT_FILE_FIELDS = frozenset({"image", "mask", "markup"})
_EDIT_FORM_FIELDS = _KNOWN_FIELDS | _EDIT_FILE_FIELDS | {"input_fidelity"}
# Multipart text fields carry numbers and booleans as text; these are read back as such.
_FORM_INTEGERS = frozenset(
    {"n", "output_compression", "partial_images", "frame_count", "frame_duration_ms"}
)
_FORM_BOOLEANS: Mapping[str, bool] = {"true": True, "false": False}
# [SDK] input_fidelity "Supports high and low on gpt-image-1.5; gpt-image-1-mini supports only
# low. For gpt-image-2, omit this parameter. Defaults to low." Refused where the SDK says to
# omit it ([UNCONFIRMED] whether the API refuses or ignores it there); [UNCONFIRMED] the 2.5
# and 2.6 models, which the SDK does not name, take both values.
_INPUT_FIDELITIES: Mapping[str, tuple[str, ...]] = {
    "gpt-image-2": (),
    "gpt-image-2-2026-04-21": (),
    "gpt-image-1-mini": ("low",),
}
_DEFAULT_INPUT_FIDELITIES = ("high", "low")
DEFAULT_IMAGE_FETCH_TIMEOUT_S = 10.0  # [UNCONFIRMED] how long OpenAI waits for an image_url

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
    # How long an edit's image_url download may take, in all, before it is a 400.
    image_fetch_timeout_s: float = DEFAULT_IMAGE_FETCH_TIMEOUT_S


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


def _unknown_parameter(key: str) -> ApiError:
    return ApiError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def _missing(param: str, hint: str = "") -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.{hint}",
        param=param,
        code="missing_required_parameter",
    )


def _check_field_names(names: Iterable[str], known: frozenset[str] = _KNOWN_FIELDS) -> None:
    for key in names:
        if key in _LEGACY_FIELDS or key not in known:
            raise _unknown_parameter(key)


def _check_model(
    body: Mapping[str, Any], models: Mapping[str, CatalogueModel], today: datetime.date
) -> CatalogueModel:
    model = body.get("model")
    if model is None:
        raise _missing("model", " Specify a GPT image model explicitly.")
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
        raise _missing("prompt")
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
    return _image_options(body, models, today or utc_today())


def _image_options(
    body: Mapping[str, Any], models: Mapping[str, CatalogueModel], today: datetime.date
) -> ImageRequest:
    """The prompt and output options, shared by generations and edits (names already checked)."""
    prompt = _check_prompt(body)
    model = _check_model(body, models, today)
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
# Edit requests
# ================================================================================================


@dataclass(frozen=True)
class _Upload:
    """A multipart file part, read up to one byte past its size limit."""

    param: str  # "image", "image[3]" or "mask": what an error names
    mimetype: str  # the part's declared Content-Type
    data: bytes


@dataclass(frozen=True)
class _Reference:
    """An ImageRefParam of a JSON body: exactly one of the two is set."""

    param: str  # "images[0]" or "mask"
    image_url: str | None
    file_id: str | None


_Source: TypeAlias = _Upload | _Reference


@dataclass(frozen=True)
class _EditBody:
    """An edit body read from either form, before its pictures are fetched and decoded."""

    fields: dict[str, Any]  # the options, typed as in a JSON body
    images: list[_Source]
    mask: _Source | None
    form: dict[str, str] | None  # multipart only: the text fields as sent, for the log


@dataclass(frozen=True)
class InputImage:
    """One decoded input picture of an edit (or its mask), after EXIF orientation."""

    param: str
    source: str  # "upload", "image_url" or "data_url"
    format: str  # "png", "jpeg" or "webp"
    sha256: str  # of the bytes as received, so a test can tell which picture was edited
    size_bytes: int
    picture: Image.Image = field(repr=False, compare=False)
    url: str | None = None  # image_url only
    content_type: str | None = None  # as declared by the part, the data URL or the server

    @property
    def width(self) -> int:
        return self.picture.width

    @property
    def height(self) -> int:
        return self.picture.height

    def log_view(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "source": self.source,
            "url": self.url,
            "content_type": self.content_type,
            "format": self.format,
            "bytes": self.size_bytes,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
        }


@dataclass(frozen=True)
class EditRequest:
    """A validated edit: the output options (checked as for a generation) and the inputs."""

    output: ImageRequest
    inputs: tuple[InputImage, ...]
    mask: InputImage | None
    input_fidelity: str


def _read_edit_body() -> _EditBody:
    if flask.request.mimetype == "multipart/form-data":
        return _read_multipart()
    return _read_json_edit(_json_body())


def _check_image_count(param: str, count: int) -> None:
    if count > MAX_INPUT_IMAGES:
        # [UNCONFIRMED] code and wording, after OpenAI's other array limits.
        raise _invalid(
            param,
            f"Invalid '{param}': array too long. Expected an array with maximum length"
            f" {MAX_INPUT_IMAGES}, but got an array with length {count} instead.",
            code="array_above_max_length",
        )


def _read_json_edit(body: Any) -> _EditBody:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    _check_field_names(body, _EDIT_JSON_FIELDS)
    images = body.get("images")
    if images is None:
        raise _missing("images")
    if not isinstance(images, list):
        raise _bad_type("images", "an array", images)
    if not images:
        # [UNCONFIRMED] code and wording, after OpenAI's other array limits.
        raise _invalid(
            "images",
            "Invalid 'images': empty array. Expected an array with minimum length 1.",
            code="empty_array",
        )
    _check_image_count("images", len(images))
    refs: list[_Source] = [_reference(f"images[{i}]", item) for i, item in enumerate(images)]
    mask = None if body.get("mask") is None else _reference("mask", body["mask"])
    fields = {k: v for k, v in body.items() if k not in ("images", "mask")}
    return _EditBody(fields, refs, mask, None)


def _reference(param: str, item: Any) -> _Reference:
    if not isinstance(item, dict):
        raise _bad_type(param, "an object", item)
    for key in item:
        if key not in ("image_url", "file_id"):
            raise _unknown_parameter(f"{param}.{key}")
    given = [key for key in ("image_url", "file_id") if item.get(key) is not None]
    if len(given) != 1:
        raise _invalid(
            param, f"Invalid '{param}': provide exactly one of 'image_url' or 'file_id'."
        )
    value = item[given[0]]
    if not isinstance(value, str):
        raise _bad_type(f"{param}.{given[0]}", "a string", value)
    return _Reference(param, item.get("image_url"), item.get("file_id"))


def _form_name(key: str) -> str:
    """`svg[model]` is a field of `svg`, `image[]` a part of `image`."""
    return key.split("[", 1)[0]


def _form_value(name: str, value: str) -> Any:
    if name in _FORM_INTEGERS and re.fullmatch(r"-?[0-9]{1,9}", value):
        return int(value)
    if name == "stream" and value in _FORM_BOOLEANS:
        return _FORM_BOOLEANS[value]
    return value  # anything else stays text, so a bad number is an invalid_type like in JSON


def _read_multipart() -> _EditBody:
    try:
        form, files = flask.request.form, flask.request.files
    except HTTPException as exc:  # e.g. a text field over Flask's MAX_FORM_MEMORY_SIZE
        raise ApiError(exc.code or 400, f"Could not read the form: {exc.description}") from None
    fields: dict[str, Any] = {}
    for key, value in form.items(multi=True):
        name = _form_name(key)
        _check_field_names([name], _EDIT_FORM_FIELDS)
        if name in _EDIT_FILE_FIELDS:
            raise _bad_type(name, "a file", value)
        # A nested field only says its object was given; a repeated field counts once.
        fields.setdefault(name, _form_value(name, value) if name == key else {})
    parts = [(_form_name(key), key, part) for key, part in files.items(multi=True)]
    for name, _, _ in parts:
        _check_field_names([name], _EDIT_FORM_FIELDS)
        if name not in _EDIT_FILE_FIELDS:
            raise ApiError(
                400,
                f"Invalid type for '{name}': expected a string, but got a file instead.",
                param=name,
                code="invalid_type",
            )
    images = [(key, part) for name, key, part in parts if name == "image"]
    if not images:
        raise _missing("image")
    _check_image_count("image", len(images))
    single = len(images) == 1 and images[0][0] == "image"
    uploads: list[_Source] = [
        _upload("image" if single else f"image[{i}]", part, MAX_UPLOAD_BYTES)
        for i, (_, part) in enumerate(images)
    ]
    masks = files.getlist("mask")
    mask = _upload("mask", masks[0], MAX_MASK_BYTES) if masks else None
    if files.getlist("markup"):
        fields["markup"] = True
    return _EditBody(fields, uploads, mask, {key: form[key] for key in form})


def _upload(param: str, part: FileStorage, limit: int) -> _Upload:
    return _Upload(param, part.mimetype, part.stream.read(limit + 1))


def _bad_image_url(param: str, message: str) -> ApiError:
    # [3P] Chat Completions answers an image URL it cannot download with this code (and
    # param null); [UNCONFIRMED] the same on /v1/images/edits, param naming the field.
    return ApiError(400, message, param=param, code="invalid_image_url")


def _too_large(param: str, what: str, limit: int) -> ApiError:
    # [3P] Chat Completions: "Image size exceeds the limit." with code `invalid_image`;
    # [UNCONFIRMED] the same code on /v1/images/edits.
    return ApiError(
        400,
        f"Invalid '{param}': {what} exceeds the limit of {limit // (1024 * 1024)} MB.",
        param=param,
        code="invalid_image",
    )


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[^;,]*)*),(.*)", re.DOTALL)


def _decode_data_url(param: str, url: str, limit: int) -> tuple[bytes, str]:
    match = _DATA_URL.fullmatch(url)
    if not match or ";base64" not in match[2].lower():
        raise _bad_image_url(
            param, f"Invalid '{param}': expected a base64 data URL, 'data:image/png;base64,...'."
        )
    payload = match[3]
    if len(payload) * 3 // 4 > limit + 2:  # refuse before decoding 20 MB of base64
        raise _too_large(param, "the image", limit)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_image_url(
            param, f"Invalid '{param}': the data URL is not valid base64."
        ) from None
    if len(data) > limit:
        raise _too_large(param, "the image", limit)
    return data, match[1] or ""


def _fetch_image_url(param: str, url: str, timeout_s: float, limit: int) -> tuple[bytes, str]:
    """GET the picture like OpenAI would: a 200 within the timeout, no more than `limit` bytes.

    Plain http is accepted so the local Storage stand-in's signed URLs work; the real API
    needs a URL it can reach from the internet ([UNCONFIRMED] whether it takes plain http).
    """
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise _bad_image_url(param, f"Invalid '{param}': expected an http(s) URL or a data URL.")
    deadline = time.monotonic() + timeout_s
    try:
        with requests.get(url, stream=True, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                raise _bad_image_url(
                    param,
                    f"Error while downloading {url}. Upstream status code: {resp.status_code}.",
                )
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(param, "the downloaded image", limit)
            chunks: list[bytes] = []
            received = 0
            for chunk in resp.iter_content(64 * 1024):
                received += len(chunk)
                if received > limit:
                    raise _too_large(param, "the downloaded image", limit)
                if time.monotonic() > deadline:
                    raise requests.Timeout
                chunks.append(chunk)
            return b"".join(chunks), resp.headers.get("Content-Type", "")
    except requests.Timeout:
        raise _bad_image_url(param, f"Timeout while downloading {url}.") from None
    except requests.RequestException as exc:
        raise _bad_image_url(
            param, f"Error while downloading {url}: {type(exc).__name__}."
        ) from None


def _decode_picture(data: bytes, formats: Sequence[str]) -> tuple[Image.Image, str] | None:
    """The picture, upright, and its format; None unless it is a whole image of `formats`."""
    try:
        picture = Image.open(io.BytesIO(data))
        fmt = _PIL_FORMATS.get(picture.format or "")
        if fmt is None or fmt not in formats:
            return None
        picture.load()  # a truncated file fails here, not later while drawing
        return ImageOps.exif_transpose(picture), fmt
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # UnidentifiedImageError is an OSError


@dataclass(frozen=True)
class _Received:
    """The bytes of one picture as they arrived, with what their sender said they are."""

    param: str
    kind: str  # "upload", "image_url" or "data_url"
    data: bytes
    content_type: str
    url: str | None = None


def _receive(source: _Source, config: OpenAIConfig, limit: int) -> _Received:
    """Read an upload, decode a data URL or download an image_url, within `limit` bytes."""
    if isinstance(source, _Upload):
        if len(source.data) > limit:
            raise _too_large(source.param, "the file", limit)
        return _Received(source.param, "upload", source.data, source.mimetype)
    if source.image_url is None:
        raise _invalid(
            f"{source.param}.file_id",
            "file_id references are not supported by the devstack stand-in (it has no Files"
            " API); send the picture as an image_url (an http(s) URL or a data URL) instead.",
        )
    param, url = f"{source.param}.image_url", source.image_url
    cap = min(limit, MAX_IMAGE_URL_BYTES)
    if url.startswith("data:"):
        # The log keeps the picture's digest, not the URL: megabytes of base64.
        return _Received(param, "data_url", *_decode_data_url(param, url, cap))
    data, content_type = _fetch_image_url(param, url, config.image_fetch_timeout_s, cap)
    return _Received(param, "image_url", data, content_type, url)


def _check_declared_type(got: _Received, *, mask: bool) -> None:
    """[3P prism-php/prism#725] An upload goes by its part's Content-Type, but not the mask's.

    [UNCONFIRMED] A data URL's media type is checked too; a downloaded picture's
    Content-Type is not (its bytes decide, as for every input after this check).
    """
    mimetype = got.content_type.split(";")[0].strip().lower()
    if got.kind == "image_url" or mimetype in INPUT_MIMETYPES or (mask and got.kind == "upload"):
        return
    if got.kind == "upload":
        raise ApiError(
            400,
            f"Invalid file '{got.param}': unsupported mimetype ('{mimetype}')."
            " Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
            param=got.param,
            code="unsupported_file_mimetype",
        )
    raise _invalid_format(got.param, f"a data URL of type '{mimetype}'", _INPUT_FORMATS)


def _load_picture(source: _Source, config: OpenAIConfig, *, mask: bool = False) -> InputImage:
    """One input picture (or the mask, which must be a PNG), checked and decoded."""
    limit, formats = (MAX_MASK_BYTES, ("png",)) if mask else (MAX_UPLOAD_BYTES, _INPUT_FORMATS)
    got = _receive(source, config, limit)
    _check_declared_type(got, mask=mask)
    decoded = _decode_picture(got.data, formats)
    if decoded is None:
        raise _invalid_format(got.param, "not a whole picture", formats)
    picture, fmt = decoded
    return InputImage(
        param=got.param,
        source=got.kind,
        format=fmt,
        sha256=hashlib.sha256(got.data).hexdigest(),
        size_bytes=len(got.data),
        picture=picture,
        url=got.url,
        content_type=got.content_type or None,
    )


def _invalid_format(param: str, what: str, formats: Sequence[str]) -> ApiError:
    # [3P] Chat Completions refuses bytes that are no supported image with this code;
    # [UNCONFIRMED] the same on /v1/images/edits.
    names = ", ".join(f"'{f}'" for f in formats)
    return ApiError(
        400,
        f"Invalid image '{param}': {what}. Supported formats are {names}.",
        param=param,
        code="invalid_image_format",
    )


def _check_mask(mask: InputImage, first: InputImage) -> None:
    """[SDK] The mask's fully transparent areas mark what to edit; it is the first image's size.

    [UNCONFIRMED] codes and wording of both refusals.
    """
    if not mask.picture.has_transparency_data:
        raise _invalid("mask", "Invalid 'mask': it needs an alpha channel (transparent areas).")
    if mask.picture.size != first.picture.size:
        raise _invalid(
            "mask",
            f"Invalid 'mask': it is {mask.width}x{mask.height} but '{first.param}' is"
            f" {first.width}x{first.height}; they must have the same dimensions.",
        )


def _check_input_fidelity(fields: Mapping[str, Any], model: str) -> str:
    allowed = _INPUT_FIDELITIES.get(model, _DEFAULT_INPUT_FIDELITIES)
    if not allowed and fields.get("input_fidelity") is not None:
        raise _invalid(
            "input_fidelity", f"'input_fidelity' is not supported by '{model}'; omit it."
        )
    return _opt_str(fields, "input_fidelity", allowed or ("low",), "low")


def _edit_size(fields: Mapping[str, Any], first: InputImage, req: ImageRequest) -> ImageRequest:
    """[UNCONFIRMED] `auto` on an edit: the classic size nearest the first input's shape."""
    if fields.get("size") not in (None, "auto"):
        return req
    ratio, cut = first.width / first.height, math.sqrt(1.5)  # halfway, on a log scale
    width, height = (
        (1536, 1024) if ratio > cut else (1024, 1536) if ratio < 1 / cut else (1024, 1024)
    )
    return replace(req, size=f"{width}x{height}", width=width, height=height)


def _parse_edit(body: _EditBody, state: _State) -> EditRequest:
    """Validate an edit: the options first, then each picture (downloading image_urls)."""
    fields, config = body.fields, state.config
    output = _image_options(fields, state.models(), state.today())
    fidelity = _check_input_fidelity(fields, output.model)
    if fields.get("markup") is not None:
        raise _invalid("markup", "'markup' is not supported by the devstack stand-in; use 'mask'.")
    inputs = tuple(_load_picture(source, config) for source in body.images)
    mask = None
    if body.mask is not None:
        mask = _load_picture(body.mask, config, mask=True)
        _check_mask(mask, inputs[0])
    return EditRequest(_edit_size(fields, inputs[0], output), inputs, mask, fidelity)


def input_image_tokens(width: int, height: int) -> int:
    """Input tokens for one input picture. [UNCONFIRMED] The tile rule of OpenAI's vision
    models: fit within 2048x2048, shrink so the short side is at most 768, then 65 tokens
    plus 129 per 512-pixel tile. Bigger pictures cost more, up to that ceiling.
    """
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return 65 + 129 * tiles


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


_LOG_LIMIT = 1000  # newest image requests (generations and edits) kept for /__dev/requests


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
    """What the request log keeps: never the Authorization header, so never the API key.

    A multipart body is not kept (an edit's entry lists its fields and pictures instead), and
    data URLs in a JSON body are shortened: megabytes of base64 have no place in the log.
    """
    headers = {k: v for k, v in flask.request.headers.items() if k.lower() != "authorization"}
    body: Any = None
    if flask.request.mimetype != "multipart/form-data":
        try:
            body = _shorten_data_urls(json.loads(flask.request.get_data(cache=True)))
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


def _shorten_data_urls(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > 80:
        return f"{value[:48]}...({len(value)} characters)"
    if isinstance(value, dict):
        return {k: _shorten_data_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten_data_urls(v) for v in value]
    return value


# ================================================================================================
# Image responses
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


def _usage(req: ImageRequest, input_image_tokens: int) -> dict[str, Any]:
    # About four characters per text token is the usual rule of thumb.
    text_tokens = max(1, math.ceil(len(req.prompt) / 4))
    image_tokens = picture_tokens(req.quality, req.width, req.height) * req.n
    input_tokens = text_tokens + input_image_tokens
    return {
        "input_tokens": input_tokens,
        "output_tokens": image_tokens,
        "total_tokens": input_tokens + image_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": input_image_tokens},
        "output_tokens_details": {"text_tokens": 0, "image_tokens": image_tokens},
    }


_Renderer: TypeAlias = Callable[[int], bytes]  # picture number -> encoded picture


def _encode(req: ImageRequest, img: Image.Image, opaque: Image.Image) -> bytes:
    if req.background == "transparent":
        img.putalpha(opaque)
    return encode_picture(img, req.output_format, req.output_compression)


def _render(req: ImageRequest, index: int) -> bytes:
    return _encode(req, *draw_scene(req.prompt, req.width, req.height, index))


def _render_edit(edit: EditRequest, index: int) -> bytes:
    req = edit.output
    img, opaque = draw_edit_scene(
        [i.picture for i in edit.inputs],
        req.prompt,
        req.width,
        req.height,
        index,
        mask=edit.mask.picture if edit.mask else None,
        fidelity=edit.input_fidelity,
    )
    return _encode(req, img, opaque)


def _images_payload(req: ImageRequest, datas: list[str], input_image_tokens: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": d} for d in datas],
        "background": req.background,
        "output_format": req.output_format,
        "quality": req.quality,
        "size": req.size,
        "usage": _usage(req, input_image_tokens),
    }
    if req.safety_identifier:
        payload["safety_identifier"] = req.safety_identifier
    return payload


def _generate(
    req: ImageRequest, fault: Fault | None, render: _Renderer, input_image_tokens: int
) -> flask.Response:
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
        datas = [base64.b64encode(render(i)).decode() for i in range(req.n)]
    return flask.jsonify(_images_payload(req, datas, input_image_tokens))


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
    _check_auth(state.config)
    req = parse_image_request(_json_body(), state.models(), state.today())
    return _answer(state, entry, req, lambda i: _render(req, i))


def _handle_edit(state: _State, entry: dict[str, Any]) -> flask.Response:
    with state.lock:  # /__dev/requests may be serialising the log right now
        entry.update(form=None, images=[], mask=None)
    _check_auth(state.config)
    body = _read_edit_body()
    with state.lock:
        entry["form"] = body.form
    edit = _parse_edit(body, state)
    with state.lock:
        entry["images"] = [i.log_view() for i in edit.inputs]
        entry["mask"] = edit.mask.log_view() if edit.mask else None
    tokens = sum(input_image_tokens(i.width, i.height) for i in edit.inputs)
    return _answer(state, entry, edit.output, lambda i: _render_edit(edit, i), tokens)


def _answer(
    state: _State,
    entry: dict[str, Any],
    req: ImageRequest,
    render: _Renderer,
    input_image_tokens: int = 0,
) -> flask.Response:
    """What generations and edits share once the request is valid: faults, the prompt's
    safety check, the simulated latency, then the pictures and the rate-limit headers.
    """
    config = state.config
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
    resp = _generate(req, fault, render, input_image_tokens)
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


def _logged_route(
    state: _State, handler: Callable[[dict[str, Any]], flask.Response]
) -> flask.Response:
    """Run an images handler with its entry in /__dev/requests, which gets its final status."""
    entry = _log_entry()
    with state.lock:
        state.requests.append(entry)
        del state.requests[:-_LOG_LIMIT]  # a long-running dev stack must not grow forever

    def done(status: int) -> None:
        with state.lock:  # /__dev/requests may be serialising the log right now
            entry["status"] = status

    return _api_route(lambda: handler(entry), done)


def create_app(config: OpenAIConfig | None = None) -> flask.Flask:
    """A Flask app serving the Images, Moderations and Models endpoints and /__dev/ controls."""
    state = _State(config or OpenAIConfig())
    app = flask.Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep OpenAI's field order

    @app.post("/v1/images/generations")
    def images_generations() -> flask.Response:
        return _logged_route(state, lambda entry: _handle_generation(state, entry))

    @app.post("/v1/images/edits")
    def images_edits() -> flask.Response:
        return _logged_route(state, lambda entry: _handle_edit(state, entry))

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
