"""A registered graph as one node of a parent graph whose state keys are its own.

LangGraph's "call the subgraph inside a node" pattern for differing schemas: the node reads the
parent's keys named in `inputs`, runs the graph with the parent's config (so its checkpointer,
callbacks and `stream(..., subgraphs=True)` reach inside), and writes the outputs back under
the parent's keys named in `outputs`::

    node = zoom_refine_node(
        inputs={"image": "photo_path", "question": "user_question", "options": "choices"},
        outputs={"answer": "verdict", "confidence": "certainty", "views": "crops"},
    )
    parent.add_node("zoom", node)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, get_type_hints

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.state import InputState, OutputState
from zoom_refine.graphs.registry import GRAPHS
from zoom_refine.tools.errors import InvalidInputError

DEFAULT_INPUTS: dict[str, str] = {"image": "image", "question": "question", "options": "options"}
"""The graph's input key → the parent's key, when `inputs` is not given."""
DEFAULT_OUTPUTS: dict[str, str] = {"answer": "answer", "confidence": "confidence"}
"""The graph's output key → the parent's key, when `outputs` is not given."""
REQUIRED_INPUTS = ("image", "question")
"""Inputs the parent must hold; `options` and `prompt` may be absent or None."""

INPUT_KEYS = tuple(get_type_hints(InputState))
OUTPUT_KEYS = tuple(get_type_hints(OutputState))

UNKNOWN_GRAPH = "unknown graph {name!r}; registered graphs: {known}"
UNKNOWN_KEY = "{which}= names {key!r}, which is not one of the graph's {which}: {known}"
REQUIRED_KEY = "inputs= must map the graph's {key!r} to a key of the parent state"
MISSING_KEY = (
    "the parent state has no {parent!r} (or it is None), which inputs={mapping!r} maps to the "
    "graph's {key!r}: set it before this node or change inputs="
)
WRONG_TYPE = (
    "the parent state's {parent!r} holds a value of type {kind}, but the graph's {key!r} "
    "(inputs={mapping!r}) takes {wanted}"
)
NOT_A_STATE = "the parent state is a {kind}; zoom_refine_node reads a mapping or an object's fields"
ACCEPTED_TYPES: dict[str, tuple[type, ...]] = {
    "image": (str, bytes, os.PathLike),
    "question": (str,),
    "options": (Mapping, list, tuple),
    "prompt": (str,),
}
WANTED = {
    "image": "a path or encoded bytes",
    "question": "a text",
    "options": "a list of texts or a mapping letter → text",
    "prompt": "a text",
}
_ABSENT = object()

Graph = CompiledStateGraph[Any, Any, Any, Any]


def zoom_refine_node(
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    *,
    context: ZoomContext | None = None,
    graph: str | Graph = "zoom_refine",
    **compile_options: Any,
) -> RunnableLambda[Any, dict[str, Any]]:
    """A node (sync and async) running `graph` on the parent's keys.

    `inputs`: the graph's input key → the parent's key (default: the same names); `outputs`: the
    graph's output key → the parent's key (default: `answer` and `confidence`). `context`: the
    run's settings; None takes the parent's runtime context when it is a ZoomContext, else the
    defaults. `graph`: a registered name (`zoom_refine`, `baseline`, `agent`) or a compiled
    graph; `compile_options` (`interrupt_before=["crop"]`, …) go to its builder. Bad mappings
    raise InvalidInputError here; a missing or ill-typed parent key raises it when the node runs.
    """
    in_map = dict(DEFAULT_INPUTS if inputs is None else inputs)
    out_map = dict(DEFAULT_OUTPUTS if outputs is None else outputs)
    _check_mapping("inputs", in_map, INPUT_KEYS)
    _check_mapping("outputs", out_map, OUTPUT_KEYS)
    for key in REQUIRED_INPUTS:
        if key not in in_map:
            raise InvalidInputError(REQUIRED_KEY.format(key=key))
    compiled = compiled_graph(graph, compile_options)

    def run(state: Any, config: RunnableConfig) -> dict[str, Any]:
        run_context = _context(context)
        result = compiled.invoke(
            graph_inputs(state, in_map), run_config(config, run_context), context=run_context
        )
        return parent_update(result, out_map)

    async def arun(state: Any, config: RunnableConfig) -> dict[str, Any]:
        run_context = _context(context)
        result = await compiled.ainvoke(
            graph_inputs(state, in_map), run_config(config, run_context), context=run_context
        )
        return parent_update(result, out_map)

    return RunnableLambda(run, afunc=arun, name=compiled.get_name())


def graph_inputs(state: Any, inputs: Mapping[str, str]) -> dict[str, Any]:
    """The graph's inputs read from the parent's state (a mapping, or an object's fields), each
    checked: a missing required key or a wrong type is one InvalidInputError line."""
    if isinstance(state, (str, bytes, int, float, list, tuple)) or state is None:
        raise InvalidInputError(NOT_A_STATE.format(kind=type(state).__name__))
    read: dict[str, Any] = {}
    for key, parent in inputs.items():
        value = (
            state.get(parent, _ABSENT)
            if isinstance(state, Mapping)
            else getattr(state, parent, _ABSENT)
        )
        if value is _ABSENT or value is None:
            if key in REQUIRED_INPUTS:
                raise InvalidInputError(
                    MISSING_KEY.format(parent=parent, mapping=dict(inputs), key=key)
                )
            continue
        if not isinstance(value, ACCEPTED_TYPES[key]):
            raise InvalidInputError(
                WRONG_TYPE.format(
                    parent=parent,
                    kind=type(value).__name__,
                    key=key,
                    mapping=dict(inputs),
                    wanted=WANTED[key],
                )
            )
        read[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return read


def parent_update(result: Mapping[str, Any], outputs: Mapping[str, str]) -> dict[str, Any]:
    """The parent's update: each mapped output under the parent's key. A value the run did not
    produce is written as None (lists and counters as empty), so a stale one never remains."""
    empty: dict[str, Any] = {"views": [], "steps": [], "usage": {}}
    return {parent: result.get(key, empty.get(key)) for key, parent in outputs.items()}


def _check_mapping(which: str, mapping: Mapping[str, str], known: tuple[str, ...]) -> None:
    for key, parent in mapping.items():
        if key not in known:
            raise InvalidInputError(UNKNOWN_KEY.format(which=which, key=key, known=list(known)))
        if not isinstance(parent, str) or not parent:
            raise InvalidInputError(
                f"{which}= maps {key!r} to {parent!r}: name a key of the parent state"
            )


def compiled_graph(graph: str | Graph, compile_options: dict[str, Any]) -> Graph:
    if not isinstance(graph, str):
        return graph
    if graph not in GRAPHS:
        raise InvalidInputError(UNKNOWN_GRAPH.format(name=graph, known=", ".join(GRAPHS)))
    compiled: Graph = GRAPHS[graph](**compile_options)
    return compiled


def _context(given: ZoomContext | None) -> ZoomContext:
    """The run's settings: those given, else the parent's runtime context when it is a
    ZoomContext (always passed on explicitly: another context must never reach the graph)."""
    if given is not None:
        return given
    try:
        parent = get_runtime().context
    except (RuntimeError, AttributeError):  # called outside a graph run
        parent = None
    return settings_for(None, parent)


def settings_for(given: ZoomContext | None, outer: object) -> ZoomContext:
    """`given`, else the outer run's context when it is a ZoomContext, else the defaults."""
    if given is not None:
        return given
    return outer if isinstance(outer, ZoomContext) else ZoomContext()


def run_config(config: RunnableConfig | None, context: ZoomContext) -> RunnableConfig:
    """The outer config (checkpointer, callbacks, stream) with a recursion limit that admits
    the run's hops."""
    base: RunnableConfig = config or {}
    limit = max(int(base.get("recursion_limit", 25)), context.recursion_limit)
    return {**base, "recursion_limit": limit}
