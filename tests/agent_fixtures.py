"""What the tests of the model-driven graph (`graphs.agent`) share: one run of it on an image."""

from __future__ import annotations

import pathlib
from typing import Any

from langchain_core.language_models import BaseChatModel

from zoom_refine import ZoomContext, build_agent_graph

OPTIONS = ["red", "blue"]
"""The choices asked about (lettered A, B by the graph)."""
QUESTION = "What colour is the square?"


def run_agent(image: pathlib.Path, model: BaseChatModel, **settings: Any) -> dict[str, Any]:
    """The agent graph's final state after asking `QUESTION` about `image` with `model` and the
    context `settings`, within the context's recursion limit."""
    context = ZoomContext(model=model, **settings)
    inputs = {"image": str(image), "question": QUESTION, "options": OPTIONS}
    config = {"recursion_limit": context.recursion_limit}
    result: dict[str, Any] = build_agent_graph().invoke(inputs, context=context, config=config)
    return result
