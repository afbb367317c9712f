"""Tiny models trained to call the zoom tool: a `<tool_call>` with a box on the first turn, an
answer after the tool's result. For tests that run the model-driven graph (`graphs.agent`)
through the real local backend and a real server, where a random model would never call a tool.

Two recipes (`TOOL_RECIPES`), each in its family's own tool convention, calls written as text
(our tool text in the system turn, the same prompt in process and through a server):
- `qwen2_5_vl`: our `crop` tool, the box in fractions 0-1 (`TOOL_CALL_REPLY`), the decoder with
  sliding-window attention (`TOOL_WINDOW` tokens) so each reply depends only on the end of the
  turn before it: the first-turn prompt's answer instruction, or the crop result's closing line
  (`tool_conventions.CROP_NEXT`, after the image); never an image, the question or a crop's
  coordinates, so the replies are the same on any image;
- `qwen3_vl`: Qwen-Agent's `image_zoom_in_tool` (`bbox_2d` in 0-1000, `label`, `img_idx`;
  `QWEN3_TOOL_CALL_REPLY`), from a blind Qwen3-VL as the protocol model's
  (`tiny_qwen3.build_trained_base`), trained on whole conversations and checked on several
  held-out scenes and questions.

Trained as the protocol models are (`protocol_training`, whose loop and helpers this imports and
never changes), fine-tuned on CPU on the conversations the real graph sends, labels on the
replies only::

    from zoom_refine import build_agent_graph
    from zoom_refine.testing.tool_models import tool_context, tool_inputs, trained_tool_model

    context = tool_context(f"hf:{trained_tool_model()}")
    result = build_agent_graph().invoke(tool_inputs("scene.png"), context=context)
    assert result["answer"] == "A" and len(result["views"]) == 2

Cached like the protocol models (`model_cache`), keyed by this file and the recipe modules it
builds and trains with (`tool_recipe_modules(family)`), the torch and transformers versions and
the training conversations' text.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Literal

from zoom_refine.testing import tiny_parts, tiny_qwen, tiny_qwen3
from zoom_refine.testing.model_cache import (
    SHARED_RECIPE_MODULES,
    build_once,
    cache_root,
    recipe_digest,
)
from zoom_refine.testing.protocol import protocol_image_png, protocol_inputs
from zoom_refine.testing.protocol_families import (
    COLOUR,
    HELD_OUT_IMAGE,
    PROTOCOL_HELD_OUT,
    PROTOCOL_SETTINGS,
    PROTOCOL_TRAIN_SAMPLES,
    TRAIN_IMAGES,
    Question,
    Sample,
)
from zoom_refine.testing.protocol_training import (
    fit_reply_windows,
    greedy_reply,
    load_for_training,
    training_batches,
)

ToolFamily = Literal["qwen2_5_vl", "qwen3_vl"]

TOOL_CALL_REPLY = (
    '<tool_call>\n{"name": "crop", "arguments": {"image_id": "img0", "box": [0.6, 0.6, 0.7, '
    "0.7]}}\n</tool_call>"
)
"""Qwen2.5-VL's first reply: our crop tool on the whole image, 0.6–0.7 of each side (fractions)."""
QWEN3_TOOL_CALL_REPLY = (
    '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [600, 600, 700, 700], '
    '"label": "the red square", "img_idx": 0}}\n</tool_call>'
)
"""Qwen3-VL's first reply: Qwen-Agent's zoom tool on the original, 600–700 of 0–1000 each side."""
TOOL_ANSWER_REPLY = "The close-up shows it.\nAnswer: A"
"""The reply after the crop's result."""
TOOL_REPLIES = (TOOL_CALL_REPLY, TOOL_ANSWER_REPLY)
TOOL_BOX = (0.6, 0.6, 0.7, 0.7)
QWEN3_TOOL_BOX = (600, 600, 700, 700)
TOOL_ANSWER = "A"
TOOL_MAX_HOPS = 2
"""The graph's zoom budget in training and use: one call leaves budget, so the second turn is
the crop result (not the final-answer request, whose end looks like the first prompt's)."""
TOOL_MAX_NEW_TOKENS = 128
TOOL_WINDOW = 48
"""Qwen2.5-VL's sliding-window span (tokens, one per byte): shorter than the text after the crop
image in the result turn (about 90 tokens), longer than what tells the two turns apart (about 30)."""
TRAIN_MAX_STEPS = 800
"""More steps than the protocol models' budget: two tool turns to learn (same loop and rate,
`protocol_training.fit_reply_windows`)."""
REPORT_FILE = "tool_training.json"
IMAGE_TOKENS = ("<|image_pad|>", "<|video_pad|>")


