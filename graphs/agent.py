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

from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, RetryPolicy, Send

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.conversation import last_tool_results
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.parsing import parse_answer
from zoom_refine.agent.state import (
    InputState,
    OutputState,
    StepRecord,
    ViewRecord,
    ZoomState,
    check_question,
    crop_failure_record,
    normalize_options,
)
from zoom_refine.agent.tool_calls import answer_text
from zoom_refine.agent.tool_checks import (
    check_calls,
    read_calls,
    text_reply,
    tool_results,
    uses_text_calls,
)
from zoom_refine.agent.tool_conventions import (
    final_prompt,
    question_prompt,
    system_prompt,
    to_agent_messages,
    tool_convention,
)
from zoom_refine.agent.view_cost import view_cost
from zoom_refine.graphs.calls import MODEL_RETRY, chat, model_reply, resolve_family
from zoom_refine.graphs.calls import resolve_model as resolve_chat_model
from zoom_refine.graphs.calls import step_record as record
from zoom_refine.tools.crop_tool import crop_tool
from zoom_refine.tools.encoding import text_content_block

NO_ANSWER = "no answer in the reply: keeping the last stated answer"


class AgentState(ZoomState, total=False):
    """The Zoom-Refine state plus the crop calls the last agent turn sends to the crop tool."""

    crop_calls: list[ToolCall]
    """This turn's crop calls in original pixels (replaced each turn; empty when done)."""


def agent(state: AgentState, runtime: Runtime[ZoomContext]) -> dict[str, Any]:
    """One model turn: show what is new (the question first, then the crops of the previous
    calls), ask, and turn the reply's calls into crop calls or error results."""
    context = runtime.context
    prompts = context.prompt_set  # every text the model reads
    options = normalize_options(state.get("options"))
    model = resolve_chat_model(context)  # before any view: views are made at its input size
    convention = tool_convention(context.resolved_convention(model))
    text_calls = uses_text_calls(context, model)
    log = list(state.get("messages", []))
    update: dict[str, Any] = {}
    new: list[BaseMessage] = []
    steps: list[StepRecord] = []
    if not log:
        look = first_look(state["image"], context)
        if system := system_prompt(convention, prompts, text_calls=text_calls):
            new.append(SystemMessage(system))
        question = check_question(state["question"])
        text = question_prompt(convention, question, options, context.max_hops, prompts)
        new.append(HumanMessage(content=[look.image_block, text_content_block(text)]))
        made: list[ViewRecord] = [look.view.to_record()]
        views = list(made)
        update["image_sha256"] = look.image_sha256
    else:
        made, failures = tool_results(last_tool_results(log))
        views = [*state.get("views", []), *made]
        steps.extend(crop_failure_record(len(views) - 1, reason) for reason in failures)
    used = sum(isinstance(message, ToolMessage) for message in log)
    final = bool(log) and used >= context.max_hops
    if final:
        new.append(HumanMessage(final_prompt(convention, options, context.max_hops, prompts)))
    sent = to_agent_messages([*log, *new], convention, prompts, tool_images=context.tool_images)
    runnable = model if text_calls or final else model.bind_tools([convention.schema()])
    message, seconds = chat(runnable, sent)
    if text_calls:  # each call once, the reply verbatim
        message = text_reply(message, convention.tag)
    reply = model_reply(message, seconds)
    turn = sum(isinstance(item, AIMessage) for item in log) + 1
    calls, kept = read_calls(message, convention, turn)
    budget = 0 if final else context.max_hops - used
    family = resolve_family(context, model)
    checked = check_calls(calls, convention, views, family, context, reply.image_sizes, budget,
        final=final)  # fmt: skip
    answer = parse_answer(answer_text(reply.text, convention.tag), options)
    done = final or not calls
    previous = state.get("answer")
    first = next((item for item in checked.records if item["box"] is not None), None)
    step = record(
        "agent",
        len(views) - 1,
        reply,
        view=first["image"] if first else views[-1]["id"],
        answer=answer,
        box=first["box"] if first else None,
        box_frame=first["box_frame"] if first else None,
        confidence=None,
        crops=[view["id"] for view in made if view["hop"] > 0],
        tool_calls=checked.records,
        tool_prompt="ours" if text_calls else "chat_template",
        note=NO_ANSWER if done and answer is None and previous is not None else None,
        **view_cost(views[-1]["size"], processed_size=reply.processed_size,
            family=family, context=context),
    )  # fmt: skip
    update |= {
        "messages": [*new, kept, *([] if done else checked.refusals)],
        "views": made,
        "hop": len(views) - 1,
        "answer": answer if answer is not None else previous,
        "confidence": None,
        "steps": [*steps, step],
        "usage": reply.usage,
        "crop_calls": [] if done else checked.sends,
    }
    if state.get("initial_answer") is None and answer is not None:
        update["initial_answer"] = answer
    elif not log:
        update["initial_answer"] = None
    if done:
        update["stop_reason"] = "max_hops" if final else "answered"
    return update


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
    checkpointer: Checkpointer = None,
    name: str = "agent",
    retry_policy: RetryPolicy | None = MODEL_RETRY,
    **compile_options: Any,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled model-driven graph: invoke with `context=ZoomContext(tool_convention=...,
    max_hops=...)` and `config={"recursion_limit": context.recursion_limit}`; `compile_options`
    are LangGraph's (`interrupt_before=["crop"]`, `store`, `debug`, …)."""
    return build_agent_builder(retry_policy=retry_policy).compile(
        checkpointer=checkpointer, name=name, **compile_options
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
