"""Model-driven zoom: the model calls the zoom tool itself, as often as it needs, then answers.

    START → agent ─(zoom calls)→ crop (ToolNode on our crop tool, one task per call) → agent …
              ├─(only refused calls, budget left)→ agent
              └─(an answer without calls, or the final turn)→ END

`agent` shows the image and the question (and, each later turn, the crops the previous calls
made) and reads the reply's calls, however they arrive (OpenAI `tool_calls`, or `<tool_call>`
/ `<grounding>` text: `agent.tool_calls`), in the context's tool convention
(`agent.tool_conventions`). Each readable call within the budget (`max_hops` calls per
question) becomes one `crop` call in original-image pixels; every other call (malformed, an
unknown tool, a bad box, over the budget) is answered with an error tool result and recorded in
the turn's step. Once the budget is spent the model is asked once more, without tools, for its
final answer. Same input, output and context as the other graphs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy, Send

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.conversation import last_tool_results
from zoom_refine.agent.families import Family, qwen_resized_size
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.parsing import parse_answer
from zoom_refine.agent.state import (
    InputState,
    OutputState,
    StepRecord,
    ToolCallRecord,
    ZoomState,
    check_question,
    crop_failure_record,
    normalize_options,
)
from zoom_refine.agent.tool_calls import answer_text, parse_text_tool_calls, tool_call_text
from zoom_refine.agent.tool_conventions import (
    BUDGET_SPENT,
    FINAL_TURN,
    OUTSIDE,
    WIRE_KEY,
    CropRequest,
    ToolConvention,
    final_prompt,
    question_prompt,
    system_prompt,
    to_agent_messages,
    tool_convention,
)
from zoom_refine.graphs.calls import MODEL_RETRY, ModelReply, reply_usage, resolve_family
from zoom_refine.graphs.calls import resolve_model as resolve_chat_model
from zoom_refine.graphs.calls import step_record as record
from zoom_refine.tools.boxes import box_to_pixels
from zoom_refine.tools.crop_tool import CROP_TOOL_NAME, crop_tool
from zoom_refine.tools.encoding import text_content_block
from zoom_refine.tools.views import View, ViewRecord, next_view_ids

REFUSED = "refused"
"""`ToolMessage.additional_kwargs` key marking an error result the agent node wrote itself (the
call was never run), as opposed to a crop that failed in the tool."""
NO_ANSWER = "no answer in the reply: keeping the last stated answer"


@dataclass(frozen=True)
class ReadCall:
    """One call of a reply before it is checked: id, name, arguments, or why it is unreadable."""

    id: str
    name: str | None
    args: dict[str, Any] | None
    error: str | None = None


class AgentState(ZoomState, total=False):
    """The Zoom-Refine state plus the crop calls the last agent turn sends to the crop tool."""

    crop_calls: list[ToolCall]
    """This turn's crop calls in original pixels (replaced each turn; empty when done)."""


def uses_text_calls(context: ZoomContext, model: BaseChatModel) -> bool:
    """Whether tools are offered in the system turn and calls read from text (see
    `ZoomContext.tool_call_format`)."""
    if context.tool_call_format != "auto":
        return context.tool_call_format == "text"
    if isinstance(model, LocalVisionChatModel):
        return True
    return type(model).bind_tools is BaseChatModel.bind_tools