def _windowed_qwen2_5_vl(out_dir: pathlib.Path) -> pathlib.Path:
    """The random Qwen2.5-VL with a `TOOL_WINDOW`-token sliding window."""
    return tiny_qwen.build_tiny_qwen2_5_vl(out_dir, sliding_window=TOOL_WINDOW)


def _qwen3_vl_base(out_dir: pathlib.Path) -> pathlib.Path:
    """The blind Qwen3-VL (`tiny_qwen3.build_trained_base`), its merges learned from the tool
    conversations it trains on."""
    conversations = (
        tool_conversation(protocol_image_png(size, variant), "qwen3_vl", question)
        for size, variant, question in TOOL_RECIPES["qwen3_vl"].train_samples
    )
    return tiny_qwen3.build_trained_base(out_dir, conversations)


@dataclass(frozen=True)
class ToolRecipe:
    """One tool-calling tiny model: what it replies, the settings it runs with, what it is built
    from and trained and checked on."""

    family: ToolFamily
    replies: tuple[str, str]
    """The call, then the answer after the crop's result."""
    box: tuple[float, float, float, float]
    """The call's box as written, in the convention's frame."""
    settings: dict[str, Any]
    """`ZoomContext` settings (the tool convention, calls as text, the family's own)."""
    build_base: Callable[[pathlib.Path], pathlib.Path]
    """Makes the random checkpoint it is trained from."""
    modules: tuple[ModuleType, ...]
    """The family's recipe modules (hashed into its key with the shared ones and this one)."""
    train_samples: tuple[Sample, ...] = tuple(
        (size, variant, COLOUR) for size, variant in TRAIN_IMAGES
    )
    """Scenes and questions trained on, one conversation each."""
    held_out: tuple[Sample, ...] = ((*HELD_OUT_IMAGE, COLOUR),)
    """Never trained on: greedy decoding must reproduce both replies on each."""


TOOL_RECIPES: dict[ToolFamily, ToolRecipe] = {
    "qwen2_5_vl": ToolRecipe(
        family="qwen2_5_vl",
        replies=TOOL_REPLIES,
        box=TOOL_BOX,
        settings={"tool_convention": "crop", "tool_call_format": "text"},
        build_base=_windowed_qwen2_5_vl,
        modules=(tiny_qwen,),
    ),
    "qwen3_vl": ToolRecipe(
        family="qwen3_vl",
        replies=(QWEN3_TOOL_CALL_REPLY, TOOL_ANSWER_REPLY),
        box=QWEN3_TOOL_BOX,
        settings={
            "tool_convention": "qwen3_vl",
            "tool_call_format": "text",
            **PROTOCOL_SETTINGS["qwen3_vl"],
        },
        build_base=_qwen3_vl_base,
        modules=(tiny_qwen, tiny_qwen3),
        train_samples=PROTOCOL_TRAIN_SAMPLES["qwen3_vl"],
        held_out=PROTOCOL_HELD_OUT["qwen3_vl"],
    ),
}


def tool_recipe_modules(family: ToolFamily = "qwen2_5_vl") -> tuple[ModuleType, ...]:
    """The modules whose source shapes `family`'s trained weights (hashed into its key)."""
    return (sys.modules[__name__], *SHARED_RECIPE_MODULES, *TOOL_RECIPES[family].modules)


TOOL_RECIPE_MODULES = tool_recipe_modules("qwen2_5_vl")
"""The Qwen2.5-VL tool model's (`tool_recipe_modules`)."""


def tool_inputs(
    image: str | os.PathLike[str] | bytes, question: Question = COLOUR
) -> dict[str, Any]:
    """Graph input: `question` (by default the protocol's, lettered A-D) about `image`."""
    return protocol_inputs(image, question)


def tool_context(model: Any, family: ToolFamily = "qwen2_5_vl", **settings: Any) -> Any:
    """The ZoomContext `family`'s tool model is trained for: its tool convention, calls as text,
    a budget of `TOOL_MAX_HOPS`, its family's settings; `model` is a chat model or a spec
    (`hf:<path>`, `openai:<name>`); `settings` override."""
    from zoom_refine import ZoomContext

    options: dict[str, Any] = {
        "model": model,
        "max_hops": TOOL_MAX_HOPS,
        "max_new_tokens": TOOL_MAX_NEW_TOKENS,
        **TOOL_RECIPES[family].settings,
    }
    return ZoomContext(**(options | settings))


