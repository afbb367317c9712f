"""Replay stopping rules from one `--always-zoom` run, with no model call.

A Zoom-Refine hop's prompt depends only on the hops before it (the question, the crops, the
previous answer), never on `max_hops` or `confidence_threshold`. A run made with `--max-hops H
--always-zoom` zooms until hop H whatever the confidence and records every model call (its
answer, confidence, tokens and seconds), so the run a cell (`max_hops` h ≤ H, threshold t) would
have made is a prefix of it: walk the steps, stop where the cell's rule stops
(`ZoomContext.stop_reason`: no stated confidence or one ≥ t → `confident`; hop h reached →
`max_hops`), and sum what came before. With deterministic decoding that prefix is exactly the
cell's run, model call for model call; with sampling, or a server whose batching changes the
numbers, the replies of a real rerun would differ anyway (`inexact_reasons` says when).

`baseline` records do not depend on hops or thresholds and are passed through; `agent` records
(the model decides when to zoom) are not replayable and are left out, with a note.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoom_refine.evals.report import merge_runs
from zoom_refine.tools.errors import InvalidInputError, NotReplayableError

NOT_ALWAYS_ZOOM = (
    "{run} was not made with --always-zoom, so it stopped early where it was confident and the "
    "later hops were never recorded; replay needs a run made with `zoom-refine eval … "
    "--max-hops H --always-zoom`"
)
HOPS_ABOVE_RUN = (
    "--max-hops {hops} is above the run's max_hops {recorded}: replay can only stop earlier"
)
BAD_HOPS = "--max-hops takes a comma list of whole numbers ≥ 1 (e.g. 1,2,3), got {value!r}"
BAD_THRESHOLDS = "--confidence-threshold takes a comma list of numbers within 0..1 (e.g. 0.5,0.7,0.9), got {value!r}"
REPLAYED_METHODS = ("zoom-refine", "baseline")
ROW_KEYS = (
    "method",
    "max_hops",
    "confidence_threshold",
    "accuracy",
    "correct",
    "total",
    "model_calls",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
)
"""The keys of a `replay --json` row, in order (`model_calls`, tokens and seconds are totals over
the samples)."""


@dataclass(frozen=True)
class Outcome:
    """What one (sample, method) run of a cell would have been, read from the recorded steps."""

    id: str
    method: str
    answer: str | None
    correct: bool
    stop_reason: str | None
    hops: int
    """Crops made (the hop of the last refine kept)."""
    confidence: float | None
    model_calls: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    """The record's wall time, scaled by the share of its model-call seconds kept."""


@dataclass(frozen=True)
class ReplayRow:
    """One cell × method of a replay: totals over the samples (see `ROW_KEYS`)."""

    method: str
    max_hops: int
    confidence_threshold: float
    accuracy: float
    correct: int
    total: int
    model_calls: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Replay:
    """Every replayed row, and notes: why it may be inexact, what was left out."""

    rows: list[ReplayRow]
    notes: list[str]
    config: dict[str, Any]


def parse_hops(value: str) -> list[int]:
    """`1,2,3` → [1, 2, 3] (BAD_HOPS otherwise)."""
    try:
        hops = [int(part) for part in value.split(",")]
    except ValueError as error:
        raise InvalidInputError(BAD_HOPS.format(value=value)) from error
    if not hops or any(hop < 1 for hop in hops):
        raise InvalidInputError(BAD_HOPS.format(value=value))
    return list(dict.fromkeys(hops))


def parse_thresholds(value: str) -> list[float]:
    """`0.5,0.7,0.9` → [0.5, 0.7, 0.9] (BAD_THRESHOLDS otherwise)."""
    try:
        thresholds = [float(part) for part in value.split(",")]
    except ValueError as error:
        raise InvalidInputError(BAD_THRESHOLDS.format(value=value)) from error
    if not thresholds or not all(0.0 <= item <= 1.0 for item in thresholds):
        raise InvalidInputError(BAD_THRESHOLDS.format(value=value))
    return list(dict.fromkeys(thresholds))


