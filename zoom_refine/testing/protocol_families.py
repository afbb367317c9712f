"""The tiny families the Zoom-Refine protocol is trained for, and what each one replies: data only.

Each family answers in its own model's native box frame:
- `internvl3`: fractions (0-1) of the image it was shown (`LOCALIZE_BOX`, read with `auto`);
- `qwen2_5_vl`: pixels of its processor's resized input (`QWEN_LOCALIZE_BOX`, read with
  `box_format="pixel"`);
- `qwen3_vl`: 0-1000 of the image shown (`QWEN3_LOCALIZE_BOX`, read with `box_format="norm1000"`),
  its views made at its processor's own size within `QWEN3_PROTOCOL_MIN/MAX_PIXELS`.

This module is not hashed into the cache keys as a file (`model_cache`): each family's own entry
(`PROTOCOL_REPLIES`, `PROTOCOL_BASELINE_REPLY`, `PROTOCOL_BOX_FORMAT`, `PROTOCOL_SETTINGS`,
`PROTOCOL_TRAIN_SAMPLES`, `PROTOCOL_HELD_OUT`) is hashed into that family's key instead, so adding
a family retrains no other. Keep it data: a function here would shape builds without being hashed
(a test holds this).
"""

from __future__ import annotations

from typing import Any, Literal

TinyFamily = Literal["internvl3", "qwen2_5_vl", "qwen3_vl"]
"""Which tiny recipe (its own names; `agent.families.Family` is the box convention of a real
model family)."""
FAMILIES: tuple[TinyFamily, ...] = ("internvl3", "qwen2_5_vl", "qwen3_vl")

Question = tuple[str, tuple[str, ...]]
"""A question and its options (lettered A-D by the graph)."""
Sample = tuple[tuple[int, int], str, Question]
"""A training or held-out sample: the scene's size and variant (`protocol.protocol_image`) and
the question asked about it."""

PROTOCOL_QUESTION = "What colour is the square?"
PROTOCOL_OPTIONS = ("red", "blue", "green", "yellow")
"""Lettered A-D by the graph; the trained models answer B first, then A after the close-up."""
COLOUR: Question = (PROTOCOL_QUESTION, PROTOCOL_OPTIONS)
NUMBER: Question = (
    "What two-digit number is printed on the small white sign?",
    ("75", "57", "89", "62"),
)
SHAPE: Question = (
    "What shape is drawn on the small white sign?",
    ("cross", "square", "circle", "triangle"),
)
DOTS: Question = ("How many dots are on the small white sign?", ("2", "3", "4", "5"))
OTHER_NUMBER: Question = (NUMBER[0], ("31", "13", "48", "84"))
OTHER_SHAPE: Question = (SHAPE[0], ("circle", "triangle", "cross", "square"))
"""Questions of the kinds `zoom-refine data synth` asks (its options vary by row): a model that
attends to the whole prompt (Qwen3-VL's) is trained on several and checked on others, so its
replies depend on neither the scene nor the question's wording and options."""

REFINE_REPLY = "The close-up is clear.\nRechecked Answer: A\nConfidence: 0.9"
"""Every family's reply after a crop: answer A with confidence 0.9."""

# InternVL3: fractions 0-1 of the image shown.
LOCALIZE_BOX = (0.6, 0.6, 0.7, 0.7)
LOCALIZE_REPLY = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
ZOOM_AGAIN_BOX = (0.25, 0.25, 0.75, 0.75)
ZOOM_AGAIN_REPLY = "Answer: A\nBounding box: [0.25, 0.25, 0.75, 0.75]"

# Qwen2.5-VL: pixels of its processor's resized input.
QWEN_PROTOCOL_RESIZED = (700, 420)
"""Resized input of every 5:3 image of at least 313,600 px (1500 x 900, a 3000 x 1800 image's
2048 x 1229 view): the frame of `QWEN_LOCALIZE_BOX`."""
QWEN_LOCALIZE_BOX = (420, 252, 490, 294)
"""0.6-0.7 of the 700 x 420 resized input, in its pixels (Qwen2.5-VL's native box frame)."""
QWEN_LOCALIZE_REPLY = "Answer: B\nBounding box: [420, 252, 490, 294]"
QWEN_CROP_RESIZED = (448, 448)
"""Resized input of the first crop of a 1500 x 900 image (450 x 448): the frame of
`QWEN_ZOOM_AGAIN_BOX`."""
QWEN_ZOOM_AGAIN_BOX = (112, 112, 336, 336)
"""0.25-0.75 of the 448 x 448 resized crop, in its pixels."""
QWEN_ZOOM_AGAIN_REPLY = "Answer: A\nBounding box: [112, 112, 336, 336]"

