"""Qwen2.5-VL through a real vLLM: the protocol-trained tiny Qwen2.5-VL answers boxes in pixels of
its *resized* input; for a server the graph rebuilds that frame from `model_family="qwen2_5_vl"`
and `qwen_min_pixels` / `qwen_max_pixels`, which must match the server processor's `min_pixels` /
`max_pixels` (the checkpoint's own, or vLLM's `--mm-processor-kwargs '{"max_pixels": N}'`).
Checked against the local backend, whose processor reports the size it resized to."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from servers import RunningServer, start_vllm

from zoom_refine import build_graph
from zoom_refine.agent.families import qwen_resized_size
from zoom_refine.testing import tiny_models as tm

pytestmark = pytest.mark.slow

SMALLER_MAX_PIXELS = 256 * 28 * 28
"""A `max_pixels` below the tiny checkpoint's (`tm.QWEN_MAX_PIXELS`, 400 blocks of 28x28)."""


@pytest.fixture(scope="module")
def vllm_qwen(vllm_python: Path, trained_qwen_path: Path) -> Iterator[RunningServer]:
    with start_vllm(trained_qwen_path, python=vllm_python) as server:
        yield server


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("qwen") / "scene.png"
    tm.protocol_image((1500, 900), "vllm-qwen").save(path)
    return path


def run(model: Any, image: Path, **settings: Any) -> dict[str, Any]:
    context = tm.protocol_context("qwen2_5_vl", model, zoom_again=True, **settings)
    result: dict[str, Any] = build_graph().invoke(
        tm.protocol_inputs(image), context=context, config={"recursion_limit": 10}
    )
    return result


def served(server: RunningServer, image: Path, max_pixels: int | None = None) -> dict[str, Any]:
    """The protocol through vLLM, optionally with the server's `max_pixels` overridden for these
    requests (the per-request form of `--mm-processor-kwargs`)."""
    model = ChatOpenAI(
        model=server.model_name,
        base_url=server.base_url,
        api_key="EMPTY",
        temperature=0,
        max_tokens=tm.PROTOCOL_MAX_NEW_TOKENS,
    )
    if max_pixels is not None:
        model = model.bind(extra_body={"mm_processor_kwargs": {"max_pixels": max_pixels}})  # type: ignore[assignment]
    return run(
        model,
        image,
        model_family="qwen2_5_vl",
        qwen_min_pixels=tm.QWEN_MIN_PIXELS,
        qwen_max_pixels=max_pixels or tm.QWEN_MAX_PIXELS,
    )


def local_copy(checkpoint: Path, folder: Path, max_pixels: int) -> Path:
    """A copy of the checkpoint whose processor resizes within `max_pixels`."""
    copy = Path(shutil.copytree(checkpoint, folder / f"qwen-{max_pixels}"))
    config_path = copy / "processor_config.json"
    config = json.loads(config_path.read_text())
    for processor in ("image_processor", "video_processor"):
        config[processor]["size"]["longest_edge"] = max_pixels
    config_path.write_text(json.dumps(config, indent=2))
    return copy


def test_qwen_pixel_boxes_through_vllm_match_the_local_backend(
    vllm_qwen: RunningServer, trained_qwen_path: Path, image: Path
) -> None:
    remote = served(vllm_qwen, image)
    local = run(f"hf:{trained_qwen_path}", image)

    assert [s["raw"] for s in remote["steps"]] == list(tm.PROTOCOL_REPLIES["qwen2_5_vl"])
    assert remote["initial_answer"] == "B" and remote["answer"] == "A"
    # The view is made at the resized size, so the pixel boxes land where the local run's do.
    assert [view["size"] for view in remote["views"]][:2] == [
        list(tm.QWEN_PROTOCOL_RESIZED),
        list(tm.QWEN_CROP_RESIZED),
    ]
    assert [view["box"] for view in remote["views"]] == [view["box"] for view in local["views"]]
    assert remote["steps"][0]["box"] == list(tm.QWEN_LOCALIZE_BOX)
    # vLLM counts the same image tokens as the local processor: one per 28x28 block.
    assert remote["steps"][0]["usage"]["input_tokens"] == local["steps"][0]["usage"]["input_tokens"]


def test_qwen_max_pixels_must_match_the_servers(
    vllm_qwen: RunningServer, trained_qwen_path: Path, image: Path, tmp_path: Path
) -> None:
    default = served(vllm_qwen, image)
    smaller = served(vllm_qwen, image, max_pixels=SMALLER_MAX_PIXELS)
    local = run(f"hf:{local_copy(trained_qwen_path, tmp_path, SMALLER_MAX_PIXELS)}", image)

    width, height = qwen_resized_size(
        (1500, 900), min_pixels=tm.QWEN_MIN_PIXELS, max_pixels=SMALLER_MAX_PIXELS
    )
    assert (width, height) == (560, 336) and smaller["views"][0]["size"] == [560, 336]
    # The server resized to that size: 20x12 image tokens instead of 25x15.
    fewer = (
        default["steps"][0]["usage"]["input_tokens"] - smaller["steps"][0]["usage"]["input_tokens"]
    )
    assert fewer == 25 * 15 - 20 * 12
    # The same reply now means another place; the crops follow the server's frame.
    assert [view["box"] for view in smaller["views"]] == [view["box"] for view in local["views"]]
    assert smaller["views"][1]["box"] != default["views"][1]["box"]


def test_the_pixel_budget_reaches_vllm_as_it_reaches_the_local_processor(
    vllm_qwen: RunningServer, trained_qwen_path: Path, image: Path
) -> None:
    """`qwen_max_pixels` (CLI `--max-pixels`) with `server_tile_budget="vllm"`: sent per request
    as `mm_processor_kwargs` through our own `openai:` model, given to the local processor
    in process; both then see the same view and count the same image tokens, and each step
    records the same view size and visual tokens."""
    budget = {"qwen_min_pixels": tm.QWEN_MIN_PIXELS, "qwen_max_pixels": SMALLER_MAX_PIXELS}
    remote = run(
        f"openai:{vllm_qwen.model_name}",
        image,
        base_url=vllm_qwen.base_url,
        model_family="qwen2_5_vl",
        server_tile_budget="vllm",
        **budget,
    )
    local = run(f"hf:{trained_qwen_path}", image, **budget)

    assert remote["views"][0]["size"] == local["views"][0]["size"] == [560, 336]
    assert [view["box"] for view in remote["views"]] == [view["box"] for view in local["views"]]
    costs = [
        [(s.get("view_size"), s.get("visual_tokens")) for s in r["steps"]] for r in (remote, local)
    ]
    assert costs[0] == costs[1] and costs[0][0] == ([560, 336], 20 * 12)
    tokens = [r["steps"][0]["usage"]["input_tokens"] for r in (remote, local)]
    assert tokens[0] == tokens[1]
