"""The `qwen3_vl` tool convention crops as Qwen-Agent's own `image_zoom_in_tool` does: held to
golden data recorded from a checkout of QwenLM/Qwen-Agent by `scripts/qwen_agent_golden.py`
(inputs and outputs only: 2,000 seeded boxes on images from 40 px to 8K, many under 32 px, some
past the edges, some with no area)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zoom_refine.tools.qwen_agent_zoom import MIN_PIXELS, qwen_agent_zoom, zoom_size

GOLDEN = sorted((Path(__file__).parent / "golden" / "qwen_agent").glob("*.json"))


def golden_cases() -> list[dict[str, Any]]:
    (path,) = GOLDEN
    document = json.loads(path.read_text())
    assert document["min_pixels"] == MIN_PIXELS
    cases: list[dict[str, Any]] = document["cases"]
    return cases


def cuts_no_pixels(box: list[float]) -> bool:
    """Qwen-Agent's box rounds (as Pillow rounds a crop box) to no pixels: it then shows the
    model a blank image resized from an empty crop; we refuse the call instead (the one
    difference, on purpose)."""
    left, top, right, bottom = (round(value) for value in box)
    return right <= left or bottom <= top


def test_every_golden_case_matches_qwen_agents_own_code() -> None:
    cases = golden_cases()
    assert len(cases) == 2000
    mismatches = []
    for case in cases:
        width, height = case["image"]
        x1, y1, x2, y2 = case["bbox_2d"]
        box = (x1 / 1000.0 * width, y1 / 1000.0 * height, x2 / 1000.0 * width, y2 / 1000.0 * height)
        try:
            zoom = qwen_agent_zoom(box, (width, height))
        except ValueError:
            if "error" not in case and not cuts_no_pixels(case["box"]):
                mismatches.append((case, "refused"))
            continue
        if (
            "error" in case
            or list(zoom.box) != pytest.approx(case["box"], abs=1e-9)
            or list(zoom.size) != case["size"]
        ):
            mismatches.append((case, zoom))
    assert mismatches == [], mismatches[:5]
    refused = sum("error" in case for case in cases)
    blank = sum("error" not in case and cuts_no_pixels(case["box"]) for case in cases)
    assert 0 < refused < len(cases) and blank < len(cases) // 10  # both outcomes exercised


def test_small_boxes_grow_to_32_px_and_small_crops_are_enlarged() -> None:
    zoom = qwen_agent_zoom((100.0, 100.0, 110.0, 105.0), (640, 480))
    assert zoom.crop.width >= 32 and zoom.crop.height >= 32
    assert zoom.size[0] * zoom.size[1] >= MIN_PIXELS  # 262,144 px at least
    assert zoom.size[0] % 32 == 0 and zoom.size[1] % 32 == 0


@pytest.mark.parametrize(
    "box",
    [(50.0, 50.0, 50.0, 90.0), (700.0, 10.0, 900.0, 20.0), (-80.0, -80.0, -10.0, -10.0)],
)
def test_a_box_with_no_area_in_the_image_is_refused(box: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="no area"):
        qwen_agent_zoom(box, (640, 480))  # type: ignore[arg-type]


def test_huge_crops_are_shrunk_within_the_pixel_ceiling() -> None:
    width, height = zoom_size(7680.0, 4320.0)
    assert width * height <= 12_845_056 and width % 32 == 0 and height % 32 == 0


def test_the_auto_setting_lists_every_convention() -> None:
    from typing import get_args

    from zoom_refine.agent.context import ToolConventionSetting
    from zoom_refine.agent.tool_conventions import TOOL_CONVENTIONS

    assert get_args(ToolConventionSetting) == ("auto", *TOOL_CONVENTIONS)


def agent_run(tmp_path: Path, **settings: Any) -> tuple[dict[str, Any], Any]:
    """The agent graph on a 640x480 image whose (scripted) model zooms on a 5x3 px box."""
    from dataset_fixtures import photo_like

    from zoom_refine.agent.context import ZoomContext
    from zoom_refine.graphs.agent import build_agent_graph
    from zoom_refine.testing import ScriptedVisionModel

    image = tmp_path / "scene.png"
    photo_like((640, 480), seed=7).save(image)
    args = {"bbox_2d": [500, 500, 508, 506], "label": "sign", "img_idx": 0}
    call = f"<tool_call>{json.dumps({'name': 'image_zoom_in_tool', 'arguments': args})}</tool_call>"
    model = ScriptedVisionModel(replies=[call, "Answer: sign"])
    context = ZoomContext(model=model, max_hops=2, tool_call_format="text", **settings)
    inputs = {"image": str(image), "question": "What is it?"}
    result = build_agent_graph().invoke(inputs, context=context, config={"recursion_limit": 20})
    return result, model


def test_a_qwen3_vl_model_gets_qwen_agents_tool_and_crop_by_default(tmp_path: Path) -> None:
    result, model = agent_run(tmp_path, model_family="qwen3_vl")
    expected = qwen_agent_zoom((320.0, 240.0, 325.12, 242.88), (640, 480))
    crop = result["views"][1]
    assert crop["box"] == [expected.crop.x1, expected.crop.y1, expected.crop.x2, expected.crop.y2]
    assert crop["box"][2] - crop["box"][0] >= 32  # grown to 32 px, not our 448-px minimum
    assert crop["size"] == list(expected.size)  # enlarged to at least 262,144 px, as Qwen-Agent
    assert "image_zoom_in_tool" in str(model.requests[0][0].content)  # the tool it was trained on
    first, second = result["steps"]  # each agent turn records its last view's size and tokens
    assert (first["view_size"], first["visual_tokens"]) == ([640, 480], 20 * 15)
    assert second["view_size"] == list(expected.size)


def test_other_families_keep_our_crop_tool_under_auto(tmp_path: Path) -> None:
    result, model = agent_run(tmp_path, model_family="internvl")
    assert "image_zoom_in_tool" not in str(model.requests[0][0].content)
    assert len(result["views"]) == 1  # the crop tool's calls look different: this one is refused
