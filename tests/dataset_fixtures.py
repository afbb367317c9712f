"""Small benchmark files in each exact on-disk format, for loader and end-to-end tests.

Every `write_*` function writes into the folder it is given (created if needed) and returns the path
to hand to `load_samples(benchmark, path)`. Images are tiny JPEGs (32×24 px) of one flat colour
each (see `COLORS`), so a test can check which image a sample got by decoding it. Each file holds a
handful of valid rows and exactly one malformed row, listed in its docstring. Column layouts follow
the real files: HR-Bench and MME-RealWorld TSVs as VLMEvalKit reads them (base64 image cells; a cell
of ≤ 64 characters names another row's `index` whose image it reuses), MME-RealWorld's official
JSON, V* Bench's folder layout and its `test_questions.jsonl`.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 200, 40),
    "blue": (20, 40, 220),
    "yellow": (230, 220, 20),
    "white": (250, 250, 250),
}
"""The flat colours of the fixture images, by name."""

NOT_AN_IMAGE = b"this is plain text, not an image; " * 4
"""Bytes of the malformed image cells (long enough not to look like an index reference)."""


def jpeg_bytes(color: str, size: tuple[int, int] = (32, 24)) -> bytes:
    """A small JPEG of one flat colour from `COLORS`."""
    buffer = io.BytesIO()
    Image.new("RGB", size, COLORS[color]).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def photo_like(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth colour fields, fine grain and small text: compresses and resizes like a photo."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = rng.integers(0, 255, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    grain = rng.normal(0, 6, (height, width, 1))
    image = Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(max(1, width * height // 60_000)):
        x, y = int(rng.integers(0, max(1, width - 120))), int(rng.integers(0, max(1, height - 20)))
        draw.text((x, y), "Platform 7 Geneva", fill=(0, 0, 0))
    return image


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dominant_color(data: bytes) -> str:
    """The `COLORS` name nearest to the centre pixel of an encoded image (to identify images)."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        pixel = rgb.getpixel((rgb.width // 2, rgb.height // 2))
    assert isinstance(pixel, tuple)
    return min(
        COLORS,
        key=lambda name: sum((a - b) ** 2 for a, b in zip(COLORS[name], pixel, strict=False)),
    )


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A TSV as pandas' `to_csv(sep="\\t", index=False)` writes it (minimal quoting, `""` escapes,
    `\\n` line ends). Rows may be shorter than the header (to make malformed rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if cell is None else cell for cell in row])
    return path


# --- HR-Bench ------------------------------------------------------------------------------------

HR_HEADER = (
    "index",
    "question",
    "answer",
    "category",
    "A",
    "B",
    "C",
    "D",
    "cycle_category",
    "image",
)

HR_QUESTION_0 = 'What colour is the "EXIT" sign?\tLook at the\nupper left corner.'
"""Row 0's question: a quote, a tab and a newline, so the TSV cell must be quoted."""


def _hr_rows(image_cell: Any) -> list[list[Any]]:
    red, blue = image_cell("red"), image_cell("blue")
    return [
        [0, HR_QUESTION_0, "A", "single", "red", "blue", "green", "white", "cycle1", red],
        [1, HR_QUESTION_0, "D", "single", "blue", "green", "white", "red", "cycle2", "0"],
        [2, "How many cars are parked?", "C", "cross", "1", "2", "3", "4", "cycle1", blue],
        [3, "How many cars are parked?", "B", "cross", "2", "3", "4", "1", "cycle2", "2"],
        [4, "Which shop is open?", "A", "single", "bakery", "bank", "bar", "books", "cycle1", None],
        [5, HR_QUESTION_0, "B", "single", "white", "red", "blue", "green", "cycle3", "0"],
    ]


def write_hr_bench_tsv(folder: Path, name: str = "hr_bench_4k.tsv") -> Path:
    """HR-Bench TSV (columns `HR_HEADER`), six rows:

    | index | image cell            | answer | category | cycle_category | question        |
    | 0     | red JPEG (base64)     | A red  | single   | cycle1         | `HR_QUESTION_0` |
    | 1     | "0" → row 0's image   | D red  | single   | cycle2         | `HR_QUESTION_0` |
    | 2     | blue JPEG (base64)    | C 3    | cross    | cycle1         | cars            |
    | 3     | "2" → row 2's image   | B 3    | cross    | cycle2         | cars            |
    | 4     | MALFORMED: base64 of text (`NOT_AN_IMAGE`), not an image → BadRow("4")   |
    | 5     | "0" → row 0's image   | B red  | single   | cycle3         | `HR_QUESTION_0` |

    Options are columns A–D (the text after each answer letter above). Row 5 refers back past the
    blue image and the bad row (with a small image cache it must be re-read from disk).
    """

    def cell(color: str) -> str:
        return b64(jpeg_bytes(color))

    rows = _hr_rows(cell)
    rows[4][-1] = b64(NOT_AN_IMAGE)
    return write_tsv(folder / name, HR_HEADER, rows)


