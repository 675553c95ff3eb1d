from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from shared.errors import ProviderError
from shared.framing import INK, brand_frame, frame_image


def _picture(width: int, height: int, fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", (width, height), (40, 160, 90))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 64):
        draw.line((x, 0, width - x, height), fill=(200, 60, 30), width=5)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _close(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


@pytest.mark.parametrize("size", [(1024, 1024), (1536, 1024), (1024, 1536)])
def test_frame_image_keeps_the_size_and_frames_the_edges(size: tuple[int, int]) -> None:
    source = _picture(*size)
    framed = frame_image(source, brand="Picture Line")
    out = Image.open(io.BytesIO(framed.jpeg))
    assert out.format == "JPEG"
    assert out.size == size == (framed.width, framed.height)
    width, height = size
    for point in [(2, 2), (width - 3, height // 2), (width // 2, height - 3), (2, height - 3)]:
        assert _close(out.getpixel(point), INK), point  # type: ignore[arg-type]
    # The middle of the picture is the picture, not the frame: same pixels as the source.
    original = Image.open(io.BytesIO(source)).convert("RGB")
    centre = (width // 2 + 7, height // 2 + 3)
    assert _close(out.getpixel(centre), original.getpixel(centre), 40)  # type: ignore[arg-type]


def test_frame_image_output_is_small_enough_for_mms() -> None:
    framed = frame_image(_picture(1024, 1024), brand="Picture Line")
    assert len(framed.jpeg) < 300_000


def test_frame_image_reads_png_and_webp_too() -> None:
    for fmt in ("PNG", "WEBP"):
        assert frame_image(_picture(1024, 1024, fmt), brand="x").width == 1024


def test_brand_frame_band_boxes_cover_every_opaque_pixel() -> None:
    frame = brand_frame((256, 384), "Picture Line")
    alpha = frame.overlay.getchannel("A")
    mask = Image.new("L", frame.overlay.size, 0)
    for box in frame.boxes:
        mask.paste(255, box)
    uncovered = Image.composite(
        alpha, Image.new("L", alpha.size, 0), Image.eval(mask, lambda v: 255 - v)
    )
    assert uncovered.getbbox() is None


def test_frame_image_uses_a_custom_png_frame(tmp_path: Path) -> None:
    frame = Image.new("RGBA", (100, 100), (255, 0, 255, 255))
    ImageDraw.Draw(frame).rectangle((10, 10, 89, 89), fill=(0, 0, 0, 0))
    path = tmp_path / "frame.png"
    frame.save(path)
    framed = frame_image(_picture(1024, 1536), brand="unused", frame_path=str(path))
    out = Image.open(io.BytesIO(framed.jpeg))
    assert out.size == (1024, 1536)
    assert _close(out.getpixel((5, 5)), (255, 0, 255))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image",
        b"GIF89a\x01\x00\x01\x00",
        _picture(64, 64, "BMP"),
        _picture(2048, 2048)[:5000],
    ],
)
def test_frame_image_refuses_what_is_not_a_usable_picture(data: bytes) -> None:
    with pytest.raises(ProviderError):
        frame_image(data, brand="x")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def test_frame_image_refuses_a_decompression_bomb_before_decoding() -> None:
    with pytest.raises(ProviderError, match="could not be read"):
        frame_image(_png_header_only(60_000, 60_000), brand="x")


def _noisy(width: int, height: int) -> bytes:
    """A picture JPEG cannot squeeze: random noise, the worst case for the byte limit."""
    image = Image.frombytes(
        "RGB", (width, height), bytes(random.Random(7).randbytes(width * height * 3))
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "expected"),
    [((3840, 2160), (1536, 864)), ((2160, 3840), (864, 1536)), ((1024, 1024), (1024, 1024))],
)
def test_a_large_picture_is_scaled_to_the_long_edge_limit(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    framed = frame_image(_picture(*size), brand="PICTURE LINE", max_edge=1536)
    assert (framed.width, framed.height) == expected
    assert Image.open(io.BytesIO(framed.jpeg)).size == expected


def test_the_mms_never_exceeds_the_byte_limit_even_for_noise() -> None:
    data = _noisy(1536, 1024)
    framed = frame_image(data, brand="PICTURE LINE", max_bytes=300_000)
    assert len(framed.jpeg) <= 300_000
    # It first gave up JPEG quality, then pixels.
    assert framed.quality < 85
    unlimited = frame_image(data, brand="PICTURE LINE", max_bytes=5_000_000)
    assert unlimited.quality == 85 and unlimited.width == 1536