def tool_conversation(
    image: bytes, family: ToolFamily = "qwen2_5_vl", question: Question = COLOUR
) -> list[Any]:
    """The whole conversation the graph holds when `family`'s model replies its recipe's replies
    to `question` about `image` (LangChain messages as the model receives them, the last reply
    included), recorded with a scripted model."""
    from langchain_core.messages import AIMessage

    from zoom_refine import build_agent_graph
    from zoom_refine.testing.fakes import ScriptedVisionModel

    replies = TOOL_RECIPES[family].replies
    model = ScriptedVisionModel(replies=list(replies))
    context = tool_context(model, family)
    result = build_agent_graph().invoke(
        tool_inputs(image, question),
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )
    if [len(step["tool_calls"]) for step in result["steps"]] != [1, 0]:
        raise RuntimeError(f"the scripted tool run took steps {result['steps']}")
    return [*model.requests[-1], AIMessage(content=replies[-1])]


@dataclass(frozen=True)
class ToolTrainingReport:
    """What training a tool model did (written into the checkpoint as `REPORT_FILE`)."""

    steps: int
    seconds: float
    final_loss: float
    windows: int
    """Reply windows trained on (whole conversations when `sliding_window` is None)."""
    conversation_tokens: list[int]
    cache_key: str = ""
    family: str = "qwen2_5_vl"
    sliding_window: int | None = None


def train_tool_model(
    base_dir: pathlib.Path, out_dir: pathlib.Path, family: ToolFamily = "qwen2_5_vl"
) -> ToolTrainingReport:
    """Fine-tune the tiny checkpoint in `base_dir` (the recipe's `build_base`) on the tool
    conversations of its training samples (reply windows under a sliding window, else whole);
    keep it only once greedy decoding reproduces both replies on every held-out image's
    conversation, else RuntimeError after `TRAIN_MAX_STEPS`."""
    from zoom_refine.agent.local.model import to_hf_conversation

    recipe = TOOL_RECIPES[family]
    started = time.perf_counter()
    processor, model = load_for_training(base_dir)
    image_ids = {processor.tokenizer.convert_tokens_to_ids(token) for token in IMAGE_TOKENS}
    conversations = [
        to_hf_conversation(tool_conversation(protocol_image_png(size, variant), family, question))
        for size, variant, question in recipe.train_samples
    ]
    batches, tokens, window = training_batches(processor, model, conversations, image_ids=image_ids)
    held_out = [
        to_hf_conversation(tool_conversation(protocol_image_png(size, variant), family, question))
        for size, variant, question in recipe.held_out
    ]
    requests = [
        [
            conversation[:index]
            for index, turn in enumerate(conversation)
            if turn["role"] == "assistant"
        ]
        for conversation in held_out
    ]

    def reproduces() -> bool:
        return all(
            [
                greedy_reply(model, processor, request, max_new_tokens=TOOL_MAX_NEW_TOKENS)
                for request in turns
            ]
            == list(recipe.replies)
            for turns in requests
        )

    step, loss = fit_reply_windows(model, batches, reproduces, max_steps=TRAIN_MAX_STEPS)
    if step is None:
        raise RuntimeError(
            f"the tiny {family} tool model did not learn in {TRAIN_MAX_STEPS} steps "
            f"(loss {loss:.4f})"
        )
    model.eval()
    tiny_parts.save_checkpoint(out_dir, processor, model)
    return ToolTrainingReport(
        steps=step,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=loss,
        windows=len(batches),
        conversation_tokens=tokens,
        family=family,
        sliding_window=window,
    )


def tool_cache_key(family: ToolFamily = "qwen2_5_vl") -> str:
    """SHA-256 of what `family`'s trained checkpoint depends on (see the module docstring)."""
    conversations = (
        tool_conversation(protocol_image_png(size, variant), family, question)
        for size, variant, question in TOOL_RECIPES[family].train_samples
    )
    return recipe_digest(tool_recipe_modules(family), f"tool-{family}", conversations)


def trained_tool_model(family: ToolFamily = "qwen2_5_vl") -> pathlib.Path:
    """`family`'s trained tool model: from the cache, else trained now (tens of seconds on 2
    CPU cores; Qwen3-VL, on whole conversations, a few minutes) and cached under `cache_root()`."""
    key = tool_cache_key(family)

    def build(scratch: pathlib.Path) -> pathlib.Path:
        base = TOOL_RECIPES[family].build_base(scratch / "base")
        trained = scratch / "trained"
        data = asdict(train_tool_model(base, trained, family)) | {"cache_key": key}
        (trained / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")
        return trained

    return build_once(cache_root() / f"tool-{family}-{key[:16]}", REPORT_FILE, build)