def write_hr_bench_parquet(
    folder: Path, name: str = "hr_bench_4k.parquet", *, image_bytes: bool = False
) -> Path:
    """HR-Bench as parquet: the same six rows, ids, answers and malformed row 4 as
    `write_hr_bench_tsv`, in row groups of two rows (`index` int64, other columns strings).

    `image_bytes=False`: the image column is text (base64, or the index reference "0" / "2", as in
    a parquet export of the TSV). `image_bytes=True`: a binary column holding every row's JPEG
    bytes (no references); row 4 holds `NOT_AN_IMAGE`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    def text_cell(color: str) -> str:
        return b64(jpeg_bytes(color))

    rows = _hr_rows(text_cell)
    if image_bytes:
        colors = {0: "red", 1: "red", 2: "blue", 3: "blue", 5: "red"}
        for row in rows:
            index = row[0]
            row[-1] = NOT_AN_IMAGE if index == 4 else jpeg_bytes(colors[index])
    else:
        rows[4][-1] = b64(NOT_AN_IMAGE)
    columns: dict[str, list[Any]] = {
        name: [row[i] for row in rows] for i, name in enumerate(HR_HEADER)
    }
    table = pa.table(
        {
            name: pa.array(values, type=_parquet_type(name, image_bytes))
            for name, values in columns.items()
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(table, path, row_group_size=2)
    return path


def _parquet_type(name: str, image_bytes: bool) -> Any:
    import pyarrow as pa

    if name == "index":
        return pa.int64()
    if name == "image" and image_bytes:
        return pa.binary()
    return pa.string()


# --- MME-RealWorld -------------------------------------------------------------------------------


def write_mme_json(folder: Path, name: str = "MME_RealWorld.json") -> Path:
    """MME-RealWorld official JSON (a list of questions) with its images under `folder`:

    | Question_id                                        | Image (under folder)                 | Ground truth | Subtask / Category |
    | Perception/Autonomous_Driving/Objects_Identify/0000 | AutonomousDriving/nuScenes/cam_0001.jpg (red)  | D | Autonomous_Driving / Objects_Identify |
    | perception/monitoring/Vehicle/counting/0310        | monitoring_images/0000334.jpg (green) | E | Monitoring / Vehicle/counting |
    | perception/monitoring/person/attribute/color/0007  | monitoring_images/0000335.jpg (blue)  | B | Monitoring / person/attribute/color |
    | MALFORMED reasoning/diagram_and_table/diagram/0020 | diagram_and_table/chart.jpg (white)   | F (no option F) → BadRow |

    Each has five options "(A) …" to "(E) …" and Task "Perception" (the last "Reasoning").
    """
    images = {
        "AutonomousDriving/nuScenes/cam_0001.jpg": "red",
        "monitoring_images/0000334.jpg": "green",
        "monitoring_images/0000335.jpg": "blue",
        "diagram_and_table/chart.jpg": "white",
    }
    for relative, color in images.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg_bytes(color))
    items = [
        {
            "Question_id": "Perception/Autonomous_Driving/Objects_Identify/0000",
            "Question Type": "Multiple Choice",
            "Image": "AutonomousDriving/nuScenes/cam_0001.jpg",
            "Text": "What are the objects to the front of the ego car?",
            "Answer choices": [
                "(A) Many cars and one pedestrian.",
                "(B) Many pedestrians and one truck.",
                "(C) Three pedestrians.",
                "(D) Many cars and one truck.",
                "(E) All the above answers are wrong.",
            ],
            "Ground truth": "D",
            "Task": "Perception",
            "Subtask": "Autonomous_Driving",
            "Category": "Objects_Identify",
            "Dataset": "nuScenes",
        },
        {
            "Question_id": "perception/monitoring/Vehicle/counting/0310",
            "Image": "monitoring_images/0000334.jpg",
            "Text": "What is the number of buses in the image?",
            "Question type": "Multiple Choice",
            "Answer choices": [
                "(A) 13",
                "(B) 90",
                "(C) 77",
                "(D) 6",
                "(E) The image does not feature the buses",
            ],
            "Ground truth": "E",
            "Category": "Vehicle/counting",
            "Subtask": "Monitoring",
            "Task": "Perception",
        },
        {
            "Question_id": "perception/monitoring/person/attribute/color/0007",
            "Image": "monitoring_images/0000335.jpg",
            "Text": "What is the color of the coat of the person near the door?",
            "Answer choices": [
                "(A) Red",
                "(B) Blue",
                "(C) Black",
                "(D) White",
                "(E) The image does not feature the person",
            ],
            "Ground truth": "B",
            "Category": "person/attribute/color",
            "Subtask": "Monitoring",
            "Task": "Perception",
        },
        {
            "Question_id": "reasoning/diagram_and_table/diagram/0020",
            "Image": "diagram_and_table/chart.jpg",
            "Text": "Which category has the highest value?",
            "Answer choices": [
                "(A) Boats",
                "(B) Cars",
                "(C) Jets",
                "(D) Trains",
                "(E) The image does not feature the number.",
            ],
            "Ground truth": "F",
            "Category": "diagram",
            "Subtask": "Diagram and Table",
            "Task": "Reasoning",
        },
    ]
    path = folder / name
    path.write_text(json.dumps(items, indent=4), encoding="utf-8")
    return path


MME_TSV_HEADER = (
    "index",
    "image",
    "question",
    "multi-choice options",
    "A",
    "B",
    "C",
    "D",
    "E",
    "answer",
    "category",
    "l2-category",
)


def _choices_text(options: Sequence[str]) -> str:
    return "The choices are listed below:\n" + "\n".join(options)


def write_mme_tsv(folder: Path, name: str = "MME-RealWorld.tsv") -> Path:
    """VLMEvalKit's MME-RealWorld TSV (columns `MME_TSV_HEADER`; `multi-choice options` is the
    "The choices are listed below:\\n(A) …" text, `A`–`E` the option texts without prefix):

    | index | image cell          | answer | category               | l2-category            |
    | 0     | green JPEG          | E      | Perception/Monitoring  | Vehicle/counting       |
    | 1     | "0" → row 0's image | B      | Perception/Monitoring  | person/attribute/color |
    | 2     | red JPEG            | A      | Reasoning/Autonomous_Driving | Intention        |
    | 3     | MALFORMED: a truncated row (5 of 12 cells) → BadRow("3")                     |
    """
    first = ["(A) 13", "(B) 90", "(C) 77", "(D) 6", "(E) The image does not feature the buses"]
    second = ["(A) Red", "(B) Blue", "(C) Black", "(D) White", "(E) No person"]
    third = ["(A) Turn left", "(B) Turn right", "(C) Go straight", "(D) Stop", "(E) Reverse"]
    rows: list[list[Any]] = []
    for index, cell, options, answer, category, l2 in (
        (0, b64(jpeg_bytes("green")), first, "E", "Perception/Monitoring", "Vehicle/counting"),
        (1, "0", second, "B", "Perception/Monitoring", "person/attribute/color"),
        (2, b64(jpeg_bytes("red")), third, "A", "Reasoning/Autonomous_Driving", "Intention"),
    ):
        question = "How many buses are there?" if index == 0 else f"Question {index}?"
        texts = [option[4:] for option in options]
        rows.append([index, cell, question, _choices_text(options), *texts, answer, category, l2])
    rows.append([3, b64(jpeg_bytes("blue")), "Truncated row?", "(A) x", "x"])
    return write_tsv(folder / name, MME_TSV_HEADER, rows)


MME_LITE_HEADER = (
    "index",
    "question",
    "multi-choice options",
    "answer",
    "category",
    "l2-category",
    "image",
)

MALICIOUS_OPTIONS = "[__import__('os').system('touch PWNED')]"
"""The Lite fixture's malformed options cell: code, not a literal (must never run)."""


