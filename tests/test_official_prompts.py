"""`zoom-refine prompts from-official`: the official prompt texts read (never run) from a checkout
of xavier-yu114/Zoom-Refine and written as a prompt set.

The fixture repository has the official files' structure (a module-level `prompts` dict in
`zoomrefine/ZoomRefine_Base.py`, one inside the `__main__` block of `zoomrefine/ZoomRefine_API.py`,
the same keys, a leading `<image>` line in Base's templates) with INVENTED texts: we do not ship
the official wording, in the code or in its tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import SystemMessage
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_agent_graph, build_graph
from zoom_refine.agent.official_prompts import (
    official_prompt_set_toml,
    read_official_prompts,
    write_official_prompt_set,
)
from zoom_refine.agent.prompt_set import default_agent_texts, default_prompt_set, load_prompt_set
from zoom_refine.agent.prompts import localize_prompt, refine_prompt, system_prompt
from zoom_refine.cli import app
from zoom_refine.testing import ScriptedVisionModel, texts_in
from zoom_refine.tools.errors import InvalidInputError

runner = CliRunner()

# Invented texts, in the official dicts' shape (keys, `{question}`, `<image>` line, the quoting).
BASE_TEMPLATES = {
    "system_prompt_1": "You look at pictures (never sent by the Base pipeline).\n",
    "user_template_1": (
        "<image>\n{question}\nFirst, say **Answer: [Letter]**.\n"
        'Then give **"Bounding box: [x1, y1, x2, y2]"** in 0-1, braces {{like this}}.\n'
    ),
    "user_template_follow_up": (
        "<image>\nHere is a sharper crop of your box.\nEnd with **Rechecked Answer: [Letter]**.\n"
    ),
}
API_TEMPLATES = {
    "system_prompt_1": "You are an invented picture assistant.\n",
    "user_template_1": " Question: {question}\nReply with Answer: and Bounding box:.\n\n\n",
    "user_template_follow_up": "A crop follows. Say Rechecked Answer: [Letter].\n",
}

MARKER = "executed.txt"
"""The fixture files write this file when run: reading them must never create it."""


def base_source(templates: dict[str, str]) -> str:
    entries = "".join(f"    {key!r}: {text!r},\n" for key, text in templates.items())
    return (
        f"import os\nopen({MARKER!r}, 'w').write('ran')\n"
        "MAX_WIDTH = 4096\n\n# --- Prompts ---\n\n"
        f"prompts = {{\n{entries}}}\n\n"
        "def main():\n    question_1 = prompts['user_template_1'].format(question='q')\n"
    )


def api_source(templates: dict[str, str]) -> str:
    entries = "".join(f"        {key!r}: {text!r},\n" for key, text in templates.items())
    return (
        f"open({MARKER!r}, 'w').write('ran')\n\n"
        "def process_single_entry(entry, prompts_collection):\n"
        "    return prompts_collection['user_template_1'].format(question=entry)\n\n"
        f"if __name__ == '__main__':\n    prompts = {{\n{entries}    }}\n"
        "    print(process_single_entry('q', prompts))\n"
    )


def make_repo(root: Path, base: str | None = None, api: str | None = None) -> Path:
    """A checkout-shaped folder holding the two official files (fixture texts by default)."""
    folder = root / "Zoom-Refine"
    (folder / "zoomrefine").mkdir(parents=True)
    base_text = base if base is not None else base_source(BASE_TEMPLATES)
    api_text = api if api is not None else api_source(API_TEMPLATES)
    (folder / "zoomrefine" / "ZoomRefine_Base.py").write_text(base_text)
    (folder / "zoomrefine" / "ZoomRefine_API.py").write_text(api_text)
    return folder


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # where a run of the fixture files would write MARKER
    return make_repo(tmp_path)


def test_base_variant_maps_the_keys_and_keeps_the_texts(repo: Path) -> None:
    official = read_official_prompts(repo, "base")
    assert official.keys == {"localize": "user_template_1", "refine": "user_template_follow_up"}
    assert official.templates == {
        "localize": BASE_TEMPLATES["user_template_1"],
        "refine": BASE_TEMPLATES["user_template_follow_up"],
    }
    assert official.placeholders() == {"localize": ["question"], "refine": []}
    assert not (repo.parent / MARKER).exists()  # parsed, never run


QUESTIONS = [
    "What is on the sign?\n(A) stop\n(B) go",
    "  Leading and trailing spaces, braces {x} and a quote ' \" in it  ",
]


@pytest.mark.parametrize("question", QUESTIONS)
def test_rendered_localize_equals_the_official_format_minus_the_image_line(
    repo: Path, tmp_path: Path, question: str
) -> None:
    """Our localize request is `prompts['user_template_1'].format(question=q)` as the official
    Base pipeline builds it (ZoomRefine_Base.py, the Stage 1 call), without its `<image>\\n`
    (our turns carry the image as a block before the text); likewise the follow-up."""
    path, _, _ = write_official_prompt_set(repo, tmp_path / "official.toml")
    prompts = load_prompt_set(path)
    q = question.strip()  # the official code strips the question after removing its phrase
    official = BASE_TEMPLATES["user_template_1"].format(question=q)
    assert official.startswith("<image>\n")
    assert localize_prompt(question, None, "paper", prompts=prompts) == official[len("<image>\n") :]
    follow_up = BASE_TEMPLATES["user_template_follow_up"].format(question=q)
    assert refine_prompt(question, None, "B", prompts=prompts) == follow_up[len("<image>\n") :]
    assert system_prompt(prompts) is None  # the Base pipeline sends no system message


def test_api_variant_reads_the_dict_in_the_main_block_with_its_system_prompt(
    repo: Path, tmp_path: Path
) -> None:
    path, official, prompts = write_official_prompt_set(repo, tmp_path / "api.toml", variant="api")
    assert official.keys["system"] == "system_prompt_1"
    assert load_prompt_set(path).templates == prompts.templates
    assert system_prompt(prompts) == API_TEMPLATES["system_prompt_1"]
    q = "Which one?"
    expected = API_TEMPLATES["user_template_1"].format(question=q)
    assert localize_prompt(q, {"A": "x"}, "paper", prompts=prompts) == expected  # no marker
    assert not (repo.parent / MARKER).exists()


def test_the_written_set_drives_the_graph(repo: Path, tmp_path: Path) -> None:
    path, _, _ = write_official_prompt_set(repo, tmp_path / "api.toml", variant="api")
    image = tmp_path / "scene.png"
    Image.new("RGB", (800, 600), (90, 90, 90)).save(image)
    model = ScriptedVisionModel(
        replies=["Answer: B\nBounding box: [0.2, 0.2, 0.6, 0.6]", "Rechecked Answer: A"]
    )
    context = ZoomContext(model=model, prompts=path, image_format="png")
    inputs: Any = {"image": str(image), "question": "Which one?\nA. x\nB. y", "options": None}
    build_graph().invoke(inputs, context=context)
    system, first = model.requests[0]
    assert isinstance(system, SystemMessage)
    assert system.content == API_TEMPLATES["system_prompt_1"]
    assert texts_in(first) == API_TEMPLATES["user_template_1"].format(question=inputs["question"])
    assert texts_in(model.requests[1][-1]) == API_TEMPLATES["user_template_follow_up"]


@pytest.mark.parametrize("variant", ["base", "api"])
def test_the_written_set_runs_the_agent_graph_with_our_agent_texts(
    repo: Path, tmp_path: Path, variant: Any
) -> None:
    """The official code has no agent method: a set written by from-official has no [agent]
    table, loads with ours, hashes as without them, and shows the agent model our wording."""
    path, _, written = write_official_prompt_set(repo, tmp_path / "set.toml", variant=variant)
    prompts = load_prompt_set(path)
    assert prompts.agent == default_agent_texts() and prompts.sha256 == written.sha256
    image = tmp_path / "scene.png"
    Image.new("RGB", (800, 600), (90, 90, 90)).save(image)
    inputs: Any = {"image": str(image), "question": "Which one?", "options": ["x", "y"]}
    sent = []
    for chosen in (prompts, default_prompt_set()):
        model = ScriptedVisionModel(replies=["Answer: B"])
        context = ZoomContext(model=model, prompts=chosen, image_format="png")
        build_agent_graph().invoke(inputs, context=context)
        sent.append([texts_in(message) for message in model.requests[0]])
    assert sent[0] == sent[1]  # the official `system` is the Zoom-Refine graph's, not the agent's
    assert sent[0][-1].startswith("Question: Which one?\nOptions:\nA. x\nB. y\n\nIf details")


@pytest.mark.parametrize(
    "text",
    [
        "plain text",
        "ends with a quote '",
        "has ''' three quotes",
        'has """ and a \\ backslash',
        "a carriage\rreturn, a tab\t, a bell \x07 and ü",
        "\nstarts with a newline",
    ],
)
def test_any_official_text_survives_the_toml_round_trip(tmp_path: Path, text: str) -> None:
    templates = {**BASE_TEMPLATES, "user_template_follow_up": text}
    folder = make_repo(tmp_path, base=base_source(templates))
    official = read_official_prompts(folder, "base")
    document = official_prompt_set_toml(official)
    target = tmp_path / "set.toml"
    target.write_text(document, encoding="utf-8")
    assert load_prompt_set(target).templates["refine"] == text