def recorded_context(config: Mapping[str, Any]) -> dict[str, Any]:
    context = config.get("context")
    return dict(context) if isinstance(context, dict) else {}


def check_replayable(run: Path | str, config: Mapping[str, Any]) -> int:
    """The run's `max_hops`, or NotReplayableError when it was not made with `--always-zoom`."""
    context = recorded_context(config)
    if context.get("always_zoom") is not True:
        raise NotReplayableError(NOT_ALWAYS_ZOOM.format(run=run))
    return int(context.get("max_hops", 1))


def inexact_reasons(config: Mapping[str, Any]) -> list[str]:
    """Why this run's replay may differ from real runs of the cells (empty: exact)."""
    reasons = []
    context = recorded_context(config)
    temperature = context.get("temperature", config.get("temperature"))
    if isinstance(temperature, (int, float)) and temperature > 0:
        reasons.append(
            f"sampling (temperature {temperature}): a rerun of a cell would draw other replies"
        )
    model = str(config.get("model", ""))
    if not model.startswith("hf:") and (context.get("base_url") or ":" in model):
        reasons.append(
            f"the model {model!r} is served: a server that batches requests together may "
            "compute slightly different numbers from run to run, so a rerun could differ"
        )
    return reasons


def replay_record(record: Mapping[str, Any], max_hops: int, threshold: float) -> Outcome:
    """The outcome of `record` (an `--always-zoom` run) under the rule (`max_hops`, `threshold`)."""
    steps: list[Mapping[str, Any]] = list(record.get("steps") or [])
    kept, answer, confidence, hops, stop = _walk(steps, max_hops, threshold)
    if stop is None:  # the recorded run ended by itself first (no box, a failed crop, …)
        stop = record.get("stop_reason")
        answer = record.get("answer") if len(kept) == len(steps) else answer
    usage = [step.get("usage") or {} for step in kept]
    return Outcome(
        id=str(record.get("id")),
        method=str(record.get("method")),
        answer=answer,
        correct=answer is not None and answer == record.get("ground_truth"),
        stop_reason=stop,
        hops=hops,
        confidence=confidence,
        model_calls=sum(int(counts.get("model_calls", 0)) for counts in usage),
        prompt_tokens=sum(int(counts.get("input_tokens", 0)) for counts in usage),
        completion_tokens=sum(int(counts.get("output_tokens", 0)) for counts in usage),
        seconds=_kept_seconds(record, steps, kept),
    )


def _walk(
    steps: Sequence[Mapping[str, Any]], max_hops: int, threshold: float
) -> tuple[list[Mapping[str, Any]], str | None, float | None, int, str | None]:
    """Walk the steps as the graph would with these settings: (steps kept, answer, confidence,
    hops, stop reason; None when the steps ran out first)."""
    kept: list[Mapping[str, Any]] = []
    answer: str | None = None
    confidence: float | None = None
    hops = 0
    for step in steps:
        kept.append(step)
        node = step.get("node")
        if node == "localize" and step.get("hop", 0) == 0:
            answer = step.get("answer")
        elif node == "refine":
            answer = step.get("answer") or answer
            confidence = step.get("confidence")
            hops = int(step.get("hop", hops))
            if confidence is None or confidence >= threshold:
                return kept, answer, confidence, hops, "confident"
            if hops >= max_hops:
                return kept, answer, confidence, hops, "max_hops"
    return kept, answer, confidence, hops, None


def _kept_seconds(
    record: Mapping[str, Any], steps: Sequence[Mapping[str, Any]], kept: Sequence[Mapping[str, Any]]
) -> float:
    total = float(record.get("seconds") or 0.0)
    called = sum(float(step.get("seconds") or 0.0) for step in steps)
    if called <= 0 or len(kept) == len(steps):
        return total
    share = sum(float(step.get("seconds") or 0.0) for step in kept) / called
    return total * share


