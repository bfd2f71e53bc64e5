"""Benchmark: ingest of a 12-megapixel phone photo against a plain Pillow baseline.

`ingest` = validate (type, size, pixels, full entropy decode), read EXIF, SHA-256 of the
original, orient, display (1600 px) and thumbnail (320 px) JPEGs without metadata.
Baseline = what a straightforward implementation does: open, full decode, resize to 1600 and
320 with Pillow's default filter, save both as JPEG. Both run in this process, interleaved,
pinned to one CPU, median of `RUNS` after warm-up.

Peak memory is measured in fresh subprocesses: the kernel's RSS high-water mark (VmHWM, reset
through /proc/self/clear_refs) during one ingest, minus the RSS just before it (imports done,
photo bytes already in memory, code paths warmed on a tiny image). tracemalloc cannot see
Pillow's pixel buffers (they are malloc'd in C), so RSS is the honest measure.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from media.process import ingest

RUNS = 15
WARMUP = 2
SIZE = (4000, 3000)


def make_photo(width: int = SIZE[0], height: int = SIZE[1], seed: int = 7) -> bytes:
    """A 12 Mpx JPEG that compresses like a phone photo (~3-4 MB at quality 90), with EXIF.

    Gradients, low- and mid-frequency texture, hard-edged shapes and per-channel sensor-like
    noise: a flat or purely random image would make JPEG decoding unrealistically cheap or dear.
    """
    rnd = random.Random(seed)
    g = Image.linear_gradient("L").resize((width, height))
    r = Image.radial_gradient("L").resize((width, height))
    base = Image.merge("RGB", (g, r, Image.blend(g, r, 0.5)))
    blobs = (
        Image.effect_noise((width // 50, height // 50), 80)
        .convert("RGB")
        .resize((width, height), Image.Resampling.BICUBIC)
    )
    texture = Image.merge(
        "RGB",
        [
            Image.effect_noise((width // 8, height // 8), 60).resize(
                (width, height), Image.Resampling.BICUBIC
            )
            for _ in range(3)
        ],
    )
    img = Image.blend(Image.blend(base, blobs, 0.5), texture, 0.35)
    draw = ImageDraw.Draw(img)
    for _ in range(400):
        x, y = rnd.randrange(width), rnd.randrange(height)
        colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        draw.rectangle((x, y, x + rnd.randrange(10, 300), y + rnd.randrange(10, 300)), colour)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 64) for _ in range(3)])
    img = Image.blend(img, noise, 0.12)

    exif = Image.Exif()
    exif[0x0112] = 6  # portrait shot: the pipeline must rotate
    exif[0x010F] = "BenchCam"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (31.0, 13.0, 49.44), 3: "E", 4: (121.0, 28.0, 25.32)})
    sub = exif.get_ifd(0x8769)
    sub.update({0x9003: "2026:03:01 09:30:00", 0x9011: "+08:00"})
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def baseline(data: bytes) -> tuple[bytes, bytes]:
    """Plain Pillow: open, full decode, resize to 1600 and 320 (long edge), save."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        w, h = im.size
        outputs = []
        for edge in (1600, 320):
            scale = edge / max(w, h)
            small = im.resize((round(w * scale), round(h * scale)))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=82)
            outputs.append(buffer.getvalue())
    return outputs[0], outputs[1]


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _peak_rss_mb(path: Path, which: str) -> float:
    """Run one ingest (or baseline) in a fresh interpreter; return the peak RSS it added."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_media", "--rss", which, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return float(result.stdout.strip())


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_child(which: str, path: str) -> None:
    data = Path(path).read_bytes()
    small = make_photo(64, 48)
    work: Callable[[bytes], object] = (
        (lambda d: ingest(d, "image/jpeg")) if which == "ingest" else baseline
    )
    work(small)  # load code and libraries before the measurement starts
    # getrusage's ru_maxrss survives fork+exec (the child would inherit the parent's peak), so
    # use the kernel's per-process high-water mark instead, reset to the current RSS first.
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_status_kib("VmRSS")
    work(data)
    peak = _proc_status_kib("VmHWM")
    print(f"{(peak - before) / 1024:.1f}")


def run() -> dict[str, object]:
    """Measure and return the figures (written to var/bench/media.json by tests.bench)."""
    data = make_photo()
    previous_affinity = os.sched_getaffinity(0)
    cpu = min(previous_affinity)
    os.sched_setaffinity(0, {cpu})  # "on one core": no help from a second CPU
    try:
        for _ in range(WARMUP):
            ingest(data, "image/jpeg")
            baseline(data)
        ingest_ms: list[float] = []
        baseline_ms: list[float] = []
        for _ in range(RUNS):  # interleaved, so drift in machine load hits both alike
            ingest_ms.append(_ms(lambda: ingest(data, "image/jpeg")))
            baseline_ms.append(_ms(lambda: baseline(data)))
    finally:
        os.sched_setaffinity(0, previous_affinity)

    result = ingest(data, "image/jpeg")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        path.write_bytes(data)
        peak_ingest = _peak_rss_mb(path, "ingest")
        peak_baseline = _peak_rss_mb(path, "baseline")

    ingest_median = statistics.median(ingest_ms)
    baseline_median = statistics.median(baseline_ms)
    return {
        "photo": f"{SIZE[0]}x{SIZE[1]} JPEG q90 with EXIF (orientation 6, GPS), {len(data)} bytes",
        "runs": RUNS,
        "cpu": f"pinned to CPU {cpu} of {os.cpu_count()}",
        "ingest_ms_median": round(ingest_median, 1),
        "ingest_ms_min": round(min(ingest_ms), 1),
        "ingest_ms_max": round(max(ingest_ms), 1),
        "baseline_ms_median": round(baseline_median, 1),
        "speedup_vs_baseline": round(baseline_median / ingest_median, 2),
        "target_met": ingest_median < 150 and baseline_median / ingest_median >= 2,
        "peak_rss_mb": peak_ingest,
        "baseline_peak_rss_mb": peak_baseline,
        "peak_rss_method": "VmHWM (reset by clear_refs) - VmRSS around one call, fresh process",
        "display": f"{result.display.width}x{result.display.height}, {len(result.display.data)} B",
        "thumbnail": (
            f"{result.thumbnail.width}x{result.thumbnail.height}, {len(result.thumbnail.data)} B"
        ),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss":
        _rss_child(sys.argv[2], sys.argv[3])
    else:
        print(run())