def write_mme_lite_tsv(folder: Path, name: str = "MME-RealWorld-Lite.tsv") -> Path:
    """MME-RealWorld-Lite TSV (columns `MME_LITE_HEADER`): no A–E columns; the options are one
    `multi-choice options` cell holding a list literal:

    | index | options cell                           | answer | image cell           | l2-category            |
    | 10    | Python list "['(A) red', …, '(E) …']"  | E      | yellow JPEG          | person/attribute/color |
    | 11    | JSON list '["(A) 1", …, "(E) none"]'   | C      | "10" → row 10's image | Vehicle/counting       |
    | 12    | MALFORMED: `MALICIOUS_OPTIONS` → BadRow("12") | A | white JPEG       | Vehicle/counting       |

    category is "Perception/Monitoring" for all three.
    """
    rows = [
        [
            10,
            "What is the color of the umbrella?",
            "['(A) red', '(B) blue', '(C) green', '(D) black', '(E) The image does not feature the umbrella']",
            "E",
            "Perception/Monitoring",
            "person/attribute/color",
            b64(jpeg_bytes("yellow")),
        ],
        [
            11,
            "How many people are there?",
            json.dumps(["(A) 1", "(B) 2", "(C) 3", "(D) 4", "(E) none"]),
            "C",
            "Perception/Monitoring",
            "Vehicle/counting",
            "10",
        ],
        [
            12,
            "How many cars are there?",
            MALICIOUS_OPTIONS,
            "A",
            "Perception/Monitoring",
            "Vehicle/counting",
            b64(jpeg_bytes("white")),
        ],
    ]
    return write_tsv(folder / name, MME_LITE_HEADER, rows)


