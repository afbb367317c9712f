"""Every text the model is shown, built from a prompt set.

The wording itself is data (`agent.prompt_set`: a TOML file of templates; ours is
`agent/prompt_sets/default.toml`). This module computes each turn's placeholder values (question,
options, answer hint, box instructions, …) and renders the turn's template from the set the run
uses (`ZoomContext.prompt_set`; the default set when none is given). Only the values a template
uses are computed, so a set may leave out fragments it never refers to.

`option_lines` and `question_block` are the one renderer of options and questions: the agent
graph's turns (`agent.tool_conventions`) and the benchmark prompts (`evals.prompts`, with their
own line format) go through them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zoom_refine.agent.prompt_set import PromptSet, PromptStyle, default_prompt_set

__all__ = [
    "PromptStyle",
    "answer_hint",
    "baseline_prompt",
    "dotted_option",
    "localize_prompt",
    "option_lines",
    "question_block",
    "refine_prompt",
    "system_prompt",
    "zoom_again_prompt",
]


def dotted_option(letter: str, text: str) -> str:
    """One option as our prompts and VLMEvalKit's write it: `A. text`."""
    return f"{letter}. {text}"


def option_lines(
    options: Mapping[str, str] | None, line: Callable[[str, str], str] = dotted_option
) -> str:
    """The `{options}` value: one line per option (`line(letter, text)`, default `A. text`),
    joined by newlines, no newline after the last; empty without options."""
    return "\n".join(line(letter, text) for letter, text in (options or {}).items())


def question_block(
    question: str, options: Mapping[str, str] | None, prompts: PromptSet | None = None
) -> str:
    """The question, and its lettered options one per line (`A. text`)."""
    prompts = prompts or default_prompt_set()
    name = "question_with_options" if options else "question_open"
    return prompts.render(name, question=question.strip(), options=option_lines(options))


def answer_hint(options: Mapping[str, str] | None, prompts: PromptSet | None = None) -> str:
    """What goes in `Answer: <…>`: a letter with options, a short answer without."""
    prompts = prompts or default_prompt_set()
    return prompts.render("answer_hint_choice" if options else "answer_hint_open")


def system_prompt(prompts: PromptSet | None = None) -> str | None:
    """The set's system message, or None when it has none (the model's own default)."""
    prompts = prompts or default_prompt_set()
    return prompts.render("system") if prompts.has("system") else None


def localize_prompt(
    question: str,
    options: Mapping[str, str] | None,
    style: PromptStyle,
    regions: int = 1,
    *,
    prompts: PromptSet | None = None,
) -> str:
    """First turn: a preliminary answer and one box (up to `regions` boxes when above 1) on the
    whole (downsampled) image."""
    name = "localize_multi" if regions > 1 else "localize"
    return _render(prompts, name, question, options, style=style, image="image", regions=regions)


def refine_prompt(
    question: str,
    options: Mapping[str, str] | None,
    previous_answer: str | None,
    crops: int = 1,
    *,
    prompts: PromptSet | None = None,
) -> str:
    """After a crop (or `crops` crops, shown in order): re-check the answer with the close-ups;
    end with answer and confidence."""
    name = "refine_multi" if crops > 1 else "refine"
    return _render(prompts, name, question, options, count=crops, previous_answer=previous_answer)


def zoom_again_prompt(
    options: Mapping[str, str] | None,
    style: PromptStyle,
    regions: int = 1,
    *,
    question: str | None = None,
    previous_answer: str | None = None,
    prompts: PromptSet | None = None,
) -> str:
    """When still unsure: a box (up to `regions` boxes when above 1) inside the latest close-up
    (nested zoom; with several crops, the last one). `question` is needed only by a set whose
    zoom-again template shows it (ours does not)."""
    name = "zoom_again_multi" if regions > 1 else "zoom_again"
    return _render(
        prompts,
        name,
        question,
        options,
        style=style,
        image="close-up",
        regions=regions,
        previous_answer=previous_answer,
    )


def baseline_prompt(
    question: str, options: Mapping[str, str] | None, *, prompts: PromptSet | None = None
) -> str:
    """One direct answer, no zoom: the comparison every experiment needs."""
    return _render(prompts, "baseline", question, options)


def _render(
    prompts: PromptSet | None,
    name: str,
    question: str | None,
    options: Mapping[str, str] | None,
    *,
    style: PromptStyle = "paper",
    image: str = "image",
    regions: int = 1,
    count: int = 1,
    previous_answer: str | None = None,
) -> str:
    """Template `name` of `prompts` (default: ours), with only the values it uses computed."""
    prompts = prompts or default_prompt_set()
    used = prompts.placeholders(name)
    values: dict[str, object] = {
        "options": option_lines(options),
        "regions": regions,
        "count": count,
        "previous_answer": previous_answer or "",
    }
    if question is not None:
        values["question"] = question.strip()
        if "question_block" in used:
            values["question_block"] = question_block(question, options, prompts)
    if "answer_hint" in used:
        values["answer_hint"] = answer_hint(options, prompts)
    if "previous" in used:
        previous = previous_answer and prompts.render("previous", previous_answer=previous_answer)
        values["previous"] = previous or ""
    if "box_instructions" in used:
        fragment = f"{'multi_' if regions > 1 else ''}box_instructions_{style}"
        values["box_instructions"] = prompts.render(fragment, image=image, regions=regions)
    if "answer_instruction" in used:
        values["answer_instruction"] = prompts.render(
            "baseline_choice" if options else "baseline_open"
        )
    return prompts.render(name, **values)
