"""Issue 21 items 2, 9, 10 and 13 on the model-driven graph (`graphs.agent`): hostile calls
become recorded tool errors, a call the server parsed out of the text runs once, records stay
strict JSON, and a model that ignores the tool convention is named once in an eval."""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any

import dataset_fixtures as fixtures
import pytest
from agent_fixtures import run_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from zoom_refine import ZoomContext, build_agent_graph
from zoom_refine.agent.strict_json import plain_json, shown, strict_json
from zoom_refine.agent.tool_calls import parse_text_tool_calls
from zoom_refine.evals.runner import EvalPlan, parse_methods, run_eval
from zoom_refine.evals.store import encode_line, replace_json
from zoom_refine.testing import (
    ReplyFake,
    ScriptedToolCallingModel,
    ScriptedVisionModel,
    texts_in,
)


@pytest.fixture
def scene(tmp_path: pathlib.Path) -> pathlib.Path:
    image = Image.new("RGB", (800, 500), (200, 200, 200))
    image.paste((255, 0, 0), (600, 300, 700, 400))
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def call_text(name: str, args_json: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args_json}}}\n</tool_call>'


def strict(value: Any) -> str:
    """`value` as strict JSON; raises ValueError on NaN / Infinity."""
    return json.dumps(value, allow_nan=False)


# --- item 2: each crash of the fuzzing run is a recorded tool error ------------------------------

HOSTILE = {
    "deep brackets": ("crop", "<tool_call>" + "[" * 100_000 + "</tool_call>", "nested too deeply"),
    "5000-digit integer": (
        "crop",
        call_text("crop", '{"image_id": "img0", "box": [' + "9" * 5000 + ", 0, 1, 1]}"),
        "not a JSON object",
    ),
    "400-digit integer in a box": (
        "qwen3_vl",
        call_text("image_zoom_in_tool", '{"bbox_2d": [0, 0, ' + "9" * 400 + ', 9], "img_idx": 0}'),
        "integer too large",
    ),
    "superscript img_idx": (
        "qwen3_vl",
        call_text("image_zoom_in_tool", '{"bbox_2d": [0, 0, 500, 500], "img_idx": "\u00b2"}'),
        "names no image",
    ),
    "superscript observation": (
        "mini_o3",
        '<grounding>{"bbox_2d": [0, 0, 1, 1], "source": "observation_\u00b9"}</grounding>',
        "source must be",
    ),
    "tuple key in a Python literal": (
        "crop",
        "<tool_call>{'name': 'crop', 'arguments': {(1, 2): 'x', 'box': [0, 0, 1, 1]}}</tool_call>",
        "key that is not text",
    ),
    "set in a Python literal": (
        "crop",
        "<tool_call>{'name': 'crop', 'arguments': {'box': {0, 1}}}</tool_call>",
        "JSON has no form for",
    ),
    "huge box in range of floats": (
        "deepeyes",
        call_text("image_zoom_in_tool", '{"bbox_2d": [0, 0, 1e300, 1e300]}'),
        "must lie within",
    ),
}
FINAL = {"crop": "Answer: B", "qwen3_vl": "Answer: B", "deepeyes": "<answer>B</answer>",
    "mini_o3": "<answer>B</answer>"}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.reliability(
    "agent graph",
    "hostile tool call (deep brackets, huge integers, unicode digits, tuple keys, sets)",
    "a tool error returned to the model and recorded; the run answers",
)
def test_hostile_call_is_a_recorded_tool_error(scene: pathlib.Path, case: str) -> None:
    convention, reply, reason = HOSTILE[case]
    model = ScriptedVisionModel(replies=[reply, FINAL[convention]])
    result = run_agent(scene, model, tool_convention=convention, max_hops=2)
    [call] = result["steps"][0]["tool_calls"]
    assert call["error"] is not None and reason in call["error"] and call["view"] is None
    assert len(call["error"]) < 400  # the message quotes the value, cut short
    assert len(result["views"]) == 1 and result["answer"] == "B"
    assert f"Error: {call['error']}" in texts_in(model.requests[1][-1])
    strict(result["steps"])


@pytest.mark.reliability(
    "agent graph",
    "server tool call whose arguments hold a huge integer or deep nesting (openai format)",
    "a tool error answered by the call's id; the run answers",
)
def test_server_call_with_unusable_arguments_is_an_error_answered_by_id(
    scene: pathlib.Path,
) -> None:
    deep: Any = 0
    for _ in range(200):
        deep = [deep]
    calls = [
        {"name": "crop", "args": {"image_id": "img0", "box": [10**5000, 0, 1, 1]}, "id": "a"},
        {"name": "crop", "args": {"image_id": "img0", "box": deep}, "id": "b"},
        {"name": "crop", "args": {"image_id": 10**5000, "box": [0, 0, 1, 1]}, "id": "c"},
    ]
    replies = [AIMessage(content="", tool_calls=calls), AIMessage(content="Answer: B")]
    model = ScriptedToolCallingModel(replies=replies)
    result = run_agent(scene, model, tool_call_format="openai", max_hops=3)
    records = result["steps"][0]["tool_calls"]
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert all(r["error"] and r["view"] is None for r in records)
    assert "integer too large" in records[0]["error"] and "deep" in records[1]["error"]
    sent = model.requests[1]
    answered = [m.tool_call_id for m in sent if isinstance(m, ToolMessage)]
    assert answered == ["a", "b", "c"] and result["answer"] == "B"
    strict(result["steps"])


