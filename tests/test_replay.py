"""`replay`: every stopping rule's outcome from one `--always-zoom` run equals a real run of that
cell, record for record (answers, correctness, stop reasons, model calls, tokens)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from experiment_fixtures import HopRuleModel, synth_data
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.evals.grid import run_grid
from zoom_refine.evals.replay import (
    ROW_KEYS,
    Outcome,
    replay_outcomes,
    replay_run,
    summarize_outcomes,
)
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.tools.errors import InvalidInputError, NotReplayableError

HOPS = (1, 2, 3)
THRESHOLDS = (0.5, 0.7, 0.9)


def _records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _real_outcome(record: Mapping[str, Any]) -> Outcome:
    usage = record.get("usage") or {}
    return Outcome(
        id=str(record["id"]),
        method=str(record["method"]),
        answer=record.get("answer"),
        correct=bool(record.get("correct")),
        stop_reason=record.get("stop_reason"),
        hops=len(record.get("views") or []) - 1,
        confidence=record.get("confidence"),
        model_calls=int(usage.get("model_calls", 0)),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        seconds=0.0,
    )


def _comparable(outcome: Outcome) -> Outcome:
    return dataclasses.replace(outcome, seconds=0.0)  # wall time is measured, never equal


def _run_cells_and_always(
    tmp_path: Path,
    context: ZoomContext,
    hops: tuple[int, ...],
    thresholds: tuple[float, ...],
    n: int,
) -> tuple[EvalPlan, Path]:
    data = synth_data(tmp_path, n=n)
    plan = EvalPlan(
        benchmark="hr-bench", data=data, out=tmp_path / "exp", methods=("baseline", "zoom-refine")
    )
    grid = [
        "max_hops=" + ",".join(map(str, hops)),
        "confidence_threshold=" + ",".join(map(str, thresholds)),
    ]
    run_grid(plan, context, grid)
    always = plan.out / "always"
    run_eval(
        dataclasses.replace(plan, out=always),
        dataclasses.replace(context, max_hops=max(hops), always_zoom=True),
    )
    return plan, always


def _assert_replay_equals_cells(
    plan: EvalPlan, always: Path, hops: tuple[int, ...], thresholds: tuple[float, ...]
) -> set[tuple[int, ...]]:
    """Each cell's replayed outcomes and totals equal its real run's; returns the distinct
    (calls, correct) totals seen, so the caller can check the cells really differ."""
    recorded = _records(always)
    distinct = set()
    for hop in hops:
        for threshold in thresholds:
            cell = plan.out / f"max_hops={hop},confidence_threshold={threshold}"
            real = sorted(
                (_real_outcome(r) for r in _records(cell)), key=lambda o: (o.id, o.method)
            )
            replayed = sorted(
                replay_outcomes(recorded, hop, threshold), key=lambda o: (o.id, o.method)
            )
            assert [_comparable(o) for o in replayed] == [_comparable(o) for o in real], cell.name
            rows = summarize_outcomes(replayed, hop, threshold)
            real_rows = summarize_outcomes(real, hop, threshold)
            strip = ("seconds",)
            assert [{k: v for k, v in row.as_json().items() if k not in strip} for row in rows] == [
                {k: v for k, v in row.as_json().items() if k not in strip} for row in real_rows
            ]
            mine = next(row for row in rows if row.method == "zoom-refine")
            distinct.add((mine.model_calls, mine.correct, mine.prompt_tokens))
    return distinct


def test_replay_equals_real_cells_record_for_record(tmp_path: Path) -> None:
    """A 3 x 3 grid run for real with a model whose replies and confidences vary by sample and
    hop, against one `--max-hops 3 --always-zoom` run replayed."""
    plan, always = _run_cells_and_always(
        tmp_path, ZoomContext(model=HopRuleModel()), HOPS, THRESHOLDS, 9
    )
    distinct = _assert_replay_equals_cells(plan, always, HOPS, THRESHOLDS)
    assert len(distinct) >= 4  # the cells differ, so equality is not a coincidence
    # replayed at its own hops and a threshold no stated confidence reaches, a record whose
    # every refine stated one is the always-zoom record itself
    records = [r for r in _records(always) if r["method"] == "zoom-refine"]
    stated = [
        r
        for r in records
        if all(s.get("confidence") is not None for s in r["steps"] if s["node"] == "refine")
    ]
    assert stated
    replayed = {o.id: _comparable(o) for o in replay_outcomes(stated, 3, 1.0)}
    assert replayed == {r["id"]: _comparable(_real_outcome(r)) for r in stated}


@pytest.mark.slow
def test_replay_equals_real_cells_with_the_tiny_model(tmp_path: Path) -> None:
    """The same with the tiny protocol-trained InternVL3 (`hf:`): its localize and zoom-again
    replies differ by hop; its refine states 0.9, so threshold 0.95 zooms again."""
    from zoom_refine.testing import protocol_context, trained_protocol_model

    context = protocol_context("internvl3", f"hf:{trained_protocol_model('internvl3')}")
    hops, thresholds = (1, 2), (0.7, 0.95)
    plan, always = _run_cells_and_always(tmp_path, context, hops, thresholds, 2)
    distinct = _assert_replay_equals_cells(plan, always, hops, thresholds)
    assert len(distinct) == 2  # (2 calls) everywhere but max_hops 2 at 0.95 (4 calls)


def _invoke(*args: str) -> tuple[int, str, str]:
    from zoom_refine.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def always_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("replay")
    data = synth_data(root, n=6)
    plan = EvalPlan(
        benchmark="hr-bench", data=data, out=root / "always", methods=("zoom-refine", "baseline")
    )
    run_eval(plan, ZoomContext(model=HopRuleModel(), max_hops=3, always_zoom=True))
    stopping = dataclasses.replace(plan, out=root / "stopping")
    run_eval(stopping, ZoomContext(model=HopRuleModel(), max_hops=3))
    return plan.out, stopping.out


def test_replay_json_rows_have_exactly_the_keys(always_run: tuple[Path, Path]) -> None:
    code, out, err = _invoke(
        "replay",
        str(always_run[0]),
        "--max-hops",
        "1,3",
        "--confidence-threshold",
        "0.6,0.9",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 * 2 * 2  # hops x thresholds x methods
    assert all(tuple(row) == ROW_KEYS for row in rows)
    assert {(row["max_hops"], row["confidence_threshold"]) for row in rows} == {
        (1, 0.6),
        (1, 0.9),
        (3, 0.6),
        (3, 0.9),
    }
    assert all(row["total"] == 6 and row["accuracy"] == row["correct"] / 6 for row in rows)
    assert "inexact" not in err  # a ready in-process model: exact


def test_replay_table_defaults_to_every_hop(always_run: tuple[Path, Path]) -> None:
    code, out, _ = _invoke("replay", str(always_run[0]))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["method", "max_hops", "threshold"]
    assert len(lines) == 1 + 3 * 3 * 2


@pytest.mark.reliability(
    "replay", "a run not made with --always-zoom", "one line saying so, exit 2"
)
def test_a_run_without_always_zoom_is_refused(always_run: tuple[Path, Path]) -> None:
    code, out, err = _invoke("replay", str(always_run[1]))
    assert code == 2
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and "--always-zoom" in lines[0]
    with pytest.raises(NotReplayableError):
        replay_run(always_run[1], None, [0.5])


@pytest.mark.reliability(
    "replay", "bad --max-hops or --confidence-threshold lists", "one line, exit 2"
)
@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--max-hops", "4", "above the run's max_hops 3"),
        ("--max-hops", "0,1", "--max-hops"),
        ("--max-hops", "one", "--max-hops"),
        ("--confidence-threshold", "1.5", "--confidence-threshold"),
        ("--confidence-threshold", "", "--confidence-threshold"),
    ],
)
def test_bad_replay_lists(
    always_run: tuple[Path, Path], option: str, value: str, says: str
) -> None:
    code, out, err = _invoke("replay", str(always_run[0]), option, value)
    assert code == 2
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0]


@pytest.mark.reliability(
    "replay", "a run made against a model server", "replays, with a note that it may be inexact"
)
def test_a_served_run_is_replayed_with_an_inexact_note(
    tmp_path: Path, always_run: tuple[Path, Path]
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    config = json.loads((always_run[0] / "config.json").read_text())
    config["model"] = "openai:internvl3"
    config["context"]["base_url"] = "http://127.0.0.1:8000/v1"
    (served / "config.json").write_text(json.dumps(config))
    (served / "predictions.jsonl").write_bytes((always_run[0] / "predictions.jsonl").read_bytes())
    code, out, err = _invoke("replay", str(served), "--json")
    assert code == 0
    assert "inexact" in err and "served" in err
    assert json.loads(out)  # the rows still come


def test_hops_above_the_run_are_refused_in_the_api(always_run: tuple[Path, Path]) -> None:
    with pytest.raises(InvalidInputError, match="above the run's max_hops 3"):
        replay_run(always_run[0], [2, 4], [0.5])
