from __future__ import annotations

import io
import random
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from devstack.picture_drawing import draw_picture
from shared.errors import ProviderError
from shared.framing import (
    FRAME_CACHE_BYTES,
    INK,
    brand_frame,
    brand_overlay,
    clear_frame_cache,
    custom_frame,
    frame_cache_bytes,
    frame_image,
)
from shared.jpeg_work import MAX_JPEG_SCANS


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
    # The frame drawn whole, not `frame.overlay`: that one is put back together from the bands.
    overlay = brand_overlay((256, 384), "Picture Line")
    frame = brand_frame((256, 384), "Picture Line")
    alpha = overlay.getchannel("A")
    mask = Image.new("L", overlay.size, 0)
    for box in frame.boxes:
        mask.paste(255, box)
    uncovered = Image.composite(
        alpha, Image.new("L", alpha.size, 0), Image.eval(mask, lambda v: 255 - v)
    )
    assert uncovered.getbbox() is None
    assert frame.overlay.tobytes() == overlay.tobytes()


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


# --- the picture we asked for ---------------------------------------------------------------------


def test_frame_image_takes_a_picture_of_exactly_the_size_asked() -> None:
    framed = frame_image(_picture(1536, 1024), brand="x", expected_size=(1536, 1024))
    assert (framed.width, framed.height) == (1536, 1024)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_picture(1024, 1536), id="portrait"),
        pytest.param(_picture(1536, 1008), id="16px-short"),
        pytest.param(_picture(1535, 1024, "PNG"), id="1px-short-png"),
        # Refused before decoding: the PNG's IDAT holds nothing.
        pytest.param(_png_header_only(4096, 4096), id="4096-header-only"),
    ],
)
def test_frame_image_refuses_a_picture_of_another_size_than_asked(data: bytes) -> None:
    with pytest.raises(ProviderError) as refused:
        frame_image(data, brand="x", expected_size=(1536, 1024))
    assert refused.value.retryable is False
    assert refused.value.detail and "not the 1536x1024 we asked for" in refused.value.detail


# --- JPEG scans -----------------------------------------------------------------------------------


def _jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def _flat(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """One colour: the most compressible picture, whose scans carry the fewest bytes."""
    return Image.new("RGB", size, (120, 90, 200)).convert(mode)


def _with_last_scan_repeated(data: bytes, copies: int) -> bytes:
    """`data` (a JPEG from Pillow) with its last scan, SOS header and coded data, repeated
    `copies` more times before EOI: each copy is a few bytes and a full pass of the decoder.
    FF DA cannot occur inside coded data (an FF there is followed by 00 or a restart code), so
    the last one in the file starts the last scan."""
    last_scan = data.rindex(b"\xff\xda")
    assert data.endswith(b"\xff\xd9")
    return data[:-2] + data[last_scan:-2] * copies + b"\xff\xd9"


def _scan_bomb(size: tuple[int, int] = (1024, 1024), copies: int = 1000) -> bytes:
    return _with_last_scan_repeated(_jpeg(_flat(size), progressive=True, quality=80), copies)


def test_the_scan_bomb_is_a_jpeg_pillow_decodes() -> None:
    # What the refusals below refuse is a real JPEG, not garbage: at 1024x1024 and 1000 copies
    # Pillow decodes it in 0.6 s; at 4096x4096 each copy (33 bytes) costs it about 11 ms, and
    # 1 MB of them kept open_picture busy for 273 s before the marker walk.
    with Image.open(io.BytesIO(_scan_bomb((256, 256), 200))) as bomb:
        bomb.load()
        assert bomb.size == (256, 256)


def test_frame_image_refuses_a_progressive_scan_bomb_before_decoding() -> None:
    with pytest.raises(ProviderError) as refused:
        frame_image(_scan_bomb(), brand="x")
    assert refused.value.retryable is False
    assert refused.value.detail == f"ValueError: JPEG has more than {MAX_JPEG_SCANS} scans"


@pytest.mark.parametrize(
    ("copies", "framed"), [(MAX_JPEG_SCANS - 10, True), (MAX_JPEG_SCANS - 9, False)]
)
def test_frame_image_takes_up_to_the_scan_limit(copies: int, framed: bool) -> None:
    # A gradient: its scans carry enough data for the ratio check; only the count decides.
    gradient = Image.linear_gradient("L").resize((256, 256))
    image = Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(180)))
    data = _with_last_scan_repeated(_jpeg(image, progressive=True), copies)  # 10 scans + copies
    if framed:
        assert frame_image(data, brand="x").width == 256
    else:
        with pytest.raises(ProviderError, match="could not be read"):
            frame_image(data, brand="x")


