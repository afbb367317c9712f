"""Statistics of multi-hop experiments: intervals, paired tests, per-hop changes, box IoU,
calibration and cost frontiers. Pure functions over prediction records (`evals.runner`) and
replay rows (`evals.replay`); no plotting, no files (`evals.experiment_report` draws them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CALIBRATION_BINS = 10
Box = tuple[float, float, float, float]


def bootstrap_interval(
    correct: Sequence[bool],
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (samples drawn with replacement,
    `resamples` times, from a fixed seed so a report is reproducible). (0, 0) for no samples."""
    if not correct:
        return 0.0, 0.0
    values = np.asarray(correct, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of two cells on the samples both ran: `only_reference` right only in
    the reference, `only_other` right only in the other; exact two-sided binomial p-value."""

    samples: int
    only_reference: int
    only_other: int
    p_value: float


def mcnemar(reference: Mapping[str, bool], other: Mapping[str, bool]) -> McNemar:
    """McNemar's exact test on the ids present in both (correctness by sample id)."""
    shared = [key for key in reference if key in other]
    only_reference = sum(1 for key in shared if reference[key] and not other[key])
    only_other = sum(1 for key in shared if other[key] and not reference[key])
    return McNemar(
        samples=len(shared),
        only_reference=only_reference,
        only_other=only_other,
        p_value=exact_binomial_p(only_reference, only_reference + only_other),
    )


def exact_binomial_p(smaller_or_any: int, total: int) -> float:
    """Two-sided p of seeing a split at least this uneven among `total` discordant pairs
    (Binomial(total, 1/2)); 1.0 when there are none."""
    if total == 0:
        return 1.0
    low = min(smaller_or_any, total - smaller_or_any)
    tail = sum(math.comb(total, k) for k in range(low + 1)) / 2.0**total
    return min(1.0, 2.0 * tail)


def hop_answers(record: Mapping[str, Any]) -> list[tuple[str | None, float | None, str | None]]:
    """(answer, confidence, confidence source) after each hop of a Zoom-Refine record: index 0
    the first look's answer (no confidence), index k the answer once hop k was refined (a refine
    with no answer keeps the one before, as the graph does)."""
    answers: list[tuple[str | None, float | None, str | None]] = []
    current: str | None = None
    for step in record.get("steps") or []:
        if step.get("node") == "localize" and step.get("hop", 0) == 0:
            current = step.get("answer")
            answers.append((current, None, None))
        elif step.get("node") == "refine":
            current = step.get("answer") or current
            answers.append((current, step.get("confidence"), step.get("confidence_source")))
    return answers


@dataclass(frozen=True)
class HopChange:
    """At hop `hop`: samples that reached it, and how many answers it turned right → wrong and
    wrong → right (against the answer after the hop before)."""

    hop: int
    samples: int
    right_to_wrong: int
    wrong_to_right: int


def hop_changes(records: Iterable[Mapping[str, Any]]) -> list[HopChange]:
    """Per hop (1, 2, …): answers changed by that hop's refine, over the records that reached it."""
    tallies: dict[int, list[int]] = {}
    for record in records:
        truth = record.get("ground_truth")
        answers = [answer for answer, _, _ in hop_answers(record)]
        for hop in range(1, len(answers)):
            before, after = answers[hop - 1] == truth, answers[hop] == truth
            tally = tallies.setdefault(hop, [0, 0, 0])
            tally[0] += 1
            tally[1] += int(before and not after)
            tally[2] += int(after and not before)
    return [HopChange(hop, *tallies[hop]) for hop in sorted(tallies)]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes in the same frame."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def coverage(box: Sequence[float], target: Sequence[float]) -> float:
    """Share of the target's area inside `box` (1.0: the crop holds the whole target)."""
    width = max(0.0, min(box[2], target[2]) - max(box[0], target[0]))
    height = max(0.0, min(box[3], target[3]) - max(box[1], target[1]))
    area = (target[2] - target[0]) * (target[3] - target[1])
    return width * height / area if area > 0 else 0.0


@dataclass(frozen=True)
class HopBoxes:
    """At hop `hop`: crops scored against their sample's target box (original pixels)."""

    hop: int
    crops: int
    mean_iou: float
    holds_target: float
    """Share of crops holding at least half of the target's area."""


def hop_box_scores(
    records: Iterable[Mapping[str, Any]], targets: Mapping[str, Sequence[float]]
) -> list[HopBoxes]:
    """Per hop: IoU of each crop (`views` of that hop, the best of several regions) with the
    record's target box; records without a target are left out."""
    ious: dict[int, list[float]] = {}
    holds: dict[int, list[bool]] = {}
    for record in records:
        target = targets.get(str(record.get("id")))
        if target is None:
            continue
        by_hop: dict[int, list[Sequence[float]]] = {}
        for view in record.get("views") or []:
            if view.get("hop", 0) > 0 and view.get("box"):
                by_hop.setdefault(int(view["hop"]), []).append(view["box"])
        for hop, boxes in by_hop.items():
            ious.setdefault(hop, []).append(max(box_iou(box, target) for box in boxes))
            holds.setdefault(hop, []).append(max(coverage(box, target) for box in boxes) >= 0.5)
    return [
        HopBoxes(
            hop=hop,
            crops=len(ious[hop]),
            mean_iou=sum(ious[hop]) / len(ious[hop]),
            holds_target=sum(holds[hop]) / len(holds[hop]),
        )
        for hop in sorted(ious)
    ]


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True)
class Calibration:
    """A reliability diagram's bins and the expected calibration error (count-weighted mean of
    |accuracy − confidence| over the bins)."""

    source: str
    bins: list[CalibrationBin]
    ece: float
    count: int


