"""What we know about OpenAI's GPT image models: which sizes and qualities each takes, which
are gone, what a picture costs, and how large its answer is. Pure data and pure functions.

Sources (see ../shared/reference/real-account-2026-12.md §1 and the openai SDK 3.54.0 types):
- [DOC deprecations] gpt-image-1.5, gpt-image-1-mini and chatgpt-image-latest shut down on
  2026-12-01, gpt-image-1 on 2026-10-23, DALL·E 2/3 on 2026-05-12; image models get at least
  three months' notice.
- [SDK image_generate_params.py] the gpt-image-2 family takes any WxH in multiples of 16, aspect
  between 1:3 and 3:1, up to 3840x2160; every GPT image model takes the three classic sizes;
  xhigh and max quality are named for the 2.5 models. The 2.6 models are not named in either
  doc: we treat them like 2.5 [UNCONFIRMED], so a deployment that wants certainty keeps a
  classic size and low/medium/high, which every model takes.
- [3P] gpt-image-2 (and 2.5/2.6, reported) bill $5 per 1M text-input tokens, $8 per 1M
  image-input tokens and $30 per 1M image-output tokens; low ≈ $0.006, medium ≈ $0.053 and
  high ≈ $0.211 for a 1024x1024 picture.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, cast

Quality = Literal["low", "medium", "high", "xhigh", "max", "auto"]

CLASSIC_SIZES = ("1024x1024", "1536x1024", "1024x1536")
MAX_LONG_EDGE, MAX_SHORT_EDGE = 3840, 2160
SIZE_STEP = 16
MAX_ASPECT = 3.0
# The pixel floor for a non-classic size (the models' "pixel limits") [UNCONFIRMED].
MIN_PIXELS = 655_360
BASE_QUALITIES = ("low", "medium", "high", "auto")
EXTRA_QUALITIES = ("xhigh", "max")
_SIZE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")

# Models that were shut down, with what OpenAI recommends instead [DOC deprecations].
RETIRED_MODELS = {
    "gpt-image-1.5": "gpt-image-2.6-flare",
    "gpt-image-1.5-2025-12-16": "gpt-image-2.6-flare",
    "gpt-image-1-mini": "gpt-image-2.6-flare",
    "chatgpt-image-latest": "gpt-image-2.6-sunburst",
    "gpt-image-1": "gpt-image-2.6-sunburst",
    "dall-e-2": "gpt-image-2.6-flare",
    "dall-e-3": "gpt-image-2.6-sunburst",
}


def takes_any_size(model: str) -> bool:
    """The gpt-image-2 family (2, 2.5, 2.6 and their snapshots) takes any WxH."""
    return model == "gpt-image-2" or model.startswith(("gpt-image-2-", "gpt-image-2."))


def qualities_for(model: str) -> tuple[str, ...]:
    if model.startswith(("gpt-image-2.5-", "gpt-image-2.6-")):
        return BASE_QUALITIES + EXTRA_QUALITIES
    return BASE_QUALITIES


def parse_quality(model: str, text: str) -> Quality | None:
    """`text` as a quality `model` takes, or None."""
    return cast(Quality, text) if text in qualities_for(model) else None


def parse_size(size: str) -> tuple[int, int] | None:
    match = _SIZE.match(size)
    return (int(match.group(1)), int(match.group(2))) if match else None


def size_problem(model: str, size: str) -> str | None:
    """Why `model` cannot make `size`, or None if it can."""
    if size in CLASSIC_SIZES:
        return None
    if not takes_any_size(model):
        return f"{model} makes only {', '.join(CLASSIC_SIZES)}"
    dimensions = parse_size(size)
    if dimensions is None:
        return "it must be WIDTHxHEIGHT, e.g. 1536x864"
    width, height = dimensions
    if width % SIZE_STEP or height % SIZE_STEP:
        return f"width and height must be multiples of {SIZE_STEP}"
    if max(width, height) > MAX_LONG_EDGE or min(width, height) > MAX_SHORT_EDGE:
        return f"the largest is {MAX_LONG_EDGE}x{MAX_SHORT_EDGE}"
    if max(width, height) / min(width, height) > MAX_ASPECT:
        return "the sides may differ by at most 3:1"
    if width * height < MIN_PIXELS:
        return f"it must have at least {MIN_PIXELS} pixels"
    return None


def pixels(size: str) -> int:
    width, height = parse_size(size) or (1024, 1024)
    return width * height


# --- what a picture costs ----------------------------------------------------------------


@dataclass(frozen=True)
class TokenPrices:
    """USD per one million tokens."""

    text_input: float
    image_input: float
    image_output: float

    @classmethod
    def parse(cls, text: str) -> TokenPrices:
        """ "5,8,30" -> TokenPrices(5, 8, 30); raises ValueError."""
        parts = [float(part) for part in text.split(",")]
        if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts):
            raise ValueError("three non-negative numbers: text input, image input, image output")
        return cls(*parts)


# [3P] the 2.x rates; every current model is in that family.
GPT_IMAGE_2_PRICES = TokenPrices(text_input=5.0, image_input=8.0, image_output=30.0)
# Output tokens for a 1024x1024 picture, from the [3P] prices above at $30 per 1M; xhigh and
# max are our guesses (twice the tier below) [UNCONFIRMED]. `auto` is priced as medium.
OUTPUT_TOKENS_1024 = {"low": 200, "medium": 1770, "high": 7030, "xhigh": 14060, "max": 28120}
TYPICAL_PROMPT_TOKENS = 60


def estimated_image_cost(size: str, quality: str, prices: TokenPrices) -> float:
    """What one picture should cost before it is made, for the daily budget."""
    tokens = OUTPUT_TOKENS_1024.get(quality, OUTPUT_TOKENS_1024["medium"])
    scaled = tokens * pixels(size) / (1024 * 1024)
    return (TYPICAL_PROMPT_TOKENS * prices.text_input + scaled * prices.image_output) / 1e6


def image_cost(
    input_tokens: int | None,
    output_tokens: int | None,
    prices: TokenPrices,
    input_image_tokens: int | None = None,
) -> float:
    """What one picture did cost, from the `usage` of the provider's answer. An edit's input
    pictures are part of `input_tokens` and billed at the image-input rate [3P]."""
    images = min(input_image_tokens or 0, input_tokens or 0)
    text = ((input_tokens or 0) - images) * prices.text_input + images * prices.image_input
    return (text + (output_tokens or 0) * prices.image_output) / 1e6


# What one input picture costs an edit, for the estimate: OpenAI bills input pictures by tiles
# of their pixels; a 1536-pixel photo comes to about this many tokens [UNCONFIRMED, 3P].
TYPICAL_INPUT_IMAGE_TOKENS = 1_600


def estimated_edit_cost(size: str, quality: str, prices: TokenPrices) -> float:
    """What an edit of one picture should cost: a new picture, plus its input picture."""
    input_image = TYPICAL_INPUT_IMAGE_TOKENS * prices.image_input / 1e6
    return estimated_image_cost(size, quality, prices) + input_image


# --- how large the answer is -------------------------------------------------------------

# JPEG bits per pixel by `output_compression`, for a detailed picture. Our estimates from
# Pillow on photographic content, kept on the high side so the check below errs safe
# [UNCONFIRMED for OpenAI's encoder].
_BITS_PER_PIXEL = ((50, 1.0), (60, 1.2), (70, 1.5), (80, 2.0), (85, 2.4), (90, 3.0), (95, 4.2))
_FULL_QUALITY_BPP = 7.0
# Lower rendering quality draws less detail, which JPEG stores in fewer bytes.
_DETAIL = {"low": 0.75, "medium": 0.9}
# The callback is base64 (QStash) of JSON holding base64 (OpenAI): 16/9 of the JPEG, plus the
# echoed publish (sourceBody, sourceHeader) [DOC callbacks; real-account note §4].
CALLBACK_FACTOR = 16 / 9
CALLBACK_OVERHEAD_BYTES = 8_000
LOWEST_COMPRESSION = 50


def _bits_per_pixel(compression: int) -> float:
    for level, bpp in _BITS_PER_PIXEL:
        if compression <= level:
            return bpp
    return _FULL_QUALITY_BPP


def estimated_jpeg_bytes(size: str, quality: str, compression: int) -> int:
    detail = _DETAIL.get(quality, 1.0)
    return round(pixels(size) * _bits_per_pixel(compression) / 8 * detail)


def estimated_callback_bytes(size: str, quality: str, compression: int) -> int:
    jpeg = estimated_jpeg_bytes(size, quality, compression)
    return round(jpeg * CALLBACK_FACTOR) + CALLBACK_OVERHEAD_BYTES


def highest_fitting_compression(size: str, quality: str, limit_bytes: int) -> int | None:
    """The highest `output_compression` whose callback fits `limit_bytes`, or None."""
    for compression in range(100, LOWEST_COMPRESSION - 1, -5):
        if estimated_callback_bytes(size, quality, compression) <= limit_bytes:
            return compression
    return None
