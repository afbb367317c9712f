"""The baseline: one direct answer on the downsampled image, no zoom (what Zoom-Refine must beat)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, RetryPolicy

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.parsing import parse_answer
from zoom_refine.agent.prompts import baseline_prompt, system_prompt
from zoom_refine.agent.state import (
    InputState,
    OutputState,
    ZoomState,
    check_question,
    normalize_options,
)
from zoom_refine.agent.view_cost import view_cost
from zoom_refine.graphs.calls import (
    MODEL_RETRY,
    call_model,
    resolve_family,
    resolve_model,
    step_record,
)
from zoom_refine.tools.encoding import text_content_block


def answer_directly(state: ZoomState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """Show the downsampled image with the question; parse one answer."""
    context = runtime.context
    question = check_question(state["question"])
    options = normalize_options(state.get("options"))
    model = resolve_model(context)  # before the view: it is made at the model's input size
    look = first_look(state["image"], context)
    text = state.get("prompt") or baseline_prompt(question, options, prompts=context.prompt_set)
    prompt = HumanMessage(content=[look.image_block, text_content_block(text)])
    system = system_prompt(context.prompt_set)
    opening: list[BaseMessage] = [SystemMessage(system)] if system else []
    reply = call_model(model, [*opening, prompt])
    answer = parse_answer(reply.text, options)
    step = step_record(
        "answer",
        0,
        reply,
        view="img0",
        answer=answer,
        box=None,
        box_frame=None,
        confidence=None,
        note=None if answer else "no answer in the reply",
        **view_cost(look.view.shown_size, processed_size=reply.processed_size,
            family=resolve_family(context, model), context=context),
    )  # fmt: skip
    return {
        "messages": [*opening, prompt, AIMessage(content=reply.text)],
        "views": [look.view.to_record()],
        "image_sha256": look.image_sha256,
        "answer": answer,
        "initial_answer": answer,
        "confidence": None,
        "steps": [step],
        "usage": reply.usage,
        "stop_reason": "baseline",
    }


def build_baseline_graph(
    *,
    checkpointer: Checkpointer = None,
    name: str = "baseline",
    retry_policy: RetryPolicy | None = MODEL_RETRY,
    **compile_options: Any,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """One node, same input and output schema as the Zoom-Refine graph; `compile_options` are
    LangGraph's (`interrupt_before`, `store`, `debug`, …)."""
    return build_baseline_builder(retry_policy=retry_policy).compile(
        checkpointer=checkpointer, name=name, **compile_options
    )


def build_baseline_builder(
    *, retry_policy: RetryPolicy | None = MODEL_RETRY
) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled baseline graph; `retry_policy` applies to the node that calls the model."""
    builder = StateGraph(
        ZoomState, context_schema=ZoomContext, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("answer", answer_directly, retry_policy=retry_policy)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder
