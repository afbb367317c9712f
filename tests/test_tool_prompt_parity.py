"""One checkpoint, one prompt: tools reach the model through its own chat template in process as
they do through vLLM, and the reply's `<tool_call>` text is read as vLLM's `hermes` parser reads
it, without ever raising on what a model writes.

The slow tests run the agent graph in process on the tool-calling tiny model with a template
that has a tools section (`tool_templates.TOOLS_CHAT_TEMPLATE`), then send the very conversations
the graph sent (first turn with the tool bound; the turn after one call and its result with the
crop) to the local backend and to vLLM (`return_token_ids`), and compare the prompt token ids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from servers import VLLM_ZOOM_REFINE_ARGS, RunningServer
from tool_templates import TOOLS_CHAT_TEMPLATE, with_tools_template

from zoom_refine import ZoomContext, build_agent_graph
from zoom_refine.agent.local.chat_tools import template_renders_tools, with_parsed_calls
from zoom_refine.agent.local.model import LocalVisionChatModel, image_from_block
from zoom_refine.agent.strict_json import TOO_DEEP
from zoom_refine.agent.tool_calls import NOT_JSON, UNCLOSED
from zoom_refine.agent.tool_checks import Checked, check_calls, read_calls
from zoom_refine.agent.tool_conventions import to_agent_messages, tool_convention
from zoom_refine.graphs.calls import resolve_model
from zoom_refine.testing import ScriptedToolCallingModel, tiny_models
from zoom_refine.testing.tiny_qwen import QWEN_CHAT_TEMPLATE, qwen_resized_size
from zoom_refine.testing.tool_models import (
    TOOL_CALL_REPLY,
    tool_context,
    tool_inputs,
    trained_tool_model,
)
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.views import View

HERMES_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
"""vLLM parses `<tool_call>` replies into `tool_calls` (what `tool_call_format='openai'` needs)."""
CALL = TOOL_CALL_REPLY
IMAGE_SIZE = (1400, 900)


# --- the template's tools section, and reading calls from a reply (no model) -------------------


def test_a_tools_section_is_found_in_the_template_source() -> None:
    assert template_renders_tools(TOOLS_CHAT_TEMPLATE)
    assert not template_renders_tools(QWEN_CHAT_TEMPLATE)
    # the word in a literal is not a tools section; a tag plain Jinja cannot parse falls back
    assert not template_renders_tools("{{ 'tools are not offered' }}{{ messages[0]['content'] }}")
    assert template_renders_tools("{% generation %}{{ tools }}{% endgeneration %}")
    assert template_renders_tools({"default": QWEN_CHAT_TEMPLATE, "tool_use": TOOLS_CHAT_TEMPLATE})
    assert not template_renders_tools(None)


def test_forcing_a_call_is_refused_at_bind_time() -> None:
    model = LocalVisionChatModel(model_path="/never/loaded")  # binding loads nothing
    schema = tool_convention("crop").schema()
    for forced in ("any", "required", {"type": "function", "function": {"name": "crop"}}):
        with pytest.raises(ValueError, match="cannot force a tool call"):
            model.bind_tools([schema], tool_choice=forced)  # type: ignore[arg-type]
    bound: Any = model.bind_tools([schema], tool_choice="none")
    assert bound.kwargs == {"tools": [schema], "tool_choice": "none"}
    assert model.loaded() is None


def test_a_reply_keeps_the_text_before_its_calls_as_vllm_does() -> None:
    reply = with_parsed_calls(AIMessage(content=f"Let me look.\n{CALL}\nafter"), turn=2)
    assert reply.content == "Let me look.\n"
    [call] = reply.tool_calls
    assert call["name"] == "crop" and call["id"] == "call-2-1"
    assert call["args"] == {"image_id": "img0", "box": [0.6, 0.6, 0.7, 0.7]}
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    plain = AIMessage(content="Answer: A", response_metadata={"finish_reason": "stop"})
    assert with_parsed_calls(plain, turn=1) is plain


def hostile(body: str) -> str:
    return f"<tool_call>{body}</tool_call>"


DEEP = '{"name": "crop", "arguments": {"box": ' + "[" * 50_000 + "]" * 50_000 + "}}"
NAN_BOX = '{"name": "crop", "arguments": {"image_id": "img0", "box": [NaN, 0, 1, 1]}}'
HOSTILE_REPLIES = {
    "broken JSON": (hostile('{"name": "crop", "arguments": {"box": [0.1, 0.2'), NOT_JSON[:20]),
    "never closed": (
        '<tool_call>{"name": "crop", "arguments": {}}',
        UNCLOSED.format(tag="tool_call"),
    ),
    "nested 50,000 deep": (hostile(DEEP), "not a JSON object"),
    "arguments a list": (hostile('{"name": "crop", "arguments": [1, 2]}'), "must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_REPLIES))
def test_an_unreadable_call_becomes_an_invalid_call_and_a_refusal(case: str) -> None:
    text, reason = HOSTILE_REPLIES[case]
    reply = with_parsed_calls(AIMessage(content=text), turn=1)
    assert reply.tool_calls == [] and len(reply.invalid_tool_calls) == 1
    [bad] = reply.invalid_tool_calls
    assert bad["id"] == "call-1-1" and reason in str(bad["error"])
    checked = refusals_for(reply, budget=2)
    assert checked.sends == [] and [r.status for r in checked.refusals] == ["error"]


def test_nan_and_too_deep_arguments_are_refused_by_the_convention() -> None:
    deep = '{"name": "crop", "arguments": {"image_id": "img0", "box": ' + "[" * 40 + "]" * 40 + "}}"
    reply = with_parsed_calls(AIMessage(content=hostile(NAN_BOX) + hostile(deep)), turn=1)
    # NaN is JSON to Python's reader: a call, whose box the convention refuses; 40 levels are not
    assert [math.isnan(call["args"]["box"][0]) for call in reply.tool_calls] == [True]
    assert TOO_DEEP in str(reply.invalid_tool_calls[0]["error"])
    checked = refusals_for(reply, budget=2)
    assert checked.sends == [] and len(checked.refusals) == 2
    assert "box" in str(checked.records[0]["error"])


def test_a_hundred_calls_run_within_the_budget_and_the_rest_are_refused() -> None:
    reply = with_parsed_calls(AIMessage(content="\n".join([CALL] * 100)), turn=1)
    assert len(reply.tool_calls) == 100 and len({c["id"] for c in reply.tool_calls}) == 100
    checked = refusals_for(reply, budget=2)
    assert len(checked.sends) == 2 and len(checked.refusals) == 98
    assert all("too many" in str(r.content) for r in checked.refusals)


def refusals_for(reply: AIMessage, *, budget: int) -> Checked:
    """The agent graph's own reading and checking of a reply (as the local backend returns it)
    made on the whole image `img0`."""
    convention = tool_convention("crop")
    calls, _ = read_calls(reply, convention, turn=1)
    view = View(id="img0", box=Box.full(IMAGE_SIZE), hop=0, shown_size=IMAGE_SIZE).to_record()
    context = ZoomContext(model="none", max_hops=budget)
    return check_calls(calls, convention, [view], "other", context, None, budget, final=False)


def test_hostile_replies_run_through_the_agent_graph_without_raising(tmp_path: Path) -> None:
    """The replies the local backend makes of hostile text, through the whole graph."""
    texts = (HOSTILE_REPLIES["broken JSON"][0] + hostile(NAN_BOX), "\n".join([CALL] * 100))
    replies = [
        with_parsed_calls(AIMessage(content=text), turn=turn)
        for turn, text in enumerate(texts, start=1)
    ]
    replies.append(AIMessage(content="Answer: A"))
    model = ScriptedToolCallingModel(replies=replies)
    context = ZoomContext(model=model, tool_call_format="openai", max_hops=3)
    image = tmp_path / "scene.png"
    tiny_models.protocol_image(IMAGE_SIZE, "hostile").save(image)
    result = build_agent_graph().invoke(
        tool_inputs(image), context=context, config={"recursion_limit": context.recursion_limit}
    )
    records = [call for step in result["steps"] for call in step.get("tool_calls", [])]
    # the two refusals of the first turn count against the budget of 3: one of 100 calls runs
    assert len(records) == 102 and sum(call["error"] is None for call in records) == 1
    assert records[0]["args"]["box"][0] == "NaN"  # kept as strict JSON writes it
    assert {step["tool_prompt"] for step in result["steps"] if step["node"] == "agent"} == {
        "chat_template"
    }
    assert result["answer"] == "A" and result["stop_reason"] == "max_hops"
    json.dumps(result, allow_nan=False)


# --- the same prompt tokens in process and through vLLM (slow) ---------------------------------


@pytest.fixture(scope="module")
def template_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tool model with a chat template that has a tools section."""
    folder = tmp_path_factory.mktemp("tools-template")
    return with_tools_template(trained_tool_model(), folder / "model")