# --- errors: one line each ---------------------------------------------------------------------


def test_not_a_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"nowhere: not a directory; pass your checkout"):
        read_official_prompts(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        InvalidInputError, match=r"ZoomRefine_Base.py: no such file; is .*empty a checkout"
    ):
        read_official_prompts(tmp_path / "empty")


BROKEN = [
    ("x = 1\n", r"ZoomRefine_Base.py: no `prompts = \{...\}` dict literal found"),
    ("prompts = dict(a='b')\n", r"no `prompts = \{...\}` dict literal found"),
    ("prompts = {'user_template_1': '{question}'}\n",
     r"the prompts dict \(line 1\) has no key 'user_template_follow_up' \(it has: "
     r"'user_template_1'\)"),
    ("P = 'x'\nprompts = {'user_template_1': P + '{question}', 'user_template_follow_up': 'y'}\n",
     r"prompts\['user_template_1'\] \(line 2\) is not a literal string; the file is read, never run"),
    ("prompts = {'user_template_1': f'{1}', 'user_template_follow_up': 'y'}\n",
     r"prompts\['user_template_1'\] \(line 1\) is not a literal string"),
    ("prompts = {'user_template_1': 3, 'user_template_follow_up': 'y'}\n",
     r"prompts\['user_template_1'\] \(line 1\) is not a literal string"),
    ("prompts = {'user_template_1': '{question} {bbox}', 'user_template_follow_up': 'y'}\n",
     r"prompts\['user_template_1'\] uses placeholder \{bbox\}, which zoom-refine cannot fill"),
    ("prompts = {\n", r"ZoomRefine_Base.py: cannot be parsed as Python"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "message"), BROKEN)
