"""Every text the model is shown, in one place.

Written after the paper's intent in our own words. The paper preset asks for a box in fractions
0–1 of the image shown; the `internvl` style asks for InternVL's native `<box>[[…]]</box>` in 0–1000.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

PromptStyle = Literal["paper", "internvl"]

QUESTION_WITH_OPTIONS = "Question: {question}\nOptions:\n{options}"
QUESTION_OPEN = "Question: {question}"

ANSWER_HINT_CHOICE = "the letter of the correct option"
ANSWER_HINT_OPEN = "a short answer"

BOX_INSTRUCTIONS: dict[PromptStyle, str] = {
    "paper": (
        "Bounding box: [x1, y1, x2, y2]\n"
        "where x1, y1, x2, y2 are the left, top, right and bottom edges of the region as fractions "
        "of the {image}'s width and height, each between 0 and 1."
    ),
    "internvl": (
        "Bounding box: <box>[[x1, y1, x2, y2]]</box>\n"
        "where x1, y1, x2, y2 are the left, top, right and bottom edges of the region on a 0 to "
        "1000 scale of the {image}'s width and height."
    ),
}

MULTI_BOX_INSTRUCTIONS: dict[PromptStyle, str] = {
    "paper": (
        "Bounding box 1: [x1, y1, x2, y2]\n"
        "Bounding box 2: [x1, y1, x2, y2]\n"
        "with one line per region (at most {regions} lines), where x1, y1, x2, y2 are the left, "
        "top, right and bottom edges of that region as fractions of the {image}'s width and "
        "height, each between 0 and 1."
    ),
    "internvl": (
        "Bounding box 1: <box>[[x1, y1, x2, y2]]</box>\n"
        "Bounding box 2: <box>[[x1, y1, x2, y2]]</box>\n"
        "with one line per region (at most {regions} lines), where x1, y1, x2, y2 are the left, "
        "top, right and bottom edges of that region on a 0 to 1000 scale of the {image}'s width "
        "and height."
    ),
}

LOCALIZE = """{question_block}

First answer the question from the image as you see it now. Then mark the one region of the \
image that matters most for the answer, with enough surrounding context to recognise it; it will \
be cut out of the original high-resolution image so you can look closer.
Reply in exactly this form:
Answer: <{answer_hint}>
{box_instructions}"""

REFINE = """This last image is a close-up of the region you marked, cut from the original \
high-resolution image, so small details are sharper here. Look at it carefully and re-check your \
preliminary answer{previous} to the question:
{question_block}

Briefly say what the close-up shows that bears on the question. Then end with exactly two lines:
Rechecked Answer: <{answer_hint}>
Confidence: <how sure you are, a number from 0 to 1>"""

LOCALIZE_MULTI = """{question_block}

First answer the question from the image as you see it now. Then mark where to look closer. \
Usually one region is enough; when the answer depends on things in separate places (for example \
two objects to compare), mark each of them as its own region, up to {regions} regions, most \
important first. Give each region enough surrounding context to recognise it; every region will \
be cut out of the original high-resolution image so you can look closer.
Reply in exactly this form:
Answer: <{answer_hint}>
{box_instructions}"""

REFINE_MULTI = """These last {count} images are close-ups of the regions you marked, in the order \
you gave them, cut from the original high-resolution image, so small details are sharper here. \
Look at them carefully and re-check your preliminary answer{previous} to the question:
{question_block}

Briefly say what the close-ups show that bears on the question. Then end with exactly two lines:
Rechecked Answer: <{answer_hint}>
Confidence: <how sure you are, a number from 0 to 1>"""

ZOOM_AGAIN_MULTI = """You are not sure yet. Within the last close-up you saw, mark the smaller \
region (or up to {regions} separate regions) that would settle the question, each with a little \
surrounding context.
Reply in exactly this form:
Answer: <{answer_hint}>
{box_instructions}"""

ZOOM_AGAIN = """You are not sure yet. Within the close-up you just saw, mark the smaller region that \
would settle the question, with a little surrounding context.
Reply in exactly this form:
Answer: <{answer_hint}>
{box_instructions}"""

BASELINE = """{question_block}

{answer_instruction}"""

BASELINE_CHOICE = (
    "Answer with the option's letter from the given choices directly, as: Answer: <letter>"
)
BASELINE_OPEN = "Answer the question with a short answer, as: Answer: <answer>"


def question_block(question: str, options: Mapping[str, str] | None) -> str:
    """The question, and its lettered options one per line (`A. text`)."""
    if not options:
        return QUESTION_OPEN.format(question=question.strip())
    lines = "\n".join(f"{letter}. {text}" for letter, text in options.items())
    return QUESTION_WITH_OPTIONS.format(question=question.strip(), options=lines)


def answer_hint(options: Mapping[str, str] | None) -> str:
    return ANSWER_HINT_CHOICE if options else ANSWER_HINT_OPEN


def localize_prompt(
    question: str, options: Mapping[str, str] | None, style: PromptStyle, regions: int = 1
) -> str:
    """First turn: a preliminary answer and one box (up to `regions` boxes when above 1) on the
    whole (downsampled) image."""
    if regions > 1:
        return LOCALIZE_MULTI.format(
            question_block=question_block(question, options),
            answer_hint=answer_hint(options),
            regions=regions,
            box_instructions=MULTI_BOX_INSTRUCTIONS[style].format(image="image", regions=regions),
        )
    return LOCALIZE.format(
        question_block=question_block(question, options),
        answer_hint=answer_hint(options),
        box_instructions=BOX_INSTRUCTIONS[style].format(image="image"),
    )


def refine_prompt(
    question: str, options: Mapping[str, str] | None, previous_answer: str | None, crops: int = 1
) -> str:
    """After a crop (or `crops` crops, shown in order): re-check the answer with the close-ups;
    end with answer and confidence."""
    previous = f" ({previous_answer})" if previous_answer else ""
    template = REFINE_MULTI if crops > 1 else REFINE
    return template.format(
        count=crops,
        previous=previous,
        question_block=question_block(question, options),
        answer_hint=answer_hint(options),
    )


def zoom_again_prompt(
    options: Mapping[str, str] | None, style: PromptStyle, regions: int = 1
) -> str:
    """When still unsure: a box (up to `regions` boxes when above 1) inside the latest close-up
    (nested zoom; with several crops, the last one)."""
    if regions > 1:
        return ZOOM_AGAIN_MULTI.format(
            answer_hint=answer_hint(options),
            regions=regions,
            box_instructions=MULTI_BOX_INSTRUCTIONS[style].format(
                image="close-up", regions=regions
            ),
        )
    return ZOOM_AGAIN.format(
        answer_hint=answer_hint(options),
        box_instructions=BOX_INSTRUCTIONS[style].format(image="close-up"),
    )


def baseline_prompt(question: str, options: Mapping[str, str] | None) -> str:
    """One direct answer, no zoom: the comparison every experiment needs."""
    return BASELINE.format(
        question_block=question_block(question, options),
        answer_instruction=BASELINE_CHOICE if options else BASELINE_OPEN,
    )
