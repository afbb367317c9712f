"""A whole Zoom-Refine run as one LangChain tool, for a larger agent (`create_agent`, a ToolNode).

The agent's model passes a question (and options); the image comes from the agent's state under
`image_key`, never from the model's arguments, so nothing a model writes can open a file. The
content is the answer, the confidence and the last crop (an image block) for the model; the
artifact is the run's output (`OutputState`: steps, views, usage, stop reason) for code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.prebuilt import ToolRuntime

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.state import normalize_options
from zoom_refine.graphs.compose_node import Graph, compiled_graph, run_config, settings_for
from zoom_refine.tools.crop_tool import registered_image
from zoom_refine.tools.encoding import ImageFormat, image_content_block, text_content_block
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.images import ImageSource, load_image
from zoom_refine.tools.views import View, render_view

ZOOM_REFINE_TOOL_NAME = "zoom_refine"


def zoom_refine_tool(
    context: ZoomContext | None = None,
    image_key: str = "image",
    graph: str | Graph = "zoom_refine",
    **compile_options: Any,
) -> BaseTool:
    """The tool `zoom_refine(question, options=None)` over the image in state key `image_key`.

    `context`: the run's settings (None: the agent's runtime context when it is a ZoomContext,
    else the defaults). `graph`: a registered name or a compiled graph. A bad image, question or
    option list is reported to the model as a tool error; a failing model raises."""
    compiled = compiled_graph(graph, compile_options)

    @tool(ZOOM_REFINE_TOOL_NAME, response_format="content_and_artifact")
    def zoom_refine(
        question: str, runtime: ToolRuntime[Any, Any], options: list[str] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Answer a question about the image by looking closely: the model finds the region that
        matters, zooms into it at full resolution and re-checks its answer.

        Args:
            question: the question about the image.
            options: multiple-choice options, lettered A, B, … in order (leave out for an open
                question); the answer is then a letter.
        """
        source = registered_image(runtime.state, image_key)
        run_context = settings_for(context, runtime.context)
        inputs = {"image": source, "question": question, "options": options}
        try:
            result: dict[str, Any] = compiled.invoke(
                inputs, run_config(runtime.config, run_context), context=run_context
            )
        except ZoomRefineError as error:  # the model's arguments or the image: tell the model
            raise ToolException(str(error)) from error
        return run_content(result, source, options, run_context), result

    zoom_refine.handle_tool_error = True
    return zoom_refine


def run_content(
    result: Mapping[str, Any],
    source: ImageSource,
    options: list[str] | None,
    context: ZoomContext,
) -> list[dict[str, Any]]:
    """A line with the answer (and its option text), the confidence and the stop reason; then
    the last crop as a standard image block, when a crop was made."""
    blocks = [text_content_block(summary(result, options))]
    views = result.get("views") or []
    if len(views) > 1:
        view = View.from_record(views[-1])
        original = load_image(source, max_pixels=context.max_pixels).image
        _, shown = render_view(
            original, view.box, view_id=view.id, hop=view.hop, size=view.shown_size
        )
        blocks.append(image_content_block(shown, _tool_format(context), context.jpeg_quality))
    return blocks


def summary(result: Mapping[str, Any], options: list[str] | None) -> str:
    """`Answer: B (blue). Confidence: 0.90. Zoomed 1 time (stop: confident).`"""
    answer = result.get("answer")
    named = normalize_options(options) if options else None
    shown = "none found" if answer is None else str(answer)
    if named and answer in named:
        shown += f" ({named[answer]})"
    confidence = result.get("confidence")
    stated = "not stated" if confidence is None else f"{confidence:.2f}"
    crops = max(len(result.get("views") or []) - 1, 0)
    stop = result.get("stop_reason", "unknown")
    last = f"; the last crop, view {result['views'][-1]['id']}, follows" if crops else ""
    return (
        f"Answer: {shown}. Confidence: {stated}. "
        f"Zoomed {crops} time{'s' if crops != 1 else ''} (stop: {stop}){last}."
    )


def _tool_format(context: ZoomContext) -> ImageFormat:
    """PNG for the agent's model unless JPEG was asked for (BMP, the in-process default, is
    not an image type chat APIs take)."""
    return "jpeg" if context.image_format == "jpeg" else "png"
