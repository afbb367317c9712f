"""`zoom-refine official verify`: the `official` preset run side by side with the official
functions taken from a checkout (`evals.official_extract`) on generated inputs
(`evals.official_inputs`). Each part counts its checks and keeps every mismatch with its input,
so that the smallest ones serve as reproducers.

Parts: `boxes` (the box parser, padding and whole-pixel crop box, per reply × image size),
`answers` (first-call and refine letters), `tiles` (InternVL's tile grid), `images` (the first
call's bytes and the crop's decoded pixels, per image file and box), `questions` (the stored
HR-Bench / MME-RealWorld prompt and the question the pipeline shows), `scoring` (correct /
denominator of the official baseline and Zoom-Refine scorers on prediction sets with failures).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile

from zoom_refine.agent.parsing import parse_official_choice
from zoom_refine.agent.regions import read_official_region
from zoom_refine.evals import official_inputs as inputs
from zoom_refine.evals.official_checks import PartResult, Scale, attempt
from zoom_refine.evals.official_extract import OfficialCode
from zoom_refine.evals.official_verify_scoring import verify_scoring
from zoom_refine.evals.prompts import official_prompt, official_question, pandas_text
from zoom_refine.evals.samples import Benchmark, Sample
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.encoding import encode_image
from zoom_refine.tools.errors import ImageLoadError
from zoom_refine.tools.images import load_image
from zoom_refine.tools.official_image import (
    OFFICIAL_CROP_QUALITY,
    closest_grid,
    official_crop_box,
    official_first_image,
)
from zoom_refine.tools.views import View

PARTS = ("boxes", "answers", "tiles", "images", "questions", "scoring")
CROP_BOXES = (
    [0.2, 0.2, 0.6, 0.6],
    [0.0, 0.0, 1.0, 1.0],
    [0.95, 0.9, 1.0, 1.0],
    [0.1, 0.45, 0.12, 0.5],
)


def verify(code: OfficialCode, *, seed: int = 0, scale: Scale | None = None) -> list[PartResult]:
    """Run every part; the official functions run with Pillow's truncated-file setting as the
    checkout sets it."""
    scale = scale or Scale()
    runners: dict[str, Callable[[OfficialCode, random.Random, Scale], PartResult]] = {
        "boxes": verify_boxes,
        "answers": verify_answers,
        "tiles": verify_tiles,
        "images": verify_images,
        "questions": verify_questions,
        "scoring": verify_scoring,
    }
    return [runners[name](code, random.Random(f"{seed}-{name}"), scale) for name in PARTS]


# --- stand-in Pillow for geometry ----------------------------------------------------------------


class _Stub:
    """An image with a size and no pixels: records what the official code asks of it."""

    def __init__(self, size: tuple[int, int], calls: list[tuple[str, Any]]) -> None:
        self.size, self.mode, self.calls = size, "RGB", calls
        self.width, self.height = size

    def __enter__(self) -> _Stub:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def convert(self, mode: str) -> _Stub:
        return self

    def crop(self, box: Any) -> _Stub:
        self.calls.append(("crop", tuple(box)))
        return _Stub(self.size, self.calls)

    def resize(self, size: Any, *args: Any, **kwargs: Any) -> _Stub:
        self.calls.append(("resize", tuple(size)))
        width, height = size
        return _Stub((int(width), int(height)), self.calls)

    def save(self, *args: Any, **kwargs: Any) -> None:
        return None


class StubModule:
    """`Image` for the stand-in runs: `open` gives the next stand-in image."""

    Resampling = Image.Resampling
    LANCZOS = Image.Resampling.LANCZOS
    BICUBIC = Image.Resampling.BICUBIC

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.size = (1, 1)

    def open(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(self.size, self.calls)


# --- parts ---------------------------------------------------------------------------------------


def official_crop(stub: StubModule, base: dict[str, Any], reply: str, size: tuple[int, int]) -> Any:
    """The official crop box (pixels) of `reply` on an image of `size`, or None (no crop)."""
    bbox = base["parse_bbox"](reply)
    if bbox is None:
        return None
    expanded = base["expand_bbox"](bbox, padding=0.1)
    stub.calls.clear()
    stub.size = size
    result = base["crop_image_from_bbox"]("image", expanded or bbox, size[0], size[1])
    crops = [args for name, args in stub.calls if name == "crop"]
    return crops[-1] if result is not None and crops else None


def preset_crop(reply: str, size: tuple[int, int]) -> Any:
    view = View(id="img0", box=Box.full(size), hop=0, shown_size=size)
    regions = read_official_region(reply, view).regions
    return tuple(int(v) for v in regions[0].box) if regions else None


def verify_boxes(code: OfficialCode, rng: random.Random, scale: Scale) -> PartResult:
    result, stub = PartResult("boxes"), StubModule()
    base = code.base_stub(stub)
    sizes = inputs.image_sizes(rng, scale.box_sizes)
    for reply in inputs.box_replies(rng, scale.box_replies):
        for size in sizes:
            result.compare(
                partial("reply={!r} size={}".format, reply, size),
                partial(official_crop, stub, base, reply, size),
                partial(preset_crop, reply, size),
            )
    return result


def verify_answers(code: OfficialCode, rng: random.Random, scale: Scale) -> PartResult:
    result = PartResult("answers")
    first, recheck = code.base["extract_letter_choice"], code.base["parse_rechecked_answer"]
    for reply in inputs.answer_replies(rng, scale.answers):
        result.compare(
            partial("first call, reply={!r}".format, reply),
            partial(first, reply),
            partial(parse_official_choice, reply),
        )
        result.compare(
            partial("refine call, reply={!r}".format, reply),
            partial(recheck, reply),
            partial(parse_official_choice, reply, rechecked=True),
        )
    return result


def official_grid(base: dict[str, Any], stub: StubModule, size: tuple[int, int]) -> Any:
    stub.calls.clear()
    image = _Stub(size, stub.calls)
    base["dynamic_preprocess"](image, image_size=448, use_thumbnail=True, max_num=12)
    width, height = next(args for name, args in stub.calls if name == "resize")
    return (width // 448, height // 448)


def verify_tiles(code: OfficialCode, rng: random.Random, scale: Scale) -> PartResult:
    result, stub = PartResult("tiles"), StubModule()
    base = code.base_stub(stub)
    for size in inputs.tile_sizes(rng, scale.tiles):
        result.compare(
            partial("tile grid, size={}".format, size),
            partial(official_grid, base, stub, size),
            partial(closest_grid, size, 12, 448),
        )
    return result


@contextlib.contextmanager
def official_pillow(code: OfficialCode) -> Iterator[None]:
    """Pillow's truncated-file setting as the checkout's module sets it, while its code runs."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    if code.truncated_flag is not None:
        ImageFile.LOAD_TRUNCATED_IMAGES = code.truncated_flag
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def official_first_bytes(code: OfficialCode, path: Path) -> bytes | None:
    """What the official first call loads: the file within its limits (the main loop's test,
    with the checkout's limits), else `compress_image_to_memory`; None where it fails."""
    base = code.base
    with official_pillow(code):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # the main loop turns any failure here into an error record
            return None
        small = os.path.getsize(path) <= base["MAX_SIZE_BYTES"]
        if small and width <= base["MAX_WIDTH"] and height <= base["MAX_HEIGHT"]:
            return path.read_bytes()
        found = base["compress_image_to_memory"](
            path, base["MAX_SIZE_BYTES"], max_width=base["MAX_WIDTH"], max_height=base["MAX_HEIGHT"]
        )
        first = found[0] if isinstance(found, tuple) else found
        return first if isinstance(first, bytes) else None