# --- V* Bench ------------------------------------------------------------------------------------

VSTAR_QUESTIONS: dict[str, dict[str, Any]] = {
    "sa_1001": {
        "category": "direct_attributes",
        "color": "red",
        "question": "What is the color of the cup?",
        "options": ["red", "blue", "green", "yellow"],
    },
    "sa_1002": {
        "category": "direct_attributes",
        "color": "green",
        "question": "What is the material of the glove?",
        "options": ["leather", "cotton", "rubber", "wool"],
    },
    "sa_2001": {
        "category": "relative_position",
        "color": "blue",
        "question": "Is the dog on the left or right side of the cat?",
        "options": ["left", "right"],
    },
}
"""The valid V* questions of both V* fixtures, by id (file stem); the correct option is first."""


def _write_vstar_images(root: Path) -> None:
    for stem, spec in VSTAR_QUESTIONS.items():
        target = root / spec["category"] / f"{stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg_bytes(spec["color"], size=(48, 32)))


def write_vstar_folder(folder: Path) -> Path:
    """V* Bench folder layout; returns the root (`folder`):

    - direct_attributes/sa_1001.jpg + sa_1001.json, direct_attributes/sa_1002.jpg + .json,
      relative_position/sa_2001.jpg + .json: `VSTAR_QUESTIONS` (JSON: `target_object`, `bbox`,
      `question`, `options` with the correct one first);
    - MALFORMED: direct_attributes/sa_1003.json with no image beside it → BadRow("sa_1003").
    """
    _write_vstar_images(folder)
    for stem, spec in VSTAR_QUESTIONS.items():
        annotation = {
            "target_object": ["object"],
            "bbox": [[4, 4, 8, 8]],
            "question": spec["question"],
            "options": spec["options"],
        }
        (folder / spec["category"] / f"{stem}.json").write_text(json.dumps(annotation), "utf-8")
    orphan = {
        "target_object": ["hat"],
        "bbox": [[1, 1, 2, 2]],
        "question": "What colour is the hat?",
        "options": ["red", "blue"],
    }
    (folder / "direct_attributes" / "sa_1003.json").write_text(json.dumps(orphan), "utf-8")
    return folder


def write_vstar_jsonl(folder: Path) -> Path:
    """V* Bench `test_questions.jsonl` plus its images (no per-image JSONs); returns the jsonl.

    One line per `VSTAR_QUESTIONS` entry, in the real file's shape: {"question_id": n, "image":
    "<category>/<stem>.jpg", "text": "<question>\\n(A) …\\n(B) …\\nAnswer with the option's letter
    from the given choices directly.", "category": …, "label": "A"} (correct option first, as in
    the real file). Line 4 is MALFORMED: its image is "../../etc/passwd", outside the root →
    BadRow("passwd").
    """
    _write_vstar_images(folder)
    lines = []
    for number, (stem, spec) in enumerate(VSTAR_QUESTIONS.items()):
        letters = "ABCDEFGH"
        options = "\n".join(f"({letters[i]}) {text}" for i, text in enumerate(spec["options"]))
        text = f"{spec['question']}\n{options}\nAnswer with the option's letter from the given choices directly."
        lines.append(
            {
                "question_id": number,
                "image": f"{spec['category']}/{stem}.jpg",
                "text": text,
                "category": spec["category"],
                "label": "A",
            }
        )
    lines.append(
        {
            "question_id": len(lines),
            "image": "../../etc/passwd",
            "text": "What is in the file?\n(A) users\n(B) nothing",
            "category": "direct_attributes",
            "label": "A",
        }
    )
    path = folder / "test_questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def write_all(folder: Path) -> dict[str, Path]:
    """Every fixture, each in its own sub-folder of `folder`; keys name the layout."""
    return {
        "hr-bench-tsv": write_hr_bench_tsv(folder / "hr_tsv"),
        "hr-bench-parquet": write_hr_bench_parquet(folder / "hr_parquet"),
        "mme-json": write_mme_json(folder / "mme_json"),
        "mme-tsv": write_mme_tsv(folder / "mme_tsv"),
        "mme-lite": write_mme_lite_tsv(folder / "mme_lite"),
        "vstar-folder": write_vstar_folder(folder / "vstar_folder"),
        "vstar-jsonl": write_vstar_jsonl(folder / "vstar_jsonl"),
    }
