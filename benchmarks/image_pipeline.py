"""Image-pipeline benchmark: CPU time per sample, official-style preprocessing vs ours.

Per sample, both paths prepare the two model calls of Zoom-Refine (localize, then refine with the
crop) up to the tensors the model consumes, with the real InternVL3 processor (448-px tiles,
`max_patches` 12) of a tiny local checkpoint; no forward pass is run.

- official-style: each call decodes the image file and hands the full-resolution image to the
  processor (which resizes it to its tile canvas); the refine call also processes the crop.
- ours (`zoom_refine` defaults): the file is decoded once; view `img0` is made once, straight at
  the processor's tile canvas (torchvision's antialiased bicubic, as the processor); the crop is cut from the decoded
  original at the canvas size of its own; images travel as PNG content blocks, as in the graph,
  and the local model's processor tiles each image once (the refine call reuses the view's).
- ours, exact (`exact_preprocessing=True`): full-resolution images, the processor resizes them.

Each repeat uses a freshly generated image (no cache carries over between samples). Prints the
median CPU and wall time per sample and the ratio ours / official-style.

Then the pixels, against the **real official path** (`zoomrefine/ZoomRefine_Base.py`): the first
image shrunk to ≤ 4096 px and re-saved as JPEG 85 when over 4096 px or 7 MiB, decoded, tiled with
Pillow (`tools.official_image.official_first_image`, `official_tiles`); the crop cut from the
original, saved as JPEG 95, decoded, tiled likewise. For each of our paths (default; exact
preprocessing; the `official` preset, which sends the official bytes and lets the InternVL
processor tile them) it prints the mean absolute difference in 0–255 grey levels of the tiles
(without the thumbnail), the thumbnail, and the crop's tiles; and the same for the plain HF
processor fed the full-resolution image (what the old table compared against).

    python benchmarks/image_pipeline.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from langchain_core.messages import AIMessage, HumanMessage
from PIL import Image
from transformers import AutoProcessor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # for dataset_fixtures (test data, not in the package)

from dataset_fixtures import photo_like  # noqa: E402

from zoom_refine.agent.context import ZoomContext  # noqa: E402
from zoom_refine.agent.first_look import first_look  # noqa: E402
from zoom_refine.agent.local.model import LocalVisionChatModel, to_hf_conversation  # noqa: E402
from zoom_refine.agent.prompts import localize_prompt, refine_prompt  # noqa: E402
from zoom_refine.agent.regions import read_regions  # noqa: E402
from zoom_refine.testing import build_tiny_internvl3  # noqa: E402
from zoom_refine.tools.boxes import Box  # noqa: E402
from zoom_refine.tools.crop_tool import crop_message_content, make_crop  # noqa: E402
from zoom_refine.tools.encoding import text_content_block  # noqa: E402
from zoom_refine.tools.images import load_image  # noqa: E402
from zoom_refine.tools.official_image import (  # noqa: E402
    official_crop_box as official_pixels_crop,
)
from zoom_refine.tools.official_image import official_first_image, official_tiles  # noqa: E402

QUESTION = "Which platform does the train to Geneva leave from?"
OPTIONS = {"A": "3", "B": "7", "C": "12", "D": "5"}
BOX = [0.6, 0.6, 0.7, 0.7]
"""The model's box (0–1 of the whole image), the same in every sample."""
PADDING = 0.1
"""The official crop padding: a tenth of the image side on each side."""
CASES = {"8K JPEG 7680×4320": ((7680, 4320), "JPEG"), "4K PNG 3840×2160": ((3840, 2160), "PNG")}
MEAN = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)


def write_image(folder: Path, size: tuple[int, int], file_format: str, seed: int) -> Path:
    path = folder / f"sample-{seed}.{file_format.lower()}"
    image = photo_like(size, seed)
    if file_format == "JPEG":
        image.save(path, "JPEG", quality=90)
    else:
        image.save(path, "PNG")
    return path


