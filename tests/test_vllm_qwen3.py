"""Qwen3-VL in every backend: the protocol-trained tiny Qwen3-VL (`trained_protocol_model
("qwen3_vl")`, boxes in 0–1000 of the image shown) and the tool-calling one (`trained_tool_model
("qwen3_vl")`, Qwen-Agent's `image_zoom_in_tool`) run in process (`hf:`), through `transformers
serve` and through a real vLLM (CPU build, its own venv) with the same traces.

Every view is made at the size the processor resizes it to (sides multiples of 32 within the
checkpoint's pixel budget, which the graph is told for a server: `model_family="qwen3_vl"`,
`qwen_min_pixels` / `qwen_max_pixels`), so no backend resizes it again: vLLM counts the same
prompt tokens as the local processor. One vLLM server per checkpoint for the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import RunningServer, start_server, start_vllm
from typer.testing import CliRunner

from zoom_refine import build_agent_graph, build_graph
from zoom_refine.agent.families import qwen_resized_size
from zoom_refine.cli import app
from zoom_refine.testing import tiny_models as tm
from zoom_refine.testing.tool_models import (
    QWEN3_TOOL_BOX,
    TOOL_ANSWER,
    TOOL_RECIPES,
    tool_context,
    tool_inputs,
    trained_tool_model,
)

pytestmark = pytest.mark.slow

BUDGET = {
    "qwen_min_pixels": tm.QWEN3_PROTOCOL_MIN_PIXELS,
    "qwen_max_pixels": tm.QWEN3_PROTOCOL_MAX_PIXELS,
}
STEP_KEYS = ("node", "hop", "raw", "answer", "view", "box", "box_frame", "confidence")
COST_KEYS = ("view_size", "visual_tokens")


@pytest.fixture(scope="module")
def protocol_path() -> Path:
    return tm.trained_protocol_model("qwen3_vl")


@pytest.fixture(scope="module")
def tool_path() -> Path:
    return trained_tool_model("qwen3_vl")


@pytest.fixture(scope="module")
def vllm_protocol(vllm_python: Path, protocol_path: Path) -> Iterator[RunningServer]:
    with start_vllm(protocol_path, python=vllm_python) as server:
        yield server


@pytest.fixture(scope="module")
def vllm_tool(vllm_python: Path, tool_path: Path) -> Iterator[RunningServer]:
    """The tool model with calls as text: no tools in the request, so vLLM renders the plain
    template and leaves the reply's `<tool_call>` as text (no tool-call parser needed)."""
    with start_vllm(tool_path, python=vllm_python) as server:
        yield server


def scene(folder: Path, size: tuple[int, int], variant: str) -> Path:
    path = folder / f"{variant}.png"
    tm.protocol_image(size, variant).save(path)
    return path


def protocol_run(model: str, image: Path, **settings: Any) -> dict[str, Any]:
    """The protocol, zooming again once, in the family's settings (its box format, family and
    pixel budget: `protocol_context`)."""
    context = tm.protocol_context("qwen3_vl", model, zoom_again=True, **settings)
    result: dict[str, Any] = build_graph().invoke(
        tm.protocol_inputs(image), context=context, config={"recursion_limit": 12}
    )
    return result


