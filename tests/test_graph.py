"""The Zoom-Refine graph's logic, driven by scripted models on synthetic images."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from PIL import Image

from zoom_refine import ZoomContext, build_baseline_graph, build_graph
from zoom_refine.agent.state import InputState, OutputState
from zoom_refine.testing import ScriptedVisionModel, images_in, texts_in

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREY = (128, 128, 128)
OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """4000×3000 grey image: a red square at [2400, 1800, 2800, 2100], a blue one top-left."""
    image = Image.new("RGB", (4000, 3000), GREY)
    image.paste(RED, (2400, 1800, 2800, 2100))
    image.paste(BLUE, (100, 100, 300, 300))
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def run(
    graph: Any, image: Path | bytes, model: ScriptedVisionModel, **settings: Any
) -> dict[str, Any]:
    context = ZoomContext(model=model, **{"image_format": "png", **settings})
    source = image if isinstance(image, bytes) else str(image)
    inputs: InputState = {
        "image": source,
        "question": "What colour is the square?",
        "options": OPTIONS,
    }
    result: dict[str, Any] = graph.invoke(
        inputs, context=context, config={"recursion_limit": context.recursion_limit}
    )
    return result


def test_two_calls_localize_crop_refine(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "The close-up shows a red square.\nRechecked Answer: A\nConfidence: 0.9",
        ]
    )
    result = run(build_graph(), scene, model)

    assert result["initial_answer"] == "B"
    assert result["answer"] == "A"
    assert result["confidence"] == pytest.approx(0.9)
    assert result["stop_reason"] == "confident"
    assert [step["node"] for step in result["steps"]] == ["localize", "refine"]
    # Padding is 0.1 of the image side on each side: 400 px in x, 300 px in y.
    assert result["views"] == [
        {"id": "img0", "box": [0, 0, 4000, 3000], "hop": 0, "size": [2048, 1536]},
        {"id": "img1", "box": [2000, 1500, 3200, 2400], "hop": 1, "size": [1200, 900]},
    ]
    assert result["usage"] == {
        "model_calls": 2,
        "input_tokens": 200,
        "output_tokens": 20,
        "total_tokens": 220,
    }
    assert len(result["image_sha256"]) == 64


def test_refine_request_extends_the_localize_request_with_the_crop(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    run(build_graph(), scene, model)
    localize_request, refine_request = model.requests

    assert len(localize_request) == 1 and len(refine_request) == 3
    assert refine_request[0] == localize_request[0]  # same image bytes, same text
    assert isinstance(refine_request[1], AIMessage)
    assert refine_request[1].content == "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
    assert not refine_request[1].tool_calls
    (first_view,) = images_in(localize_request[0])
    assert first_view.size == (2048, 1536)
    (crop,) = images_in(refine_request[2])
    assert "Rechecked Answer" in texts_in(refine_request[2])
    # The crop shows the region asked for: red square at [400, 300, 800, 600] of the crop.
    assert crop.size == (1200, 900)
    assert crop.getpixel((600, 450)) == RED
    assert crop.getpixel((405, 305)) == RED and crop.getpixel((795, 595)) == RED
    assert crop.getpixel((395, 450)) == GREY and crop.getpixel((805, 450)) == GREY
    assert crop.getpixel((600, 295)) == GREY and crop.getpixel((600, 605)) == GREY


def test_no_box_keeps_the_preliminary_answer(scene: Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: C\nI cannot point to one region."])
    result = run(build_graph(), scene, model)

    assert len(model.requests) == 1
    assert result["answer"] == result["initial_answer"] == "C"
    assert result["stop_reason"] == "no_box"
    assert len(result["views"]) == 1
    assert "no box" in result["steps"][0]["note"]


def test_box_in_0_1000_under_the_paper_prompt_is_understood(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [600, 600, 700, 700]",
            "Rechecked Answer: A\nConfidence: high",
        ]
    )
    result = run(build_graph(), scene, model)

    assert result["steps"][0]["box_frame"] == "norm1000"
    assert result["views"][1]["box"] == [2000, 1500, 3200, 2400]
    assert result["answer"] == "A"


def test_inverted_box_corners_are_swapped(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.7, 0.7, 0.6, 0.6]",
            "Rechecked Answer: A\nConfidence: 1",
        ]
    )
    result = run(build_graph(), scene, model)

    assert result["views"][1]["box"] == [2000, 1500, 3200, 2400]


def test_internvl_native_box_format(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\n<box>[[600, 600, 700, 700]]</box>",
            "Rechecked Answer: A\nConfidence: 0.95",
        ]
    )
    result = run(build_graph(), scene, model, prompt_style="internvl")

    assert "0 to 1000" in texts_in(model.requests[0][0])
    assert result["views"][1]["box"] == [2000, 1500, 3200, 2400]


def test_unsure_refine_zooms_again_inside_the_crop(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "Rechecked Answer: B\nConfidence: 0.4",
            # In the crop img1 = [2000, 1500, 3200, 2400]: its centre quarter.
            "Answer: A\nBounding box: [0.25, 0.25, 0.75, 0.75]",
            "Rechecked Answer: A\nConfidence: 0.95",
        ]
    )
    result = run(build_graph(), scene, model, max_hops=2, min_crop_side=0)

    assert [s["node"] for s in result["steps"]] == ["localize", "refine", "localize", "refine"]
    assert result["steps"][2]["view"] == "img1"
    # Box in img1's frame: [2300, 1725, 2900, 2175]; padding 0.1 of img1's side (120, 90).
    assert result["views"][2] == {
        "id": "img2",
        "box": [2180, 1635, 3020, 2265],
        "hop": 2,
        "size": [840, 630],
    }
    assert result["answer"] == "A" and result["initial_answer"] == "B"
    assert result["stop_reason"] == "confident"
    # Each request extends the previous one: a growing prefix.
    for earlier, later in itertools.pairwise(model.requests):
        assert later[: len(earlier)] == earlier
    third = model.requests[2]
    assert "smaller region" in texts_in(third[-1]) and not images_in(third[-1])


def test_hops_are_bounded_by_max_hops(scene: Path) -> None:
    unsure = [
        "Answer: B\nBounding box: [0.2, 0.2, 0.8, 0.8]",
        "Rechecked Answer: B\nConfidence: 0.1",
    ]
    model = ScriptedVisionModel(replies=unsure * 3)
    result = run(build_graph(), scene, model, max_hops=3)

    assert len(model.requests) == 6
    assert result["stop_reason"] == "max_hops"
    assert [view["hop"] for view in result["views"]] == [0, 1, 2, 3]


def test_unparseable_refine_keeps_the_previous_answer(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=["Answer: D\nBounding box: [0.1, 0.1, 0.3, 0.3]", "hmm, hard to say"]
    )
    result = run(build_graph(), scene, model)

    assert result["answer"] == "D"
    assert result["confidence"] is None
    assert "keeping the previous answer" in result["steps"][1]["note"]


def test_open_question_without_options(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: a square\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "Rechecked Answer: a red square\nConfidence: 0.8",
        ]
    )
    context = ZoomContext(model=model)
    result = build_graph().invoke(
        {"image": str(scene), "question": "What is there?"}, context=context
    )

    assert result["initial_answer"] == "a square"
    assert result["answer"] == "a red square"
    assert "Options" not in texts_in(model.requests[0][0])


def test_image_as_bytes(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    result = run(build_graph(), scene.read_bytes(), model)
    assert result["views"][1]["box"] == [2000, 1500, 3200, 2400]


def test_baseline_answers_once_on_the_view(scene: Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: B"])
    result = run(build_baseline_graph(), scene, model)

    assert result["answer"] == "B" and result["stop_reason"] == "baseline"
    assert len(model.requests) == 1 and len(result["views"]) == 1


def test_graph_runs_as_a_subgraph_of_a_parent_graph(scene: Path) -> None:
    class Parent(InputState, OutputState, total=False):
        verdict: str

    def judge(state: Parent) -> dict[str, str]:
        return {"verdict": "changed" if state["answer"] != state["initial_answer"] else "kept"}

    parent = StateGraph(Parent, context_schema=ZoomContext)
    parent.add_node("zoom", build_graph())
    parent.add_node("judge", judge)
    parent.add_edge(START, "zoom")
    parent.add_edge("zoom", "judge")
    parent.add_edge("judge", END)
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    result = parent.compile().invoke(
        {"image": str(scene), "question": "Colour?", "options": OPTIONS},
        context=ZoomContext(model=model),
    )
    assert result["answer"] == "A" and result["verdict"] == "changed"


def test_options_as_a_list_are_lettered(scene: Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: B"])
    context = ZoomContext(model=model)
    build_graph().invoke(
        {"image": str(scene), "question": "Colour?", "options": ["red", "blue"]}, context=context
    )
    assert "A. red\nB. blue" in texts_in(model.requests[0][0])


def test_forced_norm1_frame_reproduces_the_official_drop_of_0_1000_boxes(scene: Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: B\nBounding box: [600, 600, 700, 700]"])
    result = run(build_graph(), scene, model, box_format="norm1")

    assert len(model.requests) == 1
    assert result["stop_reason"] == "no_box" and result["answer"] == "B"
    assert "outside the norm1 range" in result["steps"][0]["note"]


def test_refusing_inverted_boxes_reproduces_the_official_behaviour(scene: Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: B\nBounding box: [0.7, 0.7, 0.6, 0.6]"])
    result = run(build_graph(), scene, model, accept_inverted_boxes=False)

    assert len(model.requests) == 1 and result["stop_reason"] == "no_box"
    assert "inverted" in result["steps"][0]["note"]


def test_qwen2_5_vl_pixel_boxes_map_through_the_processor_resize(scene: Path) -> None:
    """Qwen2.5-VL answers in pixels of its resized input: the 2048×1536 view becomes 2044×1540
    (multiples of 28), so the box must be divided by that, not by the view's size."""
    model = ScriptedVisionModel(
        replies=[
            '{"bbox_2d": [1226, 924, 1431, 1078]}\nAnswer: B',
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    result = run(
        build_graph(), scene, model, model_family="qwen2_5_vl", padding=0.0, min_crop_side=0
    )

    localize = result["steps"][0]
    assert localize["box_frame"] == "pixel" and localize["frame_size"] == [2044, 1540]
    # 1226 / 2044 × 4000 = 2399.2 → 2399; 924 / 1540 × 3000 = 1800; 1431 / 2044 × 4000 = 2800.4 → 2801
    assert result["views"][1]["box"] == [2399, 1800, 2801, 2100]


def test_pixel_boxes_of_other_models_use_the_shown_size(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=["Answer: B\nBounding box: [1228.8, 921.6, 1433.6, 1075.2]", "Rechecked Answer: A"]
    )
    result = run(build_graph(), scene, model, box_format="pixel", padding=0.0, min_crop_side=0)
    assert result["steps"][0]["frame_size"] == [2048, 1536]
    assert result["views"][1]["box"] == [2400, 1800, 2800, 2100]