def official_crop_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The official crop: the box plus a tenth of the image side each way, clamped."""
    width, height = size
    x1, y1, x2, y2 = BOX
    pad_x, pad_y = PADDING * width, PADDING * height
    return (
        max(0, int((x1 * width) - pad_x)),
        max(0, int((y1 * height) - pad_y)),
        min(width, int((x2 * width) + pad_x)),
        min(height, int((y2 * height) + pad_y)),
    )


def user_turn(images: list[Image.Image], text: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image", "image": image} for image in images]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def official_inputs(processor: Any, conversation: list[dict[str, Any]]) -> Any:
    """The model inputs of a conversation from a plain transformers processor (no caching)."""
    return processor.apply_chat_template(
        conversation,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"images_kwargs": {"max_patches": 12}},
    )


def official_sample(path: Path, processor: Any) -> tuple[Any, Any]:
    """Both calls' model inputs the official way: decode and process the full image each time."""
    full = Image.open(path).convert("RGB")
    first = [user_turn([full], localize_prompt(QUESTION, OPTIONS, "paper"))]
    localize_inputs = official_inputs(processor, first)
    full = Image.open(path).convert("RGB")  # the refine call loads the image again
    crop = full.crop(official_crop_box(full.size))
    second = [
        user_turn([full], localize_prompt(QUESTION, OPTIONS, "paper")),
        {"role": "assistant", "content": [{"type": "text", "text": "Answer: B [0.6,0.6,0.7,0.7]"}]},
        user_turn([crop], refine_prompt(QUESTION, OPTIONS, "B")),
    ]
    return localize_inputs, official_inputs(processor, second)


def our_sample(path: Path, context: ZoomContext, model: LocalVisionChatModel) -> tuple[Any, Any]:
    """Both calls' model inputs through our graph's own functions (one decode, one view)."""
    backend = model.load()
    look = first_look(path, context)
    question = text_content_block(localize_prompt(QUESTION, OPTIONS, "paper"))
    first = [HumanMessage(content=[look.image_block, question])]
    localize_inputs = model._prepare_inputs(backend, to_hf_conversation(first))
    original = load_image(path, max_pixels=context.max_pixels).image  # the crop tool's load
    reply = f"Answer: B\nBounding box: {BOX}"
    read = read_regions(reply, look.view, original.size, "internvl", context)  # as the graph
    box = list(read.regions[0].box)
    crop = make_crop(original, [look.view.to_record()], "img0", box, "original", context)
    crop_blocks = crop_message_content(crop, context)[1:]
    refine = text_content_block(refine_prompt(QUESTION, OPTIONS, "B"))
    second = [
        *first,
        AIMessage(content="Answer: B [0.6,0.6,0.7,0.7]"),
        HumanMessage(content=[*crop_blocks, refine]),
    ]
    return localize_inputs, model._prepare_inputs(backend, to_hf_conversation(second))


def measured(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """(CPU seconds of all threads, wall seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def grey_levels(pixel_values: torch.Tensor) -> np.ndarray:
    """Processor output (normalized) back to 0–255 grey levels."""
    array = pixel_values.float().numpy()
    return np.asarray(array * STD + MEAN) * 255.0


def tile_difference(ours: Any, official: Any, tiles: slice) -> float:
    a = grey_levels(ours["pixel_values"][tiles])
    b = grey_levels(official["pixel_values"][tiles])
    if a.shape != b.shape:
        return float("nan")
    return float(np.abs(a - b).mean())


def official_path_tiles(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The official pipeline's tiles (0–255, N×3×448×448) of the first image and of the crop of
    `BOX`: shrink + JPEG 85 when over the limits, Pillow tiling; the crop from the original,
    JPEG 95, Pillow tiling."""
    import io

    prepared = official_first_image(path.read_bytes())
    with Image.open(io.BytesIO(prepared.data)) as shown:
        first = official_tiles(shown)
    original = Image.open(path).convert("RGB")
    box = official_pixels_crop(BOX, Box.full(original.size))
    buffer = io.BytesIO()
    original.crop(box.as_tuple()).save(buffer, format="JPEG", quality=95, optimize=True)
    with Image.open(buffer) as crop:
        second = official_tiles(crop)
    return _stack(first), _stack(second)


def _stack(tiles: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(tile, dtype=np.float64).transpose(2, 0, 1) for tile in tiles])


