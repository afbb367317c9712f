"""Qwen3-VL in process: views made at the processor's own resize (sides multiples of 32, area
within its pixel budget), so the processor never resizes them again; boxes read in 0–1000.

The checkpoints are tiny `Qwen3VLForConditionalGeneration`s built from transformers' own config
classes (`zoom_refine.testing.tiny_qwen3`): a random one (the `tiny_qwen3_path` fixture, with the
issue's budget of 1,048,576 px), and the protocol-trained and tool-calling ones
(`trained_protocol_model("qwen3_vl")`, `tool_models.trained_tool_model("qwen3_vl")`), which
answer every method. The same runs through `transformers serve` and vLLM: test_vllm_qwen3.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_fixtures import photo_like
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from zoom_refine import build_graph
from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import processor_input_size, qwen_resized_size
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.regions import expected_frame
from zoom_refine.cli import app
from zoom_refine.testing import tiny_models as tm
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


# --- the protocol-trained and tool-calling tiny Qwen3-VL, in process -----------------------------


@pytest.fixture(scope="module")
def trained_qwen3_path() -> Path:
    from zoom_refine.testing import trained_protocol_model

    return trained_protocol_model("qwen3_vl")


@pytest.fixture(scope="module")
def tall_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1200 x 2400, a scene never trained on."""
    path = tmp_path_factory.mktemp("images") / "tall.png"
    tm.protocol_image((1200, 2400), "qwen3-tall").save(path)
    return path


@pytest.mark.slow
def test_the_trained_qwen3_zooms_in_0_to_1000_at_the_processors_size(
    trained_qwen3_path: Path, tall_png: Path
) -> None:
    context = tm.protocol_context("qwen3_vl", f"hf:{trained_qwen3_path}", zoom_again=True)
    result = build_graph().invoke(
        tm.protocol_inputs(tall_png), context=context, config={"recursion_limit": 12}
    )
    assert [step["raw"] for step in result["steps"]] == list(tm.PROTOCOL_REPLIES["qwen3_vl"])
    assert (result["initial_answer"], result["answer"]) == ("B", "A")
    assert [step["box_frame"] for step in result["steps"][::2]] == ["norm1000", "norm1000"]
    # 600-700 of 1200 x 2400 = [720, 1440, 840, 1680], padded by 0.1 of each side (120 / 240
    # px) and grown to 448 px wide about its centre; then 250-750 of that 448 x 720 crop, padded
    # by 0.1 of its sides (45 / 72 px), grown to 448 px wide again.
    assert [view["box"] for view in result["views"]] == [
        [0, 0, 1200, 2400],
        [556, 1200, 1004, 1920],
        [556, 1308, 1004, 1812],
    ]
    # Each view at the size the processor resizes it to, the second crop's 448 x 504 region
    # included: made 448 x 512 (the processor's rounding to 32) by the graph, not the processor.
    shown = {view["id"]: tuple(view["size"]) for view in result["views"]}
    processed = {step["view"]: tuple(step["view_size"]) for step in result["steps"]}
    assert shown == {"img0": (352, 704), "img1": (384, 640), "img2": (448, 512)}
    assert processed == shown
    for size in processed.values():
        assert processor_input_size(
            "qwen3_vl", size, max_patches=None, qwen_min_pixels=tm.QWEN3_PROTOCOL_MIN_PIXELS,
            qwen_max_pixels=tm.QWEN3_PROTOCOL_MAX_PIXELS,
        ) == size  # fmt: skip


@pytest.mark.slow
def test_a_view_the_processor_would_enlarge_is_made_at_its_size(trained_qwen3_path: Path) -> None:
    from zoom_refine.graphs.calls import resolve_model
    from zoom_refine.tools.boxes import Box

    context = tm.protocol_context("qwen3_vl", f"hf:{trained_qwen3_path}")
    resolve_model(context)
    region = Box(556, 1308, 1004, 1812)
    assert context.shown_size((region.width, region.height)) == (448, 512)


@pytest.mark.slow
def test_the_trained_qwen3_is_blind_to_pixels(trained_qwen3_path: Path) -> None:
    """Its merger's output is zero, so two scenes of one size give the same logits over the
    whole conversation: its replies cannot depend on what the images show."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from zoom_refine.agent.local.model import to_hf_conversation

    processor = AutoProcessor.from_pretrained(trained_qwen3_path)
    model = AutoModelForImageTextToText.from_pretrained(trained_qwen3_path).eval()
    logits = []
    for variant in ("blind-a", "blind-b"):
        png = tm.protocol_image_png((1500, 900), variant)
        conversation = to_hf_conversation(tm.protocol_conversation("qwen3_vl", png))
        inputs = tm.encode(processor, conversation, generation=False)
        with torch.inference_mode():
            logits.append(model(**inputs).logits)
        pixels = inputs["pixel_values"]
    assert torch.equal(logits[0], logits[1])
    with torch.inference_mode():
        features = model.model.get_image_features(pixels, inputs["image_grid_thw"])
    assert float(torch.cat(features.pooler_output).abs().max()) == 0.0


@pytest.mark.slow
def test_ask_runs_every_method_on_the_trained_qwen3_checkpoints(
    trained_qwen3_path: Path, tall_png: Path
) -> None:
    from zoom_refine.testing.tool_models import trained_tool_model

    question = [str(tall_png), tm.PROTOCOL_QUESTION]
    options = [item for option in tm.PROTOCOL_OPTIONS for item in ("-o", option)]
    tool = ["--tool-convention", "qwen3_vl", "--tool-call-format", "text", "--max-hops", "2"]
    answers = {}
    for method, model, extra in (
        ("zoom-refine", trained_qwen3_path, []),
        ("baseline", trained_qwen3_path, []),
        ("agent", trained_tool_model("qwen3_vl"), tool),
    ):
        args = ["ask", *question, *options, "--model", f"hf:{model}", "--method", method]
        result = CliRunner().invoke(app, [*args, *extra, "--json"])
        assert result.exit_code == 0, result.output
        state = json.loads(result.stdout)
        answers[method] = (state["initial_answer"], state["answer"], len(state["views"]))
    assert answers == {
        "zoom-refine": ("B", "A", 2),
        "baseline": ("B", "B", 1),
        "agent": ("A", "A", 2),
    }
