"""The README stays true: its drawing is generated, its table covers every setting."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from zoom_refine import ZoomContext, build_graph

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def test_readme_opens_with_install_and_test_commands() -> None:
    first = code_blocks("bash")[0].strip().splitlines()
    assert len(first) == 2
    assert "pip install -e '.[dev]'" in first[0]
    assert first[1].strip() == "pytest"
    assert README.index("pip install") < README.index("zoom-refine ask")


def test_mermaid_drawing_is_generated_from_the_graph() -> None:
    (drawing,) = code_blocks("mermaid")
    assert drawing == build_graph().get_graph().draw_mermaid()


def test_configuration_table_lists_every_context_field() -> None:
    for field in dataclasses.fields(ZoomContext):
        assert f"| `{field.name}` |" in README, field.name


def test_configuration_table_is_generated_from_the_field_metadata() -> None:
    """The table between the markers is exactly what the metadata makes today: a description
    changed in agent/context.py (or tools/settings.py) and not carried here fails, naming the
    command that carries it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from readme_settings import END, START, with_settings_table
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert README.count(START) == 1 and README.count(END) == 1
    assert with_settings_table(README) == README, (
        "README's configuration table is stale: run `python scripts/readme_settings.py`"
    )


def test_stale_configuration_table_is_caught() -> None:
    """The check above can fail: a README whose table lost a word is rewritten to differ."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from readme_settings import with_settings_table
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    stale = README.replace("Most crops per question", "Most crops", 1)
    assert stale != README
    assert with_settings_table(stale) == README


@pytest.mark.slow
def test_python_example_runs_offline(
    trained_internvl_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "In Python" example, run as written but on the tiny cached InternVL3 instead of the
    8B download: it builds the graph, runs the real local backend and prints a result."""
    example, _testing = code_blocks("python")
    model = "hf:OpenGVLab/InternVL3-8B-hf"
    assert f'model="{model}"' in example
    monkeypatch.chdir(Path(__file__).parents[1])  # it reads examples/station.png
    local = example.replace(model, f"hf:{trained_internvl_path}")
    exec(compile(local, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "[0, 0, 3840, 2160]" in printed[0]  # the first view's box


def test_testing_example_passes(tmp_path: Path) -> None:
    """The "Testing your own agents" example is a user's test: it runs, and it passes."""
    _example, testing = code_blocks("python")
    assert "from zoom_refine.testing import" in testing
    namespace: dict[str, Any] = {}
    exec(compile(testing, "README.md", "exec"), namespace)
    (test,) = [value for name, value in namespace.items() if name.startswith("test_")]
    test(tmp_path)