def passthrough(record: Mapping[str, Any]) -> Outcome:
    """A record whose outcome no stopping rule changes (baseline, an error), as recorded."""
    usage = record.get("usage") or {}
    return Outcome(
        id=str(record.get("id")),
        method=str(record.get("method")),
        answer=record.get("answer"),
        correct=bool(record.get("correct")),
        stop_reason=record.get("stop_reason"),
        hops=max(0, len(record.get("views") or []) - 1),
        confidence=record.get("confidence"),
        model_calls=int(usage.get("model_calls", 0)),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        seconds=float(record.get("seconds") or 0.0),
    )


def replay_outcomes(
    records: Iterable[Mapping[str, Any]], max_hops: int, threshold: float
) -> list[Outcome]:
    """Every replayable record's outcome under (`max_hops`, `threshold`), in record order."""
    outcomes = []
    for record in records:
        method = record.get("method")
        if method not in REPLAYED_METHODS:
            continue
        if method == "zoom-refine" and record.get("status") == "ok":
            outcomes.append(replay_record(record, max_hops, threshold))
        else:
            outcomes.append(passthrough(record))
    return outcomes


def summarize_outcomes(
    outcomes: Sequence[Outcome], max_hops: int, threshold: float
) -> list[ReplayRow]:
    """One row per method (in the order first seen): totals over its samples."""
    rows = []
    for method in dict.fromkeys(outcome.method for outcome in outcomes):
        mine = [outcome for outcome in outcomes if outcome.method == method]
        correct = sum(outcome.correct for outcome in mine)
        rows.append(
            ReplayRow(
                method=method,
                max_hops=max_hops,
                confidence_threshold=threshold,
                accuracy=correct / len(mine) if mine else 0.0,
                correct=correct,
                total=len(mine),
                model_calls=sum(outcome.model_calls for outcome in mine),
                prompt_tokens=sum(outcome.prompt_tokens for outcome in mine),
                completion_tokens=sum(outcome.completion_tokens for outcome in mine),
                seconds=round(sum(outcome.seconds for outcome in mine), 3),
            )
        )
    return rows


def replay_records(
    config: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    hops: Sequence[int],
    thresholds: Sequence[float],
    *,
    run: Path | str = "the run",
) -> Replay:
    """Replay loaded records for every (hops, threshold) cell, hops slowest."""
    recorded = check_replayable(run, config)
    too_far = [hop for hop in hops if hop > recorded]
    if too_far:
        raise InvalidInputError(HOPS_ABOVE_RUN.format(hops=too_far[0], recorded=recorded))
    rows = [
        row
        for hop in hops
        for threshold in thresholds
        for row in summarize_outcomes(replay_outcomes(records, hop, threshold), hop, threshold)
    ]
    notes = [f"inexact: {reason}" for reason in inexact_reasons(config)]
    agent = sum(1 for record in records if record.get("method") not in REPLAYED_METHODS)
    if agent:
        notes.append(
            f"left out {agent} agent record(s): the model chooses when to zoom, no threshold"
        )
    errors = sum(1 for record in records if record.get("status") == "error")
    if errors:
        notes.append(f"{errors} error record(s) count as wrong in every cell, as recorded")
    return Replay(rows=rows, notes=notes, config=dict(config))


def replay_run(run: Path, hops: Sequence[int] | None, thresholds: Sequence[float]) -> Replay:
    """Replay the run folder `run` (shards: pass the first; see `report.merge_runs`).
    `hops` None: every hop limit 1..H of the run."""
    config, records = merge_runs([run])
    recorded = check_replayable(run, config)
    chosen = list(hops) if hops is not None else list(range(1, recorded + 1))
    return replay_records(config, records, chosen, thresholds, run=run)
