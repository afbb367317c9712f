"""The `zoom-refine` command line: `zoom-refine ask IMAGE QUESTION`.

User mistakes (a missing or corrupt image, a bad option, an unreachable server, a model that
cannot be loaded) print one line on stderr and exit with status 2; never a traceback.

This module holds the app and the commands that answer one question (`ask`, `demo`) or make a
prompt set (`prompts`). The rest, one concern each: `cli_app` (Typer plumbing, plain help),
`cli_options` (the model options, made from ZoomContext's field metadata), `cli_render` (what is
printed), `cli_errors` (early checks, one-line errors), `cli_progress` (status lines, eval's
progress bar), and the command modules `cli_eval`, `cli_results` (`report`, `trace`),
`cli_official`, `cli_mcp`, `cli_experiments`, which join the app through `register(app)` and never
import this module.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.state import InputState
from zoom_refine.agent.view_cost import budget_warning
from zoom_refine.cli_app import App
from zoom_refine.cli_errors import (
    check_model,
    check_trace_db,
    check_trace_writable,
    fail,
    trace_db_message,
    user_message,
)
from zoom_refine.cli_options import ModelOptions, ModelSettings, with_model_options
from zoom_refine.cli_progress import quiet_transformers, status
from zoom_refine.cli_render import (
    err,
    out,
    print_event,
    print_lines,
    print_summary,
    save_pictures,
    say,
)
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.images import load_image

if TYPE_CHECKING:
    from zoom_refine.graphs.traces import Run

__all__ = ["ModelOptions", "app"]  # what tests and scripts import from here

app = App(
    no_args_is_help=True,
    help="Zoom-Refine: answer questions about high-resolution images by zooming in.",
)

AskMethod = Literal["zoom-refine", "baseline", "agent"]
"""`ask --method`: which graph answers (`agent`: the model calls the zoom tool itself); the
registry's method names (`graphs.registry.METHOD_GRAPHS`, held to it by a test)."""


