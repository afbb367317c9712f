"""Loader benchmark: stream a ~2 GB HR-Bench-format TSV of 8K JPEGs and measure it.

Builds, in a temporary folder, a synthetic `hr_bench_8k.tsv` in the real file's format (columns
`index, question, answer, category, A, B, C, D, cycle_category, image`; base64 JPEG cells; each
image stored once and named by `index` from the three rows that follow it, as the official files do
for their option rotations). A handful of distinct 7680×4320 JPEGs (gradient, shapes, text, noise;
quality 90, ~10 MB each) are encoded once and repeated, and the file is written streaming.

Reading is measured in a fresh subprocess (so the build's memory does not count): time to first
sample (from the `load_samples` call, imports excluded and reported apart), samples/s and MB/s when
only reading (every sample's image bytes are touched), and peak RSS (`ru_maxrss`). Targets: first
sample < 1 s, peak RSS < 500 MB.

    python benchmarks/datasets.py [--size-gb 2] [--keep] [--distinct 4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEADER = ("index", "question", "answer", "category", "A", "B", "C", "D", "cycle_category", "image")
SIZE_8K = (7680, 4320)
ROWS_PER_IMAGE = 4
"""One row with the image, three rotations referring back to it by index."""

FIRST_SAMPLE_TARGET_S = 1.0
PEAK_RSS_TARGET_MB = 500.0


def make_jpeg(seed: int, size: tuple[int, int] = SIZE_8K) -> bytes:
    """A 7680×4320 JPEG (quality 90) that compresses like a photo: gradient, shapes, text, noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    tint = rng.uniform(0.6, 1.4, 3)
    channels = np.broadcast_arrays(
        (200 * x + 30 * y) * tint[0],
        (120 + 80 * x * y) * tint[1],
        (220 - 150 * y + 0 * x) * tint[2],
    )
    image = Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(300):
        left, top = int(rng.integers(0, width)), int(rng.integers(0, height))
        box_w, box_h = (int(v) for v in rng.integers(20, 900, 2))
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([left, top, left + box_w, top + box_h], fill=color)
    for _ in range(200):
        where = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        draw.text(where, f"EXIT {int(rng.integers(1, 99))} Platform 7", fill=(0, 0, 0))
    pixels = np.asarray(image).astype(np.int16)
    noise = rng.normal(0, 8, (height, width, 1)).astype(np.int16)
    noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def build_tsv(path: Path, size_bytes: int, distinct: int) -> dict[str, Any]:
    """Write the synthetic TSV streaming until it reaches `size_bytes`; returns what it holds."""
    started = time.perf_counter()
    cells = [base64.b64encode(make_jpeg(seed)).decode("ascii") for seed in range(distinct)]
    jpeg_mb = sum(len(cell) * 3 / 4 for cell in cells) / distinct / 1e6
    generated = time.perf_counter() - started
    rows = images = 0
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="")
    with path.open("w", encoding="utf-8", newline="", buffering=1 << 22) as handle:
        handle.write("\t".join(HEADER) + "\n")
        while handle.tell() < size_bytes:
            first = rows
            for rotation in range(ROWS_PER_IMAGE):
                options = ["red", "green", "blue", "white"]
                options = options[rotation:] + options[:rotation]
                answer = "ABCD"[(4 - rotation) % 4]
                image = cells[images % distinct] if rotation == 0 else str(first)
                question = f'What colour is the "EXIT" sign near marker {first}?'
                category = "single" if images % 2 == 0 else "cross"
                # The text cells go through the csv writer (quoting as pandas does); the image
                # cell never needs quoting, so it is appended as is (much faster for 14 MB).
                text.seek(0)
                text.truncate()
                writer.writerow(
                    [rows, question, answer, category, *options, f"cycle{rotation + 1}"]
                )
                handle.write(text.getvalue() + "\t" + image + "\n")
                rows += 1
            images += 1
    return {
        "rows": rows,
        "images": images,
        "bytes": path.stat().st_size,
        "jpeg_mb": jpeg_mb,
        "generate_s": generated,
        "build_s": time.perf_counter() - started,
    }


