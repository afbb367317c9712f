"""The model-driven graph with a tiny model that really calls the zoom tool (`testing.tool_models`):
through the local `hf:` backend and through real OpenAI-compatible servers (`transformers serve`;
vLLM, started with its `hermes` tool-call parser).

Two prompts: the tool model's own template has no tools section, so `tool_call_format='auto'`
writes our tool text into the system turn in process (`tool_prompt: ours`); a copy with a tools
section (`tool_templates.TOOLS_CHAT_TEMPLATE`) gets the tool from its template, in process as
through vLLM, and gives the same trace through both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import VLLM_ZOOM_REFINE_ARGS, RunningServer, serve_model, served_model_name
from tool_templates import with_tools_template

from zoom_refine import build_agent_graph
from zoom_refine.testing import tiny_models
from zoom_refine.testing.tiny_qwen import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS
from zoom_refine.testing.tool_models import (
    TOOL_ANSWER,
    TOOL_BOX,
    TOOL_REPLIES,
    tool_context,
    tool_inputs,
    trained_tool_model,
)

pytestmark = pytest.mark.slow


HERMES_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
TRACE_KEYS = ("node", "hop", "raw", "answer", "view", "box", "box_frame", "crops", "tool_prompt")
CALL_KEYS = ("name", "args", "image", "box", "box_frame", "view", "error")


@pytest.fixture(scope="module")
def tool_model_path() -> Path:
    return trained_tool_model()


@pytest.fixture(scope="module")
def template_model_path(tool_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tool model with a chat template that has a tools section."""
    return with_tools_template(tool_model_path, tmp_path_factory.mktemp("tools") / "model")


@pytest.fixture(scope="module")
def vllm_tools(template_model_path: Path, vllm_python: Path) -> Iterator[RunningServer]:
    """vLLM with the tools-template model and the `hermes` parser, started once for this module:
    a request without tools (text calls) renders as the plain template and is never parsed."""
    from servers import start_vllm

    args = (*VLLM_ZOOM_REFINE_ARGS, *HERMES_ARGS)
    with start_vllm(template_model_path, python=vllm_python, extra_args=args) as server:
        yield server


def scene(folder: Path, size: tuple[int, int], variant: str) -> Path:
    path = folder / f"{variant}.png"
    tiny_models.protocol_image(size, variant).save(path)
    return path


def run(model: str, image: Path, **settings: Any) -> dict[str, Any]:
    context = tool_context(model, **settings)
    config = {"recursion_limit": context.recursion_limit}
    result: dict[str, Any] = build_agent_graph().invoke(
        tool_inputs(image), context=context, config=config
    )
    return result


def check_tool_run(result: dict[str, Any], size: tuple[int, int]) -> None:
    """One call with the trained box on img0, the crop cut around 0.6–0.7 of each side, then
    the trained answer after seeing it."""
    assert [step["raw"] for step in result["steps"]] == list(TOOL_REPLIES)
    [call] = result["steps"][0]["tool_calls"]
    assert call["error"] is None and call["box"] == list(TOOL_BOX) and call["view"] == "img1"
    assert result["steps"][1]["crops"] == ["img1"]
    width, height = size
    x1, y1, x2, y2 = result["views"][1]["box"]
    assert x1 <= 0.6 * width and y1 <= 0.6 * height and x2 >= 0.7 * width and y2 >= 0.7 * height
    assert result["answer"] == TOOL_ANSWER and result["initial_answer"] == TOOL_ANSWER
    assert result["stop_reason"] == "answered" and result["usage"]["model_calls"] == 2


def test_local_backend_calls_the_tool_and_answers(tool_model_path: Path, tmp_path: Path) -> None:
    size = (1400, 900)  # not a training size
    result = run(f"hf:{tool_model_path}", scene(tmp_path, size, "local"))
    check_tool_run(result, size)
    # the crop went back as an image: the second call encoded two images' tiles
    assert result["steps"][1]["usage"]["input_tokens"] > result["steps"][0]["usage"]["input_tokens"]


