"""Zoom-Refine: multimodal LLMs that read high-resolution images properly.

The model answers from a downsampled view and marks the region that matters (localize), the region
is cut from the full-resolution image (crop), and the model re-checks its answer (refine).
"""

from __future__ import annotations

from typing import Any

from zoom_refine.agent.context import DEFAULT_MODEL, ZoomContext
from zoom_refine.agent.models import load_chat_model
from zoom_refine.agent.state import InputState, Options, OutputState
from zoom_refine.graphs.agent import build_agent_graph
from zoom_refine.graphs.baseline import build_baseline_graph
from zoom_refine.graphs.compose_node import zoom_refine_node
from zoom_refine.graphs.compose_tool import zoom_refine_tool
from zoom_refine.graphs.registry import GRAPHS, graph_named
from zoom_refine.graphs.stepping import PendingBox, areplace_box, pending_boxes, replace_box
from zoom_refine.graphs.zoom_refine import build_builder, build_graph
from zoom_refine.tools.crop_tool import crop_tool, make_crop_tool
from zoom_refine.tools.errors import ImageLoadError, InvalidInputError, ZoomRefineError
from zoom_refine.tools.overlay import save_trace, show_trace

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "GRAPHS",
    "ImageLoadError",
    "InputState",
    "InvalidInputError",
    "OutputState",
    "PendingBox",
    "ZoomContext",
    "ZoomRefineError",
    "areplace_box",
    "ask",
    "build_agent_graph",
    "build_baseline_graph",
    "build_builder",
    "build_graph",
    "crop_tool",
    "graph_named",
    "load_chat_model",
    "make_crop_tool",
    "pending_boxes",
    "replace_box",
    "save_trace",
    "show_trace",
    "zoom_refine_node",
    "zoom_refine_tool",
]


def ask(
    image: str | bytes,
    question: str,
    options: Options | None = None,
    *,
    context: ZoomContext | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run Zoom-Refine once; `settings` are ZoomContext fields (used when `context` is None)."""
    run_context = context or ZoomContext(**settings)
    inputs: InputState = {"image": image, "question": question, "options": options}
    result: dict[str, Any] = build_graph().invoke(
        inputs, context=run_context, config={"recursion_limit": run_context.recursion_limit}
    )
    return result
