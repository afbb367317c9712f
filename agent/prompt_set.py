"""Prompt sets: every text the model is shown, as data (a TOML file of named templates).

The API, in one paragraph: `load_prompt_set(source)` takes None (our wording, the package file
`agent/prompt_sets/default.toml`), a path to a prompt-set TOML file, or an already loaded
`PromptSet` (returned as is), and returns a validated `PromptSet` or raises one
`InvalidInputError` line naming the file, the template and the placeholder at fault.
`PromptSet.render(name, **values)` fills one template (`str.format` syntax; values the template
does not use are ignored, a value it uses but was not given is a bug and raises `KeyError`);
`PromptSet.has(name)` says whether an optional template is defined; `PromptSet.placeholders(name)`
lists the ones a template uses; `PromptSet.source` (the file's path, or `default`) and
`PromptSet.sha256` (a hash of the template texts, not the file bytes) identify the set in run
records. `PromptSet.check_usable(prompt_style, max_hops, max_regions)` says (by raising) whether
the set has every template those settings will render. `PromptSet.agent_text(name, **values)`
fills one of the agent graph's texts (`AGENT_TEXTS`). `agent.prompts` builds each turn from a set
(and computes the placeholder values), `agent.tool_conventions` the agent graph's; the graphs take
the set from `ZoomContext.prompt_set`.

File format (docs/prompts.md has the long version)::

    description = "optional: one line saying what the set is"
    [templates]
    localize = '''
    {question_block}
    ...'''
    [agent.zoom_hint]          # optional: the agent graph's texts (`AGENT_TEXTS`)
    crop = "Zoom with crop, at most {limit} times."

Templates use `{name}` placeholders; a literal brace is written `{{` or `}}`. A newline right
after the opening `'''` is dropped by TOML. Images are never placed by a template: every turn's
images come first, then its text (`agent.conversation`). A template may begin with InternVL's
image marker `<image>` (and one newline), as the official templates do; it is stripped on load,
and `<image>` anywhere else is refused.

Templates (`TEMPLATES`; required: `localize`, `refine`) and placeholders (`PLACEHOLDERS`): a
template may use only the placeholders listed for it, and the turn templates that ask a question
(`localize`, `localize_multi`, `baseline`) must contain `{question}` or `{question_block}`.

- `system`: a system message before the first turn (no placeholders). Absent: none is sent.
- `localize` / `localize_multi` (`max_regions` > 1): the first turn, shown with the whole image:
  `{question}`, `{options}`, `{question_block}`, `{answer_hint}`, `{box_instructions}`, and
  `{regions}` in the multi variant.
- `refine` / `refine_multi`: the turn shown with the crop(s): `{question}`, `{options}`,
  `{question_block}`, `{answer_hint}`, `{previous}`, `{previous_answer}`, and `{count}` in the
  multi variant.
- `zoom_again` / `zoom_again_multi` (`max_hops` > 1): the localize turn inside the latest crop:
  `{question}`, `{options}`, `{question_block}`, `{answer_hint}`, `{box_instructions}`,
  `{previous_answer}`, and `{regions}` in the multi variant.
- `baseline`: the one direct-answer turn of the baseline graph when no benchmark prompt is given:
  `{question}`, `{options}`, `{question_block}`, `{answer_instruction}`.
- Fragments, rendered into the placeholders above when a turn template uses them:
  `question_with_options` / `question_open` → `{question_block}` (`{question}`, `{options}`);
  `answer_hint_choice` / `answer_hint_open` → `{answer_hint}`; `previous` → `{previous}` (only
  when there is a previous answer, else empty; `{previous_answer}`); `baseline_choice` /
  `baseline_open` → `{answer_instruction}`; `box_instructions_<style>` and
  `multi_box_instructions_<style>` (style `paper` or `internvl`, from `ZoomContext.prompt_style`)
  → `{box_instructions}` (`{image}`, and `{regions}` in the multi variant).

Agent texts (`[agent]`, optional, each text on its own): the model-driven graph's wording, per
tool convention where it differs (`AGENT_TEXTS`, placeholders `AGENT_PLACEHOLDERS`). Every text a
set leaves out is ours (the default set's `[agent]` table), so a set written for the Zoom-Refine
graph alone (the official one) runs the agent graph with our agent wording.

Placeholder values: `{question}` the question text, stripped (under the `official` preset, the
benchmark's whole prompt); `{options}` the options as lines `A. text` (empty for an open
question); `{regions}` `max_regions`; `{count}` the number of crops shown; `{previous_answer}`
the answer before this turn (empty when none); `{image}` what the box is drawn on (`image` on the
first hop, `close-up` after).
"""

