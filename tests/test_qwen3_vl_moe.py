"""Qwen3-VL-MoE (`qwen3_vl_moe`, as Qwen3-VL-30B-A3B) through the Qwen3-VL path, in process and
through vLLM.

The checkpoint is a tiny random `Qwen3VLMoeForConditionalGeneration`
(`zoom_refine.testing.tiny_qwen3_moe`): Qwen3-VL's processor (32-px sides, a pixel budget of
65,536..1,048,576 px) over a 4-expert decoder, its experts saved in the released layout, which
both transformers and vLLM read. The family is read from the checkpoint as `qwen3_vl`: boxes in
0–1000, Qwen-Agent's zoom tool for the agent, every view at the processor's own size. Its replies
are noise (no box, no answer): recorded, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dataset_fixtures import photo_like
from servers import VLLM_ZOOM_REFINE_ARGS, RunningServer, start_vllm
from typer.testing import CliRunner

from zoom_refine.agent.families import qwen_resized_size
from zoom_refine.cli import app
from zoom_refine.testing.tiny_qwen3 import QWEN3_MAX_PIXELS, QWEN3_MIN_PIXELS

pytestmark = pytest.mark.slow

UHD = (3840, 2160)
UHD_VIEW = (1344, 768)
"""3840x2160 within 1,048,576 px at multiples of 32: 42 x 24 merged patches, 1,008 tokens."""
METHODS = ("baseline", "zoom-refine", "agent")
HERMES_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
"""vLLM parses `<tool_call>` replies (what `--method agent` sends to a server by default)."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zoom_refine.testing.tiny_qwen3_moe import build_tiny_qwen3_vl_moe

    return build_tiny_qwen3_vl_moe(tmp_path_factory.mktemp("tiny-qwen3-moe"))


@pytest.fixture(scope="module")
def uhd_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "uhd.png"
    photo_like(UHD, seed=30).save(path)
    return path


def test_the_checkpoint_is_qwen3_vl_moe_in_the_released_layout(checkpoint: Path) -> None:
    """model_type `qwen3_vl_moe`; fused experts saved [experts, hidden, 2 x intermediate] and
    [experts, intermediate, hidden] (the released layout), which transformers reads back as the
    weights the model was built with."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from zoom_refine.testing.tiny_qwen3_moe import build_tiny_qwen3_vl_moe_model

    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl_moe"
    saved = load_file(checkpoint / "model.safetensors")
    prefix = "model.language_model.layers.0.mlp.experts."
    assert tuple(saved[prefix + "gate_up_proj"].shape) == (4, 64, 32)
    assert tuple(saved[prefix + "down_proj"].shape) == (4, 16, 64)
    loaded = AutoModelForImageTextToText.from_pretrained(checkpoint)
    built = build_tiny_qwen3_vl_moe_model(AutoTokenizer.from_pretrained(checkpoint))
    experts = loaded.model.language_model.layers[0].mlp.experts
    again = built.model.language_model.layers[0].mlp.experts
    assert torch.equal(experts.gate_up_proj, again.gate_up_proj)
    assert torch.equal(experts.down_proj, again.down_proj)


def ask(image: Path, method: str, model_args: list[str]) -> dict[str, Any]:
    """`zoom-refine ask IMAGE QUESTION -o … --method M --json` with `model_args`: the state."""
    args = ["ask", str(image), "Which colour is the sign?", "-o", "red", "-o", "blue"]
    result = CliRunner().invoke(app, [*args, "--method", method, "--json", *model_args])
    assert result.exit_code == 0, result.output
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def first_step(state: dict[str, Any]) -> tuple[Any, ...]:
    """The first call's view size, visual tokens and prompt tokens."""
    step = state["steps"][0]
    return step["view_size"], step["visual_tokens"], step["usage"]["input_tokens"]


@pytest.fixture(scope="module")
def local_states(checkpoint: Path, uhd_png: Path) -> dict[str, dict[str, Any]]:
    return {method: ask(uhd_png, method, ["--model", f"hf:{checkpoint}"]) for method in METHODS}


def test_ask_runs_the_three_methods_in_process(local_states: dict[str, dict[str, Any]]) -> None:
    """The first view is made at the processor's size (which it keeps), the family is Qwen3-VL
    (0–1000 boxes; Qwen-Agent's tool for the agent), and the noise replies are recorded."""
    kept = qwen_resized_size(
        UHD_VIEW, min_pixels=QWEN3_MIN_PIXELS, max_pixels=QWEN3_MAX_PIXELS, factor=32
    )
    assert kept == UHD_VIEW
    for method, state in local_states.items():
        assert state["views"][0]["size"] == list(UHD_VIEW), method
        size, tokens, prompt = first_step(state)
        assert size == list(UHD_VIEW) and tokens == 42 * 24 and prompt > tokens
    first = local_states["zoom-refine"]["steps"][0]
    assert first["box"] is None and first["note"].startswith("no box")


def test_the_family_is_qwen3_vl(checkpoint: Path) -> None:
    """Read from the loaded checkpoint: Qwen3-VL's boxes (0–1000) and Qwen-Agent's zoom tool."""
    from zoom_refine.agent.context import ZoomContext
    from zoom_refine.agent.regions import expected_frame
    from zoom_refine.graphs.calls import resolve_model

    context = ZoomContext(model=f"hf:{checkpoint}")
    model = resolve_model(context)
    assert context.resolved_family(model) == "qwen3_vl"
    assert context.resolved_convention(model) == "qwen3_vl"
    assert expected_frame(context.resolved_family(model), asks_norm1000=False) == "norm1000"


@pytest.fixture(scope="module")
def vllm_moe(vllm_python: Path, checkpoint: Path) -> Iterator[RunningServer]:
    """vLLM's `Qwen3VLMoeForConditionalGeneration` on CPU, reading the released expert layout."""
    args = (*VLLM_ZOOM_REFINE_ARGS, *HERMES_ARGS)
    with start_vllm(checkpoint, python=vllm_python, extra_args=args) as server:
        yield server


def test_ask_through_vllm_sends_the_same_first_prompt(
    vllm_moe: RunningServer, uhd_png: Path, local_states: dict[str, dict[str, Any]]
) -> None:
    """`--model openai:NAME --model-family qwen3_vl` with the checkpoint's budget: each method's
    first view and its visual and prompt tokens as in process. The tiny chat template has no
    tools section (the released Qwen3-VL one has), so in process the agent writes the tool into
    the system turn (`tool_prompt` "ours"), and a server must be told to do the same
    (`--tool-call-format text`): sent the OpenAI way, vLLM renders this template without the
    tools, 1,331 prompt tokens instead of 2,325."""
    served = ["--model", f"openai:{vllm_moe.model_name}", "--base-url", vllm_moe.base_url]
    served += ["--model-family", "qwen3_vl", "--server-tile-budget", "vllm"]
    served += ["--min-pixels", str(QWEN3_MIN_PIXELS), "--max-pixels", str(QWEN3_MAX_PIXELS)]
    assert local_states["agent"]["steps"][0]["tool_prompt"] == "ours"
    for method in METHODS:
        text_calls = ["--tool-call-format", "text"] if method == "agent" else []
        remote = ask(uhd_png, method, [*served, *text_calls])
        assert remote["views"][0] == local_states[method]["views"][0], method
        assert first_step(remote) == first_step(local_states[method]), method