@pytest.fixture(scope="module")
def vllm_server(template_model: Path, vllm_python: Path) -> Iterator[RunningServer]:
    from servers import start_vllm

    args = (*VLLM_ZOOM_REFINE_ARGS, *HERMES_ARGS)
    with start_vllm(template_model, python=vllm_python, extra_args=args) as server:
        yield server


def graph_requests(
    model_path: Path, image: Path, tool_images: str
) -> tuple[list[list[BaseMessage]], dict[str, Any]]:
    """The conversations the agent graph sent the local model in a real run (rebuilt from its
    checkpointed log as the agent node builds them), and the run's result."""
    context = tool_context(f"hf:{model_path}", tool_call_format="auto", tool_images=tool_images)
    graph = build_agent_graph(checkpointer=InMemorySaver())
    config: dict[str, Any] = {
        "recursion_limit": context.recursion_limit,
        "configurable": {"thread_id": tool_images},
    }
    result = graph.invoke(tool_inputs(image), context=context, config=config)
    log: list[BaseMessage] = graph.get_state(config).values["messages"]
    convention = tool_convention(context.tool_convention)
    turns = [k for k, message in enumerate(log) if isinstance(message, AIMessage)]
    sent = [
        to_agent_messages(log[:k], convention, context.prompt_set, tool_images=context.tool_images)
        for k in turns
    ]
    return sent, result