def read_all(path: Path) -> dict[str, Any]:
    """Run in the subprocess: stream every sample, touch its bytes, report times and RSS."""
    started = time.perf_counter()
    from zoom_refine.evals.loaders import load_samples
    from zoom_refine.evals.samples import Sample

    imported = time.perf_counter()
    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first_sample = None
    samples = bad = image_bytes = checksum = 0
    begin = time.perf_counter()
    for item in load_samples("hr-bench", path):
        if isinstance(item, Sample):
            if first_sample is None:
                first_sample = time.perf_counter() - begin
            assert isinstance(item.image, bytes)
            image_bytes += len(item.image)
            checksum ^= item.image[len(item.image) // 2] ^ item.image[-1]
            samples += 1
        else:
            bad += 1
    total = time.perf_counter() - begin
    return {
        "import_s": imported - started,
        "first_sample_s": first_sample,
        "read_s": total,
        "samples": samples,
        "bad": bad,
        "image_bytes": image_bytes,
        "checksum": checksum,
        "rss_after_import_mb": rss_after_import,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vm_hwm_mb": peak_rss_hwm_mb(),
    }


def in_subprocess(*arguments: str) -> dict[str, Any]:
    """Run this script with `arguments` in a fresh Python process; its last stdout line is JSON.

    Both the build and the read run as children of this small parent: Linux carries a process's
    `ru_maxrss` across fork + exec, so a reader spawned by the process that built the file would
    report the build's peak as its own.
    """
    done = subprocess.run(
        [sys.executable, __file__, *arguments], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peak_rss_hwm_mb() -> float | None:
    """VmHWM of this process (Linux): its own peak RSS, a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def verdict(value: float, target: float) -> str:
    return "ok" if value < target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of the synthetic TSV")
    parser.add_argument("--distinct", type=int, default=4, help="distinct 8K JPEGs, repeated")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the TSV (path printed)")
    parser.add_argument("--read", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read is not None:
        print(json.dumps(read_all(args.read)))
        return
    if args.build is not None:
        print(json.dumps(build_tsv(args.build, int(args.size_gb * 1e9), args.distinct)))
        return

    size_bytes = int(args.size_gb * 1e9)
    base = args.dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < size_bytes * 1.2 + 1e9:
        sys.exit(
            f"not enough disk in {base}: {free / 1e9:.1f} GB free, need ~{args.size_gb * 1.2 + 1:.1f} GB"
        )
    folder = Path(tempfile.mkdtemp(prefix="zoom-refine-datasets-", dir=base))
    path = folder / "hr_bench_8k.tsv"
    try:
        built = in_subprocess(
            "--build", str(path), "--size-gb", str(args.size_gb), "--distinct", str(args.distinct)
        )
        result = in_subprocess("--read", str(path))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    expected = built["rows"]
    assert result["samples"] == expected and result["bad"] == 0, (result, built)
    rate = result["samples"] / result["read_s"]
    mb_s = built["bytes"] / 1e6 / result["read_s"]
    first = result["first_sample_s"]
    peak = result["peak_rss_mb"]
    print(
        f"machine: {platform.machine()}, {platform.platform()}, Python {platform.python_version()}"
    )
    print(
        f"synthetic HR-Bench TSV: {built['bytes'] / 1e9:.2f} GB, {built['rows']} rows "
        f"({built['images']} with an image, {built['rows'] - built['images']} back-references), "
        f"{args.distinct} distinct {SIZE_8K[0]}×{SIZE_8K[1]} JPEGs (q90, {built['jpeg_mb']:.1f} MB "
        f"each on average); built in {built['build_s']:.1f} s ({built['generate_s']:.1f} s of it "
        "encoding the JPEGs)"
    )
    print()
    print(f"{'metric':<34}{'value':>12}  {'target':<10}")
    print("-" * 62)
    print(
        f"{'time to first sample':<34}{first:>10.3f} s  {'< 1 s':<10}"
        f"{verdict(first, FIRST_SAMPLE_TARGET_S)}"
    )
    print(f"{'samples/s (read only)':<34}{rate:>12.1f}")
    print(f"{'MB/s of TSV (read only)':<34}{mb_s:>12.1f}")
    print(f"{'read time, whole file':<34}{result['read_s']:>10.2f} s")
    print(
        f"{'peak RSS (reader process)':<34}{peak:>9.0f} MB  {'< 500 MB':<10}"
        f"{verdict(peak, PEAK_RSS_TARGET_MB)}"
    )
    if result["vm_hwm_mb"] is not None:
        print(f"{'peak RSS, VmHWM cross-check':<34}{result['vm_hwm_mb']:>9.0f} MB")
    print(f"{'  of which RSS after imports':<34}{result['rss_after_import_mb']:>9.0f} MB")
    print(f"{'import zoom_refine.evals.loaders':<34}{result['import_s']:>10.2f} s")
    if args.keep:
        print(f"\nkept: {path}")


if __name__ == "__main__":
    main()
