"""An invented checkout with the official repository's layout and function names, for testing
`zoom-refine official verify` without the real one. Its functions are ours (they call the
preset's own code), so it agrees with the preset everywhere except where a difference is planted:
each plant changes one behaviour in one part, and the verifier must report it."""

from __future__ import annotations

from pathlib import Path

from zoom_refine.evals.prompts import (
    OFFICIAL_CHOICES_HEADER,
    OFFICIAL_CUE,
    OFFICIAL_RESPOND_FIVE,
    OFFICIAL_RESPOND_FOUR,
    OFFICIAL_SELECT,
)

PLANTS = (
    "first_box",
    "refine_fallback",
    "six_tiles",
    "no_truncated",
    "four_letter_phrase",
    "count_unanswered",
    "raises_on_empty",
)
"""Planted differences: the parts each shows up in are `PLANT_PARTS[plant]`."""

PLANT_PARTS = {
    "first_box": ("boxes",),
    "refine_fallback": ("answers", "scoring"),  # the Zoom-Refine records use the refine parser
    "six_tiles": ("tiles",),
    "no_truncated": ("images",),
    "four_letter_phrase": ("questions",),
    "count_unanswered": ("scoring",),
    "raises_on_empty": ("answers", "scoring"),  # reported as `raised …`, the run goes on
}

_BASE = """
import os
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = {truncated}

MAX_SIZE_BYTES = 7 * 1024 * 1024
MAX_WIDTH = 4096
MAX_HEIGHT = 4096


def compress_image_to_memory(image_path, max_size_bytes=MAX_SIZE_BYTES, initial_quality=85,
                             min_quality=10, max_width=MAX_WIDTH, max_height=MAX_HEIGHT):
    from zoom_refine.tools.official_image import _official_first_image
    from zoom_refine.tools.errors import ImageLoadError
    data = open(image_path, "rb").read()
    try:
        prepared = _official_first_image(data, "x")
    except ImageLoadError:
        return None, None, None
    return prepared.data, 0, 0


def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    from zoom_refine.tools.official_image import closest_grid
    return closest_grid((width, height), max(r[0] * r[1] for r in target_ratios), image_size)


def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=False):
    max_num = {max_tiles} if max_num > {max_tiles} else max_num
    ratios = [(i, j) for i in range(1, max_num + 1) for j in range(1, max_num + 1) if i * j <= max_num]
    columns, rows = find_closest_aspect_ratio(0, ratios, image.size[0], image.size[1], image_size)
    resized = image.resize((columns * image_size, rows * image_size))
    tiles = [resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
             for r in range(rows) for c in range(columns)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def parse_bbox(response_text):
    from zoom_refine.agent.parsing import _OFFICIAL_BOX
    from zoom_refine.agent.regions import official_clamp
    found = list(_OFFICIAL_BOX.finditer(response_text))
    if not found:
        return None
    try:
        box = [float(v) for v in found[{which}].groups()]
    except ValueError:
        return None
    if not (box[0] < box[2] and box[1] < box[3]):
        return None
    clamped = official_clamp(tuple(box))
    return None if clamped is None else list(clamped)


def expand_bbox(bbox_norm, padding=0.1):
    return list(bbox_norm)


def extract_letter_choice(response_text):
    from zoom_refine.agent.parsing import parse_official_choice
    if {raises_on_empty} and not response_text:
        raise TypeError("planted: no reply")
    return parse_official_choice(response_text or "")


def parse_rechecked_answer(response_text):
    from zoom_refine.agent.parsing import parse_official_choice
    found = parse_official_choice(response_text or "", rechecked=True)
    if found is None and {refine_fallback}:
        found = parse_official_choice(response_text or "")
    return found


def crop_image_from_bbox(original_image_path, bbox_norm, original_width, original_height):
    import io
    from zoom_refine.tools.boxes import Box
    from zoom_refine.tools.official_image import official_crop_box
    try:
        with Image.open(original_image_path) as img:
            if img.mode != "RGB":
                img = img.convert("RGB")
            box = official_crop_box(bbox_norm, Box.full((original_width, original_height)))
            cropped = img.crop((box.x1, box.y1, box.x2, box.y2))
            out = io.BytesIO()
            cropped.save(out, format="JPEG", quality=95)
            return out.getvalue()
    except Exception:
        return None


for entry in []:
    phrase_to_remove = {phrase!r}
"""

