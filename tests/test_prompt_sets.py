"""Prompt sets as data (`agent.prompt_set`): the default set renders today's text byte for byte,
another set replaces every text the model is shown, and every bad set is one clear error line."""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path
from typing import Any, get_args

import dataset_fixtures as fixtures
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_baseline_graph, build_graph
from zoom_refine.agent.prompt_set import (
    AGENT_CONVENTIONS,
    AGENT_PLACEHOLDERS,
    AGENT_TEXTS,
    ANSWER_STYLES,
    DEFAULT_RESOURCE,
    PLACEHOLDERS,
    TEMPLATES,
    PromptSet,
    default_agent_texts,
    default_prompt_set,
    load_prompt_set,
    parse_prompt_set,
)
from zoom_refine.agent.prompts import (
    baseline_prompt,
    localize_prompt,
    refine_prompt,
    zoom_again_prompt,
)
from zoom_refine.agent.tool_conventions import (
    CONVENTIONS,
    TOOL_CONVENTIONS,
    AnswerStyle,
    final_prompt,
    question_prompt,
    system_prompt,
)
from zoom_refine.cli import app
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel, texts_in
from zoom_refine.tools.errors import InvalidInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
runner = CliRunner()
Q = "  What colour is the square?\n"
OPTIONS = {"A": "red", "B": "blue"}

