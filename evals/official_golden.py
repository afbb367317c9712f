"""Golden data: the official functions' outputs on a fixed set of inputs, recorded once from a
checkout (`zoom-refine official verify CHECKOUT --record-golden FILE`) and replayed against the
preset by `tests/test_official_golden.py` with no checkout at hand. The file holds inputs and
outputs only (no official code); it says how, where and from which commit it was made."""

from __future__ import annotations

import datetime
import json
import platform
import random
from pathlib import Path
from typing import Any

import PIL

from zoom_refine.agent.parsing import parse_official_choice
from zoom_refine.evals import official_inputs as inputs
from zoom_refine.evals import official_verify as verify
from zoom_refine.evals.official_checks import PartResult
from zoom_refine.evals.official_extract import OfficialCode
from zoom_refine.evals.official_verify_scoring import (
    baseline_records,
    official_baseline_counts,
    official_zoom_counts,
    ours,
    zoom_records,
)
from zoom_refine.evals.prompts import official_prompt, official_question
from zoom_refine.tools.official_image import closest_grid

SEED = "golden"
HOW = (
    "Each official function was taken from the checkout's source with `ast` (top-level functions "
    "and assignments by name: evals/official_extract.py), executed in a fresh namespace, and run "
    "on the inputs below; its outputs are recorded as they came. No official code is stored here."
)


def record_golden(code: OfficialCode, path: Path, *, sizes: int = 8, replies: int = 160) -> None:
    """Write the golden file for `code`'s checkout to `path` (JSON)."""
    rng = section_rng("inputs")
    stub = verify.StubModule()
    base_stub = code.base_stub(stub)
    box_sizes = inputs.image_sizes(rng, sizes)
    boxes = [
        {
            "reply": r,
            "size": list(s),
            "official": _list(verify.official_crop(stub, base_stub, r, s)),
        }
        for r in inputs.box_replies(rng, replies)
        for s in box_sizes
    ]
    first, recheck = code.base["extract_letter_choice"], code.base["parse_rechecked_answer"]
    answers = [
        {"reply": r, "first": first(r), "rechecked": recheck(r)}
        for r in inputs.answer_replies(rng, 600)
    ]
    tiles = [
        {"size": list(s), "grid": list(verify.official_grid(base_stub, stub, s))}
        for s in inputs.tile_sizes(rng, 500)
    ]
    document = {
        "what": "official Zoom-Refine outputs on generated inputs, replayed against the preset",
        "how": HOW,
        "made_by": "zoom-refine official verify CHECKOUT --record-golden FILE",
        "where": {
            "repository": "xavier-yu114/Zoom-Refine",
            "commit": code.commit,
            "checkout": str(code.checkout),
        },
        "made_on": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "seed": SEED,
        "boxes": boxes,
        "answers": answers,
        "tiles": tiles,
        "images": _images(code, section_rng("images")),
        "questions": _questions(code, section_rng("questions")),
        "scoring": _scoring(code, section_rng("scoring")),
        "baseline_letters": _baseline_letters(code, section_rng("letters")),
        "tile_pixels": _tile_pixels(code),
        "first_image_limits": _first_image_limits(code),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def section_rng(name: str) -> random.Random:
    """The generator of one golden section (the replay regenerates the images from it)."""
    return random.Random(f"{SEED}-{name}")


def _list(value: Any) -> Any:
    return None if value is None else list(value)


def _images(code: OfficialCode, rng: random.Random) -> list[dict[str, Any]]:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="zoom-refine-golden-") as folder:
        for case in inputs.image_cases(rng):
            path = Path(folder) / case.name.replace(";", "_")
            path.write_bytes(case.data)
            rows.append(
                {
                    "name": case.name,
                    "input_sha256": verify.digest(case.data),
                    "first_sha256": verify.digest(verify.official_first_bytes(code, path)),
                    "crops": [
                        verify.official_crop_pixels(code, path, box) for box in verify.CROP_BOXES
                    ],
                }
            )
    return rows


