"""One registry of graphs, one builder signature, and langgraph.json held to the registry."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from zoom_refine.graphs.registry import GRAPHS, METHOD_GRAPHS, graph_named

ROOT = Path(__file__).resolve().parents[1]


def _studio_graph(reference: str) -> object:
    path, attribute = reference.split(":")
    spec = importlib.util.spec_from_file_location("studio_under_test", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attribute)


def test_langgraph_json_serves_exactly_the_registered_graphs() -> None:
    served = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    assert set(served) == set(GRAPHS)
    for name, reference in served.items():
        graph = _studio_graph(reference)
        built = GRAPHS[name]()
        assert graph.name == name  # type: ignore[attr-defined]
        assert set(graph.get_graph().nodes) == set(built.get_graph().nodes)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_builder_takes_the_same_keywords(name: str) -> None:
    parameters = inspect.signature(GRAPHS[name]).parameters
    assert {"checkpointer", "name", "retry_policy"} <= set(parameters)
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY
        for k, p in parameters.items()
        if k != "compile_options"
    )
    assert parameters["compile_options"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_builder_passes_compile_options_to_langgraph(name: str) -> None:
    saver = InMemorySaver()
    first = next(iter(GRAPHS[name]().get_graph().nodes.keys() - {"__start__", "__end__"}))
    graph = GRAPHS[name](checkpointer=saver, name="mine", interrupt_before=[first])
    assert graph.checkpointer is saver and graph.name == "mine"
    assert graph.interrupt_before_nodes == [first]


def test_method_names_and_graph_names_reach_the_same_builder() -> None:
    for method, name in METHOD_GRAPHS.items():
        assert graph_named(method).name == name == graph_named(name).name
    assert graph_named("not-a-graph").name == "zoom_refine"  # an old trace: Zoom-Refine
