"""The Qwen pixel budget (`qwen_min_pixels` / `qwen_max_pixels`, CLI `--min-pixels` /
`--max-pixels`): given to a local processor and sent to servers, views made within it, each
step's view size and visual tokens recorded, and a warning when it starves the first view.

Local runs use a tiny random Qwen3-VL built from transformers' own classes; its processor
reports the size it resized each image to, which is what the records are checked against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_fixtures import photo_like
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from zoom_refine import build_graph
from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import qwen_resized_size, visual_tokens
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.models import server_tile_budget_body
from zoom_refine.agent.view_cost import budget_warning
from zoom_refine.cli import app
from zoom_refine.testing.tiny_qwen3 import QWEN3_MAX_PIXELS, QWEN3_MIN_PIXELS
from zoom_refine.tools.encoding import image_content_block

STARVING = 256 * 32 * 32
"""262,144 px: a 3840x2160 image's first view becomes 672x384 (long side under 1,000)."""


@pytest.fixture(scope="module")
def uhd_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "uhd.png"
    photo_like((3840, 2160), seed=26).save(path)
    return path


def test_visual_tokens_follow_each_familys_rule() -> None:
    assert visual_tokens("qwen3_vl", (1344, 768)) == 42 * 24  # one token per 32x32 block
    assert visual_tokens("qwen2_5_vl", (560, 336)) == 20 * 12  # one per 28x28 block
    assert visual_tokens("internvl", (1344, 896)) == (6 + 1) * 256  # 3x2 tiles + thumbnail
    assert visual_tokens("internvl", (448, 448)) == 256  # one tile: no thumbnail
    assert visual_tokens("other", (1000, 1000)) is None


def test_the_budget_is_sent_as_each_server_reads_it() -> None:
    vllm = server_tile_budget_body("vllm", 12, min_pixels=4096, max_pixels=STARVING)
    assert vllm == {
        "mm_processor_kwargs": {
            "max_patches": 12,
            "min_pixels": 4096,
            "max_pixels": STARVING,
            "max_dynamic_patch": 12,
        }
    }
    served = server_tile_budget_body("transformers", None, max_pixels=STARVING)
    assert served == {
        "chat_template_kwargs": {"processor_kwargs": {"images_kwargs": {"max_pixels": STARVING}}}
    }
    assert server_tile_budget_body("none", 12, max_pixels=STARVING) is None
    assert server_tile_budget_body("vllm", None) is None


def test_a_server_view_is_made_within_the_budget_it_is_sent() -> None:
    """No model to ask: the size comes from the family's rule and the budget we send."""
    context = ZoomContext(
        model="openai:qwen3-vl",
        base_url="http://127.0.0.1:9/v1",
        model_family="qwen3_vl",
        qwen_max_pixels=STARVING,
        server_tile_budget="vllm",
    )
    expected = qwen_resized_size((3840, 2160), min_pixels=65_536, max_pixels=STARVING, factor=32)
    assert context.shown_size((3840, 2160)) == expected == (672, 384)
    released = ZoomContext(
        model="openai:qwen3-vl", base_url="http://127.0.0.1:9/v1", model_family="qwen3_vl"
    )
    assert released.shown_size((3840, 2160)) == (2048, 1152)  # 16.7 M px: view_max_side rules


@pytest.mark.slow
def test_the_local_processor_applies_the_budget(tiny_qwen3_path: Path) -> None:
    """A 1344x768 image is within the checkpoint's own budget; under `max_pixels=STARVING` the
    processor itself resizes it (the budget reaches the processor, not only our view sizing)."""
    block = image_content_block(photo_like((1344, 768), seed=3), "png")
    own = LocalVisionChatModel(model_path=str(tiny_qwen3_path), max_new_tokens=1)
    starved = LocalVisionChatModel(
        model_path=str(tiny_qwen3_path), max_new_tokens=1, max_pixels=STARVING
    )
    assert own.invoke([HumanMessage(content=[block])]).response_metadata["image_sizes"] == [
        [1344, 768]
    ]
    reply = starved.invoke([HumanMessage(content=[block])])
    assert reply.response_metadata["image_sizes"] == [[672, 384]]
    assert reply.response_metadata["attn_implementation"] == "sdpa"  # auto on a CPU


