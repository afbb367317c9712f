"""The Zoom-Refine protocol the tiny models are trained on: the question, the fixed replies
(`PROTOCOL_REPLIES[family]`: the initial answer B with a box on the localize prompt, answer A
with confidence 0.9 after the crop, and, zooming again, a second box inside the crop), the
synthetic scenes they are trained and checked on, and the exact requests the real graph sends
(recorded with a scripted model). InternVL3's boxes are fractions (0-1) of the image it was shown
(`LOCALIZE_BOX`); Qwen2.5-VL's are pixels of its resized input (`QWEN_LOCALIZE_BOX`, read with
`box_format="pixel"`, which `protocol_context` sets)."""

from __future__ import annotations

import io
import os
import random
from typing import Any, Literal

from PIL import Image, ImageDraw

TinyFamily = Literal["internvl3", "qwen2_5_vl"]
"""Which tiny recipe (its own names; `agent.families.Family` is the box convention of a real
model family)."""
FAMILIES: tuple[TinyFamily, ...] = ("internvl3", "qwen2_5_vl")

PROTOCOL_QUESTION = "What colour is the square?"
PROTOCOL_OPTIONS = ("red", "blue", "green", "yellow")
"""Lettered A-D by the graph; the trained models answer B first, then A after the close-up."""
PROTOCOL_INITIAL_ANSWER = "B"
PROTOCOL_ANSWER = "A"
PROTOCOL_CONFIDENCE = 0.9
PROTOCOL_ZOOM_THRESHOLD = 0.95
"""A `confidence_threshold` above the trained confidence: with `max_hops=2` the graph zooms again."""
PROTOCOL_MAX_PATCHES = 2
"""InternVL tile budget the protocol is trained (and must be run) with."""
PROTOCOL_MAX_NEW_TOKENS = 64

LOCALIZE_BOX = (0.6, 0.6, 0.7, 0.7)
LOCALIZE_REPLY = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE_REPLY = "The close-up is clear.\nRechecked Answer: A\nConfidence: 0.9"
ZOOM_AGAIN_BOX = (0.25, 0.25, 0.75, 0.75)
ZOOM_AGAIN_REPLY = "Answer: A\nBounding box: [0.25, 0.25, 0.75, 0.75]"

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

PROTOCOL_REPLIES: dict[TinyFamily, tuple[str, str, str, str]] = {
    "internvl3": (LOCALIZE_REPLY, REFINE_REPLY, ZOOM_AGAIN_REPLY, REFINE_REPLY),
    "qwen2_5_vl": (QWEN_LOCALIZE_REPLY, REFINE_REPLY, QWEN_ZOOM_AGAIN_REPLY, REFINE_REPLY),
}
"""Replies to: localize (image + prompt), refine (crop + prompt), zoom again (text), refine."""
PROTOCOL_BOX_FORMAT: dict[TinyFamily, Literal["auto", "pixel"]] = {
    "internvl3": "auto",
    "qwen2_5_vl": "pixel",
}

TRAIN_IMAGES: tuple[tuple[tuple[int, int], str], ...] = (
    ((1500, 900), "train-a"),
    ((896, 896), "train-b"),
)
"""(size, variant) of the synthetic training images; one 4-turn conversation each."""
HELD_OUT_IMAGE: tuple[tuple[int, int], str] = ((900, 1400), "held-out")
"""Never trained on: greedy decoding must reproduce every reply on it before a model is kept."""


def protocol_image(size: tuple[int, int], variant: str) -> Image.Image:
    """A synthetic scene: a red square at 0.6-0.7 of each side (where the box points), a blue
    one near the top left, and clutter whose colours and places depend on `variant`."""
    rng = random.Random(variant)
    width, height = size
    background = tuple(rng.randrange(90, 200) for _ in range(3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        side = rng.randrange(8, max(9, min(size) // 6))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle((x, y, x + side, y + side), fill=colour)
    draw.rectangle((0.6 * width, 0.6 * height, 0.7 * width, 0.7 * height), fill=(255, 0, 0))
    draw.rectangle((0.1 * width, 0.1 * height, 0.2 * width, 0.2 * height), fill=(0, 0, 255))
    return image


def protocol_image_png(size: tuple[int, int], variant: str) -> bytes:
    """`protocol_image` as PNG bytes (a graph input as is)."""
    buffer = io.BytesIO()
    protocol_image(size, variant).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def protocol_inputs(image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Graph input for the protocol question on `image`."""
    source = image if isinstance(image, bytes) else str(image)
    return {"image": source, "question": PROTOCOL_QUESTION, "options": list(PROTOCOL_OPTIONS)}


def protocol_context(
    family: TinyFamily, model: Any, *, zoom_again: bool = False, **settings: Any
) -> Any:
    """The ZoomContext the protocol is trained for: `model` is a chat model or an `hf:` spec.
    `zoom_again` sets `max_hops=2` and a threshold above the trained confidence."""
    from zoom_refine import ZoomContext

    options: dict[str, Any] = {
        "model": model,
        "box_format": PROTOCOL_BOX_FORMAT[family],
        "max_patches": PROTOCOL_MAX_PATCHES,
        "max_new_tokens": PROTOCOL_MAX_NEW_TOKENS,
    }
    if zoom_again:
        options |= {"max_hops": 2, "confidence_threshold": PROTOCOL_ZOOM_THRESHOLD}
    return ZoomContext(**(options | settings))


def protocol_requests(family: TinyFamily, image: str | os.PathLike[str] | bytes) -> list[list[Any]]:
    """The four requests the real graph sends (zooming again once) when the model replies
    `PROTOCOL_REPLIES[family]`, as recorded by a scripted model: LangChain messages, exactly as
    a chat model receives them."""
    from zoom_refine import build_graph
    from zoom_refine.testing.fakes import ScriptedVisionModel

    model = ScriptedVisionModel(replies=list(PROTOCOL_REPLIES[family]))
    context = protocol_context(family, model, zoom_again=True)
    result = build_graph().invoke(
        protocol_inputs(image), context=context, config={"recursion_limit": context.recursion_limit}
    )
    nodes = [step["node"] for step in result["steps"]]
    if nodes != ["localize", "refine", "localize", "refine"]:
        raise RuntimeError(f"the scripted protocol run took steps {nodes}: {result}")
    return [list(request) for request in model.requests]


def protocol_conversation(family: TinyFamily, image: str | os.PathLike[str] | bytes) -> list[Any]:
    """The whole 4-turn conversation (LangChain messages), the last reply included."""
    from langchain_core.messages import AIMessage

    requests = protocol_requests(family, image)
    return [*requests[-1], AIMessage(content=PROTOCOL_REPLIES[family][-1])]
