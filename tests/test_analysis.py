"""The statistics of `report EXP`, checked against hand-computed values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from zoom_refine.evals import analysis


def test_bootstrap_interval_holds_the_accuracy_and_narrows_with_samples() -> None:
    small = [True, False] * 10
    large = [True, False] * 500
    low, high = analysis.bootstrap_interval(small)
    assert low < 0.5 < high
    wide = high - low
    low, high = analysis.bootstrap_interval(large)
    assert low < 0.5 < high and high - low < wide / 4  # ~1/sqrt(50) as wide
    assert analysis.bootstrap_interval(small) == analysis.bootstrap_interval(small)  # seeded
    assert analysis.bootstrap_interval([True] * 7) == (1.0, 1.0)
    assert analysis.bootstrap_interval([]) == (0.0, 0.0)


def test_mcnemar_exact_p_values() -> None:
    reference = {str(i): i < 10 for i in range(20)}
    other = {str(i): i < 2 or i >= 18 for i in range(20)}  # 8 fixed by reference, 2 by other
    result = analysis.mcnemar(reference, other)
    assert (result.samples, result.only_reference, result.only_other) == (20, 8, 2)
    expected = 2 * sum(math.comb(10, k) for k in range(3)) / 2**10  # 2 * P(X <= 2), X~B(10,.5)
    assert result.p_value == pytest.approx(expected) == pytest.approx(0.109375)
    assert analysis.mcnemar(reference, reference).p_value == 1.0
    assert analysis.mcnemar({"a": True}, {"b": False}).samples == 0  # no shared samples


def _record(
    truth: str, steps: list[tuple[str, int, str | None, float | None]], **extra: Any
) -> dict[str, Any]:
    return {
        "id": extra.pop("id", "x"),
        "ground_truth": truth,
        "steps": [
            {
                "node": node,
                "hop": hop,
                "answer": answer,
                "confidence": confidence,
                "confidence_source": "verbal",
            }
            for node, hop, answer, confidence in steps
        ],
        **extra,
    }


def test_hop_changes_count_right_to_wrong_and_back() -> None:
    records = [
        # B (wrong) → A (right) at hop 1, A → C (wrong) at hop 2
        _record(
            "A",
            [
                ("localize", 0, "B", None),
                ("refine", 1, "A", 0.5),
                ("localize", 1, "A", None),
                ("refine", 2, "C", 0.4),
            ],
        ),
        # right first, a refine with no answer keeps it (no change)
        _record("A", [("localize", 0, "A", None), ("refine", 1, None, 0.9)]),
    ]
    changes = analysis.hop_changes(records)
    assert [(c.hop, c.samples, c.right_to_wrong, c.wrong_to_right) for c in changes] == [
        (1, 2, 0, 1),
        (2, 1, 1, 0),
    ]


def test_box_iou_and_target_scores_per_hop() -> None:
    assert analysis.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert analysis.box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert analysis.coverage([0, 0, 100, 100], [10, 10, 20, 20]) == 1.0
    record = {
        "id": "s1",
        "views": [
            {"id": "img0", "box": [0, 0, 1000, 1000], "hop": 0},
            {"id": "img1", "box": [0, 0, 100, 100], "hop": 1},  # holds the target
            {"id": "img2", "box": [40, 40, 60, 60], "hop": 2},  # tight on it
        ],
    }
    scores = analysis.hop_box_scores(
        [record, {"id": "no-target", "views": []}], {"s1": (40, 40, 60, 60)}
    )
    assert [(s.hop, s.crops, s.holds_target) for s in scores] == [(1, 1, 1.0), (2, 1, 1.0)]
    assert scores[0].mean_iou == pytest.approx(400 / 10000)
    assert scores[1].mean_iou == pytest.approx(1.0)


def test_calibration_bins_and_ece() -> None:
    # 0.9-confident four times, right twice: bin [0.9, 1.0) is 0.4 over-confident
    # 0.3-confident twice, wrong once: bin [0.3, 0.4) is 0.2 under-confident
    pairs = [
        (0.9, True),
        (0.9, True),
        (0.9, False),
        (0.9, False),
        (0.3, True),
        (0.3, False),
        (1.0, True),
    ]
    result = analysis.calibration("verbal", pairs)
    assert [(b.low, b.count) for b in result.bins] == [(0.3, 2), (0.9, 5)]
    top = result.bins[1]
    assert top.mean_confidence == pytest.approx(4.6 / 5) and top.accuracy == pytest.approx(3 / 5)
    expected = (2 * abs(0.5 - 0.3) + 5 * abs(0.6 - 0.92)) / 7
    assert result.ece == pytest.approx(expected)
    perfect = analysis.calibration("token", [(0.75, True)] * 3 + [(0.75, False)])
    assert perfect.ece == pytest.approx(0.0)


def test_confidence_pairs_by_source_use_the_answer_after_each_refine() -> None:
    record = _record(
        "A",
        [
            ("localize", 0, "B", None),
            ("refine", 1, None, 0.8),
            ("localize", 1, "B", None),
            ("refine", 2, "A", 0.6),
        ],
    )
    record["steps"][3]["confidence_source"] = "token"
    pairs = analysis.confidence_pairs([record])
    assert pairs == {"verbal": [(0.8, False)], "token": [(0.6, True)]}


def test_pareto_frontier_keeps_what_no_cheaper_point_beats() -> None:
    def point(label: str, tokens: float, accuracy: float) -> analysis.CostPoint:
        return analysis.CostPoint(label, accuracy, tokens, 0.0, 0.0)

    points = [
        point("a", 100, 0.5),
        point("b", 200, 0.45),
        point("c", 300, 0.7),
        point("d", 300, 0.6),
        point("e", 50, 0.2),
    ]
    assert [p.label for p in analysis.pareto_frontier(points)] == ["e", "a", "c"]