from __future__ import annotations

import hashlib
import json
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from zoom_refine.tools.errors import InvalidInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the backport
    import tomli as tomllib

PromptStyle = Literal["paper", "internvl"]
PROMPT_STYLES: tuple[PromptStyle, ...] = ("paper", "internvl")

DEFAULT_SOURCE = "default"
"""`PromptSet.source` of the set shipped with the package."""

DEFAULT_RESOURCE = ("prompt_sets", "default.toml")
"""Where the default set lies inside the `zoom_refine.agent` package."""

IMAGE_MARKER = "<image>"
"""InternVL's image placeholder: allowed only at the start of a template (stripped on load)."""

PLACEHOLDERS: dict[str, str] = {
    "question": "the question text, stripped (under the official preset: the benchmark's prompt)",
    "options": "the options as lines `A. text`, joined by newlines; empty for an open question",
    "question_block": "`question_with_options` (or `question_open` without options), rendered",
    "answer_hint": "`answer_hint_choice` (or `answer_hint_open` without options), rendered",
    "box_instructions": "`[multi_]box_instructions_<prompt_style>`, rendered",
    "regions": "the most regions a reply may mark (`max_regions`)",
    "count": "the number of crops shown in this turn",
    "previous": "`previous` rendered when there is a previous answer, else empty",
    "previous_answer": "the answer before this turn (a letter or short text); empty when none",
    "answer_instruction": "`baseline_choice` (or `baseline_open` without options), rendered",
    "image": "what the box is drawn on: `image` (first hop) or `close-up` (nested hops)",
}
"""Every placeholder a template may use, with what it is replaced by."""

_QUESTION = frozenset({"question", "options", "question_block"})
_ASKS = ("question", "question_block")


@dataclass(frozen=True)
class TemplateSpec:
    """What one template may contain: `allowed` placeholders, and `needs_one_of` (at least one
    of them must appear; empty: no requirement)."""

    allowed: frozenset[str]
    required: bool = False
    needs_one_of: tuple[str, ...] = ()
    doc: str = ""


TEMPLATES: dict[str, TemplateSpec] = {
    "system": TemplateSpec(frozenset(), doc="system message before the first turn"),
    "localize": TemplateSpec(
        _QUESTION | {"answer_hint", "box_instructions"},
        required=True,
        needs_one_of=_ASKS,
        doc="first turn with the whole image: an answer and one box",
    ),
    "localize_multi": TemplateSpec(
        _QUESTION | {"answer_hint", "box_instructions", "regions"},
        needs_one_of=_ASKS,
        doc="first turn when max_regions > 1: an answer and up to {regions} boxes",
    ),
    "refine": TemplateSpec(
        _QUESTION | {"answer_hint", "previous", "previous_answer"},
        required=True,
        doc="turn shown with the crop: re-check the answer",
    ),
    "refine_multi": TemplateSpec(
        _QUESTION | {"answer_hint", "previous", "previous_answer", "count"},
        doc="turn shown with {count} crops (max_regions > 1)",
    ),
    "zoom_again": TemplateSpec(
        _QUESTION | {"answer_hint", "box_instructions", "previous_answer"},
        doc="nested localize inside the latest crop (max_hops > 1)",
    ),
    "zoom_again_multi": TemplateSpec(
        _QUESTION | {"answer_hint", "box_instructions", "previous_answer", "regions"},
        doc="nested localize with up to {regions} boxes (max_hops > 1, max_regions > 1)",
    ),
    "baseline": TemplateSpec(
        _QUESTION | {"answer_instruction"},
        needs_one_of=_ASKS,
        doc="the baseline graph's one turn when no benchmark prompt is given",
    ),
    "question_with_options": TemplateSpec(
        frozenset({"question", "options"}), needs_one_of=("question",), doc="{question_block}"
    ),
    "question_open": TemplateSpec(
        frozenset({"question"}), needs_one_of=("question",), doc="{question_block}, no options"
    ),
    "answer_hint_choice": TemplateSpec(frozenset(), doc="{answer_hint} with options"),
    "answer_hint_open": TemplateSpec(frozenset(), doc="{answer_hint} without options"),
    "previous": TemplateSpec(frozenset({"previous_answer"}), doc="{previous}"),
    "baseline_choice": TemplateSpec(frozenset(), doc="{answer_instruction} with options"),
    "baseline_open": TemplateSpec(frozenset(), doc="{answer_instruction} without options"),
    **{
        f"box_instructions_{style}": TemplateSpec(
            frozenset({"image"}), doc=f"{{box_instructions}} under prompt_style={style}"
        )
        for style in PROMPT_STYLES
    },
    **{
        f"multi_box_instructions_{style}": TemplateSpec(
            frozenset({"image", "regions"}),
            doc=f"{{box_instructions}} of the multi variants under prompt_style={style}",
        )
        for style in PROMPT_STYLES
    },
}
"""Every template a set may define (a name not listed here is refused, to catch typos)."""