def test_frame_image_refuses_a_jpeg_whose_scans_carry_next_to_no_data() -> None:
    # 50 scans, within the count limit, but 40 of them are 2 bytes of coded data each: about
    # 5,600 pixels per coded byte per scan, where the same picture unrepeated has 1,100.
    with pytest.raises(ProviderError) as refused:
        frame_image(_scan_bomb(copies=40), brand="x")
    assert refused.value.retryable is False
    assert refused.value.detail and re.fullmatch(
        r"ValueError: JPEG has 50 scans of 1024x1024 in \d+ coded bytes,"
        r" more than 4096 pixels per coded byte per scan",
        refused.value.detail,
    )


def _metadata_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0131] = "an encoder"  # Software
    icc = b"\xff\xda\xff\xd9" * 20_000  # marker-like bytes inside a segment are the segment's
    return _jpeg(_flat((320, 240)), exif=exif.tobytes(), icc_profile=icc, comment=b"\xff\xd9")


def _with_fill_bytes(data: bytes) -> bytes:
    """Any number of FF fill bytes may come before a marker [ITU T.81 B.1.1.2]."""
    tables = data.index(b"\xff\xdb")
    return data[:tables] + b"\xff" * 7 + data[tables:]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_picture(1024, 768), id="baseline"),
        pytest.param(_jpeg(_flat((1024, 768))), id="baseline-flat"),
        pytest.param(_jpeg(_flat((1024, 768)), quality=80), id="flat-q80"),
        pytest.param(_jpeg(draw_picture("a crab", 1024, 1024), quality=80), id="provider-q80"),
        pytest.param(_picture(1024, 768, "JPEG") + b"trailing bytes", id="after-eoi"),
        pytest.param(_jpeg(_flat((1024, 768)), progressive=True), id="progressive-flat"),
        pytest.param(_jpeg(_flat((1024, 768), "L"), progressive=True), id="progressive-grey"),
        pytest.param(_jpeg(_flat((64, 64)), progressive=True, optimize=True), id="small"),
        pytest.param(_jpeg(_flat((1024, 768)), progressive=True, subsampling=0), id="4:4:4"),
        pytest.param(_noisy(512, 512), id="noise"),
        pytest.param(_jpeg(_flat((512, 512)), restart_marker_blocks=1), id="restarts"),
        pytest.param(_metadata_jpeg(), id="metadata"),
        pytest.param(_with_fill_bytes(_picture(512, 512)), id="fill-bytes"),
    ],
)
def test_frame_image_takes_the_jpegs_encoders_write(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as original:
        size = original.size
    framed = frame_image(data, brand="x")
    assert (framed.width, framed.height) == size


def _baseline_parts() -> tuple[bytes, bytes, bytes]:
    """A small baseline JPEG as (everything before its SOS, the scan, EOI)."""
    data = _jpeg(_flat((64, 64)))
    scan = data.index(b"\xff\xda")
    return data[:scan], data[scan:-2], data[-2:]


_HEAD, _SCAN, _EOI = _baseline_parts()
_TABLES = _HEAD.index(b"\xff\xdb")
_JUNK = _HEAD[:_TABLES] + b"junk" + _HEAD[_TABLES:]  # Pillow skips it; libjpeg warns


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        pytest.param(_HEAD + _SCAN, "scan 1 is cut short", id="no-eoi"),
        pytest.param(_HEAD + _SCAN[:-1] + b"\xff", "scan 1 is cut short", id="cut-at-ff"),
        pytest.param(_JUNK + _SCAN + _EOI, "no marker at", id="junk"),
        pytest.param(_HEAD + _SCAN + b"\xff\x02" + _EOI, "stray marker 0x02", id="reserved"),
        pytest.param(_HEAD + _SCAN + b"\xff\xd8" + _EOI, "stray marker 0xd8", id="second-soi"),
        # Segments after the first scan: Pillow's own header parse stops at it.
        pytest.param(_HEAD + _SCAN + b"\xff\xfe\x00\x01" + _EOI, "cut short", id="length-1"),
        pytest.param(_HEAD + _SCAN + b"\xff\xfe\xff\xff" + _EOI, "cut short", id="too-long"),
        pytest.param(
            _HEAD + _SCAN + _HEAD[_HEAD.index(b"\xff\xc0") :] + _SCAN + _EOI,
            "two frame headers",
            id="two-frames",
        ),
        pytest.param(
            _HEAD.replace(b"\xff\xc0", b"\xff\xc9", 1) + _SCAN + _EOI,
            "coding SOF9",
            id="arithmetic",
        ),
        pytest.param(
            _HEAD[:2] + b"\xff\xfe\x00\x02" * 1100 + _HEAD[2:] + _SCAN + _EOI,
            "more than 1024 segments",
            id="empty-segments",
        ),
    ],
)
def test_frame_image_refuses_a_broken_jpeg_marker_stream(data: bytes, detail: str) -> None:
    with pytest.raises(ProviderError) as refused:
        frame_image(data, brand="x")
    assert refused.value.retryable is False
    assert refused.value.detail and detail in refused.value.detail


