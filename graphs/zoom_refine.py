"""The Zoom-Refine graph: localize → crop → refine, and zoom again while unsure.

    START → localize ─(box)→ crop → refine ─(unsure, hops left)→ localize …
                └─(no box)→ END              └─(sure / out of hops)→ END

`localize` shows the downsampled image and asks for a preliminary answer and a box; it emits the
box as a `crop` tool call. `crop` is a ToolNode running the crop tool, which cuts the region from
the full-resolution image. `refine` shows the crop and asks the model to re-check its answer.

Multi-region (beyond the paper, `max_regions > 1`): localize may return up to that many boxes;
regions whose crops would overlap heavily are merged, and each remaining region is its own
`crop` tool call (ids `crop-{hop}-{k}`, explicit view ids so one ToolNode step gives unique ones).
Refine shows every crop of the hop, in order, in one user turn. Zooming again localizes inside
the last crop of the hop only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from zoom_refine.agent.confidence import letter_probability
from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import Family, expected_frame, qwen_resized_size
from zoom_refine.agent.parsing import (
    RawBox,
    find_choice,
    parse_boxes,
    parse_choice,
    parse_confidence,
    parse_open_answer,
)
from zoom_refine.agent.prompts import localize_prompt, refine_prompt, zoom_again_prompt
from zoom_refine.agent.state import (
    InputState,
    OutputState,
    ZoomState,
    check_question,
    normalize_options,
)
from zoom_refine.graphs.calls import (
    MODEL_RETRY,
    ModelReply,
    call_model,
    first_look,
    resolve_family,
    resolve_model,
    step_record,
)
from zoom_refine.tools.boxes import (
    BoxFrame,
    FloatBox,
    box_pixels_of_size_to_norm1,
    box_pixels_to_norm1,
    box_to_pixels,
    detect_box_frame,
)
from zoom_refine.tools.crop import merge_overlapping_pixel_boxes
from zoom_refine.tools.crop_tool import CROP_TOOL_NAME, crop_tool
from zoom_refine.tools.encoding import text_content_block
from zoom_refine.tools.views import View

NO_BOX = "no box in the reply: keeping the answer, no zoom"
INVERTED_BOX = "box corners inverted and accept_inverted_boxes is off: no zoom"
OUT_OF_RANGE = "box numbers outside the {frame} range (box_format is forced): no zoom"
FRAME_LIMITS: dict[str, float] = {"norm1": 1.0, "norm1000": 1000.0}


def localize(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Ask for an answer and a box (up to `max_regions` boxes): on the whole image first, inside
    the latest crop after. Each accepted region becomes one `crop` tool call."""
    context = runtime.context
    options = normalize_options(state.get("options"))
    hop = state.get("hop", 0)
    regions = context.max_regions
    update: dict[str, Any] = {}
    if hop == 0:
        question = check_question(state["question"])
        look = first_look(state["image"], context)
        view = look.view
        full = view.box
        prompt = HumanMessage(
            content=[
                look.image_block,
                text_content_block(
                    localize_prompt(question, options, context.prompt_style, regions)
                ),
            ]
        )
        update |= {"views": [view.to_record()], "image_sha256": look.image_sha256}
    else:
        view = View.from_record(state["views"][-1])
        full = View.from_record(state["views"][0]).box
        prompt = HumanMessage(content=zoom_again_prompt(options, context.prompt_style, regions))

    log = [*state.get("messages", []), prompt]
    model = resolve_model(context)
    reply = call_model(model, log)
    answer = _parse_answer(reply.text, options, rechecked=False)
    family = resolve_family(context, model)
    expected = expected_frame(family, context.prompt_style == "internvl")
    raw_boxes = parse_boxes(reply.text)[:regions]
    reads = [_read_box(box, expected, reply, view, family, context) for box in raw_boxes]
    accepted = [read for read in reads if read.args is not None]
    first = reads[0] if reads else None
    if regions > 1 and len(accepted) > 1:
        accepted = _merge_regions(accepted, view, (full.width, full.height), context)
    tool_calls = _crop_calls(accepted, view, hop, first_new=_next_view_number(state, hop))
    rejections = [read.note for read in reads if read.note]
    parsed: dict[str, Any] = {
        "view": view.id,
        "answer": answer,
        "box": list(first.box) if first else None,
        "box_frame": first.frame if first else None,
        "frame_size": list(first.frame_size) if first and first.frame_size else None,
        "confidence": None,
        "note": (first.note if first else NO_BOX) if regions == 1 else _notes(reads, rejections),
    }
    if regions > 1:
        parsed["boxes"] = [list(read.box) for read in reads]
        parsed["regions"] = [
            [round(v, 2) for v in read.pixels] for read in accepted if read.pixels is not None
        ]
    step = step_record("localize", hop, reply, **parsed)
    update |= {
        "messages": [prompt, AIMessage(content=reply.text, tool_calls=tool_calls)],
        "steps": [step],
        "usage": reply.usage,
    }
    if hop == 0:
        update |= {"initial_answer": answer, "answer": answer, "confidence": None}
    if not tool_calls:
        update["stop_reason"] = "no_box"
    return update


