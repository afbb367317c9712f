"""The `openai:` path against a real vLLM (CPU build, its own venv) serving the protocol-trained
tiny InternVL3 (-hf): every node of the graph, zoom-again included, the tile budget vLLM reads,
its prefix cache, token-probability confidence from its logprobs, `usage` from its counters, and
`zoom-refine eval` with both methods.

One server for the whole session (`vllm_internvl`, tests/conftest.py), started with the flags our
defaults need (`servers.VLLM_ZOOM_REFINE_ARGS`, docs/vllm.md).
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.request
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from servers import RunningServer, vllm_block_size
from typer.testing import CliRunner

from zoom_refine import build_graph
from zoom_refine.cli import app
from zoom_refine.testing import tiny_models as tm

pytestmark = pytest.mark.slow

IMAGE_TOKENS_PER_TILE = 256  # (448 / 14)² patches × 0.5² pixel-shuffle
PREFIX_HIT_TARGET = 0.9
"""Refine must find at least this share of the localize prompt (whole blocks) in vLLM's cache."""


def scene(folder: Path, size: tuple[int, int], seed: str) -> Path:
    path = folder / f"{seed}.png"
    tm.protocol_image(size, seed).save(path)
    return path


def run(server: RunningServer, image: Path, **settings: Any) -> dict[str, Any]:
    """The protocol through the server: zoom again once (`max_hops` 2, a threshold above the
    trained confidence), the tile budget sent per request, InternVL's box conventions."""
    options: dict[str, Any] = {
        "base_url": server.base_url,
        "server_tile_budget": "vllm",
        "model_family": "internvl",
    }
    context = tm.protocol_context(
        "internvl3", f"openai:{server.model_name}", zoom_again=True, **(options | settings)
    )
    result: dict[str, Any] = build_graph().invoke(
        tm.protocol_inputs(image),
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )
    return result


