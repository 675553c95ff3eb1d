"""Composite benchmark: our frame + encode against the original project's approach.

Prints, for one detailed 1024x1024 provider JPEG, measured in this run:
- our `frame_image` (decode, composite the border bands, encode JPEG q85);
- the original way done with Pillow (decode, blit a full-size frame PNG, encode PNG);
- the original itself (JIMP 0.22.10, from ../shared/anchors/jimp-composite) when Node.js and
  the npm registry are available;
then, for each provider size (1024x1024, 1536x1024, 3840x2160), the carrier-safe MMS made from
it (scaled to MMS_MAX_EDGE, at most MMS_MAX_BYTES) and the callback size against our estimate;
and the peak RSS of the `composite` function process while it handles a real callback on the
local stack, at 1536x1024 and at 3840x2160; then what the hardening costs and saves: a
progressive-JPEG scan bomb decoded by Pillow against refused by `frame_image`, and the bytes the
frame cache holds after eight sizes against a whole overlay per size. Targets: >= 8x faster
than the original, <= 300 KB at 1024x1024, MMS <= 600 KB at every size, <= 150 MiB at
1536x1024.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from PIL import Image

from devstack.picture_drawing import draw_picture
from shared import image_models
from shared.errors import ProviderError
from shared.framing import brand_frame, clear_frame_cache, frame_cache_bytes, frame_image

SIZES = ((1024, 1024), (1536, 1024), (3840, 2160))

ROUNDS = 15
PROMPT = "a crab holding a light saber on a rocky beach at sunset"
ANCHOR = Path(__file__).resolve().parent.parent.parent / "shared" / "anchors" / "jimp-composite"


def provider_jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    draw_picture(PROMPT, width, height).save(out, "JPEG", quality=80)
    return out.getvalue()


def timed(work: Callable[[], bytes], rounds: int = ROUNDS) -> tuple[float, int]:
    """Median milliseconds over `rounds` runs (after one warm-up) and the output size."""
    output = work()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        output = work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(output)


def original_way_with_pillow(data: bytes, frame_png: bytes) -> bytes:
    picture = Image.open(io.BytesIO(data)).convert("RGBA")
    frame = Image.open(io.BytesIO(frame_png)).convert("RGBA")
    picture.alpha_composite(frame)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def jimp(image_path: Path, frame_path: Path) -> dict[str, float] | str:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "skipped: node/npm not found"
    if not ANCHOR.is_dir():
        return f"skipped: {ANCHOR} not found"
    work = Path(tempfile.mkdtemp(prefix="jimp-"))
    shutil.copytree(ANCHOR, work, dirs_exist_ok=True)
    install = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=work,
        capture_output=True,
        timeout=300,
    )
    if install.returncode != 0:
        return "skipped: npm ci failed (no registry?)"
    run = subprocess.run(
        ["node", "bench.mjs", str(image_path), str(frame_path), str(ROUNDS)],
        cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if run.returncode != 0:
        return f"skipped: jimp failed: {run.stderr[-200:]}"
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def mms_figures() -> None:
    """What each provider size becomes: the MMS picture, and how big the callback was."""
    print("MMS from each provider size (JPEG q80 in; framed, scaled to 1536 px, <= 600 KB):")
    for width, height in SIZES:
        data = provider_jpeg(width, height)
        size = f"{width}x{height}"
        framed = frame_image(data, brand="PICTURE LINE", max_edge=1536, max_bytes=600_000)

        def mms(data: bytes = data) -> bytes:
            return frame_image(data, brand="PICTURE LINE", max_edge=1536, max_bytes=600_000).jpeg

        ms, out_bytes = timed(mms, rounds=5)
        callback = round(len(data) * image_models.CALLBACK_FACTOR)
        estimate = image_models.estimated_callback_bytes(size, "high", 80)
        print(
            f"  {size:>9}: provider {len(data) / 1024:5.0f} KB, callback {callback / 1024:5.0f} KB"
            f" (estimate {estimate / 1024:5.0f} KB) -> MMS {framed.width}x{framed.height}"
            f" q{framed.quality} {out_bytes / 1024:4.0f} KB in {ms:6.1f} ms"
        )


def scan_bomb(size: int, copies: int) -> bytes:
    """A flat progressive JPEG whose last scan (a few bytes, a full decoder pass) is repeated
    `copies` more times before EOI."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), (120, 90, 200)).save(out, "JPEG", progressive=True, quality=80)
    data = out.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * copies + b"\xff\xd9"