FRAGMENTS: dict[str, tuple[str, ...]] = {
    "question_block": ("question_with_options", "question_open"),
    "answer_hint": ("answer_hint_choice", "answer_hint_open"),
    "previous": ("previous",),
    "answer_instruction": ("baseline_choice", "baseline_open"),
}
"""Placeholders rendered from other templates: a set that uses one must define those templates
(`{box_instructions}` depends on the prompt style and is checked by `check_usable`)."""

AGENT_CONVENTIONS = ("crop", "qwen3_vl", "deepeyes", "mini_o3")
"""The tool conventions with their own agent texts (`agent.tool_conventions.TOOL_CONVENTIONS`,
held equal by a test: this module cannot import that one, which imports it)."""

ANSWER_STYLES = ("label", "tag")
"""How a convention asks for the final answer (`agent.tool_conventions.AnswerStyle`)."""

AGENT_PLACEHOLDERS: dict[str, str] = {
    "tools": "the tool's signature as JSON, in OpenAI's function format",
    "limit": "the zoom budget: the most zoom calls per question (`max_hops`)",
    "answer_hint": PLACEHOLDERS["answer_hint"],
    "answer_format": "`answer_format.<style>` of the run's tool convention, rendered",
    "action": "the zoom call's number in the run, from 1",
    "number": "the crop's number k (its view is `img<k>`, the model's `observation_<k>`)",
    "message": "why the zoom call failed or was refused",
}
"""Every placeholder an agent text may use, with what it is replaced by."""

AGENT_TEXTS: dict[str, TemplateSpec] = {
    "tools_system": TemplateSpec(
        frozenset({"tools"}),
        needs_one_of=("tools",),
        doc="system turn when calls are written as text (not mini_o3): the tool's signature",
    ),
    "mini_o3_system": TemplateSpec(frozenset(), doc="the mini_o3 convention's system turn"),
    **{
        f"zoom_hint.{name}": TemplateSpec(
            frozenset({"limit"}), doc=f"after the question, under tool_convention={name}"
        )
        for name in AGENT_CONVENTIONS
    },
    **{
        f"answer_format.{style}": TemplateSpec(
            frozenset({"answer_hint"}), doc=f"how the final answer is asked for ({style} style)"
        )
        for style in ANSWER_STYLES
    },
    "final": TemplateSpec(
        frozenset({"limit", "answer_format"}), doc="the last turn once the zoom budget is spent"
    ),
    **{
        f"result_hint.{name}": TemplateSpec(
            frozenset(), doc=f"after each crop result under tool_convention={name} (empty: none)"
        )
        for name in AGENT_CONVENTIONS
    },
    "observation": TemplateSpec(
        frozenset({"action", "number"}), doc="mini_o3: the line before each crop"
    ),
    "error": TemplateSpec(
        frozenset({"message"}), needs_one_of=("message",), doc="a failed or refused zoom call"
    ),
}
"""The agent graph's texts, named as in the `[agent]` table (`zoom_hint.crop` is `crop` in
`[agent.zoom_hint]`). Each is optional in a file: one left out is ours."""

AGENT_TABLE = "agent"
TOP_LEVEL_KEYS = ("description", "templates", AGENT_TABLE)

