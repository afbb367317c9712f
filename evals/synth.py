"""Synthetic HR-Bench data for offline experiments: scenes whose answer is legible only up close.

Each row is a large image (`side` × 3/4 `side` pixels) of coloured clutter and a few blank white
plates, one of which carries a small target of about `target_px` pixels: a two-digit code
(`text`), a shape (`marker`) or a cluster of dots (`count`). Shown whole at a model's first-view
size (a 448-px InternVL thumbnail of a 4096-px scene is 1/9 of it) the target is a couple of pixels
and cannot be read; a crop around it reads at once. The target's box is stored per row
(`target_box`, `[x1, y1, x2, y2]` in pixels of the original) so a report can score each hop's box.

Rows are VLMEvalKit's HR-Bench TSV (`index, question, A–D, answer, category, cycle_category,
target_box, image` as base64 PNG) and load through `evals.hr_bench` as the real benchmark does.
Everything is drawn from `random.Random(f"{seed}:{index}")`: the same seed writes the same bytes.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from zoom_refine.tools.errors import InvalidInputError

KINDS = ("text", "marker", "count")
"""The target kinds, in turn by row index (row i is `KINDS[i % 3]`): each row's `category`, so
the report breaks accuracy down by kind. Each row is its own `cycle_category` (HR-Bench's cycles
are one question with its options rotated; these questions are all distinct), so HR-Bench's
cycle mean equals plain accuracy."""
COLUMNS = (
    "index",
    "question",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "cycle_category",
    "target_box",
    "image",
)
DEFAULT_SIDE = 4096
DEFAULT_TARGET_PX = 24
MIN_SIDE = 256
MAX_SIDE = 16384
MAX_ROWS = 100_000
MIN_TARGET_PX = 8
BAD_N = "--n must be within 1..{most}, got {value}"
BAD_SIDE = "--side must be within {least}..{most} pixels, got {value}"
BAD_TARGET = "--target-px must be within {least}..{most} (a sixteenth of --side), got {value}"

# 5 × 7 bitmap digits: each row of a glyph is 5 cells, '#' drawn.
DIGITS = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
}
SHAPES = ("circle", "square", "triangle", "cross")
COUNTS = ("2", "3", "4", "5")
QUESTIONS = {
    "text": "What two-digit number is printed on the small white sign?",
    "marker": "What shape is drawn on the small white sign?",
    "count": "How many dots are on the small white sign?",
}
PLATE = (255, 255, 255)
INK = (20, 20, 20)
DECOY_PLATES = 3
CLUTTER = 40


@dataclass(frozen=True)
class Scene:
    """One synthesized row before encoding: its image, question, options, answer and box."""

    index: int
    kind: str
    image: Image.Image
    question: str
    options: tuple[str, str, str, str]
    answer: str
    """The correct letter, A–D."""
    target_box: tuple[int, int, int, int]
    """`(x1, y1, x2, y2)` of the target's plate, in pixels of `image` (x2, y2 exclusive)."""


def check_settings(n: int, side: int, target_px: int) -> None:
    """Refuse sizes that cannot make the promised scene (one InvalidInputError line)."""
    if not 1 <= n <= MAX_ROWS:
        raise InvalidInputError(BAD_N.format(most=MAX_ROWS, value=n))
    if not MIN_SIDE <= side <= MAX_SIDE:
        raise InvalidInputError(BAD_SIDE.format(least=MIN_SIDE, most=MAX_SIDE, value=side))
    if not MIN_TARGET_PX <= target_px <= side // 16:
        raise InvalidInputError(
            BAD_TARGET.format(least=MIN_TARGET_PX, most=side // 16, value=target_px)
        )


def scenes(
    n: int, *, side: int = DEFAULT_SIDE, target_px: int = DEFAULT_TARGET_PX, seed: int = 0
) -> Iterator[Scene]:
    """The `n` scenes of this seed, drawn one at a time (each image is held only while used)."""
    check_settings(n, side, target_px)
    for index in range(n):
        yield make_scene(index, side=side, target_px=target_px, seed=seed)


def make_scene(index: int, *, side: int, target_px: int, seed: int) -> Scene:
    """Row `index`: clutter, decoy plates, and the target plate at a random place."""
    rng = random.Random(f"{seed}:{index}")
    kind = KINDS[index % len(KINDS)]
    width, height = side, side * 3 // 4
    image = Image.new("RGB", (width, height), _muted(rng))
    draw = ImageDraw.Draw(image)
    plate_w, plate_h = _plate_size(kind, target_px)
    margin = 4 * target_px
    x1 = rng.randrange(margin, width - margin - plate_w)
    y1 = rng.randrange(margin, height - margin - plate_h)
    box = (x1, y1, x1 + plate_w, y1 + plate_h)
    _clutter(draw, rng, (width, height), keep_clear=box, margin=margin)
    _decoys(draw, rng, (width, height), (plate_w, plate_h), keep_clear=box, margin=margin)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=PLATE)
    truth, options = _draw_target(draw, rng, kind, box, target_px)
    letters = "ABCD"
    return Scene(
        index=index,
        kind=kind,
        image=image,
        question=QUESTIONS[kind],
        options=options,
        answer=letters[options.index(truth)],
        target_box=box,
    )


def _plate_size(kind: str, target_px: int) -> tuple[int, int]:
    """(width, height) of the target's plate: a text plate is two glyphs wide (13 × 9 cells)."""
    if kind == "text":
        unit = _text_unit(target_px)
        return 13 * unit, 9 * unit
    return target_px, target_px


def _text_unit(target_px: int) -> int:
    """Pixels per glyph cell so that a two-digit sign is about `target_px` wide."""
    return max(1, round(target_px / 13))


