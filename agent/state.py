"""Graph state: a narrow input, a richer internal state, the output a caller gets back, and the
typed records they hold (a step, a view, a crop artifact) — the one schema that the graphs write
and traces, the CLI and reports read.

All values are plain data (str, bytes, int, float, lists, dicts) so checkpoints need no pickle.
`ViewRecord` and `CropArtifact` are defined beside the tool that makes them (`tools/` cannot
import this floor) and re-exported here.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

from zoom_refine.tools.boxes import BoxFrame
from zoom_refine.tools.crop_tool import CropArtifact
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.views import ViewRecord

__all__ = [
    "CropArtifact",
    "InputState",
    "OutputState",
    "StepRecord",
    "ToolCallRecord",
    "ViewRecord",
    "ZoomState",
]

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


StopReason = Literal[
    "confident", "max_hops", "no_box", "crop_failed", "refine_failed", "baseline", "answered"
]
"""Why a run ended (`stop_reason` in the state, the step records and the prediction record)."""


class ToolCallRecord(TypedDict):
    """One zoom call of an agent turn (`graphs.agent`), as the model made it and as read."""

    id: str
    """The call id (the server's, or `call-<turn>-<k>` for a call written as text)."""
    name: str | None
    """The tool name the model wrote."""
    args: dict[str, Any] | None
    """The arguments as written (None when they could not be read)."""
    image: str | None
    """The view id the box is drawn on (`img0` = the original)."""
    box: list[float] | None
    """The box as written, in `box_frame` of `image`."""
    box_frame: str | None
    """`norm1`, `norm1000` or `pixel` (pixels of `image` as the model saw it)."""
    view: str | None
    """Id the crop gets when the tool makes it (see the run's `views`)."""
    error: str | None
    """Why the call was not run (malformed, unknown tool, bad box, over budget); None if run."""


class StepRecord(TypedDict):
    """One row of a run's trace: a model call (`localize`, `refine`, `answer`), or a crop that
    failed (`crop`, with `raw` None and the reason in `note`)."""

    node: str
    """The node that wrote it: `localize`, `refine`, `answer` (baseline), `agent` (a turn of
    the model-driven graph) or `crop`."""
    hop: int
    """The zoom hop: 0 for the first look; refine and a failed crop count the crop's hop."""
    raw: str | None
    """The model's reply, verbatim (None for a failed crop)."""
    view: NotRequired[str | None]
    """Id of the view the model looked at last (localize: the one it drew on)."""
    answer: NotRequired[str | None]
    """The answer read from this reply (letter or text); None when none was found."""
    box: NotRequired[list[float] | None]
    """Localize: the first box as the model wrote it, in the frame `box_frame`."""
    box_frame: NotRequired[BoxFrame | None]
    """The frame `box` was read in (`agent.regions`); None when refused or absent."""
    frame_size: NotRequired[list[int] | None]
    """For a `pixel` box: [width, height] of the image it was drawn on (the processor's size)."""
    boxes: NotRequired[list[list[float]]]
    """Multi-region localize: every box read, as written."""
    regions: NotRequired[list[list[float]]]
    """Multi-region localize: the regions cropped, in original pixels (after merging)."""
    crops: NotRequired[list[str]]
    """Multi-region refine: the ids of the crops shown, in order. Agent: the crops this turn's
    prompt showed (the results of the previous turn's calls)."""
    tool_calls: NotRequired[list[ToolCallRecord]]
    """Agent: every zoom call of this reply, as read (run, or refused with the reason)."""
    tool_prompt: NotRequired[Literal["chat_template", "ours"]]
    """Agent: who wrote the tools into the prompt: `chat_template` (the checkpoint's template,
    through bound tools: a server, or a local template with a tools section) or `ours` (the
    prompt set's `agent.tools_system` text, calls read from the reply's text)."""
    view_size: NotRequired[list[int]]
    """Model calls: [width, height] in pixels of the view (`view`) as the model's processor works
    on it: the size it reported (local models), else the size its known rule resizes the view
    to, else the size sent (`agent.view_cost`)."""
    visual_tokens: NotRequired[int | None]
    """Model calls: the visual tokens that view costs (None where the family's rule is unknown)."""
    confidence: NotRequired[float | None]
    """Refine: the confidence (0–1) in the answer, when known."""
    confidence_source: NotRequired[str]
    """`verbal` (stated by the model) or `token` (the letter's probability)."""
    note: NotRequired[str | None]
    """What went wrong or was kept, in words (no box, a refused box, a failed crop)."""
    seconds: NotRequired[float]
    """Wall time of the model call."""
    usage: NotRequired[dict[str, int]]
    """The call's counters (see `OutputState.usage`)."""


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
    steps: Annotated[list[StepRecord], operator.add]
    """One record per model call (node, raw text, parsed fields, image sizes, seconds). Appended."""
    usage: Annotated[dict[str, int], merge_usage]
    """Summed counters: model calls, input / output tokens, vision tiles (where known)."""
    image_sha256: str
    """SHA-256 of the input image's bytes: which image this answer belongs to."""
    stop_reason: StopReason
    """Why the run ended: `confident`, `max_hops`, `no_box`, `crop_failed`, `refine_failed` (the
    official preset kept the first answer) (or `baseline`);
    the agent graph: `answered` (a reply without tool calls) or `max_hops` (asked to answer once
    its zoom budget was spent)."""


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


def crop_failure_record(hop: int, reason: str) -> StepRecord:
    """The step recorded when a crop of hop `hop` could not be made."""
    return StepRecord(node="crop", hop=hop, raw=None, note=reason)


def check_question(question: object) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(EMPTY_QUESTION)
    return question


def refine_failure(
    views: list[ViewRecord], failed: list[StepRecord], previous: str | None, error: Exception
) -> dict[str, Any]:
    """The state update of a refine call that raised, under `keep_answer_on_refine_failure` (the
    official preset): the previous answer kept, the error in the step's note (`raw` None: no
    reply), stop reason `refine_failed`."""
    hop = views[-1]["hop"]
    note = f"refine call failed ({type(error).__name__}: {error}): keeping the previous answer"
    step = StepRecord(
        node="refine", hop=hop, raw=None, view=views[-1]["id"], answer=None, note=note
    )
    return {
        "views": views,
        "hop": hop,
        "answer": previous,
        "steps": [*failed, step],
        "stop_reason": "refine_failed",
    }