NO_FILE = "prompt set {path}: no such file; pass a prompt-set TOML file (docs/prompts.md)"
UNREADABLE = "prompt set {path}: cannot be read ({reason})"
BAD_TOML = "prompt set {path}: not valid TOML: {reason}"
BAD_LAYOUT = "prompt set {path}: {problem} (docs/prompts.md shows the layout)"
BAD_TEMPLATE = "prompt set {path}: template {name!r}: {problem}"
UNKNOWN_PLACEHOLDER = (
    "prompt set {path}: template {name!r} uses unknown placeholder {{{placeholder}}}; "
    "it may use {allowed} (docs/prompts.md)"
)
MISSING_TEMPLATE = "prompt set {path}: no template {name!r}, which {why}; add it to [templates]"
TOO_LARGE = "prompt set {path}: {size} bytes; a prompt set is a few kB (at most 1 MiB is read)"
TOO_NESTED = (
    "prompt set {path}: not valid TOML: nested too deeply (a prompt set is a [templates] and "
    "an [agent] table of strings)"
)
MAX_BYTES = 1 << 20
"""Largest prompt-set file read, in bytes."""
BOM = "\ufeff"
"""A UTF-8 byte order mark, as some editors begin a file with: skipped (TOML does not allow it)."""


def _our_agent_texts() -> dict[str, str]:
    """A copy of `default_agent_texts()` (a set's own mapping)."""
    return dict(default_agent_texts())


@dataclass(frozen=True)
class PromptSet:
    """A validated prompt set: template texts by name (image markers already stripped)."""

    source: str
    """Where it came from: the file's path, or `default` (the package's own set)."""

    templates: Mapping[str, str]
    """Template name → text (`str.format` syntax)."""

    description: str = ""
    """The file's optional one-line description."""

    agent: Mapping[str, str] = field(default_factory=_our_agent_texts)
    """The agent graph's texts by `AGENT_TEXTS` name, every one: the file's, ours for the rest."""

    sha256: str = field(init=False)
    """SHA-256 (hex) of the templates as JSON, sorted by name, and of the agent texts that differ
    from ours: equal texts, equal hash, whatever the file's layout or path. Agent texts count only
    where they differ, so a set hashes as it did before they were part of sets (and its run
    folders still resume)."""

    def __post_init__(self) -> None:
        templates = dict(sorted(self.templates.items()))
        ours = default_agent_texts()
        changed = {
            name: text for name, text in sorted(self.agent.items()) if ours.get(name) != text
        }
        document = {"templates": templates, "agent": changed} if changed else templates
        canonical = json.dumps(document, ensure_ascii=False)
        object.__setattr__(self, "sha256", hashlib.sha256(canonical.encode()).hexdigest())

    def __hash__(self) -> int:  # `templates` is a dict: hash what identifies the set
        return hash((self.source, self.sha256))

    def has(self, name: str) -> bool:
        """Whether the set defines template `name`."""
        return name in self.templates

    def placeholders(self, name: str) -> frozenset[str]:
        """The placeholder names template `name` uses (empty when the set lacks it)."""
        text = self.templates.get(name)
        return frozenset() if text is None else template_placeholders(text)

    def render(self, name: str, **values: object) -> str:
        """Template `name` with its placeholders filled from `values` (extra values ignored).
        A missing template raises InvalidInputError; a missing value is a caller bug (KeyError)."""
        text = self.templates.get(name)
        if text is None:
            raise InvalidInputError(
                MISSING_TEMPLATE.format(path=self.source, name=name, why="this run renders")
            )
        return text.format_map(_Strict(values))

    def agent_text(self, name: str, **values: object) -> str:
        """Agent text `name` (`AGENT_TEXTS`) with its placeholders filled from `values` (extra
        values ignored; a missing one is a caller bug, KeyError)."""
        return self.agent[name].format_map(_Strict(values))

    def fragments_or_ours(self, *names: str) -> PromptSet:
        """This set when it defines every fragment in `names`, else ours: the agent graph renders
        the question and answer hint through these fragments, which a set written for the
        Zoom-Refine graph alone (the official one) may leave out."""
        return self if all(name in self.templates for name in names) else default_prompt_set()

    def check_usable(self, prompt_style: PromptStyle, max_hops: int, max_regions: int) -> None:
        """Raise InvalidInputError when a run with these settings would render a template (or a
        box-instruction fragment for `prompt_style`) that the set lacks."""
        multi = max_regions > 1
        needed = {"refine": "every prompt set needs"}
        if multi:
            needed |= dict.fromkeys(("localize_multi", "refine_multi"), "max_regions > 1 needs")
        else:
            needed["localize"] = "every prompt set needs"
        if max_hops > 1:
            needed["zoom_again_multi" if multi else "zoom_again"] = "max_hops > 1 needs"
        for name, why in needed.items():
            if name not in self.templates:
                raise InvalidInputError(
                    MISSING_TEMPLATE.format(path=self.source, name=name, why=why)
                )
            if "box_instructions" in self.placeholders(name):
                several = "multi_" if name.endswith("_multi") else ""
                fragment = f"{several}box_instructions_{prompt_style}"
                if fragment not in self.templates:
                    why = (
                        f"{{box_instructions}} in {name!r} needs under prompt_style={prompt_style}"
                    )
                    raise InvalidInputError(
                        MISSING_TEMPLATE.format(path=self.source, name=fragment, why=why)
                    )

    def __str__(self) -> str:
        return f"{self.source} (sha256 {self.sha256[:12]})"