def _print_version(value: bool) -> None:
    """`--version`: the installed package's version, then exit."""
    if value:
        from importlib.metadata import version

        out.print(f"zoom-refine {version('zoom-refine')}", markup=False)
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Zoom-Refine command line."""


@app.command()
@with_model_options
def ask(
    image: Annotated[str, typer.Argument(help="Image file to ask about.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="A multiple-choice option; repeat, lettered A, B, …"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole output state.")] = False,
    trace_db: Annotated[
        str | None,
        typer.Option(
            help="Trace database to record the run in (a new thread id each run): a SQLite "
            "file, or postgresql://user@host:port/db.",
            metavar="DB",
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print each step and crop as it happens.")
    ] = False,
    save_trace: Annotated[
        Path | None,
        typer.Option(help="Folder for overview.png, hop-N.png and trace.json.", metavar="FOLDER"),
    ] = None,
    method: Annotated[
        AskMethod,
        typer.Option(help="zoom-refine, baseline, or agent (the model calls the zoom tool)."),
    ] = "zoom-refine",
    *,
    settings: ModelSettings,
) -> None:
    """Answer QUESTION about IMAGE: localize, crop at full resolution, refine."""
    from zoom_refine.graphs.registry import METHOD_GRAPHS

    try:
        check_trace_db(trace_db)  # first: its password is hidden from every message after
        context = settings.context()
        load_image(image, max_pixels=context.max_pixels)  # fail fast, before loading a model
        check_model(context)
        check_trace_writable(trace_db)
        live = err if as_json else out
        result = _run(
            image,
            question,
            option or None,
            context,
            trace_db=trace_db,
            on_event=(lambda mode, data: print_event(live, mode, data)) if stream else None,
            graph=METHOD_GRAPHS[method],
        ).result
        if save_trace is not None:
            save_pictures(result, image, save_trace)
    except ZoomRefineError as error:
        fail(str(error))
    if starved := budget_warning(result):
        say(f"warning: {starved}")
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        print_summary(result, option or None)


@app.command()
def demo(
    folder: Annotated[
        Path, typer.Option("--out", help="Folder for the pictures and the trace database.")
    ] = Path("runs/demo"),
) -> None:
    """Try the whole workflow offline in about a minute: no download, no GPU.

    A tiny model (trained here on the first run, about a minute on the CPU, then cached) answers
    about examples/station.png, with pictures and a trace. It ignores the image: it shows the
    workflow, not real answers."""
    from zoom_refine import demo as tiny

    quiet_transformers()
    try:
        started = time.perf_counter()
        with status(tiny.BUILDING):
            model_path = tiny.demo_model()
        say(f"tiny model ready in {time.perf_counter() - started:.0f} s: {model_path}")
        image, question, options = tiny.demo_inputs(folder)
        context = tiny.demo_context(model_path)
        lines = [f"Question: {question}", "Options: " + ", ".join(options)]
        print_lines(lines)
        run = _run(image, question, options, context, trace_db=folder / "trace.db")
        save_pictures(run.result, image, folder, also=(folder / "trace.db",))
    except ZoomRefineError as error:
        fail(str(error))
    print_summary(run.result, options)
    print_lines(["", tiny.NOTE, "", "Next:"])
    print_lines(
        [
            f"  {folder / 'overview.png'}, {folder / 'hop-1.png'}: the box the model drew, the crop",
            f"  zoom-refine trace {folder / 'trace.db'} {run.thread_id}: every step replayed",
            "  real answers: zoom-refine ask IMAGE QUESTION -o … with --model "
            "hf:OpenGVLab/InternVL3-2B-hf (a 4 GB download), hf:/path/to/checkpoint, or "
            "openai:NAME --base-url URL",
        ]
    )


def _run(
    image: str,
    question: str,
    options: list[str] | None,
    context: ZoomContext,
    *,
    trace_db: str | Path | None = None,
    on_event: Any = None,
    graph: str = "zoom_refine",
) -> Run:
    """Run the graph `graph` (`graphs.traces.GRAPH_KEY` names; recorded in `trace_db` when
    given): the output state and thread id."""
    from zoom_refine.graphs.trace_urls import describe_target
    from zoom_refine.graphs.traces import run_graph

    if isinstance(context.model, str) and context.model.startswith("hf:"):
        quiet_transformers()
        err.print(
            f"[dim]loading {escape(context.model)} (weights load on first use)…[/dim]",
            soft_wrap=True,
        )
    inputs: InputState = {"image": image, "question": question, "options": options}

    def on_thread(thread_id: str) -> None:
        say(f"trace: thread {thread_id} in {describe_target(trace_db or '')}")

    try:
        return run_graph(
            inputs, context, db=trace_db, on_event=on_event, on_thread=on_thread, graph=graph
        )
    except ZoomRefineError:
        raise
    except Exception as error:  # translate the few library failures a user can fix
        message = trace_db_message(error, trace_db) or user_message(error, context)
        if message is None:
            raise
        raise ZoomRefineError(message) from error


prompts_app = App(
    no_args_is_help=True,
    help="Prompt sets: the texts the model is shown, as TOML files (docs/prompts.md).",
)
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("from-official")
def prompts_from_official(
    repo_dir: Annotated[
        Path, typer.Argument(help="Your checkout of the official xavier-yu114/Zoom-Refine.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Prompt-set file to write (default: official-VARIANT-prompts.toml here).",
            show_default=False,
        ),
    ] = None,
    variant: Annotated[
        Literal["base", "api"],
        typer.Option(
            help="base: ZoomRefine_Base.py (InternVL, the paper's runs; no system prompt); api: "
            "ZoomRefine_API.py (with its system prompt)."
        ),
    ] = "base",
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the output file if it exists.")
    ] = False,
) -> None:
    """Write a prompt set holding the official prompts, read from REPO_DIR (parsed, never run).

    Use it with --prompts FILE on ask and eval. zoom-refine does not ship the official wording."""
    from zoom_refine.agent.official_prompts import write_official_prompt_set

    try:
        path, official, _ = write_official_prompt_set(
            repo_dir, output, variant=variant, force=force
        )
    except ZoomRefineError as error:
        fail(str(error))
    used = official.placeholders()
    lines = [f"wrote {path}"]
    for name, key in official.keys.items():
        shown = ", ".join(f"{{{p}}}" for p in used[name]) or "no placeholders"
        lines.append(f"  {name} ← prompts[{key!r}] ({shown})")
    print_lines(lines)


def _register_command_modules() -> None:
    """Commands that live in their own modules (one concern each) join the app here."""
    from zoom_refine import cli_eval, cli_experiments, cli_mcp, cli_official, cli_results

    for module in (cli_eval, cli_results, cli_official, cli_mcp, cli_experiments):
        module.register(app)


_register_command_modules()
