"""The Zoom-Refine graph: localize → crop → refine, and zoom again while unsure.

    START → localize ─(box)→ crop → refine ─(unsure, hops left)→ localize …
                └─(no box)→ END              └─(sure / out of hops)→ END

`localize` asks for an answer and a box on the downsampled view and turns each region read
(`agent.regions`, in original pixels) into a `crop` tool call; `crop` is a ToolNode running the
crop tool on the full-resolution image; `refine` shows the crop(s) and asks for a re-check."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.errors import GraphBubbleUp
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, RetryPolicy

from zoom_refine.agent.confidence import answer_confidence
from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.conversation import crop_results, last_tool_results
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.parsing import parse_answer
from zoom_refine.agent.prompts import (
    localize_prompt,
    refine_prompt,
    system_prompt,
    zoom_again_prompt,
)
from zoom_refine.agent.regions import crop_tool_calls, read_regions
from zoom_refine.agent.state import (
    InputState,
    OutputState,
    StepRecord,
    ZoomState,
    check_question,
    crop_failure_record,
    normalize_options,
    refine_failure,
)
from zoom_refine.agent.view_cost import view_cost
from zoom_refine.graphs.calls import MODEL_RETRY, call_model, resolve_family, resolve_model
from zoom_refine.graphs.calls import step_record as record
from zoom_refine.tools.crop_tool import crop_tool
from zoom_refine.tools.encoding import text_content_block
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.views import View


def localize(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Ask for an answer and up to `max_regions` boxes, on the whole image first and inside the
    latest crop after; each region read becomes one `crop` tool call."""
    context, hop = runtime.context, state.get("hop", 0)
    options = normalize_options(state.get("options"))
    model = resolve_model(context)  # before any view: views are made at the model's input size
    update: dict[str, Any] = {}
    prompts, opening = context.prompt_set, []  # opening: the system message, if any
    if hop == 0:
        look = first_look(state["image"], context)
        text = localize_prompt(
            check_question(state["question"]),
            options,
            context.prompt_style,
            context.max_regions,
            prompts=prompts,
        )
        system = system_prompt(prompts)
        opening = [SystemMessage(system)] if system else []
        prompt = HumanMessage(content=[look.image_block, text_content_block(text)])
        view, views = look.view, [look.view.to_record()]
        update |= {"views": views, "image_sha256": look.image_sha256}
    else:
        view, views = View.from_record(state["views"][-1]), state["views"]
        text = zoom_again_prompt(
            options,
            context.prompt_style,
            context.max_regions,
            question=state["question"],
            previous_answer=state.get("answer"),
            prompts=prompts,
        )
        prompt = HumanMessage(text)
    reply = call_model(model, [*state.get("messages", []), *opening, prompt])
    answer = parse_answer(reply.text, options, mode=context.answer_parser)
    original = View.from_record(views[0]).box
    family = resolve_family(context, model)
    read = read_regions(
        reply.text, view, (original.width, original.height), family, context,
        processed_size=reply.processed_size,
    )  # fmt: skip
    calls = crop_tool_calls(read, view, hop, views)
    cost = view_cost(view.shown_size, processed_size=reply.processed_size, family=family,
        context=context)  # fmt: skip
    fields = read.step_fields(several=context.max_regions > 1)
    update |= {
        "messages": [*opening, prompt, AIMessage(content=reply.text, tool_calls=calls)],
        "steps": [record("localize", hop, reply, view=view.id, answer=answer, **fields, **cost)],
        "usage": reply.usage,
    }
    if hop == 0:
        update |= {"initial_answer": answer, "answer": answer, "confidence": None}
    return update if calls else update | {"stop_reason": "no_box"}


def refine(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Show the crop(s) of this hop and ask the model to re-check; keep the previous answer if
    none is parsed. With `keep_answer_on_refine_failure` (the official preset), a refine call
    that raises keeps the previous answer too (stop reason `refine_failed`), as the official
    code does; otherwise the error ends the sample."""
    context = runtime.context
    views, failures = crop_results(last_tool_results(state["messages"]))
    failed = [crop_failure_record(state.get("hop", 0) + 1, reason) for reason in failures]
    if not views:
        return {"stop_reason": "crop_failed", "steps": failed[-1:]}
    options, previous = normalize_options(state.get("options")), state.get("answer")
    text = refine_prompt(
        state["question"], options, previous, len(views), prompts=context.prompt_set
    )
    prompt = HumanMessage(text)
    by_token = context.confidence_source == "token" and bool(options)
    model = resolve_model(context)
    try:
        reply = call_model(model, [*state["messages"], prompt], logprobs=by_token)
    except (GraphBubbleUp, ZoomRefineError):
        raise  # interrupts and user errors (a bad setting fails every sample) are not kept
    except Exception as error:
        if not context.keep_answer_on_refine_failure:
            raise
        return refine_failure([view.to_record() for view in views], failed, previous, error)
    answer = parse_answer(reply.text, options, rechecked=True, mode=context.answer_parser)
    confidence, source = answer_confidence(reply.text, options, reply.logprobs, by_token=by_token)
    hop = views[-1].hop
    note = None if answer else "no answer in the reply: keeping the previous answer"
    step: StepRecord = record("refine", hop, reply, view=views[-1].id, answer=answer, box=None,
        box_frame=None, confidence=confidence, confidence_source=source, note=note,
        **view_cost(views[-1].shown_size, processed_size=reply.processed_size,
            family=resolve_family(context, model), context=context))  # fmt: skip
    if context.max_regions > 1:
        step["crops"] = [item.id for item in views]
    update: dict[str, Any] = {
        "messages": [prompt, AIMessage(content=reply.text)],
        "views": [item.to_record() for item in views],
        "hop": hop,
        "answer": answer or previous,
        "confidence": confidence,
        "steps": [*failed, step],
        "usage": reply.usage,
    }
    stop = context.stop_reason(confidence, hop)
    return update | {"stop_reason": stop} if stop else update


def route_after_localize(state: ZoomState) -> Literal["crop", "__end__"]:
    """To the crop tool when the model gave a box, else stop with the answer we have."""
    last = state["messages"][-1]
    return "crop" if isinstance(last, AIMessage) and last.tool_calls else "__end__"


def route_after_refine(state: ZoomState) -> Literal["localize", "__end__"]:
    """Zoom again inside the crop while the model is unsure and hops remain."""
    return "__end__" if state.get("stop_reason") else "localize"


def build_graph(
    *,
    checkpointer: Checkpointer = None,
    name: str = "zoom_refine",
    retry_policy: RetryPolicy | None = MODEL_RETRY,
    **compile_options: Any,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled graph: invoke with `context=ZoomContext(...)` and `config={"recursion_limit":
    context.recursion_limit}`. `compile_options` are LangGraph's (`interrupt_before=["crop"]`
    pauses after localize with the pending boxes in the state; `store`, `debug`, …)."""
    return build_builder(retry_policy=retry_policy).compile(
        checkpointer=checkpointer, name=name, **compile_options
    )


def build_builder(
    *, retry_policy: RetryPolicy | None = MODEL_RETRY
) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph; `retry_policy` applies to the nodes that call the model."""
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