@pytest.mark.reliability(
    "agent graph",
    "server tool call with an integer past 64 bits, run with a checkpointer (traces)",
    "a recorded tool error; the checkpoint (msgpack) is written",
)
def test_an_integer_past_64_bits_does_not_break_checkpoints(scene: pathlib.Path) -> None:
    calls = [{"name": "crop", "args": {"image_id": "img0", "box": [0, 0, 1, 1], "x": 2**70},
        "id": "a"}]  # fmt: skip
    model = ScriptedToolCallingModel(replies=[AIMessage("", tool_calls=calls), AIMessage("A")])
    context = ZoomContext(model=model, tool_call_format="openai", max_hops=2)
    graph = build_agent_graph(checkpointer=InMemorySaver())
    config: Any = {"recursion_limit": 20, "configurable": {"thread_id": "t"}}
    result = graph.invoke(
        {"image": str(scene), "question": "Which?"}, context=context, config=config
    )
    [call] = result["steps"][0]["tool_calls"]
    assert "integer too large" in str(call["error"]) and call["args"] is None
    assert graph.get_state(config).values["steps"][0]["tool_calls"][0]["id"] == "a"


def test_unicode_digits_are_not_image_numbers() -> None:
    from zoom_refine.agent.tool_conventions import tool_convention

    qwen = tool_convention("qwen3_vl")
    ids = ["img0", "img1"]
    box = [0, 0, 10, 10]
    read = qwen.read("image_zoom_in_tool", {"bbox_2d": box, "img_idx": "1"}, ids)
    assert not isinstance(read, str) and read.image_id == "img1"
    huge = qwen.read("image_zoom_in_tool", {"bbox_2d": [0, 0, 10**400, 1]}, ids)
    assert isinstance(huge, str) and "four finite numbers" in huge
    for bad in ("\u00b2", "\u0661", "1" * 5000, 10**5000, -1, 1e300, True):
        error = qwen.read("image_zoom_in_tool", {"bbox_2d": box, "img_idx": bad}, ids)
        assert isinstance(error, str) and "names no image" in error and len(error) < 400


def test_plain_json_refuses_what_json_cannot_hold_and_shown_never_raises() -> None:
    assert plain_json({"a": (1, [2.5, None])}) == ({"a": [1, [2.5, None]]}, None)
    assert "not text" in str(plain_json({(1, 2): 3})[1])
    assert "bytes" in str(plain_json({"a": b"x"})[1])
    deep: Any = 1
    for _ in range(40):
        deep = {"k": deep}
    assert "nested" in str(plain_json(deep)[1])
    assert "digits" in shown(10**5000) and len(shown("x" * 10_000)) == 200


# --- item 9: a call the server parsed out of the text runs once ---------------------------------

TEXT_CALL = call_text("crop", '{"image_id": "img0", "box": [0.75, 0.6, 0.875, 0.8]}')


@pytest.mark.reliability(
    "agent graph",
    "text tool-call format: the server returns <tool_call> text and parses it into tool_calls",
    "the call runs once (one crop, one unit of the budget); the reply recorded verbatim",
)
def test_a_call_both_in_the_text_and_parsed_by_the_server_runs_once(scene: pathlib.Path) -> None:
    parsed = {"name": "crop", "args": {"image_id": "img0", "box": [0.75, 0.6, 0.875, 0.8]},
        "id": "srv-1"}  # fmt: skip
    text = "Let me look closer.\n" + TEXT_CALL
    replies = [AIMessage(content=text, tool_calls=[parsed]), AIMessage(content="Answer: A")]
    model = ScriptedToolCallingModel(replies=replies)
    result = run_agent(scene, model, tool_call_format="text", max_hops=2)
    first = result["steps"][0]
    assert first["raw"] == text  # verbatim: nothing appended
    assert len(first["tool_calls"]) == 1 and len(result["views"]) == 2
    assert result["stop_reason"] == "answered"  # one unit of two spent: not the final turn
    sent = model.requests[1]
    assert sent[2].content == text and len(parse_text_tool_calls(texts_in(sent[2]))) == 1
    assert texts_in(sent[3]).count("<tool_response>") == 1


# --- item 10: non-finite numbers never reach a record --------------------------------------------

NON_FINITE = [
    call_text("crop", '{"image_id": "img0", "box": [NaN, 0, 1, 1]}'),
    call_text("crop", '{"image_id": "img0", "box": [0, 0, Infinity, 1], "x": -Infinity}'),
    call_text("crop", '{"image_id": "img0", "box": [0, 0, 1e999, 1]}'),
]