def preset_first_bytes(data: bytes) -> bytes | None:
    try:
        return official_first_image(data).data
    except ImageLoadError:
        return None


def official_crop_pixels(code: OfficialCode, path: Path, box: list[float]) -> str | None:
    """SHA-256 of the decoded pixels of the official crop of `box` (0–1), or None."""
    base = code.base
    with official_pillow(code):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:
            return None
        expanded = base["expand_bbox"](list(box), padding=0.1)
        data = base["crop_image_from_bbox"](path, expanded or box, width, height)
    return None if data is None else pixels_digest(data)


def preset_crop_pixels(path: Path, box: list[float]) -> str | None:
    try:
        original = load_image(path, official=True).image
    except ImageLoadError:
        return None
    crop = official_crop_box(box, Box.full(original.size))
    region = original.crop((crop.x1, crop.y1, crop.x2, crop.y2))
    return pixels_digest(encode_image(region, "jpeg", OFFICIAL_CROP_QUALITY))


def pixels_digest(data: bytes) -> str:
    """SHA-256 of an encoded image's decoded pixels (mode, size, bytes)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        header = f"{image.mode} {image.size}".encode()
        return hashlib.sha256(header + image.tobytes()).hexdigest()


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def official_first_digest(code: OfficialCode, path: Path) -> str | None:
    return digest(official_first_bytes(code, path))


def preset_first_digest(data: bytes) -> str | None:
    return digest(preset_first_bytes(data))


def verify_images(code: OfficialCode, rng: random.Random, scale: Scale) -> PartResult:
    result = PartResult("images")
    with tempfile.TemporaryDirectory(prefix="zoom-refine-verify-") as folder:
        for case in inputs.image_cases(rng, big=scale.big_images):
            path = Path(folder) / case.name.replace(";", "_")
            path.write_bytes(case.data)
            result.compare(
                partial("first-call bytes of {} ({} bytes)".format, case.name, len(case.data)),
                partial(official_first_digest, code, path),
                partial(preset_first_digest, case.data),
            )
            for box in CROP_BOXES:
                result.compare(
                    partial("crop pixels of {}, box {}".format, case.name, box),
                    partial(official_crop_pixels, code, path, box),
                    partial(preset_crop_pixels, path, box),
                )
    return result


def sample_for(benchmark: Benchmark, source: dict[str, Any], letters: str) -> Sample:
    options = {letter: pandas_text(source.get(letter, "x")) or "x" for letter in letters}
    question = pandas_text(source.get("question", source.get("Text", "")))
    return Sample("1", "image.png", question, options, "A", source=source)


def verify_questions(code: OfficialCode, rng: random.Random, scale: Scale) -> PartResult:
    result, phrase = PartResult("questions"), code.phrase_to_remove
    for row in inputs.hr_bench_rows(rng, scale.rows):
        cells = {"question": row["question"]}
        cells |= {f"choice_{letter.lower()}": row[letter] for letter in "ABCD"}
        official = attempt(partial(code.hr_bench_prompt, **cells))
        sample = sample_for("hr-bench", row, "ABCD")
        given = partial("HR-Bench row {!r}".format, row)
        result.check(given, official, attempt(partial(official_prompt, "hr-bench", sample)))
        result.check(
            given,
            without_phrase(official, phrase),
            attempt(partial(official_question, "hr-bench", sample)),
        )
    for item in inputs.mme_rows(rng, scale.rows):
        stored = {
            "Text": item["Text"],
            "Answer choices": item["Answer choices"],
            "Ground truth": "A",
            "Image": "image.png",
        }
        text = attempt(partial(mme_converted, code, stored))
        sample = sample_for("mme-realworld", stored, "ABCDE"[: len(item["Answer choices"])])
        given = partial("MME-RealWorld item {!r}".format, item)
        result.check(given, text, attempt(partial(official_prompt, "mme-realworld", sample)))
        result.check(
            given,
            without_phrase(text, phrase),
            attempt(partial(official_question, "mme-realworld", sample)),
        )
    return result


def mme_converted(code: OfficialCode, stored: dict[str, Any]) -> Any:
    """The user message `scripts/convert.py` stores for one MME-RealWorld item."""
    return json.loads(code.transform_json_data(json.dumps([stored])))[0]["messages"][0]["content"]


def without_phrase(official: Any, phrase: str) -> Any:
    """The official main loop's question: the stored prompt less `phrase`, stripped (a `Raised`
    stays as it is)."""
    return official.replace(phrase, "").strip() if isinstance(official, str) else official