class _Strict(dict[str, object]):
    """`format_map` values that name the missing key in the KeyError."""

    def __missing__(self, key: str) -> object:
        raise KeyError(f"no value for placeholder {{{key}}}")


PromptSetSource = str | Path | PromptSet | None
"""What `load_prompt_set` (and `ZoomContext.prompts`) takes."""


def load_prompt_set(source: PromptSetSource = None) -> PromptSet:
    """The prompt set at `source` (a TOML file path), the default set for None, or `source`
    itself when already loaded. Raises one InvalidInputError line for any problem."""
    if isinstance(source, PromptSet):
        return source
    if source is None:
        return default_prompt_set()
    path = Path(source)
    if not path.is_file():
        raise InvalidInputError(NO_FILE.format(path=path))
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InvalidInputError(TOO_LARGE.format(path=path, size=size))
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(UNREADABLE.format(path=path, reason=error)) from error
    return parse_prompt_set(text, str(path))


@cache
def default_prompt_set() -> PromptSet:
    """Our own wording (`agent/prompt_sets/default.toml`), loaded once."""
    return parse_prompt_set(_default_text(), DEFAULT_SOURCE)


@cache
def default_agent_texts() -> Mapping[str, str]:
    """Our agent texts (the default set's `[agent]` table): what every set's missing ones are."""
    data = tomllib.loads(_default_text())
    texts = _agent_texts(DEFAULT_SOURCE, data.get(AGENT_TABLE))
    missing = sorted(set(AGENT_TEXTS) - set(texts))
    if missing:  # our file's bug, never a user's
        raise AssertionError(f"the default prompt set lacks the agent texts {missing}")
    return MappingProxyType(texts)


@cache
def _default_text() -> str:
    resource = resources.files("zoom_refine.agent").joinpath(*DEFAULT_RESOURCE)
    return resource.read_text(encoding="utf-8")


def parse_prompt_set(text: str, source: str) -> PromptSet:
    """Validate a prompt set's TOML `text`; `source` names it in errors and in the result. A
    leading byte order mark is skipped; nesting past the parser's recursion is one error line."""
    try:
        data = tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as error:
        raise InvalidInputError(BAD_TOML.format(path=source, reason=error)) from error
    except RecursionError as error:  # `a = [[[[…` (tomllib recurses once per level)
        raise InvalidInputError(TOO_NESTED.format(path=source)) from error
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        problem = f"unknown top-level key {unknown[0]!r} (allowed: {', '.join(TOP_LEVEL_KEYS)})"
        raise InvalidInputError(BAD_LAYOUT.format(path=source, problem=problem))
    description = data.get("description", "")
    if not isinstance(description, str):
        problem = "description must be a string"
        raise InvalidInputError(BAD_LAYOUT.format(path=source, problem=problem))
    table = data.get("templates")
    if not isinstance(table, dict):
        problem = "no [templates] table" if table is None else "templates must be a table"
        raise InvalidInputError(BAD_LAYOUT.format(path=source, problem=problem))
    templates = {name: _checked(source, name, value) for name, value in table.items()}
    for name, spec in TEMPLATES.items():
        if spec.required and name not in templates:
            why = "every prompt set needs"
            raise InvalidInputError(MISSING_TEMPLATE.format(path=source, name=name, why=why))
    for name, text_ in templates.items():
        for placeholder in sorted(template_placeholders(text_) & set(FRAGMENTS)):
            for fragment in FRAGMENTS[placeholder]:
                if fragment not in templates:
                    why = f"{{{placeholder}}} in {name!r} needs"
                    raise InvalidInputError(
                        MISSING_TEMPLATE.format(path=source, name=fragment, why=why)
                    )
    agent = {**default_agent_texts(), **_agent_texts(source, data.get(AGENT_TABLE))}
    return PromptSet(source=source, templates=templates, description=description, agent=agent)


