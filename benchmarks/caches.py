"""What each cache saves: whole Zoom-Refine runs with every cache on, then with one cache off.

Runs the real graph (localize → crop → refine) with the protocol-trained tiny InternVL3
(`zoom_refine.testing`, real processor and chat template, 448-px tiles) on 4K images, side by
side in one run, configurations interleaved per sample so machine noise spreads evenly:

- `all on`: the defaults;
- `no decode cache`: the original is decoded again by the crop tool (`tools.images._decoded`);
- `no block cache`: every image block is base64-decoded again each turn
  (`tools.encoding._block_images`);
- `no tile cache`: the refine call tiles the first view again (`CachingImageProcessor.tiles`);
- `no prefix reuse`: the refine call prefills the whole conversation again (`reuse_prefix`).

Prints the median seconds per sample and the ratio to `all on`.

    python benchmarks/caches.py [--samples 6] [--size 3840x2160]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from zoom_refine import build_graph
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.testing import (
    PROTOCOL_OPTIONS,
    PROTOCOL_QUESTION,
    protocol_context,
    protocol_image,
    trained_protocol_model,
)
from zoom_refine.tools import encoding, images


@contextmanager
def capacity(cache: Any, value: int) -> Iterator[None]:
    """Run with an LruMap holding at most `value` entries (0: the cache is off)."""
    saved = cache.capacity
    cache.capacity = value
    try:
        yield
    finally:
        cache.capacity = saved


def png_bytes(size: tuple[int, int], seed: int) -> bytes:
    buffer = io.BytesIO()
    protocol_image(size, f"bench-{seed}").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--size", default="3840x2160")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))
    torch.set_num_threads(1)

    path = trained_protocol_model("internvl3")
    model = LocalVisionChatModel(model_path=str(path), max_patches=2, max_new_tokens=64)
    model.load()
    tiles = model.load().processor.image_processor.tiles
    graph = build_graph()

    configurations: dict[str, Callable[[], Any]] = {
        "all on": lambda: capacity(images._decoded, images._decoded.capacity),
        "no decode cache": lambda: capacity(images._decoded, 0),
        "no block cache": lambda: capacity(encoding._block_images, 0),
        "no tile cache": lambda: capacity(tiles, 0),
        "no prefix reuse": lambda: _no_prefix_reuse(model),
    }
    seconds: dict[str, list[float]] = {name: [] for name in configurations}
    answers: dict[str, set[Any]] = {name: set() for name in configurations}
    for sample in range(args.samples + 1):  # sample 0 warms up and is not counted
        data = png_bytes((width, height), sample)
        for name, switch in configurations.items():
            images._decoded._items.clear()  # each run starts from the encoded image
            with switch():
                started = time.perf_counter()
                result = graph.invoke(
                    {"image": data, "question": PROTOCOL_QUESTION, "options": PROTOCOL_OPTIONS},
                    context=protocol_context("internvl3", model),
                    config={"recursion_limit": 10},
                )
                elapsed = time.perf_counter() - started
            if sample:
                seconds[name].append(elapsed)
                answers[name].add((result["answer"], len(result["views"])))

    base = statistics.median(seconds["all on"])
    print(f"{platform.processor() or platform.machine()}, torch threads 1, {width}×{height} PNG")
    print(f"{args.samples} samples, one tiny InternVL3 run each (localize, crop, refine)\n")
    print("| configuration | median s / sample | ratio to all on | answers (answer, views) |")
    print("| --- | --- | --- | --- |")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / base:.2f} | {sorted(answers[name])} |")


@contextmanager
def _no_prefix_reuse(model: LocalVisionChatModel) -> Iterator[None]:
    model.reuse_prefix = False
    try:
        yield
    finally:
        model.reuse_prefix = True


if __name__ == "__main__":
    main()
