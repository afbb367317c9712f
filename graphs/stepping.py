"""Stepping through a run: read the boxes a paused run is about to crop, and replace one.

Compile with a checkpointer and `interrupt_before=["crop"]`; the run pauses after localize, with
the crop tool calls it is about to run in the state's last message::

    graph = build_graph(checkpointer=InMemorySaver(), interrupt_before=["crop"])
    config = {"configurable": {"thread_id": "1"}}
    graph.invoke(inputs, config, context=context)            # pauses before the crop
    pending_boxes(graph.get_state(config))                    # [PendingBox(box=[...], ...)]
    replace_box(graph, config, [1200, 600, 1400, 800])        # original-image pixels
    graph.invoke(None, config, context=context)               # crops the edited box, refines

The localize step in `steps` keeps the box the model wrote; the crop's view (`views`) and the
crop tool's artifact (`requested_box`) show the box that was cropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, ToolCall
from langchain_core.runnables import RunnableConfig
from langgraph.types import StateSnapshot

from zoom_refine.graphs.compose_node import Graph
from zoom_refine.tools.boxes import is_finite_box
from zoom_refine.tools.crop_tool import CROP_TOOL_NAME, CropFrame
from zoom_refine.tools.errors import InvalidInputError

NOT_PAUSED = (
    "the run is not paused before the crop (next: {next}); compile with a checkpointer and "
    "interrupt_before=['crop'], and invoke until it pauses"
)
NO_SUCH_BOX = "box index {index} is out of range: the paused run has {count} pending box(es)"
BAD_BOX = "box must be four finite numbers [x1, y1, x2, y2], got {box!r}"
BAD_FRAME = "box_format must be one of {known}, got {frame!r}"
FRAMES: tuple[CropFrame, ...] = ("original", "norm1", "norm1000", "pixel")


@dataclass(frozen=True)
class PendingBox:
    """A crop the paused run is about to make: one `crop` tool call of the last localize."""

    call_id: str
    """The tool call's id (`crop-1`, …)."""
    image_id: str
    """The view the box is drawn on (`img0` = the whole image)."""
    box: list[float]
    """`[x1, y1, x2, y2]` in `box_format` (our graph: `original`, pixels of the original)."""
    box_format: str
    """`original`, `norm1`, `norm1000` or `pixel` (of view `image_id` as shown)."""


def pending_boxes(state: StateSnapshot | Mapping[str, Any]) -> list[PendingBox]:
    """The crops a paused run will make, in order; [] when it is not about to crop (a snapshot
    whose next node is not `crop`, or a state whose last message asks for no crop)."""
    if isinstance(state, StateSnapshot):
        if CROP_TOOL_NAME not in state.next:
            return []
        state = state.values
    message = _last_message(state)
    if message is None:
        return []
    return [_pending(call) for call in message.tool_calls if call["name"] == CROP_TOOL_NAME]


def replace_box(
    graph: Graph,
    config: RunnableConfig,
    box: Sequence[float],
    *,
    index: int = 0,
    box_format: CropFrame = "original",
) -> RunnableConfig:
    """Replace pending box `index` of the run paused at `config` by `box` (in `box_format`,
    relative to the same view); the run then resumes with `graph.invoke(None, config)`.
    Returns the config of the edited checkpoint. A run not paused before the crop, an index
    out of range or a malformed box is one InvalidInputError line."""
    message, calls = _edited_calls(graph.get_state(config), box, index, box_format)
    edited = message.model_copy(update={"tool_calls": calls})
    updated: RunnableConfig = graph.update_state(config, {"messages": [edited]})
    return updated


async def areplace_box(
    graph: Graph,
    config: RunnableConfig,
    box: Sequence[float],
    *,
    index: int = 0,
    box_format: CropFrame = "original",
) -> RunnableConfig:
    """`replace_box` for async checkpointers."""
    message, calls = _edited_calls(await graph.aget_state(config), box, index, box_format)
    edited = message.model_copy(update={"tool_calls": calls})
    updated: RunnableConfig = await graph.aupdate_state(config, {"messages": [edited]})
    return updated


def _edited_calls(
    snapshot: StateSnapshot, box: Sequence[float], index: int, box_format: CropFrame
) -> tuple[AIMessage, list[ToolCall]]:
    """The paused localize message and its tool calls with box `index` replaced."""
    message = _last_message(snapshot.values) if CROP_TOOL_NAME in snapshot.next else None
    if message is None:
        raise InvalidInputError(NOT_PAUSED.format(next=list(snapshot.next)))
    crops = [k for k, call in enumerate(message.tool_calls) if call["name"] == CROP_TOOL_NAME]
    if not 0 <= index < len(crops):
        raise InvalidInputError(NO_SUCH_BOX.format(index=index, count=len(crops)))
    if box_format not in FRAMES:
        raise InvalidInputError(BAD_FRAME.format(known=list(FRAMES), frame=box_format))
    if isinstance(box, (str, bytes)) or not is_finite_box(box):
        raise InvalidInputError(BAD_BOX.format(box=box))
    calls = list(message.tool_calls)
    target = calls[crops[index]]
    args = {**target["args"], "box": [float(v) for v in box], "box_format": box_format}
    calls[crops[index]] = ToolCall(name=target["name"], args=args, id=target["id"])
    return message, calls


def _last_message(state: Mapping[str, Any]) -> AIMessage | None:
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    return last if isinstance(last, AIMessage) and last.tool_calls else None


def _pending(call: ToolCall) -> PendingBox:
    args = call["args"]
    return PendingBox(
        call_id=str(call["id"]),
        image_id=str(args.get("image_id", "img0")),
        box=[float(v) for v in args.get("box", [])],
        box_format=str(args.get("box_format", "norm1")),
    )
