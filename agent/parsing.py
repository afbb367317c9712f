"""Read what a model said: answer letters, free-text answers, boxes and confidence.

Parsers never raise on model output; they return None (or an empty list) when nothing is found,
and the graph records that. Rules, in order of trust:

- Letters: the last `Rechecked Answer: X` (when asked for it), else the last `Answer: X`, else
  "the answer is X", else a reply that *starts* with a lone letter (`B`, `(B)`, `B.`). A letter must
  stand alone (`Answer: A large cat` is not `A`; after "the answer is" only a capital may run on:
  "the answer is C because…" is `C`, "the answer is a dog" is nothing), and must be one of the
  offered letters. We never take the first capital letter anywhere (the official rule reads
  "The answer is B" as `E`).
- Boxes: labelled boxes first (`<box>[[…]]</box>`, `"bbox_2d": […]`, `Bounding box: […]`), then
  any bracketed four numbers in prose, in reading order. Non-finite numbers mean "no box".
- Confidence: `Confidence: 0.8`, `80%`, `8/10`, `85` (0–100), or `high` / `medium` / `low`.

The `official` parsing mode (`ParserMode`, the `official` preset) reads as the official code does
instead (xavier-yu114/Zoom-Refine fc6c1ad, `zoomrefine/ZoomRefine_Base.py`; behaviour matched in
`tests/test_official_preset.py`): letters by `parse_official_choice` (the **first** labelled
letter, any of A–E whether offered or not), the box by `parse_official_box` (the **last**
`Bounding box` / `bbox` labelled `[a, b, c, d]` of unsigned numbers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SEP = r"\s*[,;]\s*|\s+"
_FOUR = rf"({_NUMBER})(?:{_SEP})({_NUMBER})(?:{_SEP})({_NUMBER})(?:{_SEP})({_NUMBER})"

# `\s*(?:,\s*)?` between inner lists, not `\s*,?\s*`: the latter splits whitespace ambiguously and
# backtracks exponentially on an unclosed tag (`<box>[[] [] [] …` took a minute at 18 lists).
_BOX_TAG = re.compile(r"<box>\s*\[\s*((?:\[[^\[\]]*\]\s*(?:,\s*)?)+)\]\s*</box>", re.IGNORECASE)
_BBOX_2D = re.compile(
    rf"[\"']?bbox(?:_2d)?[\"']?\s*[:=]\s*[\[\(]\s*{_FOUR}\s*[\]\)]", re.IGNORECASE
)
# Optional tokens carry their own trailing `\s*` (`(?:\*\*\s*)?`, not `(?:\*\*)?\s*`): runs of
# `\s*` separated only by optional tokens backtrack polynomially on long whitespace ("box" followed
# by 1000 spaces took minutes). The patterns below accept the same texts as the naive spelling.
_LABELLED = re.compile(
    rf"(?:bounding[\s_-]*box|bbox|box)\s*(?:\*\*\s*)?(?:[:=]\s*)?(?:\*\*\s*)?\[\s*(?:\[\s*)?{_FOUR}\s*(?:\]\s*)?\]",
    re.IGNORECASE,
)
_BRACKETED = re.compile(rf"[\[\(]\s*{_FOUR}\s*[\]\)]")
_INNER_LIST = re.compile(rf"\[\s*{_FOUR}\s*\]")

_LETTER_AFTER_LABEL = (
    r"\s*(?:(?:\*\*|__)\s*)?[:：]\s*(?:(?:\*\*|__)\s*)?(?:[\[\(\{<]\s*)?([A-Za-z])(?:\s*[\]\)\}>])?"
    r"(?=\s*$|\s*[.,:;!*\]\)\n]|\s+[-–—])"
)
_RECHECKED = re.compile(r"rechecked\s+answer" + _LETTER_AFTER_LABEL, re.IGNORECASE | re.MULTILINE)
_ANSWER = re.compile(
    r"(?<![A-Za-z])(?:final\s+)?answer(?!\s*is)" + _LETTER_AFTER_LABEL, re.IGNORECASE | re.MULTILINE
)
# After "the answer is", a capital may run on ("the answer is C because…"), but a lower-case
# letter must stand alone: "the answer is a dog" is not `A`.
_ANSWER_IS = re.compile(
    r"answer\s+(?:is|would\s+be|should\s+be)\s*(?:option\s*)?(?:[:：]\s*)?(?:\*\*\s*)?[\[\(]?"
    r"(?:(?-i:([A-Z]))[\]\)]?(?![A-Za-z])|([a-z])(?=[\]\)]?(?:\s*$|\s*[.,:;!*\]\)\n]|\s+[-–—])))",
    re.IGNORECASE,
)
_LEADING_LETTER = re.compile(r"^\s*(?:\*\*)?[\[\(]?([A-Z])(?:[\]\)\.:*]|\s*$|\s+[-–—])")

_TEXT_AFTER_LABEL = r"\s*(?:(?:\*\*|__)\s*)?[:：]\s*(?:(?:\*\*|__)\s*)?(.+)"
_RECHECKED_TEXT = re.compile(r"rechecked\s+answer" + _TEXT_AFTER_LABEL, re.IGNORECASE)
_ANSWER_TEXT = re.compile(r"(?<![A-Za-z])(?:final\s+)?answer" + _TEXT_AFTER_LABEL, re.IGNORECASE)

_CONFIDENCE = re.compile(
    r"confidence(?:\s+(?:level|score))?\s*(?:\*\*\s*)?(?:[:：=]|is|of)\s*(?:\*\*\s*)?"
    rf"(?:(?P<word>very\s+high|high|medium|moderate|low|very\s+low)|(?P<num>{_NUMBER})\s*(?P<unit>%|/\s*10{{1,2}})?)",
    re.IGNORECASE,
)
_CONFIDENCE_WORD_FIRST = re.compile(
    r"(?P<word>very\s+high|high|medium|moderate|low|very\s+low)\s+confidence", re.IGNORECASE
)
_WORD_CONFIDENCE = {
    "very high": 0.95,
    "high": 0.9,
    "medium": 0.6,
    "moderate": 0.6,
    "low": 0.3,
    "very low": 0.1,
}

RawBox = tuple[float, float, float, float]
"""Four numbers exactly as the model wrote them, in whatever frame it used."""

ParserMode = Literal["ours", "official"]
"""Which rules read a reply: ours (module docstring), or the official code's (`official`)."""

