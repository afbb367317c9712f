"""langgraph.json: every graph it names loads the way the LangGraph server loads it."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
from typing import Any

import pytest
from langgraph.graph.state import CompiledStateGraph

from zoom_refine import ZoomContext

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / "langgraph.json").read_text())


def load_graph(spec: str) -> Any:
    """Import `./path/to/file.py:attribute` by file path, as `langgraph dev` does."""
    path, _, attribute = spec.rpartition(":")
    module_name = f"langgraph_json_{pathlib.Path(path).stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, ROOT / path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    return getattr(module, attribute)


def test_config_shape() -> None:
    assert CONFIG["dependencies"] == ["."]
    assert set(CONFIG["graphs"]) == {"zoom_refine", "baseline", "agent"}


@pytest.mark.parametrize("name", sorted(CONFIG["graphs"]))
def test_graph_loads_like_the_server(name: str) -> None:
    graph = load_graph(CONFIG["graphs"][name])
    assert isinstance(graph, CompiledStateGraph)
    assert graph.checkpointer is None  # the server refuses graphs that bring their own
    assert graph.name == name
    schema = graph.get_input_jsonschema()
    assert {"image", "question"} <= set(schema["properties"])
    assert set(schema["required"]) == {"image", "question"}
    assert {"answer", "steps", "views"} <= set(graph.get_output_jsonschema()["properties"])
    context = graph.get_context_jsonschema()
    assert context is not None
    assert {"model", "max_hops", "confidence_threshold"} <= set(context["properties"])
    assert context["properties"]["model"]["type"] == "string"  # a spec, editable in Studio


def test_studio_context_from_json_runs_the_graph(tmp_path: pathlib.Path) -> None:
    """Studio sends the context as JSON: a dict of ZoomContext fields is coerced to the dataclass."""
    from PIL import Image

    from zoom_refine.testing import RuleVisionModel

    image = tmp_path / "scene.png"
    Image.new("RGB", (640, 480), "white").save(image)
    graph = load_graph(CONFIG["graphs"]["zoom_refine"])
    context = {"model": RuleVisionModel(), "max_hops": 1}
    result = graph.invoke(
        {"image": str(image), "question": "Which?", "options": ["x", "y"]},
        context=context,
        config={"recursion_limit": ZoomContext().recursion_limit},
    )
    assert [step["node"] for step in result["steps"]] == ["localize", "refine"]
    assert result["answer"] == "B"
