"""`zoom-refine mcp`: the crop and Zoom-Refine as MCP tools over stdio (`zoom_refine.mcp_server`).

Registered on the main app by `register`. The `mcp` SDK is an optional extra
(`pip install 'zoom-refine[mcp]'`), imported only when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoom_refine.agent.context import DEFAULT_MODEL, ZoomContext
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.images import DEFAULT_MAX_PIXELS

EXIT_USER_ERROR = 2
NO_SDK = "the mcp SDK is not installed: pip install 'zoom-refine[mcp]'"


def mcp(
    root: Annotated[
        list[Path] | None,
        typer.Option(
            "--root",
            help="A folder whose images the tools may open (symlinks resolved); repeat for "
            "several. Default: the current folder.",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Model for the zoom_refine tool: hf:<repo or path>, openai:<name>.")
    ] = DEFAULT_MODEL,
    base_url: Annotated[
        list[str] | None,
        typer.Option("--base-url", help="OpenAI-compatible server URL; repeat for replicas."),
    ] = None,
    max_hops: Annotated[int, typer.Option(help="Most zoom steps per question (1–8).")] = 1,
    max_patches: Annotated[
        int, typer.Option(help="InternVL tile budget per image (local models).")
    ] = 12,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per model reply.")] = 512,
    max_pixels: Annotated[
        int, typer.Option(help="Largest image either tool opens (width × height).")
    ] = DEFAULT_MAX_PIXELS,
    graph: Annotated[
        str, typer.Option(help="Graph the zoom_refine tool runs: zoom_refine, baseline, agent.")
    ] = "zoom_refine",
) -> None:
    """Serve the `crop` and `zoom_refine` tools to an MCP client over stdio."""
    try:
        from zoom_refine import mcp_server
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("mcp"):
            raise
        _fail(NO_SDK)
    try:
        settings = mcp_server.ServerSettings(
            roots=mcp_server.resolved_roots(root or [Path.cwd()]),
            context=ZoomContext(
                model=model,
                base_url=base_url or None,
                max_hops=max_hops,
                max_patches=max_patches,
                max_new_tokens=max_new_tokens,
                max_pixels=max_pixels,
            ),
            graph=mcp_server.checked_graph(graph),
        )
    except ZoomRefineError as error:
        _fail(str(error))
    mcp_server.serve_stdio(settings)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app` (called once by zoom_refine.cli)."""
    app.command("mcp")(mcp)
