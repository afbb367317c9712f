"""Eval traces: every run of a sample is a new trace thread, so reruns never continue an old
run's checkpoints; a failure to store a trace stops the run instead of being recorded as the
sample's error."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest

from zoom_refine import ZoomContext
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.graphs.traces import list_runs, read_trace, sample_runs
from zoom_refine.testing import RuleVisionModel
from zoom_refine.tools.errors import StorageError


def lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def shape(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a clean run holds: its steps' nodes and hops, its views and calls, its answer."""
    steps = tuple((step["node"], step["hop"]) for step in record["steps"])
    views = tuple((view["id"], view["hop"]) for view in record["views"])
    return steps, views, record["usage"]["model_calls"], record["answer"], record["stop_reason"]


@pytest.fixture
def hr_bench(tmp_path: Path) -> Path:
    return fixtures.write_hr_bench_tsv(tmp_path / "data")


def evaluate(data: Path, out: Path, db: Path, **options: Any) -> list[dict[str, Any]]:
    plan = EvalPlan(
        benchmark="hr-bench",
        data=data,
        out=out,
        methods=("baseline", "zoom-refine"),
        trace_db=db,
        **options,
    )
    run_eval(plan, ZoomContext(model=RuleVisionModel()))
    return [r for r in lines(out) if r["status"] == "ok"]


@pytest.mark.reliability(
    "Traces",
    "the same samples run three times into one --trace-db (reruns, a second eval)",
    "a new thread per run: every record equals the first run's (steps, views, calls, answer); "
    "`trace DB METHOD:ID` shows the latest run, all three are listed",
)
def test_rerunning_samples_into_one_trace_db_never_continues_an_old_run(
    tmp_path: Path, hr_bench: Path
) -> None:
    db = tmp_path / "traces.sqlite"
    first = evaluate(hr_bench, tmp_path / "one", db, limit=3)
    again = evaluate(hr_bench, tmp_path / "two", db, limit=3)
    third = evaluate(hr_bench, tmp_path / "three", db, limit=3)
    by_key = {(r["id"], r["method"]): shape(r) for r in first}
    for later in (again, third):
        assert {(r["id"], r["method"]): shape(r) for r in later} == by_key
    threads = [r["thread_id"] for r in (*first, *again, *third)]
    assert len(set(threads)) == len(threads) == 3 * len(first)
    runs = sample_runs(db, "zoom-refine:0")
    zoom0 = [r["thread_id"] for r in (*first, *again, *third) if r["id"] == "0"]
    assert runs == [t for t in zoom0 if t.startswith("zoom-refine:")]
    latest = read_trace(db, "zoom-refine:0")
    assert latest.thread_id == runs[-1]
    assert [step.node for step in latest.steps] == ["localize", "crop", "refine"]
    assert [view["id"] for view in latest.state["views"]] == ["img0", "img1"]
    assert {run.thread_id for run in list_runs(db)} == set(threads)
    baseline = read_trace(db, "baseline:0")  # replayed with the graph that wrote it
    assert [step.node for step in baseline.steps] == ["answer"]
    assert baseline.steps[0].record is not None and baseline.steps[0].record["raw"] == "A"


@pytest.mark.reliability(
    "Traces",
    "two processes evaluate into one --trace-db at once",
    "both exit 0; every record equals a clean run's; every thread holds one run",
)
def test_two_processes_share_one_trace_db(tmp_path: Path, hr_bench: Path) -> None:
    db = tmp_path / "traces.sqlite"
    clean = {(r["id"], r["method"]): shape(r) for r in evaluate(hr_bench, tmp_path / "c", db)}
    script = (
        "import sys; from pathlib import Path; from zoom_refine import ZoomContext;"
        "from zoom_refine.evals.runner import EvalPlan, run_eval;"
        "from zoom_refine.testing import RuleVisionModel;"
        "run_eval(EvalPlan(benchmark='hr-bench', data=Path(sys.argv[1]), out=Path(sys.argv[2]),"
        " methods=('baseline', 'zoom-refine'), trace_db=Path(sys.argv[3]), concurrency=2),"
        " ZoomContext(model=RuleVisionModel()))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(hr_bench), str(tmp_path / name), str(db)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for name in ("p1", "p2"):
        records = [r for r in lines(tmp_path / name) if r["status"] == "ok"]
        assert {(r["id"], r["method"]): shape(r) for r in records} == clean
        for record in records:  # the thread holds exactly this run
            trace = read_trace(db, record["thread_id"])
            assert trace.state["answer"] == record["answer"]
            assert len(trace.state["views"]) == len(record["views"])


@pytest.mark.reliability(
    "Traces",
    "the trace database cannot be written mid-run (read-only, as a full disk)",
    "the run stops with one StorageError naming the cause; no sample is recorded as an error; "
    "the predictions kept are intact and a resume completes the run",
)
def test_a_trace_db_that_cannot_be_written_stops_the_run(tmp_path: Path, hr_bench: Path) -> None:
    db = tmp_path / "traces.sqlite"
    out = tmp_path / "run"
    evaluate(hr_bench, out, db, limit=2)
    before = (out / "predictions.jsonl").read_bytes()
    with sqlite3.connect(db) as conn:  # every later checkpoint write fails inside the graph
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON checkpoints "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    with pytest.raises(StorageError, match="disk I/O error"):
        evaluate(hr_bench, out, db)
    after = (out / "predictions.jsonl").read_bytes()
    assert after.startswith(before)
    assert all(r["status"] != "error" or "bad row" in r["error"] for r in lines(out))
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER refuse")
    records = evaluate(hr_bench, out, db)  # a plain resume finishes what the failure stopped
    assert len({(r["id"], r["method"]) for r in records}) == len(records) == 10
