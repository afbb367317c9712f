"""`--extractor official-baseline`: the Zoom-Refine repository's baseline scorer, reproduced.

`official_eval_acc_letter` reimplements the extraction of xavier-yu114/Zoom-Refine (fc6c1ad)
`evaluation/eval_acc.py` line 75 (`re.search(r'\\(?\\s*([A-Ea-e])\\s*\\)?', …)`), written from
reading it; lines 81-85 skip a reply without a letter from the denominator.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from zoom_refine.evals.scoring import extract_choice, summarize

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}


def official_eval_acc_letter(reply: str) -> str | None:
    """evaluation/eval_acc.py lines 74-85: the first letter A-E in either case, optionally in
    parentheses, upper-cased; None when there is none."""
    match = re.search(r"\(?\s*([A-Ea-e])\s*\)?", reply)
    return match.group(1).upper() if match else None


GOLDEN = {
    "The answer is B": "E",  # the "e" of "The"
    "B": "B",
    "(c)": "C",
    "Answer: D": "A",  # the "A" of "Answer"
    "Based on the image, C": "B",
    "I think it is (D)": "D",  # no a-e before the "(D)"? "I think it is" has none
    "1234": None,
    "": None,
    "Rechecked Answer: C": "E",  # "R" is no letter A-E, "e" is
    "Option E": "E",  # not offered: still read
    "xyz": None,
}


@pytest.mark.parametrize(("reply", "letter"), list(GOLDEN.items()))
def test_golden_replies(reply: str, letter: str | None) -> None:
    assert official_eval_acc_letter(reply) == letter  # the golden value is the official rule's
    got = extract_choice(reply, OPTIONS, extractor="official-baseline", benchmark="hr-bench")
    assert got == letter


def test_the_same_rule_for_every_benchmark() -> None:
    for benchmark in ("hr-bench", "mme-realworld", "vstar"):
        reply = "The answer is B"
        assert (
            extract_choice(reply, OPTIONS, extractor="official-baseline", benchmark=benchmark)
            == "E"
        )


def test_strict_reads_what_official_baseline_misreads() -> None:
    assert extract_choice("The answer is B", OPTIONS, benchmark="hr-bench") == "B"


def _record(i: int, raw: str, truth: str) -> dict[str, Any]:
    return {
        "id": str(i),
        "method": "baseline",
        "status": "ok",
        "ground_truth": truth,
        "raw": raw,
        "answer": None,
        "initial_answer": None,
        "options": OPTIONS,
        "fields": {},
    }


def test_summary_with_the_official_denominator_equals_eval_acc() -> None:
    rows = [("B", "B"), ("The answer is B", "B"), ("1234", "A"), ("(a)", "A"), ("", "C")]
    records = [_record(i, raw, truth) for i, (raw, truth) in enumerate(rows)]
    extracted = [(official_eval_acc_letter(raw), truth) for raw, truth in rows]
    processed = [(letter, truth) for letter, truth in extracted if letter is not None]
    official_correct = sum(letter == truth for letter, truth in processed)

    summary = summarize("hr-bench", records, extractor="official-baseline", skip_unanswered=True)
    overall = summary["methods"]["baseline"]["groups"]["overall"]
    assert (overall["correct"], overall["total"]) == (official_correct, len(processed)) == (2, 3)
    assert summary["methods"]["baseline"]["skipped_ids"] == ["2", "4"]
    counted = summarize("hr-bench", records, extractor="official-baseline")
    assert counted["methods"]["baseline"]["groups"]["overall"]["total"] == 5
