"""Graphs exported to the LangGraph server and Studio (`langgraph.json`).

The server adds its own persistence, so these are compiled without a checkpointer. Run settings
come from the context schema (`ZoomContext`): in Studio, set them in the assistant's context
(`model`, `max_hops`, `confidence_threshold`, …); an empty context uses the paper's defaults.
"""

from __future__ import annotations

from zoom_refine.graphs.registry import GRAPHS

graph = GRAPHS["zoom_refine"](name="zoom_refine")
"""Zoom-Refine: localize → crop → refine (and zoom again while unsure)."""

baseline = GRAPHS["baseline"](name="baseline")
"""One direct answer on the downsampled view, for side-by-side comparisons."""

agent = GRAPHS["agent"](name="agent")
"""Model-driven zoom: the model calls the zoom tool itself (`tool_convention`, `max_hops`)."""
