"""The README stays true: its drawing is generated, its table covers every setting."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

from zoom_refine import ZoomContext, build_graph

README = (Path(__file__).parents[1] / "README.md").read_text()


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


def test_python_example_is_valid_python() -> None:
    example, _testing = code_blocks("python")
    ast.parse(example)
    assert "build_graph" in example and "ZoomContext" in example


def test_testing_example_passes(tmp_path: Path) -> None:
    """The "Testing your own agents" example is a user's test: it runs, and it passes."""
    _example, testing = code_blocks("python")
    assert "from zoom_refine.testing import" in testing
    namespace: dict[str, Any] = {}
    exec(compile(testing, "README.md", "exec"), namespace)
    (test,) = [value for name, value in namespace.items() if name.startswith("test_")]
    test(tmp_path)