_EVAL_ACC = """
import json
import re


def evaluate_predictions(json_filepath, n, m, verbose=False):
    data = json.load(open(json_filepath, encoding="utf-8"))
    counted = correct = 0
    for entry in data[n - 1:m]:
        truth = entry["messages"][1]["content"].strip().upper()
        if not re.fullmatch(r"[A-E]", truth):
            continue
        reply = entry.get("predicted_answer")
        found = re.search(r"[A-Ea-e]", reply) if isinstance(reply, str) else None
        if found is None:
            continue
        counted += 1
        correct += found.group(0).upper() == truth
    print(f"Entries successfully extracted and compared: {counted}")
    if counted:
        print(f"Number of correct answers: {correct}")
"""

_ZOOMREFINE_ACC = """
import json


def calculate_accuracies(json_file_path):
    data = json.load(open(json_file_path, encoding="utf-8"))
    total = combined = 0
    for item in data:
        truth = next((m["content"] for m in item["messages"] if m["role"] == "assistant"), None)
        if truth is None or (item.get("Answer") is None and not {count_unanswered}):
            continue
        total += 1
        final = item.get("Rechecked Answer")
        combined += truth == (final if final is not None else item.get("Answer"))
    return {{"counts": {{"total": total, "correct_combined": combined}}}}
"""

_CONVERT = """
import json


def transform_json_data(input_json_string):
    out = []
    for item in json.loads(input_json_string):
        choices = "\\n".join(item.get("Answer choices", []))
        content = item.get("Text", "") + {header!r} + choices + "\\n" + {select!r} + {five!r} + "\\n" + {cue!r}
        out.append({{"messages": [{{"role": "user", "content": content}},
                    {{"role": "assistant", "content": item.get("Ground truth", "")}}]}})
    return json.dumps(out)
"""

_BUILD_JSON = """
rows = []
for row in rows:
    user_content = (
        f"{{question}}\\n" + {header!r} + f"(A) {{choice_a}}\\n(B) {{choice_b}}\\n(C) {{choice_c}}\\n(D) {{choice_d}}\\n"
        + {select!r} + {four!r} + "\\n" + {cue!r}
    )
"""


def write_fixture_checkout(root: Path, plants: tuple[str, ...] = ()) -> Path:
    """Write the invented checkout under `root` with the named `plants` (see `PLANTS`)."""
    unknown = set(plants) - set(PLANTS)
    assert not unknown, unknown
    texts = {
        "header": OFFICIAL_CHOICES_HEADER,
        "select": OFFICIAL_SELECT,
        "cue": OFFICIAL_CUE,
        "five": OFFICIAL_RESPOND_FIVE,
        "four": OFFICIAL_RESPOND_FOUR,
    }
    files = {
        "zoomrefine/ZoomRefine_Base.py": _BASE.format(
            truncated="no_truncated" not in plants,
            max_tiles=6 if "six_tiles" in plants else 12,
            which=0 if "first_box" in plants else -1,
            refine_fallback="refine_fallback" in plants,
            raises_on_empty="raises_on_empty" in plants,
            phrase=OFFICIAL_RESPOND_FOUR
            if "four_letter_phrase" in plants
            else OFFICIAL_RESPOND_FIVE,
        ),
        "evaluation/eval_acc.py": _EVAL_ACC,
        "zoomrefine/zoomrefine_acc.py": _ZOOMREFINE_ACC.format(
            count_unanswered="count_unanswered" in plants
        ),
        "scripts/convert.py": _CONVERT.format(**texts),
        "evaluation/build_json.py": _BUILD_JSON.format(**texts),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