def _agent_texts(source: str, table: object) -> dict[str, str]:
    """The `[agent]` table's texts by `AGENT_TEXTS` name (sub-tables flattened: `zoom_hint.crop`),
    each checked; empty when the file has none."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        problem = f"{AGENT_TABLE} must be a table"
        raise InvalidInputError(BAD_LAYOUT.format(path=source, problem=problem))
    texts: dict[str, str] = {}
    for key, value in table.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, text in items:
            name = key if sub is None else f"{key}.{sub}"
            texts[name] = _checked(source, name, text, AGENT_TEXTS, f"{AGENT_TABLE}.")
    return texts


def _checked(
    source: str,
    name: str,
    value: object,
    specs: Mapping[str, TemplateSpec] = TEMPLATES,
    prefix: str = "",
) -> str:
    """One template's text, image marker stripped, or InvalidInputError naming what is wrong
    (`specs`: TEMPLATES or AGENT_TEXTS; `prefix` goes before `name` in the message)."""
    spec = specs.get(name)
    name = prefix + name
    if spec is None:
        known = ", ".join(prefix + known for known in specs)
        problem = f"unknown template name (known: {known})"
        raise InvalidInputError(BAD_TEMPLATE.format(path=source, name=name, problem=problem))
    if not isinstance(value, str):
        problem = f"must be a string, got a TOML {type(value).__name__}"
        raise InvalidInputError(BAD_TEMPLATE.format(path=source, name=name, problem=problem))
    text = strip_image_marker(value)
    if IMAGE_MARKER in text:
        problem = f"{IMAGE_MARKER} may only begin a template (images always come before the text)"
        raise InvalidInputError(BAD_TEMPLATE.format(path=source, name=name, problem=problem))
    try:
        used = template_placeholders(text)
    except ValueError as error:
        problem = f"{error}; write a literal brace as {{{{ or }}}}, a placeholder as {{name}}"
        raise InvalidInputError(
            BAD_TEMPLATE.format(path=source, name=name, problem=problem)
        ) from error
    for placeholder in sorted(used):
        if placeholder not in spec.allowed:
            allowed = ", ".join(f"{{{p}}}" for p in sorted(spec.allowed)) or "no placeholders"
            raise InvalidInputError(
                UNKNOWN_PLACEHOLDER.format(
                    path=source, name=name, placeholder=placeholder, allowed=allowed
                )
            )
    if spec.needs_one_of and not used & set(spec.needs_one_of):
        needed = " or ".join(f"{{{p}}}" for p in spec.needs_one_of)
        problem = f"must contain {needed}"
        raise InvalidInputError(BAD_TEMPLATE.format(path=source, name=name, problem=problem))
    return text


def strip_image_marker(text: str) -> str:
    """`text` without a leading `<image>` and the one newline after it (InternVL's marker for
    where the image goes; our turns always put images first)."""
    if text.startswith(IMAGE_MARKER):
        text = text[len(IMAGE_MARKER) :]
        return text[1:] if text.startswith("\n") else text
    return text


def template_placeholders(text: str) -> frozenset[str]:
    """The placeholder names in a `str.format` template; ValueError for anything but plain
    `{name}` fields (positional, attribute, index, conversion, format spec) or unbalanced braces."""
    names: set[str] = set()
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{shown} is not a plain placeholder")
        names.add(name)
    return frozenset(names)
