"""Graph state: a narrow input, a richer internal state, and the output a caller gets back.

All values are plain data (str, bytes, int, float, lists, dicts) so checkpoints need no pickle.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.views import ViewRecord

Options = Mapping[str, str] | Sequence[str]

BAD_OPTIONS = (
    "options must be a non-empty list of texts or a mapping letter → text with single letters "
    "A–Z; got {options!r}"
)
EMPTY_QUESTION = "the question is empty: pass the question text"


def merge_usage(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Reducer: sum token / tile / call counters key by key."""
    merged = dict(left or {})
    for key, value in (right or {}).items():
        merged[key] = merged.get(key, 0) + value
    return merged


class InputState(TypedDict):
    """What a caller passes in."""

    image: str | bytes
    """Path to the image file, or its encoded bytes."""
    question: str
    """The question about the image."""
    options: NotRequired[Options | None]
    """Multiple-choice options: a mapping letter → text, or a list lettered A, B, …; omit for open
    questions."""
    prompt: NotRequired[str | None]
    """The exact text the baseline graph sends instead of its own prompt (a benchmark's official
    prompt); the Zoom-Refine graph builds its own prompts and ignores it."""


class OutputState(TypedDict, total=False):
    """What a caller gets back."""

    answer: str | None
    """Final answer: a letter for multiple choice, text otherwise; None if nothing was parsed."""
    initial_answer: str | None
    """The preliminary answer from the first (downsampled) look."""
    confidence: float | None
    """The model's confidence (0–1) in the final answer, when it gave one."""
    views: Annotated[list[ViewRecord], operator.add]
    """Every image shown: first the full image (`img0`), then each crop. Appended."""
    steps: Annotated[list[dict[str, Any]], operator.add]
    """One record per model call (node, raw text, parsed fields, image sizes, seconds). Appended."""
    usage: Annotated[dict[str, int], merge_usage]
    """Summed counters: model calls, input / output tokens, vision tiles (where known)."""
    image_sha256: str
    """SHA-256 of the input image's bytes: which image this answer belongs to."""
    stop_reason: str
    """Why the run ended: `confident`, `max_hops`, `no_box`, `crop_failed` (or `baseline`)."""


class ZoomState(InputState, OutputState, total=False):
    """The graph's full state: input, output, and the conversation."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation: prompts (with the first view), replies, crop tool calls and results."""
    hop: int
    """Number of crops made so far (0 before the first crop)."""


def normalize_options(options: Options | None) -> dict[str, str] | None:
    """Options as an ordered mapping letter → text; a list is lettered A, B, …."""
    if options is None:
        return None
    if isinstance(options, Mapping):
        items = [(str(key).strip().upper(), str(value)) for key, value in options.items()]
    elif isinstance(options, Sequence) and not isinstance(options, (str, bytes)):
        if len(options) > 26:
            raise InvalidInputError(BAD_OPTIONS.format(options=options))
        items = [(chr(ord("A") + index), str(text)) for index, text in enumerate(options)]
    else:
        raise InvalidInputError(BAD_OPTIONS.format(options=options))
    valid = all(len(key) == 1 and "A" <= key <= "Z" for key, _ in items)
    if not items or not valid:
        raise InvalidInputError(BAD_OPTIONS.format(options=options))
    return dict(items)


def check_question(question: object) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(EMPTY_QUESTION)
    return question
