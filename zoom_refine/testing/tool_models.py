"""A tiny Qwen2.5-VL trained to call the zoom tool: a `<tool_call>` with a box on the first turn,
an answer after the tool's result. For tests that run the model-driven graph (`graphs.agent`)
through the real local backend and a real server, where a random model would never call a tool.

Trained as the protocol models are (`tiny_models`, whose builders and helpers this imports and
never changes): the same architecture with sliding-window attention (`TOOL_WINDOW` tokens) in
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

Cached like the protocol models (`tiny_models.cache_root()`), keyed by this file, tiny_models.py,
the torch and transformers versions and the training conversations' text.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from zoom_refine.testing import tiny_models
from zoom_refine.testing.tiny_models import (
    HELD_OUT_IMAGE,
    PROTOCOL_OPTIONS,
    PROTOCOL_QUESTION,
    TRAIN_IMAGES,
    assistant_labels,
    build_tiny_qwen2_5_vl,
    cache_root,
    fit_reply_windows,
    protocol_image_png,
)

if TYPE_CHECKING:
    import torch

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
`tiny_models.fit_reply_windows`)."""
REPORT_FILE = "tool_training.json"
IMAGE_TOKENS = ("<|image_pad|>", "<|video_pad|>")


def tool_inputs(image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Graph input: the protocol question (lettered A-D) about `image`."""
    source = image if isinstance(image, bytes) else str(image)
    return {"image": source, "question": PROTOCOL_QUESTION, "options": list(PROTOCOL_OPTIONS)}


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


def _encode(processor: Any, conversation: list[Any], *, generation: bool) -> Any:
    return processor.apply_chat_template(
        conversation,
        add_generation_prompt=generation,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


def _windows(input_ids: torch.Tensor, labels: torch.Tensor, image_ids: set[int]) -> list[Any]:
    """For each labelled reply: the reply and the `TOOL_WINDOW` + 8 tokens before it (ids, labels
    as a (2, n) tensor): all the model attends to while writing it. Raises if one reaches an
    image token (its features would be missing in text-only training)."""
    import torch

    ids, marks = input_ids[0], labels[0]
    positions = (marks != -100).nonzero().flatten().tolist()
    spans: list[list[int]] = []
    for position in positions:
        if spans and position == spans[-1][-1] + 1:
            spans[-1].append(position)
        else:
            spans.append([position])
    pieces = []
    for span in spans:
        start = max(0, span[0] - TOOL_WINDOW - 8)
        piece = torch.stack([ids[start : span[-1] + 1], marks[start : span[-1] + 1]])
        if any(int(token) in image_ids for token in piece[0]):
            raise RuntimeError("a reply window reaches an image: the window is too wide")
        pieces.append(piece)
    return pieces


def _greedy(model: Any, processor: Any, conversation: list[Any]) -> str:
    import torch

    inputs = _encode(processor, conversation, generation=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=TOOL_MAX_NEW_TOKENS, do_sample=False)
    return str(
        processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    )


@dataclass(frozen=True)
class ToolTrainingReport:
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
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from zoom_refine.agent.local.model import to_hf_conversation

    started = time.perf_counter()
    processor = AutoProcessor.from_pretrained(base_dir)  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    image_ids = {processor.tokenizer.convert_tokens_to_ids(token) for token in IMAGE_TOKENS}
    pieces, tokens = {}, []
    for size, variant in TRAIN_IMAGES:
        conversation = to_hf_conversation(tool_conversation(protocol_image_png(size, variant)))
        input_ids = _encode(processor, conversation, generation=False)["input_ids"]
        tokens.append(int(input_ids.shape[1]))
        for piece in _windows(
            input_ids, assistant_labels(input_ids, processor.tokenizer), image_ids
        ):
            pieces[tuple(piece.flatten().tolist())] = piece
    windows = [piece.unsqueeze(1) for piece in pieces.values()]
    held_out = to_hf_conversation(tool_conversation(protocol_image_png(*HELD_OUT_IMAGE)))
    requests = [
        held_out[:index] for index, turn in enumerate(held_out) if turn["role"] == "assistant"
    ]

    def reproduces() -> bool:
        return [_greedy(model, processor, request) for request in requests] == list(TOOL_REPLIES)

    step, loss = fit_reply_windows(model, windows, reproduces, max_steps=TRAIN_MAX_STEPS)
    if step is None:
        raise RuntimeError(
            f"the tiny tool model did not learn in {TRAIN_MAX_STEPS} steps (loss {loss:.4f})"
        )
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return ToolTrainingReport(
        steps=step,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=loss,
        windows=len(windows),
        conversation_tokens=tokens,
    )


def tool_cache_key() -> str:
    """SHA-256 of what the trained checkpoint depends on (see the module docstring)."""
    import torch
    import transformers

    digest = hashlib.sha256()
    for source in (pathlib.Path(__file__), pathlib.Path(tiny_models.__file__)):
        digest.update(source.read_bytes())
    digest.update(f"\0{transformers.__version__}\0{torch.__version__}\0".encode())
    for size, variant in TRAIN_IMAGES:
        for message in tool_conversation(protocol_image_png(size, variant)):
            digest.update(tiny_models._fingerprint(message).encode())
    return digest.hexdigest()


def trained_tool_model() -> pathlib.Path:
    """The trained checkpoint: from the cache, else trained now (tens of seconds on 2 CPU
    cores) and renamed into place, so an interrupted run never leaves a partial one."""
    import json

    key = tool_cache_key()
    root = cache_root()
    final = root / f"tool-qwen2_5_vl-{key[:16]}"
    if (final / REPORT_FILE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-tool-") as scratch:
        base = build_tiny_qwen2_5_vl(pathlib.Path(scratch) / "base", sliding_window=TOOL_WINDOW)
        trained = pathlib.Path(scratch) / "trained"
        report = train_tool_model(base, trained)
        data = asdict(report) | {"cache_key": key}
        (trained / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")
        if final.exists() and not (final / REPORT_FILE).is_file():
            shutil.rmtree(final)
        try:
            os.rename(trained, final)
        except OSError:
            if not (final / REPORT_FILE).is_file():
                raise
    return final
