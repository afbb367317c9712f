"""The `zoom-refine` command line: `zoom-refine ask IMAGE QUESTION`.

User mistakes (a missing or corrupt image, a bad option, an unreachable server, a model that
cannot be loaded) print one line on stderr and exit with status 2; never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from zoom_refine.agent.context import DEFAULT_MODEL, ZoomContext
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.images import load_image

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Zoom-Refine: answer questions about high-resolution images by zooming in.",
)
out = Console()
err = Console(stderr=True)

EXIT_USER_ERROR = 2
BASE_URL_ENV = "ZOOM_REFINE_BASE_URL"
SERVER_UNREACHABLE = (
    "cannot reach the model server at {url}: {reason} (is it running? check --base-url)"
)
MODEL_UNAVAILABLE = "cannot load model {spec!r}: {reason}"


@app.callback()
def main() -> None:
    """Zoom-Refine command line."""


@app.command()
def ask(
    image: Annotated[Path, typer.Argument(help="Image file to ask about.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="A multiple-choice option; repeat, lettered A, B, …"),
    ] = None,
    model: Annotated[
        str, typer.Option(help="hf:<repo or path>, openai:<model> or provider:model.")
    ] = DEFAULT_MODEL,
    base_url: Annotated[
        str | None,
        typer.Option(help=f"OpenAI-compatible server URL (default: ${BASE_URL_ENV})."),
    ] = None,
    max_hops: Annotated[int, typer.Option(help="Most zooms per question (1 = the paper).")] = 1,
    confidence_threshold: Annotated[
        float, typer.Option(help="Zoom again while confidence is below this (0–1).")
    ] = 0.7,
    prompt_style: Annotated[
        str, typer.Option(help="paper (0–1 boxes) or internvl (<box> 0–1000).")
    ] = "paper",
    box_format: Annotated[str, typer.Option(help="auto, norm1, norm1000 or pixel.")] = "auto",
    view_max_side: Annotated[
        int, typer.Option(help="Longest side in pixels of images sent to the model.")
    ] = 2048,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole output state.")] = False,
) -> None:
    """Answer QUESTION about IMAGE: localize, crop at full resolution, refine."""
    try:
        context = ZoomContext(
            model=model,
            base_url=base_url or os.environ.get(BASE_URL_ENV) or None,
            max_hops=max_hops,
            confidence_threshold=confidence_threshold,
            prompt_style=_choice(prompt_style, ("paper", "internvl"), "--prompt-style"),
            box_format=_choice(box_format, ("auto", "norm1", "norm1000", "pixel"), "--box-format"),
            view_max_side=view_max_side,
        )
        load_image(image, max_pixels=context.max_pixels)  # fail fast, before loading a model
        result = _run(image, question, option or None, context)
    except ZoomRefineError as error:
        _fail(str(error))
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        _print_summary(result)


def _run(
    image: Path, question: str, options: list[str] | None, context: ZoomContext
) -> dict[str, Any]:
    from zoom_refine import ask as run_ask

    if isinstance(context.model, str) and context.model.startswith("hf:"):
        err.print(f"[dim]loading {escape(context.model)} (weights load on first use)…[/dim]")
    try:
        return run_ask(str(image), question, options, context=context)
    except ZoomRefineError:
        raise
    except Exception as error:  # translate the few library failures a user can fix
        message = _user_message(error, context)
        if message is None:
            raise
        raise ZoomRefineError(message) from error


def _user_message(error: Exception, context: ZoomContext) -> str | None:
    """A one-line explanation for errors caused by the environment, or None for our own bugs."""
    import httpx
    import openai

    if isinstance(error, (openai.APIConnectionError, httpx.ConnectError, ConnectionError)):
        return SERVER_UNREACHABLE.format(url=context.base_url or "the default URL", reason=error)
    if isinstance(error, openai.APIStatusError):
        return f"the model server refused the request: {error}"
    if isinstance(error, OSError) and str(context.model).startswith("hf:"):
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return MODEL_UNAVAILABLE.format(spec=context.model, reason=first_line)
    return None


def _choice(value: str, allowed: tuple[str, ...], flag: str) -> Any:
    if value not in allowed:
        raise ZoomRefineError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _print_summary(result: dict[str, Any]) -> None:
    out.print(f"[bold]Answer:[/bold] {escape(str(result.get('answer')))}")
    views = {view["id"]: view for view in result.get("views", [])}
    for step in result.get("steps", []):
        out.print(escape(_step_line(step, views)), soft_wrap=True)
    out.print(f"[dim]stopped: {escape(str(result.get('stop_reason')))}[/dim]")


def _step_line(step: dict[str, Any], views: dict[str, Any]) -> str:
    parts = [f"{step['node']:<8}", f"hop {step.get('hop', 0)}"]
    view = views.get(step.get("view") or "")
    if view:
        parts.append(f"{view['id']} {view['box']}")
    if step.get("answer") is not None:
        parts.append(f"answer {step['answer']}")
    if step.get("box") is not None:
        parts.append(f"box {step['box']} ({step.get('box_frame')})")
    if step.get("confidence") is not None:
        parts.append(f"confidence {step['confidence']:.2f}")
    if step.get("seconds") is not None:
        parts.append(f"{step['seconds']:.2f} s")
    if step.get("note"):
        parts.append(f"— {step['note']}")
    return "  ".join(parts)
