"""A tiny Qwen2.5-VL trained to call the zoom tool: a `<tool_call>` with a box on the first turn,
an answer after the tool's result. For tests that run the model-driven graph (`graphs.agent`)
through the real local backend and a real server, where a random model would never call a tool.

Trained as the protocol models are (`protocol_training`, whose loop and helpers this imports
and never changes): the same architecture with sliding-window attention (`TOOL_WINDOW` tokens) in
the decoder layer, fine-tuned on CPU on the conversation the real graph sends in the `crop`
convention with calls written as text, labels on the replies only. The window makes each reply
depend only on the end of the turn before it: the first-turn prompt's answer instruction, or
the crop result's closing line (`tool_conventions.CROP_NEXT`, after the image); never an image,
the question or a crop's coordinates, so the replies are the same on any image::

    from zoom_refine import ZoomContext, build_agent_graph
    from zoom_refine.testing.tool_models import tool_context, tool_inputs, trained_tool_model

    context = tool_context(f"hf:{trained_tool_model()}")
    result = build_agent_graph().invoke(tool_inputs("scene.png"), context=context)
    assert result["answer"] == "A" and len(result["views"]) == 2

Cached like the protocol models (`model_cache`), keyed by this file and the recipe modules it
builds and trains with (`TOOL_RECIPE_MODULES`), the torch and transformers versions and the
training conversations' text.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from zoom_refine.testing import tiny_parts
from zoom_refine.testing.model_cache import RECIPE_MODULES, build_once, cache_root, recipe_digest
from zoom_refine.testing.protocol import (
    HELD_OUT_IMAGE,
    TRAIN_IMAGES,
    protocol_image_png,
    protocol_inputs,
)
from zoom_refine.testing.protocol_training import (
    fit_reply_windows,
    greedy_reply,
    load_for_training,
    training_windows,
)
from zoom_refine.testing.tiny_qwen import build_tiny_qwen2_5_vl

TOOL_CALL_REPLY = (
    '<tool_call>\n{"name": "crop", "arguments": {"image_id": "img0", "box": [0.6, 0.6, 0.7, '
    "0.7]}}\n</tool_call>"
)
"""The first reply: our crop tool on the whole image, 0.6–0.7 of each side (fractions)."""
TOOL_ANSWER_REPLY = "The close-up shows it.\nAnswer: A"
"""The reply after the crop's result."""
TOOL_REPLIES = (TOOL_CALL_REPLY, TOOL_ANSWER_REPLY)
TOOL_BOX = (0.6, 0.6, 0.7, 0.7)
TOOL_ANSWER = "A"
TOOL_MAX_HOPS = 2
"""The graph's zoom budget in training and use: one call leaves budget, so the second turn is
the crop result (not the final-answer request, whose end looks like the first prompt's)."""
TOOL_MAX_NEW_TOKENS = 128
TOOL_WINDOW = 48
"""Sliding-window span (tokens, one per byte): shorter than the text after the crop image in
the result turn (about 90 tokens), longer than what tells the two turns apart (about 30)."""
TRAIN_MAX_STEPS = 800
"""More steps than the protocol models' budget: two tool turns to learn (same loop and rate,
`protocol_training.fit_reply_windows`)."""
REPORT_FILE = "tool_training.json"
IMAGE_TOKENS = ("<|image_pad|>", "<|video_pad|>")
TOOL_RECIPE_MODULES = (sys.modules[__name__], *RECIPE_MODULES)
"""The modules whose source shapes the trained weights (hashed into the key)."""