def test_transformers_serve_tool_loop(tool_model_path: Path, tmp_path: Path) -> None:
    size = (1600, 1000)
    image = scene(tmp_path, size, "served")
    with serve_model(tool_model_path) as base_url:
        result = run(f"openai:{served_model_name(tool_model_path)}", image, base_url=base_url)
    check_tool_run(result, size)
    trace = tmp_path / "trace.json"  # what the closing note shows
    trace.write_text(json.dumps(result["steps"], indent=2))


def test_vllm_tool_loop(
    vllm_tools: RunningServer, template_model_path: Path, tmp_path: Path
) -> None:
    """Calls as text (`tool_call_format='text'`, the tool model's own context): no tools in the
    request, so vLLM renders the plain template and leaves the reply's `<tool_call>` as text; the
    result goes back as a `<tool_response>` user turn with the crop image."""
    size = (1600, 1000)
    image = scene(tmp_path, size, "vllm")
    result = run(f"openai:{vllm_tools.model_name}", image, base_url=vllm_tools.base_url)
    check_tool_run(result, size)
    assert {step["tool_prompt"] for step in result["steps"]} == {"ours"}


def test_a_template_without_tools_gets_our_tool_text_in_process(
    tool_model_path: Path, tmp_path: Path
) -> None:
    """`auto` on a template with no tools section: our text in the system turn, calls read from
    the reply's text, and each step says so."""
    size = (1500, 950)
    result = run(f"hf:{tool_model_path}", scene(tmp_path, size, "ours"), tool_call_format="auto")
    check_tool_run(result, size)
    assert {step["tool_prompt"] for step in result["steps"]} == {"ours"}


def template_run(model: str, image: Path, **settings: Any) -> dict[str, Any]:
    """A run in the template path: `auto` calls, crops inside the tool message (where the tool
    model met them in training: the end of a `<tool_response>` turn)."""
    return run(model, image, tool_call_format="auto", tool_images="tool", **settings)


def trace_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps as the model's behaviour shows them: without call ids (vLLM's are random),
    timings and token counts."""
    return [
        {key: step.get(key) for key in TRACE_KEYS}
        | {"calls": [{key: call[key] for key in CALL_KEYS} for call in step["tool_calls"]]}
        for step in result["steps"]
    ]


def test_a_template_with_tools_gives_the_same_trace_in_process_and_through_vllm(
    template_model_path: Path, vllm_tools: RunningServer, tmp_path: Path
) -> None:
    size = (1600, 1000)
    image = scene(tmp_path, size, "template")
    local = template_run(f"hf:{template_model_path}", image)
    served = template_run(
        f"openai:{vllm_tools.model_name}",
        image,
        base_url=vllm_tools.base_url,
        # the server's processor, as we know it: views made at its size, as in process
        model_family="qwen2_5_vl",
        qwen_min_pixels=QWEN_MIN_PIXELS,
        qwen_max_pixels=QWEN_MAX_PIXELS,
    )
    assert trace_of(local) == trace_of(served)
    assert local["views"] == served["views"]
    # the call came back parsed on both sides (vLLM's parser, ours in process): no text is left
    assert [step["raw"] for step in local["steps"]] == ["", TOOL_REPLIES[1]]
    [call] = local["steps"][0]["tool_calls"]
    assert call["box"] == list(TOOL_BOX) and call["error"] is None and call["id"] == "call-1-1"
    assert {step["tool_prompt"] for step in local["steps"]} == {"chat_template"}
    for result in (local, served):
        assert result["answer"] == TOOL_ANSWER and result["stop_reason"] == "answered"
    # the same prompt lengths, as the servers count them and as we do
    assert local["steps"][0]["usage"]["input_tokens"] == served["steps"][0]["usage"]["input_tokens"]
    assert local["steps"][1]["usage"]["input_tokens"] == served["steps"][1]["usage"]["input_tokens"]
