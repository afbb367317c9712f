"""InternVL3.5 `-HF` (Qwen3 text backbone) through the InternVL path, in process and through vLLM.

The checkpoint is a tiny random `InternVLForConditionalGeneration` whose `text_config` is a
`Qwen3Config` (`zoom_refine.testing.tiny_internvl35`), with InternVL3's GotOcr2 processor: 448-px
tiles under a `max_patches` budget, plus a thumbnail when there are several. With a budget of 6,
a 3840x2160 image's first view is the 2x1 tile canvas, 896x448 (2 tiles + thumbnail = 3 tiles,
768 image tokens), and a 1600x1200 image's is 3x2, 1344x896 (7 tiles, 1,792 tokens). Every view
is made at that canvas, so the processor cuts it into tiles without resampling it.

Its replies are noise (no box, no answer): that is recorded, not a crash. One vLLM server for
the module (CPU build, its own venv), started with the flags our defaults and `--method agent`
need.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dataset_fixtures import photo_like
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from servers import VLLM_ZOOM_REFINE_ARGS, RunningServer, start_vllm
from typer.testing import CliRunner

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import (
    family_from_model_type,
    internvl_canvas_size,
    processor_input_size,
    visual_tokens,
)
from zoom_refine.cli import app

BUDGET = 6
"""`--max-patches`: InternVL tiles per image, thumbnail not counted."""
UHD = (3840, 2160)
UHD_CANVAS = (896, 448)
"""16:9 under 6 tiles: 2x1 (aspect 2.0) is the closest grid; 4x2 would need 8."""
SYNTH_SIDE = 1600
SYNTH_CANVAS = (1344, 896)
"""A 1600x1200 (4:3) image under 6 tiles: 3x2 (aspect 1.5)."""
TOKENS_PER_TILE = 256
METHODS = ("baseline", "zoom-refine", "agent")
HERMES_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
"""vLLM parses `<tool_call>` replies (what `--method agent` sends to a server by default)."""


def test_the_tile_canvases_these_tests_rely_on() -> None:
    """The processor's rule (transformers' own), at the budget used below and at the default 12."""
    assert internvl_canvas_size(UHD, max_patches=BUDGET) == UHD_CANVAS
    assert internvl_canvas_size((SYNTH_SIDE, SYNTH_SIDE * 3 // 4), max_patches=BUDGET) == (
        SYNTH_CANVAS
    )
    assert internvl_canvas_size(UHD, max_patches=12) == (
        1792,
        896,
    )  # what an unbudgeted server uses
    sizes = {"qwen_min_pixels": None, "qwen_max_pixels": None}
    assert processor_input_size("internvl", UHD, max_patches=BUDGET, **sizes) == UHD_CANVAS
    assert visual_tokens("internvl", UHD_CANVAS) == 3 * TOKENS_PER_TILE


# --- the checkpoint ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zoom_refine.testing.tiny_internvl35 import build_tiny_internvl35

    return build_tiny_internvl35(tmp_path_factory.mktemp("tiny-internvl35"))


@pytest.fixture(scope="module")
def uhd_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "uhd.png"
    photo_like(UHD, seed=35).save(path)
    return path


@pytest.fixture(scope="module")
def synth_tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two HR-Bench rows (`zoom-refine data synth`), 1600x1200 scenes."""
    path = tmp_path_factory.mktemp("data") / "synth.tsv"
    made = CliRunner().invoke(app, ["data", "synth", str(path), "--n", "2", "--side", "1600"])
    assert made.exit_code == 0, made.output
    return path


