"""The one box reader (agent.regions): frame detection, overshoot clamping, pixel frames, merging,
and that the graph sends the crop tool the region it read, converted once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.regions import (
    INVERTED_BOX,
    NO_BOX,
    OUT_OF_RANGE,
    OVERSHOOT,
    detect_box_frame,
    read_regions,
)
from zoom_refine.testing import ScriptedVisionModel
from zoom_refine.tools.boxes import BOX_FRAMES, Box, BoxFrame
from zoom_refine.tools.views import View

FULL = View("img0", Box(0, 0, 4000, 3000), 0, (2000, 1500))  # a 4000×3000 original shown whole
NESTED = View("img1", Box(1000, 1000, 2000, 1800), 1, (1000, 800))  # a crop of it, a later hop
SIZE = (4000, 3000)


def context(**fields: Any) -> ZoomContext:
    return ZoomContext(model="openai:none", **fields)


def read(text: str, view: View = FULL, family: str = "other", **fields: Any) -> Any:
    return read_regions(text, view, SIZE, family, context(**fields))  # type: ignore[arg-type]


# --- frame detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "expected_frame", "detected"),
    [
        # Everything ≤ 1 with a fraction can only be 0–1, whatever was asked.
        ([0.1, 0.2, 0.5, 0.6], "norm1", "norm1"),
        ([0.1, 0.2, 0.5, 0.6], "norm1000", "norm1"),
        ([0.1, 0.2, 0.5, 0.6], "pixel", "norm1"),
        ([0, 0, 1, 1], "norm1", "norm1"),
        ([0.0, 0.0, 1.0, 1.0], "norm1", "norm1"),
        # Integers ≤ 1 under a 0–1000 (or pixel) prompt are a tiny box in that frame.
        ([0, 0, 1, 1], "norm1000", "norm1000"),
        ([0.0, 0.0, 1.0, 1.0], "norm1000", "norm1000"),
        ([0, 0, 1, 1], "pixel", "pixel"),
        ([0, 0.5, 1, 1], "norm1000", "norm1"),  # one fraction: 0–1 after all
        ([-0.1, 0.2, 0.5, 0.6], "norm1", "norm1"),  # magnitudes count
        # A 0–1 box that overshoots the edge a little is still 0–1 (the issue-10 bug: 1.02 was
        # read as 0–1000 and the crop became the top-left corner).
        ([0.5, 0.5, 1.02, 0.9], "norm1", "norm1"),
        ([0.5, 0.5, 1.02, 0.9], "norm1000", "norm1"),
        ([0.5, 0.5, 1.1, 1.1], "norm1", "norm1"),
        ([0.5, 0.5, 1.11, 0.9], "norm1", "norm1000"),  # beyond the margin: not 0–1
        ([0, 0, 1, 1.05], "pixel", "norm1"),
        ([0, 0, 2, 1], "norm1000", "norm1000"),  # small 0–1000 integers stay 0–1000
        # Up to 1000 inclusive: 0–1000 (the official parser's dropped case) unless pixels asked.
        ([100, 200, 500, 999], "norm1", "norm1000"),
        ([100, 200, 500, 999], "norm1000", "norm1000"),
        ([100, 200, 1000, 1000], "norm1", "norm1000"),
        ([0.5, 0.5, 2, 2], "norm1", "norm1000"),
        ([100, 200, 500, 999], "pixel", "pixel"),
        ([0.1, 0.2, 500, 600], "pixel", "pixel"),
        # Above 1000: can only be pixels.
        ([100, 200, 1001, 500], "norm1", "pixel"),
        ([100, 200, 1001, 500], "norm1000", "pixel"),
        ([100, 200, 1920, 1080], "pixel", "pixel"),
        ([-1200, 0, 10, 10], "norm1000", "pixel"),
    ],
)
def test_detect_box_frame(box: list[float], expected_frame: BoxFrame, detected: BoxFrame) -> None:
    assert detect_box_frame(box, expected_frame) == detected


@given(
    box=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=4, max_size=4),
    expected=st.sampled_from(BOX_FRAMES),
)
@settings(max_examples=300, deadline=None)
def test_detect_box_frame_always_names_a_frame(box: list[float], expected: BoxFrame) -> None:
    frame = detect_box_frame(box, expected)
    assert frame in BOX_FRAMES
    if any(abs(v) > 1000 for v in box):
        assert frame == "pixel"


# --- properties near every frame's edge ----------------------------------------------------------

edge = st.floats(0.0, 1.0)
overshoot = st.floats(1.0, 1.0 + OVERSHOOT)


@given(
    x1=edge, y1=edge, x2=overshoot, y2=st.one_of(edge, overshoot), asked=st.sampled_from(BOX_FRAMES)
)
@settings(max_examples=300, deadline=None)
def test_a_0_1_box_that_overshoots_is_clamped_to_the_view(
    x1: float, y1: float, x2: float, y2: float, asked: BoxFrame
) -> None:
    """A fractional box reaching past 1 by up to the margin is 0–1, clamped: its region never
    leaves the view and its far edge lands on the view's edge."""
    if x2 == 1.0:
        x2 = 1.0 + OVERSHOOT / 2  # a fraction above 1 (all-integer boxes take the asked frame)
    family = {"norm1": "other", "norm1000": "qwen3_vl", "pixel": "qwen2_5_vl"}[asked]
    result = read(f"Answer: B\nBounding box: [{x1}, {y1}, {x2}, {y2}]", NESTED, family)
    (box,) = result.boxes
    assert box.frame == "norm1" and box.pixels is not None
    px1, py1, px2, py2 = box.pixels
    assert px2 == pytest.approx(NESTED.box.x2)  # clamped to the right edge of the view
    assert NESTED.box.x1 <= px1 <= NESTED.box.x2 and NESTED.box.y1 <= py1 <= NESTED.box.y2
    assert NESTED.box.y1 <= py2 <= NESTED.box.y2


