"""`--extractor official-baseline`: the Zoom-Refine repository's baseline scorer
(`evaluation/eval_acc.py`, xavier-yu114/Zoom-Refine fc6c1ad), checked against that script's own
outputs: golden data recorded by running it (`tests/golden/official/fc6c1ad.json`, section
`baseline_letters`: for each reply, the truth it scores correct, or None when it leaves the reply
out; section `scoring`: correct / denominator of prediction sets with failures). No copy of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zoom_refine.evals.scoring import extract_choice, summarize

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}
GOLDEN = Path(__file__).parent / "golden" / "official" / "fc6c1ad.json"
LETTERS = {
    item["reply"]: item["letter"]
    for item in json.loads(GOLDEN.read_text(encoding="utf-8"))["baseline_letters"]
}

EXPECTED = {
    "The answer is B": "E",  # the "e" of "The"
    "B": "B",
    "(c)": "C",
    "Answer: D": "A",  # the "A" of "Answer"
    "Based on the image, C": "B",
    "1234": None,
    "": None,
    "Rechecked Answer: C": "E",
    "Option E": "E",  # not offered: still read
    "Error: CUDA Out of Memory": "E",  # how the official baseline stores a failure
}


@pytest.mark.parametrize(("reply", "letter"), list(EXPECTED.items()))
def test_the_official_script_reads_these_letters_and_so_do_we(
    reply: str, letter: str | None
) -> None:
    assert LETTERS[reply] == letter  # what eval_acc.py did when it ran
    got = extract_choice(reply, OPTIONS, extractor="official-baseline", benchmark="hr-bench")
    assert got == letter


def test_the_same_rule_for_every_benchmark() -> None:
    for benchmark in ("hr-bench", "mme-realworld", "vstar"):
        got = extract_choice(
            "The answer is B", OPTIONS, extractor="official-baseline", benchmark=benchmark
        )
        assert got == "E"


def test_strict_reads_what_official_baseline_misreads() -> None:
    assert extract_choice("The answer is B", OPTIONS, benchmark="hr-bench") == "B"


def _record(i: int, raw: str | None, truth: str) -> dict[str, Any]:
    return {
        "id": str(i),
        "method": "baseline",
        "status": "ok" if raw is not None else "error",
        "ground_truth": truth,
        "raw": raw,
        "answer": None,
        "initial_answer": None,
        "options": OPTIONS,
        "fields": {},
    }


def _overall(records: list[dict[str, Any]], **options: Any) -> tuple[int, int]:
    summary = summarize("hr-bench", records, extractor="official-baseline", **options)
    overall = summary["methods"]["baseline"]["groups"]["overall"]
    return overall["correct"], overall["total"]


def test_the_official_denominator_leaves_out_unread_replies_only() -> None:
    rows = [("B", "B"), ("The answer is B", "B"), ("1234", "A"), ("(a)", "A"), ("", "C")]
    records = [_record(i, raw, truth) for i, (raw, truth) in enumerate(rows)]
    read = [(LETTERS.get(raw, raw.strip("()").upper() or None), truth) for raw, truth in rows]
    counted = [(letter, truth) for letter, truth in read if letter is not None]
    assert (
        _overall(records, skip_unanswered=True)
        == (sum(letter == truth for letter, truth in counted), len(counted))
        == (2, 3)
    )
    summary = summarize("hr-bench", records, extractor="official-baseline", skip_unanswered=True)
    assert summary["methods"]["baseline"]["skipped_ids"] == ["2", "4"]
    assert _overall(records)[1] == 5  # without --skip-unanswered every record counts


@pytest.mark.parametrize(("truth", "expected"), [("E", (1, 1)), ("A", (0, 1))])
def test_a_failed_sample_scores_as_the_official_error_text(
    truth: str, expected: tuple[int, int]
) -> None:
    """Issue item 4: the official baseline stores a failure as "Error: …", its scorer reads E
    from it and counts it: truth E scores 1/1, truth A 0/1 (the golden `scoring` sets hold
    failures too)."""
    assert LETTERS["Error: CUDA Out of Memory"] == "E"
    assert _overall([_record(0, None, truth)], skip_unanswered=True) == expected
