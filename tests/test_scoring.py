"""Golden tests for zoom_refine.evals.scoring and zoom_refine.evals.prompts.

Every expected number is computed by hand in the comment beside it; every extractor row is a
reply in the style models produce, with the letter the reference rule gives (quirks included).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from zoom_refine.evals.prompts import benchmark_prompt, mme_realworld_prompt
from zoom_refine.evals.samples import Benchmark, Sample
from zoom_refine.evals.scoring import (
    extract_choice,
    mcnemar_exact,
    mme_category,
    paired_changes,
    summarize,
)
from zoom_refine.evals.tables import format_table

MME_OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "white", "E": "black"}
ABCD_OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "dark blue"}


# --- extractors ----------------------------------------------------------------------------------

STRICT: list[tuple[str | None, str | None]] = [
    ("B", "B"),
    ("(C)", "C"),
    ("Answer: B", "B"),
    ("The answer is B", "B"),  # the official MME rule reads E here (see below)
    ("Answer: A large cat", None),  # a letter must stand alone
    ("Answer: B\nThe close-up shows a sign.\nRechecked Answer: C\nConfidence: 0.8", "C"),
    ("I cannot tell.", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("reply", "expected"), STRICT)
@pytest.mark.parametrize("benchmark", ["hr-bench", "mme-realworld", "vstar"])
def test_strict_extractor(reply: str | None, expected: str | None, benchmark: Benchmark) -> None:
    assert extract_choice(reply, ABCD_OPTIONS, benchmark=benchmark) == expected


MME_OFFICIAL: list[tuple[str | None, str | None]] = [
    ("B", "B"),
    ("(C)", "C"),
    ("C. green", "C"),
    ("The best answer is D", "D"),  # prefix removed, then the first capital A-E
    ("The best answer is: (D)", "D"),
    ("The correct answer is E.", "E"),
    ("The answer is B", "B"),
    # Quirk: the first capital A-E *anywhere* wins.
    ("Answer: B", "A"),  # the "A" of "Answer"
    ("Rechecked Answer: C\nConfidence: 0.9", "A"),  # a refine reply reads as A
    ("Based on the image, the answer is C.", "B"),  # the "B" of "Based"
    ("THE ANSWER IS B", "E"),  # prefixes are case-sensitive: "THE" gives E
    # Quirk: two missing commas glue the last four prefixes, so these two are never removed.
    ("Best answer: C", "B"),  # the "B" of "Best"
    ("The best option is C", "C"),  # not removed, but no capital A-E before C
    # Quirk: a letter is returned whether or not it is offered (E with four options, below).
    # No capital A-E: the first choice "(X) text" containing the lower-cased reply.
    ("blue", "B"),
    ("Green", "C"),  # "G" is no option letter, "green" is in "(c) green"
    ("e", "A"),  # "(a) red" contains an "e"
    ("", "A"),  # the empty string is in every choice
    ("   ", "A"),
    ("The answer is", "A"),  # only a prefix: empty after removal
    ("the car is blue", None),  # not contained in any choice
    # More than 10 words without a capital A-E: nothing, even if an option's text is there.
    ("the colour of the car in the picture is clearly a light shade of blue", None),
    (None, None),
]


@pytest.mark.parametrize(("reply", "expected"), MME_OFFICIAL)
def test_mme_realworld_official_extractor(reply: str | None, expected: str | None) -> None:
    got = extract_choice(reply, MME_OPTIONS, extractor="official", benchmark="mme-realworld")
    assert got == expected


def test_mme_official_returns_letters_that_are_not_offered() -> None:
    four = {"A": "red", "B": "blue", "C": "green", "D": "white"}
    got = extract_choice("E", four, extractor="official", benchmark="mme-realworld")
    assert got == "E"


def test_mme_official_choice_text_with_its_own_prefix() -> None:
    prefixed = {"A": "(A) 12", "B": "(B) 15"}
    got = extract_choice("15", prefixed, extractor="official", benchmark="mme-realworld")
    assert got == "B"


VLMEVAL_OFFICIAL: list[tuple[str | None, str | None]] = [
    ("B", "B"),
    ("Answer: B", "B"),
    ("The answer is (C).", "C"),
    ("**D**", "D"),
    ("B. blue", "B"),
    ("Rechecked Answer: C\nConfidence: 0.8", "C"),
    ("The answer is B because the car is red.", "B"),  # one letter token: the letter wins
    # Quirk: an article "A" is a letter token (the quantifier guard needs VERBOSE).
    ("A red car.", "A"),
    ("A car parked next to a tree, colour B.", None),  # "A" and "B": two letters, no text hit
    # Quirk: lower-case letters are never letters; the option text is matched instead.
    ("b", None),
    ("c: green", "C"),
    # Two or more letters: fall back to the option text, which must match exactly one option.
    ("I think it is B, but A is also possible.", None),
    ("Between B and C, it is green.", "C"),
    ("blue", "B"),
    ("It is dark blue.", None),  # "blue" and "dark blue" both occur
    ("red and green", None),
    # "Z" and refusals: no answer.
    ("Cannot determine the answer", None),
    ("Z", None),
    ("E", None),  # not offered, and no option text in "e"
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("reply", "expected"), VLMEVAL_OFFICIAL)
@pytest.mark.parametrize("benchmark", ["hr-bench", "vstar"])
def test_vlmevalkit_official_extractor(
    reply: str | None, expected: str | None, benchmark: Benchmark
) -> None:
    got = extract_choice(reply, ABCD_OPTIONS, extractor="official", benchmark=benchmark)
    assert got == expected


def test_vlmevalkit_refusal_skips_text_matching() -> None:
    reply = "Cannot determine the answer; maybe red."
    assert extract_choice(reply, ABCD_OPTIONS, extractor="official", benchmark="vstar") is None


def test_vlmevalkit_api_failure_falls_back_to_text() -> None:
    reply = "Failed to obtain answer via API: green B"
    assert extract_choice(reply, ABCD_OPTIONS, extractor="official", benchmark="hr-bench") == "C"


# --- records -------------------------------------------------------------------------------------


def record(
    sample_id: str,
    method: str,
    answer: str | None,
    truth: str = "A",
    *,
    status: str = "ok",
    raw: str | None = None,
    options: dict[str, str] | None = None,
    **fields: str,
) -> dict[str, Any]:
    return {
        "id": sample_id,
        "method": method,
        "status": status,
        "answer": answer,
        "ground_truth": truth,
        "fields": fields,
        "raw": raw if raw is not None else answer,
        "options": options if options is not None else dict(ABCD_OPTIONS),
    }


def right(sample_id: str, method: str = "baseline", **fields: str) -> dict[str, Any]:
    return record(sample_id, method, "A", **fields)


def wrong(sample_id: str, method: str = "baseline", **fields: str) -> dict[str, Any]:
    return record(sample_id, method, "B", **fields)


# --- HR-Bench ------------------------------------------------------------------------------------


def hr_fixture(method: str = "baseline") -> list[dict[str, Any]]:
    """4 cycles x (2 FSP + 2 FCP) rows: the full-benchmark shape, in miniature.

    cycle  FSP (single)        FCP (cross)         all
    1      right right  1.0    right wrong   0.5   3/4
    2      right wrong  0.5    wrong wrong   0.0   1/4
    3      wrong wrong  0.0    right wrong   0.5   1/4
    4      right unparsed 0.5  right error   0.5   2/4
    """
    pattern = {
        1: ("rr", "rw"),
        2: ("rw", "ww"),
        3: ("ww", "rw"),
        4: ("ru", "re"),
    }
    rows = []
    for cycle, (single, cross) in pattern.items():
        for category, marks in (("single", single), ("cross", cross)):
            for index, mark in enumerate(marks):
                sample_id = f"{cycle}-{category}-{index}"
                fields = {"category": category, "cycle_category": f"cycle{cycle}"}
                if mark == "r":
                    rows.append(right(sample_id, method, **fields))
                elif mark == "w":
                    rows.append(wrong(sample_id, method, **fields))
                elif mark == "u":
                    rows.append(record(sample_id, method, None, **fields))
                else:
                    rows.append(record(sample_id, method, None, status="error", **fields))
    return rows


def test_hr_bench_groups_and_cycle_mean_equal_plain_accuracy() -> None:
    summary = summarize("hr-bench", hr_fixture())
    result = summary["methods"]["baseline"]
    groups = result["groups"]
    # FSP: 2+1+0+1 = 4 of 8; FCP: 1+0+1+1 = 3 of 8; all: 7 of 16.
    assert (groups["FSP"]["correct"], groups["FSP"]["total"]) == (4, 8)
    assert (groups["FCP"]["correct"], groups["FCP"]["total"]) == (3, 8)
    assert (groups["overall"]["correct"], groups["overall"]["total"]) == (7, 16)
    assert groups["FSP"]["accuracy"] == pytest.approx(0.5)
    assert groups["FCP"]["accuracy"] == pytest.approx(0.375)
    assert groups["overall"]["accuracy"] == pytest.approx(0.4375)
    # Mean over cycles: FSP (1 + .5 + 0 + .5)/4 = .5; FCP (.5 + 0 + .5 + .5)/4 = .375;
    # all (.75 + .25 + .25 + .5)/4 = .4375 — the same numbers as plain accuracy.
    assert result["cycle_mean"] == pytest.approx({"overall": 0.4375, "FSP": 0.5, "FCP": 0.375})
    assert result["cycles"]["cycle1"] == pytest.approx({"overall": 0.75, "FSP": 1.0, "FCP": 0.5})
    assert result["cycle_mean_equals_plain"] is True
    for name, group in groups.items():
        assert result["cycle_mean"][name] == pytest.approx(group["accuracy"], abs=1e-12)
    assert list(groups) == ["overall", "FSP", "FCP"]
    assert result["unparsed_ids"] == ["4-single-1"]
    assert result["error_ids"] == ["4-cross-1"]


def test_hr_bench_cycle_mean_differs_on_unequal_cycles() -> None:
    # cycle1: 1 of 1 right; cycle2: 0 of 3 -> mean over cycles (1 + 0)/2 = .5, plain 1/4 = .25.
    rows = [right("a", category="single", cycle_category="cycle1")] + [
        wrong(f"b{i}", category="single", cycle_category="cycle2") for i in range(3)
    ]
    result = summarize("hr-bench", rows)["methods"]["baseline"]
    assert result["cycle_mean"]["overall"] == pytest.approx(0.5)
    assert result["groups"]["overall"]["accuracy"] == pytest.approx(0.25)
    assert result["cycle_mean_equals_plain"] is False


def test_rows_without_a_cycle_get_no_cycle_mean_and_no_false_difference() -> None:
    """A bad row has no category and no cycle: its `(unknown)` group has no cycle mean, so the
    table neither prints `(unknown) —` nor calls the groups that agree different; only the
    groups that truly differ (overall, which counts the bad row as wrong) are named."""
    rows = [*hr_fixture(), wrong("bad")]  # no category, no cycle
    result = summarize("hr-bench", rows)["methods"]["baseline"]
    assert "(unknown)" in result["groups"] and "(unknown)" not in result["cycle_mean"]
    assert result["cycle_mean_differs"] == ["overall"]
    line = next(
        line for line in format_table(summarize("hr-bench", rows)).splitlines() if "cycles" in line
    )
    assert "(unknown)" not in line and "—" not in line
    assert line.endswith("(differs from plain accuracy in overall)")


# --- MME-RealWorld -------------------------------------------------------------------------------


def mme_fixture() -> list[dict[str, Any]]:
    """Perception / Remote Sensing 2 of 3, Perception / Monitoring 1 of 1,
    Perception / Diagram and Table 1 of 4, Reasoning / Remote Sensing 0 of 2."""
    rows = []

    def add(sample_id: str, ok: bool, task: str, subtask: str, category: str) -> None:
        make = right if ok else wrong
        rows.append(make(sample_id, task=task, subtask=subtask, category=category))

    add("p-rs-1", True, "Perception", "Remote Sensing", "color")
    add("p-rs-2", True, "Perception", "Remote Sensing", "Person/attribute/color")
    add("p-rs-3", False, "Perception", "Remote Sensing", "person/Attribute/orientation")
    add("p-mo-1", True, "Perception", "Monitoring", "counting")
    add("p-dt-1", True, "Perception", "Diagram and Table", "table")
    for index in range(2, 5):
        add(f"p-dt-{index}", False, "Perception", "Diagram and Table", "table")
    add("r-rs-1", False, "Reasoning", "Remote Sensing", "position")
    add("r-rs-2", False, "Reasoning", "Remote Sensing", "position")
    return rows


def test_mme_realworld_weighted_and_unweighted() -> None:
    result = summarize("mme-realworld", mme_fixture())["methods"]["baseline"]
    groups = result["groups"]
    assert groups["overall"]["accuracy"] == pytest.approx(4 / 10)
    assert groups["Perception"]["accuracy"] == pytest.approx(4 / 8)
    assert groups["Reasoning"]["accuracy"] == pytest.approx(0 / 2)
    assert groups["Perception / Remote Sensing"]["accuracy"] == pytest.approx(2 / 3)
    assert groups["Perception / Monitoring"]["accuracy"] == pytest.approx(1.0)
    assert groups["Perception / Diagram and Table"]["accuracy"] == pytest.approx(1 / 4)
    assert groups["Reasoning / Remote Sensing"]["total"] == 2
    # Unweighted: Perception (2/3 + 1 + 1/4)/3 = 0.638889; Reasoning 0;
    # over all four task/subtask pairs (2/3 + 1 + 1/4 + 0)/4 = 0.479167.
    assert result["subtask_mean"]["Perception"] == pytest.approx(0.6388889)
    assert result["subtask_mean"]["Reasoning"] == pytest.approx(0.0)
    assert result["subtask_mean"]["overall"] == pytest.approx(0.4791667)
    # Official category keys: lower-cased, "x/attribute/..." merged into "x/attribute".
    merged = groups["Perception / Remote Sensing / person/attribute"]
    assert (merged["correct"], merged["total"]) == (1, 2)
    assert list(groups)[:5] == [
        "overall",
        "Perception",
        "Perception / Monitoring",
        "Perception / Monitoring / counting",
        "Perception / Diagram and Table",
    ]


def test_mme_category_normalisation() -> None:
    assert mme_category("Person/attribute/color") == "person/attribute"
    assert mme_category("Vehicle/Attribute") == "vehicle/attribute"
    assert mme_category("Counting") == "counting"


def test_mme_realworld_exclude_diagram_table() -> None:
    summary = summarize("mme-realworld", mme_fixture(), exclude_diagram_table=True)
    result = summary["methods"]["baseline"]
    assert summary["excluded"] == 4
    assert not any("Diagram and Table" in name for name in result["groups"])
    # 3 of 6 overall; Perception 3 of 4; subtask means (2/3 + 1)/2 and (2/3 + 1 + 0)/3.
    assert result["groups"]["overall"]["accuracy"] == pytest.approx(0.5)
    assert result["groups"]["Perception"]["accuracy"] == pytest.approx(0.75)
    assert result["subtask_mean"]["Perception"] == pytest.approx(0.8333333)
    assert result["subtask_mean"]["overall"] == pytest.approx(0.5555556)


def test_exclude_diagram_table_matches_either_field() -> None:
    rows = [right("a", task="Diagram and Table", subtask="x"), wrong("b", task="Perception")]
    summary = summarize("mme-realworld", rows, exclude_diagram_table=True)
    assert summary["excluded"] == 1
    assert summary["methods"]["baseline"]["groups"]["overall"]["total"] == 1


def test_official_extractor_rescores_from_raw() -> None:
    options = dict(MME_OPTIONS)
    rows = [
        # Our protocol: the graph parsed B (right), the official rule reads "Answer: B" as A.
        record("1", "baseline", "B", "B", raw="Answer: B", options=options),
        # A bare letter: right both ways.
        record("2", "baseline", "C", "C", raw="C", options=options),
        # Strict found nothing; the official rule reads the empty reply as A (right here).
        record("3", "baseline", None, "A", raw="", options=options),
    ]
    strict = summarize("mme-realworld", rows)["methods"]["baseline"]
    official = summarize("mme-realworld", rows, extractor="official")["methods"]["baseline"]
    assert strict["groups"]["overall"]["correct"] == 2
    assert strict["unparsed_ids"] == ["3"]
    assert official["groups"]["overall"]["correct"] == 2  # "2" and "3"
    assert official["unparsed_ids"] == []


# --- V* ------------------------------------------------------------------------------------------


def test_vstar_categories_and_micro_overall() -> None:
    rows = [
        right("da1", category="direct_attributes"),
        right("da2", category="direct_attributes"),
        wrong("da3", category="direct_attributes"),
        right("rp1", category="relative_position"),
        record("rp2", "baseline", None, category="relative_position"),  # unparsed
        record("rp3", "baseline", None, status="error", category="relative_position"),
    ]
    result = summarize("vstar", rows)["methods"]["baseline"]
    groups = result["groups"]
    assert list(groups) == ["overall", "direct_attributes", "relative_position"]
    assert groups["direct_attributes"]["accuracy"] == pytest.approx(2 / 3)
    assert groups["relative_position"]["accuracy"] == pytest.approx(1 / 3)
    # Overall: 3 of 6, the unparsed and the error row included.
    assert (groups["overall"]["correct"], groups["overall"]["total"]) == (3, 6)
    assert groups["relative_position"]["unparsed"] == 1
    assert groups["relative_position"]["errors"] == 1


def test_vstar_overall_is_micro_not_macro() -> None:
    # direct 1 of 1, relative 0 of 3: micro 1/4 = .25, macro would be .5.
    rows = [right("a", category="direct_attributes")] + [
        wrong(f"r{i}", category="relative_position") for i in range(3)
    ]
    groups = summarize("vstar", rows)["methods"]["baseline"]["groups"]
    assert groups["overall"]["accuracy"] == pytest.approx(0.25)


# --- unparsed and errors -------------------------------------------------------------------------


def test_unparsed_and_errors_count_wrong_and_are_listed() -> None:
    rows = [
        right("1", category="direct_attributes"),
        record("2", "baseline", None, category="direct_attributes"),
        record("3", "baseline", "A", status="error", category="direct_attributes"),
        # A bad dataset row as the runner writes it: no truth, no fields, no options.
        {"id": "4", "method": "baseline", "status": "error", "answer": None, "ground_truth": None,
         "fields": {}, "raw": None},
    ]  # fmt: skip
    result = summarize("vstar", rows)["methods"]["baseline"]
    overall = result["groups"]["overall"]
    assert (overall["correct"], overall["total"]) == (1, 4)  # nothing left the denominator
    assert (overall["unparsed"], overall["errors"]) == (1, 2)
    assert result["unparsed_ids"] == ["2"]
    assert result["error_ids"] == ["3", "4"]  # an error's answer is ignored
    assert result["groups"]["(unknown)"]["total"] == 1
    official = summarize("vstar", rows, extractor="official")["methods"]["baseline"]
    assert official["groups"]["overall"]["total"] == 4
    assert official["error_ids"] == ["3", "4"]


def test_last_record_per_sample_and_method_wins() -> None:
    rows = [
        record("1", "baseline", None, status="error", category="direct_attributes"),
        right("1", category="direct_attributes"),
    ]
    overall = summarize("vstar", rows)["methods"]["baseline"]["groups"]["overall"]
    assert (overall["correct"], overall["total"]) == (1, 1)


def test_summary_is_json_safe() -> None:
    rows = hr_fixture("baseline") + hr_fixture("zoom-refine")
    summary = summarize("hr-bench", rows)
    assert json.loads(json.dumps(summary)) == summary
    assert list(summary["methods"]) == ["baseline", "zoom-refine"]


# --- paired changes ------------------------------------------------------------------------------


def paired_fixture() -> list[dict[str, Any]]:
    return [
        wrong("fix", "baseline"),
        right("fix", "zoom-refine"),
        right("break", "baseline"),
        wrong("break", "zoom-refine"),
        right("same-right", "baseline"),
        right("same-right", "zoom-refine"),
        wrong("same-wrong", "baseline"),
        record("same-wrong", "zoom-refine", None),  # unparsed is wrong
        right("solo", "baseline"),  # no zoom-refine run: not a pair
    ]


def test_paired_changes() -> None:
    paired = paired_changes(paired_fixture())
    assert {k: paired[k] for k in ("pairs", "fixed", "broken", "both_right", "both_wrong")} == {
        "pairs": 4,
        "fixed": 1,
        "broken": 1,
        "both_right": 1,
        "both_wrong": 1,
    }
    assert paired["fixed_ids"] == ["fix"]
    assert paired["broken_ids"] == ["break"]
    assert (paired["only_baseline"], paired["only_zoom_refine"]) == (1, 0)
    assert paired["net"] == 0
    assert paired["mcnemar_p"] == 1.0
    assert summarize("vstar", paired_fixture())["paired"] == paired


def test_mcnemar_exact() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 0) == pytest.approx(0.25)  # 2 * (1/2)^3
    assert mcnemar_exact(1, 5) == pytest.approx(0.21875)  # 2 * (1 + 6)/64
    assert 0.0 < mcnemar_exact(900, 700) < 1e-5  # big counts stay finite


# --- table ---------------------------------------------------------------------------------------


def test_format_table() -> None:
    rows = [
        right("1", "baseline", category="direct_attributes"),
        wrong("2", "baseline", category="relative_position"),
        right("1", "zoom-refine", category="direct_attributes"),
        right("2", "zoom-refine", category="relative_position"),
    ]
    table = format_table(summarize("vstar", rows))
    lines = table.splitlines()
    assert lines[0] == "vstar (extractor: strict)"
    assert lines[1].split() == ["group", "baseline", "zoom-refine", "diff"]
    assert lines[2].split() == ["overall", "50.00", "(1/2)", "100.00", "(2/2)", "+50.00"]
    assert lines[3].split() == ["direct_attributes", "100.00", "(1/1)", "100.00", "(1/1)", "+0.00"]
    assert lines[4].split()[-1] == "+100.00"
    assert "paired (2 samples): fixed 1, broken 0" in table


def test_format_table_mme_hides_categories_unless_detailed() -> None:
    summary = summarize("mme-realworld", mme_fixture(), exclude_diagram_table=True)
    table = format_table(summary)
    assert any(line.startswith("Perception / Remote Sensing ") for line in table.splitlines())
    assert "person/attribute" not in table
    assert "person/attribute" in format_table(summary, detail=True)
    assert "without Diagram and Table" in table.splitlines()[0]
    assert "unweighted mean over subtasks, baseline: overall 55.56" in table
    assert "diff" not in table.splitlines()[1]  # one method: no difference column


def test_format_table_hr_bench_reports_cycle_mean() -> None:
    table = format_table(summarize("hr-bench", hr_fixture()))
    assert "mean over cycles, baseline: overall 43.75, FSP 50.00, FCP 37.50 (equal to" in table
    assert "baseline: 1 unparsed, 1 errors" in table


# --- prompts -------------------------------------------------------------------------------------


def sample(question: str = "What colour is the car?") -> Sample:
    return Sample(id="1", image="x.jpg", question=question, options=dict(ABCD_OPTIONS), answer="A")


@pytest.mark.parametrize("benchmark", ["hr-bench", "vstar"])
def test_letter_prompt(benchmark: Benchmark) -> None:
    assert benchmark_prompt(benchmark, sample()) == (
        "What colour is the car?\nA. red\nB. blue\nC. green\nD. dark blue\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_mme_realworld_prompt() -> None:
    assert benchmark_prompt("mme-realworld", sample()) == (
        "What colour is the car? The choices are listed below: \n"
        "(A) red\n(B) blue\n(C) green\n(D) dark blue\n"
        "Select the best answer to the above multiple-choice question based on the image. "
        "Respond with only the letter (A, B, C, D, or E) of the correct option.\n"
        "The best answer is:"
    )


def test_mme_prompt_keeps_choices_that_carry_their_letter() -> None:
    prompt = mme_realworld_prompt("Q?", {"A": "(A) 12", "B": "15"})
    assert "\n(A) 12\n(B) 15\n" in prompt
