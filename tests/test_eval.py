"""The benchmark runner end to end: predictions as it goes, resume, errors, shards, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.cli import app
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.evals.store import PredictionStore
from zoom_refine.testing import RuleVisionModel

runner = CliRunner()


def lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def plan(tmp_path: Path, data: Path, **options: Any) -> EvalPlan:
    return EvalPlan(benchmark="hr-bench", data=data, out=tmp_path / "run", **options)


@pytest.fixture
def hr_bench(tmp_path: Path) -> Path:
    return fixtures.write_hr_bench_tsv(tmp_path / "data")


def test_run_writes_one_line_per_sample_and_method(tmp_path: Path, hr_bench: Path) -> None:
    summary = run_eval(
        plan(tmp_path, hr_bench, methods=("baseline", "zoom-refine"), concurrency=3),
        ZoomContext(model=RuleVisionModel()),
    )
    records = lines(tmp_path / "run")
    assert len(records) == 12  # 6 rows × 2 methods, the bad row included (counted wrong)
    assert len({(r["id"], r["method"]) for r in records}) == 12
    bad = [r for r in records if r["id"] == "4"]
    assert all(r["status"] == "error" and "bad row" in r["error"] for r in bad)
    zoom = {r["id"]: r for r in records if r["method"] == "zoom-refine" and r["status"] == "ok"}
    base = {r["id"]: r for r in records if r["method"] == "baseline" and r["status"] == "ok"}
    assert all(r["answer"] == "B" and r["initial_answer"] == "A" for r in zoom.values())
    assert all(r["answer"] == "A" for r in base.values())
    for record in (*zoom.values(), *base.values()):
        assert record["correct"] == (record["answer"] == record["ground_truth"])
        assert record["usage"]["model_calls"] >= 1 and record["seconds"] >= 0
    assert zoom["0"]["views"][1]["hop"] == 1 and zoom["0"]["steps"][1]["node"] == "refine"
    # Baseline runs send the benchmark's own prompt.
    assert base["0"]["steps"][0]["raw"] == "A"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["methods"]["zoom-refine"] == summary["methods"]["zoom-refine"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["benchmark"] == "hr-bench" and len(config["dataset_sha256"]) == 64
    assert config["model"].startswith("RuleVisionModel")


def test_running_again_skips_what_is_done(tmp_path: Path, hr_bench: Path) -> None:
    context = ZoomContext(model=RuleVisionModel())
    run_eval(plan(tmp_path, hr_bench), context)
    first = (tmp_path / "run" / "predictions.jsonl").read_bytes()
    counting = RuleVisionModel(fail_on="this model must not be called")
    run_eval(plan(tmp_path, hr_bench), ZoomContext(model=counting))
    assert (tmp_path / "run" / "predictions.jsonl").read_bytes() == first


def test_a_torn_last_line_is_dropped_and_rerun(tmp_path: Path, hr_bench: Path) -> None:
    context = ZoomContext(model=RuleVisionModel())
    run_eval(plan(tmp_path, hr_bench, limit=3), context)
    path = tmp_path / "run" / "predictions.jsonl"
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"id": "9", "method": "zoom-ref')  # killed mid-write
    store = PredictionStore(path)
    assert store.torn_lines == 1 and len(store) == 3
    assert path.read_bytes() == complete  # truncated back to the last full line
    run_eval(plan(tmp_path, hr_bench), context)
    assert sorted(r["id"] for r in lines(tmp_path / "run")) == ["0", "1", "2", "3", "4", "5"]


def test_model_errors_are_recorded_and_retry_errors_reruns_only_them(
    tmp_path: Path, hr_bench: Path
) -> None:
    failing = RuleVisionModel(fail_on="cars")  # rows 2 and 3 ask about cars
    run_eval(plan(tmp_path, hr_bench), ZoomContext(model=failing))
    records = {r["id"]: r for r in lines(tmp_path / "run")}
    assert records["2"]["status"] == records["3"]["status"] == "error"
    assert "scripted failure" in records["2"]["error"]
    assert records["0"]["status"] == "ok"

    run_eval(plan(tmp_path, hr_bench, retry_errors=True), ZoomContext(model=RuleVisionModel()))
    after = lines(tmp_path / "run")
    assert len(after) == 6 and len({r["id"] for r in after}) == 6
    by_id = {r["id"]: r for r in after}
    assert by_id["2"]["status"] == "ok" and by_id["0"] == records["0"]
    assert by_id["4"]["status"] == "error"  # the bad row stays a bad row


def test_shards_split_the_rows_and_report_merges_them(tmp_path: Path, hr_bench: Path) -> None:
    context = ZoomContext(model=RuleVisionModel())
    folders = []
    for index in range(2):
        shard_plan = EvalPlan(
            benchmark="hr-bench",
            data=hr_bench,
            out=tmp_path / f"shard{index}",
            shard=(index, 2),
            methods=("baseline", "zoom-refine"),
        )
        run_eval(shard_plan, context)
        folders.append(shard_plan.out)
    ids = [{r["id"] for r in lines(folder)} for folder in folders]
    assert ids[0] == {"0", "2", "4"} and ids[1] == {"1", "3", "5"}

    result = runner.invoke(app, ["report", *map(str, folders)])
    assert result.exit_code == 0, result.output
    page = (folders[0] / "report.html").read_text()
    markdown = (folders[0] / "report.md").read_text()
    assert "data:image/jpeg;base64," in page and 'id="changed"' in page
    assert page.count('class="sample"') == 6
    assert "baseline" in markdown and "zoom-refine" in markdown


def test_eval_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "hr-bench", "--data", str(tmp_path / "missing.tsv")])
    assert result.exit_code == 2 and "not found" in result.stderr
    wrong = tmp_path / "notes.tsv"
    wrong.write_text("just,some\ncsv,text\n")
    result = runner.invoke(
        app, ["eval", "hr-bench", "--data", str(wrong), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    result = runner.invoke(app, ["eval", "hr-bench", "--data", str(wrong), "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard" in result.stderr


@pytest.mark.slow
def test_eval_cli_with_the_trained_local_model(
    tmp_path: Path, hr_bench: Path, trained_internvl_path: Path
) -> None:
    out = tmp_path / "cli"
    args = [
        "eval",
        "hr-bench",
        "--data",
        str(hr_bench),
        "--model",
        f"hf:{trained_internvl_path}",
        "--method",
        "both",
        "--out",
        str(out),
        "--concurrency",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = lines(out)
    assert len(records) == 12
    zoom = [r for r in records if r["method"] == "zoom-refine" and r["status"] == "ok"]
    # The protocol-trained model answers B, then rechecks to A.
    assert all(r["initial_answer"] == "B" and r["answer"] == "A" for r in zoom)
    assert "zoom-refine" in result.stdout


LAYOUTS = {
    "hr-bench-tsv": "hr-bench",
    "hr-bench-parquet": "hr-bench",
    "mme-json": "mme-realworld",
    "mme-tsv": "mme-realworld",
    "mme-lite": "mme-realworld",
    "vstar-folder": "vstar",
    "vstar-jsonl": "vstar",
}


@pytest.fixture(scope="module")
def every_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fixtures.write_all(tmp_path_factory.mktemp("fixtures"))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_runs_end_to_end_with_a_scripted_model(
    layout: str, every_fixture: dict[str, Path], tmp_path: Path
) -> None:
    benchmark = LAYOUTS[layout]
    run = EvalPlan(
        benchmark=benchmark,  # type: ignore[arg-type]
        data=every_fixture[layout],
        out=tmp_path / layout,
        methods=("baseline", "zoom-refine"),
        concurrency=2,
    )
    summary = run_eval(run, ZoomContext(model=RuleVisionModel()))
    records = lines(run.out)
    ok = [r for r in records if r["status"] == "ok"]
    bad = [r for r in records if r["status"] == "error"]
    assert ok and len(bad) == 2  # each fixture holds exactly one malformed row, × 2 methods
    assert all(r["correct"] == (r["answer"] == r["ground_truth"]) for r in ok)
    assert set(summary["methods"]) == {"baseline", "zoom-refine"}
    for method in summary["methods"].values():
        assert sorted(method["error_ids"]) == sorted({r["id"] for r in bad})


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["hr-bench-parquet", "mme-json", "vstar-folder"])
def test_every_benchmark_runs_with_the_trained_local_model(
    layout: str, every_fixture: dict[str, Path], tmp_path: Path, trained_internvl_path: Path
) -> None:
    out = tmp_path / layout
    result = runner.invoke(
        app,
        [
            "eval",
            LAYOUTS[layout],
            "--data",
            str(every_fixture[layout]),
            "--out",
            str(out),
            "--model",
            f"hf:{trained_internvl_path}",
            "--limit",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [r for r in lines(out) if r["status"] == "ok"]
    assert records and all(r["steps"][-1]["node"] == "refine" for r in records)


def test_eval_with_a_trace_db_checkpoints_every_run(tmp_path: Path, hr_bench: Path) -> None:
    from zoom_refine.graphs.traces import list_runs, read_trace

    db = tmp_path / "traces.sqlite"
    run_eval(
        plan(tmp_path, hr_bench, methods=("baseline", "zoom-refine"), limit=2, trace_db=db),
        ZoomContext(model=RuleVisionModel()),
    )
    records = lines(tmp_path / "run")
    threads = {r["thread_id"] for r in records}
    keys = {thread.rsplit(":", 1)[0] for thread in threads}
    assert keys == {"baseline:0", "baseline:1", "zoom-refine:0", "zoom-refine:1"}
    assert len(threads) == 4 and {run.thread_id for run in list_runs(db)} == threads
    trace = read_trace(db, "zoom-refine:0")  # a sample's key names its latest run
    assert "refine" in [step.node for step in trace.steps]