def confidence_pairs(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[float, bool]]]:
    """(confidence, the answer after that refine is right) for every refine that stated one,
    by confidence source (`verbal`, `token`)."""
    pairs: dict[str, list[tuple[float, bool]]] = {}
    for record in records:
        truth = record.get("ground_truth")
        for answer, confidence, source in hop_answers(record)[1:]:
            if isinstance(confidence, (int, float)):
                pairs.setdefault(source or "verbal", []).append(
                    (float(confidence), answer == truth)
                )
    return pairs


def calibration(
    source: str, pairs: Sequence[tuple[float, bool]], bins: int = CALIBRATION_BINS
) -> Calibration:
    """Equal-width bins over 0–1 (a confidence of 1.0 falls in the last)."""
    grouped: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, right in pairs:
        index = min(bins - 1, max(0, int(confidence * bins)))
        grouped[index].append((confidence, right))
    rows = []
    ece = 0.0
    for index, members in enumerate(grouped):
        if not members:
            continue
        mean_confidence = sum(c for c, _ in members) / len(members)
        accuracy = sum(r for _, r in members) / len(members)
        ece += len(members) * abs(accuracy - mean_confidence)
        rows.append(
            CalibrationBin(
                index / bins, (index + 1) / bins, len(members), mean_confidence, accuracy
            )
        )
    total = len(pairs)
    return Calibration(source=source, bins=rows, ece=ece / total if total else 0.0, count=total)


@dataclass(frozen=True)
class CostPoint:
    """One point of an accuracy–cost chart: a label naming its settings, cost per sample."""

    label: str
    accuracy: float
    tokens_per_sample: float
    calls_per_sample: float
    seconds_per_sample: float


def pareto_frontier(points: Sequence[CostPoint]) -> list[CostPoint]:
    """The points no other point beats on both fewer tokens and higher accuracy, cheapest
    first (ties in tokens keep the more accurate)."""
    ordered = sorted(points, key=lambda point: (point.tokens_per_sample, -point.accuracy))
    frontier: list[CostPoint] = []
    for point in ordered:
        if not frontier or point.accuracy > frontier[-1].accuracy:
            frontier.append(point)
    return frontier


def per_sample(total: float, samples: int) -> float:
    return total / samples if samples else 0.0
