"""Lay the brand frame over a generated picture and encode the MMS JPEG.

The built-in frame is drawn at the picture's own size (square, landscape or portrait), so the
picture is never stretched: the frame covers a thin band at its edges and a wider band at the
bottom that carries the wordmark. Only those bands are composited, which is most of why this is
fast. A custom PNG frame (FRAME_PATH) is scaled to the picture and composited whole.

Frames are cached per picture size as their bands only, within FRAME_CACHE_BYTES: an overlay
the size of the picture would pin a full RGBA picture per size for the instance's life.

A JPEG's marker stream is walked before it is decoded (see jpeg_work.py): a progressive JPEG
can repeat a scan that costs a few bytes and a full pass of the decoder, thousands of times.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .errors import ProviderError
from .jpeg_work import check_jpeg_work

# Generous for every size the provider offers (max 3840x2160), small enough that a hostile
# "image" cannot make us allocate gigabytes: Pillow checks the header before decoding.
MAX_PIXELS = 16_777_216
MAX_EDGE = 8192
# Smaller than this is no picture we asked for, and too small to carry the frame.
MIN_EDGE = 64
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP"}

# The border bands of our frame take about 1 MiB at 1536x1024 and 11 MiB at 4096x4096; a custom
# frame composited whole takes its picture's size x 4 bytes. LRU within this budget.
FRAME_CACHE_BYTES = 32 * 1024 * 1024

INK = (16, 24, 40)  # frame colour
GOLD = (232, 176, 75)  # the hairline and the dot
PAPER = (246, 241, 231)  # wordmark


Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Band:
    """A part of a frame: where it goes on the picture, and its RGBA pixels."""

    box: Box
    image: Image.Image


@dataclass(frozen=True)
class Frame:
    """A frame of `size` kept as the bands where it is not fully transparent: what a cached
    frame costs is its border, not the picture."""

    size: tuple[int, int]
    bands: tuple[Band, ...]

    @property
    def boxes(self) -> tuple[Box, ...]:
        return tuple(band.box for band in self.bands)

    @property
    def nbytes(self) -> int:
        return sum(band.image.width * band.image.height * 4 for band in self.bands)

    @property
    def overlay(self) -> Image.Image:
        """The whole RGBA overlay, assembled on each call (nothing keeps it)."""
        overlay = Image.new("RGBA", self.size, (0, 0, 0, 0))
        for band in self.bands:
            overlay.paste(band.image, band.box[:2])
        return overlay


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


def open_picture(data: bytes, *, expected_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode the provider's bytes, refusing anything that is not a sane image, or not of
    `expected_size` when that is given. Every check runs before the decoder does."""
    try:
        image = Image.open(io.BytesIO(data))
        _check_header(image, expected_size)
        if image.format == "JPEG":
            check_jpeg_work(data, image.size)
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


def _check_header(image: Image.Image, expected_size: tuple[int, int] | None) -> None:
    if image.format not in ACCEPTED_FORMATS:
        raise ValueError(f"unsupported format {image.format}")
    width, height = image.size
    # GPT image models answer exactly the WxH asked [SDK image_generate_params.py]: any other
    # size is not our picture, and a larger one only costs decoding.
    if expected_size is not None and image.size != tuple(expected_size):
        asked = "x".join(map(str, expected_size))
        raise ValueError(f"picture is {width}x{height}, not the {asked} we asked for")
    if width * height > MAX_PIXELS or max(width, height) > MAX_EDGE:
        raise ValueError(f"picture too large: {width}x{height}")
    if min(width, height) < MIN_EDGE:
        raise ValueError(f"picture too small: {width}x{height}")


def frame_image(
    data: bytes,
    *,
    brand: str,
    quality: int = 85,
    frame_path: str | None = None,
    max_edge: int = 1536,
    max_bytes: int = 600_000,
    expected_size: tuple[int, int] | None = None,
) -> FramedPicture:
    """Frame the picture in `data` as a JPEG of at most `max_bytes` whose long edge is at most
    `max_edge`: the provider may make pictures up to 3840x2160, carriers take far less.
    With `expected_size` (the size asked of the provider), a picture of any other is refused."""
    edge = max_edge
    while True:
        # Framed in place; the rare picture that must shrink further is decoded again.
        picture = fit_within(open_picture(data, expected_size=expected_size), edge)
        framed = _framed(picture, brand, frame_path)
        for level in range(quality, LOWEST_QUALITY - 1, -QUALITY_STEP):
            jpeg = _jpeg(framed, level)
            if len(jpeg) <= max_bytes:
                return FramedPicture(jpeg, framed.width, framed.height, level)
        if min(framed.size) * SHRINK < MIN_EDGE:
            return FramedPicture(jpeg, framed.width, framed.height, level)
        edge = round(max(framed.size) * SHRINK)


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
    """`picture` with the frame laid over its border bands, in place."""
    frame = (
        custom_frame(frame_path, picture.size) if frame_path else brand_frame(picture.size, brand)
    )
    for band in frame.bands:
        patch = picture.crop(band.box).convert("RGBA")
        patch.alpha_composite(band.image)
        picture.paste(patch.convert("RGB"), band.box[:2])
    return picture


