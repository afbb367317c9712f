"""Benchmark-faithful question text: what a baseline run sends, as each benchmark's reference
evaluation builds it (written here after reading that code; no code copied).

How this relates to the graph's prompts: `zoom_refine.agent.prompts` builds the Zoom-Refine graph's
own localize / refine / zoom-again turns (and its default baseline turn) from the question and its
options, around our `Answer: X` / `Rechecked Answer: X` protocol, which `parse_choice` reads. The
benchmark prompt is *not* embedded in those turns: its answer cue ("The best answer is:", "answer
with the letter directly") would fight the localize turn's answer-plus-box format. It is what a
baseline run sends when its numbers must be comparable with published ones, and what the
`official` extractors in `scoring` were written for: a reply to these prompts is usually a bare
letter, while a reply in our protocol ("Answer: B") reads as `A` under MME-RealWorld's official
rule (see `scoring`).

Reproduced, per benchmark:

- **HR-Bench** (VLMEvalKit's multiple-choice prompt for InternVL models, which HR-Bench's own
  evaluation kit, a VLMEvalKit fork, uses): the question, then one line per option `A. text`,
  then the instruction to answer with the option's letter directly. VLMEvalKit's generic MCQ
  prompt ("Question: …\\nOptions:\\n…Please select the correct answer…") is used only for models
  without their own; we follow the InternVL one, the model family of the paper.
- **V\\*** (penghao-wu/vstar) scores by option likelihood and has no text prompt with letters;
  generative evaluations (lmms-eval's `vstar_bench`, VLMEvalKit's `VStarBench`) send the same
  prompt as HR-Bench above. We do the same.
- **MME-RealWorld** (yfzhang114/MME-RealWorld, `evaluation/model_vqa_mme_real_world.py`): the
  question, " The choices are listed below: " and a newline, one line per choice `(A) text`, the
  instruction to pick the best answer and reply with only its letter (A–E), then a last line
  "The best answer is:". The instruction sentence and the cue are reproduced word for word
  (including the spacing): they steer the model to a bare letter, which the official extractor
  expects. The VLMEvalKit variant of this dataset repeats the cue twice; we follow the repo.

Every option line goes through `agent.prompts.option_lines`, our one renderer of options, with the
benchmark's line format (`A. text`, `(A) text`, or MME-RealWorld's own prefixed choices).

The exact instruction sentences are benchmark protocol (the text the model sees), reproduced so
that baseline numbers are comparable; everything else here is ours.

**The official Zoom-Refine conversion** (xavier-yu114/Zoom-Refine fc6c1ad; `official_prompt`,
`official_question`, used under `ZoomContext(question_text="official")`, the `official` preset):
its runs read each benchmark from a JSON file its scripts wrote, whose user message is the whole
prompt, and the pipeline sends that prompt as the question:

- **HR-Bench** (`evaluation/build_json.py`, lines 44–55): the question, a newline, "The choices are
  listed below:", one line per option `(A) text` (always A–D: an empty option keeps its line
  `(C) `), MME-RealWorld's instruction sentence with "(A, B, C, or D)" and no full stop, then "The
  best answer is:." (with that full stop). Each cell is formatted as Python formats the value
  pandas gives (`pandas_text`): a float cell `3.0` reads `3.0`, not `3`, a null `None`. The
  official conversion reads HR-Bench's parquet, so that needs the parquet's typed values in
  `Sample.source[TYPED_CELLS]`; without them (a TSV, a loader that keeps only text) the text
  cells are used (`3`, an empty option `(C) `).
- **MME-RealWorld** (`scripts/convert.py`, lines 36–47): the `Text` with **no** separator before
  "The choices are listed below:" (a question ending in "?" reads "?The choices…"), the dataset's
  own choice strings one per line, the instruction sentence with "(A, B, C, D, or E)", then "The
  best answer is:.". Rows read from a TSV (no `Answer choices` list) get `(A) text` choices.
- **V\\***: the official repository converts no V* data; we use the MME-RealWorld layout above,
  `convert.py` being its generic converter.

`official_prompt` is that stored prompt (what the official baseline, `evaluation/base.py`, sends
as it is). `official_question` is what the Zoom-Refine pipeline puts in its template
(`zoomrefine/ZoomRefine_Base.py` lines 392–395): the prompt with the five-letter "Respond with only
the letter (A, B, C, D, or E) of the correct option" removed wherever it occurs, then stripped.
HR-Bench's four-letter sentence does not match that phrase, so it stays in the question.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from zoom_refine.agent.prompts import option_lines
from zoom_refine.evals.samples import Benchmark, Sample

LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""HR-Bench and V*: the last line of the prompt."""