def local_prompt_ids(
    model_path: Path, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None
) -> list[int]:
    model = LocalVisionChatModel(model_path=str(model_path))
    return [int(token) for token in model.prompt_inputs(messages, tools)["input_ids"][0].tolist()]


def vllm_prompt_ids(
    server: RunningServer, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None
) -> list[int]:
    """The prompt vLLM built for the request the graph's own chat model would send."""
    context = ZoomContext(model=f"openai:{server.model_name}", base_url=server.base_url)
    chat: Any = resolve_model(context)
    bound: dict[str, Any] = chat.bind_tools(tools).kwargs if tools else {}
    payload = chat._get_request_payload(list(messages), **bound)  # exactly what it would POST
    payload["max_completion_tokens"] = 1
    response = chat.root_client.chat.completions.create(
        **payload, extra_body={"return_token_ids": True}
    )
    return [int(token) for token in response.model_extra["prompt_token_ids"]]


def image_sizes(messages: Sequence[BaseMessage]) -> list[tuple[int, int]]:
    return [
        image_from_block(block).size
        for message in messages
        if isinstance(message.content, list)
        for block in message.content
        if isinstance(block, dict) and block.get("type") in ("image", "image_url")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("tool_images", ["tool", "user"])
def test_one_conversation_gets_the_same_prompt_tokens_in_process_and_through_vllm(
    template_model: Path, vllm_server: RunningServer, tool_images: str, tmp_path: Path
) -> None:
    image = tmp_path / "scene.png"
    tiny_models.protocol_image(IMAGE_SIZE, "parity").save(image)
    sent, result = graph_requests(template_model, image, tool_images)
    first, second = sent[0], sent[1]
    assert isinstance(first[-1], HumanMessage) and len(second) > len(first)
    assert any(isinstance(message, ToolMessage) for message in second)  # a real tool turn
    assert result["steps"][0]["tool_prompt"] == "chat_template"
    # every image is already at the processor's own size: neither side resizes it
    sizes = image_sizes(second)
    assert len(sizes) == 2 and all(qwen_resized_size(*size) == size for size in sizes)
    tools = [convert_to_openai_tool(tool_convention("crop").schema())]
    for messages, bound in ((first, tools), (second, tools), (second, None)):
        local = local_prompt_ids(template_model, messages, bound)
        served = vllm_prompt_ids(vllm_server, messages, bound)
        assert local == served, first_difference(local, served)
    # the images' placeholders are expanded on both sides: one token per 28x28 block
    pad = LocalVisionChatModel(model_path=str(template_model)).load().image_token_id
    assert served.count(pad) == sum(w * h // (28 * 28) for w, h in sizes)
    with_tools = local_prompt_ids(template_model, first, tools)
    assert len(with_tools) > len(local_prompt_ids(template_model, first, None))  # tools rendered


def first_difference(local: list[int], served: list[int]) -> str:
    index = next(
        (k for k, pair in enumerate(zip(local, served, strict=False)) if pair[0] != pair[1]),
        min(len(local), len(served)),
    )
    return f"{len(local)} vs {len(served)} tokens, first difference at {index}"