@pytest.mark.slow
def test_the_checkpoint_is_internvl35_hf(checkpoint: Path, tmp_path: Path) -> None:
    """The released layout: InternVL's architecture and model_type over a Qwen3 decoder (q/k
    norms, an untied output head); the family is read from the config, not the path."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from zoom_refine.testing.tiny_internvl35 import build_tiny_internvl35

    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == ["InternVLForConditionalGeneration"]
    assert (config["model_type"], config["text_config"]["model_type"]) == ("internvl", "qwen3")
    assert family_from_model_type(config["model_type"]) == "internvl"

    model: Any = AutoModelForImageTextToText.from_pretrained(checkpoint)
    decoder = model.model.language_model
    assert type(decoder).__name__ == "Qwen3Model"
    assert hasattr(decoder.layers[0].self_attn, "q_norm")  # Qwen3's, absent from Qwen2
    assert model.lm_head.weight.data_ptr() != decoder.embed_tokens.weight.data_ptr()
    processor: Any = AutoProcessor.from_pretrained(checkpoint)  # type: ignore[no-untyped-call]
    image_processor = processor.image_processor
    assert type(image_processor).__name__.startswith("GotOcr2ImageProcessor")
    assert (image_processor.size.height, image_processor.crop_to_patches) == (448, True)

    again = build_tiny_internvl35(tmp_path / "again")  # seeded: the same weights every build
    weights = "model.safetensors"
    assert (again / weights).read_bytes() == (checkpoint / weights).read_bytes()


# --- in process ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_first_view_is_the_tile_canvas_the_processor_keeps(
    checkpoint: Path, uhd_png: Path
) -> None:
    """The view is made at 896x448, and the processor cuts that image into tiles as it is: its
    two tiles are the view's own pixels (normalized), not a resampling of them."""
    import numpy as np

    from zoom_refine.agent.first_look import first_look
    from zoom_refine.agent.local.model import LocalVisionChatModel
    from zoom_refine.tools.encoding import decode_block_image

    model = LocalVisionChatModel(model_path=str(checkpoint), max_patches=BUDGET, max_new_tokens=2)
    backend = model.load()
    assert model.input_size(UHD) == UHD_CANVAS
    look = first_look(uhd_png, ZoomContext(model=model, max_patches=BUDGET, max_new_tokens=2))
    assert look.view.shown_size == UHD_CANVAS
    view = decode_block_image(look.image_block["base64"])
    assert view.size == UHD_CANVAS

    processor = backend.processor.image_processor
    tiles = processor(images=view, max_patches=BUDGET, return_tensors="np")["pixel_values"]
    assert tiles.shape == (3, 3, 448, 448)  # 2 tiles + thumbnail
    pixels = np.asarray(view, dtype=np.float32) / 255.0
    mean, std = np.array(processor.image_mean), np.array(processor.image_std)
    for column in range(2):
        own = (pixels[:, column * 448 : (column + 1) * 448] - mean) / std
        np.testing.assert_allclose(tiles[column], own.transpose(2, 0, 1), atol=1e-5)

    reply = model.invoke([HumanMessage(content=[look.image_block, "Where?"])])
    assert reply.response_metadata["vision_tiles"] == 3