MME_CHOICES_HEADER = " The choices are listed below: \n"
MME_INSTRUCTION = (
    "Select the best answer to the above multiple-choice question based on the image. "
    "Respond with only the letter (A, B, C, D, or E) of the correct option."
)
MME_CUE = "The best answer is:"


OFFICIAL_CHOICES_HEADER = "The choices are listed below:\n"
OFFICIAL_SELECT = (
    "Select the best answer to the above multiple-choice question based on the image. "
)
OFFICIAL_RESPOND_FIVE = "Respond with only the letter (A, B, C, D, or E) of the correct option"
"""The phrase the official pipeline removes from the question (Base line 394)."""
OFFICIAL_RESPOND_FOUR = "Respond with only the letter (A, B, C, or D) of the correct option"
OFFICIAL_CUE = "The best answer is:."


def official_prompt(benchmark: Benchmark, sample: Sample) -> str:
    """The whole prompt the official data conversion stores for `sample` (module docstring),
    from the row as read (`sample.source`) where it holds the fields the conversion reads."""
    source = sample.source
    if benchmark == "hr-bench":
        typed = source.get(TYPED_CELLS)
        if isinstance(typed, Mapping):  # the parquet's own values, as pandas hands them over
            source = {**source, **typed}
        question = pandas_text(source.get("question", sample.question))
        options = {
            letter: pandas_text(source.get(letter, sample.options.get(letter, "")))
            for letter in HR_BENCH_LETTERS
        }
        choices = option_lines(options, parenthesized_option)  # always four lines
        return (
            f"{question}\n{OFFICIAL_CHOICES_HEADER}{choices}\n"
            f"{OFFICIAL_SELECT}{OFFICIAL_RESPOND_FOUR}\n{OFFICIAL_CUE}"
        )
    text = str(source.get("Text", sample.question))
    listed = source.get("Answer choices")
    if isinstance(listed, list) and all(isinstance(item, str) for item in listed):
        choices = "\n".join(listed)  # the dataset's own lines, as they are
    else:
        choices = option_lines(sample.options, mme_choice)
    return (
        f"{text}{OFFICIAL_CHOICES_HEADER}{choices}\n"
        f"{OFFICIAL_SELECT}{OFFICIAL_RESPOND_FIVE}\n{OFFICIAL_CUE}"
    )


TYPED_CELLS = "typed"
"""Key of `Sample.source` under which a loader may keep a row's cells with their file types
(parquet: `3.0` a float, a null None), for `official_prompt`; the text cells are used otherwise."""

HR_BENCH_LETTERS = ("A", "B", "C", "D")
"""The option columns the official HR-Bench conversion always writes, empty or not."""


def pandas_text(value: Any) -> str:
    """A cell as the official conversion's f-string shows the value pandas reads: text as it is,
    a float as Python prints it (`3.0`, `nan`), an int `3`, a missing value `None`."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value)


def official_question(benchmark: Benchmark, sample: Sample) -> str:
    """What the official pipeline shows as the question: `official_prompt` with the five-letter
    answer instruction removed, stripped (module docstring)."""
    return official_prompt(benchmark, sample).replace(OFFICIAL_RESPOND_FIVE, "").strip()


def benchmark_prompt(benchmark: Benchmark, sample: Sample) -> str:
    """The text a baseline run sends with the sample's image (see the module docstring)."""
    return prompt_for(benchmark, sample.question, sample.options)


def prompt_for(benchmark: Benchmark, question: str, options: Mapping[str, str]) -> str:
    """`benchmark_prompt` from its parts."""
    if benchmark == "mme-realworld":
        return mme_realworld_prompt(question, options)
    return letter_prompt(question, options)


def letter_prompt(question: str, options: Mapping[str, str]) -> str:
    """HR-Bench / V*: question, `A. text` lines, answer-with-the-letter instruction."""
    lines = [question.strip(), option_lines(options)] if options else [question.strip()]
    return "\n".join([*lines, LETTER_INSTRUCTION])


def mme_realworld_prompt(question: str, options: Mapping[str, str]) -> str:
    """MME-RealWorld: question, the `(A) text` choices, instruction, "The best answer is:"."""
    choices = option_lines(options, mme_choice) + "\n" if options else ""
    return f"{question.strip()}{MME_CHOICES_HEADER}{choices}{MME_INSTRUCTION}\n{MME_CUE}"


def parenthesized_option(letter: str, text: str) -> str:
    """One choice as MME-RealWorld and the official conversions write it: `(A) text`."""
    return f"({letter}) {text}"


def mme_choice(letter: str, text: str) -> str:
    """One MME-RealWorld choice as the dataset writes it: `(A) text`. Text that already carries
    its own `(A)` prefix is kept as it is."""
    return text if text.startswith(f"({letter})") else parenthesized_option(letter, text)