def path_difference(inputs: Any, official: np.ndarray, tiles: slice, start: int = 0) -> float:
    """Mean |Δ| (0–255) between the model's tiles `tiles` (offset by `start` in the inputs) and
    the official path's, or NaN when the tile grids differ."""
    ours = grey_levels(inputs["pixel_values"][start:])[tiles]
    theirs = official[tiles]
    if ours.shape != theirs.shape:
        return float("nan")
    return float(np.abs(ours - theirs).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: CPU time is work done, not spinning on a busy machine)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_tiny_internvl3(Path(folder) / "tiny-internvl3")
        model = LocalVisionChatModel(model_path=str(checkpoint), max_patches=12)
        model.load()
        processor = AutoProcessor.from_pretrained(checkpoint)
        ours = ZoomContext(model=model)
        exact = ZoomContext(model=model, exact_preprocessing=True)
        preset = ZoomContext.official(model=model)
        print(
            f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}"
        )
        print(f"median of {args.repeats} samples, each a new image; InternVL3 processor, 12 tiles")
        print()
        header = f"{'image':<19} {'path':<15} {'CPU s':>7} {'wall s':>7} {'CPU ratio':>9}"
        print(header)
        print("-" * len(header))
        for case, (size, file_format) in CASES.items():
            paths = [
                write_image(Path(folder), size, file_format, seed) for seed in range(args.repeats)
            ]
            runs: dict[str, list[tuple[float, float]]] = {
                "official": [],
                "ours": [],
                "exact": [],
                "preset": [],
            }
            last: dict[str, Any] = {}
            for path in paths:
                for name, run in (
                    ("official", lambda p=path: official_sample(p, processor)),
                    ("ours", lambda p=path: our_sample(p, ours, model)),
                    ("exact", lambda p=path: our_sample(p, exact, model)),
                    ("preset", lambda p=path: our_sample(p, preset, model)),
                ):
                    cpu, wall, last[name] = measured(run)
                    runs[name].append((cpu, wall))
            base = statistics.median(cpu for cpu, _ in runs["official"])
            for name, label in (
                ("official", "official-style"),
                ("ours", "ours"),
                ("exact", "ours, exact"),
                ("preset", "official preset"),
            ):
                cpu = statistics.median(c for c, _ in runs[name])
                wall = statistics.median(w for _, w in runs[name])
                print(f"{case:<19} {label:<15} {cpu:7.3f} {wall:7.3f} {cpu / base:9.2f}")
            report_differences(case, last, official_path_tiles(paths[-1]))
            print()


def report_differences(
    case: str, last: dict[str, Any], official_path: tuple[np.ndarray, np.ndarray]
) -> None:
    """Mean absolute grey-level difference of the model's tiles against the real official path
    (module docstring), last sample: tiles, thumbnail, crop tiles."""
    first, crop = official_path
    count = first.shape[0]
    body, thumbnail = slice(0, count - 1), slice(count - 1, count)
    for name, label in (
        ("official", "HF processor, full image"),
        ("ours", "ours (default)"),
        ("exact", "ours, exact"),
        ("preset", "official preset"),
    ):
        localize, refine = last[name]
        start = int(localize["pixel_values"].shape[0])  # the refine call repeats the first image
        print(
            f"{case:<19} vs official path, mean |Δ| (0–255), {label:<24}: "
            f"tiles {path_difference(localize, first, body):.3f}, "
            f"thumbnail {path_difference(localize, first, thumbnail):.3f}, "
            f"crop {path_difference(refine, crop, slice(None), start):.3f}"
        )


if __name__ == "__main__":
    main()