def agent(state: AgentState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """One model turn: show what is new (the question first, then the crops of the previous
    calls), ask, and turn the reply's calls into crop calls or error results."""
    context = runtime.context
    convention = tool_convention(context.tool_convention)
    options = normalize_options(state.get("options"))
    model = resolve_chat_model(context)  # before any view: views are made at its input size
    text_calls = uses_text_calls(context, model)
    log = list(state.get("messages", []))
    update: dict[str, Any] = {}
    new: list[BaseMessage] = []
    steps: list[StepRecord] = []
    if not log:
        look = first_look(state["image"], context)
        question = check_question(state["question"])
        if system := system_prompt(convention, text_calls=text_calls):
            new.append(SystemMessage(system))
        text = question_prompt(convention, question, options, context.max_hops)
        new.append(HumanMessage(content=[look.image_block, text_content_block(text)]))
        views: list[ViewRecord] = [look.view.to_record()]
        made: list[ViewRecord] = list(views)
        update["image_sha256"] = look.image_sha256
    else:
        made, failures = _tool_results(last_tool_results(log))
        views = [*state.get("views", []), *made]
        steps.extend(crop_failure_record(len(views) - 1, reason) for reason in failures)
    used = sum(isinstance(message, ToolMessage) for message in log)
    final = bool(log) and used >= context.max_hops
    if final:
        new.append(HumanMessage(final_prompt(convention, options, context.max_hops)))
    hop = len(views) - 1
    sent = to_agent_messages([*log, *new], convention, tool_images=context.tool_images)
    runnable = model if text_calls or final else model.bind_tools([convention.schema()])
    message, reply = _invoke(runnable, sent, convention if text_calls else None)
    turn = sum(isinstance(item, AIMessage) for item in log) + 1
    calls, wire = _read_calls(message, convention, turn)
    family = resolve_family(context, model)
    budget = 0 if final else context.max_hops - used
    records, sends, refusals = _check_calls(
        calls, convention, views, family, context, reply, budget, final=final
    )
    answer = parse_answer(answer_text(reply.text, convention.tag), options)
    done = final or not calls
    previous = state.get("answer")
    note = NO_ANSWER if done and answer is None and previous is not None else None
    first = next((item for item in records if item["box"] is not None), None)
    step = record(
        "agent",
        hop,
        reply,
        view=first["image"] if first else views[-1]["id"],
        answer=answer,
        box=first["box"] if first else None,
        box_frame=first["box_frame"] if first else None,
        confidence=None,
        crops=[view["id"] for view in made if view["hop"] > 0],
        tool_calls=records,
        note=note,
    )
    ai = AIMessage(
        content=reply.text,
        tool_calls=[tool_call(name=c.name or "", args=c.args or {}, id=c.id) for c in calls],
        response_metadata={WIRE_KEY: wire},
    )
    if wire == "openai":  # what the server returned, so the next request repeats it exactly
        ai = AIMessage(
            content=message.content,
            tool_calls=message.tool_calls,
            invalid_tool_calls=message.invalid_tool_calls,
            response_metadata={WIRE_KEY: wire},
        )
    update |= {
        "messages": [*new, ai, *([] if done else refusals)],
        "views": made,
        "hop": hop,
        "answer": answer if answer is not None else previous,
        "confidence": None,
        "steps": [*steps, step],
        "usage": reply.usage,
        "crop_calls": sends,
    }
    if state.get("initial_answer") is None and answer is not None:
        update["initial_answer"] = answer
    elif not log:
        update["initial_answer"] = None
    if done:
        update["stop_reason"] = "max_hops" if final else "answered"
        update["crop_calls"] = []
    return update


def _invoke(
    model: Any, messages: Sequence[BaseMessage], text_convention: ToolConvention | None
) -> tuple[AIMessage, ModelReply]:
    """Call the model and time it; the reply message (with any parsed tool calls) and its
    record fields. With calls written as text (`text_convention`), a server that parsed them
    anyway (`transformers serve` does) has its calls written back into the text, as the
    model wrote them, so the conversation goes on in the format the model knows."""
    started = time.perf_counter()
    message = model.invoke(list(messages))
    seconds = time.perf_counter() - started
    if not isinstance(message, AIMessage):
        message = AIMessage(content=message.content)
    if text_convention is not None and message.tool_calls:
        tag = text_convention.tag
        calls = [tool_call_text(call["name"], call["args"], tag) for call in message.tool_calls]
        text = "\n".join([message.text, *calls]) if message.text else "\n".join(calls)
        message = AIMessage(
            content=text,
            response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata,
        )
    sizes = message.response_metadata.get("image_sizes")
    reply = ModelReply(
        text=message.text,
        seconds=round(seconds, 4),
        usage=reply_usage(message),
        image_sizes=sizes if isinstance(sizes, list) else None,
    )
    return message, reply


def _read_calls(
    message: AIMessage, convention: ToolConvention, turn: int
) -> tuple[list[ReadCall], str]:
    """The reply's calls and how they arrived: the server's `tool_calls` (and the ones it could
    not parse), else calls written as text in the reply (ids `call-<turn>-<k>`)."""
    if message.tool_calls or message.invalid_tool_calls:
        calls = [
            ReadCall(id=str(call["id"] or f"call-{k}"), name=call["name"], args=dict(call["args"]))
            for k, call in enumerate(message.tool_calls, start=1)
        ]
        calls += [
            ReadCall(
                id=str(call.get("id") or f"invalid-{k}"),
                name=call.get("name"),
                args=None,
                error=f"the arguments are not a JSON object: {call.get('args')!r}",
            )
            for k, call in enumerate(message.invalid_tool_calls, start=1)
        ]
        return calls, "openai"
    found = parse_text_tool_calls(message.text, convention.tag, name=convention.tool_name)
    return [
        ReadCall(
            id=f"call-{turn}-{k}",
            name=call.name,
            args=call.args if call.error is None else None,
            error=call.error,
        )
        for k, call in enumerate(found, start=1)
    ], "text"


def _check_calls(
    calls: Sequence[ReadCall],
    convention: ToolConvention,
    views: Sequence[ViewRecord],
    family: Family,
    context: ZoomContext,
    reply: ModelReply,
    budget: int,
    *,
    final: bool,
) -> tuple[list[ToolCallRecord], list[ToolCall], list[ToolMessage]]:
    """Each call's record; the crop calls to run (original pixels, a distinct new view id each);
    error results for the rest."""
    image_ids = [view["id"] for view in views]
    fresh = iter(next_view_ids(views, len(calls))) if calls else iter(())
    records: list[ToolCallRecord] = []
    sends: list[ToolCall] = []
    refusals: list[ToolMessage] = []
    for call in calls:
        request = convention.read(call.name, call.args or {}, image_ids) if not call.error else None
        error = call.error or (request if isinstance(request, str) else None)
        item = ToolCallRecord(
            id=call.id, name=call.name, args=call.args, image=None, box=None, box_frame=None,
            view=None, error=None,
        )  # fmt: skip
        pixels: tuple[float, float, float, float] | None = None
        if isinstance(request, CropRequest):
            item |= {"image": request.image_id, "box": list(request.box)}
            item["box_frame"] = request.frame
            converted = _original_pixels(request, views, family, context, reply)
            pixels, error = (None, converted) if isinstance(converted, str) else (converted, None)
        if error is None and (final or budget <= 0):
            error = FINAL_TURN if final else BUDGET_SPENT.format(limit=context.max_hops)
        if error is None and isinstance(request, CropRequest) and pixels is not None:
            budget -= 1
            item["view"] = view_id = next(fresh)
            args = {"image_id": request.image_id, "box": list(pixels), "box_format": "original"}
            sends.append(
                tool_call(name=CROP_TOOL_NAME, args=args | {"view_id": view_id}, id=call.id)
            )
        else:
            item["error"] = error
            refusals.append(
                ToolMessage(
                    content=str(error),
                    tool_call_id=call.id,
                    name=call.name or convention.tool_name,
                    status="error",
                    additional_kwargs={REFUSED: True},
                )
            )
        records.append(item)
    return records, sends, refusals


def _original_pixels(
    request: CropRequest,
    views: Sequence[ViewRecord],
    family: Family,
    context: ZoomContext,
    reply: ModelReply,
) -> tuple[float, float, float, float] | str:
    """The request's box in original-image pixels, or why it is refused (it lies wholly
    outside the image it was drawn on). A `pixel` box is read in the size the model saw the
    image at: what the local backend reports for that image (`image_sizes`, one per image in
    conversation order, which is view order), Qwen2.5-VL's resize rule for servers, else the
    size we showed it at."""
    index = [view["id"] for view in views].index(request.image_id)
    view = View.from_record(views[index])
    size = view.shown_size
    if request.frame == "pixel":
        if reply.image_sizes and index < len(reply.image_sizes):
            width, height = reply.image_sizes[index]
            size = (int(width), int(height))
        elif family == "qwen2_5_vl":
            with contextlib.suppress(ValueError):  # aspect ratio over 200: never resized
                size = qwen_resized_size(
                    size, min_pixels=context.qwen_min_pixels, max_pixels=context.qwen_max_pixels
                )
    x1, y1, x2, y2 = box_to_pixels(request.box, request.frame, view.box, size)
    left, top, right, bottom = min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    region = view.box
    if right < region.x1 or bottom < region.y1 or left > region.x2 or top > region.y2:
        frame = f"{request.frame} of {request.image_id}"
        return OUTSIDE.format(box=list(request.box), frame=frame)
    return (x1, y1, x2, y2)


def _tool_results(results: Sequence[ToolMessage]) -> tuple[list[ViewRecord], list[str]]:
    """The views the crop tool made, in order, and why each crop it was asked for failed
    (results the agent node wrote itself for refused calls are already in its step)."""
    made = [r.artifact["view"] for r in results if r.status != "error" and r.artifact]
    failed = [
        str(r.content)
        for r in results
        if (r.status == "error" or not r.artifact) and not r.additional_kwargs.get(REFUSED)
    ]
    return made, failed


def route_after_agent(state: AgentState) -> list[Send] | Literal["agent", "__end__"]:
    """Each crop call to the crop tool (in parallel); back to the model when it only made calls
    that were refused; else the run is over."""
    if state.get("stop_reason"):
        return "__end__"
    calls = state.get("crop_calls") or []
    if calls:
        return [Send("crop", [call]) for call in calls]
    return "agent"


def build_agent_graph(
    *,
    name: str = "agent",
    retry_policy: RetryPolicy | None = MODEL_RETRY,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled model-driven graph: invoke with `context=ZoomContext(tool_convention=...,
    max_hops=...)` and `config={"recursion_limit": context.recursion_limit}`."""
    return build_agent_builder(retry_policy=retry_policy).compile(
        name=name, checkpointer=checkpointer
    )


def build_agent_builder(
    *, retry_policy: RetryPolicy | None = MODEL_RETRY
) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph; `retry_policy` applies to the node that calls the model."""
    builder = StateGraph(
        AgentState, context_schema=ZoomContext, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("agent", agent, retry_policy=retry_policy)
    builder.add_node("crop", ToolNode([crop_tool], name="crop"))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route_after_agent, ["crop", "agent", END])
    builder.add_edge("crop", "agent")
    return builder
