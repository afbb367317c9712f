"""Replay vs running the grid: model calls and seconds of a 3 x 4 grid of hops x thresholds.

Runs, on `data synth` scenes with the protocol-trained tiny InternVL3 (`zoom_refine.testing`,
real processor, chat template and generation on CPU):

- the grid: `max_hops` 1, 2, 3 x `confidence_threshold` 0.5, 0.7, 0.9, 0.95, every cell a real
  run (`evals.grid.run_grid`);
- replay: one `--max-hops 3 --always-zoom` run, then every cell replayed from it
  (`evals.replay`, no model call).

Prints the model calls and seconds of each, their ratio (the target: replay costs at most 1/4 of
the grid's model calls), and whether every replayed cell equals its real run.

The tiny model always states confidence 0.9, so only the 0.95 cells zoom again: the grid's
cheapest case. A model that is less often sure makes the grid dearer and the ratio smaller; the
ratio's bound for 3 x 4 is 2H = 6 calls per sample against at least 12 x 2 = 24.

    python benchmarks/replay.py [--samples 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from zoom_refine.evals.grid import run_grid
from zoom_refine.evals.replay import replay_outcomes, replay_run
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.evals.synth import write_synth_tsv
from zoom_refine.testing import protocol_context, trained_protocol_model

HOPS = (1, 2, 3)
THRESHOLDS = (0.5, 0.7, 0.9, 0.95)


def records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def calls(folder: Path) -> int:
    return sum(int((r.get("usage") or {}).get("model_calls", 0)) for r in records(folder))


def same(real: list[dict[str, Any]], replayed: list[Any]) -> bool:
    """Every replayed (id, method) has the real run's answer, model calls and tokens."""
    by_key = {(str(r["id"]), r["method"]): r for r in real}
    for outcome in replayed:
        record = by_key[(outcome.id, outcome.method)]
        usage = record.get("usage") or {}
        if (outcome.answer, outcome.model_calls, outcome.prompt_tokens) != (
            record.get("answer"),
            usage.get("model_calls"),
            usage.get("input_tokens"),
        ):
            return False
    return len(replayed) == len(real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--side", type=int, default=2048)
    args = parser.parse_args()

    tiny = trained_protocol_model("internvl3")
    context = protocol_context("internvl3", f"hf:{tiny}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = write_synth_tsv(root / "synth.tsv", args.samples, side=args.side, seed=1)
        plan = EvalPlan(benchmark="hr-bench", data=data, out=root / "grid")
        run_eval(dataclasses.replace(plan, out=root / "warm", limit=1), context)  # load once

        started = time.perf_counter()
        grid = [
            f"max_hops={','.join(map(str, HOPS))}",
            f"confidence_threshold={','.join(map(str, THRESHOLDS))}",
        ]
        cells = run_grid(plan, context, grid)
        grid_seconds = time.perf_counter() - started
        grid_calls = sum(calls(cell.folder) for cell in cells)

        started = time.perf_counter()
        always = dataclasses.replace(plan, out=root / "always")
        run_eval(always, dataclasses.replace(context, max_hops=max(HOPS), always_zoom=True))
        run_seconds = time.perf_counter() - started
        started = time.perf_counter()
        replay = replay_run(always.out, list(HOPS), list(THRESHOLDS))
        replay_seconds = time.perf_counter() - started
        replay_calls = calls(always.out)

        recorded = records(always.out)
        exact = all(
            same(
                records(cell.folder),
                replay_outcomes(
                    recorded,
                    cell.cell.settings["max_hops"],
                    cell.cell.settings["confidence_threshold"],
                ),
            )
            for cell in cells
        )

    print(
        f"{platform.processor() or platform.machine()}, {args.samples} samples of {args.side} px, 3 x 4 grid"
    )
    print(f"grid, every cell run:      {grid_calls:4d} model calls  {grid_seconds:7.1f} s")
    print(
        f"replay (always-zoom run):  {replay_calls:4d} model calls  {run_seconds + replay_seconds:7.1f} s"
        f"  (the run {run_seconds:.1f} s + replaying {len(replay.rows)} rows {replay_seconds * 1000:.0f} ms)"
    )
    print(f"ratio of model calls: {replay_calls / grid_calls:.3f} (target <= 0.25)")
    print(f"ratio of seconds:     {(run_seconds + replay_seconds) / grid_seconds:.3f}")
    print(f"every replayed cell equals its real run: {'yes' if exact else 'NO'}")


if __name__ == "__main__":
    main()
