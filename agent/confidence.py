"""Confidence from token probabilities: how likely the model found the answer letter it wrote.

An alternative to the confidence the model states in words. Works with any reply that carries
OpenAI-style logprobs (`response_metadata["logprobs"]["content"]`: tokens with their
log-probabilities), which our local backend and servers that support `logprobs` return.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from zoom_refine.agent.parsing import find_choice, parse_confidence

ConfidenceSource = Literal["verbal", "token"]


def token_at(
    content: Sequence[Mapping[str, Any]], offset: int, text: str
) -> Mapping[str, Any] | None:
    """The logprob entry whose token covers character `offset` of `text`, or None when the
    tokens do not spell the text up to there (then token positions cannot be trusted)."""
    position = 0
    for entry in content:
        token = str(entry.get("token", ""))
        end = position + len(token)
        if text[position:end] != token:
            return None
        if position <= offset < end:
            return entry
        position = end
    return None


def letter_probability(text: str, offset: int, logprobs: Any) -> float | None:
    """Probability (0–1) of the token that wrote the answer letter at `offset`, or None."""
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, Sequence) or not content:
        return None
    entry = token_at(content, offset, text)
    value = entry.get("logprob") if entry else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return min(1.0, math.exp(value))


def answer_confidence(
    text: str, options: Mapping[str, str] | None, logprobs: Any, *, by_token: bool
) -> tuple[float | None, ConfidenceSource]:
    """The confidence (0–1) of a rechecked answer and where it came from: the answer letter's
    token probability when asked for (`by_token`) and available, else the value the model
    stated (`parse_confidence`; None when it stated none)."""
    if by_token and options and logprobs:
        found = find_choice(text, options, rechecked=True)
        probability = letter_probability(text, found[1], logprobs) if found else None
        if probability is not None:
            return probability, "token"
    return parse_confidence(text), "verbal"