@dataclass(frozen=True)
class _BoxRead:
    """One box of a localize reply as we read it: the raw numbers, the frame, and either the
    crop tool's arguments or why the box was refused."""

    box: RawBox
    frame: BoxFrame | None
    frame_size: tuple[int, int] | None = None
    args: dict[str, Any] | None = None
    pixels: FloatBox | None = None
    """The region in original pixels (multi-region runs only, for merging and traces)."""
    note: str | None = None


def _read_box(
    box: RawBox,
    expected: BoxFrame,
    reply: ModelReply,
    view: View,
    family: Family,
    context: ZoomContext,
) -> _BoxRead:
    """Read one box the model drew on `view`: `box` is its raw numbers, in the frame
    `_accept_box` decides (0–1, 0–1000, or pixels of the processor's resized view). The crop
    tool gets them in that frame, or in 0–1 of the view for pixel boxes; `pixels` is the region
    in original pixels."""
    frame, rejection = _accept_box(box, expected, context)
    if frame is None:
        return _BoxRead(box=box, frame=None, note=rejection)
    crop_box, crop_frame, frame_size = list(box), frame, None
    if frame == "pixel":  # pixels of the image as the model's processor resized it
        frame_size = _pixel_frame_size(reply, view, family, context)
        crop_box, crop_frame = box_pixels_of_size_to_norm1(box, frame_size), "norm1"
    args = {"image_id": view.id, "box": crop_box, "box_format": crop_frame}
    pixels = None
    if context.max_regions > 1:
        x1, y1, x2, y2 = box_to_pixels(crop_box, crop_frame, view.box, view.shown_size)
        pixels = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    return _BoxRead(box=box, frame=frame, frame_size=frame_size, args=args, pixels=pixels)


def _merge_regions(
    reads: list[_BoxRead], view: View, image_size: tuple[int, int], context: ZoomContext
) -> list[_BoxRead]:
    """Join regions whose crops would overlap heavily (`merge_overlapping_pixel_boxes`): a merged
    region is sent to the crop tool as the union box in 0–1 of the view it was drawn on."""
    pixels = [read.pixels for read in reads if read.pixels is not None]
    merged = merge_overlapping_pixel_boxes(
        pixels, view.box, image_size, context, context.region_merge_iou
    )
    result = []
    for region in merged:
        lead = reads[region.members[0]]
        if len(region.members) == 1:
            result.append(lead)
            continue
        args = {
            "image_id": view.id,
            "box": box_pixels_to_norm1(region.box, view.box),
            "box_format": "norm1",
        }
        result.append(replace(lead, args=args, pixels=region.box))
    return result