@pytest.mark.slow
def test_steps_record_the_view_size_and_visual_tokens(tiny_qwen3_path: Path, uhd_png: Path) -> None:
    model = f"hf:{tiny_qwen3_path}"
    result = build_graph().invoke(
        {"image": str(uhd_png), "question": "What is on the sign?"},
        context=ZoomContext(model=model, max_new_tokens=4, qwen_max_pixels=STARVING),
    )
    (step,) = result["steps"]  # a random model gives no box: one localize step
    assert result["views"][0]["size"] == [672, 384]
    assert step["view_size"] == [672, 384]
    assert step["visual_tokens"] == 21 * 12
    assert budget_warning(result) is not None and "3840x2160" in budget_warning(result)  # type: ignore[operator]

    default = build_graph().invoke(
        {"image": str(uhd_png), "question": "What is on the sign?"},
        context=ZoomContext(model=model, max_new_tokens=4),
    )
    assert default["steps"][0]["view_size"] == [1344, 768]
    assert default["steps"][0]["visual_tokens"] == 42 * 24
    assert budget_warning(default) is None  # the checkpoint's own budget is not starved
    assert QWEN3_MIN_PIXELS < 1344 * 768 <= QWEN3_MAX_PIXELS


def test_the_warning_needs_a_large_image_and_a_small_view() -> None:
    def result(image: tuple[int, int], view: list[int]) -> dict[str, object]:
        views = [{"id": "img0", "box": [0, 0, *image], "hop": 0, "size": view}]
        return {"views": views, "steps": [{"node": "localize", "hop": 0, "view_size": view}]}

    assert budget_warning(result((3840, 2160), [672, 384])) is not None
    assert budget_warning(result((2900, 2000), [672, 384])) is None  # not a large image
    assert budget_warning(result((3840, 2160), [1024, 576])) is None  # enough pixels left
    assert budget_warning({"views": [], "steps": []}) is None
    assert budget_warning(result((3840, 2160), "672x384")) is None  # type: ignore[arg-type]


@pytest.mark.slow
def test_ask_takes_the_budget_and_warns_when_it_starves(
    tiny_qwen3_path: Path, uhd_png: Path
) -> None:
    args = ["ask", str(uhd_png), "What is on the sign?", "--model", f"hf:{tiny_qwen3_path}"]
    starved = CliRunner().invoke(app, [*args, "--max-pixels", str(STARVING), "--json"])
    assert starved.exit_code == 0, starved.output
    assert json.loads(starved.stdout)["views"][0]["size"] == [672, 384]
    assert "--max-pixels" in starved.stderr and "672x384" in starved.stderr
    fine = CliRunner().invoke(app, [*args, "--json"])
    assert fine.exit_code == 0 and "--max-pixels" not in fine.stderr


def test_a_budget_below_the_minimum_is_refused() -> None:
    from zoom_refine.tools.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="qwen_min_pixels"):
        ZoomContext(qwen_min_pixels=STARVING * 2, qwen_max_pixels=STARVING)
    with pytest.raises(InvalidInputError, match="qwen_max_pixels"):
        ZoomContext(qwen_max_pixels=0)


