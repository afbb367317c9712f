"""Multi-region zoom (beyond the paper): several boxes, several crops, one refine over all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.state import InputState
from zoom_refine.testing import ScriptedVisionModel, images_in, texts_in
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.crop import merge_overlapping_pixel_boxes
from zoom_refine.tools.crop_tool import make_crop
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.settings import ImageSettings
from zoom_refine.tools.views import render_view

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)
GREY = (128, 128, 128)
OPTIONS = {"A": "the red one", "B": "the blue one"}

# 4000×3000: red square top-left, blue square bottom-right (fractions exact in binary).
RED_BOX = "[0.0625, 0.125, 0.125, 0.25]"  # pixels [250, 375, 500, 750]
BLUE_BOX = "[0.875, 0.75, 0.9375, 0.875]"  # pixels [3500, 2250, 3750, 2625]
GREEN_BOX = "[0.5, 0.5, 0.5625, 0.5625]"  # pixels [2000, 1500, 2250, 1687.5]
# Padding 0.1 of the image side (400, 300): red crop [0, 75, 900, 1050], blue [3100, 1950, 4000, 2925].
RED_CROP = [0, 75, 900, 1050]
BLUE_CROP = [3100, 1950, 4000, 2925]
SURE = "Rechecked Answer: A\nConfidence: 0.9"


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    image = Image.new("RGB", (4000, 3000), GREY)
    image.paste(RED, (250, 375, 500, 750))
    image.paste(BLUE, (3500, 2250, 3750, 2625))
    image.paste(GREEN, (2000, 1500, 2250, 1688))
    path = tmp_path / "two_squares.png"
    image.save(path)
    return path


def run(scene: Path, model: ScriptedVisionModel, **settings: Any) -> dict[str, Any]:
    context = ZoomContext(model=model, **{"image_format": "png", **settings})
    inputs: InputState = {
        "image": str(scene),
        "question": "Which square is larger?",
        "options": OPTIONS,
    }
    result: dict[str, Any] = build_graph().invoke(
        inputs, context=context, config={"recursion_limit": context.recursion_limit}
    )
    return result


def crop_calls(updates: list[dict[str, Any]]) -> list[Any]:
    """The tool calls of the first localize reply, from a stream of node updates."""
    localize = next(update["localize"] for update in updates if "localize" in update)
    reply = localize["messages"][-1]
    assert isinstance(reply, AIMessage)
    return list(reply.tool_calls)


def assert_red_crop(crop: Image.Image) -> None:
    """The red crop [0, 75, 900, 1050]: red at x 250..500, y 300..675 of the crop."""
    assert crop.size == (900, 975)
    assert crop.getpixel((375, 480)) == RED
    assert crop.getpixel((255, 305)) == RED and crop.getpixel((495, 670)) == RED
    assert crop.getpixel((245, 480)) == GREY and crop.getpixel((505, 480)) == GREY
    assert crop.getpixel((375, 295)) == GREY and crop.getpixel((375, 680)) == GREY


def assert_blue_crop(crop: Image.Image) -> None:
    """The blue crop [3100, 1950, 4000, 2925]: blue at x 400..650, y 300..675 of the crop."""
    assert crop.size == (900, 975)
    assert crop.getpixel((525, 480)) == BLUE
    assert crop.getpixel((405, 305)) == BLUE and crop.getpixel((645, 670)) == BLUE
    assert crop.getpixel((395, 480)) == GREY and crop.getpixel((655, 480)) == GREY
    assert crop.getpixel((525, 295)) == GREY and crop.getpixel((525, 680)) == GREY


def test_two_boxes_become_two_crops_shown_together_in_order(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[f"Answer: B\nBounding box 1: {RED_BOX}\nBounding box 2: {BLUE_BOX}", SURE]
    )
    result = run(scene, model, max_regions=2)

    assert result["views"][1:] == [
        {"id": "img1", "box": RED_CROP, "hop": 1, "size": [900, 975]},
        {"id": "img2", "box": BLUE_CROP, "hop": 1, "size": [900, 975]},
    ]
    assert result["answer"] == "A" and result["stop_reason"] == "confident"
    localize_step, refine_step = result["steps"]
    assert localize_step["boxes"] == [[0.0625, 0.125, 0.125, 0.25], [0.875, 0.75, 0.9375, 0.875]]
    assert localize_step["regions"] == [[250, 375, 500, 750], [3500, 2250, 3750, 2625]]
    assert refine_step["crops"] == ["img1", "img2"] and refine_step["hop"] == 1

    localize_request, refine_request = model.requests
    assert "Bounding box 2" in texts_in(localize_request[0])
    assert "up to 2 regions" in texts_in(localize_request[0])
    # One user turn after the reply: both crops in the order given, then the refine text.
    assert len(refine_request) == 3 and isinstance(refine_request[1], AIMessage)
    last = refine_request[2]
    assert isinstance(last, HumanMessage) and isinstance(last.content, list)
    assert [block["type"] for block in last.content] == ["image", "image", "text"]
    assert "These last 2 images" in texts_in(last)
    red, blue = images_in(last)
    assert_red_crop(red)
    assert_blue_crop(blue)


def test_crops_follow_the_order_the_boxes_were_given(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[f"Answer: B\nBounding box 1: {BLUE_BOX}\nBounding box 2: {RED_BOX}", SURE]
    )
    result = run(scene, model, max_regions=3)

    assert [view["box"] for view in result["views"][1:]] == [BLUE_CROP, RED_CROP]
    blue, red = images_in(model.requests[1][-1])
    assert_blue_crop(blue)
    assert_red_crop(red)


def test_one_crop_tool_call_per_region_with_unique_view_ids(scene: Path) -> None:
    model = ScriptedVisionModel(replies=[f"Answer: B\n{RED_BOX}\n{BLUE_BOX}", SURE])
    context = ZoomContext(model=model, image_format="png", max_regions=2)
    inputs: InputState = {"image": str(scene), "question": "Which?", "options": OPTIONS}
    updates = list(build_graph().stream(inputs, context=context, stream_mode="updates"))

    calls = crop_calls(updates)
    assert [call["id"] for call in calls] == ["crop-1-1", "crop-1-2"]
    assert [call["args"]["view_id"] for call in calls] == ["img1", "img2"]
    ids = [
        view["id"]
        for update in updates
        for node in update.values()
        for view in node.get("views", [])
    ]
    assert ids == ["img0", "img1", "img2"] and len(set(ids)) == len(ids)


def test_overlapping_boxes_are_merged_into_one_crop(scene: Path) -> None:
    # Two boxes around the red square that overlap: one crop of their union.
    model = ScriptedVisionModel(
        replies=[
            "Answer: A\nBounding box 1: [0.0625, 0.125, 0.125, 0.25]\n"
            "Bounding box 2: [0.09375, 0.125, 0.15625, 0.25]",
            SURE,
        ]
    )
    result = run(scene, model, max_regions=2)

    assert len(result["views"]) == 2
    # Union [250, 375, 625, 750], padded (400, 300) and clamped.
    assert result["views"][1]["box"] == [0, 75, 1025, 1050]
    assert result["steps"][0]["regions"] == [[250, 375, 625, 750]]
    last = model.requests[1][-1]
    (crop,) = images_in(last)
    assert crop.getpixel((375, 480)) == RED
    assert "This last image is a close-up" in texts_in(last)


def test_more_boxes_than_max_regions_uses_the_first_n(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            f"Answer: B\nBounding box 1: {RED_BOX}\nBounding box 2: {BLUE_BOX}\n"
            f"Bounding box 3: {GREEN_BOX}",
            SURE,
        ]
    )
    result = run(scene, model, max_regions=2)

    assert [view["box"] for view in result["views"][1:]] == [RED_CROP, BLUE_CROP]
    assert len(result["steps"][0]["boxes"]) == 2
    assert len(images_in(model.requests[1][-1])) == 2


def test_one_region_setting_uses_only_the_first_box_as_before(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[f"Answer: B\nBounding box: {RED_BOX}\nBounding box: {BLUE_BOX}", SURE]
    )
    context = ZoomContext(model=model, image_format="png")
    inputs: InputState = {"image": str(scene), "question": "Which?", "options": OPTIONS}
    updates = list(build_graph().stream(inputs, context=context, stream_mode="updates"))
    steps = [
        step for update in updates for node in update.values() for step in node.get("steps", [])
    ]
    views = [
        view for update in updates for node in update.values() for view in node.get("views", [])
    ]

    assert [view["box"] for view in views[1:]] == [RED_CROP]
    assert "boxes" not in steps[0] and "crops" not in steps[1]
    calls = crop_calls(updates)
    assert [call["id"] for call in calls] == ["crop-1"]
    assert "view_id" not in calls[0]["args"]
    (crop,) = images_in(model.requests[1][-1])
    assert_red_crop(crop)
    assert "Bounding box 2" not in texts_in(model.requests[0][0])


def test_a_refused_box_leaves_the_others(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            f"Answer: B\nBounding box 1: [600, 600, 700, 700]\nBounding box 2: {BLUE_BOX}",
            SURE,
        ]
    )
    result = run(scene, model, max_regions=2, box_format="norm1")

    assert [view["box"] for view in result["views"][1:]] == [BLUE_CROP]
    assert "box 1: box numbers outside the norm1 range" in result["steps"][0]["note"]


def test_zoom_again_looks_inside_the_last_crop_with_fresh_view_ids(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            f"Answer: B\nBounding box 1: {RED_BOX}\nBounding box 2: {BLUE_BOX}",
            "Rechecked Answer: B\nConfidence: 0.3",
            "Answer: B\nBounding box 1: [0.4, 0.25, 0.75, 0.75]\n"
            "Bounding box 2: [0.0, 0.0, 0.1, 0.1]",
            SURE,
        ]
    )
    result = run(scene, model, max_regions=2, max_hops=2, min_crop_side=0, padding=0.0)

    ids = [view["id"] for view in result["views"]]
    assert ids == ["img0", "img1", "img2", "img3", "img4"]
    assert [view["hop"] for view in result["views"]] == [0, 1, 1, 2, 2]
    assert result["steps"][2]["view"] == "img2"
    # Inside img2 = [3500, 2250, 3750, 2625] (no padding): the blue square.
    assert result["views"][3]["box"] == [3600, 2343, 3688, 2532]
    assert result["views"][4]["box"] == [3500, 2250, 3525, 2288]
    third = model.requests[2]
    assert "last close-up" in texts_in(third[-1])
    blue_a, blue_b = images_in(model.requests[3][-1])
    assert blue_a.getpixel((10, 10)) == BLUE and blue_b.getpixel((10, 10)) == BLUE


@pytest.mark.parametrize("value", [0, 9])
def test_max_regions_is_validated(value: int) -> None:
    with pytest.raises(InvalidInputError, match="max_regions"):
        ZoomContext(model="hf:x", max_regions=value)


def test_merge_rule_on_padded_crops_in_original_pixels() -> None:
    settings = ImageSettings(padding=0.1, min_crop_side=0)
    full = Box(0, 0, 4000, 3000)
    far = merge_overlapping_pixel_boxes(
        [(250, 375, 500, 750), (3500, 2250, 3750, 2625)], full, (4000, 3000), settings, 0.3
    )
    assert [region.members for region in far] == [(0,), (1,)]
    # The second lies inside the first's crop: merged into their union, corners ordered.
    inside = merge_overlapping_pixel_boxes(
        [(100, 100, 1000, 1000), (600, 600, 500, 500)], full, (4000, 3000), settings, 0.3
    )
    assert [(region.box, region.members) for region in inside] == [((100, 100, 1000, 1000), (0, 1))]
    # A union may reach a third box: merging repeats until nothing overlaps heavily.
    # A and B share 20 %, A and C 60 %: A ∪ C then shares 60 % of B.
    chain = merge_overlapping_pixel_boxes(
        [(0, 0, 100, 100), (0, 80, 100, 180), (2000, 2000, 2100, 2100), (0, 40, 100, 140)],
        full,
        (4000, 3000),
        ImageSettings(padding=0.0, min_crop_side=0),
        0.3,
    )
    assert [(region.box, region.members) for region in chain] == [
        ((0, 0, 100, 180), (0, 1, 3)),
        ((2000, 2000, 2100, 2100), (2,)),
    ]


def test_make_crop_takes_an_explicit_view_id_and_refuses_a_taken_one() -> None:
    original = Image.new("RGB", (400, 300), GREY)
    view, _ = render_view(original, Box.full((400, 300)), view_id="img0", hop=0, size=(400, 300))
    views = [view.to_record()]
    settings = ImageSettings()
    first = make_crop(original, views, "img0", [0, 0, 0.5, 0.5], "norm1", settings, "img1")
    second = make_crop(original, views, "img0", [0.5, 0.5, 1, 1], "norm1", settings, "img2")
    assert (first.view.id, second.view.id) == ("img1", "img2")
    assert make_crop(original, views, "img0", [0, 0, 1, 1], "norm1", settings).view.id == "img1"
    from langchain_core.tools import ToolException

    with pytest.raises(ToolException, match="already registered"):
        make_crop(original, views, "img0", [0, 0, 1, 1], "norm1", settings, "img0")


def test_internvl_style_gives_one_box_tag_per_region(scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box 1: <box>[[62.5, 125, 125, 250]]</box>\n"
            "Bounding box 2: <box>[[875, 750, 937.5, 875]]</box>",
            SURE,
        ]
    )
    result = run(scene, model, max_regions=2, prompt_style="internvl")

    assert "Bounding box 2: <box>" in texts_in(model.requests[0][0])
    assert [view["box"] for view in result["views"][1:]] == [RED_CROP, BLUE_CROP]