def _jpeg(picture: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    # Baseline JPEG: progressive + optimised tables save ~8% of bytes for 5x the encode time.
    picture.save(out, "JPEG", quality=quality)
    return out.getvalue()


class _FrameCache:
    """Frames by key, the least recently used dropped once they hold more than `budget` bytes
    (a frame larger than the budget is made, used and not kept). functools.lru_cache bounds
    the number of entries, not their bytes, and cannot say what it holds."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._frames: OrderedDict[Hashable, Frame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Frame]) -> Frame:
        with self._lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
                return frame
        frame = make()  # unlocked: two threads may make the same frame; either copy will do
        with self._lock:
            if key not in self._frames:
                self._frames[key] = frame
                self._bytes += frame.nbytes
            while self._bytes > self._budget:
                _, dropped = self._frames.popitem(last=False)
                self._bytes -= dropped.nbytes
        return frame

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0


_FRAMES = _FrameCache(FRAME_CACHE_BYTES)


def frame_cache_bytes() -> int:
    """The bytes of pixels the frame cache holds now (width x height x 4 over every band)."""
    return _FRAMES.nbytes


def clear_frame_cache() -> None:
    _FRAMES.clear()


def brand_frame(size: tuple[int, int], brand: str) -> Frame:
    """Our own frame for `size` (cached): its four border bands, cut from `brand_overlay`."""
    return _FRAMES.get(
        ("brand", size, brand), lambda: _frame_of(brand_overlay(size, brand), _brand_boxes(size))
    )


def _brand_measures(size: tuple[int, int]) -> tuple[int, int, int]:
    """(border, bottom band, hairline) widths in pixels for a picture of `size`."""
    short = min(size)
    edge = max(4, round(short * 0.028))
    return edge, max(edge * 2, round(short * 0.085)), max(1, round(short / 512))


def _brand_boxes(size: tuple[int, int]) -> tuple[Box, ...]:
    """The top, bottom, left and right bands: all of our frame that is not transparent."""
    width, height = size
    edge, bottom, rule = _brand_measures(size)
    return (
        (0, 0, width, edge + rule),
        (0, height - bottom - rule, width, height),
        (0, edge + rule, edge + rule, height - bottom - rule),
        (width - edge - rule, edge + rule, width, height - bottom - rule),
    )


def brand_overlay(size: tuple[int, int], brand: str) -> Image.Image:
    """Our own frame drawn whole for `size` (not cached): an ink border, a gold hairline inside
    it, and the wordmark with a gold dot in the wider bottom band."""
    width, height = size
    edge, bottom, rule = _brand_measures(size)
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
    return overlay


def custom_frame(path: str, size: tuple[int, int]) -> Frame:
    """A user's PNG frame, scaled to the picture (the frame may stretch; the picture never).
    Cached per size: a deployment sees one or a few sizes, and scaling an RGBA frame to
    1536x1024 costs about 50 ms, as much as the rest of the framing."""
    return _FRAMES.get(("custom", path, size), lambda: _scaled_frame(path, size))


def _scaled_frame(path: str, size: tuple[int, int]) -> Frame:
    with Image.open(Path(path)) as source:
        overlay = source.convert("RGBA")
    if overlay.size != size:
        overlay = overlay.resize(size, Image.Resampling.LANCZOS)
    box = overlay.getchannel("A").getbbox()
    return _frame_of(overlay, (box,) if box else ())


def _frame_of(overlay: Image.Image, boxes: tuple[Box, ...]) -> Frame:
    """The frame made of `overlay`'s `boxes`, which must hold all its non-transparent pixels;
    the overlay itself is not kept."""
    return Frame(overlay.size, tuple(Band(box, overlay.crop(box)) for box in boxes))
