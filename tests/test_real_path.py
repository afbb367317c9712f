"""The whole protocol through real backends with the protocol-trained tiny InternVL3:
prefix reuse and micro-batching change the cost, never the answers; `transformers serve` runs
every node, zoom-again included."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from servers import serve_model, served_model_name

from zoom_refine import build_graph
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.testing import tiny_models as tm

pytestmark = pytest.mark.slow


@pytest.fixture
def model_dir(trained_internvl_path: Path, tmp_path: Path) -> Path:
    """A private copy: its own backend and prefix cache in this process."""
    return Path(shutil.copytree(trained_internvl_path, tmp_path / "model"))


def scene(tmp_path: Path, size: tuple[int, int], seed: str) -> Path:
    path = tmp_path / f"{seed}.png"
    tm.protocol_image(size, seed).save(path)
    return path


def run(model: Any, image: Path, **settings: Any) -> dict[str, Any]:
    context = tm.protocol_context("internvl3", model, zoom_again=True, **settings)
    result: dict[str, Any] = build_graph().invoke(
        tm.protocol_inputs(image),
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )
    return result


def local_model(path: Path, **options: Any) -> LocalVisionChatModel:
    return LocalVisionChatModel(
        model_path=str(path),
        max_patches=tm.PROTOCOL_MAX_PATCHES,
        max_new_tokens=tm.PROTOCOL_MAX_NEW_TOKENS,
        **options,
    )


def test_prefix_reuse_gives_the_same_run_for_less_work(model_dir: Path, tmp_path: Path) -> None:
    image = scene(tmp_path, (3000, 2000), "reuse")
    reused = run(local_model(model_dir, reuse_prefix=True), image)
    full = run(local_model(model_dir, reuse_prefix=False), image)

    assert [s["raw"] for s in reused["steps"]] == [s["raw"] for s in full["steps"]]
    assert [s["raw"] for s in reused["steps"]] == list(tm.PROTOCOL_REPLIES["internvl3"])
    assert reused["views"] == full["views"]
    # Four calls each way; with reuse the first image is encoded once, not four times.
    tiles_reused = [s["usage"]["vision_tiles"] for s in reused["steps"]]
    tiles_full = [s["usage"]["vision_tiles"] for s in full["steps"]]
    view_tiles = tiles_full[0]
    assert tiles_reused[0] == view_tiles and tiles_reused[2] == 0  # zoom-again: text only
    assert tiles_full[2] == tiles_full[1]  # official-style: everything again
    assert sum(tiles_reused) < sum(tiles_full)
    assert reused["usage"]["cached_tokens"] > 0 and full["usage"].get("cached_tokens", 0) == 0
    assert reused["usage"]["prefilled_tokens"] < 0.5 * full["usage"]["prefilled_tokens"]


def test_micro_batched_graph_runs_equal_sequential_runs(model_dir: Path, tmp_path: Path) -> None:
    images = [
        scene(tmp_path, size, f"batch-{i}")
        for i, size in enumerate([(3000, 2000), (1600, 1600), (2400, 1000), (1280, 960)])
    ]
    sequential = [run(local_model(model_dir), image) for image in images]
    batched_model = local_model(model_dir, max_batch_size=4, batch_wait_ms=100.0)
    context = tm.protocol_context("internvl3", batched_model, zoom_again=True)
    batched = build_graph().batch(
        [tm.protocol_inputs(image) for image in images],
        context=context,
        config={"max_concurrency": 4, "recursion_limit": context.recursion_limit},
    )

    for one, many in zip(sequential, batched, strict=True):
        assert [s["raw"] for s in many["steps"]] == [s["raw"] for s in one["steps"]]
        assert many["views"] == one["views"]
        assert many["answer"] == "A"
    (batcher,) = batched_model.load().batchers.values()
    assert max(batcher.batch_sizes) > 1  # calls really shared forward passes
    assert sum(batcher.batch_sizes) == 16  # four samples × four calls


def test_transformers_serve_runs_every_node(trained_internvl_path: Path, tmp_path: Path) -> None:
    image = scene(tmp_path, (3000, 2000), "served")
    with serve_model(trained_internvl_path) as base_url:
        result = run(
            f"openai:{served_model_name(trained_internvl_path)}",
            image,
            base_url=base_url,
            server_tile_budget="transformers",
        )
    assert [s["node"] for s in result["steps"]] == ["localize", "refine", "localize", "refine"]
    assert [s["raw"] for s in result["steps"]] == list(tm.PROTOCOL_REPLIES["internvl3"])
    assert result["initial_answer"] == "B" and result["answer"] == "A"
    assert [view["box"] for view in result["views"]] == [
        [0, 0, 3000, 2000],
        [1500, 1000, 2400, 1600],
        [1635, 1076, 2265, 1524],
    ]
