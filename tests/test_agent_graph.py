"""The model-driven graph (`graphs.agent`) with scripted models: every tool convention reads its
own box frame and cuts the same region, results come back as images in the model's format, and
every malformed call is recorded and answered with an error instead of crashing the run."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import dataset_fixtures as fixtures
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import InvalidInputError, ZoomContext, build_agent_graph
from zoom_refine.agent.tool_images import MOVED_NOTE
from zoom_refine.cli import app
from zoom_refine.evals.runner import EvalPlan, parse_methods, run_eval
from zoom_refine.evals.tables import format_table
from zoom_refine.graphs.traces import read_trace, run_graph
from zoom_refine.testing import (
    ReplyFake,
    RuleVisionModel,
    ScriptedToolCallingModel,
    ScriptedVisionModel,
    images_in,
    texts_in,
)

RED_BOX = (1200, 600, 1400, 800)
"""The red square, in original pixels of the 1600×1000 scene (0.75–0.875 × 0.6–0.8)."""
OPTIONS = ["red", "blue"]


@pytest.fixture
def scene(tmp_path: pathlib.Path) -> pathlib.Path:
    image = Image.new("RGB", (1600, 1000), (200, 200, 200))
    image.paste((255, 0, 0), RED_BOX)
    image.paste((0, 0, 255), (1280, 680, 1320, 720))  # a blue dot in the red square's centre
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def run(scene: pathlib.Path, model: BaseChatModel, **settings: Any) -> dict[str, Any]:
    context = ZoomContext(model=model, **settings)
    inputs = {"image": str(scene), "question": "What colour is the square?", "options": OPTIONS}
    config = {"recursion_limit": context.recursion_limit}
    result: dict[str, Any] = build_agent_graph().invoke(inputs, context=context, config=config)
    return result


def call_text(name: str, args: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def contains(outer: list[int], inner: tuple[int, int, int, int]) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and outer[2] >= inner[2]
        and (outer[3] >= inner[3])
    )


def red_centre(image: Image.Image, view: dict[str, Any]) -> bool:
    """Whether the crop is red at the red square's upper-left quarter (not the blue dot);
    crops for servers are JPEG, so within a few levels."""
    x1, y1, x2, y2 = view["box"]
    width, height = view["size"]
    x = (1250 - x1) * width / (x2 - x1)
    y = (650 - y1) * height / (y2 - y1)
    pixel = image.getpixel((int(x), int(y)))
    assert isinstance(pixel, tuple)
    red, green, blue = (int(value) for value in pixel[:3])
    return red > 240 and green < 15 and blue < 15


FIRST_CALLS = {
    "crop": call_text("crop", {"image_id": "img0", "box": [0.75, 0.6, 0.875, 0.8]}),
    "qwen3_vl": call_text(
        "image_zoom_in_tool", {"bbox_2d": [750, 600, 875, 800], "label": "square", "img_idx": 0}
    ),
    "deepeyes": call_text("image_zoom_in_tool", {"bbox_2d": [1200, 600, 1400, 800]}),
    "mini_o3": '<think>small</think><grounding>{"bbox_2d": [0.75, 0.6, 0.875, 0.8], '
    '"source": "original_image"}</grounding>',
}
FRAMES = {"crop": "norm1", "qwen3_vl": "norm1000", "deepeyes": "pixel", "mini_o3": "norm1"}
FINAL = {"crop": "Answer: A", "qwen3_vl": "Answer: A", "deepeyes": "<answer>A</answer>",
    "mini_o3": "<think>red</think><answer>A</answer>"}  # fmt: skip


@pytest.mark.parametrize("convention", list(FIRST_CALLS))
def test_each_convention_crops_the_region_in_its_own_frame(
    scene: pathlib.Path, convention: str
) -> None:
    model = ScriptedVisionModel(replies=[FIRST_CALLS[convention], FINAL[convention]])
    result = run(scene, model, tool_convention=convention, max_hops=3)
    assert result["answer"] == "A" and result["initial_answer"] == "A"
    assert result["stop_reason"] == "answered"
    first, last = result["steps"]
    [call] = first["tool_calls"]
    assert call["error"] is None and call["view"] == "img1" and call["image"] == "img0"
    assert first["box_frame"] == FRAMES[convention] and first["answer"] is None
    assert last["crops"] == ["img1"] and last["tool_calls"] == []
    crop = result["views"][1]
    assert crop["id"] == "img1" and crop["hop"] == 1 and contains(crop["box"], RED_BOX)
    # The second request carries the crop, as an image, in the model's own format.
    sent = model.requests[1]
    [image] = images_in(sent[-1])
    assert red_centre(image, crop)
    text = texts_in(sent[-1])
    if convention == "mini_o3":
        assert "observation_1" in text and "<tool_response>" not in text
        assert isinstance(sent[0], SystemMessage) and "<grounding>" in texts_in(sent[0])
    else:
        assert text.startswith("<tool_response>") and text.endswith("</tool_response>")
        tools = texts_in(sent[0])  # the tool's signature in the system turn, text calls
        assert "<tools>" in tools and json.dumps(FRAME_WORD[convention])[1:-1] in tools
    assert result["usage"]["model_calls"] == 2


FRAME_WORD = {"crop": "norm1", "qwen3_vl": "0-1000", "deepeyes": "pixels of the original image"}


def test_qwen3_vl_zooms_into_an_earlier_crop_by_img_idx(scene: pathlib.Path) -> None:
    inner = call_text("image_zoom_in_tool", {"bbox_2d": [0, 0, 500, 500], "label": "corner",
        "img_idx": 1})  # fmt: skip
    replies = [FIRST_CALLS["qwen3_vl"], inner, "Answer: A"]
    model = ScriptedVisionModel(replies=replies)
    result = run(scene, model, tool_convention="qwen3_vl", max_hops=3)
    first, second = result["views"][1], result["views"][2]
    assert second["hop"] == 2 and result["steps"][1]["tool_calls"][0]["image"] == "img1"
    # 0–500 of img1 is its top-left quarter (padded and grown like every crop)
    requested = result["steps"][1]["tool_calls"][0]["box"]
    assert requested == [0, 0, 500, 500]
    centre_x = (second["box"][0] + second["box"][2]) / 2
    centre_y = (second["box"][1] + second["box"][3]) / 2
    assert first["box"][0] < centre_x < (first["box"][0] + first["box"][2]) / 2
    assert first["box"][1] < centre_y < (first["box"][1] + first["box"][3]) / 2
    assert [step["crops"] for step in result["steps"]] == [[], ["img1"], ["img2"]]


def test_mini_o3_observation_source_names_an_earlier_crop(scene: pathlib.Path) -> None:
    inner = '<grounding>{"bbox_2d": [0.5, 0.5, 1.0, 1.0], "source": "observation_1"}</grounding>'
    model = ScriptedVisionModel(replies=[FIRST_CALLS["mini_o3"], inner, "<answer>A</answer>"])
    result = run(scene, model, tool_convention="mini_o3", max_hops=2)
    assert [view["hop"] for view in result["views"]] == [0, 1, 2]
    assert "observation_2" in texts_in(model.requests[2][-1])


def test_openai_tool_calls_get_tool_messages_and_images_in_a_user_turn(
    scene: pathlib.Path,
) -> None:
    call = {"name": "crop", "args": {"image_id": "img0", "box": [750, 600, 875, 800],
        "box_format": "norm1000"}, "id": "call_abc"}  # fmt: skip
    replies = [AIMessage(content="", tool_calls=[call]), AIMessage(content="Answer: A")]
    model = ScriptedToolCallingModel(replies=replies)
    result = run(scene, model, max_hops=2)
    sent = model.requests[1]
    assert [type(m).__name__ for m in sent] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "HumanMessage",
    ]
    assert sent[1].tool_calls[0]["id"] == "call_abc" and sent[2].tool_call_id == "call_abc"
    assert images_in(sent[2]) == [] and MOVED_NOTE in texts_in(sent[2])
    [image] = images_in(sent[3])
    assert red_centre(image, result["views"][1])
    assert result["answer"] == "A" and result["steps"][0]["tool_calls"][0]["id"] == "call_abc"


def test_openai_tool_images_can_stay_in_the_tool_message(scene: pathlib.Path) -> None:
    call = {"name": "crop", "args": {"image_id": "img0", "box": [0.7, 0.5, 0.9, 0.9]}, "id": "c1"}
    model = ScriptedToolCallingModel(replies=[AIMessage("", tool_calls=[call]), AIMessage("A")])
    run(scene, model, tool_images="tool", max_hops=2)
    sent = model.requests[1]
    assert isinstance(sent[-1], ToolMessage) and len(images_in(sent[-1])) == 1


def test_text_calls_from_a_tool_binding_model_are_read_and_answered_as_text(
    scene: pathlib.Path,
) -> None:
    replies = [FIRST_CALLS["qwen3_vl"], "Answer: A"]  # a server binding tools, with no parser
    model = ReplyFake(reply=lambda messages: replies[len(model.requests) - 1])
    result = run(scene, model, tool_convention="qwen3_vl")
    assert model.bound and model.bound[0][0]["function"]["name"] == "image_zoom_in_tool"
    assert result["views"][1]["hop"] == 1
    last = model.requests[1][-1]
    assert isinstance(last, HumanMessage) and texts_in(last).startswith("<tool_response>")


# --- malformed calls: recorded, answered with an error, never a crash ---------------------------

MALFORMED = {
    "broken JSON": ('<tool_call>{"name": "crop", "arguments": {"box": [0.1, </tool_call>',
        "not a JSON object"),
    "no name": ('<tool_call>{"arguments": {"box": [0, 0, 1, 1]}}</tool_call>', 'no "name"'),
    "unknown tool": (call_text("rotate", {"angle": 90}), "unknown tool 'rotate'"),
    "three numbers": (call_text("crop", {"image_id": "img0", "box": [0.1, 0.2, 0.3]}),
        "four finite numbers"),
    "not numbers": (call_text("crop", {"image_id": "img0", "box": ["a", 0, 1, 1]}),
        "four finite numbers"),
    "box outside": (call_text("crop", {"image_id": "img0", "box": [1.5, 1.5, 2.0, 2.0]}),
        "outside the image"),
    "unknown image": (call_text("crop", {"image_id": "img4", "box": [0, 0, 1, 1]}),
        "names no image shown so far"),
    "bad box_format": (call_text("crop", {"image_id": "img0", "box": [0, 0, 1, 1],
        "box_format": "inches"}), "box_format must be one of"),
    "unclosed tag": ('<tool_call>{"name": "crop", "arguments": {}}', "never closed"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_call_is_recorded_and_sent_back_as_an_error(
    scene: pathlib.Path, case: str
) -> None:
    reply, reason = MALFORMED[case]
    model = ScriptedVisionModel(replies=[reply, "Answer: B"])
    result = run(scene, model, max_hops=2)
    [call] = result["steps"][0]["tool_calls"]
    assert call["error"] is not None and reason in call["error"] and call["view"] is None
    assert len(result["views"]) == 1  # nothing was cropped
    error_turn = texts_in(model.requests[1][-1])
    assert f"Error: {call['error']}" in error_turn and "<tool_response>" in error_turn
    assert result["answer"] == "B" and result["stop_reason"] == "answered"


def test_bad_qwen_img_idx_and_mini_o3_source_are_errors(scene: pathlib.Path) -> None:
    bad = call_text("image_zoom_in_tool", {"bbox_2d": [0, 0, 9, 9], "img_idx": 3, "label": "x"})
    model = ScriptedVisionModel(replies=[bad, "Answer: A"])
    result = run(scene, model, tool_convention="qwen3_vl")
    assert "img_idx 3 names no image" in result["steps"][0]["tool_calls"][0]["error"]
    source = '<grounding>{"bbox_2d": [0, 0, 1, 1], "source": "the left part"}</grounding>'
    model = ScriptedVisionModel(replies=[source, "<answer>A</answer>"])
    result = run(scene, model, tool_convention="mini_o3")
    assert "source must be" in result["steps"][0]["tool_calls"][0]["error"]
    assert "Error: source must be" in texts_in(model.requests[1][-1])


def test_calls_over_the_budget_are_refused_then_a_final_answer_is_asked(
    scene: pathlib.Path,
) -> None:
    two = FIRST_CALLS["crop"] + "\n" + call_text("crop", {"image_id": "img0", "box": [0, 0, 1, 1]})
    model = ScriptedVisionModel(replies=[two, "Answer: A"])
    result = run(scene, model, max_hops=1)
    first, second = result["steps"][0]["tool_calls"]
    assert first["error"] is None and first["view"] == "img1"
    assert second["error"] is not None and "too many zoom calls" in second["error"]
    assert len(result["views"]) == 2 and result["stop_reason"] == "max_hops"
    last = texts_in(model.requests[1][-1])  # the crop, the refusal, and the final request
    assert "too many zoom calls" in last and "used all 1 zooms" in last
    assert len(images_in(model.requests[1][-1])) == 1


def test_a_call_in_the_final_turn_is_recorded_not_run(scene: pathlib.Path) -> None:
    replies = ["Answer: B\n" + FIRST_CALLS["crop"], FIRST_CALLS["crop"]]
    model = ScriptedVisionModel(replies=replies)
    result = run(scene, model, max_hops=1)
    final = result["steps"][-1]
    assert final["tool_calls"][0]["error"] == "zoom budget spent: tool calls are no longer run"
    assert final["note"] == "no answer in the reply: keeping the last stated answer"
    assert result["answer"] == "B" and result["initial_answer"] == "B"
    assert len(result["views"]) == 2 and result["stop_reason"] == "max_hops"
    assert len(model.requests) == 2  # bounded: the final turn ends the run


def test_malformed_calls_use_the_budget_so_the_loop_ends(scene: pathlib.Path) -> None:
    broken = '<tool_call>{"name": </tool_call>'
    model = ScriptedVisionModel(replies=[broken, broken, broken, "Answer: A"])
    result = run(scene, model, max_hops=3)
    assert len(model.requests) == 4 and result["stop_reason"] == "max_hops"
    assert result["answer"] == "A" and result["initial_answer"] == "A"


def test_server_invalid_tool_calls_are_answered_by_id(scene: pathlib.Path) -> None:
    invalid = {"name": "crop", "args": '{"image_id": "img0", "box": [0.1,', "id": "bad-1",
        "error": "JSON", "type": "invalid_tool_call"}  # fmt: skip
    reply = AIMessage(content="", invalid_tool_calls=[invalid])
    model = ScriptedToolCallingModel(replies=[reply, AIMessage("Answer: A")])
    result = run(scene, model, max_hops=2)
    [call] = result["steps"][0]["tool_calls"]
    assert call["id"] == "bad-1" and "not a JSON object" in str(call["error"])
    sent = model.requests[1]
    assert sent[1].tool_calls[0]["id"] == "bad-1"  # the assistant turn names the call …
    assert isinstance(sent[2], ToolMessage) and sent[2].tool_call_id == "bad-1"  # … answered
    assert texts_in(sent[2]).startswith("Error:") and result["answer"] == "A"


def test_no_call_at_all_is_a_direct_answer(scene: pathlib.Path) -> None:
    model = ScriptedVisionModel(replies=["It is red.\nAnswer: A"])
    result = run(scene, model)
    assert result["answer"] == "A" and result["stop_reason"] == "answered"
    assert len(result["views"]) == 1 and result["steps"][0]["tool_calls"] == []


def test_open_question_without_answer_keeps_none(scene: pathlib.Path) -> None:
    context = ZoomContext(model=ScriptedVisionModel(replies=["<answer></answer>"]))
    result = build_agent_graph().invoke(
        {"image": str(scene), "question": "What is it?"}, context=context
    )
    assert result["answer"] is None and result["initial_answer"] is None


def test_graph_shape() -> None:
    drawn = build_agent_graph().get_graph().draw_mermaid()
    for edge in ("__start__ --> agent;", "agent -.-> crop;", "crop --> agent;",
        "agent -.-> __end__;", "agent -.-> agent;"):  # fmt: skip
        assert edge in drawn


def test_calls_a_server_parsed_in_text_mode_go_back_as_text(scene: pathlib.Path) -> None:
    # `transformers serve` parses `<tool_call>` text even when no tools were sent: the call is
    # written back into the assistant turn, and its result is a `<tool_response>` user turn
    call = {"name": "crop", "args": {"image_id": "img0", "box": [0.75, 0.6, 0.875, 0.8]},
        "id": "srv-1"}  # fmt: skip
    replies = [AIMessage(content="", tool_calls=[call]), AIMessage(content="Answer: A")]
    model = ScriptedToolCallingModel(replies=replies)
    result = run(scene, model, tool_call_format="text", max_hops=2)
    assert result["steps"][0]["raw"] == FIRST_CALLS["crop"]
    sent = model.requests[1]
    assert [type(m).__name__ for m in sent] == ["SystemMessage", "HumanMessage", "AIMessage",
        "HumanMessage"]  # fmt: skip
    assert sent[2].content == FIRST_CALLS["crop"] and not sent[2].tool_calls
    assert texts_in(sent[3]).startswith("<tool_response>") and len(images_in(sent[3])) == 1


class RuleAgentModel(RuleVisionModel):
    """`RuleVisionModel`, plus a crop call for the agent's question and `B` after its result."""

    @property
    def _llm_type(self) -> str:
        return "rule-agent"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last = texts_in(messages[-1])
        if "<tool_response>" in last:
            text = "Answer: B"
        elif "call the crop tool" in last:
            text = FIRST_CALLS["crop"]
        else:
            return super()._generate(messages, stop, run_manager, **kwargs)
        usage = {"input_tokens": 70, "output_tokens": 7, "total_tokens": 77}
        reply = AIMessage(content=text, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=reply)])