# The official rules, our spelling (Base lines 190-196, 257-282). Each `\s*` run is followed
# by a required token or by optional tokens that carry their own trailing `\s*`, so long
# whitespace cannot make them backtrack polynomially; they accept the same texts as the
# official patterns.
_OFFICIAL_HEADER = r"answer(?:\*\*)?\s*[:：]\s*"
"""`Answer:` / `Rechecked Answer:` / `**Answer**:` (the official alternation also matches the
"Answer" inside "Rechecked Answer", so only "answer" decides where a letter may follow)."""
_OFFICIAL_BRACKETED = re.compile(_OFFICIAL_HEADER + r"[\(\[]\s*([A-E])\s*[\)\]]", re.IGNORECASE)
_OFFICIAL_BARE = re.compile(_OFFICIAL_HEADER + r"\b([A-E])\b", re.IGNORECASE)
_OFFICIAL_RECHECKED = re.compile(
    r"rechecked answer(?:\*\*)?\s*[:：]\s*(?:[\(\[]\s*)?([A-E])", re.IGNORECASE
)
_OFFICIAL_NUMBER = r"([\d.]+)"
_OFFICIAL_BOX = re.compile(
    r"(?:bounding box|bbox)(?:\*\*)?\s*(?:[:：]\s*)?(?:\*\*\s*)?\[\s*"
    + r"\s*,\s*".join([_OFFICIAL_NUMBER] * 4)
    + r"\s*\]",
    re.IGNORECASE,
)


def parse_choice(text: str, letters: Iterable[str], *, rechecked: bool = False) -> str | None:
    """The option letter a reply chose (upper case), or None. See the module docstring."""
    found = find_choice(text, letters, rechecked=rechecked)
    return found[0] if found else None


def find_choice(
    text: str, letters: Iterable[str], *, rechecked: bool = False
) -> tuple[str, int] | None:
    """Like `parse_choice`, with the character offset of the chosen letter in `text` (to find
    the token that carried it, for token-probability confidence)."""
    valid = {letter.upper() for letter in letters}
    patterns = ([_RECHECKED] if rechecked else []) + [_ANSWER, _ANSWER_IS]
    for pattern in patterns:
        found = _last_valid(pattern.finditer(text), valid)
        if found:
            return found
    match = _LEADING_LETTER.match(text)
    if match and match.group(1).upper() in valid:
        return match.group(1).upper(), match.start(1)
    return None


def _last_valid(matches: Iterable[re.Match[str]], valid: set[str]) -> tuple[str, int] | None:
    chosen = None
    for match in matches:
        index = next(i for i, group in enumerate(match.groups(), start=1) if group)
        letter = match.group(index).upper()
        if letter in valid:
            chosen = (letter, match.start(index))
    return chosen


def parse_answer(
    text: str,
    options: Mapping[str, str] | None,
    *,
    rechecked: bool = False,
    mode: ParserMode = "ours",
) -> str | None:
    """An option letter when there are options (`parse_choice`), else free text. `official`
    mode: `parse_official_choice`, whatever the options."""
    if mode == "official":
        return parse_official_choice(text, rechecked=rechecked)
    if options:
        return parse_choice(text, options, rechecked=rechecked)
    return parse_open_answer(text, rechecked=rechecked)