def test_a_broken_official_file_is_one_error_line(
    tmp_path: Path, source: str, message: str
) -> None:
    folder = make_repo(tmp_path, base=source)
    with pytest.raises(InvalidInputError, match=message) as caught:
        read_official_prompts(folder, "base")
    assert "\n" not in str(caught.value)


# --- the command -------------------------------------------------------------------------------


def test_command_writes_the_default_file_and_refuses_to_overwrite(repo: Path) -> None:
    result = runner.invoke(app, ["prompts", "from-official", str(repo)])
    assert result.exit_code == 0, result.output
    written = Path("official-base-prompts.toml")  # in the current directory (tmp_path)
    assert result.stdout.splitlines() == [
        f"wrote {written}",
        "  localize ← prompts['user_template_1'] ({question})",
        "  refine ← prompts['user_template_follow_up'] (no placeholders)",
    ]
    before = written.read_bytes()
    assert "<image>" in before.decode()  # kept in the file, stripped on load
    assert load_prompt_set(written).templates["localize"].startswith("{question}\n")

    result = runner.invoke(app, ["prompts", "from-official", str(repo)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {written} exists; pass --force to overwrite it, or -o another file"
    )
    result = runner.invoke(app, ["prompts", "from-official", str(repo), "--variant", "api", "--force",
                                 "-o", str(written)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert written.read_bytes() != before and "system ←" in result.stdout


def test_command_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prompts", "from-official", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not a directory" in result.stderr
    assert "Traceback" not in result.output