def test_frame_image_refuses_every_cut_of_a_progressive_jpeg() -> None:
    data = _jpeg(draw_picture("a crab", 64, 64), progressive=True)
    first_scan = data.index(b"\xff\xda")
    for end in range(len(data)):
        with pytest.raises(ProviderError) as refused:
            frame_image(data[:end], brand="x")
        assert refused.value.retryable is False
        if end > first_scan + 16:
            # Pillow read the header; the marker walk refused the rest before any decoding.
            assert refused.value.detail and "JPEG" in refused.value.detail, end


# --- the frame cache ------------------------------------------------------------------------------


def _frame_png(tmp_path: Path) -> str:
    frame = Image.new("RGBA", (100, 100), (255, 0, 255, 255))
    ImageDraw.Draw(frame).rectangle((10, 10, 89, 89), fill=(0, 0, 0, 0))
    path = tmp_path / "frame.png"
    frame.save(path)
    return str(path)


def test_the_frame_cache_keeps_the_border_bands_not_the_pictures() -> None:
    # Eight pictures of slightly different sizes, 1536x1536 down to 1536x1424. A whole RGBA
    # overlay per size (the old lru_cache(8)) held 72,744,960 bytes (69.4 MiB); their bands
    # hold 12,239,464 (11.7 MiB), the border's share of each picture.
    sizes = [(1536, 1536 - 16 * step) for step in range(8)]
    clear_frame_cache()
    for size in sizes:
        frame_image(_jpeg(_flat(size)), brand="PICTURE LINE")
    held = frame_cache_bytes()
    assert held < 16 * 1024 * 1024
    # And every one of them is still cached: asking again makes nothing new.
    frames = [brand_frame(size, "PICTURE LINE") for size in sizes]
    assert frame_cache_bytes() == held == sum(frame.nbytes for frame in frames)
    assert all(
        brand_frame(size, "PICTURE LINE") is frame
        for size, frame in zip(sizes, frames, strict=True)
    )


def test_the_frame_cache_stays_within_its_budget_for_custom_frames(tmp_path: Path) -> None:
    # A custom frame is composited whole, 9 MiB at 1536x1536: eight sizes would be 72 MiB.
    path = _frame_png(tmp_path)
    clear_frame_cache()
    for step in range(8):
        custom_frame(path, (1536, 1536 - 16 * step))
        assert 0 < frame_cache_bytes() <= FRAME_CACHE_BYTES


@pytest.mark.parametrize("size", [(1024, 1024), (1536, 1024), (777, 1299)])
@pytest.mark.parametrize("custom", [False, True])
def test_frame_image_composites_exactly_the_whole_overlay(
    tmp_path: Path, size: tuple[int, int], custom: bool
) -> None:
    source = _picture(*size)
    path = _frame_png(tmp_path) if custom else None
    framed = frame_image(source, brand="Picture Line", frame_path=path, max_bytes=10_000_000)
    if path:
        with Image.open(path) as png:
            overlay = png.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
    else:
        overlay = brand_overlay(size, "Picture Line")
    with Image.open(io.BytesIO(source)) as original:
        whole = original.convert("RGBA")
    whole.alpha_composite(overlay)
    assert framed.jpeg == _jpeg(whole.convert("RGB"), quality=85)