@pytest.mark.reliability(
    "agent graph",
    "NaN, Infinity or 1e999 in a tool call's box",
    "raw reply verbatim; step records and predictions.jsonl strict JSON (numbers as strings)",
)
def test_non_finite_numbers_are_stored_as_strings(scene: pathlib.Path) -> None:
    model = ScriptedVisionModel(replies=[*NON_FINITE, "Answer: A"])
    result = run_agent(scene, model, max_hops=3)
    strict(result["steps"])
    args = [step["tool_calls"][0]["args"] for step in result["steps"][:3]]
    assert args[0]["box"][0] == "NaN" and args[1]["box"][2] == "Infinity"
    assert args[1]["x"] == "-Infinity" and args[2]["box"][2] == "Infinity"
    assert [step["raw"] for step in result["steps"][:3]] == NON_FINITE  # verbatim


def test_prediction_lines_and_json_files_are_strict(tmp_path: pathlib.Path) -> None:
    record = {"id": "x", "method": "agent", "a": [math.nan, math.inf, -math.inf, 1.5, 10**5000]}
    line = encode_line(record).decode()
    assert "NaN" not in line.replace('"NaN"', "")
    loaded = json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert loaded["a"][:4] == ["NaN", "Infinity", "-Infinity", 1.5]
    assert strict_json({"k": (1, math.nan)}) == {"k": [1, "NaN"]}
    replace_json(tmp_path / "s.json", {"accuracy": math.nan})
    assert json.loads((tmp_path / "s.json").read_text()) == {"accuracy": "NaN"}


SILENT = "I am not sure what to make of this picture, to be honest."


def silent_model() -> ReplyFake:
    """Never calls a tool and never states an answer the parser reads."""
    return ReplyFake(reply=lambda messages: SILENT)


def nan_box_model() -> ReplyFake:
    """Calls the crop tool with a NaN box once, then answers A."""

    def reply(messages: list[BaseMessage]) -> str:
        first = not any(isinstance(m, AIMessage) for m in messages)
        return NON_FINITE[0] if first else "Answer: A"

    return ReplyFake(reply=reply)


def test_eval_predictions_of_non_finite_calls_are_strict_json(tmp_path: pathlib.Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    plan = EvalPlan(benchmark="hr-bench", data=data, out=tmp_path / "run",
        methods=parse_methods("agent"), limit=2)  # fmt: skip
    run_eval(plan, ZoomContext(model=nan_box_model(), max_hops=2))
    lines = (tmp_path / "run/predictions.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=lambda name: pytest.fail(name)) for line in lines]
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all(r["steps"][0]["tool_calls"][0]["args"]["box"][0] == "NaN" for r in ok)


# --- item 13: a model that ignores the tool convention is named once ------------------------------


@pytest.mark.reliability(
    "agent graph",
    "eval --method agent with a model that never calls a tool nor states an answer",
    "one warning after 3 samples naming --tool-convention / --tool-call-format; in summary",
)
def test_a_model_ignoring_the_tool_convention_is_warned_about_once(
    tmp_path: pathlib.Path,
) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    heard: list[str] = []
    plan = EvalPlan(benchmark="hr-bench", data=data, out=tmp_path / "run",
        methods=parse_methods("agent"))  # fmt: skip
    context = ZoomContext(model=silent_model(), tool_convention="qwen3_vl")
    summary = run_eval(plan, context, on_warning=heard.append)
    [warning] = heard
    assert "--tool-convention" in warning and "--tool-call-format" in warning
    assert "'qwen3_vl'" in warning and "first 3 agent samples" in warning
    assert summary["warnings"] == [warning]
    on_disk = json.loads((tmp_path / "run/summary.json").read_text())
    assert on_disk["warnings"] == [warning]


def test_no_warning_for_a_model_that_answers_or_zooms(tmp_path: pathlib.Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    heard: list[str] = []
    plan = EvalPlan(benchmark="hr-bench", data=data, out=tmp_path / "run",
        methods=parse_methods("agent"))  # fmt: skip
    summary = run_eval(
        plan, ZoomContext(model=nan_box_model(), max_hops=1), on_warning=heard.append
    )
    assert heard == [] and "warnings" not in summary


@pytest.mark.reliability(
    "agent graph",
    "a reply of 400 kB of <think> or <answer> opening tags and no closing one",
    "read in linear time (the lazy regex took minutes)",
)
def test_many_unclosed_think_or_answer_tags_are_read_in_linear_time() -> None:
    from zoom_refine.agent.tool_calls import answer_text

    started = time.perf_counter()
    assert answer_text("<think>" * 57_000 + "Answer: A").endswith("Answer: A")
    assert answer_text("<answer>" * 50_000).startswith("<answer>")
    assert time.perf_counter() - started < 20  # a hang bound: the quadratic regex took minutes
    assert answer_text("x<THINK>a<think>b</think>c</think>y") == "xc</think>y"
    assert answer_text("<answer>1<answer>2</answer>") == "1<answer>2"
