"""Qwen3-VL in process: views made at the processor's own resize (sides multiples of 32, area
within its pixel budget), so the processor never resizes them again; boxes read in 0–1000.

The checkpoint is a tiny random `Qwen3VLForConditionalGeneration` built from transformers' own
config classes (`zoom_refine.testing.tiny_qwen3`, the `tiny_qwen3_path` fixture), with the
issue's budget of 1,048,576 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_fixtures import photo_like
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import processor_input_size, qwen_resized_size
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.regions import expected_frame
from zoom_refine.cli import app
from zoom_refine.testing.tiny_qwen3 import QWEN3_MAX_PIXELS, QWEN3_MIN_PIXELS
from zoom_refine.tools.crop_tool import make_crop
from zoom_refine.tools.encoding import image_content_block
from zoom_refine.tools.images import load_image


@pytest.fixture(scope="module")
def uhd_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "uhd.png"
    photo_like((3840, 2160), seed=25).save(path)
    return path


def test_qwen3_sizes_are_multiples_of_32_within_the_pixel_budget() -> None:
    size = processor_input_size(
        "qwen3_vl",
        (3840, 2160),
        max_patches=None,
        qwen_min_pixels=QWEN3_MIN_PIXELS,
        qwen_max_pixels=QWEN3_MAX_PIXELS,
    )
    assert size == (1344, 768)  # not Qwen2.5-VL's 28-px grid, not the 2048x1152 fit-the-side view
    width, height = size
    assert width * height <= QWEN3_MAX_PIXELS
    assert qwen_resized_size(size, min_pixels=3136, max_pixels=12_845_056, factor=28) != size


@pytest.mark.slow
def test_the_first_view_is_the_processors_own_size(tiny_qwen3_path: Path, uhd_png: Path) -> None:
    model = LocalVisionChatModel(model_path=str(tiny_qwen3_path))
    model.load()  # as `graphs.calls.resolve_model` does before any view is made
    assert model.family == "qwen3_vl"
    assert model.input_size((3840, 2160)) == (1344, 768)
    look = first_look(uhd_png, ZoomContext(model=model, max_new_tokens=2))
    assert look.view.shown_size == (1344, 768)
    reply = model.invoke([HumanMessage(content=[look.image_block, "Where?"])])
    assert reply.response_metadata["image_sizes"] == [[1344, 768]]  # used as sent


@pytest.mark.slow
def test_a_crop_is_made_at_its_own_size_and_kept(tiny_qwen3_path: Path, uhd_png: Path) -> None:
    model = LocalVisionChatModel(model_path=str(tiny_qwen3_path))
    model.load()
    context = ZoomContext(model=model, max_new_tokens=2)
    look = first_look(uhd_png, context)
    original = load_image(uhd_png).image
    crop = make_crop(
        original, [look.view.to_record()], "img0", [100, 200, 370, 610], "norm1000", context
    )
    width, height = crop.view.shown_size
    assert (width % 32, height % 32) == (0, 0) and crop.image.size == (width, height)
    block = image_content_block(crop.image, "png")
    reply = model.invoke([HumanMessage(content=[block, "What?"])])
    assert reply.response_metadata["image_sizes"] == [[width, height]]


def test_qwen3_boxes_are_read_in_0_to_1000() -> None:
    assert expected_frame("qwen3_vl", asks_norm1000=False) == "norm1000"


@pytest.mark.slow
def test_ask_runs_a_qwen3_vl_checkpoint(tiny_qwen3_path: Path, uhd_png: Path) -> None:
    """Through `zoom-refine ask --model hf:DIR`: the random model's reply has no box, which is
    recorded, not a crash; the first view is the processor's own size."""
    args = ["ask", str(uhd_png), "What is written on the sign?", "--model", f"hf:{tiny_qwen3_path}"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["views"][0]["size"] == [1344, 768]