def tool_inputs(image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Graph input: the protocol question (lettered A-D) about `image`."""
    return protocol_inputs(image)


def tool_context(model: Any, **settings: Any) -> Any:
    """The ZoomContext the model is trained for: the `crop` convention, calls as text, a budget
    of `TOOL_MAX_HOPS`; `model` is a chat model or a spec (`hf:<path>`, `openai:<name>`)."""
    from zoom_refine import ZoomContext

    options: dict[str, Any] = {
        "model": model,
        "tool_convention": "crop",
        "tool_call_format": "text",
        "max_hops": TOOL_MAX_HOPS,
        "max_new_tokens": TOOL_MAX_NEW_TOKENS,
    }
    return ZoomContext(**(options | settings))


def tool_conversation(image: bytes) -> list[Any]:
    """The whole conversation the graph holds when the model replies `TOOL_REPLIES` (LangChain
    messages as the model receives them, the last reply included), recorded with a scripted
    model."""
    from langchain_core.messages import AIMessage

    from zoom_refine import build_agent_graph
    from zoom_refine.testing.fakes import ScriptedVisionModel

    model = ScriptedVisionModel(replies=list(TOOL_REPLIES))
    context = tool_context(model)
    result = build_agent_graph().invoke(
        tool_inputs(image), context=context, config={"recursion_limit": context.recursion_limit}
    )
    if [len(step["tool_calls"]) for step in result["steps"]] != [1, 0]:
        raise RuntimeError(f"the scripted tool run took steps {result['steps']}")
    return [*model.requests[-1], AIMessage(content=TOOL_REPLIES[-1])]


@dataclass(frozen=True)
class ToolTrainingReport:
    """What training the tool model did (written into the checkpoint as `REPORT_FILE`)."""

    steps: int
    seconds: float
    final_loss: float
    windows: int
    conversation_tokens: list[int]
    cache_key: str = ""


def train_tool_model(base_dir: pathlib.Path, out_dir: pathlib.Path) -> ToolTrainingReport:
    """Fine-tune the tiny checkpoint in `base_dir` (built with `sliding_window=TOOL_WINDOW`) on
    the tool conversations of `TRAIN_IMAGES`; keep it only once greedy decoding reproduces both
    replies on the held-out image's conversation, else RuntimeError after `TRAIN_MAX_STEPS`."""
    from zoom_refine.agent.local.model import to_hf_conversation

    started = time.perf_counter()
    processor, model = load_for_training(base_dir)
    image_ids = {processor.tokenizer.convert_tokens_to_ids(token) for token in IMAGE_TOKENS}
    conversations = [
        to_hf_conversation(tool_conversation(protocol_image_png(size, variant)))
        for size, variant in TRAIN_IMAGES
    ]
    windows, tokens = training_windows(processor, conversations, TOOL_WINDOW, image_ids=image_ids)
    held_out = to_hf_conversation(tool_conversation(protocol_image_png(*HELD_OUT_IMAGE)))
    requests = [
        held_out[:index] for index, turn in enumerate(held_out) if turn["role"] == "assistant"
    ]

    def reproduces() -> bool:
        replies = [
            greedy_reply(model, processor, request, max_new_tokens=TOOL_MAX_NEW_TOKENS)
            for request in requests
        ]
        return replies == list(TOOL_REPLIES)

    step, loss = fit_reply_windows(model, windows, reproduces, max_steps=TRAIN_MAX_STEPS)
    if step is None:
        raise RuntimeError(
            f"the tiny tool model did not learn in {TRAIN_MAX_STEPS} steps (loss {loss:.4f})"
        )
    model.eval()
    tiny_parts.save_checkpoint(out_dir, processor, model)
    return ToolTrainingReport(
        steps=step,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=loss,
        windows=len(windows),
        conversation_tokens=tokens,
    )


def tool_cache_key() -> str:
    """SHA-256 of what the trained checkpoint depends on (see the module docstring)."""
    conversations = (
        tool_conversation(protocol_image_png(size, variant)) for size, variant in TRAIN_IMAGES
    )
    return recipe_digest(TOOL_RECIPE_MODULES, "tool-qwen2_5_vl", conversations)


def trained_tool_model() -> pathlib.Path:
    """The trained checkpoint: from the cache, else trained now (tens of seconds on 2 CPU
    cores) and cached under `cache_root()`."""
    import json

    key = tool_cache_key()

    def build(scratch: pathlib.Path) -> pathlib.Path:
        base = build_tiny_qwen2_5_vl(scratch / "base", sliding_window=TOOL_WINDOW)
        trained = scratch / "trained"
        data = asdict(train_tool_model(base, trained)) | {"cache_key": key}
        (trained / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")
        return trained

    return build_once(cache_root() / f"tool-qwen2_5_vl-{key[:16]}", REPORT_FILE, build)
