"""The Zoom-Refine protocol the tiny models are trained on, shared by every family: the question,
the synthetic scenes they are trained and checked on, and the exact requests the real graph sends
(recorded with a scripted model that gives the family's fixed replies). What each family replies,
in its own box frame, and the settings it runs with are in `protocol_families`
(`PROTOCOL_REPLIES[family]`: the initial answer B with a box on the localize prompt, answer A with
confidence 0.9 after the crop, and, zooming again, a second box inside the crop)."""

from __future__ import annotations

import io
import os
import random
from typing import Any

from PIL import Image, ImageDraw

from zoom_refine.testing.protocol_families import (
    COLOUR,
    PROTOCOL_BASELINE_REPLY,
    PROTOCOL_BOX_FORMAT,
    PROTOCOL_REPLIES,
    PROTOCOL_SETTINGS,
    Question,
    Sample,
    TinyFamily,
)

PROTOCOL_INITIAL_ANSWER = "B"
PROTOCOL_ANSWER = "A"
PROTOCOL_CONFIDENCE = 0.9
PROTOCOL_ZOOM_THRESHOLD = 0.95
"""A `confidence_threshold` above the trained confidence: with `max_hops=2` the graph zooms again."""
PROTOCOL_MAX_PATCHES = 2
"""InternVL tile budget the protocol is trained (and must be run) with."""
PROTOCOL_MAX_NEW_TOKENS = 64


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


def protocol_inputs(
    image: str | os.PathLike[str] | bytes, question: Question = COLOUR
) -> dict[str, Any]:
    """Graph input for `question` (by default the protocol's, `PROTOCOL_QUESTION`) on `image`."""
    source = image if isinstance(image, bytes) else str(image)
    text, options = question
    return {"image": source, "question": text, "options": list(options)}


def protocol_context(
    family: TinyFamily, model: Any, *, zoom_again: bool = False, **settings: Any
) -> Any:
    """The ZoomContext the protocol is trained for: `model` is a chat model or a spec (`hf:`,
    `openai:`), with the family's box format and settings (`PROTOCOL_SETTINGS`); `zoom_again`
    sets `max_hops=2` and a threshold above the trained confidence; `settings` override."""
    from zoom_refine import ZoomContext

    options: dict[str, Any] = {
        "model": model,
        "box_format": PROTOCOL_BOX_FORMAT[family],
        "max_patches": PROTOCOL_MAX_PATCHES,
        "max_new_tokens": PROTOCOL_MAX_NEW_TOKENS,
        **PROTOCOL_SETTINGS[family],
    }
    if zoom_again:
        options |= {"max_hops": 2, "confidence_threshold": PROTOCOL_ZOOM_THRESHOLD}
    return ZoomContext(**(options | settings))


def protocol_requests(
    family: TinyFamily, image: str | os.PathLike[str] | bytes, question: Question = COLOUR
) -> list[list[Any]]:
    """The four requests the real graph sends (zooming again once) when the model replies
    `PROTOCOL_REPLIES[family]` to `question` about `image`, as recorded by a scripted model:
    LangChain messages, exactly as a chat model receives them."""
    from zoom_refine import build_graph
    from zoom_refine.testing.fakes import ScriptedVisionModel

    model = ScriptedVisionModel(replies=list(PROTOCOL_REPLIES[family]))
    context = protocol_context(family, model, zoom_again=True)
    result = build_graph().invoke(
        protocol_inputs(image, question),
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )
    nodes = [step["node"] for step in result["steps"]]
    if nodes != ["localize", "refine", "localize", "refine"]:
        raise RuntimeError(f"the scripted protocol run took steps {nodes}: {result}")
    return [list(request) for request in model.requests]


def protocol_conversation(
    family: TinyFamily, image: str | os.PathLike[str] | bytes, question: Question = COLOUR
) -> list[Any]:
    """The whole 4-turn conversation (LangChain messages), the last reply included."""
    from langchain_core.messages import AIMessage

    requests = protocol_requests(family, image, question)
    return [*requests[-1], AIMessage(content=PROTOCOL_REPLIES[family][-1])]


def baseline_request(
    family: TinyFamily, image: str | os.PathLike[str] | bytes, question: Question = COLOUR
) -> list[Any]:
    """The one request the baseline graph sends for `question` about `image` (recorded with a
    scripted model), in the family's settings."""
    from zoom_refine.graphs.baseline import build_baseline_graph
    from zoom_refine.testing.fakes import ScriptedVisionModel

    model = ScriptedVisionModel(replies=[PROTOCOL_BASELINE_REPLY[family] or ""])
    context = protocol_context(family, model)
    build_baseline_graph().invoke(protocol_inputs(image, question), context=context)
    return list(model.requests[0])


def sample_requests(family: TinyFamily, sample: Sample) -> list[tuple[list[Any], str]]:
    """Every request the family is trained to answer on `sample`, with its reply: the protocol's
    four, then the baseline's when the family has a baseline reply."""
    size, variant, question = sample
    image = protocol_image_png(size, variant)
    pairs = list(
        zip(protocol_requests(family, image, question), PROTOCOL_REPLIES[family], strict=True)
    )
    if (baseline := PROTOCOL_BASELINE_REPLY[family]) is not None:
        pairs.append((baseline_request(family, image, question), baseline))
    return pairs


def sample_conversations(family: TinyFamily, sample: Sample) -> list[list[Any]]:
    """The whole conversations (LangChain messages, replies included) of `sample`: the
    protocol's 4 turns, and the baseline's one when the family has a baseline reply."""
    from langchain_core.messages import AIMessage

    pairs = sample_requests(family, sample)
    last_protocol = len(PROTOCOL_REPLIES[family]) - 1
    ends = [last_protocol, *range(last_protocol + 1, len(pairs))]
    return [[*pairs[index][0], AIMessage(content=pairs[index][1])] for index in ends]