def _crop_calls(
    reads: list[_BoxRead], view: View, hop: int, *, first_new: int
) -> list[dict[str, Any]]:
    """One `crop` tool call per region. A single region keeps the paper's call (id `crop-{hop}`,
    the tool picks the next view id); several get ids `crop-{hop}-{k}` and explicit view ids
    `img{first_new + k - 1}`, since they run in one ToolNode step against the same views."""
    if len(reads) == 1 and reads[0].args is not None:
        return [{"name": CROP_TOOL_NAME, "args": reads[0].args, "id": f"crop-{hop + 1}"}]
    calls = []
    for k, read in enumerate(reads, start=1):
        args = {**(read.args or {}), "view_id": f"img{first_new + k - 1}"}
        calls.append({"name": CROP_TOOL_NAME, "args": args, "id": f"crop-{hop + 1}-{k}"})
    return calls


def _next_view_number(state: ZoomState, hop: int) -> int:
    """The number of the next free view id `img{n}` (ids may skip one whose crop failed)."""
    if hop == 0:
        return 1
    numbers = [int(v["id"][3:]) for v in state["views"] if re.fullmatch(r"img\d+", v["id"])]
    return max(numbers, default=len(state["views"]) - 1) + 1


def _notes(reads: list[_BoxRead], rejections: list[str]) -> str | None:
    if not reads:
        return NO_BOX
    if len(rejections) == len(reads):
        return rejections[0]
    if rejections:
        return "; ".join(f"box {i + 1}: {r.note}" for i, r in enumerate(reads) if r.note)
    return None


def _tool_results(messages: list[Any]) -> list[ToolMessage]:
    """The ToolMessages after the last AI message: every crop of this hop, in call order."""
    results: list[ToolMessage] = []
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            break
        results.append(message)
    return results[::-1]


