"""How much work a JPEG will cost to decode, read from its marker stream without decoding it.

A progressive JPEG can repeat a scan that costs a few bytes and a full pass of the decoder,
thousands of times: a 1 MB picture within every pixel limit then keeps Pillow busy for
minutes. Pure functions; ValueError says why a JPEG is refused.
"""

from __future__ import annotations

import re

# A JPEG scan costs the decoder a pass over the picture however few bytes it carries.
# Baseline JPEG has 1 scan; libjpeg's progressive script (what Pillow writes) has 10, 6 for
# grey. djpeg and jpegtran take `-maxscans N` against this very attack; 64 is six times the
# progressive script, and alone bounds a picture of MAX_PIXELS to about 0.9 s of decoding.
MAX_JPEG_SCANS = 64
# Each scan must bring coded data in proportion to the picture it passes over. The flattest
# picture libjpeg writes (one colour, progressive) has 1 coded byte per 1705 pixels per scan,
# 1534 in grey: every 8x8 block pays at least a bit for its DC in the first scan and one in
# its refinement. Photos and baseline JPEGs have 1 per 2 to 85. A bomb's copies carry about
# nothing: at 4096x4096, 64 scans would need 260 KB of coded data to pass.
MAX_PIXEL_SCANS_PER_CODED_BYTE = 4096
# An encoder writes a few dozen segments (tables, APPn metadata, up to 255 ICC chunks); the
# cap keeps the walk over a hostile stream of empty segments short.
MAX_JPEG_SEGMENTS = 1024


def check_jpeg_work(data: bytes, size: tuple[int, int]) -> None:
    """Refuse a JPEG whose scans would keep the decoder busy out of proportion to its bytes."""
    scans, coded = jpeg_scans(data)
    pixels = size[0] * size[1]
    if scans * pixels > coded * MAX_PIXEL_SCANS_PER_CODED_BYTE:
        raise ValueError(
            f"JPEG has {scans} scans of {size[0]}x{size[1]} in {coded} coded bytes, more than"
            f" {MAX_PIXEL_SCANS_PER_CODED_BYTE} pixels per coded byte per scan"
        )


# JPEG markers [ITU T.81 B.1.1]: 0xFF, any number of 0xFF fill bytes, then the marker's code.
_MARKER = re.compile(rb"\xff+[^\xff]")
# Entropy-coded data runs to the first marker that is neither a stuffed zero (FF 00) nor a
# restart (FF D0-D7).
_END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
_RESTARTS = range(0xD0, 0xD8)
# SOF0-15 but DHT (C4), JPG (C8) and DAC (CC).
_FRAME_HEADERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Huffman baseline, extended and progressive: what encoders write. Arithmetic-coded scans can
# cost almost no bytes (which the ratio check could not tell from a bomb); lossless and
# hierarchical JPEG are no provider's.
_ACCEPTED_FRAMES = frozenset({0xC0, 0xC1, 0xC2})


def jpeg_scans(data: bytes) -> tuple[int, int]:
    """(scans, bytes of entropy-coded data) of the JPEG in `data`, from its marker stream
    alone. Raises ValueError for a stream that is truncated, malformed or of a coding we do
    not take. Bounded: at most MAX_JPEG_SEGMENTS steps, each a slice or a forward-only regex
    scan, and it stops at the first scan over MAX_JPEG_SCANS."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("JPEG does not start with SOI")
    at, frame, scans, coded = 2, 0, 0, 0
    for _ in range(MAX_JPEG_SEGMENTS):
        marker = _MARKER.match(data, at)
        if marker is None:
            raise ValueError(f"JPEG has no marker at byte {at}: truncated or corrupt")
        code, at = data[marker.end() - 1], marker.end()
        if code == _EOI:
            if not scans:
                raise ValueError("JPEG ends before its first scan")
            return scans, coded  # what follows EOI is never decoded
        if code in _RESTARTS or code == _TEM:
            continue  # markers without a length
        if code < 0xC0 or code == _SOI:
            raise ValueError(f"JPEG has a stray marker {code:#04x} at byte {marker.start()}")
        length = int.from_bytes(data[at : at + 2], "big")
        if length < 2 or at + length > len(data):
            raise ValueError(f"JPEG segment {code:#04x} at byte {marker.start()} is cut short")
        at += length
        if code in _FRAME_HEADERS:
            if frame:
                raise ValueError("JPEG has two frame headers")
            if code not in _ACCEPTED_FRAMES:
                raise ValueError(f"JPEG coding SOF{code - 0xC0} is not one we take")
            frame = code
        elif code == _SOS:
            if not frame:
                raise ValueError("JPEG has a scan before its frame header")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ValueError(f"JPEG has more than {MAX_JPEG_SCANS} scans")
            end = _END_OF_SCAN.search(data, at)
            if end is None:
                raise ValueError(f"JPEG scan {scans} is cut short")
            coded += end.start() - at
            at = end.start()
    raise ValueError(f"JPEG has more than {MAX_JPEG_SEGMENTS} segments")
