"""The `official` preset against the official code, row by row (docs/fidelity.md).

Each `official_*` function below is a small reimplementation of one function of the official
repository, xavier-yu114/Zoom-Refine at commit fc6c1ad, written from reading it (file and lines
cited; B = `zoomrefine/ZoomRefine_Base.py`, the paper's runs). Each test feeds the same input to
that reimplementation and to our code under `ZoomContext.official()`, and compares the results.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.models import load_chat_model
from zoom_refine.agent.parsing import parse_answer
from zoom_refine.agent.regions import read_regions
from zoom_refine.cli import app
from zoom_refine.evals.prompts import official_prompt, official_question
from zoom_refine.evals.runner import run_one
from zoom_refine.evals.samples import Sample
from zoom_refine.evals.scoring import summarize
from zoom_refine.testing import ScriptedVisionModel, texts_in
from zoom_refine.tools import official_image
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.official_image import closest_grid, official_first_image, official_tiles
from zoom_refine.tools.views import View

OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}

# --- the official functions, reimplemented from reading ---------------------------------------


def official_parse_bbox(text: str) -> list[float] | None:
    """B lines 190-219 (`parse_bbox`): last labelled match, unsigned numbers, ordered before
    clamping, each value clamped to 0-1, a collapsed side given 1e-6, still empty -> None."""
    label = r"\s*(?:\*{2})?(?:Bounding box|bbox)(?:\*{2})?\s*[:：]?\s*(?:\*{2})?\s*"
    numbers = r"\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]"
    found = re.findall(label + numbers, text, re.IGNORECASE)
    if not found:
        return None
    try:
        c = [float(v) for v in found[-1]]
    except ValueError:
        return None
    if not (c[0] < c[2] and c[1] < c[3]):
        return None
    k = [max(0.0, min(1.0, v)) for v in c]
    if k[0] >= k[2]:
        k[2] = min(1.0, k[0] + 1e-6)
    if k[1] >= k[3]:
        k[3] = min(1.0, k[1] + 1e-6)
    return k if k[0] < k[2] and k[1] < k[3] else None


def official_expand_bbox(box: list[float], padding: float = 0.1) -> list[float] | None:
    """B lines 221-255 (`expand_bbox`)."""
    x1, y1, x2, y2 = box
    nx1, ny1, nx2, ny2 = (
        max(0.0, x1 - padding),
        max(0.0, y1 - padding),
        min(1.0, x2 + padding),
        min(1.0, y2 + padding),
    )
    if nx1 >= nx2:
        mid, half = (x1 + x2) / 2, (x2 - x1) / 2 + padding / 2
        nx1, nx2 = max(0.0, mid - half), min(1.0, mid + half)
        if nx1 >= nx2:
            return None
    if ny1 >= ny2:
        mid, half = (y1 + y2) / 2, (y2 - y1) / 2 + padding / 2
        ny1, ny2 = max(0.0, mid - half), min(1.0, mid + half)
        if ny1 >= ny2:
            return None
    return [nx1, ny1, nx2, ny2]


def official_crop_pixels(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """B lines 291-306 (`crop_image_from_bbox`): 0-1 box -> whole pixels, floor / ceil."""
    x1 = max(0, min(width - 1, math.floor(box[0] * width)))
    y1 = max(0, min(height - 1, math.floor(box[1] * height)))
    x2 = max(0, min(width, math.ceil(box[2] * width)))
    y2 = max(0, min(height, math.ceil(box[3] * height)))
    if x1 >= x2:
        x2 = x1 + 1
    if y1 >= y2:
        y2 = y1 + 1
    return x1, y1, min(width, x2), min(height, y2)


def official_crop_from_reply(text: str, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """B lines 464 and 480-485: parse, expand by 0.1 (line 372), crop pixels."""
    box = official_parse_bbox(text)
    if box is None:
        return None
    expanded = official_expand_bbox(box, 0.1)
    return official_crop_pixels(expanded or box, *size)


def official_extract_letter_choice(text: str) -> str | None:
    """B lines 257-273 (`extract_letter_choice`, the first call's answer)."""
    header = r"(?:\*{2})?(?:Answer|Rechecked Answer)(?:\*{2})?\s*[:：]\s*"
    for tail in (r"[\(\[]\s*([A-E])\s*[\)\]]", r"\b([A-E])\b"):
        match = re.search(header + tail, text, re.IGNORECASE | re.DOTALL)
        if match:
            return match.group(1).upper()
    return None


def official_parse_rechecked_answer(text: str) -> str | None:
    """B lines 275-282 (`parse_rechecked_answer`, the refine call's answer)."""
    pattern = r"(?:\*{2})?Rechecked Answer(?:\*{2})?\s*[:：]\s*[\(\[]?\s*([A-E])\s*[\)\]]?"
    match = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
    return match.group(1).upper() if match else None


def official_first_bytes(path: Path, max_bytes: int = 7 * 1024 * 1024) -> bytes:
    """B lines 412-431 with `compress_image_to_memory` (lines 42-110): the file's bytes when
    within `max_bytes` and 4096 x 4096, else thumbnail to 4096 (Lanczos), RGBA / P to RGB, JPEG
    at 85, lowered by 5 (not below 10) while over `max_bytes`."""
    with Image.open(path) as image:
        width, height = image.size
    if os.path.getsize(path) <= max_bytes and width <= 4096 and height <= 4096:
        return path.read_bytes()
    with Image.open(path) as image:
        current = image
        if width > 4096 or height > 4096:
            current = image.copy()
            current.thumbnail((4096, 4096), Image.Resampling.LANCZOS)
        if current.mode in ("RGBA", "P"):
            current = (image.copy() if current is image else current).convert("RGB")
        quality = 85
        data = _official_jpeg(current, quality)
        while len(data) > max_bytes and quality > 10:
            quality -= 5
            data = _official_jpeg(current, quality)
        return data


def _official_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def official_dynamic_preprocess(
    image: Image.Image, max_num: int = 12, size: int = 448
) -> list[Image.Image]:
    """B lines 126-172 (`find_closest_aspect_ratio`, `dynamic_preprocess` with the thumbnail),
    after `load_image`'s RGB conversion (line 177)."""
    image = image.convert("RGB")
    best = official_grid(image.size, max_num, size)
    target = (size * best[0], size * best[1])
    resized = image.resize(target)
    columns = target[0] // size
    tiles = [
        resized.crop(
            (
                (i % columns) * size,
                (i // columns) * size,
                (i % columns + 1) * size,
                (i // columns + 1) * size,
            )
        )
        for i in range(best[0] * best[1])
    ]
    if len(tiles) != 1:
        tiles.append(image.resize((size, size)))
    return tiles


def official_grid(
    image_size: tuple[int, int], max_num: int = 12, size: int = 448
) -> tuple[int, int]:
    """B lines 126-139 and 145-151: the target ratios sorted by tile count, the closest aspect
    ratio, ties to the later one when the image area exceeds half the grid's."""
    width, height = image_size
    aspect = width / height
    ratios = sorted(
        {
            (i, j)
            for n in range(1, max_num + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if 1 <= i * j <= max_num
        },
        key=lambda r: r[0] * r[1],
    )
    best, best_diff = (1, 1), float("inf")
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best, best_diff = ratio, diff
        elif diff == best_diff and width * height > 0.5 * size * size * ratio[0] * ratio[1]:
            best = ratio
    return best


def official_hr_bench_content(question: str, options: dict[str, str]) -> str:
    """evaluation/build_json.py lines 33-55: the stored user message of an HR-Bench row."""
    return (
        f"{question}\n"
        f"The choices are listed below:\n"
        f"(A) {options['A']}\n"
        f"(B) {options['B']}\n"
        f"(C) {options['C']}\n"
        f"(D) {options['D']}\n"
        f"Select the best answer to the above multiple-choice question based on the image. "
        f"Respond with only the letter (A, B, C, or D) of the correct option\n"
        f"The best answer is:."
    )


def official_mme_content(text: str, choices: list[str]) -> str:
    """scripts/convert.py lines 31-47: the stored user message of an MME-RealWorld item."""
    formatted = "\n".join(choices)
    return (
        f"{text}"
        f"The choices are listed below:\n"
        f"{formatted}\n"
        f"Select the best answer to the above multiple-choice question based on the image. "
        f"Respond with only the letter (A, B, C, D, or E) of the correct option\n"
        f"The best answer is:."
    )


def official_question_for_model(content: str) -> str:
    """B lines 392-395: the phrase removed, then stripped."""
    phrase = "Respond with only the letter (A, B, C, D, or E) of the correct option"
    return content.replace(phrase, "").strip()


def official_accuracies(records: list[dict[str, Any]]) -> dict[str, Any]:
    """zoomrefine/zoomrefine_acc.py lines 31-97: records without a ground truth or an `Answer`
    are skipped; combined = the rechecked answer if any, else the first one."""
    total = correct = 0
    for item in records:
        truth = next(
            (m.get("content") for m in item["messages"] if m.get("role") == "assistant"), None
        )
        if truth is None or item.get("Answer") is None:
            continue
        total += 1
        rechecked = item.get("Rechecked Answer")
        correct += int(truth == (rechecked if rechecked is not None else item["Answer"]))
    return {"total": total, "correct": correct, "accuracy": correct / total if total else 0.0}


# --- helpers ---------------------------------------------------------------------------------


def run_official(
    image: Path | str, replies: list[str], **overrides: Any
) -> tuple[dict[str, Any], ScriptedVisionModel]:
    model = ScriptedVisionModel(replies=replies)
    context = ZoomContext.official(model=model, **overrides)
    inputs = {"image": str(image), "question": "What colour is the square?", "options": OPTIONS}
    result = build_graph().invoke(
        inputs, context=context, config={"recursion_limit": context.recursion_limit}
    )
    return result, model


def image_blocks(message: Any) -> list[dict[str, Any]]:
    return [b for b in message.content if isinstance(b, dict) and b.get("type") == "image"]


def block_pixels(block: dict[str, Any]) -> np.ndarray:
    import base64

    with Image.open(io.BytesIO(base64.b64decode(block["base64"]))) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """1000x750 noisy PNG (so JPEG matters), a red square at [600, 450, 700, 525]."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (750, 1000, 3), dtype=np.uint8)
    pixels[450:525, 600:700] = (255, 0, 0)
    path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(path)
    return path


# --- box parsing ----------------------------------------------------------------------------

TRICKY_BOXES = [
    "Answer: A\nBounding box: [0, 0, 500, 600]",  # 0-1000 numbers: clamped to the whole image
    "Bounding box: [0.1, 0.1, 0.2, 0.2]\nOn reflection,\nBounding box: [0.5, 0.5, 0.7, 0.8]",
    "**Bounding box:** [0.25, 0.3, 0.45, 0.6]",
    "**Bounding box**: [0.35,0.25,0.65,0.75]",
    "bbox [0.3, 0.3, 0.35, 0.4]",
    "BBOX：[0.123, 0.456, 0.789, 0.999]",
    "Bounding box: [0.5, 0.5, 1.02, 0.9]",  # overshoot: clamped
    "Bounding box: [0.1, 0.2, 0.3, 0.4]",
    "Bounding box: [0.999, 0.999, 1.5, 1.2]",  # clamps to an empty box: gets 1e-6 back? no: x1=0.999
    "Bounding box: [0.2, 0.2, 0.2000001, 0.3]",  # a sliver
    "Answer: B\n[0.1, 0.2, 0.3, 0.4]",  # unlabelled: no box
    "Bounding box: [-0.1, 0.2, 0.5, 0.6]",  # a sign: no match at all
    "Bounding box: [0.7, 0.2, 0.5, 0.6]",  # inverted: no second call
    "Bounding box: [0.5, 0.2, 0.5, 0.6]",  # not strictly ordered
    "Bounding box: [1.2, 0.1, 1.5, 0.5]",  # empty once clamped
    "Bounding box: [1.2.3, 0.1, 0.5, 0.5]",  # not a number
    "Bounding box: [0.1, 0.2, 0.3, 0.4]\nbbox: [0.9, 0.9, 0.8, 0.95]",  # last wins, inverted
    "<box>[[100, 200, 300, 400]]</box>",  # InternVL's native box: not the official label
    "Bounding box: [0.1 0.2 0.3 0.4]",  # no commas
    "Bounding  box: [0.1, 0.2, 0.3, 0.4]",  # two spaces in the label
    "bounding box = [0.1, 0.2, 0.3, 0.4]",  # '=' is not a colon
    "Bounding box: [1e-1, 0.2, 0.3, 0.4]",  # exponent
]


@pytest.mark.parametrize("size", [(1000, 750), (7680, 4320), (333, 1001)])
@pytest.mark.parametrize("reply", TRICKY_BOXES)
def test_official_box_parser_crops_what_the_official_code_crops(
    reply: str, size: tuple[int, int]
) -> None:
    context = ZoomContext.official(model="openai:x")
    view = View(id="img0", box=Box.full(size), hop=0, shown_size=size)
    read = read_regions(reply, view, size, "internvl", context)
    expected = official_crop_from_reply(reply, size)
    got = [tuple(int(v) for v in region.box) for region in read.regions]
    assert got == ([expected] if expected else [])
    assert all(float(v).is_integer() for region in read.regions for v in region.box)


def test_official_box_parser_on_the_issue_examples() -> None:
    context = ZoomContext.official(model="openai:x")
    size = (4000, 3000)
    view = View(id="img0", box=Box.full(size), hop=0, shown_size=size)

    def crops(text: str) -> list[list[float]]:
        return [
            list(region.box) for region in read_regions(text, view, size, "other", context).regions
        ]

    assert crops("Bounding box: [0, 0, 500, 600]") == [[0, 0, 4000, 3000]]
    # the last match wins: [0.5, 0.5, 0.6, 0.6] padded by 0.1 of the side
    assert crops(
        "Bounding box: [0.1, 0.1, 0.2, 0.2] or rather Bounding box: [0.5, 0.5, 0.6, 0.6]"
    ) == [[1600, 1200, 2800, 2100]]
    assert crops("Bounding box: [0.6, 0.5, 0.5, 0.6]") == []
    # ours (default) reads the same replies differently: 0-1000 and the first match
    ours = ZoomContext(model="openai:x")
    first = read_regions(
        "Bounding box: [0.1, 0.1, 0.2, 0.2] Bounding box: [0.5, 0.5, 0.6, 0.6]",
        view,
        size,
        "other",
        ours,
    )
    assert [round(v) for v in first.regions[0].box] == [400, 300, 800, 600]
    thousand = read_regions("Bounding box: [0, 0, 500, 600]", view, size, "other", ours)
    assert [round(v) for v in thousand.regions[0].box] == [0, 0, 2000, 1800]


def test_official_crop_box_matches_the_official_rounding_on_a_grid() -> None:
    """Nice decimal boxes land exactly on pixel edges, where (x - 0.1) * W and x * W - 0.1 * W
    round differently in floating point: the official order of operations is kept."""
    mismatches = []
    for width in (1000, 3840, 4320, 7680, 333):
        for k in range(0, 101, 3):
            for span in (1, 7, 30):
                x1, x2 = k / 100, min(1.0, (k + span) / 100)
                if not x1 < x2:
                    continue
                box = [x1, x1, x2, x2]
                expected = official_crop_pixels(official_expand_bbox(box) or box, width, width)
                got = official_image.official_crop_box(box, Box.full((width, width)))
                if got.as_tuple() != expected:
                    mismatches.append((width, box, got, expected))
    assert mismatches == []


def test_official_parser_requires_zero_padding_in_the_crop_planner() -> None:
    with pytest.raises(InvalidInputError, match="padded twice"):
        ZoomContext.official(model="openai:x", padding=0.1)


# --- answer parsing -------------------------------------------------------------------------

FIRST_CALL = [
    "Answer: B\nBounding box: [0.1, 0.2, 0.3, 0.4]\nAnswer: C",  # first, not last
    "Rechecked Answer: C\nAnswer: B",  # "Answer" inside "Rechecked Answer" comes first
    "Answer: E",  # not offered (options A-D): still read
    "Answer: a",  # lower case
    "Answer: B. Then again, Answer: (C)",  # a bracketed letter anywhere wins over a bare one
    "Answer: Based on the image",  # "Based" is no lone letter
    "The answer is B",  # no label: nothing
    "**Answer**: [D]",
    "Answer：C",  # full-width colon
    "FinalAnswer: D",  # no word boundary needed before "Answer"
    "answer:\n\n  b",
    "Answer: F",  # outside A-E
    "",
]
REFINE_CALL = [
    "Rechecked Answer: because the sign is blue",  # reads B (no word boundary after)
    "Rechecked Answer: (d)",
    "Answer: A",  # no rechecked label: nothing (no fallback)
    "Rechecked Answer: A\nRechecked Answer: C",  # first
    "**Rechecked Answer**: [E] on reflection",
    "Rechecked answer:   \n  C",
    "Rechecked Answer: 3",
]


@pytest.mark.parametrize("reply", FIRST_CALL)
def test_official_answer_parser_on_the_first_call(reply: str) -> None:
    assert parse_answer(reply, OPTIONS, mode="official") == official_extract_letter_choice(reply)


@pytest.mark.parametrize("reply", REFINE_CALL)
def test_official_answer_parser_on_the_refine_call(reply: str) -> None:
    got = parse_answer(reply, OPTIONS, rechecked=True, mode="official")
    assert got == official_parse_rechecked_answer(reply)


def test_official_and_our_answer_parsers_differ_where_the_issue_says() -> None:
    reply = "Answer: B\nBounding box: [0.1, 0.2, 0.3, 0.4]\nAnswer: C"
    assert parse_answer(reply, OPTIONS, mode="official") == "B"  # first match
    assert parse_answer(reply, OPTIONS) == "C"  # ours: the last
    assert parse_answer("Answer: E", OPTIONS, mode="official") == "E"  # any A-E
    assert parse_answer("Answer: E", OPTIONS) is None  # ours: offered letters only
    refine = "Rechecked Answer: because the sign is blue"
    assert parse_answer(refine, OPTIONS, rechecked=True, mode="official") == "B"
    assert parse_answer(refine, OPTIONS, rechecked=True) is None


def test_official_parsers_stay_fast_on_long_whitespace() -> None:
    import time

    hostile = (
        "Answer:" + " " * 20_000 + "x" + "Rechecked Answer:" + " " * 20_000 + "bbox" + " " * 20_000
    )
    started = time.perf_counter()
    parse_answer(hostile, OPTIONS, mode="official")
    parse_answer(hostile, OPTIONS, rechecked=True, mode="official")
    context = ZoomContext.official(model="openai:x")
    view = View(id="img0", box=Box.full((100, 100)), hop=0, shown_size=(100, 100))
    read_regions(hostile, view, (100, 100), "other", context)
    assert time.perf_counter() - started < 2.0


# --- the whole pipeline under the preset ------------------------------------------------------


def test_official_preset_request_and_crop_match_the_official_pipeline(scene: Path) -> None:
    reply = "Answer: A\nBounding box: [0.55, 0.55, 0.75, 0.75]"
    result, model = run_official(scene, [reply, "Rechecked Answer: because it is blue"])

    first, second = model.requests
    assert len(first) == 1  # no system prompt: the model's default, as in B
    (first_block,) = image_blocks(first[0])
    assert first_block["mime_type"] == "image/png"  # within limits: the file's own bytes
    import base64

    assert base64.b64decode(first_block["base64"]) == scene.read_bytes()
    assert "What colour is the square?" in texts_in(first[0])

    # refine: the whole first turn again, then the crop as JPEG 95 of the official box
    crop_blocks = [b for m in second[len(first) :] for b in image_blocks(m)]
    assert [b["mime_type"] for b in crop_blocks] == ["image/jpeg"]
    box = official_crop_from_reply(reply, (1000, 750))
    assert box == (450, 337, 850, 638)
    with Image.open(scene) as image:
        official_crop = Image.open(io.BytesIO(_official_jpeg(image.convert("RGB").crop(box), 95)))
        expected = np.asarray(official_crop.convert("RGB"))
    assert np.array_equal(block_pixels(crop_blocks[0]), expected)  # pixel-exact
    assert result["views"][-1]["box"] == list(box)
    # answers: first match, and "because" reads B under the official refine parser
    assert result["initial_answer"] == "A" and result["answer"] == "B"


def test_official_preset_inverted_box_means_no_second_call(scene: Path) -> None:
    result, model = run_official(scene, ["Answer: C\nBounding box: [0.7, 0.2, 0.5, 0.6]"])
    assert len(model.requests) == 1
    assert result["stop_reason"] == "no_box" and result["answer"] == "C"


def test_official_preset_has_no_minimum_crop(scene: Path) -> None:
    reply = "Answer: A\nBounding box: [0.5, 0.5, 0.5001, 0.5001]"
    result, _ = run_official(scene, [reply, "Rechecked Answer: A"])
    box = official_crop_from_reply(reply, (1000, 750))
    assert result["views"][-1]["box"] == list(box)
    assert box[2] - box[0] < 448  # our default would grow it to one InternVL tile
    ours = ZoomContext(model="openai:x")
    assert ours.min_crop_side == 448 and ZoomContext.official(model="openai:x").min_crop_side == 0


def test_official_preset_generation_and_prefix_settings(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    context = ZoomContext.official(model=f"hf:{folder}")
    from zoom_refine.agent.local.model import LocalVisionChatModel

    model = load_chat_model(f"hf:{folder}", **context.model_settings())  # loads no weights
    assert isinstance(model, LocalVisionChatModel)
    assert model.max_new_tokens == 1024  # B line 326
    assert model.reuse_prefix is False  # B re-encodes the first image in refine
    ours = ZoomContext(model=f"hf:{folder}").model_settings()
    default = load_chat_model(f"hf:{folder}", **ours)
    assert isinstance(default, LocalVisionChatModel)
    assert default.max_new_tokens == 512 and default.reuse_prefix is True
    assert context.max_patches == 12 and context.max_hops == 1  # B line 327; two calls
    assert context.exact_preprocessing  # full-resolution crops go to the processor, as in B


def test_official_overrides_replace_preset_fields() -> None:
    context = ZoomContext.official(model="openai:x", max_new_tokens=4096)  # the API variant's
    assert context.max_new_tokens == 4096 and context.box_parser == "official"


# --- first-call image -----------------------------------------------------------------------


def _noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth noise: compresses like a photo, so the 7 MiB loop is reachable with small limits
    small = rng.integers(0, 256, (size[1] // 16 + 1, size[0] // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    return image.convert(mode)


@pytest.mark.parametrize(
    ("size", "mode", "suffix"),
    [
        ((4200, 900), "RGB", "jpg"),  # over 4096 px: thumbnail + JPEG 85
        ((400, 4200), "RGBA", "png"),  # tall, with alpha: dropped, as the official convert
        ((4100, 1000), "P", "png"),  # palette
        ((4097, 300), "L", "jpg"),  # greyscale JPEG: re-saved greyscale
        ((1200, 900), "RGB", "png"),  # within limits: the file's own bytes
    ],
)
def test_official_first_image_is_byte_identical_to_the_official_one(
    tmp_path: Path, size: tuple[int, int], mode: str, suffix: str
) -> None:
    path = tmp_path / f"image.{suffix}"
    _noise(size, 1, mode).save(path)
    prepared = official_first_image(path.read_bytes())
    assert prepared.data == official_first_bytes(path)
    with Image.open(io.BytesIO(prepared.data)) as image:
        assert prepared.size == image.size and max(image.size) <= 4096


def test_official_first_image_lowers_quality_until_under_the_byte_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 7 MiB branch, with the limit lowered on both sides so a small image reaches it."""
    path = tmp_path / "big.png"
    _noise((1000, 800), 2).save(path)
    limit = 30_000
    monkeypatch.setattr(official_image, "OFFICIAL_MAX_BYTES", limit)
    prepared = official_first_image(path.read_bytes())
    assert prepared.data == official_first_bytes(path, max_bytes=limit)
    assert prepared.quality is not None and prepared.quality < 85
    assert len(prepared.data) <= limit or prepared.quality == 10


def test_official_first_image_refuses_what_the_official_code_cannot_save(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.new("LA", (4200, 100)).save(path)
    with pytest.raises(Exception) as raised:
        official_first_bytes(path)
    from zoom_refine.tools.errors import ImageLoadError

    with pytest.raises(ImageLoadError, match="cannot re-save"):
        official_first_image(path.read_bytes())
    assert raised.value is not None


def test_official_preset_sends_the_shrunk_jpeg_first(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    _noise((4400, 500), 3).save(path)
    _, model = run_official(path, ["Answer: A"])
    import base64

    (block,) = image_blocks(model.requests[0][0])
    assert block["mime_type"] == "image/jpeg"
    assert base64.b64decode(block["base64"]) == official_first_bytes(path)


@pytest.mark.parametrize(
    "size", [(4096, 2304), (448, 448), (1000, 3000), (4000, 1000), (1345, 897)]
)
def test_official_tiles_are_pixel_identical_to_dynamic_preprocess(size: tuple[int, int]) -> None:
    image = _noise(size, 4)
    ours = official_tiles(image)
    theirs = official_dynamic_preprocess(image)
    assert len(ours) == len(theirs)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs, strict=True)
    )


def test_official_tile_grid_matches_on_many_shapes() -> None:
    shapes = [(w, h) for w in range(100, 8000, 37) for h in (120, 448, 896, 1000, 2160, 4320)]
    shapes += [(448 * c, 448 * r) for c in range(1, 13) for r in range(1, 13)]  # exact ties
    assert [closest_grid(s) for s in shapes] == [official_grid(s) for s in shapes]


# --- question text --------------------------------------------------------------------------


def test_official_question_for_hr_bench_keeps_its_four_letter_instruction() -> None:
    source = {
        "question": "What is written on the sign?",
        "A": "STOP",
        "B": "GO",
        "C": "YIELD",
        "D": "EXIT",
    }
    sample = Sample(
        "1", "x.jpg", source["question"], {k: source[k] for k in "ABCD"}, "A", source=source
    )
    stored = official_hr_bench_content(source["question"], source)
    assert official_prompt("hr-bench", sample) == stored
    assert official_question("hr-bench", sample) == official_question_for_model(stored)
    assert "Respond with only the letter (A, B, C, or D)" in official_question("hr-bench", sample)


def test_official_question_for_mme_realworld_removes_the_phrase() -> None:
    choices = ["(A) 3", "(B) 4", "(C) 5", "(D) 6", "(E) The image does not feature the number"]
    item = {"Text": "How many cars are there?", "Answer choices": choices}
    options = {c[1]: c[4:] for c in choices}
    sample = Sample("m1", "x.jpg", item["Text"], options, "B", source=item)
    stored = official_mme_content(item["Text"], choices)
    assert official_prompt("mme-realworld", sample) == stored
    question = official_question("mme-realworld", sample)
    assert question == official_question_for_model(stored)
    assert "?The choices are listed below:" in question and "Respond with" not in question
    # a TSV row (no choice list): the same text from the options
    bare = Sample("m1", "x.jpg", item["Text"], options, "B")
    assert official_question("mme-realworld", bare) == question


def test_eval_passes_the_official_question_under_the_preset(tmp_path: Path, scene: Path) -> None:
    source = {"question": "Which colour?", "A": "red", "B": "blue", "C": "green", "D": "grey"}
    sample = Sample(
        "7", str(scene), "Which colour?", {k: source[k] for k in "ABCD"}, "A", source=source
    )
    model = ScriptedVisionModel(replies=["Answer: A"])
    context = ZoomContext.official(model=model)
    record = run_one(build_graph(), "hr-bench", sample, "zoom-refine", context)
    assert record["status"] == "ok", record["error"]
    text = texts_in(model.requests[0][0])
    assert official_question("hr-bench", sample) in text
    plain = ScriptedVisionModel(replies=["Answer: A"])
    run_one(build_graph(), "hr-bench", sample, "zoom-refine", ZoomContext(model=plain))
    assert "The choices are listed below" not in texts_in(plain.requests[0][0])


# --- scoring denominator ----------------------------------------------------------------------


def test_skip_unanswered_reproduces_the_official_denominator() -> None:
    # (first answer, rechecked answer, truth) per record, as zoomrefine_acc.py reads them
    cases = [
        ("A", "A", "A"),
        ("A", None, "A"),
        (None, "B", "B"),
        (None, None, "C"),
        ("B", "C", "C"),
        ("D", "D", "A"),
    ]
    official = official_accuracies(
        [
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": truth},
                ],
                "Answer": first,
                "Rechecked Answer": again,
            }
            for first, again, truth in cases
        ]
    )
    records = [
        {
            "id": str(i),
            "method": "zoom-refine",
            "status": "ok",
            "ground_truth": truth,
            "initial_answer": first,
            "answer": again or first,
            "fields": {},
        }
        for i, (first, again, truth) in enumerate(cases)
    ]
    skipped = summarize("vstar", records, skip_unanswered=True)["methods"]["zoom-refine"]
    overall = skipped["groups"]["overall"]
    assert (overall["correct"], overall["total"]) == (official["correct"], official["total"])
    assert skipped["skipped_ids"] == ["2", "3"]
    counted = summarize("vstar", records)["methods"]["zoom-refine"]["groups"]["overall"]
    assert counted["total"] == len(cases)  # our default: unanswered count as wrong


# --- the command line -----------------------------------------------------------------------


def test_cli_preset_official_keeps_given_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scene: Path
) -> None:
    model = ScriptedVisionModel(replies=["Answer: A"])
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    data = tmp_path / "data"
    data.mkdir()
    from dataset_fixtures import write_hr_bench_tsv

    tsv = write_hr_bench_tsv(data)
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(tsv), "--out", str(out), "--limit", "1"]
    args += ["--model", "openai:served", "--base-url", "http://127.0.0.1:9/v1"]
    args += ["--preset", "official", "--max-patches", "6", "--skip-unanswered"]
    args += ["--extractor", "official-baseline"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    settings = config["context"]
    assert settings["box_parser"] == "official" and settings["first_image"] == "official"
    assert settings["max_new_tokens"] == 1024 and settings["jpeg_quality"] == 95
    assert settings["max_patches"] == 6  # given on the command line: it wins over the preset
    assert config["skip_unanswered"] is True and config["extractor"] == "official-baseline"
