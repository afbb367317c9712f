"""Tests for zoom_refine.agent.parsing: answer letters, free-text answers, boxes, confidence.

The tables are model replies in the styles InternVL, Qwen-VL and GPT-class models produce, with
the value the module docstring's rules give for each.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoom_refine.agent.parsing import (
    parse_boxes,
    parse_choice,
    parse_confidence,
    parse_open_answer,
)

ABCD = "ABCD"

# --- letters -------------------------------------------------------------------------------------

CHOICES: list[tuple[str, str, bool, str | None]] = [
    # (reply, offered letters, rechecked, expected)
    # The paper's protocol and its decorations.
    ("Answer: B", ABCD, False, "B"),
    ("Answer: [B]", ABCD, False, "B"),
    ("Answer: (C)", ABCD, False, "C"),
    ("Answer: {D}", ABCD, False, "D"),
    ("Answer: <A>", ABCD, False, "A"),
    ("**Answer:** (B)", ABCD, False, "B"),
    ("**Answer**: B", ABCD, False, "B"),
    ("Answer: **C**", ABCD, False, "C"),
    ("__Answer:__ D", ABCD, False, "D"),
    ("Answer:B", ABCD, False, "B"),
    ("Answer：B", ABCD, False, "B"),  # full-width colon
    ("ANSWER: c", ABCD, False, "C"),  # lower-case letter standing alone
    ("answer: b.", ABCD, False, "B"),
    ("Answer: B. The red car is parked on the left.", ABCD, False, "B"),
    ("Answer: B) the red car", ABCD, False, "B"),
    ("Answer: [B] The red car", ABCD, False, "B"),
    ("Answer: B - the red car", ABCD, False, "B"),
    ("Answer: B — the red car", ABCD, False, "B"),
    ("Final Answer: C", ABCD, False, "C"),
    ("My answer: D!", ABCD, False, "D"),
    (
        "The sign on the left reads 'EXIT'.\nAnswer: A\nBounding box: [0.1, 0.2, 0.3, 0.4]\n"
        "Confidence: 0.8",
        ABCD,
        False,
        "A",
    ),
    # A letter must stand alone.
    ("Answer: A large cat", ABCD, False, None),
    ("Answer: I don't know", "ABCDEFGHI", False, None),
    ("Answer: N/A", "ABCDEN", False, None),
    # It must be one of the offered letters.
    ("Answer: E", ABCD, False, None),
    ("Answer: E", "ABCDE", False, "E"),
    ("Answer: F", "ABCDEF", False, "F"),
    ("Answer: b", "ab", False, "B"),  # offered letters are matched case-insensitively
    ("The answer is E.", ABCD, False, None),
    ("E", ABCD, False, None),
    # Restated answers: the last one counts.
    ("Answer: A\nWait, the sign is blue, not red. Answer: C", ABCD, False, "C"),
    ("Answer: B\n\nThe car is red, so the answer is B.", ABCD, False, "B"),
    ("Answer: A\nAnswer: E", ABCD, False, "A"),  # the last *valid* one
    # A label beats "the answer is".
    ("Answer: B\nOn reflection the answer is C.", ABCD, False, "B"),
    # The refine turn.
    ("Rechecked Answer: B", ABCD, True, "B"),
    ("Rechecked Answer: (c)", ABCD, True, "C"),
    ("**Rechecked Answer:** D", ABCD, True, "D"),
    ("Answer: B\nRechecked Answer: D", ABCD, True, "D"),
    ("Rechecked Answer: D\nAnswer: B", ABCD, True, "D"),  # rechecked beats a later Answer:
    ("Rechecked Answer: A\nHmm.\nRechecked Answer: C", ABCD, True, "C"),
    ("Rechecked answer: a large cat\nAnswer: B", ABCD, True, "B"),  # falls back to Answer:
    ("Rechecked Answer: B", ABCD, False, "B"),  # read as an Answer: when not asked for it
    ("Looking at the crop, I keep my answer.\nRechecked Answer: A.", ABCD, True, "A"),
    # "The answer is X" — B, never E (the official first-[A-E] rule reads this as E).
    ("The answer is B.", ABCD, False, "B"),
    ("The answer is B.", "ABCDE", False, "B"),
    ("The answer is: B", ABCD, False, "B"),
    ("The correct answer is (D).", ABCD, False, "D"),
    ("The correct answer is **C**.", ABCD, False, "C"),
    ("The answer is option C", ABCD, False, "C"),
    ("I think the answer would be A, because the sign is red.", ABCD, False, "A"),
    ("The answer should be [b].", ABCD, False, "B"),
    ("I think the answer is C because it is red.", ABCD, False, "C"),
    ("Everything considered, the answer is B, not E.", "ABCDE", False, "B"),
    ("the answer is a dog", ABCD, False, None),  # an article, not option A
    ("The answer is a red bicycle.", ABCD, False, None),
    ("the answer is b - the red car", ABCD, False, "B"),
    # Replies that start with a lone letter.
    ("B", ABCD, False, "B"),
    ("B\n", ABCD, False, "B"),
    ("  (B)  ", ABCD, False, "B"),
    ("[D]", ABCD, False, "D"),
    ("**C**", ABCD, False, "C"),
    ("B. The red car", ABCD, False, "B"),
    ("B: the red car", ABCD, False, "B"),
    ("C - the sign is blue", ABCD, False, "C"),
    # No letter at all, or prose that merely starts with a capital.
    ("A cat is sitting on the mat.", ABCD, False, None),
    ("I cannot determine this from the image.", "ABCDEFGHI", False, None),
    ("Both options look plausible. Bounding box: [0.1, 0.2, 0.3, 0.4]", ABCD, False, None),
    ("", ABCD, False, None),
    ("   \n  ", ABCD, False, None),
]


@pytest.mark.parametrize(("reply", "letters", "rechecked", "expected"), CHOICES)
def test_parse_choice(reply: str, letters: str, rechecked: bool, expected: str | None) -> None:
    assert parse_choice(reply, letters, rechecked=rechecked) == expected


def test_parse_choice_accepts_any_iterable_of_letters() -> None:
    assert parse_choice("Answer: C", ["A", "B", "C"]) == "C"
    assert parse_choice("Answer: C", ("a", "b", "c")) == "C"
    assert parse_choice("Answer: C", iter("ABC")) == "C"
    assert parse_choice("Answer: C", []) is None


def test_parse_choice_table_is_large_enough() -> None:
    assert len(CHOICES) >= 40


# --- free-text answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "rechecked", "expected"),
    [
        ("Answer: a red car", False, "a red car"),
        ("Answer: **42**", False, "42"),
        ("**Answer:** 3:45 pm", False, "3:45 pm"),
        ("Answer:\nthe blue sign", False, "the blue sign"),
        ("Answer: red\nConfidence: 0.9", False, "red"),
        ("Answer: red\nLater: Answer: blue", False, "blue"),  # the last label
        ("Rechecked Answer: blue\nAnswer: red", True, "blue"),
        ("Answer: red\nRechecked Answer: blue", True, "blue"),
        ("Rechecked Answer: blue", False, "blue"),  # read as an Answer: label
        ("Final answer: STOP", False, "STOP"),
        # No label: the first line that is not a box or confidence line.
        ("The sign says STOP.\nConfidence: high", False, "The sign says STOP."),
        ("Bounding box: [1, 2, 3, 4]\nConfidence: low\n\n  The cat  ", False, "The cat"),
        ("<box>[[1, 2, 3, 4]]</box>\nbbox: (1, 2, 3, 4)\nthree", False, "three"),
        ("", False, None),
        ("  \n\n ", False, None),
        ("Confidence: 0.3", False, None),
    ],
)
def test_parse_open_answer(reply: str, rechecked: bool, expected: str | None) -> None:
    assert parse_open_answer(reply, rechecked=rechecked) == expected


# --- boxes ---------------------------------------------------------------------------------------

BOXES: list[tuple[str, list[tuple[float, float, float, float]]]] = [
    # The paper's prompt.
    ("Bounding box: [0.1, 0.2, 0.5, 0.6]", [(0.1, 0.2, 0.5, 0.6)]),
    ("**Bounding box:** [0.1, 0.2, 0.5, 0.6]", [(0.1, 0.2, 0.5, 0.6)]),
    ("bounding_box = [[0.1, 0.2, 0.5, 0.6]]", [(0.1, 0.2, 0.5, 0.6)]),
    ("Answer: B\nBounding box: [0.05,0.1,0.95,0.9]\nConfidence: 0.7", [(0.05, 0.1, 0.95, 0.9)]),
    # InternVL's native grounding, several boxes in one tag, several tags.
    ("<ref>the sign</ref><box>[[100, 200, 300, 400]]</box>", [(100, 200, 300, 400)]),
    ("<box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>", [(1, 2, 3, 4), (5, 6, 7, 8)]),
    ("<box>[[1, 2, 3, 4] [5, 6, 7, 8]]</box>", [(1, 2, 3, 4), (5, 6, 7, 8)]),
    ("<box>[[9,9,10,10]]</box> and <box>[[1,1,2,2]]</box>", [(9, 9, 10, 10), (1, 1, 2, 2)]),
    # Qwen-VL JSON.
    (
        '```json\n[\n  {"bbox_2d": [135, 114, 400, 351], "label": "red car"}\n]\n```',
        [(135, 114, 400, 351)],
    ),
    (
        '[{"bbox_2d": [10, 20, 30, 40]}, {"bbox_2d": [50, 60, 70, 80]}]',
        [(10, 20, 30, 40), (50, 60, 70, 80)],
    ),
    ("{'bbox': (1.5, 2.5, 3.5, 4.5)}", [(1.5, 2.5, 3.5, 4.5)]),
    # Prose, parentheses, nesting, other separators, number spellings.
    ("The sign is at [12, 34, 56, 78] in the image.", [(12, 34, 56, 78)]),
    ("The region (0.1, 0.2, 0.3, 0.4) holds the text.", [(0.1, 0.2, 0.3, 0.4)]),
    ("[[0.1, 0.2, 0.3, 0.4]]", [(0.1, 0.2, 0.3, 0.4)]),
    ("[10 20 30 40]", [(10, 20, 30, 40)]),
    ("[10; 20; 30; 40]", [(10, 20, 30, 40)]),
    ("[ 10 ,20 ,  30,40 ]", [(10, 20, 30, 40)]),
    ("[1e2, 2.5E1, 3e+2, 4.0e-1]", [(100, 25, 300, 0.4)]),
    ("[.5, 1., +2, -3]", [(0.5, 1.0, 2.0, -3.0)]),
    ("[-5, 10, 20, 30]", [(-5, 10, 20, 30)]),
    ("[0.1,0.2,0.3,0.4][0.5,0.6,0.7,0.8]", [(0.1, 0.2, 0.3, 0.4), (0.5, 0.6, 0.7, 0.8)]),
    ("Bounding box: [x1, y1, x2, y2] = [0.1, 0.2, 0.3, 0.4]", [(0.1, 0.2, 0.3, 0.4)]),
    # Labelled boxes come first, then prose, each in reading order.
    ("I first saw [1, 2, 3, 4]. Bounding box: [5, 6, 7, 8]", [(5, 6, 7, 8), (1, 2, 3, 4)]),
    ("<box>[[1,2,3,4]]</box> then Bounding box: [5,6,7,8]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
    # Not boxes.
    ("[1, 2, 3]", []),
    ("[1, 2, 3, 4, 5]", []),
    ("Answer: B", []),
    ("", []),
    ("<box>[[1, 2, 3]]</box>", []),
    # Non-finite numbers mean no box.
    ("Bounding box: [nan, 0, 1, 1]", []),
    ("Bounding box: [inf, 0, 1, 1]", []),
    ("Bounding box: [1e999, 0, 1, 1]", []),  # overflows to inf: dropped
    ("<box>[[1e400, 2, 3, 4], [5, 6, 7, 8]]</box>", [(5, 6, 7, 8)]),
    ("Bounding box: [-1e999, 0, 1, 1]\nOr rather [1, 2, 3, 4]", [(1, 2, 3, 4)]),
]


@pytest.mark.parametrize(("reply", "expected"), BOXES)
def test_parse_boxes(reply: str, expected: list[tuple[float, float, float, float]]) -> None:
    boxes = parse_boxes(reply)
    assert len(boxes) == len(expected)
    for got, want in zip(boxes, expected, strict=True):
        assert all(math.isclose(g, w, rel_tol=1e-12) for g, w in zip(got, want, strict=True))


def test_parse_boxes_returns_floats() -> None:
    (box,) = parse_boxes("<box>[[100, 200, 300, 400]]</box>")
    assert box == (100.0, 200.0, 300.0, 400.0)
    assert all(type(v) is float for v in box)


def test_unicode_digits_are_read_as_digits() -> None:
    # Python's \d and float() both accept Arabic-Indic and full-width digits.
    assert parse_boxes("[١, ٢, ٣, ٤]") == [(1.0, 2.0, 3.0, 4.0)]
    assert parse_boxes("[１, ２, ３, ４]") == [(1.0, 2.0, 3.0, 4.0)]


# --- confidence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Confidence: 0.8", 0.8),
        ("Confidence: 80%", 0.8),
        ("Confidence: 80 %", 0.8),
        ("Confidence: 8/10", 0.8),
        ("Confidence: 7 / 10", 0.7),
        ("Confidence: 85/100", 0.85),
        ("Confidence: 85", 0.85),  # a bare number over 1 is out of 100
        ("Confidence: 85.5", 0.855),
        ("Confidence: 100", 1.0),
        ("Confidence: 1", 1.0),
        ("Confidence: 0", 0.0),
        ("Confidence: .9", 0.9),
        ("Confidence: 1e-1", 0.1),
        ("**Confidence:** 0.7", 0.7),
        ("Confidence score: 0.75", 0.75),
        ("confidence = 0.6", 0.6),
        ("My confidence is 90%.", 0.9),
        ("with a confidence of 0.65", 0.65),
        ("Confidence: high", 0.9),
        ("Confidence: medium", 0.6),
        ("Confidence: moderate", 0.6),
        ("Confidence: low", 0.3),
        ("Confidence: very high", 0.95),
        ("Confidence: Very Low", 0.1),
        ("Confidence level: low", 0.3),
        ("Confidence Level: HIGH", 0.9),
        ("I answer this with high confidence.", 0.9),
        ("low confidence: the text is blurry", 0.3),
        ("very  high confidence", 0.95),
        ("Confidence: low\nAfter zooming in: Confidence: high", 0.9),  # the last statement
        ("Answer: B\nBounding box: [0.1, 0.2, 0.3, 0.4]\nConfidence: 0.35", 0.35),
        # Out of range or unreadable: no confidence.
        ("Confidence: 150%", None),
        ("Confidence: 1000", None),
        ("Confidence: 11/10", None),
        ("Confidence: -0.5", None),
        ("Confidence: 1e999", None),
        ("Confidence: unsure", None),
        ("Answer: B", None),
        ("", None),
    ],
)
def test_parse_confidence(reply: str, expected: float | None) -> None:
    value = parse_confidence(reply)
    if expected is None:
        assert value is None
    else:
        assert value is not None
        assert math.isclose(value, expected, abs_tol=1e-12)


# --- robustness (hypothesis) ---------------------------------------------------------------------

FRAGMENTS = [
    "Answer:", "answer", "Rechecked Answer:", "Final answer", "The answer is", "is", "option",
    "**", "__", ":", "：", " ", "  ", "\n", "\t", "[", "]", "(", ")", "{", "}", "<", ">", ",",
    ";", ".", "-", "+", "—", "/", "%", "=", "e", "E", "nan", "NaN", "inf", "-inf", "1e999",
    "<box>", "</box>", "box", "bbox", "bbox_2d", '"bbox_2d":', "Bounding box:", "Confidence:",
    "confidence", "level", "of", "high", "very", "low", "medium", "/10", "/100", "A", "B", "c",
    "E", "I", "a", "x", "0", "1", "7", "42", "0.5", "85", "1000", ".", "٣", "１", "²", "Ⅻ", "½",
    "𝟗", "\u00a0", "\u2003", "\x00", "é",
]  # fmt: skip
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
any_text = st.one_of(st.text(), st.text(alphabet=st.characters(codec="utf-8")), fragment_text)
letters_strategy = st.one_of(
    st.just("ABCD"),
    st.just("ABCDE"),
    st.lists(st.sampled_from("ABCDEFGHIJabcdef"), max_size=8),
)
ROBUST = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROBUST
@given(text=any_text, letters=letters_strategy, rechecked=st.booleans())
def test_parsers_never_raise_and_keep_their_contracts(
    text: str, letters: str | list[str], rechecked: bool
) -> None:
    # One generated text feeds every parser (generation, not parsing, dominates the run time).
    choice = parse_choice(text, letters, rechecked=rechecked)
    assert choice is None or choice in {letter.upper() for letter in letters}

    answer = parse_open_answer(text, rechecked=rechecked)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip() and answer)

    boxes = parse_boxes(text)
    assert isinstance(boxes, list)
    for box in boxes:
        assert isinstance(box, tuple)
        assert len(box) == 4
        assert all(isinstance(v, float) and math.isfinite(v) for v in box)

    value = parse_confidence(text)
    assert value is None or (isinstance(value, float) and 0.0 <= value <= 1.0)


@settings(max_examples=300, deadline=None)
@given(
    box=st.tuples(*[st.floats(allow_nan=False, allow_infinity=False)] * 4),
    style=st.sampled_from(
        ["Bounding box: [{}, {}, {}, {}]", "<box>[[{}, {}, {}, {}]]</box>",
         '{{"bbox_2d": [{}, {}, {}, {}]}}', "see ({} {} {} {})"]
    ),
)  # fmt: skip
def test_any_written_finite_box_is_read_back(
    box: tuple[float, float, float, float], style: str
) -> None:
    assert parse_boxes(style.format(*(repr(v) for v in box))) == [box]


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 100))
def test_percent_and_out_of_ten_agree(value: int) -> None:
    percent = parse_confidence(f"Confidence: {value}%")
    assert percent is not None
    assert math.isclose(percent, value / 100)
    hundred = parse_confidence(f"Confidence: {value}/100")
    assert hundred is not None
    assert math.isclose(hundred, value / 100)


# --- no catastrophic backtracking ----------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "<box>[" + "[]  " * 40,  # an unclosed tag: was exponential in the number of lists
        "<box>[" + "[1 2 3 4] " * 2000,
        "box" + " " * 5000 + "x",  # a label followed by a long whitespace run: was quartic
        "Bounding box" + "\n" * 5000,
        "bbox" + " " * 5000,
        "The answer is" + " " * 5000 + "?",
        "Answer:" + " " * 5000 + "??",
        "Rechecked Answer" + " " * 5000,
        "Confidence:" + " " * 5000 + "?",
        "[1" + " " * 5000 + "2" + " " * 5000 + "3",
        "Answer: " * 2000,
        "[" * 5000 + "1 2 3 4" + "]" * 5000,
    ],
    ids=lambda reply: f"{reply[:14]!r}×{len(reply)}",
)
def test_parsers_do_not_backtrack_catastrophically_on_degenerate_replies(reply: str) -> None:
    start = time.perf_counter()
    parse_boxes(reply)
    parse_choice(reply, ABCD, rechecked=True)
    parse_open_answer(reply, rechecked=True)
    parse_confidence(reply)
    # Catastrophic backtracking on these takes minutes; a generous bound catches it on a loaded
    # machine. How fast they really are is not a test's business.
    assert time.perf_counter() - start < 15.0