# --- the default set: today's text, byte for byte ---------------------------------------------
# Pinned from agent/prompts.py as it was before prompt sets (commit 80fec48): a change to
# agent/prompt_sets/default.toml that changes any text the model is shown fails here.
GOLDEN = [
    (
        localize_prompt,
        (Q, OPTIONS, "paper"),
        "Question: What colour is the square?\n"
        "Options:\n"
        "A. red\n"
        "B. blue\n"
        "\n"
        "First answer the question from the image as you see it now. Then mark the one region of the image that matters most for the answer, with enough surrounding context to recognise it; it will be cut out of the original high-resolution image so you can look closer.\n"
        "Reply in exactly this form:\n"
        "Answer: <the letter of the correct option>\n"
        "Bounding box: [x1, y1, x2, y2]\n"
        "where x1, y1, x2, y2 are the left, top, right and bottom edges of the region as fractions of the image's width and height, each between 0 and 1.",
    ),
    (
        localize_prompt,
        (Q, None, "internvl"),
        "Question: What colour is the square?\n"
        "\n"
        "First answer the question from the image as you see it now. Then mark the one region of the image that matters most for the answer, with enough surrounding context to recognise it; it will be cut out of the original high-resolution image so you can look closer.\n"
        "Reply in exactly this form:\n"
        "Answer: <a short answer>\n"
        "Bounding box: <box>[[x1, y1, x2, y2]]</box>\n"
        "where x1, y1, x2, y2 are the left, top, right and bottom edges of the region on a 0 to 1000 scale of the image's width and height.",
    ),
    (
        localize_prompt,
        (Q, OPTIONS, "paper", 3),
        "Question: What colour is the square?\n"
        "Options:\n"
        "A. red\n"
        "B. blue\n"
        "\n"
        "First answer the question from the image as you see it now. Then mark where to look closer. Usually one region is enough; when the answer depends on things in separate places (for example two objects to compare), mark each of them as its own region, up to 3 regions, most important first. Give each region enough surrounding context to recognise it; every region will be cut out of the original high-resolution image so you can look closer.\n"
        "Reply in exactly this form:\n"
        "Answer: <the letter of the correct option>\n"
        "Bounding box 1: [x1, y1, x2, y2]\n"
        "Bounding box 2: [x1, y1, x2, y2]\n"
        "with one line per region (at most 3 lines), where x1, y1, x2, y2 are the left, top, right and bottom edges of that region as fractions of the image's width and height, each between 0 and 1.",
    ),
    (
        localize_prompt,
        (Q, None, "internvl", 2),
        "Question: What colour is the square?\n"
        "\n"
        "First answer the question from the image as you see it now. Then mark where to look closer. Usually one region is enough; when the answer depends on things in separate places (for example two objects to compare), mark each of them as its own region, up to 2 regions, most important first. Give each region enough surrounding context to recognise it; every region will be cut out of the original high-resolution image so you can look closer.\n"
        "Reply in exactly this form:\n"
        "Answer: <a short answer>\n"
        "Bounding box 1: <box>[[x1, y1, x2, y2]]</box>\n"
        "Bounding box 2: <box>[[x1, y1, x2, y2]]</box>\n"
        "with one line per region (at most 2 lines), where x1, y1, x2, y2 are the left, top, right and bottom edges of that region on a 0 to 1000 scale of the image's width and height.",
    ),
    (
        refine_prompt,
        (Q, OPTIONS, "B"),
        "This last image is a close-up of the region you marked, cut from the original high-resolution image, so small details are sharper here. Look at it carefully and re-check your preliminary answer (B) to the question:\n"
        "Question: What colour is the square?\n"
        "Options:\n"
        "A. red\n"
        "B. blue\n"
        "\n"
        "Briefly say what the close-up shows that bears on the question. Then end with exactly two lines:\n"
        "Rechecked Answer: <the letter of the correct option>\n"
        "Confidence: <how sure you are, a number from 0 to 1>",
    ),
    (
        refine_prompt,
        (Q, None, None, 2),
        "These last 2 images are close-ups of the regions you marked, in the order you gave them, cut from the original high-resolution image, so small details are sharper here. Look at them carefully and re-check your preliminary answer to the question:\n"
        "Question: What colour is the square?\n"
        "\n"
        "Briefly say what the close-ups show that bears on the question. Then end with exactly two lines:\n"
        "Rechecked Answer: <a short answer>\n"
        "Confidence: <how sure you are, a number from 0 to 1>",
    ),
    (
        zoom_again_prompt,
        (OPTIONS, "internvl"),
        "You are not sure yet. Within the close-up you just saw, mark the smaller region that would settle the question, with a little surrounding context.\n"
        "Reply in exactly this form:\n"
        "Answer: <the letter of the correct option>\n"
        "Bounding box: <box>[[x1, y1, x2, y2]]</box>\n"
        "where x1, y1, x2, y2 are the left, top, right and bottom edges of the region on a 0 to 1000 scale of the close-up's width and height.",
    ),
    (
        zoom_again_prompt,
        (None, "paper", 2),
        "You are not sure yet. Within the last close-up you saw, mark the smaller region (or up to 2 separate regions) that would settle the question, each with a little surrounding context.\n"
        "Reply in exactly this form:\n"
        "Answer: <a short answer>\n"
        "Bounding box 1: [x1, y1, x2, y2]\n"
        "Bounding box 2: [x1, y1, x2, y2]\n"
        "with one line per region (at most 2 lines), where x1, y1, x2, y2 are the left, top, right and bottom edges of that region as fractions of the close-up's width and height, each between 0 and 1.",
    ),
    (
        baseline_prompt,
        (Q, OPTIONS),
        "Question: What colour is the square?\n"
        "Options:\n"
        "A. red\n"
        "B. blue\n"
        "\n"
        "Answer with the option's letter from the given choices directly, as: Answer: <letter>",
    ),
    (
        baseline_prompt,
        (Q, None),
        "Question: What colour is the square?\n"
        "\n"
        "Answer the question with a short answer, as: Answer: <answer>",
    ),
]


@pytest.mark.parametrize(("function", "args", "expected"), GOLDEN)
def test_default_set_renders_todays_text_byte_for_byte(
    function: Any, args: tuple[Any, ...], expected: str
) -> None:
    assert function(*args) == expected
    assert function(*args, prompts=load_prompt_set(None)) == expected


def test_default_set_is_the_package_file_and_loads_once() -> None:
    path = ROOT / "agent" / Path(*DEFAULT_RESOURCE)
    from_file = load_prompt_set(path)
    default = load_prompt_set(None)
    assert default is default_prompt_set() and default.source == "default"
    assert from_file.templates == default.templates and from_file.sha256 == default.sha256
    assert set(default.templates) == set(TEMPLATES) - {"system"}  # every template but system
    assert from_file.agent == default.agent == default_agent_texts()
    assert set(default.agent) == set(AGENT_TEXTS)


