"""`always_zoom`: zoom again after every refine until max_hops, whatever the confidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.testing import ScriptedVisionModel

SURE = "Rechecked Answer: A\nConfidence: 0.95"
REPLIES = [
    "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
    SURE,
    "Answer: A\nBounding box: [0.2, 0.2, 0.8, 0.8]",
    "Rechecked Answer: C\nConfidence: 0.99",
]


def _run(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    image = tmp_path / "scene.png"
    Image.new("RGB", (800, 600), "grey").save(image)
    context = ZoomContext(model=ScriptedVisionModel(replies=list(REPLIES)), **settings)
    inputs = {"image": str(image), "question": "Colour?", "options": ["a", "b", "c", "d"]}
    result: dict[str, Any] = build_graph().invoke(
        inputs, context=context, config={"recursion_limit": context.recursion_limit}
    )
    return result


def test_a_confident_refine_stops_by_default(tmp_path: Path) -> None:
    result = _run(tmp_path, max_hops=2)
    assert result["stop_reason"] == "confident" and result["answer"] == "A"
    assert [step["node"] for step in result["steps"]] == ["localize", "refine"]


def test_always_zoom_runs_every_hop_whatever_the_confidence(tmp_path: Path) -> None:
    result = _run(tmp_path, max_hops=2, always_zoom=True)
    assert result["stop_reason"] == "max_hops" and result["answer"] == "C"
    assert [step["node"] for step in result["steps"]] == ["localize", "refine"] * 2
    assert [step["confidence"] for step in result["steps"] if step["node"] == "refine"] == [
        pytest.approx(0.95),
        pytest.approx(0.99),
    ]


def test_always_zoom_changes_results_so_resumes_compare_it() -> None:
    from zoom_refine.evals.run_config import RESULT_NEUTRAL_SETTINGS

    assert "always_zoom" not in RESULT_NEUTRAL_SETTINGS
    assert ZoomContext(always_zoom=True).stop_reason(0.99, 1) == "max_hops"
    assert ZoomContext(always_zoom=True, max_hops=3).stop_reason(0.99, 2) is None