# Qwen3-VL: 0-1000 of the image shown, whatever its size.
QWEN3_LOCALIZE_BOX = (600, 600, 700, 700)
QWEN3_LOCALIZE_REPLY = "Answer: B\nBounding box: [600, 600, 700, 700]"
QWEN3_ZOOM_AGAIN_BOX = (250, 250, 750, 750)
QWEN3_ZOOM_AGAIN_REPLY = "Answer: A\nBounding box: [250, 250, 750, 750]"
QWEN3_PROTOCOL_MIN_PIXELS = 64 * 32 * 32
QWEN3_PROTOCOL_MAX_PIXELS = 256 * 32 * 32
"""262,144 px: the trained Qwen3-VL's processor budget (64 to 256 visual tokens an image, to keep
its whole-conversation training short); the graph is told it (`PROTOCOL_SETTINGS`), so every view
is made at the size that processor resizes to, in process and for a server alike."""

PROTOCOL_REPLIES: dict[TinyFamily, tuple[str, str, str, str]] = {
    "internvl3": (LOCALIZE_REPLY, REFINE_REPLY, ZOOM_AGAIN_REPLY, REFINE_REPLY),
    "qwen2_5_vl": (QWEN_LOCALIZE_REPLY, REFINE_REPLY, QWEN_ZOOM_AGAIN_REPLY, REFINE_REPLY),
    "qwen3_vl": (QWEN3_LOCALIZE_REPLY, REFINE_REPLY, QWEN3_ZOOM_AGAIN_REPLY, REFINE_REPLY),
}
"""Replies to: localize (image + prompt), refine (crop + prompt), zoom again (text), refine."""
PROTOCOL_BASELINE_REPLY: dict[TinyFamily, str | None] = {
    "internvl3": None,
    "qwen2_5_vl": None,
    "qwen3_vl": "Answer: B",
}
"""The reply to the baseline's one prompt (`graphs.baseline`), for the families trained on it too
(None: not trained): the first look's answer, B."""
PROTOCOL_BOX_FORMAT: dict[TinyFamily, Literal["auto", "pixel", "norm1000"]] = {
    "internvl3": "auto",
    "qwen2_5_vl": "pixel",
    "qwen3_vl": "norm1000",
}
PROTOCOL_SETTINGS: dict[TinyFamily, dict[str, Any]] = {
    "internvl3": {},
    "qwen2_5_vl": {},
    "qwen3_vl": {
        "model_family": "qwen3_vl",
        "qwen_min_pixels": QWEN3_PROTOCOL_MIN_PIXELS,
        "qwen_max_pixels": QWEN3_PROTOCOL_MAX_PIXELS,
    },
}
"""`ZoomContext` settings a family's protocol runs with beyond the shared ones: for Qwen3-VL its
family and pixel budget, so a server's views are made as the local processor makes them."""

TRAIN_IMAGES: tuple[tuple[tuple[int, int], str], ...] = (
    ((1500, 900), "train-a"),
    ((896, 896), "train-b"),
)
"""(size, variant) of the synthetic training images; one 4-turn conversation each."""
HELD_OUT_IMAGE: tuple[tuple[int, int], str] = ((900, 1400), "held-out")
"""Never trained on: greedy decoding must reproduce every reply on it before a model is kept."""
PROTOCOL_TRAIN_SAMPLES: dict[TinyFamily, tuple[Sample, ...]] = {
    "internvl3": tuple((size, variant, COLOUR) for size, variant in TRAIN_IMAGES),
    "qwen2_5_vl": tuple((size, variant, COLOUR) for size, variant in TRAIN_IMAGES),
    "qwen3_vl": (
        ((1500, 900), "train-a", COLOUR),
        ((896, 896), "train-b", NUMBER),
        ((3840, 2160), "train-c", SHAPE),
        ((1000, 3000), "train-d", DOTS),
        ((320, 320), "train-e", NUMBER),
        ((4800, 1200), "train-f", COLOUR),
    ),
}
"""Each family's training samples: one conversation per method it is trained on each. Qwen3-VL
attends to the whole conversation (its decoder has no sliding window): wide, tall, large and small
scenes (views and crops of 64 to 256 visual tokens, grids from 9x9 to 32x7) and several questions
teach it to ignore their number, rotary positions and wording."""
PROTOCOL_HELD_OUT: dict[TinyFamily, tuple[Sample, ...]] = {
    "internvl3": ((*HELD_OUT_IMAGE, COLOUR),),
    "qwen2_5_vl": ((*HELD_OUT_IMAGE, COLOUR),),
    "qwen3_vl": (
        (*HELD_OUT_IMAGE, COLOUR),
        ((2560, 1440), "held-out-wide", OTHER_NUMBER),
        ((3000, 1000), "held-out-3x1", DOTS),
        ((400, 600), "held-out-small", OTHER_SHAPE),
    ),
}
"""Each family's held-out samples: greedy decoding must reproduce every reply on all of them."""
