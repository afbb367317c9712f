"""Reading tool calls written as text (`agent.tool_calls`) and each convention's arguments and
frames (`agent.tool_conventions`), without a graph."""

from __future__ import annotations

import pytest

from zoom_refine.agent.tool_calls import (
    answer_text,
    parse_text_tool_calls,
    strip_tool_calls,
    tool_call_text,
)
from zoom_refine.agent.tool_conventions import CONVENTIONS, CropRequest, tool_convention

IDS = ["img0", "img1"]


def test_hermes_calls_in_order_with_string_arguments_and_fences() -> None:
    text = (
        "look\n<tool_call>\n"
        '{"name": "crop", "arguments": {"box": [1, 2, 3, 4]}}\n</tool_call>\n'
        '<tool_call>```json\n{"name": "crop", "arguments": "{\\"box\\": [5, 6, 7, 8]}"}\n```'
        "</tool_call>"
        "<tool_call>{'name': 'crop', 'parameters': {'box': [0, 0, 1, 1]}}</tool_call>"
    )
    calls = parse_text_tool_calls(text)
    assert [call.error for call in calls] == [None, None, None]
    assert [call.args["box"] for call in calls] == [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 1, 1]]
    assert strip_tool_calls(text) == "look"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<tool_call>{oops}</tool_call>", "not a JSON object"),
        ("<tool_call>[1, 2]</tool_call>", "got list"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'no "name"'),
        ('<tool_call>{"name": "crop", "arguments": [1]}</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "crop", "arguments": {}', "never closed"),
        ("<tool_call>__import__('os').system('true')</tool_call>", "not a JSON object"),
    ],
)
def test_malformed_text_calls_carry_their_reason(text: str, reason: str) -> None:
    [call] = parse_text_tool_calls(text)
    assert call.error is not None and reason in call.error


def test_grounding_body_is_the_arguments() -> None:
    text = '<think>x</think><grounding>{"bbox_2d": [0.1, 0.2, 0.3, 0.4]}</grounding>'
    [call] = parse_text_tool_calls(text, "grounding", name="grounding")
    assert call.name == "grounding" and call.args == {"bbox_2d": [0.1, 0.2, 0.3, 0.4]}


def test_answer_text_prefers_the_answer_tag_and_drops_thinking_and_calls() -> None:
    assert answer_text("<think>A?</think><answer> C </answer>") == "C"
    assert answer_text('<think>A?</think>Answer: B<tool_call>{"name": "x"}</tool_call>') == (
        "Answer: B"
    )


def test_written_back_calls_read_the_same() -> None:
    for tag in ("tool_call", "grounding"):
        args = {"bbox_2d": [1, 2, 3, 4], "label": "ü"}
        [call] = parse_text_tool_calls(tool_call_text("t", args, tag), tag, name="t")
        assert (call.name, call.args, call.error) == ("t", args, None)


@pytest.mark.parametrize(
    ("name", "tool", "args", "expected"),
    [
        ("crop", "crop", {"image_id": "img1", "box": [0, 0, 1, 1], "box_format": "pixel"},
            CropRequest("img1", (0, 0, 1, 1), "pixel")),
        ("qwen3_vl", "image_zoom_in_tool", {"bbox_2d": [1, 2, 3, 4], "img_idx": 1.0,
            "label": "cat"}, CropRequest("img1", (1, 2, 3, 4), "norm1000", "cat")),
        ("qwen3_vl", "image_zoom_in_tool", {"bbox_2d": [1, 2, 3, 4], "label": "cat"},
            CropRequest("img0", (1, 2, 3, 4), "norm1000", "cat")),
        ("deepeyes", "image_zoom_in_tool", {"bbox_2d": [10, 20, 30, 40]},
            CropRequest("img0", (10, 20, 30, 40), "pixel")),
        ("mini_o3", "grounding", {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "source": "observation_1"},
            CropRequest("img1", (0.1, 0.2, 0.3, 0.4), "norm1")),
    ],
)  # fmt: skip
def test_each_convention_reads_its_image_and_frame(
    name: str, tool: str, args: dict[str, object], expected: CropRequest
) -> None:
    assert tool_convention(name).read(tool, args, IDS) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("qwen3_vl", {"bbox_2d": [1, 2, 3, 4], "img_idx": "first"}, "names no image"),
        ("qwen3_vl", {"bbox_2d": [1, 2, 3, float("nan")]}, "four finite numbers"),
        ("qwen3_vl", {"bbox_2d": [1, 2, 3, True]}, "four finite numbers"),
        ("deepeyes", {"bbox": [1, 2, 3, 4]}, "bbox_2d must be"),
        ("mini_o3", {"bbox_2d": [0, 0, 1, 1], "source": "observation_x"}, "source must be"),
        ("mini_o3", {"bbox_2d": [0, 0, 1, 1], "source": "observation_7"}, "names no image"),
    ],
)
def test_bad_arguments_are_messages_for_the_model(
    name: str, args: dict[str, object], reason: str
) -> None:
    convention = tool_convention(name)  # type: ignore[arg-type]
    answer = convention.read(convention.tool_name, args, IDS)
    assert isinstance(answer, str) and reason in answer


def test_every_schema_names_its_box_frame() -> None:
    words = {"crop": "box_format", "qwen3_vl": "0-1000", "deepeyes": "pixels of the original",
        "mini_o3": "relative"}  # fmt: skip
    for name, convention in CONVENTIONS.items():
        function = convention.schema()["function"]
        assert function["name"] == convention.tool_name
        box = "box" if name == "crop" else "bbox_2d"
        assert words[name] in function["parameters"]["properties"][box]["description"]