@pytest.mark.slow
def test_eval_warns_once_and_records_the_budget(tiny_qwen3_path: Path, tmp_path: Path) -> None:
    """`eval` on two 4K samples under a starving budget: one warning (not one per sample), kept
    in summary.json; the budget recorded in config.json; each step's view size and tokens in
    the predictions and the report."""
    data = tmp_path / "synth.tsv"
    runner = CliRunner()
    made = runner.invoke(app, ["data", "synth", str(data), "--n", "2", "--side", "3840"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(data), "--model", f"hf:{tiny_qwen3_path}"]
    result = runner.invoke(app, [*args, "--max-pixels", str(STARVING), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: the pixel budget") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [w for w in summary["warnings"] if "pixel budget" in w] != []
    config = json.loads((out / "config.json").read_text())
    assert config["context"]["qwen_max_pixels"] == STARVING
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    steps = [step for record in records for step in record["steps"]]
    assert steps and all(step["view_size"][0] <= 672 for step in steps if step["hop"] == 0)
    assert all(type(step["visual_tokens"]) is int for step in steps if "view_size" in step)
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "visual tokens" in (out / "report.html").read_text()


@pytest.mark.reliability(
    "Inputs",
    "hostile pixel budgets on the command line (0, negative, text, min above max, 10^30)",
    "one line naming the option, exit 2, no model loaded",
)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-pixels", "0"], "--max-pixels"),
        (["--min-pixels", "-5"], "--min-pixels"),
        (["--max-pixels", "lots"], "--max-pixels"),
        (["--min-pixels", "5000000", "--max-pixels", "1000"], "qwen_min_pixels"),
    ],
)
def test_hostile_budgets_are_one_line(args: list[str], says: str, uhd_png: Path) -> None:
    spec = "hf:/nonexistent/model"  # never reached: the budget is refused first
    result = CliRunner().invoke(app, ["ask", str(uhd_png), "What?", "--model", spec, *args])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert "/nonexistent/model" not in result.output  # refused before any model is named


def test_a_huge_budget_keeps_the_view_within_view_max_side() -> None:
    context = ZoomContext(
        model="openai:qwen3-vl",
        base_url="http://127.0.0.1:9/v1",
        model_family="qwen3_vl",
        qwen_max_pixels=10**30,
    )
    assert context.shown_size((7680, 4320)) == (2048, 1152)


@pytest.mark.parametrize(("family", "factor"), [("qwen3_vl", 32), ("qwen2_5_vl", 28)])
def test_every_qwen_view_is_a_size_its_processor_keeps(family: str, factor: int) -> None:
    """A region the processor would round up on a side (504 x 449 → 512 x 448) is made at that
    size here, so the processor never resizes a view again; a view grows by less than one
    rounding step over the region fitted to `view_max_side`, and never past it beyond that."""
    import random

    from zoom_refine.agent.families import QWEN_RELEASED_PIXELS, processor_input_size
    from zoom_refine.tools.views import shown_size_for

    context = ZoomContext(
        model="openai:qwen",
        base_url="http://127.0.0.1:9/v1",
        model_family=family,  # type: ignore[arg-type]
    )
    low, high = QWEN_RELEASED_PIXELS[family]  # type: ignore[index]
    rng = random.Random(25)
    regions = [(504, 449), (448, 504), (5000, 3000), (2047, 1153)]
    regions += [(rng.randint(448, 9000), rng.randint(448, 9000)) for _ in range(2000)]
    for region in regions:
        shown = context.shown_size(region)
        kept = qwen_resized_size(shown, min_pixels=low, max_pixels=high, factor=factor)
        assert kept == shown, region
        fitted = shown_size_for(region, context.view_max_side)
        assert all(s < f + factor for s, f in zip(shown, fitted, strict=True)), region
        assert (
            processor_input_size(
                family,
                shown,
                max_patches=None,
                qwen_min_pixels=None,
                qwen_max_pixels=None,  # type: ignore[arg-type]
            )
            == shown
        )
    assert context.shown_size((504, 449)) == ((512, 448) if factor == 32 else (504, 448))


@pytest.mark.parametrize("size", [(20000, 90), (90, 20000), (100_000, 1)])
def test_an_image_qwen_cannot_take_is_one_line(
    size: tuple[int, int], tiny_qwen3_path: Path, tmp_path: Path
) -> None:
    """Qwen processors refuse an aspect ratio over 200:1 (transformers raised a bare ValueError
    from inside the graph, a traceback): `ask` says so on one line, exit 2, for a local model;
    a server's views are refused the same way before any request."""
    from PIL import Image

    from zoom_refine.tools.errors import InvalidInputError

    image = tmp_path / "strip.png"
    Image.new("RGB", size, "white").save(image)
    args = ["ask", str(image), "What is written?", "--model", f"hf:{tiny_qwen3_path}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: a {size[0]}x{size[1]} px image has an aspect ratio of")
    assert "200:1" in line and "Traceback" not in result.output
    served = ZoomContext(
        model="openai:qwen3-vl", base_url="http://127.0.0.1:9/v1", model_family="qwen3_vl"
    )
    with pytest.raises(InvalidInputError, match="crop or pad it"):
        served.shown_size(size)
    assert served.shown_size((20000, 200)) == (2048, 32)  # 100:1 is taken; 20 px rounds up
    assert served.shown_size((20000, 101)) == (2048, 10)  # 198:1, fitted 204.8:1: left as is