@pytest.fixture(scope="module")
def zoomed(
    vllm_internvl: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One protocol run on a 3000x2000 scene never sent before (a cold prefix cache for it)."""
    image = scene(tmp_path_factory.mktemp("vllm"), (3000, 2000), "vllm-zoom")
    return run(vllm_internvl, image)


def test_vllm_runs_every_node_and_zooms_again(zoomed: dict[str, Any]) -> None:
    assert [s["node"] for s in zoomed["steps"]] == ["localize", "refine", "localize", "refine"]
    assert [s["raw"] for s in zoomed["steps"]] == list(tm.PROTOCOL_REPLIES["internvl3"])
    assert zoomed["initial_answer"] == "B" and zoomed["answer"] == "A"
    assert zoomed["stop_reason"] == "max_hops"
    # The same views (original pixels) as the local backend and `transformers serve` produce.
    assert [view["box"] for view in zoomed["views"]] == [
        [0, 0, 3000, 2000],
        [1500, 1000, 2400, 1600],
        [1635, 1076, 2265, 1524],
    ]
    localize = zoomed["steps"][0]
    assert localize["box"] == list(tm.LOCALIZE_BOX) and localize["answer"] == "B"
    assert [s["confidence"] for s in zoomed["steps"] if s["node"] == "refine"] == [0.9, 0.9]


def test_usage_comes_from_vllm_counters(zoomed: dict[str, Any]) -> None:
    steps = zoomed["steps"]
    for step in steps:
        usage = step["usage"]
        assert usage["model_calls"] == 1
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert 0 <= usage["cached_tokens"] < usage["input_tokens"]
    # Every request carries the whole conversation before it: prompts only grow.
    prompts = [step["usage"]["input_tokens"] for step in steps]
    assert prompts == sorted(prompts) and len(set(prompts)) == 4
    # Each prompt holds the previous prompt and the reply to it (plus the new turn).
    for earlier, later in itertools.pairwise(steps):
        assert later["usage"]["input_tokens"] > earlier["usage"]["total_tokens"]
    # The crop adds its tiles: a 900x600 crop at 2 tiles + thumbnail = 3 tiles.
    assert prompts[1] - steps[0]["usage"]["total_tokens"] > 3 * IMAGE_TOKENS_PER_TILE
    total = zoomed["usage"]
    for key in ("model_calls", "input_tokens", "output_tokens", "cached_tokens"):
        assert total[key] == sum(step["usage"][key] for step in steps), key


def test_refine_reuses_the_localize_prompt_from_vllms_prefix_cache(
    zoomed: dict[str, Any], vllm_internvl: RunningServer
) -> None:
    block = vllm_block_size(vllm_internvl)
    steps = zoomed["steps"]
    assert steps[0]["usage"]["cached_tokens"] == 0  # a new image: nothing to reuse yet
    for earlier, later in itertools.pairwise(steps):
        reusable = earlier["usage"]["input_tokens"] // block * block  # whole blocks only
        assert later["usage"]["cached_tokens"] >= PREFIX_HIT_TARGET * reusable, (earlier, later)


def test_tile_budget_reaches_vllm(vllm_internvl: RunningServer, tmp_path: Path) -> None:
    """`server_tile_budget="vllm"` changes what the server's InternVL processor tiles."""
    image = scene(tmp_path, (1920, 1080), "budget")
    tokens = {}
    for budget in (12, 2):
        result = run(vllm_internvl, image, max_patches=budget, max_hops=1)
        tokens[budget] = result["steps"][0]["usage"]["input_tokens"]
    # 16:9 at ≤12 tiles: 4×2 + thumbnail = 9; at ≤2: 2×1 + thumbnail = 3.
    assert tokens[12] - tokens[2] == (9 - 3) * IMAGE_TOKENS_PER_TILE


def test_hf_internvl_reads_max_patches_not_max_dynamic_patch(
    vllm_internvl: RunningServer, tmp_path: Path
) -> None:
    """The defect `server_tile_budget="vllm"` had: it sent only `max_dynamic_patch`, which an
    InternVL `-hf` checkpoint's processor does not take, so vLLM dropped it without an error."""
    image = scene(tmp_path, (1920, 1080), "budget-keys")
    content = [
        {"type": "image_url", "image_url": {"url": data_url(image)}},
        {"type": "text", "text": "Hi"},
    ]

    def prompt_tokens(processor_kwargs: dict[str, int] | None) -> int:
        body: dict[str, Any] = {
            "model": vllm_internvl.model_name,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1,
        }
        if processor_kwargs is not None:
            body["mm_processor_kwargs"] = processor_kwargs
        request = urllib.request.Request(
            f"{vllm_internvl.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(json.load(response)["usage"]["prompt_tokens"])

    default = prompt_tokens(None)
    assert prompt_tokens({"max_dynamic_patch": 2}) == default  # ignored
    assert default - prompt_tokens({"max_patches": 2}) == (9 - 3) * IMAGE_TOKENS_PER_TILE


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def test_token_confidence_from_vllm_logprobs(vllm_internvl: RunningServer, tmp_path: Path) -> None:
    image = scene(tmp_path, (1500, 900), "token-confidence")
    result = run(vllm_internvl, image, confidence_source="token", max_hops=1)
    refine = result["steps"][-1]
    assert refine["node"] == "refine" and refine["answer"] == "A"
    assert refine["confidence_source"] == "token"
    # The probability of the letter `A` the model wrote, not the 0.9 it stated.
    assert 0.5 < refine["confidence"] <= 1.0 and refine["confidence"] != tm.PROTOCOL_CONFIDENCE


def test_eval_both_methods_through_vllm(vllm_internvl: RunningServer, tmp_path: Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    args = [
        "eval",
        "hr-bench",
        "--data",
        str(data),
        "--model",
        f"openai:{vllm_internvl.model_name}",
        "--base-url",
        vllm_internvl.base_url,
        "--model-family",
        "internvl",
        "--max-patches",
        str(tm.PROTOCOL_MAX_PATCHES),
        "--server-tile-budget",
        "vllm",
        "--method",
        "both",
        "--concurrency",
        "4",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12  # 6 rows × 2 methods, the malformed row recorded as an error
    ok = [r for r in records if r["status"] == "ok"]
    assert {r["method"] for r in ok} == {"baseline", "zoom-refine"} and len(ok) == 10
    for record in ok:
        assert record["usage"]["input_tokens"] > 0 and record["usage"]["output_tokens"] > 0
    zoom = [r for r in ok if r["method"] == "zoom-refine"]
    assert all(r["initial_answer"] == "B" and r["answer"] == "A" for r in zoom)
    assert all(r["steps"][-1]["node"] == "refine" and len(r["views"]) == 2 for r in zoom)
    assert all(r["usage"]["cached_tokens"] > 0 for r in zoom)  # refine hit the prefix cache