@pytest.mark.slow
def test_ask_shows_the_tile_canvas(checkpoint: Path, tmp_path: Path) -> None:
    """`zoom-refine ask --model hf:DIR --max-patches 6`: a random reply has no box, which is
    recorded; the first step encodes the view's 2 tiles and its thumbnail (an image of its own:
    one this process has already encoded would come from the prefix cache, 0 tiles)."""
    image = tmp_path / "ask.png"
    photo_like(UHD, seed=36).save(image)
    question = "What is written on the sign?"
    args = ["ask", str(image), question, "--model", f"hf:{checkpoint}"]
    result = CliRunner().invoke(app, [*args, "--max-patches", str(BUDGET), "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["views"][0]["size"] == list(UHD_CANVAS)
    first = state["steps"][0]
    assert first["view_size"] == list(UHD_CANVAS)
    assert first["visual_tokens"] == 3 * TOKENS_PER_TILE
    assert first["usage"]["vision_tiles"] == 3
    assert first["box"] is None and first["note"].startswith("no box")
    assert first["usage"]["input_tokens"] > 3 * TOKENS_PER_TILE + len(question)


def run_eval(
    data: Path, out: Path, model_args: Sequence[str], methods: Sequence[str] = METHODS
) -> list[dict[str, Any]]:
    """`zoom-refine eval hr-bench` with `methods` at a budget of 6 tiles; its records."""
    args = ["eval", "hr-bench", "--data", str(data), *model_args]
    args += ["--max-patches", str(BUDGET), "--method", ",".join(methods), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def first_prompts(records: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Prompt tokens of each record's first model call, by (sample id, method)."""
    return {(r["id"], r["method"]): r["steps"][0]["usage"]["input_tokens"] for r in records}


def check_records(records: list[dict[str, Any]]) -> None:
    """Every (sample, method) ran to an ok record whose first view is the tile canvas."""
    assert sorted((r["id"], r["method"]) for r in records) == sorted(
        (sample, method) for sample in ("0", "1") for method in METHODS
    )
    for record in records:
        assert record["status"] == "ok", record.get("error")
        assert record["views"][0]["size"] == list(SYNTH_CANVAS)
        assert record["steps"] and record["usage"]["input_tokens"] > 0
        if record["method"] == "zoom-refine" and record["steps"][0]["box"] is None:
            assert record["stop_reason"] == "no_box" and len(record["steps"]) == 1


@pytest.fixture(scope="module")
def local_records(
    checkpoint: Path, synth_tsv: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("eval") / "local"
    return run_eval(synth_tsv, out, ["--model", f"hf:{checkpoint}"])


@pytest.mark.slow
def test_eval_runs_the_three_methods_in_process(local_records: list[dict[str, Any]]) -> None:
    check_records(local_records)
    for record in local_records:
        assert record["usage"]["vision_tiles"] in (0, 7)  # 6 tiles + thumbnail, or reused
    first = [r["steps"][0] for r in local_records if r["method"] != "agent"]
    assert all(s["visual_tokens"] == 7 * TOKENS_PER_TILE for s in first)


# --- through vLLM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_internvl35(vllm_python: Path, checkpoint: Path) -> Iterator[RunningServer]:
    """vLLM serving the checkpoint: its `InternVLForConditionalGeneration` (the `interns1`
    model) builds the text model from `text_config` (model_type qwen3 → `Qwen3ForCausalLM`)."""
    args = (*VLLM_ZOOM_REFINE_ARGS, *HERMES_ARGS)
    with start_vllm(checkpoint, python=vllm_python, extra_args=args) as server:
        yield server


def conversation(image: Path) -> list[BaseMessage]:
    """A localize turn on the image's first view, a reply with a box, and a refine turn on a
    crop: each image made at its tile canvas under the budget (896x448: 3 tiles; 896x896:
    2x2 + thumbnail = 5)."""
    from PIL import Image

    from zoom_refine.tools.encoding import image_content_block

    original = Image.open(image).convert("RGB")
    view = original.resize(UHD_CANVAS, Image.Resampling.BICUBIC)
    crop = original.crop((1920, 540, 2880, 1500)).resize((896, 896), Image.Resampling.BICUBIC)
    return [
        HumanMessage(content=[image_content_block(view), {"type": "text", "text": "Where?"}]),
        AIMessage(content="Answer: B\nBounding box: [0.5, 0.25, 0.75, 0.7]"),
        HumanMessage(content=[image_content_block(crop), {"type": "text", "text": "Recheck."}]),
    ]


def vllm_prompt_ids(
    server: RunningServer, messages: Sequence[BaseMessage], budget: int
) -> list[int]:
    """The prompt vLLM builds for the request our `openai:` model sends with the tile budget
    `budget` (`server_tile_budget="vllm"`: `mm_processor_kwargs`)."""
    from zoom_refine.graphs.calls import resolve_model

    context = ZoomContext(
        model=f"openai:{server.model_name}",
        base_url=server.base_url,
        max_patches=budget,
        server_tile_budget="vllm",
    )
    chat: Any = resolve_model(context)
    payload = chat._get_request_payload(list(messages))  # exactly what it would POST
    payload["max_completion_tokens"] = 1
    payload["extra_body"] = {**(payload.get("extra_body") or {}), "return_token_ids": True}
    response = chat.root_client.chat.completions.create(**payload)
    return [int(token) for token in response.model_extra["prompt_token_ids"]]


@pytest.mark.slow
@pytest.mark.parametrize(("budget", "tiles"), [(BUDGET, 3 + 5), (1, 1 + 1)])
def test_one_conversation_gives_the_same_prompt_in_process_and_through_vllm(
    vllm_internvl35: RunningServer, checkpoint: Path, uhd_png: Path, budget: int, tiles: int
) -> None:
    """The same token ids, image tokens included: at 6 tiles the images are at their canvases
    and tiled as they are; at 1 tile (each image squeezed to one 448-px tile) the budget is
    seen to reach vLLM, whose own default of 12 would give 3 + 5."""
    from zoom_refine.agent.local.model import LocalVisionChatModel

    messages = conversation(uhd_png)
    local = LocalVisionChatModel(model_path=str(checkpoint), max_patches=budget)
    local_ids = [int(t) for t in local.prompt_inputs(messages)["input_ids"][0].tolist()]
    assert vllm_prompt_ids(vllm_internvl35, messages, budget) == local_ids
    image_token = local.load().model.config.image_token_id
    assert local_ids.count(image_token) == tiles * TOKENS_PER_TILE


def served_args(server: RunningServer) -> list[str]:
    """`eval`'s model options for the server, with InternVL's conventions and the tile budget
    sent per request."""
    return [
        *("--model", f"openai:{server.model_name}", "--base-url", server.base_url),
        *("--model-family", "internvl", "--server-tile-budget", "vllm"),
    ]


@pytest.mark.slow
def test_eval_runs_the_three_methods_through_vllm(
    vllm_internvl35: RunningServer,
    synth_tsv: Path,
    local_records: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """`--model openai:NAME --model-family internvl --server-tile-budget vllm`: ok records, the
    same views, and the same first prompts as in process where both render the same turns."""
    records = run_eval(synth_tsv, tmp_path / "served", served_args(vllm_internvl35))
    check_records(records)
    remote, local = first_prompts(records), first_prompts(local_records)
    for key in remote:
        if key[1] != "agent":  # the agent's tools reach the model differently (next test)
            assert remote[key] == local[key], key


@pytest.mark.slow
def test_the_agent_prompt_through_vllm_is_the_in_process_one(
    vllm_internvl35: RunningServer,
    synth_tsv: Path,
    local_records: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """InternVL's template has no tools section, so the agent writes the tool into the system
    turn itself (`tool_prompt` "ours") in process and, by default (`--tool-call-format auto`),
    for a server named `--model-family internvl` too (sent the OpenAI way, vLLM would drop the
    tools: 2,194 tokens instead of 3,380); vLLM then builds a prompt of the same length."""
    args = served_args(vllm_internvl35)
    assert "--tool-call-format" not in args and "internvl" in args
    records = run_eval(synth_tsv, tmp_path / "served-text", args, methods=["agent"])
    assert all(r["status"] == "ok" for r in records) and len(records) == 2
    local = first_prompts(local_records)
    assert {key: local[key] for key in first_prompts(records)} == first_prompts(records)
    steps = [r["steps"][0] for r in [*records, *local_records] if r["method"] == "agent"]
    assert {step["tool_prompt"] for step in steps} == {"ours"}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_ask_gives_the_same_first_step_in_process_and_through_vllm(
    method: str, vllm_internvl35: RunningServer, checkpoint: Path, tmp_path: Path
) -> None:
    """`zoom-refine ask --method M` both ways: the first view is the tile canvas, and the first
    call costs the same visual and prompt tokens (the random replies after it may differ)."""
    image = tmp_path / "ask.png"
    photo_like(UHD, seed=37).save(image)
    args = ["ask", str(image), "What is written on the sign?", "--method", method, "--json"]
    args += ["--max-patches", str(BUDGET)]
    firsts = []
    for model_args in (["--model", f"hf:{checkpoint}"], served_args(vllm_internvl35)):
        result = CliRunner().invoke(app, [*args, *model_args])
        assert result.exit_code == 0, result.output
        state = json.loads(result.stdout)
        assert state["views"][0]["size"] == list(UHD_CANVAS)
        first = state["steps"][0]
        firsts.append((first["view_size"], first["visual_tokens"], first["usage"]["input_tokens"]))
    assert firsts[0] == firsts[1]
    assert firsts[0][:2] == (list(UHD_CANVAS), 3 * TOKENS_PER_TILE)
