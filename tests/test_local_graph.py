"""The whole graph through the real local backend: a tiny random InternVL3 built at test time.

A random model replies with noise, so the run ends after localize with no box; the assertions
are on what is real here: the tiles encoded and the tokens prefilled for a 3840×2160 image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zoom_refine import ZoomContext, build_baseline_graph, build_graph
from zoom_refine.agent.local.model import load_local_backend


def clear_prefix_caches(model_path: Path) -> None:
    """Each run here measures a fresh encode: forget earlier conversations' caches."""
    load_local_backend(str(model_path)).prefix_cache.clear()


pytestmark = pytest.mark.slow

IMAGE_TOKENS_PER_TILE = 256  # (448 / 14)² patches × 0.5² pixel-shuffle


@pytest.fixture(scope="module")
def uhd_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "uhd.png"
    Image.new("RGB", (3840, 2160), (40, 90, 160)).save(path)
    return path


def run_localize(model_path: Path, image: Path, max_patches: int) -> dict[str, Any]:
    context = ZoomContext(model=f"hf:{model_path}", max_new_tokens=6, max_patches=max_patches)
    clear_prefix_caches(model_path)
    result: dict[str, Any] = build_graph().invoke(
        {"image": str(image), "question": "What colour is the sky?", "options": ["blue", "red"]},
        context=context,
    )
    return result


def test_graph_through_the_local_backend_counts_real_tiles(
    tiny_internvl_path: Path, uhd_image: Path
) -> None:
    # 16:9 with ≤12 tiles → a 4×2 grid + thumbnail = 9; with ≤6 → 2×1 + thumbnail = 3.
    large = run_localize(tiny_internvl_path, uhd_image, max_patches=12)
    small = run_localize(tiny_internvl_path, uhd_image, max_patches=6)

    # The view is made at the tile canvas itself (4×2 or 2×1 tiles of 448 px).
    for result, tiles, canvas in ((large, 9, [1792, 896]), (small, 3, [896, 448])):
        (step,) = result["steps"]
        assert step["node"] == "localize" and isinstance(step["raw"], str)
        assert result["views"][0]["size"] == canvas
        assert result["usage"]["vision_tiles"] == tiles
        assert result["usage"]["model_calls"] == 1
        assert 1 <= result["usage"]["output_tokens"] <= 6
        assert result["usage"]["input_tokens"] > tiles * IMAGE_TOKENS_PER_TILE
        assert result["stop_reason"] in ("no_box", "confident")
    # Same text, six fewer tiles: exactly 6 × 256 fewer prefilled tokens.
    difference = large["usage"]["input_tokens"] - small["usage"]["input_tokens"]
    assert difference == 6 * IMAGE_TOKENS_PER_TILE


def test_baseline_through_the_local_backend(tiny_internvl_path: Path, uhd_image: Path) -> None:
    context = ZoomContext(model=f"hf:{tiny_internvl_path}", max_new_tokens=4)
    result = build_baseline_graph().invoke(
        {"image": str(uhd_image), "question": "What colour?"}, context=context
    )
    assert result["usage"]["vision_tiles"] == 9
    assert result["stop_reason"] == "baseline"
