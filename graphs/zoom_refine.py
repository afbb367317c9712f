"""The Zoom-Refine graph: localize → crop → refine, and zoom again while unsure.

    START → localize ─(box)→ crop → refine ─(unsure, hops left)→ localize …
                └─(no box)→ END              └─(sure / out of hops)→ END

`localize` shows the downsampled image and asks for a preliminary answer and a box; it emits the
box as a `crop` tool call. `crop` is a ToolNode running the crop tool, which cuts the region from
the full-resolution image. `refine` shows the crop and asks the model to re-check its answer.
"""

from __future__ import annotations

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
    parse_box,
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
from zoom_refine.tools.boxes import BoxFrame, box_pixels_of_size_to_norm1, detect_box_frame
from zoom_refine.tools.crop_tool import CROP_TOOL_NAME, crop_tool
from zoom_refine.tools.encoding import text_content_block
from zoom_refine.tools.views import View

NO_BOX = "no box in the reply: keeping the answer, no zoom"
INVERTED_BOX = "box corners inverted and accept_inverted_boxes is off: no zoom"
OUT_OF_RANGE = "box numbers outside the {frame} range (box_format is forced): no zoom"
FRAME_LIMITS: dict[str, float] = {"norm1": 1.0, "norm1000": 1000.0}


def localize(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Ask for an answer and a box: on the whole image first, inside the latest crop after."""
    context = runtime.context
    options = normalize_options(state.get("options"))
    hop = state.get("hop", 0)
    update: dict[str, Any] = {}
    if hop == 0:
        question = check_question(state["question"])
        look = first_look(state["image"], context)
        view = look.view
        prompt = HumanMessage(
            content=[
                look.image_block,
                text_content_block(localize_prompt(question, options, context.prompt_style)),
            ]
        )
        update |= {"views": [view.to_record()], "image_sha256": look.image_sha256}
    else:
        view = View.from_record(state["views"][-1])
        prompt = HumanMessage(content=zoom_again_prompt(options, context.prompt_style))

    log = [*state.get("messages", []), prompt]
    model = resolve_model(context)
    reply = call_model(model, log)
    answer = _parse_answer(reply.text, options, rechecked=False)
    box = parse_box(reply.text)
    expected = expected_frame(resolve_family(context, model), context.prompt_style == "internvl")
    frame, rejection = _accept_box(box, expected, context) if box else (None, NO_BOX)
    tool_calls = []
    frame_size = None
    if box and frame:
        crop_box, crop_frame = list(box), frame
        if frame == "pixel":  # pixels of the image as the model's processor resized it
            frame_size = _pixel_frame_size(reply, view, resolve_family(context, model), context)
            crop_box, crop_frame = box_pixels_of_size_to_norm1(box, frame_size), "norm1"
        args = {"image_id": view.id, "box": crop_box, "box_format": crop_frame}
        tool_calls = [{"name": CROP_TOOL_NAME, "args": args, "id": f"crop-{hop + 1}"}]
    step = step_record(
        "localize",
        hop,
        reply,
        view=view.id,
        answer=answer,
        box=list(box) if box else None,
        box_frame=frame,
        frame_size=list(frame_size) if frame_size else None,
        confidence=None,
        note=rejection,
    )
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


def refine(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Show the crop and ask the model to re-check; keep the previous answer if none is parsed."""
    context = runtime.context
    result = state["messages"][-1]
    if not isinstance(result, ToolMessage) or result.status == "error" or not result.artifact:
        reason = result.content if isinstance(result, ToolMessage) else "no crop result"
        return {"stop_reason": "crop_failed", "steps": [_crop_failure_step(state, str(reason))]}
    view = View.from_record(result.artifact["view"])
    options = normalize_options(state.get("options"))
    previous = state.get("answer")
    prompt = HumanMessage(content=refine_prompt(state["question"], options, previous))
    by_token = context.confidence_source == "token" and bool(options)
    reply = call_model(resolve_model(context), [*state["messages"], prompt], logprobs=by_token)
    parsed = _parse_answer(reply.text, options, rechecked=True)
    confidence, source = _confidence(reply, options, by_token)
    stop = _stop_reason(confidence, view.hop, context)
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
    )
    update: dict[str, Any] = {
        "messages": [prompt, AIMessage(content=reply.text)],
        "views": [view.to_record()],
        "hop": view.hop,
        "answer": parsed or previous,
        "confidence": confidence,
        "steps": [step],
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
