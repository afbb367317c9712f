"""The model-driven graph with a tiny model that really calls the zoom tool (`testing.tool_models`):
through the local `hf:` backend and through a real OpenAI-compatible server (`transformers
serve`, which has no tool-call parser: the call arrives as `<tool_call>` text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from servers import serve_model, served_model_name

from zoom_refine import build_agent_graph
from zoom_refine.testing import tiny_models
from zoom_refine.testing.tool_models import (
    TOOL_ANSWER,
    TOOL_BOX,
    TOOL_REPLIES,
    tool_context,
    tool_inputs,
    trained_tool_model,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tool_model_path() -> Path:
    return trained_tool_model()


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


def test_vllm_tool_loop(tool_model_path: Path, vllm_python: Path, tmp_path: Path) -> None:
    """vLLM's CPU build, no tool-call parser: the call arrives as text, the result goes back as
    a `<tool_response>` user turn with the crop image."""
    from servers import start_vllm

    size = (1600, 1000)
    image = scene(tmp_path, size, "vllm")
    with start_vllm(tool_model_path, python=vllm_python) as server:
        result = run(f"openai:{server.model_name}", image, base_url=server.base_url)
    check_tool_run(result, size)
