"""Model families: which box frame to expect, and Qwen2.5-VL's resize."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import family_from_model_type, qwen_resized_size
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.regions import expected_frame
from zoom_refine.graphs.calls import resolve_family
from zoom_refine.testing import ScriptedVisionModel


@pytest.mark.parametrize(
    ("model_type", "family"),
    [
        ("internvl", "internvl"),
        ("qwen2_5_vl", "qwen2_5_vl"),
        ("qwen3_vl", "qwen3_vl"),
        ("qwen3_vl_moe", "qwen3_vl"),
        ("llava", "other"),
        (None, "other"),
    ],
)
def test_family_from_config_model_type(model_type: str | None, family: str) -> None:
    assert family_from_model_type(model_type) == family


@pytest.mark.parametrize(
    ("family", "asks_norm1000", "frame"),
    [
        ("internvl", False, "norm1"),  # the paper prompt: 0–1
        ("internvl", True, "norm1000"),  # InternVL's native <box> prompt
        ("qwen2_5_vl", False, "pixel"),  # answers in its own pixels whatever we ask
        ("qwen3_vl", False, "norm1000"),
        ("other", False, "norm1"),
    ],
)
def test_expected_frame(family: str, asks_norm1000: bool, frame: str) -> None:
    assert expected_frame(family, asks_norm1000) == frame  # type: ignore[arg-type]


def test_qwen_resize_matches_the_processor_rule() -> None:
    # Multiples of 28, aspect kept: 2048×1536 → 2044×1540 (under max_pixels).
    assert qwen_resized_size((2048, 1536), min_pixels=3136, max_pixels=12_845_056) == (2044, 1540)
    # Over max_pixels (1280 × 28²): scaled down, floored to multiples of 28.
    width, height = qwen_resized_size((3840, 2160), min_pixels=3136, max_pixels=1280 * 28 * 28)
    assert width % 28 == 0 and height % 28 == 0 and width * height <= 1280 * 28 * 28
    assert abs(width / height - 3840 / 2160) < 0.03


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "family"), [("tiny_qwen_path", "qwen2_5_vl"), ("tiny_internvl_path", "internvl")]
)
def test_resolve_family_reads_a_local_models_config(
    fixture: str, family: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The family comes from the checkpoint's own config.json (read by transformers), not from
    the folder's name: the checkpoint is copied to a folder whose name says nothing."""
    checkpoint = shutil.copytree(request.getfixturevalue(fixture), tmp_path / "checkpoint")
    model = LocalVisionChatModel(model_path=str(checkpoint))
    assert model.family == family
    assert resolve_family(ZoomContext(), model) == family
    assert resolve_family(ZoomContext(model_family="qwen3_vl"), model) == "qwen3_vl"


def test_resolve_family_of_any_other_model_is_other() -> None:
    model = ScriptedVisionModel(replies=[])
    assert resolve_family(ZoomContext(), model) == "other"
    assert resolve_family(ZoomContext(model_family="qwen3_vl"), model) == "qwen3_vl"
