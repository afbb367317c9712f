"""Generated inputs for `zoom-refine official verify`: model replies, image sizes, image files in
every Pillow mode around the official 4096 px / 7 MiB limits, benchmark rows and prediction sets
with failures. Deterministic for a seed (and a Pillow version, for the encoded images)."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

_BOX_LABELS = ("Bounding box", "bbox", "**Bounding box**", "BBOX", "Bounding Box", "bounding box")
_COLONS = (":", "：", " :", "", ": **", "**:")
_ANSWER_LABELS = (
    "Answer",
    "**Answer**",
    "Rechecked Answer",
    "answer",
    "ANSWER",
    "**Rechecked Answer**",
    "Rechecked answer",
    "Final Answer",
    "Answers",
)
_FILLERS = (
    "",
    "The image shows a red car. ",
    "Because of the sign, ",
    "\n",
    "Based on the table, ",
    "Confidence: 0.8\n",
    "I think ",
    "]",
    "e",
    "(",
)

TRICKY_BOXES = (
    "Answer: B\nBounding box: [0.2, 0.2, 0.6, 0.6]",
    "Bounding box: [0, 0, 500, 600]",
    "bbox [0.6, 0.1, 0.2, 0.5]",
    "Bounding box: [1.2.3, 0.1, 0.5, 0.5]",
    "Bounding box: [-0.1, 0.2, 0.5, 0.6]",
    "Bounding box: [0.1, 0.2, 0.5, 0.6] then bbox: [0.3, 0.3, 0.9, 0.9]",
    "Bounding box: [1e-2, 0.2, 0.5, 0.6]",
    "Bounding box: [.5, .5, 5., 1]",
    "Bounding box: [1.5, 1.5, 2, 2]",
    "**Bounding box**: **[0.25,0.25,0.75,0.75]",
    "Bounding box：[0.05, 0.95, 0.06, 0.99]",
    "Bounding box: [0.999999, 0.5, 1.0, 0.7]",
)


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return f"{rng.uniform(0.0, 1.0):.{rng.choice((1, 2, 3, 4))}f}"
    if kind < 0.7:
        return str(rng.randint(0, 1000))
    if kind < 0.8:
        return f"{rng.uniform(-0.3, 1.4):.2f}"
    return rng.choice(("0", "1", "1.0", ".5", "5.", "1.2.3", "1e-2", "0.", "00.10", "-0"))


def box_replies(rng: random.Random, count: int) -> list[str]:
    """Localize replies: labelled boxes in many spellings, frames and orders, some tricky."""
    replies = list(TRICKY_BOXES)
    while len(replies) < count:
        parts = []
        for _ in range(rng.choice((1, 1, 1, 2))):
            numbers = [_number(rng) for _ in range(4)]
            if rng.random() < 0.6:  # mostly ordered corners
                low = sorted([numbers[0], numbers[2]], key=_as_float)
                high = sorted([numbers[1], numbers[3]], key=_as_float)
                numbers = [low[0], high[0], low[1], high[1]]
            sep = rng.choice((", ", ",", " , ", ",  "))
            label = rng.choice(_BOX_LABELS) + rng.choice(_COLONS) + rng.choice(("", " "))
            parts.append(f"{rng.choice(_FILLERS)}{label}[{sep.join(numbers)}]")
        replies.append(rng.choice(("Answer: B\n", "", "Answer: (C)\n")) + "\n".join(parts))
    return replies[:count]


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def image_sizes(rng: random.Random, count: int) -> list[tuple[int, int]]:
    """(width, height) pairs from 28 to 8000 px, edges included."""
    sizes = [(28, 28), (8000, 8000), (7680, 4320), (3840, 2160), (448, 448), (1, 1), (4097, 33)]
    while len(sizes) < count:
        sizes.append((rng.randint(28, 8000), rng.randint(28, 8000)))
    return sizes[:count]


def answer_replies(rng: random.Random, count: int) -> list[str]:
    """Replies holding answer labels with bracketed, bare and glued letters in either case."""
    letters = "ABCDEFabcdef"
    shapes = ("({})", "[{}]", "{}", "( {} )", "{})", "[{}", "{}yz", " {} ", "**{}**", "{}.")
    replies = ["", "Answer:", "Rechecked Answer: because", "\nRechecked Answer:D]Confidence: 0.9\n"]
    while len(replies) < count:
        parts = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            label = rng.choice(_ANSWER_LABELS) + rng.choice(_COLONS[:4]) + rng.choice(("", " "))
            shape = rng.choice(shapes).format(rng.choice(letters))
            parts.append(rng.choice(_FILLERS) + label + shape)
        replies.append(rng.choice(("\n", " ", "")).join(parts))
    return replies[:count]


def tile_sizes(rng: random.Random, count: int) -> list[tuple[int, int]]:
    """Image sizes for the tile grid: 1 px to 9000 px, thin ones and exact ratios included."""
    sizes = [(448 * c, 448 * r) for c in range(1, 7) for r in range(1, 7)]
    sizes += [(1, 1), (1, 9000), (9000, 1), (224, 224), (897, 448)]
    while len(sizes) < count:
        if rng.random() < 0.3:
            base = rng.randint(1, 600)
            sizes.append((base * rng.randint(1, 12), base * rng.randint(1, 12)))
        else:
            sizes.append((rng.randint(1, 9000), rng.randint(1, 9000)))
    return sizes[:count]


_TEXTS = (
    "What colour is the car?",
    "How many people are there",
    "Line one\nline two?",
    "",
    'A "quoted" word\tand a tab?',
    "Respond with only the letter (A, B, C, D, or E) of the correct option",
    "  padded question  ",
    "Which sign?\n",
    "数字是多少？",
)
_VALUES: tuple[Any, ...] = (
    "red",
    "blue car",
    "",
    3,
    3.0,
    2.5,
    float("nan"),
    None,
    "line\nbreak",
    "tab\there",
    '"quoted"',
    "(A) red",
    0,
    -1.5,
    True,
    "  spaced ",
)


def hr_bench_rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """HR-Bench rows as pandas hands them to the conversion: question and A–D of any type."""
    return [
        {"question": rng.choice(_TEXTS)} | {letter: rng.choice(_VALUES) for letter in "ABCD"}
        for _ in range(count)
    ]


def mme_rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """MME-RealWorld items as its JSON stores them: `Text` and the `Answer choices` strings."""
    rows = []
    for _ in range(count):
        choices = [f"({letter}) {rng.choice(_VALUES)}" for letter in "ABCDE"[: rng.randint(2, 5)]]
        if rng.random() < 0.2:
            choices = [str(rng.choice(_VALUES)) for _ in choices]
        rows.append({"Text": rng.choice(_TEXTS), "Answer choices": choices})
    return rows


FAILURE_TEXTS = (
    "Error: CUDA Out of Memory",
    "Error: Model inference failed - boom",
    "Error: Image too large or failed compression check",
)
"""Texts the official baseline stores for a failed sample (`evaluation/base.py`)."""

ZOOM_KINDS = ("ok", "ok", "ok", "no_box", "refine_failed", "first_failed")


@dataclass(frozen=True)
class ZoomCase:
    """One Zoom-Refine sample's outcome: what each call replied, or where it failed."""

    kind: str
    truth: str
    first: str | None
    second: str | None