def trace_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What the model did and saw at each step (no timings, no token counts)."""
    return [{key: step.get(key) for key in (*STEP_KEYS, *COST_KEYS)} for step in result["steps"]]


def assert_views_at_the_processors_size(result: dict[str, Any]) -> None:
    """Each step records the size the processor made of the view it was shown (a multiple of 32
    within the budget, which that resize keeps) and its visual tokens: the view's own size, so
    the processor never resized a view again."""
    low, high = tm.QWEN3_PROTOCOL_MIN_PIXELS, tm.QWEN3_PROTOCOL_MAX_PIXELS
    shown = {view["id"]: tuple(view["size"]) for view in result["views"]}
    for step in result["steps"]:
        processed = (step["view_size"][0], step["view_size"][1])
        assert qwen_resized_size(processed, min_pixels=low, max_pixels=high, factor=32) == processed
        assert step["visual_tokens"] == (processed[0] // 32) * (processed[1] // 32)
        assert processed == shown[step["view"]], step


def test_the_protocol_trace_is_the_same_in_process_through_transformers_serve_and_vllm(
    protocol_path: Path, vllm_protocol: RunningServer, tmp_path: Path
) -> None:
    image = scene(tmp_path, (2400, 1350), "three-backends")
    local = protocol_run(f"hf:{protocol_path}", image)
    with start_server(protocol_path) as served:
        serve = protocol_run(f"openai:{served.model_name}", image, base_url=served.base_url)
    remote = protocol_run(
        f"openai:{vllm_protocol.model_name}", image, base_url=vllm_protocol.base_url
    )

    assert [step["raw"] for step in local["steps"]] == list(tm.PROTOCOL_REPLIES["qwen3_vl"])
    assert trace_of(local) == trace_of(serve) == trace_of(remote)
    assert local["views"] == serve["views"] == remote["views"]
    assert (local["initial_answer"], local["answer"]) == ("B", "A")
    first = local["steps"][0]
    assert (first["box"], first["box_frame"]) == ([600, 600, 700, 700], "norm1000")
    # 600-700 of 2400 x 1350 = [1440, 810, 1680, 945], padded by 0.1 of each side (240 / 135
    # px), grown to 448 px high about its centre.
    assert local["views"][1]["box"] == [1200, 653, 1920, 1102]
    # The second crop's 504 x 449 region is made 512 x 448 (the processor's rounding to 32).
    assert [view["size"] for view in local["views"]] == [[672, 384], [640, 384], [512, 448]]
    assert_views_at_the_processors_size(local)
    # The same prompt, image tokens included, in process and in vLLM at every step.
    tokens = [[step["usage"]["input_tokens"] for step in r["steps"]] for r in (local, remote)]
    assert tokens[0] == tokens[1] and len(set(tokens[0])) == 4


def test_the_tool_model_zooms_with_qwen_agents_tool_in_process_and_through_vllm(
    tool_path: Path, vllm_tool: RunningServer, tmp_path: Path
) -> None:
    image = scene(tmp_path, (1800, 1200), "tool-two-backends")
    results = []
    for model, settings in (
        (f"hf:{tool_path}", {}),
        (f"openai:{vllm_tool.model_name}", {"base_url": vllm_tool.base_url}),
    ):
        context = tool_context(model, "qwen3_vl", **settings)
        results.append(
            build_agent_graph().invoke(
                tool_inputs(image), context=context, config={"recursion_limit": 12}
            )
        )
    local, remote = results
    assert [step["raw"] for step in local["steps"]] == list(TOOL_RECIPES["qwen3_vl"].replies)
    [call] = local["steps"][0]["tool_calls"]
    assert call["name"] == "image_zoom_in_tool" and call["error"] is None
    assert call["box"] == list(QWEN3_TOOL_BOX) and call["box_frame"] == "norm1000"
    assert local["answer"] == TOOL_ANSWER and local["stop_reason"] == "answered"
    # Qwen-Agent's crop: 600-700 of 1800 x 1200, no padding, made at the processor's size.
    assert local["views"][1] == {
        "id": "img1",
        "box": [1080, 720, 1260, 840],
        "hop": 1,
        "size": [608, 416],
    }
    assert trace_of(local) == trace_of(remote) and local["views"] == remote["views"]
    assert_views_at_the_processors_size(local)
    tokens = [[step["usage"]["input_tokens"] for step in r["steps"]] for r in results]
    assert tokens[0] == tokens[1]


# --- zoom-refine eval on a synthetic dataset, in process and through vLLM ----------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three rows of `zoom-refine data synth` (a number, a shape, dots on a small sign)."""
    out = tmp_path_factory.mktemp("synth") / "synth.tsv"
    result = CliRunner().invoke(
        app, ["data", "synth", str(out), "--n", "3", "--side", "1600", "--seed", "25"]
    )
    assert result.exit_code == 0, result.output
    return out


def evaluate(data: Path, out: Path, model: list[str], *options: str) -> list[dict[str, Any]]:
    """`zoom-refine eval hr-bench` on `data` with `model` (a spec and its flags); the records."""
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), *model, *options]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: (r["method"], r["id"]))


def served(server: RunningServer) -> list[str]:
    """The `openai:` spec of a vLLM server and what the graph must know of its processor."""
    return [
        f"openai:{server.model_name}",
        "--base-url",
        server.base_url,
        "--model-family",
        "qwen3_vl",
        "--min-pixels",
        str(tm.QWEN3_PROTOCOL_MIN_PIXELS),
        "--max-pixels",
        str(tm.QWEN3_PROTOCOL_MAX_PIXELS),
    ]