def parse_official_choice(text: str, *, rechecked: bool = False) -> str | None:
    """The letter the official code reads (upper case), or None. First call: the first
    `Answer: (X)` / `Answer: [X]` anywhere, else the first `Answer: X` with X a lone letter
    (either "Answer" or "Rechecked Answer" labels it). Refine call (`rechecked`): the first
    `Rechecked Answer:` followed by a letter, bracketed or not, standing alone or not
    ("Rechecked Answer: because" reads `B`), with no fallback to `Answer:`. Letters are A–E in
    either case, offered or not."""
    if rechecked:
        match = _OFFICIAL_RECHECKED.search(text)
        return match.group(1).upper() if match else None
    for pattern in (_OFFICIAL_BRACKETED, _OFFICIAL_BARE):
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return None


def parse_official_box(text: str) -> tuple[str, str, str, str] | None:
    """The official box text: the four number strings of the **last** `Bounding box: [a, b, c,
    d]` / `bbox [a, b, c, d]` (label in any case, `**` and the colon optional, numbers of digits
    and dots only: no signs, no exponents), or None. Strings, since the official code gives up
    on the box when its last match is not four numbers ("1.2.3")."""
    matches = list(_OFFICIAL_BOX.finditer(text))
    if not matches:
        return None
    a, b, c, d = matches[-1].groups()
    return a, b, c, d


def parse_open_answer(text: str, *, rechecked: bool = False) -> str | None:
    """A free-text answer: the rest of the last `Rechecked Answer:` / `Answer:` line.

    Without such a label, the first non-empty line that is not a box or confidence line.
    """
    patterns = ([_RECHECKED_TEXT] if rechecked else []) + [_ANSWER_TEXT]
    for pattern in patterns:
        matches = list(pattern.finditer(text))
        if matches:
            answer = _clean_answer(matches[-1].group(1))
            if answer:
                return answer
    for line in text.splitlines():
        cleaned = _clean_answer(line)
        lowered = cleaned.lower()
        if cleaned and not lowered.startswith(("bounding box", "confidence", "<box>", "bbox")):
            return cleaned
    return None


def _clean_answer(value: str) -> str:
    return value.strip().strip("*_").strip()


def parse_boxes(text: str) -> list[RawBox]:
    """Every box in the reply, labelled ones first, then bracketed quadruples in reading order."""
    labelled: list[tuple[int, RawBox]] = []
    spans: list[tuple[int, int]] = []
    for match in _BOX_TAG.finditer(text):
        spans.append(match.span())
        for inner in _INNER_LIST.finditer(match.group(1)):
            labelled.append((match.start() + inner.start(), _numbers(inner.groups())))
    for pattern in (_BBOX_2D, _LABELLED):
        for match in pattern.finditer(text):
            if not _inside(match.span(), spans):
                spans.append(match.span())
                labelled.append((match.start(), _numbers(match.groups())))
    prose = [
        (match.start(), _numbers(match.groups()))
        for match in _BRACKETED.finditer(text)
        if not _inside(match.span(), spans)
    ]
    ordered = [box for _, box in sorted(labelled, key=lambda item: item[0])]
    ordered += [box for _, box in prose]
    return [box for box in ordered if all(math.isfinite(v) for v in box)]


def _numbers(groups: Sequence[str | None]) -> RawBox:
    values = [_to_float(group) for group in groups[:4]]
    return (values[0], values[1], values[2], values[3])


def _to_float(value: str | None) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (ValueError, OverflowError):
        return math.nan


def _inside(span: tuple[int, int], spans: Iterable[tuple[int, int]]) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in spans)


def parse_confidence(text: str) -> float | None:
    """Confidence in 0–1 from the last confidence statement, or None when there is none."""
    matches = list(_CONFIDENCE.finditer(text))
    if matches:
        return _confidence_value(matches[-1])
    words = list(_CONFIDENCE_WORD_FIRST.finditer(text))
    if words:
        return _WORD_CONFIDENCE[_normalize_word(words[-1].group("word"))]
    return None


def _confidence_value(match: re.Match[str]) -> float | None:
    word = match.group("word")
    if word:
        return _WORD_CONFIDENCE[_normalize_word(word)]
    value = _to_float(match.group("num"))
    unit = (match.group("unit") or "").replace(" ", "")
    if not math.isfinite(value) or value < 0:
        return None
    if unit == "%":
        value /= 100.0
    elif unit.startswith("/"):
        value /= float(unit[1:])
    elif value > 1.0:
        value /= 100.0  # a bare 85 means 85 out of 100
    return value if value <= 1.0 else None


def _normalize_word(word: str) -> str:
    return " ".join(word.lower().split())
