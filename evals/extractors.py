"""The letter-extraction rules that `evals.scoring` names (its module docstring describes each):
MME-RealWorld's and VLMEvalKit's official matching, the Zoom-Refine repository's baseline rule, and
the first / rechecked answers its Zoom-Refine scorer reads from a run's steps."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from zoom_refine.agent.parsing import parse_official_choice
from zoom_refine.evals.prompts import mme_choice

# Two commas are missing in the official list, so its last four strings are glued into two.
_MME_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is" + "The correct option is",
    "Best answer:" + "Best option:",
)
_MME_LETTER = re.compile(r"[ABCDE]")


def mme_realworld_official(text: str, options: Mapping[str, str]) -> str | None:
    """MME-RealWorld's rule-based extraction, quirks included (module docstring)."""
    reply = text.strip()
    for prefix in _MME_PREFIXES:
        reply = reply.replace(prefix, "")
    letter = _MME_LETTER.search(reply)
    if letter is None and len(reply.split()) > 10:
        return None
    if letter is not None:
        return letter.group(0)
    lowered = reply.lower()
    for key, value in options.items():
        choice = mme_choice(key, value)
        if lowered in choice.lower():
            return choice[1]
    return None


_BASELINE_LETTER = re.compile(r"[A-Ea-e]")
"""eval_acc.py's pattern is an optional "(", spaces, a letter, spaces, an optional ")": the
first such letter is the first A–E or a–e anywhere, which is all this needs."""


def official_baseline(text: str) -> str | None:
    """The Zoom-Refine repository's baseline rule (module docstring), upper-cased."""
    letter = _BASELINE_LETTER.search(text)
    return letter.group(0).upper() if letter else None


_VLMEVAL_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_VLMEVAL_API_FAILURE = "Failed to obtain answer via API"
_VLMEVAL_PUNCTUATION = str.maketrans(dict.fromkeys(".()[],:;!*#{}", " "))
_NO_ANSWER = "Z"


def vlmevalkit_official(text: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's exact matching (`can_infer`): the letter, else the option text."""
    letter = _vlmevalkit_option(text, options)
    if letter is None:
        letter = _vlmevalkit_text(text, options)
    return None if letter == _NO_ANSWER else letter


def _vlmevalkit_option(text: str, options: Mapping[str, str]) -> str | None:
    if _VLMEVAL_API_FAILURE in text:
        return None
    if any(refusal in text for refusal in _VLMEVAL_REFUSALS):
        return _NO_ANSWER
    tokens = set(text.translate(_VLMEVAL_PUNCTUATION).split())
    hits = [letter for letter in options if letter in tokens]
    if len(hits) == 1:
        return hits[0]
    if not hits and _NO_ANSWER in tokens:
        return _NO_ANSWER
    return None


def _vlmevalkit_text(text: str, options: Mapping[str, str]) -> str | None:
    lowered = text.lower()
    hits = [letter for letter, value in options.items() if str(value).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def official_step_answers(steps: Iterable[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """(`Answer`, `Rechecked Answer`) as the official pipeline records them: the official letter
    of the first localize reply and of the first refine reply (None where there is no reply)."""
    first: str | None = None
    rechecked: str | None = None
    localized = refined = False
    for step in steps:
        raw = step.get("raw")
        if step.get("node") == "localize" and not localized:
            localized = True
            first = parse_official_choice(raw) if isinstance(raw, str) else None
        elif step.get("node") == "refine" and not refined:
            refined = True
            rechecked = parse_official_choice(raw, rechecked=True) if isinstance(raw, str) else None
    return first, rechecked