def refine(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Show the crop(s) and ask the model to re-check; keep the previous answer if none is
    parsed. With several regions every crop of the hop is shown, in the order given."""
    context = runtime.context
    results = _tool_results(state["messages"])
    made = [r for r in results if r.status != "error" and r.artifact]
    failed = [r for r in results if r.status == "error" or not r.artifact]
    if not made:
        result = state["messages"][-1]
        reason = result.content if isinstance(result, ToolMessage) else "no crop result"
        return {"stop_reason": "crop_failed", "steps": [_crop_failure_step(state, str(reason))]}
    views = [View.from_record(result.artifact["view"]) for result in made]
    view = views[-1]
    options = normalize_options(state.get("options"))
    previous = state.get("answer")
    prompt = HumanMessage(content=refine_prompt(state["question"], options, previous, len(views)))
    by_token = context.confidence_source == "token" and bool(options)
    reply = call_model(resolve_model(context), [*state["messages"], prompt], logprobs=by_token)
    parsed = _parse_answer(reply.text, options, rechecked=True)
    confidence, source = _confidence(reply, options, by_token)
    stop = _stop_reason(confidence, view.hop, context)
    extra: dict[str, Any] = {}
    if context.max_regions > 1:
        extra["crops"] = [item.id for item in views]
    step = step_record(
        "refine",
        view.hop,
        reply,
        view=view.id,
        answer=parsed,
        box=None,
        box_frame=None,
        confidence=confidence,
        confidence_source=source,
        note=None if parsed else "no answer in the reply: keeping the previous answer",
        **extra,
    )
    failures = [_crop_failure_step(state, str(result.content)) for result in failed]
    update: dict[str, Any] = {
        "messages": [prompt, AIMessage(content=reply.text)],
        "views": [item.to_record() for item in views],
        "hop": view.hop,
        "answer": parsed or previous,
        "confidence": confidence,
        "steps": [*failures, step],
        "usage": reply.usage,
    }
    if stop:
        update["stop_reason"] = stop
    return update


def _confidence(
    reply: ModelReply, options: dict[str, str] | None, by_token: bool
) -> tuple[float | None, str]:
    """The answer letter's token probability when asked and available, else the stated value."""
    if by_token and options and reply.logprobs:
        found = find_choice(reply.text, options, rechecked=True)
        probability = letter_probability(reply.text, found[1], reply.logprobs) if found else None
        if probability is not None:
            return probability, "token"
    return parse_confidence(reply.text), "verbal"


def _crop_failure_step(state: ZoomState, reason: str) -> dict[str, Any]:
    return {"node": "crop", "hop": state.get("hop", 0) + 1, "raw": None, "note": reason}


def _parse_answer(text: str, options: dict[str, str] | None, *, rechecked: bool) -> str | None:
    if options:
        return parse_choice(text, options, rechecked=rechecked)
    return parse_open_answer(text, rechecked=rechecked)


def _pixel_frame_size(
    reply: ModelReply, view: View, family: Family, context: ZoomContext
) -> tuple[int, int]:
    """(width, height) of the image a pixel box was drawn on: the size the model's processor
    resized the last image to (reported by local models, rebuilt for Qwen2.5-VL servers), else
    the size we showed it at."""
    if reply.image_sizes:
        width, height = reply.image_sizes[-1]
        return int(width), int(height)
    if family == "qwen2_5_vl":
        return qwen_resized_size(
            view.shown_size,
            min_pixels=context.qwen_min_pixels,
            max_pixels=context.qwen_max_pixels,
        )
    return view.shown_size


def _accept_box(
    box: RawBox, expected: BoxFrame, context: ZoomContext
) -> tuple[BoxFrame | None, str | None]:
    """The frame to read `box` in, or None and why the box is refused.

    `auto` detects the frame from the numbers. A forced frame refuses numbers outside its range,
    and `accept_inverted_boxes=False` refuses swapped corners: both reproduce the official code.
    """
    if not context.accept_inverted_boxes and (box[2] < box[0] or box[3] < box[1]):
        return None, INVERTED_BOX
    if context.box_format == "auto":
        return detect_box_frame(box, expected), None
    limit = FRAME_LIMITS.get(context.box_format)
    if limit is not None and any(not 0 <= value <= limit for value in box):
        return None, OUT_OF_RANGE.format(frame=context.box_format)
    return context.box_format, None


def _stop_reason(confidence: float | None, hop: int, context: ZoomContext) -> str | None:
    """None to zoom again; else why we stop. No stated confidence counts as sure."""
    if confidence is None or confidence >= context.confidence_threshold:
        return "confident"
    if hop >= context.max_hops:
        return "max_hops"
    return None


def route_after_localize(state: ZoomState) -> Literal["crop", "__end__"]:
    """To the crop tool when the model gave a box, else stop with the answer we have."""
    last = state["messages"][-1]
    return "crop" if isinstance(last, AIMessage) and last.tool_calls else "__end__"


def route_after_refine(state: ZoomState) -> Literal["localize", "__end__"]:
    """Zoom again inside the crop while the model is unsure and hops remain."""
    return "__end__" if state.get("stop_reason") else "localize"


def build_graph(
    *, name: str = "zoom_refine", retry_policy: RetryPolicy | None = MODEL_RETRY
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled Zoom-Refine graph. Invoke with `context=ZoomContext(...)` and
    `config={"recursion_limit": context.recursion_limit}`; compile your own from
    `build_builder()` to add a checkpointer."""
    return build_builder(retry_policy=retry_policy).compile(name=name)


def build_builder(
    *, retry_policy: RetryPolicy | None = MODEL_RETRY
) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph, for callers who compile it with a checkpointer or store.

    `retry_policy` applies to the two nodes that call the model (None: no retries)."""
    builder = StateGraph(
        ZoomState, context_schema=ZoomContext, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("localize", localize, retry_policy=retry_policy)
    builder.add_node("crop", ToolNode([crop_tool], name="crop"))
    builder.add_node("refine", refine, retry_policy=retry_policy)
    builder.add_edge(START, "localize")
    builder.add_conditional_edges("localize", route_after_localize)
    builder.add_edge("crop", "refine")
    builder.add_conditional_edges("refine", route_after_refine)
    return builder
