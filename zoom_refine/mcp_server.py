"""The crop and a whole Zoom-Refine run as MCP tools (the official `mcp` SDK), for agents that are
not written in Python. `zoom-refine mcp` serves them over stdio.

An MCP client names an image by path, so the server opens only files under the allowed roots
(symlinks and `..` resolved first) and only images within the pixel limit; each refusal is one
line, returned to the client as a tool error. The model and its settings are the server's
(fixed when it starts): a client chooses the question, the options and at most the hop count.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from langchain_core.tools import ToolException
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, TextContent

from zoom_refine.agent.context import MAX_HOPS_LIMIT, ZoomContext
from zoom_refine.graphs.compose_node import UNKNOWN_GRAPH
from zoom_refine.graphs.compose_tool import run_content
from zoom_refine.graphs.registry import GRAPHS, graph_named
from zoom_refine.tools.crop_tool import crop_message_content, full_view, make_crop
from zoom_refine.tools.errors import InvalidInputError, ZoomRefineError
from zoom_refine.tools.images import load_image

SERVER_NAME = "zoom-refine"
OUTSIDE_ROOTS = "refused: {path} is outside the allowed roots ({roots}); pass --root to allow it"
NOT_FOUND = "image not found: {path} (check the path)"
BAD_HOPS = "max_hops must be 1..{limit}, got {value}"
BAD_THRESHOLD = "confidence_threshold must be a number within 0..1, got {value}"
NO_ROOT = "--root {path} is not a folder"

McpFrame = Literal["norm1", "norm1000", "pixel", "original"]
Content = list[TextContent | ImageContent]


@dataclass(frozen=True)
class ServerSettings:
    """What `zoom-refine mcp` was started with."""

    roots: tuple[Path, ...] = field(default_factory=lambda: (Path.cwd(),))
    """Folders whose files (after resolving symlinks and `..`) the tools may open."""
    context: ZoomContext = field(default_factory=ZoomContext)
    """The zoom_refine tool's model and settings; its `max_pixels` also bounds the crop tool."""
    graph: str = "zoom_refine"
    """Which registered graph the zoom_refine tool runs."""


def resolved_roots(roots: Sequence[str | os.PathLike[str]]) -> tuple[Path, ...]:
    """The roots as real folders (symlinks resolved); InvalidInputError for one that is not."""
    resolved = []
    for root in roots:
        path = Path(root).resolve()
        if not path.is_dir():
            raise InvalidInputError(NO_ROOT.format(path=root))
        resolved.append(path)
    return tuple(resolved)


def checked_graph(name: str) -> str:
    """`name` when it is a registered graph, else InvalidInputError naming them."""
    if name not in GRAPHS:
        raise InvalidInputError(UNKNOWN_GRAPH.format(name=name, known=", ".join(GRAPHS)))
    return name


def allowed_path(path: str, roots: Sequence[Path]) -> Path:
    """`path` resolved (symlinks, `..`; relative to the working folder) when it lies under one
    of `roots`, else InvalidInputError. Resolving first means a link inside a root that points
    outside it is refused, as is `root/../secret`."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidInputError(NOT_FOUND.format(path=path))
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise InvalidInputError(OUTSIDE_ROOTS.format(path=path, roots=shown))
    if not real.exists():
        raise InvalidInputError(NOT_FOUND.format(path=path))
    return real


def crop_image(
    settings: ServerSettings, image_path: str, box: Sequence[float], box_format: McpFrame
) -> Content:
    """The crop tool's work: `box` (in `box_format` of the whole image) cut at full resolution."""
    path = allowed_path(image_path, settings.roots)
    image_settings = settings.context
    original = load_image(path, max_pixels=image_settings.max_pixels).image
    views = [full_view(original.size, image_settings).to_record()]
    try:
        crop = make_crop(original, views, "img0", box, box_format, image_settings)
    except ToolException as error:
        raise InvalidInputError(str(error)) from error
    return mcp_content(crop_message_content(crop, image_settings))