def prediction(record: dict[str, Any]) -> dict[str, Any]:
    """A record's answer, steps, views and prompt lengths: what must not depend on the backend."""
    return {
        "id": record["id"],
        "method": record["method"],
        "answer": record["answer"],
        "steps": trace_of(record),
        "views": record["views"],
        "prompt_tokens": [step["usage"]["input_tokens"] for step in record["steps"]],
    }


def test_eval_runs_the_three_methods_in_process_and_through_vllm(
    synth: Path,
    protocol_path: Path,
    tool_path: Path,
    vllm_protocol: RunningServer,
    vllm_tool: RunningServer,
    tmp_path: Path,
) -> None:
    """The protocol model with baseline and zoom-refine, the tool model with the agent (Qwen-Agent's
    tool, calls as text): every record ok, the trained answers, and the same predictions in
    process and through vLLM."""
    agent = ["--tool-convention", "qwen3_vl", "--tool-call-format", "text", "--max-hops", "2"]
    runs = {}
    for backend, protocol_model, tool_model in (
        ("local", ["--model", f"hf:{protocol_path}"], ["--model", f"hf:{tool_path}"]),
        ("vllm", ["--model", *served(vllm_protocol)], ["--model", *served(vllm_tool)]),
    ):
        both = evaluate(
            synth, tmp_path / backend, protocol_model, "--method", "baseline,zoom-refine"
        )
        zoom = evaluate(
            synth, tmp_path / f"{backend}-agent", tool_model, "--method", "agent", *agent
        )
        runs[backend] = both + zoom

    for records in runs.values():
        assert len(records) == 9 and all(record["status"] == "ok" for record in records)
        answers = {(r["method"], r["answer"]) for r in records}
        assert answers == {("baseline", "B"), ("zoom-refine", "A"), ("agent", "A")}
        for record in records:
            assert_views_at_the_processors_size(record)
        zoomed = [r for r in records if r["method"] != "baseline"]
        assert all(len(r["views"]) == 2 for r in zoomed)
    assert [prediction(r) for r in runs["local"]] == [prediction(r) for r in runs["vllm"]]


# --- zoom-refine ask, in process and through vLLM -----------------------------------------------


def ask(image: Path, model: list[str], *options: str) -> dict[str, Any]:
    """`zoom-refine ask IMAGE QUESTION -o … --json` with `model` (a spec and its flags): the
    output state it prints."""
    question, choices = tm.COLOUR
    letters = [arg for choice in choices for arg in ("-o", choice)]
    args = ["ask", str(image), question, *letters, "--json", "--model", *model, *options]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def test_ask_runs_the_three_methods_in_process_and_through_vllm(
    protocol_path: Path,
    tool_path: Path,
    vllm_protocol: RunningServer,
    vllm_tool: RunningServer,
    tmp_path: Path,
) -> None:
    """`ask` with each method: the trained answers, every view at the processor's size, and the
    same steps, views and prompt lengths in process and through vLLM."""
    image = scene(tmp_path, (2400, 1350), "ask-two-backends")
    agent = ["--tool-convention", "qwen3_vl", "--tool-call-format", "text", "--max-hops", "2"]
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for backend, protocol_model, tool_model in (
        ("local", [f"hf:{protocol_path}"], [f"hf:{tool_path}"]),
        ("vllm", served(vllm_protocol), served(vllm_tool)),
    ):
        runs[backend] = {
            "baseline": ask(image, protocol_model, "--method", "baseline"),
            "zoom-refine": ask(image, protocol_model, "--method", "zoom-refine"),
            "agent": ask(image, tool_model, "--method", "agent", *agent),
        }
    for states in runs.values():
        assert {method: state["answer"] for method, state in states.items()} == {
            "baseline": "B",
            "zoom-refine": "A",
            "agent": "A",
        }
        for state in states.values():
            assert_views_at_the_processors_size(state)
        assert [len(state["views"]) for state in states.values()] == [1, 2, 2]
    for method in ("baseline", "zoom-refine", "agent"):
        local, remote = runs["local"][method], runs["vllm"][method]
        assert trace_of(local) == trace_of(remote) and local["views"] == remote["views"]
        tokens = [[step["usage"]["input_tokens"] for step in s["steps"]] for s in (local, remote)]
        assert tokens[0] == tokens[1], method
