"""`report EXP`: one page naming every cell's settings; the tidy table; the frontier PNG; and the
whole offline workflow from an empty folder through the CLI."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from experiment_fixtures import HopRuleModel, synth_data
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.evals.experiment_report import write_experiment_report
from zoom_refine.evals.grid import is_experiment, run_grid
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.tools.errors import InvalidInputError

GRID = ["max_hops=1,2", "confidence_threshold=0.6,0.9"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("experiment")
    data = synth_data(root, n=6)
    plan = EvalPlan(
        benchmark="hr-bench", data=data, out=root / "exp", methods=("baseline", "zoom-refine")
    )
    context = ZoomContext(model=HopRuleModel())
    run_grid(plan, context, GRID)
    run_eval(
        dataclasses.replace(plan, out=plan.out / "always"),
        dataclasses.replace(context, max_hops=2, always_zoom=True),
    )
    return plan.out


def test_page_names_every_cells_settings(experiment: Path) -> None:
    report = write_experiment_report(experiment)
    page = report.page.read_text()
    assert is_experiment(experiment) and not is_experiment(experiment / "always")
    names = [
        "max_hops=1,confidence_threshold=0.6",
        "max_hops=1,confidence_threshold=0.9",
        "max_hops=2,confidence_threshold=0.6",
        "max_hops=2,confidence_threshold=0.9",
        "always",
    ]
    rows = re.findall(
        r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>",
        page,
    )
    seen = {
        (cell, method): (model, hops, threshold, prompts, preset)
        for cell, model, method, hops, threshold, prompts, preset in rows
    }
    for name in names:
        for method in ("baseline", "zoom-refine"):
            model, hops, threshold, prompts, preset = seen[(name, method)]
            assert (
                model == "HopRuleModel" and prompts.startswith("default (") and preset == "default"
            )
            if name != "always":
                wanted = dict(part.split("=") for part in name.split(","))
                assert (hops, threshold) == (wanted["max_hops"], wanted["confidence_threshold"])
    assert "always_zoom" in page
    for heading in (
        "Per hop",
        "Confidence calibration",
        "The confidence gate, replayed",
        "Accuracy vs tokens",
    ):
        assert heading in page
    assert page.count("<svg") >= 1 + 5 + 1  # the frontier, a diagram per cell, the replay curve
    assert "ECE" in page and "mean IoU with target" in page
    # each hop's crop is scored against the synth target box (not "no target_box")
    assert re.search(r"<td>0\.\d{3}</td>", page)
    assert "model HopRuleModel · method zoom-refine · max_hops 2 · threshold 0.9" in page


def test_mcnemar_against_the_named_reference(experiment: Path) -> None:
    page = write_experiment_report(
        experiment, reference="max_hops=2,confidence_threshold=0.9"
    ).page.read_text()
    assert "Reference cell for McNemar's paired test: max_hops=2,confidence_threshold=0.9" in page
    assert page.count("<td>reference</td>") == 2  # its two methods
    assert "p = " in page


@pytest.mark.reliability("report EXP", "--reference naming no cell", "one line listing the cells")
def test_unknown_reference_is_one_line(experiment: Path) -> None:
    with pytest.raises(
        InvalidInputError, match=r"--reference 'nope' is not a cell .*cells: max_hops=1"
    ):
        write_experiment_report(experiment, reference="nope")


def test_tidy_table_one_row_per_cell_method_sample(experiment: Path) -> None:
    report = write_experiment_report(experiment)
    frame = pd.read_parquet(report.results_parquet)
    assert len(frame) == 5 * 2 * 6
    for column in (
        "cell",
        "model",
        "method",
        "max_hops",
        "confidence_threshold",
        "prompts",
        "preset",
        "id",
        "correct",
        "model_calls",
        "prompt_tokens",
        "completion_tokens",
        "seconds",
    ):
        assert column in frame.columns
    from_csv = pd.read_csv(report.results_csv)
    assert len(from_csv) == len(frame) and list(from_csv.columns) == list(frame.columns)
    cell = frame[
        (frame.cell == "max_hops=2,confidence_threshold=0.9") & (frame.method == "zoom-refine")
    ]
    records = [
        json.loads(line)
        for line in (experiment / "max_hops=2,confidence_threshold=0.9" / "predictions.jsonl")
        .read_text()
        .splitlines()
    ]
    mine = [r for r in records if r["method"] == "zoom-refine"]
    assert int(cell.correct.sum()) == sum(r["correct"] for r in mine)
    assert int(cell.prompt_tokens.sum()) == sum(r["usage"]["input_tokens"] for r in mine)
    assert set(cell.max_hops) == {2}


def test_frontier_png_is_drawn_beside_the_page(experiment: Path) -> None:
    report = write_experiment_report(experiment)
    with Image.open(report.frontier_png) as image:
        assert image.format == "PNG" and image.size == (560, 340)
        colours = image.convert("RGB").getcolors(maxcolors=100_000) or []
        assert len(colours) > 5  # axes, points and text, not a blank picture


def test_labels_of_cells_at_the_same_point_do_not_overprint() -> None:
    """Cells with the same cost and accuracy (common: a threshold that never gates) get their
    labels stacked, each readable, not drawn over one another."""
    from zoom_refine.evals import charts

    chart = charts.Chart(
        title="t",
        x_label="x",
        y_label="y",
        series=[
            charts.Series("a", [(1.0, 0.5), (2.0, 0.5)], line=False, labels=["1,0.7", "2,0.7"]),
            charts.Series("b", [(1.0, 0.5)], line=False, labels=["1,0.95"]),
        ],
    )
    placed = {text: (x, y) for x, y, text, *_ in charts.layout(chart).texts}
    spots = [placed["1,0.7"], placed["1,0.95"], placed["2,0.7"]]
    assert len(set(spots)) == 3
    assert placed["1,0.7"][0] == placed["1,0.95"][0] and placed["1,0.7"][1] != placed["1,0.95"][1]


def _invoke(*args: str) -> tuple[int, str]:
    from zoom_refine.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _eval_options() -> set[str]:
    from zoom_refine.cli import app

    command = next(c for c in app.registered_commands if c.name == "eval")
    import inspect

    assert command.callback is not None
    return set(inspect.signature(command.callback).parameters)


@pytest.mark.slow
def test_offline_workflow_from_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data synth` → `eval --grid` → `eval --always-zoom` → `replay` → `report`, on the tiny
    protocol-trained model, through the CLI."""
    if not {"grid", "always_zoom"} <= _eval_options():
        pytest.skip("`eval --grid` / `--always-zoom` are not wired into zoom_refine.cli yet")
    from zoom_refine.testing import trained_protocol_model
    from zoom_refine.testing.tiny_models import PROTOCOL_MAX_PATCHES

    monkeypatch.chdir(tmp_path)
    model = [
        "--model",
        f"hf:{trained_protocol_model('internvl3')}",
        "--max-patches",
        str(PROTOCOL_MAX_PATCHES),
    ]
    code, output = _invoke(
        "data", "synth", "synth.tsv", "--n", "2", "--side", "1024", "--seed", "5"
    )
    assert code == 0, output
    base = ["eval", "hr-bench", "--data", "synth.tsv", *model, "--method", "baseline,zoom-refine"]
    code, output = _invoke(
        *base, "--out", "exp", "--grid", "max_hops=1,2", "--grid", "confidence_threshold=0.7,0.95"
    )
    assert code == 0, output
    code, output = _invoke(*base, "--out", "exp/always", "--max-hops", "2", "--always-zoom")
    assert code == 0, output
    code, output = _invoke(
        "replay", "exp/always", "--max-hops", "1,2", "--confidence-threshold", "0.7,0.95", "--json"
    )
    assert code == 0, output
    rows = json.loads(output[output.index("[") :])
    real = {}
    for cell in ("max_hops=1,confidence_threshold=0.7", "max_hops=2,confidence_threshold=0.95"):
        records = [
            json.loads(line)
            for line in (tmp_path / "exp" / cell / "predictions.jsonl").read_text().splitlines()
        ]
        real[cell] = sum(r["usage"]["model_calls"] for r in records if r["method"] == "zoom-refine")
    replayed = {
        (r["max_hops"], r["confidence_threshold"]): r["model_calls"]
        for r in rows
        if r["method"] == "zoom-refine"
    }
    assert replayed[(1, 0.7)] == real["max_hops=1,confidence_threshold=0.7"] == 4
    assert replayed[(2, 0.95)] == real["max_hops=2,confidence_threshold=0.95"] == 8
    code, output = _invoke("report", "exp")
    assert code == 0, output
    page = (tmp_path / "exp" / "report.html").read_text()
    assert "max_hops=2,confidence_threshold=0.95" in page and "always_zoom" in page
    assert (tmp_path / "exp" / "results.parquet").is_file()
