"""The one registry of graphs: name → builder.

Every builder takes the same keywords — `checkpointer`, `name`, `retry_policy` — and passes any
other keyword to LangGraph's `compile` (`interrupt_before=["crop"]`, `store`, `debug`, …). The
server entry points (`graphs/studio.py`, `langgraph.json`), the eval runner, the trace reader and
the CLI all read this map; a test holds `langgraph.json` to it."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, RetryPolicy

from zoom_refine.graphs.agent import build_agent_graph
from zoom_refine.graphs.baseline import build_baseline_graph
from zoom_refine.graphs.calls import MODEL_RETRY
from zoom_refine.graphs.zoom_refine import build_graph

GraphName = Literal["zoom_refine", "baseline", "agent"]
"""A registered graph; also the `graph` metadata a traced run records (`traces.GRAPH_KEY`)."""


class GraphBuilder(Protocol):
    """The one builder signature."""

    def __call__(
        self,
        *,
        checkpointer: Checkpointer = None,
        name: str = ...,
        retry_policy: RetryPolicy | None = MODEL_RETRY,
        **compile_options: Any,
    ) -> CompiledStateGraph[Any, Any, Any, Any]: ...


GRAPHS: dict[str, GraphBuilder] = {
    "zoom_refine": build_graph,
    "baseline": build_baseline_graph,
    "agent": build_agent_graph,
}
"""Name → builder. `zoom_refine`: localize → crop → refine; `baseline`: one direct answer;
`agent`: model-driven zoom (the model calls the crop tool itself)."""

METHOD_GRAPHS: dict[str, str] = {
    "zoom-refine": "zoom_refine",
    "baseline": "baseline",
    "agent": "agent",
}
"""The CLI's and the eval runner's method names (`--method`) → registered graph names."""


def graph_named(name: str, **options: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Build the registered graph `name` (or its method name) with the builder's keywords;
    an unknown name (an old or hand-edited trace) falls back to Zoom-Refine."""
    key = METHOD_GRAPHS.get(name, name)
    builder = GRAPHS.get(key, build_graph)
    return builder(name=key if key in GRAPHS else "zoom_refine", **options)
