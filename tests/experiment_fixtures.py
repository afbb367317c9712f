"""A deterministic fake model whose replies vary by sample and hop, and small synth datasets,
for the experiment tests (grids, replay, analysis, the experiment report).

`HopRuleModel` is stateless (its reply is a function of the conversation it is sent), so it is
safe under concurrency and the same conversation always gets the same reply: what replay needs.
Its token counts follow the length of the conversation, so a later hop costs more."""

from __future__ import annotations

import hashlib
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage

from zoom_refine.evals.synth import write_synth_tsv
from zoom_refine.testing import ReplyFake, texts_in
from zoom_refine.testing.fakes import Reply

CONFIDENCES = (0.3, 0.55, 0.65, 0.8, 0.95, None)
"""What refine replies state (None: no confidence line), picked per sample and hop."""


def _pick(key: str, count: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % count


def hop_rule_reply(messages: list[BaseMessage], salt: str = "0") -> AIMessage:
    """Localize: an answer and a box around the middle; refine: an answer and a confidence,
    both drawn from a hash of (first prompt, call number); baseline: a letter from the prompt."""
    everything = [texts_in(message) for message in messages]
    sample = everything[0] if everything else ""
    calls = sum(isinstance(message, AIMessage) for message in messages)
    last = everything[-1] if everything else ""
    key = f"{salt}|{sample}|{calls}"
    letter = "ABCD"[_pick(key + "a", 4)]
    if "Rechecked Answer" in last:
        confidence = CONFIDENCES[_pick(key + "c", len(CONFIDENCES))]
        text = f"Rechecked Answer: {letter}"
        if confidence is not None:
            text += f"\nConfidence: {confidence}"
    elif "Bounding box" in last:
        low = 0.1 + 0.05 * _pick(key + "b", 4)
        text = f"Answer: {letter}\nBounding box: [{low:.2f}, {low:.2f}, {low + 0.5:.2f}, {low + 0.5:.2f}]"
    else:
        text = letter
    size = sum(len(part) for part in everything)
    usage = {"input_tokens": 40 + size // 4, "output_tokens": len(text) // 2}
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return AIMessage(content=text, usage_metadata=usage)  # type: ignore[arg-type]


class HopRuleModel(ReplyFake):
    """`hop_rule_reply` as a model (the class name is the model name reports show); keeps no
    requests, so long evals and grids stay small."""

    reply: Reply = hop_rule_reply
    keep_requests: bool = False


def synth_data(folder: Path, n: int = 8, *, seed: int = 3) -> Path:
    """A small synth HR-Bench TSV (512-px scenes, 12-px targets: quick to write and load)."""
    return write_synth_tsv(folder / "synth.tsv", n, side=512, target_px=12, seed=seed)