def test_eval_runs_three_methods_with_costs_and_pairs(tmp_path: pathlib.Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    plan = EvalPlan(benchmark="hr-bench", data=data, out=tmp_path / "run",
        methods=parse_methods("baseline,zoom-refine,agent"), concurrency=2)  # fmt: skip
    summary = run_eval(plan, ZoomContext(model=RuleAgentModel(), max_hops=2))
    records = [json.loads(line) for line in (tmp_path / "run/predictions.jsonl").open()]
    agent = [r for r in records if r["method"] == "agent" and r["status"] == "ok"]
    assert len(agent) == 5 and all(r["answer"] == "B" and len(r["views"]) == 2 for r in agent)
    costs = summary["methods"]["agent"]["costs"]
    assert costs == {"samples": 5, "tool_calls_per_sample": 1.0, "images_per_sample": 2.0,
        "model_calls_per_sample": 2.0, "tokens_per_sample": 154.0}  # fmt: skip
    assert summary["methods"]["baseline"]["costs"]["tool_calls_per_sample"] == 0.0
    pairs = summary["paired_methods"]
    assert list(pairs) == ["baseline → zoom-refine", "baseline → agent", "zoom-refine → agent"]
    # the rule model answers A directly and B after zooming: same as zoom-refine, not baseline
    assert (
        pairs["zoom-refine → agent"]["both_right"] + pairs["zoom-refine → agent"]["both_wrong"]
        == pairs["zoom-refine → agent"]["pairs"]
    )
    base = pairs["baseline → agent"]  # 6 rows, the bad one wrong for both; A vs B differ
    assert base["pairs"] == 6 and base["fixed"] + base["broken"] == 6 - base["both_wrong"]
    assert base["fixed"] >= 1 and base["both_right"] == 0
    table = format_table(summary)
    assert "agent per sample: 1.00 tool calls, 2.00 images, 2.00 model calls, 154 tokens" in table
    assert "paired baseline → agent (6 samples)" in table


def test_method_lists() -> None:
    assert parse_methods("both") == ("baseline", "zoom-refine")
    assert parse_methods("agent, baseline,agent") == ("agent", "baseline")
    with pytest.raises(InvalidInputError, match="--method takes a comma list"):
        parse_methods("baseline,zoom")


def test_cli_refuses_an_unknown_method_in_one_line(tmp_path: pathlib.Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    outcome = CliRunner().invoke(app, ["eval", "hr-bench", "--data", str(data), "--method",
        "baseline,agents", "--out", str(tmp_path / "run")])  # fmt: skip
    text = " ".join(outcome.output.replace("│", " ").split())  # the usage-error box, unwrapped
    assert outcome.exit_code == 2 and "Invalid value for '--method': takes a comma list" in text
    assert "got 'baseline,agents'" in text and "Traceback" not in outcome.output
    assert not (tmp_path / "run").exists()  # refused while parsing: nothing written


def test_traced_agent_run_replays_with_the_agent_graph(
    scene: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    model = ScriptedVisionModel(replies=[FIRST_CALLS["crop"], "Answer: A"])
    context = ZoomContext(model=model, max_hops=2)
    inputs: Any = {"image": str(scene), "question": "Which colour?", "options": OPTIONS}
    db = tmp_path / "trace.db"
    run_ = run_graph(inputs, context, db=db, graph="agent")
    trace = read_trace(db, str(run_.thread_id))
    rows = [(step.node, (step.record or {}).get("view")) for step in trace.steps]
    assert rows == [("agent", "img0"), ("crop", "img1"), ("agent", "img1")]
    assert trace.steps[1].view_box == run_.result["views"][1]["box"]


# --- the agent's wording comes from the prompt set (`[agent]`, docs/prompts.md) ---------------

AGENT_SET = """[templates]
localize = "Q {question}"
refine = "R"
zoom_again = "Z"  # max_hops > 1 asks for it, whatever the method (ZoomContext checks the set)
question_with_options = "ASKED {question} / {options}"
question_open = "ASKED {question}"

[agent]
tools_system = "TOOLS {tools}"
final = "DONE after {limit}. {answer_format}"
error = "FAILED: {message}"

[agent.zoom_hint]
crop = "ZOOM at most {limit}"

[agent.result_hint]
crop = "NEXT?"
"""


def test_a_prompt_set_file_overriding_agent_texts_changes_what_the_model_is_sent(
    scene: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Each overridden text reaches the model where ours did; the ones the set leaves out
    (the answer format) are ours."""
    path = tmp_path / "agent.toml"
    path.write_text(AGENT_SET, encoding="utf-8")
    bad = call_text("crop", {"image_id": "img0", "box": [0.75, 0.6, "x", 0.8]})
    model = ScriptedVisionModel(replies=[bad, FIRST_CALLS["crop"], "Answer: A"])
    result = run(scene, model, prompts=path, tool_call_format="text", max_hops=2)
    assert result["answer"] == "A" and len(model.requests) == 3
    system, question = model.requests[0]
    assert isinstance(system, SystemMessage) and texts_in(system).startswith('TOOLS {"type"')
    ours = "When you are sure, end your reply with exactly one line:\nAnswer: <{}>"
    assert texts_in(question) == (
        "ASKED What colour is the square? / A. red\nB. blue\n\nZOOM at most 2\n\n"
        + ours.format("the letter of the correct option")
    )
    error = texts_in(model.requests[1][-1])
    assert "\nFAILED: box must be four finite numbers" in error and "Error:" not in error
    last = model.requests[2][-1]  # the crop result, then the final request, in one user turn
    assert len(images_in(last)) == 1
    assert texts_in(last).endswith(
        "NEXT?\n\n</tool_response>\nDONE after 2. "
        + ours.format("the letter of the correct option")
    )


def test_a_set_without_agent_texts_runs_the_agent_with_ours(
    scene: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """A set written for the Zoom-Refine graph alone (no [agent], no question fragments) shows
    the agent model exactly what the default set does."""
    path = tmp_path / "zoom-only.toml"
    path.write_text("[templates]\nlocalize = 'Q {question}'\nrefine = 'R'\n", encoding="utf-8")
    sent = []
    for prompts in (path, None):
        model = ScriptedVisionModel(replies=[FIRST_CALLS["mini_o3"], FINAL["mini_o3"]])
        run(scene, model, prompts=prompts, tool_convention="mini_o3", max_hops=1)
        sent.append([[texts_in(message) for message in request] for request in model.requests])
    assert sent[0] == sent[1]
    assert sent[0][0][1].startswith("Question: What colour is the square?\nOptions:\nA. red")