@given(values=st.lists(st.integers(0, 1), min_size=4, max_size=4))
@settings(max_examples=50, deadline=None)
def test_small_integers_under_a_0_1000_prompt_are_0_1000(values: list[int]) -> None:
    """[0, 0, 1, 1] from InternVL's `<box>` prompt is a sliver, not the whole view."""
    result = read(f"<box>[[{', '.join(map(str, values))}]]</box>", prompt_style="internvl")
    (box,) = result.boxes
    assert box.frame == "norm1000" and box.pixels is not None
    assert all(abs(p) <= 0.002 * 4000 for p in box.pixels)


@given(
    width=st.integers(28, 900),
    height=st.integers(28, 900),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_pixel_boxes_on_small_views_are_read_in_the_processed_frame(
    width: int, height: int, data: st.DataObject
) -> None:
    """Qwen2.5-VL's pixels are of the size its processor resized the view to (reported by the
    backend): a box covering that whole frame covers the whole view, whatever its size."""
    view = View("img0", Box(0, 0, width * 3, height * 3), 0, (width, height))
    processed = (data.draw(st.integers(28, 1200)), data.draw(st.integers(28, 1200)))
    text = f"Bounding box: [0, 0, {processed[0]}, {processed[1]}]"
    result = read_regions(
        text, view, (width * 3, height * 3), "qwen2_5_vl", context(), processed_size=processed
    )
    (box,) = result.boxes
    assert box.frame == "pixel" and box.frame_size == processed
    assert box.pixels == pytest.approx((0, 0, width * 3, height * 3))


# --- refusals and notes --------------------------------------------------------------------------


def test_no_box_is_recorded() -> None:
    result = read("Answer: B")
    assert result.boxes == [] and result.regions == [] and result.note == NO_BOX


def test_forced_frames_refuse_out_of_range_numbers() -> None:
    result = read("Bounding box: [0.5, 0.5, 1.02, 0.9]", box_format="norm1")
    assert result.regions == [] and result.note == OUT_OF_RANGE.format(frame="norm1")


def test_inverted_corners_are_refused_when_asked() -> None:
    result = read("Bounding box: [0.6, 0.6, 0.5, 0.7]", accept_inverted_boxes=False)
    assert result.regions == [] and result.note == INVERTED_BOX
    kept = read("Bounding box: [0.6, 0.6, 0.5, 0.7]")
    assert kept.regions[0].ordered == pytest.approx((2000, 1800, 2400, 2100))


def test_several_regions_merge_and_notes_name_the_refused_box() -> None:
    text = "[0.1, 0.1, 0.2, 0.2] [0.11, 0.11, 0.21, 0.21] [2000, 0, 10, 10] [0.7, 0.7, 0.8, 0.8]"
    result = read(text, max_regions=4, accept_inverted_boxes=False)
    assert [box.frame for box in result.boxes] == ["norm1", "norm1", None, "norm1"]
    assert [region.members for region in result.regions] == [(0, 1), (3,)]
    assert result.regions[0].box == pytest.approx((400, 300, 840, 630))  # the union
    assert result.note == f"box 3: {INVERTED_BOX}"


# --- through the graph ---------------------------------------------------------------------------


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "wide.png"
    Image.new("RGB", (4000, 3000), (40, 90, 160)).save(path)
    return path


def test_the_graph_crops_an_overshooting_box_where_the_model_pointed(picture: Path) -> None:
    """The issue-10 reproducer: `[0.5, 0.5, 1.02, 0.9]` must crop the lower right, not the
    top-left 448×448 corner, and the tool gets the region once converted (original pixels)."""
    model = ScriptedVisionModel(
        replies=["Answer: B\nBounding box: [0.5, 0.5, 1.02, 0.9]", "Rechecked Answer: B"]
    )
    ctx = ZoomContext(model=model, image_format="png", padding=0.0, min_crop_side=0)
    inputs: Any = {"image": str(picture), "question": "Which?", "options": ["x", "y"]}
    result = build_graph().invoke(inputs, context=ctx, config={"recursion_limit": 10})
    assert result["views"][1]["box"] == [2000, 1500, 4000, 2700]
    assert result["steps"][0]["box_frame"] == "norm1"
    assert result["stop_reason"] == "confident"


def test_crop_calls_carry_original_pixels_and_one_view_id_rule(picture: Path) -> None:
    """Several regions: each is one `crop` call in the tool's `original` frame with the next
    free view ids; the tool makes exactly those views; zooming again continues the numbering."""
    model = ScriptedVisionModel(
        replies=[
            "Answer: A\nBounding box: [0.1, 0.1, 0.2, 0.2]\nBounding box: [0.7, 0.7, 0.8, 0.8]",
            "Rechecked Answer: A\nConfidence: 0.2",
            "Answer: A\nBounding box: [0.0, 0.0, 0.5, 0.5]",
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    ctx = ZoomContext(model=model, image_format="png", max_regions=2, max_hops=2)
    inputs: Any = {"image": str(picture), "question": "Which?", "options": ["x", "y"]}
    calls, views = [], []
    for update in build_graph().stream(inputs, context=ctx, config={"recursion_limit": 20}):
        if "localize" in update:
            calls.append(update["localize"]["messages"][-1].tool_calls)
        if "refine" in update:
            views.extend(update["refine"]["views"])
    first_hop, second_hop = calls
    assert [call["id"] for call in first_hop] == ["crop-1-1", "crop-1-2"]
    assert [call["args"]["view_id"] for call in first_hop] == ["img1", "img2"]
    assert all(call["args"]["box_format"] == "original" for call in first_hop)
    assert first_hop[0]["args"]["box"] == pytest.approx([400, 300, 800, 600])
    assert first_hop[1]["args"]["box"] == pytest.approx([2800, 2100, 3200, 2400])
    (again,) = second_hop
    assert again["id"] == "crop-2" and again["args"]["image_id"] == "img2"
    assert "view_id" not in again["args"]  # one region: the tool picks the next id itself
    assert [view["id"] for view in views] == ["img1", "img2", "img3"]
    assert views[-1]["hop"] == 2 and math.isclose(again["args"]["box"][0], views[1]["box"][0])


def test_a_qwen_pixel_box_on_a_view_qwen_cannot_resize_is_read_at_the_shown_size() -> None:
    """Found by the property run: a 1×201 view made Qwen's resize rule raise inside the graph."""
    view = View("img0", Box(0, 0, 1, 201), 0, (1, 201))
    result = read_regions("Bounding box: [0, 0, 1, 100]", view, (1, 201), "qwen2_5_vl", context())
    (box,) = result.boxes
    assert box.frame == "pixel" and box.frame_size == (1, 201)
    assert box.pixels == pytest.approx((0, 0, 1, 100))
