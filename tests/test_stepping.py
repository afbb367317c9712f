"""Stepping: `build_graph(checkpointer=…, interrupt_before=["crop"])` pauses after localize, the
pending boxes are read from the state, one is replaced, and the resumed run crops the new box."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from zoom_refine import (
    GRAPHS,
    InvalidInputError,
    ZoomContext,
    areplace_box,
    build_graph,
    pending_boxes,
    replace_box,
)
from zoom_refine.testing import ScriptedVisionModel, images_in

RED = (1200, 600, 1400, 800)  # in pixels of the 1600×1000 photo
BLUE = (100, 100, 300, 200)
LOCALIZE = "Answer: B\nBounding box: [0.75, 0.6, 0.875, 0.8]"  # the red square
REFINE = "Rechecked Answer: A\nConfidence: 0.9"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    image = Image.new("RGB", (1600, 1000), (200, 200, 200))
    image.paste((255, 0, 0), RED)
    image.paste((0, 0, 255), BLUE)
    path = tmp_path / "photo.png"
    image.save(path)
    return path


def paused_run(photo: Path, *replies: str, **settings: Any) -> tuple[Any, Any, ZoomContext]:
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_before=["crop"])
    config = {"configurable": {"thread_id": "step"}}
    model = ScriptedVisionModel(replies=list(replies or (LOCALIZE, REFINE)))
    context = ZoomContext(model=model, padding=0.0, min_crop_side=0, **settings)
    inputs = {"image": str(photo), "question": "Which colour?", "options": ["red", "blue"]}
    graph.invoke(inputs, config, context=context)
    return graph, config, context


def test_pauses_before_the_crop_with_the_pending_box(photo: Path) -> None:
    graph, config, context = paused_run(photo)
    snapshot = graph.get_state(config)
    assert snapshot.next == ("crop",)
    [pending] = pending_boxes(snapshot)
    assert pending.image_id == "img0" and pending.box_format == "original"
    assert pending.box == [float(v) for v in RED]
    assert pending_boxes(snapshot.values) == [pending]  # a plain state reads the same
    assert len(snapshot.values["views"]) == 1  # nothing cropped yet
    assert len(context.model.requests) == 1  # type: ignore[union-attr]


def test_the_crop_follows_the_edited_box(photo: Path) -> None:
    graph, config, context = paused_run(photo)
    replace_box(graph, config, BLUE)
    assert pending_boxes(graph.get_state(config))[0].box == [float(v) for v in BLUE]
    result = graph.invoke(None, config, context=context)
    assert result["views"][1]["box"] == list(BLUE)
    assert result["answer"] == "A"
    # refine was shown the blue region, not the red one the model asked for
    refine_request = context.model.requests[1]  # type: ignore[union-attr]
    crop = [image for message in refine_request for image in images_in(message)][-1]
    red, green, blue = crop.getpixel((crop.width // 2, crop.height // 2))  # JPEG: near blue
    assert red < 15 and green < 15 and blue > 240
    # the trace keeps the model's own box on the localize step
    assert result["steps"][0]["box"] == [0.75, 0.6, 0.875, 0.8]
    assert graph.get_state(config).next == ()


def test_an_edited_box_in_another_frame(photo: Path) -> None:
    graph, config, context = paused_run(photo)
    replace_box(graph, config, [0.0625, 0.1, 0.1875, 0.2], box_format="norm1")
    result = graph.invoke(None, config, context=context)
    assert result["views"][1]["box"] == list(BLUE)


def test_async_replace(photo: Path) -> None:
    graph, config, context = paused_run(photo)

    async def edit_and_resume() -> dict[str, Any]:
        await areplace_box(graph, config, BLUE)
        result: dict[str, Any] = await graph.ainvoke(None, config, context=context)
        return result

    assert asyncio.run(edit_and_resume())["views"][1]["box"] == list(BLUE)


def test_several_regions_edit_the_one_named(photo: Path) -> None:
    two = "Answer: B\nBounding box: [0.75, 0.6, 0.875, 0.8]\nBounding box: [0.3, 0.5, 0.4, 0.6]"
    refine = "Rechecked Answer: A\nConfidence: 0.9"
    graph, config, context = paused_run(photo, two, refine, max_regions=2)
    assert len(pending_boxes(graph.get_state(config))) == 2
    replace_box(graph, config, BLUE, index=1)
    result = graph.invoke(None, config, context=context)
    assert [view["box"] for view in result["views"][1:]] == [list(RED), list(BLUE)]


def test_every_registered_builder_takes_compile_options() -> None:
    for name, builder in GRAPHS.items():
        graph = builder(checkpointer=InMemorySaver(), interrupt_before="*", debug=False)
        assert graph.interrupt_before_nodes == "*", name


@pytest.mark.reliability(
    "Composing",
    "replace_box on a run not paused before the crop (finished, or never started)",
    "one InvalidInputError saying how to pause it; the state is not changed",
)
def test_replace_when_not_paused(photo: Path) -> None:
    graph, config, context = paused_run(photo)
    graph.invoke(None, config, context=context)
    before = graph.get_state(config)
    with pytest.raises(InvalidInputError, match="not paused before the crop"):
        replace_box(graph, config, BLUE)
    assert graph.get_state(config).config == before.config
    assert pending_boxes(before) == []
    with pytest.raises(InvalidInputError, match="not paused"):
        replace_box(graph, {"configurable": {"thread_id": "never"}}, BLUE)


@pytest.mark.reliability(
    "Composing",
    "replace_box with a NaN or infinite box, three numbers, a string, an unknown frame, or an "
    "index past the pending boxes",
    "one InvalidInputError; the paused run still holds the model's box",
)
@pytest.mark.parametrize(
    ("box", "options", "words"),
    [
        ([math.nan, 0, 10, 10], {}, "four finite numbers"),
        ([0, 0, math.inf, 10], {}, "four finite numbers"),
        ([0, 0, 10], {}, "four finite numbers"),
        ("0,0,10,10", {}, "four finite numbers"),
        ([0, 0, 10, 10], {"box_format": "xywh"}, "box_format must be one of"),
        ([0, 0, 10, 10], {"index": 1}, "out of range: the paused run has 1 pending"),
        ([0, 0, 10, 10], {"index": -1}, "out of range"),
    ],
)
def test_bad_edits_are_refused(photo: Path, box: Any, options: dict[str, Any], words: str) -> None:
    graph, config, _ = paused_run(photo)
    with pytest.raises(InvalidInputError, match=words):
        replace_box(graph, config, box, **options)
    assert pending_boxes(graph.get_state(config))[0].box == [float(v) for v in RED]


@pytest.mark.reliability(
    "Composing",
    "an edited box far outside the image (1e9 pixels) or inverted",
    "the crop is clamped to the image (or the corners put in order) and the run finishes",
)
@pytest.mark.parametrize("box", [[-1e9, -1e9, 1e9, 1e9], [1400, 800, 1200, 600]])
def test_huge_or_inverted_edit_still_crops(photo: Path, box: list[float]) -> None:
    graph, config, context = paused_run(photo)
    replace_box(graph, config, box)
    result = graph.invoke(None, config, context=context)
    x1, y1, x2, y2 = result["views"][-1]["box"]
    assert 0 <= x1 < x2 <= 1600 and 0 <= y1 < y2 <= 1000
    assert result["stop_reason"] in {"confident", "crop_failed"}
