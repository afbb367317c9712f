"""`eval --grid`: parsing (one line naming the field for bad input), cell folders and their
config.json, experiment.json, resume, shards, one trace database, the 64-cell guard."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from experiment_fixtures import HopRuleModel, synth_data

from zoom_refine import ZoomContext
from zoom_refine.evals.grid import MAX_CELLS, cell_name, grid_cells, parse_grid, plan_grid, run_grid
from zoom_refine.evals.runner import EvalPlan
from zoom_refine.tools.errors import (
    GridTooLargeError,
    InvalidInputError,
    RunSettingsChangedError,
    ZoomRefineError,
)


def _plan(tmp_path: Path, **overrides: object) -> EvalPlan:
    data = synth_data(tmp_path, n=4)
    settings: dict[str, object] = {
        "benchmark": "hr-bench",
        "data": data,
        "out": tmp_path / "exp",
        "methods": ("baseline", "zoom-refine"),
    }
    return EvalPlan(**(settings | overrides))  # type: ignore[arg-type]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_values_are_typed_and_cells_named_from_settings() -> None:
    axes = parse_grid(["max_hops=1,2", "confidence_threshold=0.5,0.95", "box_format=auto,norm1000"])
    assert [axis.values for axis in axes] == [(1, 2), (0.5, 0.95), ("auto", "norm1000")]
    cells = grid_cells(axes)
    assert len(cells) == 8
    assert cells[0].name == "max_hops=1,confidence_threshold=0.5,box_format=auto"
    assert cells[-1].settings == {
        "max_hops": 2,
        "confidence_threshold": 0.95,
        "box_format": "norm1000",
    }
    assert parse_grid(["max_patches=none,6"])[0].values == (None, 6)
    assert parse_grid(["always_zoom=true,false"])[0].values == (True, False)
    model = parse_grid(["model=hf:OpenGVLab/InternVL3-2B-hf,openai:x"])[0]
    assert cell_name({"model": model.texts[0]}) == "model=hf_OpenGVLab_InternVL3-2B-hf"
    assert cell_name({"prompts": "/some/where/official-base.toml"}) == "prompts=official-base"


@pytest.mark.reliability(
    "eval --grid",
    "an unknown, result-neutral, empty or badly typed axis",
    "one line naming the field",
)
@pytest.mark.parametrize(
    ("option", "named", "says"),
    [
        ("max_hop=1,2", "max_hop", "unknown field"),
        ("base_url=http://a,http://b", "base_url", "does not change results"),
        ("request_timeout=10,20", "request_timeout", "does not change results"),
        ("concurrency=1,4", "concurrency", "does not change results"),
        ("max_hops=", "max_hops", "no values"),
        ("max_hops=1,,2", "max_hops", "no values"),
        ("max_hops=two", "max_hops", "not a whole number"),
        ("max_hops=1.5", "max_hops", "not a whole number"),
        ("confidence_threshold=high", "confidence_threshold", "not a number"),
        ("confidence_threshold=nan", "confidence_threshold", "not a number"),
        ("box_format=pixels", "box_format", "one of"),
        ("always_zoom=maybe", "always_zoom", "true or false"),
        ("max_hops=1,1", "max_hops", "twice"),
        ("max_hops", "max_hops", "NAME=V1,V2"),
    ],
)
def test_bad_grid_is_one_line_naming_the_field(option: str, named: str, says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_grid([option])
    message = str(caught.value)
    assert named in message and says in message and "\n" not in message


def test_a_field_given_twice_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="max_hops: given twice"):
        parse_grid(["max_hops=1", "max_hops=2"])


def test_a_value_the_context_refuses_names_the_cell(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    with pytest.raises(InvalidInputError, match=r"cell max_hops=99.*max_hops must be within"):
        plan_grid(plan, ZoomContext(model=HopRuleModel()), ["max_hops=1,99"])
    assert not (plan.out / "experiment.json").exists()  # nothing written before every cell checks


@pytest.mark.reliability("eval --grid", "more than 64 cells", "refused without --yes")
def test_more_than_64_cells_asks_for_yes(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    thresholds = ",".join(f"{step / 20:g}" for step in range(13))
    options = ["max_hops=1,2,3,4,5", f"confidence_threshold={thresholds}"]
    with pytest.raises(GridTooLargeError, match=r"65 cells.*--yes"):
        plan_grid(plan, ZoomContext(model=HopRuleModel()), options)
    assert (
        len(plan_grid(plan, ZoomContext(model=HopRuleModel()), options, yes=True)) == 65 > MAX_CELLS
    )


def test_cells_run_into_their_folders_with_their_settings(tmp_path: Path) -> None:
    plan = _plan(tmp_path, trace_db=tmp_path / "traces.db")
    context = ZoomContext(model=HopRuleModel())
    finished = run_grid(plan, context, ["max_hops=1,2", "confidence_threshold=0.6,0.95"])
    names = [item.cell.name for item in finished]
    assert names == [
        "max_hops=1,confidence_threshold=0.6",
        "max_hops=1,confidence_threshold=0.95",
        "max_hops=2,confidence_threshold=0.6",
        "max_hops=2,confidence_threshold=0.95",
    ]
    experiment = json.loads((plan.out / "experiment.json").read_text())
    assert [cell["folder"] for cell in experiment["cells"]] == names
    assert experiment["grid"] == {"max_hops": ["1", "2"], "confidence_threshold": ["0.6", "0.95"]}
    assert experiment["methods"] == ["baseline", "zoom-refine"]
    for item in finished:
        config = json.loads((item.folder / "config.json").read_text())
        assert config["context"]["max_hops"] == item.cell.settings["max_hops"]
        assert (
            config["context"]["confidence_threshold"] == item.cell.settings["confidence_threshold"]
        )
        records = _lines(item.folder / "predictions.jsonl")
        # methods stay paired within a cell: every sample has both
        assert sorted((r["id"], r["method"]) for r in records) == sorted(
            (str(i), m) for i in range(4) for m in ("baseline", "zoom-refine")
        )
    deep = _lines(plan.out / "max_hops=2,confidence_threshold=0.95" / "predictions.jsonl")
    assert max(len(r["views"]) for r in deep) == 3  # a second hop happened where unsure
    from zoom_refine.graphs.traces import list_runs

    assert len(list_runs(tmp_path / "traces.db")) == 4 * 4 * 2  # one database, every cell


def test_a_rerun_resumes_and_a_changed_cell_is_refused_first(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    context = ZoomContext(model=HopRuleModel())
    run_grid(plan, context, ["max_hops=1,2"])
    before = (plan.out / "max_hops=2" / "predictions.jsonl").read_bytes()
    run_grid(plan, context, ["max_hops=1,2"])
    assert (plan.out / "max_hops=2" / "predictions.jsonl").read_bytes() == before
    # another base setting: the first cell that holds other predictions stops the whole grid
    other = dataclasses.replace(context, confidence_threshold=0.2)
    with pytest.raises(RunSettingsChangedError, match=r"confidence_threshold 0\.7 → 0\.2"):
        run_grid(plan, other, ["max_hops=1,2,3"])
    assert not (plan.out / "max_hops=3").exists()
    # a later grid into the same folder adds its cells to experiment.json
    run_grid(plan, context, ["max_hops=3"])
    listed = json.loads((plan.out / "experiment.json").read_text())["cells"]
    assert [cell["name"] for cell in listed] == ["max_hops=1", "max_hops=2", "max_hops=3"]


def test_shards_split_every_cell(tmp_path: Path) -> None:
    first = run_grid(
        _plan(tmp_path, shard=(0, 2)), ZoomContext(model=HopRuleModel()), ["max_hops=1,2"]
    )
    second = run_grid(
        _plan(tmp_path, shard=(1, 2)), ZoomContext(model=HopRuleModel()), ["max_hops=1,2"]
    )
    for one, two in zip(first, second, strict=True):
        assert one.folder == two.folder  # shards share the cell's folder (one writer at a time)
    ids = {r["id"] for r in _lines(first[0].folder / "predictions.jsonl")}
    assert ids == {"0", "1", "2", "3"}


def test_grid_from_cli_returns_lines_and_raises_one_line(tmp_path: Path) -> None:
    from zoom_refine.cli_experiments import run_grid_from_cli
    from zoom_refine.evals.runner import run_eval

    plan = _plan(tmp_path)
    context = ZoomContext(model=HopRuleModel())
    lines = run_grid_from_cli(["max_hops=1,2"], False, plan, context, run_eval)
    assert lines[0] == "max_hops=1  baseline: accuracy 25.0% (1/4)"
    assert "experiment.json" in lines[-1]
    with pytest.raises(ZoomRefineError, match="--grid nope: unknown field"):
        run_grid_from_cli(["nope=1"], False, plan, context, run_eval)
