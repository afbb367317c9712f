"""Graphs exported to the LangGraph server and Studio (`langgraph.json`).

The server adds its own persistence, so these are compiled without a checkpointer. Run settings
come from the context schema (`ZoomContext`): in Studio, set them in the assistant's context
(`model`, `max_hops`, `confidence_threshold`, …); an empty context uses the paper's defaults.
"""

from __future__ import annotations

from zoom_refine.graphs.agent import build_agent_graph
from zoom_refine.graphs.baseline import build_baseline_graph
from zoom_refine.graphs.zoom_refine import build_graph

graph = build_graph(name="zoom_refine")
"""Zoom-Refine: localize → crop → refine (and zoom again while unsure)."""

baseline = build_baseline_graph(name="baseline")
"""One direct answer on the downsampled view, for side-by-side comparisons."""

agent = build_agent_graph(name="agent")
"""Model-driven zoom: the model calls the zoom tool itself (`tool_convention`, `max_hops`)."""