def _muted(rng: random.Random) -> tuple[int, int, int]:
    red, green, blue = (rng.randrange(60, 200) for _ in range(3))
    return red, green, blue


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int) -> bool:
    return not (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def _clutter(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    size: tuple[int, int],
    *,
    keep_clear: tuple[int, int, int, int],
    margin: int,
) -> None:
    """Large muted rectangles and ellipses, never over the target's plate."""
    width, height = size
    for _ in range(CLUTTER):
        w = rng.randrange(width // 40, width // 6)
        h = rng.randrange(height // 40, height // 6)
        x, y = rng.randrange(0, width - w), rng.randrange(0, height - h)
        shape = (x, y, x + w, y + h)
        if _overlaps(shape, keep_clear, margin):
            continue
        fill = _muted(rng)
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=fill)
        else:
            draw.ellipse((x, y, x + w - 1, y + h - 1), fill=fill)


def _decoys(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    size: tuple[int, int],
    plate: tuple[int, int],
    *,
    keep_clear: tuple[int, int, int, int],
    margin: int,
) -> None:
    """Blank plates the size of the target's, so that a white speck alone does not answer."""
    width, height = size
    for _ in range(DECOY_PLATES):
        x = rng.randrange(margin, width - margin - plate[0])
        y = rng.randrange(margin, height - margin - plate[1])
        box = (x, y, x + plate[0], y + plate[1])
        if not _overlaps(box, keep_clear, margin):
            draw.rectangle((x, y, box[2] - 1, box[3] - 1), fill=PLATE)


def _draw_target(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    kind: str,
    box: tuple[int, int, int, int],
    target_px: int,
) -> tuple[str, tuple[str, str, str, str]]:
    """Draw the target on its plate; returns the true option text and the four options."""
    if kind == "text":
        codes = rng.sample(range(10, 100), 4)
        truth = str(codes[0])
        _draw_digits(draw, truth, box, _text_unit(target_px))
        options = [str(code) for code in codes]
    elif kind == "marker":
        truth = rng.choice(SHAPES)
        _draw_shape(draw, truth, box)
        options = list(SHAPES)
    else:
        truth = rng.choice(COUNTS)
        _draw_dots(draw, rng, int(truth), box)
        options = list(COUNTS)
    rng.shuffle(options)
    return truth, (options[0], options[1], options[2], options[3])


def _draw_digits(
    draw: ImageDraw.ImageDraw, code: str, box: tuple[int, int, int, int], unit: int
) -> None:
    """Two 5 × 7 glyphs, one cell apart, inside a one-cell border."""
    for position, digit in enumerate(code):
        left = box[0] + unit * (1 + 6 * position)
        for row, line in enumerate(DIGITS[digit]):
            for column, cell in enumerate(line):
                if cell == "#":
                    x, y = left + column * unit, box[1] + unit * (1 + row)
                    draw.rectangle((x, y, x + unit - 1, y + unit - 1), fill=INK)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int]) -> None:
    side = box[2] - box[0]
    pad = max(1, side // 6)
    x1, y1, x2, y2 = box[0] + pad, box[1] + pad, box[2] - 1 - pad, box[3] - 1 - pad
    if shape == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=INK)
    elif shape == "square":
        draw.rectangle((x1, y1, x2, y2), fill=INK)
    elif shape == "triangle":
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=INK)
    else:
        bar = max(1, side // 6)
        middle_x, middle_y = (x1 + x2) // 2, (y1 + y2) // 2
        draw.rectangle((middle_x - bar // 2, y1, middle_x + bar // 2, y2), fill=INK)
        draw.rectangle((x1, middle_y - bar // 2, x2, middle_y + bar // 2), fill=INK)


def _draw_dots(
    draw: ImageDraw.ImageDraw, rng: random.Random, count: int, box: tuple[int, int, int, int]
) -> None:
    """`count` dots on a 3 × 3 grid of the plate (distinct cells, so none touch)."""
    cell = (box[2] - box[0]) // 3
    radius = max(1, cell // 3)
    for place in rng.sample(range(9), count):
        cx = box[0] + cell * (place % 3) + cell // 2
        cy = box[1] + cell * (place // 3) + cell // 2
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=INK)


def scene_row(scene: Scene) -> dict[str, str]:
    """The TSV row of a scene: text cells, `target_box` as JSON, the image as base64 PNG."""
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG", compress_level=6)
    return {
        "index": str(scene.index),
        "question": scene.question,
        "A": scene.options[0],
        "B": scene.options[1],
        "C": scene.options[2],
        "D": scene.options[3],
        "answer": scene.answer,
        "category": scene.kind,
        "cycle_category": f"cycle-{scene.index}",
        "target_box": json.dumps(list(scene.target_box)),
        "image": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


def write_synth_tsv(
    out: Path,
    n: int,
    *,
    side: int = DEFAULT_SIDE,
    target_px: int = DEFAULT_TARGET_PX,
    seed: int = 0,
) -> Path:
    """Write `n` scenes as an HR-Bench TSV at `out` (replaced whole: a partial file never
    stays behind). Returns `out`."""
    check_settings(n, side, target_px)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            for scene in scenes(n, side=side, target_px=target_px, seed=seed):
                writer.writerow(scene_row(scene))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def parse_target_box(text: object) -> tuple[float, float, float, float] | None:
    """A `target_box` cell (`[x1, y1, x2, y2]` as JSON) as numbers, or None when absent or
    unreadable (a dataset without boxes simply has no IoU figures)."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list) or len(value) != 4:
        return None
    if not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
        return None
    x1, y1, x2, y2 = (float(item) for item in value)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