def _questions(code: OfficialCode, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    phrase = code.phrase_to_remove
    hr = []
    for row in inputs.hr_bench_rows(rng, 120):
        prompt = code.hr_bench_prompt(
            question=row["question"],
            choice_a=row["A"],
            choice_b=row["B"],
            choice_c=row["C"],
            choice_d=row["D"],
        )
        hr.append({"row": row, "prompt": prompt, "question": prompt.replace(phrase, "").strip()})
    mme = []
    for item in inputs.mme_rows(rng, 120):
        stored = item | {"Ground truth": "A", "Image": "image.png"}
        text = json.loads(code.transform_json_data(json.dumps([stored])))[0]["messages"][0]
        prompt = text["content"]
        mme.append(
            {"row": stored, "prompt": prompt, "question": prompt.replace(phrase, "").strip()}
        )
    return {"hr-bench": hr, "mme-realworld": mme}


def _scoring(code: OfficialCode, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zoom-refine-golden-") as name:
        folder = Path(name)
        baseline = [
            {"cases": cases, "official": list(official_baseline_counts(code, folder, cases))}
            for cases in inputs.baseline_sets(rng, 80)
        ]
        zoom = [
            {
                "cases": [vars(case) for case in cases],
                "official": list(official_zoom_counts(code, folder, cases)),
            }
            for cases in inputs.zoom_sets(rng, 80)
        ]
    return {"baseline": baseline, "zoom-refine": zoom}


BASELINE_REPLIES = (
    "The answer is B",
    "B",
    "(c)",
    "Answer: D",
    "Based on the image, C",
    "I think it is (D)",
    "1234",
    "",
    "Rechecked Answer: C",
    "Option E",
    "xyz",
    "Error: CUDA Out of Memory",
)
TILE_SIZES = ((4096, 2304), (448, 448), (1000, 3000), (4000, 1000), (1345, 897), (97, 1200))
LIMIT_IMAGES = (("RGB", (1000, 800)), ("RGBA", (900, 700)), ("P", (800, 800)))
LIMITS = (300_000, 120_000)


def official_baseline_letter(code: OfficialCode, folder: Path, reply: str) -> str | None:
    """The letter `evaluate_predictions` reads from `reply`: the truth it scores correct (None
    when it does not count the reply)."""
    for truth in "ABCDE":
        correct, counted = official_baseline_counts(code, folder, [(truth, reply)])
        if counted == 0:
            return None
        if correct:
            return truth
    return None


def _baseline_letters(code: OfficialCode, rng: random.Random) -> list[dict[str, Any]]:
    import tempfile

    replies = [*BASELINE_REPLIES, *inputs.answer_replies(rng, 60)]
    with tempfile.TemporaryDirectory(prefix="zoom-refine-golden-") as name:
        return [
            {"reply": r, "letter": official_baseline_letter(code, Path(name), r)} for r in replies
        ]


def tile_input(size: tuple[int, int]) -> Any:
    """The image the tile-pixel rows are made from (regenerated by the replay)."""
    return inputs.base_image(random.Random(f"tiles-{size}"), *size)


def pixels_sha256(image: Any) -> str:
    import hashlib

    return hashlib.sha256(f"{image.mode} {image.size}".encode() + image.tobytes()).hexdigest()


def _tile_pixels(code: OfficialCode) -> list[dict[str, Any]]:
    rows = []
    for size in TILE_SIZES:
        image = tile_input(size)
        tiles = code.base["dynamic_preprocess"](
            image, image_size=448, use_thumbnail=True, max_num=12
        )
        rows.append(
            {
                "size": list(size),
                "input": pixels_sha256(image),
                "tiles": [pixels_sha256(tile) for tile in tiles],
            }
        )
    return rows


def limit_input(mode: str, size: tuple[int, int]) -> Any:
    """The image the lowered-limit rows are made from (regenerated by the replay)."""
    image = inputs.base_image(random.Random(f"limits-{mode}-{size}"), *size)
    if mode == "RGBA":
        image.putalpha(image.convert("L"))
    return image.convert(mode) if mode != "RGBA" else image


def _first_image_limits(code: OfficialCode) -> list[dict[str, Any]]:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="zoom-refine-golden-") as name:
        for mode, size in LIMIT_IMAGES:
            image = limit_input(mode, size)
            path = Path(name) / f"{mode}.png"
            image.save(path)
            for limit in LIMITS:
                found = code.base["compress_image_to_memory"](path, limit)
                data = found[0] if isinstance(found, tuple) else found
                rows.append(
                    {
                        "mode": mode,
                        "size": list(size),
                        "input": pixels_sha256(image),
                        "max_bytes": limit,
                        "sha256": verify.digest(data),
                    }
                )
    return rows


# --- replay --------------------------------------------------------------------------------------


def replay(
    document: dict[str, Any], *, image_data: dict[str, bytes] | None = None
) -> list[PartResult]:
    """The preset's outputs on the golden inputs against the recorded official ones. Images are
    checked when `image_data` (name → the regenerated file, the same bytes as recorded) is given,
    those named in it only."""
    parts = [PartResult(name) for name in ("boxes", "answers", "tiles", "questions", "scoring")]
    boxes, answers, tiles, questions, scoring = parts
    for item in document["boxes"]:
        size = (item["size"][0], item["size"][1])
        boxes.check(
            lambda i=item: f"reply={i['reply']!r} size={i['size']}",  # type: ignore[misc]
            item["official"],
            _list(verify.preset_crop(item["reply"], size)),
        )
    for item in document["answers"]:
        given = lambda i=item: f"reply={i['reply']!r}"  # noqa: E731
        answers.check(given, item["first"], parse_official_choice(item["reply"]))
        answers.check(
            given, item["rechecked"], parse_official_choice(item["reply"], rechecked=True)
        )
    for item in document["tiles"]:
        size = (item["size"][0], item["size"][1])
        tiles.check(
            lambda i=item: f"size={i['size']}",  # type: ignore[misc]
            item["grid"],
            list(closest_grid(size, 12, 448)),
        )
    _replay_questions(document["questions"], questions)
    for item in document["scoring"]["baseline"]:
        cases = [(truth, reply) for truth, reply in item["cases"]]
        scoring.check(
            lambda c=cases: f"baseline set {c!r}",  # type: ignore[misc]
            item["official"],
            list(ours(baseline_records(cases), "baseline", "official-baseline")),
        )
    for item in document["scoring"]["zoom-refine"]:
        zoom = [inputs.ZoomCase(**case) for case in item["cases"]]
        scoring.check(
            lambda c=zoom: f"zoom-refine set {c!r}",  # type: ignore[misc]
            item["official"],
            list(ours(zoom_records(zoom), "zoom-refine", "official-zoomrefine")),
        )
    if image_data is not None:
        parts.append(_replay_images(document["images"], image_data))
    return parts


def _replay_questions(questions: dict[str, list[dict[str, Any]]], result: PartResult) -> None:
    for benchmark, letters in (("hr-bench", "ABCD"), ("mme-realworld", "ABCDE")):
        for item in questions[benchmark]:
            row = item["row"]
            count = len(row.get("Answer choices", letters))
            sample = verify.sample_for(benchmark, row, letters[:count])  # type: ignore[arg-type]
            given = lambda r=row, b=benchmark: f"{b} row {r!r}"  # noqa: E731
            result.check(given, item["prompt"], official_prompt(benchmark, sample))  # type: ignore[arg-type]
            result.check(given, item["question"], official_question(benchmark, sample))  # type: ignore[arg-type]


def _replay_images(rows: list[dict[str, Any]], data: dict[str, bytes]) -> PartResult:
    import tempfile

    result = PartResult("images")
    with tempfile.TemporaryDirectory(prefix="zoom-refine-golden-") as folder:
        for row in rows:
            if row["name"] not in data:
                continue
            path = Path(folder) / row["name"].replace(";", "_")
            path.write_bytes(data[row["name"]])
            first = verify.digest(verify.preset_first_bytes(data[row["name"]]))
            result.check(
                lambda r=row: f"first-call bytes of {r['name']}",  # type: ignore[misc]
                row["first_sha256"],
                first,
            )
            for box, official in zip(verify.CROP_BOXES, row["crops"], strict=True):
                result.check(
                    lambda r=row, b=box: f"crop of {r['name']}, box {b}",  # type: ignore[misc]
                    official,
                    verify.preset_crop_pixels(path, box),
                )
    return result