def baseline_sets(rng: random.Random, count: int) -> list[list[tuple[str, str | None]]]:
    """Prediction sets of (truth, reply or None for a failure), failures in most."""
    replies = [*answer_replies(rng, 200), "B", "(c)", "The answer is B", "1234", "xyz"]
    sets = []
    for _ in range(count):
        size = rng.randint(1, 8)
        sets.append(
            [
                (rng.choice("ABCDE"), None if rng.random() < 0.25 else rng.choice(replies))
                for _ in range(size)
            ]
        )
    return sets


def zoom_sets(rng: random.Random, count: int) -> list[list[ZoomCase]]:
    """Prediction sets of Zoom-Refine outcomes (a refine call that fails included)."""
    replies = answer_replies(rng, 300)
    return [
        [
            ZoomCase(
                rng.choice(ZOOM_KINDS),
                rng.choice("ABCDE"),
                rng.choice(replies),
                rng.choice(replies),
            )
            for _ in range(rng.randint(1, 8))
        ]
        for _ in range(count)
    ]


# --- images --------------------------------------------------------------------------------------

OVER_BYTES = 7 * 1024 * 1024 + 1
"""A file this long is over the official byte limit (padding after the image's end)."""


@dataclass(frozen=True)
class ImageCase:
    """One generated image file."""

    name: str
    data: bytes


def image_cases(rng: random.Random, *, big: bool = True) -> Iterator[ImageCase]:
    """Images in every Pillow mode the benchmarks' files hold (alpha, 16-bit, palette with a
    transparent colour, CMYK, 1-bit, 32-bit, float), EXIF-rotated and truncated, at sizes just
    within and just over 4096 px, and padded just over 7 MiB (`big`)."""
    sizes = [(53, 37)] + ([(4096, 12), (4097, 12), (12, 4097)] if big else [])
    for width, height in sizes:
        for kind in IMAGE_KINDS:
            data = _encode(kind, base_image(rng, width, height))
            yield ImageCase(f"{kind}-{width}x{height}", data)
    if big:
        for kind in IMAGE_KINDS:
            data = _encode(kind, base_image(rng, 41, 29))
            yield ImageCase(f"{kind}-padded", data + b"\0" * max(0, OVER_BYTES - len(data)))


IMAGE_KINDS = (
    "RGB.png",
    "RGB.jpg",
    "RGBA.png",
    "LA.png",
    "L.png",
    "L.jpg",
    "I;16.png",
    "P.png",
    "P-transparent.png",
    "P-transparent.gif",
    "1.png",
    "CMYK.jpg",
    "CMYK.tif",
    "I.tif",
    "F.tif",
    "RGBA.webp",
    "exif-rotated.jpg",
    "truncated.jpg",
    "truncated.png",
)


def base_image(rng: random.Random, width: int, height: int) -> Image.Image:
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return Image.blend(noise, gradient, 0.6)


def _encode(kind: str, image: Image.Image) -> bytes:
    mode, fmt = kind.rsplit(".", 1)
    out = io.BytesIO()
    save: dict[str, Any] = {"format": {"jpg": "JPEG", "tif": "TIFF"}.get(fmt, fmt.upper())}
    if mode in ("RGBA", "LA"):
        alpha = image.convert("L").point(lambda v: (v * 7) % 256)
        image = image.convert(mode[:-1]).convert(mode) if mode == "LA" else image.convert("RGBA")
        image.putalpha(alpha)
    elif mode == "I;16":
        image = image.convert("L").point(lambda v: v * 250, "I").convert("I;16")
    elif mode == "I":
        image = image.convert("L").point(lambda v: v * 1000 - 40_000, "I")
    elif mode == "F":
        image = image.convert("L").convert("F").point(lambda v: v * 3.5 - 100)
    elif mode.startswith("P"):
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        if mode == "P-transparent":
            save["transparency"] = 0
    elif mode == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        save["exif"] = exif.tobytes()
    elif mode in ("1", "L", "CMYK"):
        image = image.convert(mode)
    image.save(out, **save)
    data = out.getvalue()
    return data[: len(data) * 3 // 5] if mode == "truncated" else data