def zoom_refine_run(
    settings: ServerSettings,
    image_path: str,
    question: str,
    options: list[str] | None,
    max_hops: int | None,
    confidence_threshold: float | None,
) -> Content:
    """One run of the server's graph: the answer line, then the last crop (when one was made)."""
    path = allowed_path(image_path, settings.roots)
    context = run_context(settings.context, max_hops, confidence_threshold)
    load_image(path, max_pixels=context.max_pixels)  # refuse a bomb before loading a model
    graph = graph_named(settings.graph)
    inputs = {"image": str(path), "question": question, "options": options}
    result = graph.invoke(inputs, {"recursion_limit": context.recursion_limit}, context=context)
    return mcp_content(run_content(result, str(path), options, context))


def run_context(
    context: ZoomContext, max_hops: int | None, confidence_threshold: float | None
) -> ZoomContext:
    """The server's context with the per-call settings a client may choose, checked."""
    changes: dict[str, Any] = {}
    if max_hops is not None:
        if isinstance(max_hops, bool) or not 1 <= max_hops <= MAX_HOPS_LIMIT:
            raise InvalidInputError(BAD_HOPS.format(limit=MAX_HOPS_LIMIT, value=max_hops))
        changes["max_hops"] = max_hops
    if confidence_threshold is not None:
        if not (math.isfinite(confidence_threshold) and 0 <= confidence_threshold <= 1):
            raise InvalidInputError(BAD_THRESHOLD.format(value=confidence_threshold))
        changes["confidence_threshold"] = confidence_threshold
    return replace(context, **changes) if changes else context


def mcp_content(blocks: Sequence[Mapping[str, Any]]) -> Content:
    """LangChain standard blocks (text, base64 image) as MCP content."""
    content: Content = []
    for block in blocks:
        if block["type"] == "text":
            content.append(TextContent(type="text", text=block["text"]))
        elif block["type"] == "image":
            image = Image(data=base64.b64decode(block["base64"]), format=_format(block))
            content.append(image.to_image_content())
    return content


def _format(block: Mapping[str, Any]) -> str:
    return str(block.get("mime_type", "image/png")).removeprefix("image/")


def build_server(settings: ServerSettings) -> MCPServer[Any]:
    """The MCP server with the `crop` and `zoom_refine` tools. A user error (a path outside the
    roots, a missing or non-image file, an image over the pixel limit, a bad box) is a tool
    error of one line; anything else is a crash the SDK reports and logs."""
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        log_level="WARNING",  # stderr stays quiet; a refused call is the client's to show
        instructions="Zoom into high-resolution images: `crop` cuts a region at full "
        "resolution; `zoom_refine` answers a question by finding the region, zooming in and "
        "re-checking.",
    )

    @server.tool(name="crop", structured_output=False)
    def crop(image_path: str, box: list[float], box_format: McpFrame = "norm1") -> Content:
        """Cut a region of an image file at full resolution and return it as an image.

        Args:
            image_path: path of the image file (under the server's allowed roots).
            box: [x1, y1, x2, y2] of the region (left, top, right, bottom).
            box_format: units of `box`: "norm1" (fractions 0–1 of width and height),
                "norm1000" (0–1000), "pixel" (pixels of the image as the server shows it,
                at most 2048 px a side) or "original" (pixels of the file).
        """
        return _user_errors(lambda: crop_image(settings, image_path, box, box_format))

    @server.tool(name="zoom_refine", structured_output=False)
    def zoom_refine(
        image_path: str,
        question: str,
        options: list[str] | None = None,
        max_hops: int | None = None,
        confidence_threshold: float | None = None,
    ) -> Content:
        """Answer a question about an image file by zooming in: the model marks the region
        that matters, it is cut at full resolution, and the model re-checks its answer.

        Args:
            image_path: path of the image file (under the server's allowed roots).
            question: the question about the image.
            options: multiple-choice options, lettered A, B, … (the answer is then a letter).
            max_hops: most zoom steps (1–8; the server's setting when left out).
            confidence_threshold: zoom again while the stated confidence is below this (0–1).
        """
        return _user_errors(
            lambda: zoom_refine_run(
                settings, image_path, question, options, max_hops, confidence_threshold
            )
        )

    return server


def _user_errors(work: Callable[[], Content]) -> Content:
    """Run `work`; a ZoomRefineError becomes the SDK's ToolError (one line to the client)."""
    try:
        result: Content = work()
    except ZoomRefineError as error:
        raise ToolError(str(error)) from error
    return result


def serve_stdio(settings: ServerSettings) -> None:
    """Serve over stdin / stdout until the client closes them."""
    build_server(settings).run("stdio")