# --- the agent graph's texts (`[agent]`): today's text, byte for byte --------------------------
# Pinned from agent/tool_conventions.py as it was before they moved into prompt sets; the one
# change: Mini-o3's system turn shows `<grounding>{...}` with single braces (it was sent unformatted,
# so the model read the doubled braces of the Python source).
ZOOM_HINTS = {
    "crop": "If details are too small to see, call the crop tool on the region that matters (as "
    "often as you need, at most 3 times); each crop is cut from the original high-resolution image.",
    "qwen3_vl": "If details are too small to see, call image_zoom_in_tool on the region that "
    "matters (at most 3 times).",
    "deepeyes": "Think first, call image_zoom_in_tool when a closer look helps (at most 3 times), "
    "then answer, in the form <think>...</think> <tool_call>...</tool_call> (only when needed) "
    "<answer>...</answer>.",
    "mini_o3": "You may zoom in at most 3 times.",
}
LABEL = "When you are sure, end your reply with exactly one line:\nAnswer: <{}>"
TAG = "Put the final answer, {}, inside <answer></answer>."
LETTER, SHORT = "the letter of the correct option", "a short answer"
BLOCK = "Question: What colour is the square?\nOptions:\nA. red\nB. blue"
USED_ALL = (
    "You have used all 2 zooms. Do not call a tool again: answer now from the images you have. "
)
MINI_O3_SYSTEM = (
    "Answer the question about the image. Think inside <think> and </think> first. When a part "
    'of an image is unclear, zoom in on it by writing <grounding>{"bbox_2d": [x0, y0, x1, y1], '
    '"source": "original_image"}</grounding>, where (x0, y0) is the top-left and (x1, y1) the '
    "bottom-right corner of the region relative to the image (its width and height count as "
    '1.0), and source is "original_image" or "observation_<k>" for the k-th zoomed-in image. '
    "The zoomed-in image comes back in the next turn. Once you are sure, give the final answer "
    "inside <answer> and </answer>."
)
TOOLS_SYSTEM = (
    "# Tools\n\nYou can call functions to help you answer. Their signatures are inside "
    "<tools></tools>:\n<tools>\n{}\n</tools>\n\nTo call one, write a JSON object with the "
    "function name and its arguments inside <tool_call></tool_call> tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
RESULT_HINTS = {
    "crop": "Call crop again to look closer, or reply with your answer.",
    "qwen3_vl": "",
    "deepeyes": "Think first, call image_zoom_in_tool again if needed, then answer, in the form "
    "<think>...</think> <tool_call>...</tool_call> (only when needed) <answer>...</answer>.",
    "mini_o3": "Go on thinking inside <think> and </think>. Zoom in again on the original image "
    "or any observation with <grounding></grounding> if needed; once you are sure, give the "
    "final answer inside <answer> and </answer>.",
}


@pytest.mark.parametrize("name", TOOL_CONVENTIONS)
def test_default_agent_texts_render_todays_text_byte_for_byte(name: Any) -> None:
    convention = CONVENTIONS[name]
    answer = LABEL if convention.answer_style == "label" else TAG
    with_options = [BLOCK, ZOOM_HINTS[name]] + (
        [answer.format(LETTER)] if name != "deepeyes" else []
    )
    assert question_prompt(convention, Q, OPTIONS, 3) == "\n\n".join(with_options)
    assert question_prompt(convention, Q, None, 3).startswith(
        "Question: What colour is the square?\n\n"
    )
    assert final_prompt(convention, None, 2) == USED_ALL + answer.format(SHORT)
    assert default_prompt_set().agent_text(f"result_hint.{name}") == RESULT_HINTS[name]
    if name == "mini_o3":
        assert system_prompt(convention, text_calls=False) == MINI_O3_SYSTEM
    else:
        assert system_prompt(convention, text_calls=False) is None  # the server renders tools
        tools = json.dumps(convention.schema(), ensure_ascii=False)
        assert system_prompt(convention, text_calls=True) == TOOLS_SYSTEM.format(tools)


def test_default_agent_result_lines_byte_for_byte() -> None:
    default = default_prompt_set()
    line = default.agent_text("observation", action=2, number=3)
    assert line == "Here is the zoomed-in image of action 2 (observation_3):"
    assert default.agent_text("error", message="bad box") == "Error: bad box"


def test_agent_texts_cover_every_convention_and_answer_style() -> None:
    """prompt_set cannot import tool_conventions (which imports it): the two lists held equal."""
    assert AGENT_CONVENTIONS == TOOL_CONVENTIONS
    assert get_args(AnswerStyle) == ANSWER_STYLES


def test_package_data_ships_the_default_set() -> None:
    """pyproject's package-data glob matches the default set's file (wheels and sdists carry
    it; an editable install reads it from agent/)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["zoom_refine.agent"]
    assert any(fnmatch.fnmatch("/".join(DEFAULT_RESOURCE), glob) for glob in globs)


def test_hash_follows_the_texts_not_the_file_layout(tmp_path: Path) -> None:
    a = parse_prompt_set(SIMPLE, "a.toml")
    relaid = '[templates]\nrefine = "Re-check: Rechecked Answer: X"\n' + (
        "localize = '''\nAsked: {question}\nOptions: {options}\nAnswer: X, Bounding box: [x1, y1, x2, y2]'''\n"
    )
    b = parse_prompt_set("# another layout\n" + relaid, "b.toml")
    assert a.templates == b.templates and a.sha256 == b.sha256
    c = parse_prompt_set(SIMPLE.replace("Re-check", "Check again"), "c.toml")
    assert c.sha256 != a.sha256


def test_agent_texts_count_in_the_hash_only_where_they_differ_from_ours() -> None:
    plain = parse_prompt_set(SIMPLE, "a.toml")
    ours = parse_prompt_set(SIMPLE + '[agent]\nerror = "Error: {message}"\n', "b.toml")
    assert ours.sha256 == plain.sha256 and ours.agent == plain.agent == default_agent_texts()
    changed = parse_prompt_set(SIMPLE + '[agent]\nerror = "Failed: {message}"\n', "c.toml")
    assert changed.sha256 != plain.sha256
    assert changed.agent == {**default_agent_texts(), "error": "Failed: {message}"}
    # The default set hashes as it did before it had an [agent] table: its run folders resume.
    text = (ROOT / "agent" / Path(*DEFAULT_RESOURCE)).read_text()
    without = parse_prompt_set(text[: text.index("\n[agent]\n")], "no-agent.toml")
    assert without.agent == default_agent_texts()
    assert without.sha256 == default_prompt_set().sha256


# --- another set -------------------------------------------------------------------------------

SIMPLE = """description = "a two-template set"
[templates]
localize = '''
Asked: {question}
Options: {options}
Answer: X, Bounding box: [x1, y1, x2, y2]'''
refine = "Re-check: Rechecked Answer: X"
"""


def write(folder: Path, text: str, name: str = "set.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_placeholders_question_and_options_and_an_empty_options_value() -> None:
    prompts = parse_prompt_set(SIMPLE, "simple.toml")
    assert prompts.description == "a two-template set"
    assert localize_prompt(Q, OPTIONS, "paper", prompts=prompts) == (
        "Asked: What colour is the square?\nOptions: A. red\nB. blue\n"
        "Answer: X, Bounding box: [x1, y1, x2, y2]"
    )
    assert localize_prompt(Q, None, "internvl", prompts=prompts).startswith(
        "Asked: What colour is the square?\nOptions: \n"
    )
    assert refine_prompt(Q, OPTIONS, "B", prompts=prompts) == "Re-check: Rechecked Answer: X"


def test_leading_image_marker_is_stripped_and_braces_are_literal() -> None:
    text = "[templates]\nlocalize = '''\n<image>\n{question} {{not a field}}'''\nrefine = '<image>again'\n"
    prompts = parse_prompt_set(text, "marked.toml")
    assert prompts.templates["localize"] == "{question} {{not a field}}"
    assert prompts.render("localize", question="Q?") == "Q? {not a field}"
    assert prompts.render("refine") == "again"


def test_render_ignores_extra_values_and_a_missing_value_is_a_key_error() -> None:
    prompts = parse_prompt_set(SIMPLE, "simple.toml")
    assert prompts.has("localize") and not prompts.has("zoom_again")
    assert prompts.placeholders("localize") == {"question", "options"}
    assert prompts.render("refine", question="unused") == "Re-check: Rechecked Answer: X"
    with pytest.raises(KeyError, match=r"\{options\}"):
        prompts.render("localize", question="Q")
    with pytest.raises(InvalidInputError, match=r"simple.toml: no template 'baseline'"):
        baseline_prompt(Q, OPTIONS, prompts=prompts)


def test_every_placeholder_is_documented_in_docs_prompts_md() -> None:
    page = (ROOT / "docs" / "prompts.md").read_text()
    for name in [*PLACEHOLDERS, *TEMPLATES, *AGENT_PLACEHOLDERS, *AGENT_TEXTS]:
        assert f"`{{{name}}}`" in page or f"`{name}`" in page, name


# --- validation: one clear line naming the file, template and placeholder ---------------------

MINIMAL = "[templates]\nlocalize = 'Q {question}'\nrefine = 'R'\n"

BAD_SETS = [
    (
        "[templates]\nlocalize = 'Q {question} {colour}'\nrefine = 'R'\n",
        r"set.toml: template 'localize' uses unknown placeholder \{colour\}; it may use .*\{question\}",
    ),
    (
        "[templates]\nlocalize = 'Q {question}'\nrefine = 'R {count}'\n",
        r"template 'refine' uses unknown placeholder \{count\}",
    ),
    (
        "[templates]\nlocalize = 'Q {question}'\n",
        r"set.toml: no template 'refine', which every prompt set needs; add it to \[templates\]",
    ),
    (
        "[templates]\nlocalize = 'no question here'\nrefine = 'R'\n",
        r"template 'localize': must contain \{question\} or \{question_block\}",
    ),
    (
        "[templates]\nlocalize = 'Q {question'\nrefine = 'R'\n",
        r"template 'localize': .*write a literal brace as \{\{ or \}\}",
    ),
    (
        "[templates]\nlocalize = 'Q {question!r}'\nrefine = 'R'\n",
        r"template 'localize': \{question!r\} is not a plain placeholder",
    ),
    (
        "[templates]\nlocalize = 'Q {question}\\n<image>'\nrefine = 'R'\n",
        r"template 'localize': <image> may only begin a template",
    ),
    (
        "[templates]\nlocalise = 'Q {question}'\nlocalize = 'Q {question}'\nrefine = 'R'\n",
        r"template 'localise': unknown template name",
    ),
    ("[templates]\nlocalize = 3\nrefine = 'R'\n", r"template 'localize': must be a string"),
    (
        "[templates]\nlocalize = '{question_block}'\nrefine = 'R'\n",
        r"no template 'question_with_options', which \{question_block\} in 'localize' needs",
    ),
    (
        "[templates]\nlocalize = 'Q {question}'\nrefine = 'R'\nsystem = 'S {question}'\n",
        r"template 'system' uses unknown placeholder \{question\}; it may use no placeholders",
    ),
    ("localize = 'Q {question}'\n", r"set.toml: unknown top-level key 'localize'"),
    (
        MINIMAL + "[agent.zoom_hint]\ncrop = 'at most {limt} times'\n",
        r"set.toml: template 'agent.zoom_hint.crop' uses unknown placeholder \{limt\}; "
        r"it may use \{limit\}",
    ),
    (
        MINIMAL + "[agent]\nfinal = 'Answer now. {answer_hint}'\n",
        r"template 'agent.final' uses unknown placeholder \{answer_hint\}; "
        r"it may use \{answer_format\}, \{limit\}",
    ),
    (
        MINIMAL + "[agent.zoom_hint]\ncropp = 'at most {limit} times'\n",
        r"template 'agent.zoom_hint.cropp': unknown template name \(known: agent.tools_system, ",
    ),
    (
        MINIMAL + "[agent]\nerror = 'it failed'\n",
        r"template 'agent.error': must contain \{message\}",
    ),
    (MINIMAL + "[agent]\ntools_system = 3\n", r"template 'agent.tools_system': must be a string"),
    ("agent = 'x'\n" + MINIMAL, r"set.toml: agent must be a table"),
    ("description = 'x'\n", r"set.toml: no \[templates\] table"),
    ("[templates\nlocalize = 'x'\n", r"set.toml: not valid TOML: .*line 1"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SETS)
def test_a_bad_prompt_set_is_one_error_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidInputError, match=message) as caught:
        load_prompt_set(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"nope.toml: no such file"):
        load_prompt_set(tmp_path / "nope.toml")
    with pytest.raises(InvalidInputError, match=r"no such file"):
        load_prompt_set(tmp_path)  # a directory
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"[templates]\nlocalize = 'caf\xe9 {question}'\n")
    with pytest.raises(InvalidInputError, match=r"latin.toml: cannot be read"):
        load_prompt_set(latin)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_hops": 2}, r"no template 'zoom_again', which max_hops > 1 needs"),
        ({"max_regions": 2}, r"no template 'localize_multi', which max_regions > 1 needs"),
        (
            {"prompt_style": "internvl"},
            r"no template 'box_instructions_internvl', which "
            r"\{box_instructions\} in 'localize' needs under prompt_style=internvl",
        ),
    ],
)
def test_context_refuses_a_set_lacking_what_its_settings_render(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    text = (
        "[templates]\nlocalize = '{question} {box_instructions}'\nrefine = 'R'\n"
        "box_instructions_paper = 'Bounding box: [x1, y1, x2, y2] of the {image}'\n"
    )
    path = write(tmp_path, text)
    ZoomContext(model="openai:x", prompts=path)  # the paper style, one hop: fine
    with pytest.raises(InvalidInputError, match=message):
        ZoomContext(model="openai:x", prompts=path, **settings)


@pytest.mark.parametrize("style", ["paper", "internvl"])
@pytest.mark.parametrize(("hops", "regions"), [(1, 1), (3, 1), (1, 4), (3, 4)])
def test_default_set_serves_every_setting(style: Any, hops: int, regions: int) -> None:
    context = ZoomContext(model="openai:x", prompt_style=style, max_hops=hops, max_regions=regions)
    assert context.prompt_set is default_prompt_set()


# --- the graphs render through the context's set ----------------------------------------------


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    image = Image.new("RGB", (1200, 900), (128, 128, 128))
    image.paste((255, 0, 0), (700, 500, 900, 700))
    path = tmp_path / "scene.png"
    image.save(path)
    return path


FULL = """[templates]
system = "You are a careful inspector."
localize = "LOOK {question}|{options}|Answer: <letter>, Bounding box: [x1, y1, x2, y2]"
refine = "RECHECK {question} after {previous_answer}: Rechecked Answer: <letter>, Confidence: <0-1>"
zoom_again = "DEEPER {question} (was {previous_answer}) Bounding box: [x1, y1, x2, y2]"
baseline = "DIRECT {question}|{options}"
"""


def test_zoom_refine_graph_shows_only_the_sets_texts(tmp_path: Path, scene: Path) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.5, 0.5, 0.8, 0.8]",
            "Rechecked Answer: A\nConfidence: 0.2",
            "Answer: A\nBounding box: [0.2, 0.2, 0.8, 0.8]",
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    context = ZoomContext(
        model=model, prompts=write(tmp_path, FULL), max_hops=2, image_format="png"
    )
    inputs = {"image": str(scene), "question": "Which colour?", "options": ["red", "blue"]}
    result = build_graph().invoke(
        inputs, context=context, config={"recursion_limit": context.recursion_limit}
    )
    assert result["answer"] == "A" and len(model.requests) == 4
    first = model.requests[0]
    assert (
        isinstance(first[0], SystemMessage) and first[0].content == "You are a careful inspector."
    )
    assert isinstance(first[1], HumanMessage)
    blocks: list[Any] = list(first[1].content)
    assert [block["type"] for block in blocks] == ["image", "text"]  # the image first
    assert texts_in(first[1]) == (
        "LOOK Which colour?|A. red\nB. blue|Answer: <letter>, Bounding box: [x1, y1, x2, y2]"
    )
    assert texts_in(model.requests[1][-1]).endswith(
        "RECHECK Which colour? after B: Rechecked Answer: <letter>, Confidence: <0-1>"
    )
    assert texts_in(model.requests[2][-1]) == (
        "DEEPER Which colour? (was A) Bounding box: [x1, y1, x2, y2]"
    )
    for request in model.requests:  # one system message, first, in every request
        assert [type(m) for m in request].count(SystemMessage) == 1
        assert isinstance(request[0], SystemMessage)


def test_baseline_graph_uses_the_sets_baseline_and_system(tmp_path: Path, scene: Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: B"])
    context = ZoomContext(model=model, prompts=write(tmp_path, FULL), image_format="png")
    inputs = {"image": str(scene), "question": "Which colour?", "options": ["red", "blue"]}
    result = build_baseline_graph().invoke(inputs, context=context)
    assert result["answer"] == "B"
    system, turn = model.requests[0]
    assert isinstance(system, SystemMessage)
    assert texts_in(turn) == "DIRECT Which colour?|A. red\nB. blue"


def test_context_takes_a_loaded_set_and_records_it_in_eval_config(tmp_path: Path) -> None:
    prompts = parse_prompt_set(FULL, "in-memory")
    context = ZoomContext(model="openai:x", prompts=prompts)
    assert context.prompt_set is prompts
    assert ZoomContext(model="openai:x").prompt_set is default_prompt_set()


# --- CLI: --prompts on ask and eval; the resume guard sees the set ----------------------------


def test_ask_with_prompts_sends_the_sets_text(
    tmp_path: Path, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedVisionModel(
        replies=["Answer: B\nBounding box: [0.5, 0.5, 0.8, 0.8]", "Rechecked Answer: A"]
    )
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    args = ["ask", str(scene), "Which colour?", "-o", "red", "-o", "blue"]
    result = runner.invoke(app, [*args, "--prompts", str(write(tmp_path, FULL))])
    assert result.exit_code == 0, result.output
    assert texts_in(model.requests[0][1]).startswith("LOOK Which colour?|A. red")


def test_ask_with_a_bad_prompt_set_is_one_line_and_exit_2(tmp_path: Path, scene: Path) -> None:
    bad = write(tmp_path, "[templates]\nlocalize = '{question} {nope}'\nrefine = 'R'\n")
    result = runner.invoke(app, ["ask", str(scene), "Which colour?", "--prompts", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: prompt set {bad}: template 'localize' uses unknown placeholder {{nope}}; it "
        "may use {answer_hint}, {box_instructions}, {options}, {question}, {question_block} "
        "(docs/prompts.md)"
    ]


def test_eval_records_the_prompt_set_and_a_resume_with_another_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RuleVisionModel()
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    first = write(tmp_path, FULL, "first.toml")
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--limit", "1"]
    args += ["--model", "openai:served"]
    result = runner.invoke(app, [*args, "--prompts", str(first)])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["context"]
    expected = load_prompt_set(first)
    assert settings["prompts"] == f"sha256:{expected.sha256}"
    assert settings["prompts_file"] == str(first)

    moved = write(tmp_path, "# the same texts, elsewhere\n" + FULL, "moved.toml")
    result = runner.invoke(app, [*args, "--limit", "2", "--prompts", str(moved)])
    assert result.exit_code == 0, result.output  # same texts: the same set

    other = write(tmp_path, FULL.replace("LOOK", "SEE"), "other.toml")
    result = runner.invoke(app, [*args, "--limit", "3", "--prompts", str(other)])
    assert result.exit_code == 2
    assert 'other settings: prompts "sha256:' in result.stderr
    result = runner.invoke(app, [*args, "--limit", "3"])  # back to the default set
    assert result.exit_code == 2 and "prompts" in result.stderr


@pytest.mark.slow
def test_system_message_reaches_a_real_local_model(tiny_internvl_path: Path, scene: Path) -> None:
    """Through the real local backend (tiny InternVL3, byte-level tokenizer: one token per
    byte), a set with a system message prefills that many more tokens than the same set without."""
    from zoom_refine.agent.local.model import load_local_backend

    system = "You are a careful inspector of high-resolution photographs."
    default = default_prompt_set()
    with_system = PromptSet("with-system", {**default.templates, "system": system})
    inputs = {"image": str(scene), "question": "Which colour?", "options": ["red", "blue"]}
    tokens = []
    for prompts in (default, with_system):
        load_local_backend(str(tiny_internvl_path)).prefix_cache.clear()
        context = ZoomContext(model=f"hf:{tiny_internvl_path}", max_new_tokens=4, prompts=prompts)
        result = build_graph().invoke(inputs, context=context)
        tokens.append(result["usage"]["input_tokens"])
    assert tokens[1] - tokens[0] >= len(system.encode())
