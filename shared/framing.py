"""Lay the brand frame over a generated picture and encode the MMS JPEG.

The built-in frame is drawn at the picture's own size (square, landscape or portrait), so the
picture is never stretched: the frame covers a thin band at its edges and a wider band at the
bottom that carries the wordmark. Only those bands are composited, which is most of why this is
fast. A custom PNG frame (FRAME_PATH) is scaled to the picture and composited whole.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .errors import ProviderError

# Generous for every size the provider offers (max 3840x2160), small enough that a hostile
# "image" cannot make us allocate gigabytes: Pillow checks the header before decoding.
MAX_PIXELS = 16_777_216
MAX_EDGE = 8192
# Smaller than this is no picture we asked for, and too small to carry the frame.
MIN_EDGE = 64
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP"}

INK = (16, 24, 40)  # frame colour
GOLD = (232, 176, 75)  # the hairline and the dot
PAPER = (246, 241, 231)  # wordmark


@dataclass(frozen=True)
class Frame:
    """An RGBA overlay plus the boxes where it is not fully transparent."""

    overlay: Image.Image
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class FramedPicture:
    jpeg: bytes
    width: int
    height: int
    quality: int  # the JPEG quality it took to fit the byte limit


# Carrier-safe MMS: each step lowers the JPEG quality, then the size, until the bytes fit.
QUALITY_STEP = 10
LOWEST_QUALITY = 55
SHRINK = 0.8


def open_picture(data: bytes) -> Image.Image:
    """Decode the provider's bytes, refusing anything that is not a sane image."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in ACCEPTED_FORMATS:
            raise ValueError(f"unsupported format {image.format}")
        width, height = image.size
        if width * height > MAX_PIXELS or max(width, height) > MAX_EDGE:
            raise ValueError(f"picture too large: {width}x{height}")
        if min(width, height) < MIN_EDGE:
            raise ValueError(f"picture too small: {width}x{height}")
        image.load()
    except Exception as exc:
        # Decoders fed hostile bytes raise more than OSError/ValueError (a broken PNG chunk
        # stream raises SyntaxError, for one); whatever it is, the picture is unusable.
        raise ProviderError(
            "the provider's picture could not be read",
            retryable=False,
            detail=f"{type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    return image.convert("RGB") if image.mode != "RGB" else image


def frame_image(
    data: bytes,
    *,
    brand: str,
    quality: int = 85,
    frame_path: str | None = None,
    max_edge: int = 1536,
    max_bytes: int = 600_000,
) -> FramedPicture:
    """Frame the picture in `data` as a JPEG of at most `max_bytes` whose long edge is at most
    `max_edge`: the provider may make pictures up to 3840x2160, carriers take far less."""
    picture = fit_within(open_picture(data), max_edge)
    while True:
        framed = _framed(picture, brand, frame_path)
        for level in range(quality, LOWEST_QUALITY - 1, -QUALITY_STEP):
            jpeg = _jpeg(framed, level)
            if len(jpeg) <= max_bytes:
                return FramedPicture(jpeg, framed.width, framed.height, level)
        if min(picture.size) * SHRINK < MIN_EDGE:
            return FramedPicture(jpeg, framed.width, framed.height, level)
        picture = fit_within(picture, round(max(picture.size) * SHRINK))


def fit_within(picture: Image.Image, max_edge: int) -> Image.Image:
    """`picture` scaled down (never up) so its long edge is at most `max_edge`."""
    long_edge = max(picture.size)
    if long_edge <= max_edge:
        return picture
    scale = max_edge / long_edge
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    # reducing_gap: a fast box pre-shrink, then Lanczos; visually the same as Lanczos alone.
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _framed(picture: Image.Image, brand: str, frame_path: str | None) -> Image.Image:
    picture = picture.copy()
    frame = (
        custom_frame(frame_path, picture.size) if frame_path else brand_frame(picture.size, brand)
    )
    for box in frame.boxes:
        band = picture.crop(box).convert("RGBA")
        band.alpha_composite(frame.overlay.crop(box))
        picture.paste(band.convert("RGB"), box[:2])
    return picture


def _jpeg(picture: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    # Baseline JPEG: progressive + optimised tables save ~8% of bytes for 5x the encode time.
    picture.save(out, "JPEG", quality=quality)
    return out.getvalue()


@lru_cache(maxsize=8)
def brand_frame(size: tuple[int, int], brand: str) -> Frame:
    """Our own frame, drawn for `size`: an ink border, a gold hairline inside it, and the
    wordmark with a gold dot in the wider bottom band."""
    width, height = size
    short = min(width, height)
    edge = max(4, round(short * 0.028))
    bottom = max(edge * 2, round(short * 0.085))
    rule = max(1, round(short / 512))
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)

    ink = (*INK, 255)
    draw.rectangle((0, 0, width - 1, edge - 1), fill=ink)
    draw.rectangle((0, height - bottom, width - 1, height - 1), fill=ink)
    draw.rectangle((0, 0, edge - 1, height - 1), fill=ink)
    draw.rectangle((width - edge, 0, width - 1, height - 1), fill=ink)
    # Hairline just inside the border, on all four sides.
    inner = (edge, edge, width - edge - 1, height - bottom - 1)
    draw.rectangle(inner, outline=(*GOLD, 255), width=rule)

    text_size = max(8, round(bottom * 0.36))
    font = ImageFont.load_default(size=text_size)
    label = " ".join(brand.upper())  # letter-spaced wordmark
    left, top, right, lower = draw.textbbox((0, 0), label, font=font)
    text_w, text_h = right - left, lower - top
    middle = height - bottom / 2
    x = width - edge - text_w - left
    draw.text((x, middle - text_h / 2 - top), label, font=font, fill=(*PAPER, 255))
    radius = max(2, round(text_size * 0.28))
    dot_x = x - radius * 3
    draw.ellipse(
        (dot_x - radius, middle - radius, dot_x + radius, middle + radius), fill=(*GOLD, 255)
    )

    boxes = (
        (0, 0, width, edge + rule),
        (0, height - bottom - rule, width, height),
        (0, edge + rule, edge + rule, height - bottom - rule),
        (width - edge - rule, edge + rule, width, height - bottom - rule),
    )
    return Frame(overlay, boxes)


@lru_cache(maxsize=8)
def custom_frame(path: str, size: tuple[int, int]) -> Frame:
    """A user's PNG frame, scaled to the picture (the frame may stretch; the picture never)."""
    with Image.open(Path(path)) as source:
        overlay = source.convert("RGBA")
    if overlay.size != size:
        overlay = overlay.resize(size, Image.Resampling.LANCZOS)
    box = overlay.getchannel("A").getbbox()
    return Frame(overlay, (box,) if box else ())