def hardening_figures() -> None:
    bomb = scan_bomb(2048, 300)
    started = time.perf_counter()
    Image.open(io.BytesIO(bomb)).load()
    decode_ms = (time.perf_counter() - started) * 1000

    def refused() -> bytes:
        try:
            frame_image(bomb, brand="PICTURE LINE")
        except ProviderError as exc:
            return (exc.detail or "").encode()
        raise AssertionError("the scan bomb was framed")

    refuse_ms, _ = timed(refused)
    print(
        f"scan bomb (2048x2048, 310 scans, {len(bomb) / 1024:.0f} KB): Pillow decodes it in"
        f" {decode_ms:.0f} ms, frame_image refuses it in {refuse_ms:.2f} ms"
    )
    sizes = [(1536, 1536 - 16 * step) for step in range(8)]
    clear_frame_cache()
    for size in sizes:
        brand_frame(size, "PICTURE LINE")
    whole = sum(width * height * 4 for width, height in sizes)
    print(
        f"frame cache after 8 sizes (1536x1536 to 1536x1424): {frame_cache_bytes() / 2**20:.1f}"
        f" MiB of bands; a whole overlay per size would be {whole / 2**20:.1f} MiB"
    )


def composite_peak_rss_mib(size: str) -> float | str:
    """Run the stack with real function processes, send one request of `size`, and read the
    composite process tree's peak RSS (VmHWM) from /proc."""
    try:
        import psutil
    except ImportError:
        return "skipped: psutil not installed"
    from devstack.stack import Ports, Stack

    workdir = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    os.environ["IMAGE_SIZE"] = size
    # A 4K answer needs a paid plan's message size (pay-as-you-go: 10 MB).
    os.environ["QSTASH_MAX_MESSAGE_BYTES"] = "10000000"
    stack = Stack(workdir=workdir, ports=Ports.free(), function_logs=workdir / "logs")
    try:
        env = stack.start()
        requests.post(f"{env['QSTASH_URL']}/__dev/config", json={"plan": "payg"}, timeout=5)
        stack.request_picture(PROMPT).raise_for_status()
        if not stack.wait_idle(60):
            return "failed: the request did not finish"
        composite = stack._processes[1]  # generate is started first
        tree = [
            psutil.Process(composite.pid),
            *psutil.Process(composite.pid).children(recursive=True),
        ]
        peaks = []
        for process in tree:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)
    finally:
        stack.stop()
        os.environ.pop("IMAGE_SIZE", None)
        os.environ.pop("QSTASH_MAX_MESSAGE_BYTES", None)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    data = provider_jpeg(1024, 1024)
    frame = brand_frame((1024, 1024), "PICTURE LINE")
    frame_buffer = io.BytesIO()
    frame.overlay.save(frame_buffer, "PNG")
    frame_png = frame_buffer.getvalue()

    ours_ms, ours_bytes = timed(lambda: frame_image(data, brand="PICTURE LINE").jpeg)
    pillow_ms, pillow_bytes = timed(lambda: original_way_with_pillow(data, frame_png))

    with tempfile.TemporaryDirectory() as tmp:
        image_path, frame_path = Path(tmp) / "in.jpg", Path(tmp) / "frame.png"
        image_path.write_bytes(data)
        frame_path.write_bytes(frame_png)
        anchor = jimp(image_path, frame_path)

    print(f"input: 1024x1024 provider JPEG, {len(data) / 1024:.0f} KB; {ROUNDS} rounds, median")
    print(f"  ours (bands + JPEG q85)        {ours_ms:7.1f} ms   {ours_bytes / 1024:7.0f} KB")
    print(f"  original way, Pillow (PNG)     {pillow_ms:7.1f} ms   {pillow_bytes / 1024:7.0f} KB"
          f"   ratio {pillow_ms / ours_ms:5.1f}x")  # fmt: skip
    if isinstance(anchor, dict):
        jimp_ms = anchor["median_ms"]
        size_kb = anchor["output_bytes"] / 1024
        print(f"  original, JIMP 0.22.10 (PNG)   {jimp_ms:7.1f} ms   {size_kb:7.0f} KB   "
              f"ratio {jimp_ms / ours_ms:5.1f}x")  # fmt: skip
    else:
        print(f"  original, JIMP 0.22.10         {anchor}")
    mms_figures()
    for size in ("1536x1024", "3840x2160"):
        rss = composite_peak_rss_mib(size)
        label = f"{rss:.0f} MiB" if isinstance(rss, float) else rss
        print(f"composite function, one {size} callback end to end: peak RSS {label}")
    hardening_figures()
    print(
        "targets: >= 8x faster than the original, <= 300 KB at 1024x1024, MMS <= 600 KB at"
        " every size, peak RSS <= 150 MiB at 1536x1024"
    )


if __name__ == "__main__":
    main()
