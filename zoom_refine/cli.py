"""The `zoom-refine` command line: `zoom-refine ask IMAGE QUESTION`.

User mistakes (a missing or corrupt image, a bad option, an unreachable server, a model that
cannot be loaded) print one line on stderr and exit with status 2; never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from zoom_refine.agent import models
from zoom_refine.agent.context import (
    DEFAULT_MODEL,
    MAX_HOPS_LIMIT,
    MAX_REGIONS_LIMIT,
    OFFICIAL_SETTINGS,
    BoxFormat,
    FamilySetting,
    TileBudgetField,
    ZoomContext,
)
from zoom_refine.agent.models import use_api_key
from zoom_refine.agent.prompts import PromptStyle
from zoom_refine.agent.state import InputState, StepRecord, ViewRecord, normalize_options
from zoom_refine.agent.tool_conventions import ToolCallFormat, ToolConventionName, ToolImages
from zoom_refine.evals.samples import Benchmark
from zoom_refine.evals.scoring import Extractor
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.images import load_image

if TYPE_CHECKING:
    from zoom_refine.graphs.traces import Run, TraceStep


class FlagCommand(TyperCommand):
    """A command whose on/off flags show as flags in `--help` (`--json`, not `--json <bool>`:
    typer 0.29 prints the type of every option, flags and `--help` included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _show_as_flag(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _show_as_flag(option)
        return option

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Click's "unexpected extra arguments" error, with the hint a newcomer needs when the
        extras follow a repeatable option (`-o 3 7 12` means one option and three stray words)."""
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERROR as error:
            usage: Any = error
            repeatable = _repeatable_options(self)
            if "unexpected extra argument" in usage.message and repeatable:
                first = repeatable[0]
                usage.message += (
                    f"; options that take several values are repeated, one value each "
                    f"({', '.join(repeatable)}): {first} A {first} B"
                )
            raise


USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]
"""Click's UsageError as typer vendors it (typer exports only its subclass BadParameter)."""


def _repeatable_options(command: Any) -> list[str]:
    """The option names of `command` that take several values by repetition (e.g. `-o`)."""
    return [
        param.opts[-1]
        for param in command.params
        if isinstance(param, TyperOption) and param.multiple and param.opts
    ]


class FlagGroup(TyperGroup):
    """The command group, its `--help` and `--version` shown as flags likewise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _show_as_flag(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _show_as_flag(option)
        return option


def _show_as_flag(param: Any) -> None:
    if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
        param.metavar = ""  # typer shows the metavar, when there is one, instead of the type


CommandFunction = typing.TypeVar("CommandFunction", bound=Callable[..., Any])


class App(typer.Typer):
    """`typer.Typer` whose commands are `FlagCommand`s unless told otherwise."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[CommandFunction], CommandFunction]:
        kwargs.setdefault("cls", FlagCommand)
        return super().command(*args, **kwargs)


app = App(
    cls=FlagGroup,
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
DISK_FULL = "cannot write {where}: {reason}; make room (or lift the limit) and run it again"
TRACE_DB_UNREACHABLE = "the trace database {url} became unreachable ({reason})"
TRACE_DB_FAILED = "the trace database {url} failed ({reason})"
EVAL_RESUMABLE = (
    "; the run stopped, and the predictions written so far are intact: when the database is "
    "back, run the same command again to resume"
)
BAD_TIMEOUT = "--request-timeout must be a positive number of seconds, got {value}"
Preset = Literal["default", "official"]
"""`--preset`: our settings, or `ZoomContext.official` (docs/fidelity.md)."""
AskMethod = Literal["zoom-refine", "baseline", "agent"]
"""`ask --method`: which graph answers (`agent`: the model calls the zoom tool itself)."""
METHOD_HELP = (
    "Which method(s) to run, a comma list: baseline, zoom-refine, agent (model-driven zoom); "
    "both = baseline,zoom-refine."
)

MODEL_PANEL = "Model and image (ZoomContext fields)"


CONTEXT_DEFAULTS: dict[str, Any] = {
    field.name: field.default for field in dataclasses.fields(ZoomContext)
}
"""ZoomContext's defaults: the CLI's defaults are the library's."""


@dataclass(frozen=True)
class ModelOptions:
    """The model and image options of `ask` and `eval`, defined once: `with_model_options` adds
    every field to a command as an option (in its own help panel) and hands the command one
    `ModelOptions`. Each field is the ZoomContext field of the same name, except `api_key`."""

    model: Annotated[
        str,
        typer.Option(
            help="hf:<repo or path> (local transformers), openai:<model> (a server, see "
            "--base-url) or provider:model (LangChain).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = DEFAULT_MODEL
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            help="OpenAI-compatible server URL for openai: models; repeat it for several "
            "servers of the same model (requests are spread over them; a server that fails is "
            f"taken out). Default: ${BASE_URL_ENV} (several: separated by commas).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key for openai: models (default: $OPENAI_API_KEY). Sent with requests "
            "only; never written to config.json, predictions, traces or logs.",
            show_default=False,
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None
    request_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds before a request to a model server times out; timeouts, refused "
            "connections and 5xx are retried (3 attempts), then the sample fails.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["request_timeout"]
    max_hops: Annotated[
        int,
        typer.Option(
            help=f"Most zooms per question, 1..{MAX_HOPS_LIMIT} (1 = the paper).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["max_hops"]
    max_regions: Annotated[
        int,
        typer.Option(
            help=f"Most regions the model may mark per zoom, 1..{MAX_REGIONS_LIMIT} (1 = the paper).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["max_regions"]
    confidence_threshold: Annotated[
        float,
        typer.Option(
            help="Zoom again while the stated confidence is below this (0–1).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["confidence_threshold"]
    always_zoom: Annotated[
        bool,
        typer.Option(
            "--always-zoom",
            help="Zoom again after every refine until --max-hops, whatever the confidence: "
            "every hop recorded, the run `zoom-refine replay` reads.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["always_zoom"]
    prompt_style: Annotated[
        PromptStyle,
        typer.Option(
            help="paper (0–1 boxes) or internvl (<box> 0–1000).", rich_help_panel=MODEL_PANEL
        ),
    ] = CONTEXT_DEFAULTS["prompt_style"]
    box_format: Annotated[
        BoxFormat,
        typer.Option(
            help="Frame of the model's box numbers (auto: detected from the numbers).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["box_format"]
    model_family: Annotated[
        FamilySetting,
        typer.Option(
            help="Box conventions of the model; auto reads a local model's config (set it for "
            "servers: qwen2_5_vl answers in pixels, qwen3_vl in 0–1000).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["model_family"]
    max_patches: Annotated[
        int,
        typer.Option(
            min=0,
            help="InternVL tile budget per image: up to this many 448-px tiles plus a thumbnail "
            "(0 = the processor's own setting). For servers, see --server-tile-budget.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["max_patches"]
    server_tile_budget: Annotated[
        TileBudgetField,
        typer.Option(
            help="Send --max-patches with each server request: transformers (`transformers "
            "serve`), vllm, or none (the server's own setting).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["server_tile_budget"]
    view_max_side: Annotated[
        int,
        typer.Option(
            help="Longest side in pixels of images sent to the model.", rich_help_panel=MODEL_PANEL
        ),
    ] = CONTEXT_DEFAULTS["view_max_side"]
    exact_preprocessing: Annotated[
        bool,
        typer.Option(
            "--exact-preprocessing",
            help="Send full-resolution images and let the model's processor resize them (the "
            "paper's exact pixels; slower). Default: views made once at the processor's input "
            "size.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["exact_preprocessing"]
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="Prompt-set TOML file: every text the model is shown (default: ours; see "
            "docs/prompts.md). `zoom-refine prompts from-official` makes one from the official "
            "code.",
            show_default=False,
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None
    preset: Annotated[
        Preset,
        typer.Option(
            help="default: our settings; official: the official code's pipeline, every "
            "behaviour (docs/fidelity.md; options given on the command line still apply). "
            "Pair it with --prompts from `zoom-refine prompts from-official`.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = "default"

    tool_convention: Annotated[
        ToolConventionName,
        typer.Option(
            help="--method agent: the zoom tool offered (crop: ours; qwen3_vl: Qwen-Agent's "
            "0–1000; deepeyes: pixels; mini_o3: <grounding> 0–1). See docs/agent.md.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["tool_convention"]
    tool_call_format: Annotated[
        ToolCallFormat,
        typer.Option(
            help="--method agent: openai (the server parses tool calls: vLLM "
            "--enable-auto-tool-choice --tool-call-parser hermes), text (<tool_call> in the "
            "reply), auto (text for hf: models).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["tool_call_format"]
    tool_images: Annotated[
        ToolImages,
        typer.Option(
            help="--method agent with openai tool calls: send crop images in a user message "
            "(user; servers refuse them in tool messages) or in the tool message (tool).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = CONTEXT_DEFAULTS["tool_images"]

    def context(self) -> ZoomContext:
        """The run's context: the server URL(s) (else $ZOOM_REFINE_BASE_URL), the API key put where
        `openai:` models read it (never into the context), a positive request timeout."""
        use_api_key(self.api_key)
        settings = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("api_key", "base_url", "request_timeout", "max_patches", "preset")
        }
        return _preset_context(
            self.preset,
            base_url=self.base_url or os.environ.get(BASE_URL_ENV, "").replace(",", " ").split(),
            request_timeout=_positive_timeout(self.request_timeout),
            max_patches=self.max_patches or None,
            **settings,
        )


def _preset_context(preset: Preset, **values: Any) -> ZoomContext:
    """The context of `--preset`: ours, or `ZoomContext.official` with the options set to other
    values than our defaults replacing the preset's (an option at our default keeps the
    preset's value: `--preset official --max-patches 6` tiles to 6, `--max-patches 12` to the
    preset's 12)."""
    if preset == "default":
        return ZoomContext(**values)
    given = {
        name: value
        for name, value in values.items()
        if name not in OFFICIAL_SETTINGS or value != CONTEXT_DEFAULTS.get(name)
    }
    return ZoomContext.official(**given)


def with_model_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` every `ModelOptions` field as an option; it receives them together as its
    `settings` argument. One definition for `ask` and `eval`, so their options cannot drift."""
    hints = typing.get_type_hints(ModelOptions, include_extras=True)
    shared = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in dataclasses.fields(ModelOptions)
    ]
    signature = inspect.signature(command, eval_str=True)
    own = [param for name, param in signature.parameters.items() if name != "settings"]
    clash = {param.name for param in own} & {param.name for param in shared}
    if clash:
        raise TypeError(f"{command.__name__} defines shared model options itself: {sorted(clash)}")
    names = [param.name for param in shared]

    @functools.wraps(command)
    def with_settings(**kwargs: Any) -> None:
        settings = ModelOptions(**{name: kwargs.pop(name) for name in names})
        command(**kwargs, settings=settings)

    parameters = own + shared
    with_settings.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_settings.__annotations__ = {param.name: param.annotation for param in parameters}
    return with_settings


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
            "file, or postgresql://user@host:port/db."
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print each step and crop as it happens.")
    ] = False,
    save_trace: Annotated[
        Path | None,
        typer.Option(help="Folder for overview.png, hop-N.png and trace.json."),
    ] = None,
    method: Annotated[
        AskMethod,
        typer.Option(help="zoom-refine, baseline, or agent (the model calls the zoom tool)."),
    ] = "zoom-refine",
    *,
    settings: ModelOptions,
) -> None:
    """Answer QUESTION about IMAGE: localize, crop at full resolution, refine."""
    from zoom_refine.graphs.registry import METHOD_GRAPHS

    try:
        _check_trace_db(trace_db)  # first: its password is hidden from every message after
        context = settings.context()
        load_image(image, max_pixels=context.max_pixels)  # fail fast, before loading a model
        _check_model(context)
        _check_trace_writable(trace_db)
        live = err if as_json else out
        result = _run(
            image,
            question,
            option or None,
            context,
            trace_db=trace_db,
            on_event=(lambda mode, data: _print_event(live, mode, data)) if stream else None,
            graph=METHOD_GRAPHS[method],
        ).result
        if save_trace is not None:
            _save_pictures(result, image, save_trace)
    except ZoomRefineError as error:
        _fail(str(error))
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        _print_summary(result, option or None)


def _check_model(context: ZoomContext) -> None:
    """Resolve the context's model spec now, before the graph runs or a progress bar starts: a
    spec that cannot work (unknown provider, missing package or key, weights neither cached nor
    downloadable) stops here with one line (`agent.models.check_model_spec`, run by
    `load_chat_model`). An `hf:` model's weights still load on its first call; when the hub
    cannot be reached but the weights are cached, they are used offline (said on stderr)."""
    if not isinstance(context.model, str):
        return
    from huggingface_hub import constants

    was_offline = constants.HF_HUB_OFFLINE
    models.load_chat_model(context.model, **context.model_settings())
    if constants.HF_HUB_OFFLINE and not was_offline:
        err.print(
            f"[dim]the Hugging Face hub cannot be reached: using the cached weights of "
            f"{escape(context.model)} offline[/dim]",
            soft_wrap=True,
        )


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

    tiny.quiet_transformers()
    try:
        started = time.perf_counter()
        with _status(tiny.BUILDING):
            model_path = tiny.demo_model()
        err.print(
            f"tiny model ready in {time.perf_counter() - started:.0f} s: {model_path}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        image, question, options = tiny.demo_inputs(folder)
        context = tiny.demo_context(model_path)
        lines = [f"Question: {question}", "Options: " + ", ".join(options)]
        _print_lines(lines)
        run = _run(image, question, options, context, trace_db=folder / "trace.db")
        _save_pictures(run.result, image, folder, also=(folder / "trace.db",))
    except ZoomRefineError as error:
        _fail(str(error))
    _print_summary(run.result, options)
    _print_lines(["", tiny.NOTE, "", "Next:"])
    _print_lines(
        [
            f"  {folder / 'overview.png'}, {folder / 'hop-1.png'}: the box the model drew, the crop",
            f"  zoom-refine trace {folder / 'trace.db'} {run.thread_id}: every step replayed",
            "  real answers: zoom-refine ask IMAGE QUESTION -o … with --model "
            "hf:OpenGVLab/InternVL3-2B-hf (a 4 GB download), hf:/path/to/checkpoint, or "
            "openai:NAME --base-url URL",
        ]
    )


def _status(message: str) -> Any:
    """A spinner with the elapsed time on stderr while a slow step runs (where stderr is not a
    terminal, the message once instead)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not err.is_terminal:
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        return contextlib.nullcontext()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    progress = Progress(*columns, console=err, transient=True)
    progress.add_task(message, total=None)
    return progress


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        out.print(_printable(line), markup=False, highlight=False, soft_wrap=True)


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
        err.print(
            f"[dim]loading {escape(context.model)} (weights load on first use)…[/dim]",
            soft_wrap=True,
        )
    inputs: InputState = {"image": image, "question": question, "options": options}

    def on_thread(thread_id: str) -> None:
        err.print(
            f"trace: thread {thread_id} in {describe_target(trace_db or '')}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    try:
        return run_graph(
            inputs, context, db=trace_db, on_event=on_event, on_thread=on_thread, graph=graph
        )
    except ZoomRefineError:
        raise
    except Exception as error:  # translate the few library failures a user can fix
        message = _trace_db_message(error, trace_db) or _user_message(error, context)
        if message is None:
            raise
        raise ZoomRefineError(message) from error


def _print_event(console: Console, mode: str, data: Any) -> None:
    """One line per node update, one per crop event."""
    if mode == "custom":
        if isinstance(data, dict) and data.get("event") == "crop":
            view = data.get("view") or {}
            console.print(
                f"event    crop {view.get('id')} box {view.get('box')} from {data.get('source_id')}"
                f" (asked {data.get('requested_box')})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return
    for node, update in (data or {}).items():
        console.print(
            _update_line(node, update or {}), markup=False, highlight=False, soft_wrap=True
        )


def _update_line(node: str, update: dict[str, Any]) -> str:
    from langchain_core.messages import ToolMessage

    views = {view["id"]: view for view in update.get("views") or []}
    records = update.get("steps") or []
    if records:
        return "update   " + "; ".join(_step_line(step, views) for step in records)
    crops = []
    for message in update.get("messages") or []:
        if isinstance(message, ToolMessage):
            artifact = message.artifact if isinstance(message.artifact, dict) else {}
            view = artifact.get("view")
            crops.append(
                f"{view['id']} {view['box']} shown at {view['size']}"
                if view
                else f"— {message.content}"
            )
    if crops:
        return f"update   {node:<8}  " + "; ".join(crops)
    return f"update   {node:<8}  {', '.join(sorted(update))}"


PICTURES_FAILED = "cannot write the pictures to {folder}: {reason}"


def _save_pictures(
    result: dict[str, Any], image: Any, folder: Path, *, also: tuple[Path, ...] = ()
) -> None:
    """overview.png, hop-N.png and trace.json into `folder`, each written over whole or not at
    all: drawn into a hidden folder inside it, then renamed over the old files (a drawing or
    write that fails leaves the pictures of an earlier run as they were)."""
    import shutil
    import tempfile

    from zoom_refine.tools.overlay import save_trace

    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pictures-", dir=folder))
        try:
            made = save_trace(result, image, staging)
            for path in made:
                os.replace(path, folder / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ZoomRefineError(PICTURES_FAILED.format(folder=folder, reason=reason)) from error
    names = [path.name for path in made] + [path.name for path in also]  # `also`: written before
    err.print(
        f"wrote {len(names)} files to {folder}: {', '.join(names)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _user_message(error: Exception, context: ZoomContext) -> str | None:
    """A one-line explanation for errors caused by the environment, or None for our own bugs."""
    import httpx
    import openai

    if isinstance(error, (openai.APIConnectionError, httpx.ConnectError, ConnectionError)):
        urls = context.base_url
        url = ", ".join(urls) if urls and not isinstance(urls, str) else urls
        return SERVER_UNREACHABLE.format(url=url or "the default URL", reason=error)
    if isinstance(error, openai.APIStatusError):
        return f"the model server refused the request: {error}"
    from zoom_refine.evals.store import FULL_DISK_REASONS

    if isinstance(error, OSError) and error.errno in FULL_DISK_REASONS:  # not the model's fault
        where = error.filename or "a file"
        return DISK_FULL.format(where=where, reason=FULL_DISK_REASONS[error.errno or 0])
    if isinstance(error, OSError) and str(context.model).startswith("hf:"):
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return MODEL_UNAVAILABLE.format(spec=context.model, reason=first_line)
    return None


def _positive_timeout(seconds: float) -> float:
    if not seconds > 0:  # also refuses NaN
        raise ZoomRefineError(BAD_TIMEOUT.format(value=seconds))
    return seconds


def _trace_db_message(error: BaseException, trace_db: str | Path | None) -> str | None:
    """One line for a Postgres trace database failing mid-run (stopped, restarted, refusing):
    it became unreachable, or failed; None for any other error. Its password is hidden."""
    if not isinstance(trace_db, str):
        return None
    try:
        import psycopg
    except ImportError:
        return None
    if not isinstance(error, psycopg.Error):
        return None
    from zoom_refine.graphs.trace_postgres import error_reason
    from zoom_refine.graphs.trace_urls import display_url

    lost = isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
    template = TRACE_DB_UNREACHABLE if lost else TRACE_DB_FAILED
    return template.format(url=display_url(trace_db), reason=error_reason(error, trace_db))


_secret_sources: set[str] = set()
"""Connection strings given on this command line (`--trace-db`, `trace DB`): no message printed
through `_fail` holds a password of theirs, whatever formed it."""


def _fail(message: str) -> None:
    from zoom_refine.graphs.trace_urls import redact

    message = _printable(redact(message, *_secret_sources))
    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _printable(text: str) -> str:
    """`text` as a terminal can take it: a lone surrogate (a file name's non-UTF-8 byte, an odd
    value) shown escaped (`\\udcff`) instead of failing the write with UnicodeEncodeError."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _print_summary(result: dict[str, Any], options: list[str] | None = None) -> None:
    """The answer (`A (3)`: the letter and its option's text), one line per step, why it stopped."""
    lettered = normalize_options(options) if options else None
    answer = _answer_text(result.get("answer"), lettered)
    out.print(f"[bold]Answer:[/bold] {escape(answer)}", soft_wrap=True)
    views = {view["id"]: view for view in result.get("views", [])}
    for step in result.get("steps", []):
        out.print(escape(_step_line(step, views, lettered)), soft_wrap=True)
    out.print(f"[dim]stopped: {escape(str(result.get('stop_reason')))}[/dim]")


def _answer_text(answer: Any, options: dict[str, str] | None) -> str:
    """`A (3)` for an option letter, else the answer as it is."""
    if options and isinstance(answer, str) and answer in options:
        return f"{answer} ({options[answer]})"
    return str(answer)


def _step_line(
    step: StepRecord, views: dict[str, ViewRecord], options: dict[str, str] | None = None
) -> str:
    parts = [f"{step['node']:<8}", f"hop {step.get('hop', 0)}"]
    view = views.get(step.get("view") or "")
    if view:
        parts.append(f"{view['id']} {view['box']}")
    return "  ".join(parts + _record_parts(step, usage=False, options=options))


def _record_parts(
    step: StepRecord, *, usage: bool, options: dict[str, str] | None = None
) -> list[str]:
    """What a step record says, in words (answer, box, confidence, usage, time, note)."""
    parts = []
    if step.get("answer") is not None:
        parts.append(f"answer {_answer_text(step.get('answer'), options)}")
    if step.get("box") is not None:
        parts.append(f"box {step.get('box')} ({step.get('box_frame')})")
    if (confidence := step.get("confidence")) is not None:
        parts.append(f"confidence {confidence:.2f}")
    if usage and step.get("usage"):
        counters = step.get("usage") or {}
        parts.append("usage " + " ".join(f"{key}={value}" for key, value in counters.items()))
    if (seconds := step.get("seconds")) is not None:
        parts.append(f"{seconds:.2f} s")
    if step.get("note"):
        parts.append(f"— {step.get('note')}")
    return parts


@app.command("eval")
@with_model_options
def eval_command(
    benchmark: Annotated[Benchmark, typer.Argument(help="Which benchmark the data is.")],
    data: Annotated[Path, typer.Option(help="The benchmark file or folder (layout detected).")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "zoom-refine",
    limit: Annotated[int | None, typer.Option(help="Run at most N samples.")] = None,
    ids: Annotated[Path | None, typer.Option(help="A file of sample ids, one per line.")] = None,
    shard: Annotated[str, typer.Option(help="I/N: this machine's share of the samples.")] = "0/1",
    concurrency: Annotated[int, typer.Option(help="Samples in flight at once.")] = 1,
    out: Annotated[Path, typer.Option(help="Output folder (resumed if it exists).")] = Path(
        "runs/eval"
    ),
    retry_errors: Annotated[
        bool, typer.Option(help="Run again the samples that ended in an error.")
    ] = False,
    bad_rows: Annotated[
        Literal["wrong", "skip"],
        typer.Option(help="Malformed dataset rows: wrong (counted) or skip."),
    ] = "wrong",
    extractor: Annotated[
        Extractor,
        typer.Option(
            help="Answer extraction for scoring: strict (ours), official (the benchmark's "
            "rule), official-baseline (the Zoom-Refine repo's eval_acc.py: first A-E letter; a "
            "failure reads as its 'Error: …' text) or official-zoomrefine (each method by its "
            "own official script: zoomrefine_acc.py for Zoom-Refine records)."
        ),
    ] = "strict",
    skip_unanswered: Annotated[
        bool,
        typer.Option(
            "--skip-unanswered",
            help="Leave records without a first answer out of the accuracy, as the official "
            "scripts do (with strict/official also errors; the official extractors count "
            "failures as the scripts do). Default: they count as wrong.",
        ),
    ] = False,
    trace_db: Annotated[
        str | None,
        typer.Option(
            help="Also checkpoint every run into this trace database: a SQLite file, or "
            "postgresql://user@host:port/db (shards on several machines can share it)."
        ),
    ] = None,
    resume_anyway: Annotated[
        bool,
        typer.Option(
            "--resume-anyway",
            help="Resume into --out even if its config.json records another model or other "
            "result-changing settings (refused otherwise); config.json keeps the earlier ones.",
        ),
    ] = False,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=V1,V2[,…] (repeatable; a result-changing setting, model or prompts): run "
            "every combination into its own folder under --out, listed in experiment.json "
            "(docs/experiments.md).",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Run a --grid of more than 64 cells.")] = False,
    *,
    settings: ModelOptions,
) -> None:
    """Run a benchmark, resumably: predictions.jsonl as it goes, summary.json and a table at the end."""
    from zoom_refine.evals.run_lock import hold_run_lock
    from zoom_refine.evals.runner import (
        EvalPlan,
        check_resume,
        parse_methods,
        parse_shard,
        run_eval,
    )
    from zoom_refine.evals.store import storage_errors
    from zoom_refine.evals.tables import format_table

    try:
        plan = EvalPlan(
            benchmark=benchmark,
            data=data,
            out=out,
            methods=parse_methods(method),
            limit=limit,
            ids=_read_ids(ids) if ids else None,
            shard=parse_shard(shard),
            concurrency=max(1, concurrency),
            retry_errors=retry_errors,
            bad_rows=bad_rows,
            extractor=extractor,
            skip_unanswered=skip_unanswered,
            trace_db=_check_trace_db(trace_db),
            resume_anyway=resume_anyway,
        )
        context = settings.context()
        if not data.exists():
            raise ZoomRefineError(f"dataset not found: {data} (check --data)")
        _check_dataset(plan)
        _check_model(context)
        _check_trace_writable(plan.trace_db)
        if grid:
            _print_lines(_run_grid(grid, yes, plan, context))
            return
        with storage_errors(plan.out), hold_run_lock(plan.out):  # refused before the progress bar
            check_resume(plan, context)  # other settings than the folder's: refused here too
            summary = _run_with_progress(plan, context, run_eval)
    except ZoomRefineError as error:
        _fail(str(error))
    out_console = Console()
    out_console.print(format_table(summary), markup=False, highlight=False)
    out_console.print(f"predictions: {plan.out / 'predictions.jsonl'}", markup=False)


def _run_grid(grid: list[str], yes: bool, plan: Any, context: ZoomContext) -> list[str]:
    """`eval --grid`: every cell a run of its own, locked and resumed as one `eval` is."""
    from zoom_refine.cli_experiments import run_grid_from_cli
    from zoom_refine.evals.run_lock import hold_run_lock
    from zoom_refine.evals.runner import run_eval
    from zoom_refine.evals.store import storage_errors

    def run_cell(cell_plan: Any, cell_context: ZoomContext) -> dict[str, Any]:
        with storage_errors(cell_plan.out), hold_run_lock(cell_plan.out):
            return _run_with_progress(cell_plan, cell_context, run_eval)

    with storage_errors(plan.out):
        return run_grid_from_cli(grid, yes, plan, context, run_cell)


def _check_trace_db(value: str | None) -> str | Path | None:
    """`--trace-db` as a SQLite path or a Postgres URL; any other URL is refused here, in one
    line, before a model loads (`graphs.trace_urls.trace_target`). Its password, if any, is
    hidden from every error message from now on (`_fail`)."""
    from zoom_refine.graphs.trace_urls import trace_target

    if value is None:
        return None
    _secret_sources.add(value)
    return trace_target(value)


def _check_trace_writable(target: str | Path | None) -> None:
    """Open a Postgres trace database for writing once and close it, before a model loads, the
    run folder is locked or config.json written: an unreachable database, or one that refuses
    the user its tables, stops the run here with one line and nothing written. (A SQLite file is
    made by the run itself, in a folder it creates.)"""
    if not isinstance(target, str):
        return
    from zoom_refine.graphs.traces import open_saver

    with open_saver(target, create=True):
        pass


def _check_dataset(plan: Any) -> None:
    """Refuse an unusable dataset file (wrong format, missing columns, empty) before the progress
    bar starts, so the error is the only line on stderr. The loader checks the layout when it is
    called, before yielding; nothing is iterated here."""
    from zoom_refine.evals.loaders import load_samples

    samples = load_samples(plan.benchmark, plan.data)
    close = getattr(samples, "close", None)
    if close is not None:
        close()


def _read_ids(path: Path) -> frozenset[str]:
    if not path.is_file():
        raise ZoomRefineError(f"ids file not found: {path}")
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


def _warn_once(console: Console) -> Callable[[str], None]:
    """The eval's warnings (e.g. a model that never calls a tool), printed above the bar."""

    def warn(message: str) -> None:
        console.print(f"warning: {message}", markup=False)

    return warn


def _run_with_progress(plan: Any, context: ZoomContext, run_eval: Any) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    total = plan.limit * len(plan.methods) if plan.limit else None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "acc {task.fields[accuracy]:.1%}  {task.fields[rate]:.2f}/s  errors {task.fields[errors]}"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(plan.benchmark, total=total, accuracy=0.0, rate=0.0, errors=0)

        def on_record(record: dict[str, Any], progress: Any) -> None:
            elapsed = max(time.perf_counter() - progress.started, 1e-9)
            bar.update(
                task,
                advance=1,
                accuracy=progress.accuracy,
                rate=progress.finished / elapsed,
                errors=progress.errors,
            )

        try:
            warn = _warn_once(bar.console)
            return dict(run_eval(plan, context, on_record=on_record, on_warning=warn))
        except Exception as error:
            lost = _trace_db_message(error.__cause__ or error, plan.trace_db)
            if lost is not None:  # not "free space": the database went away
                raise ZoomRefineError(lost + EVAL_RESUMABLE) from error
            message = _user_message(error, context)
            if message is None:
                raise
            raise ZoomRefineError(message) from error


@app.command("report")
def report_command(
    folders: Annotated[list[Path], typer.Argument(help="Run folders (shards are merged).")],
    skip_unanswered: Annotated[
        bool | None,
        typer.Option(
            "--skip-unanswered/--count-unanswered",
            help="Leave records without a first answer (and errors) out of the accuracy, as the "
            "official scripts do, or count them wrong. Default: as the run was made.",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="An experiment folder's cell that McNemar's paired test compares every other "
            "cell against (default: the first).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Accuracy per method and category; writes report.md and report.html (one offline page).
    On an experiment folder (`eval --grid`): one page for every cell, results.csv/.parquet."""
    from zoom_refine.cli_experiments import is_experiment_folder, report_experiment_from_cli
    from zoom_refine.evals.report import write_report

    if len(folders) == 1 and is_experiment_folder(folders[0]):
        try:
            _print_lines(report_experiment_from_cli(folders[0], reference))
        except ZoomRefineError as error:
            _fail(str(error))
        return
    try:
        table, markdown, page = write_report(folders, skip_unanswered=skip_unanswered)
    except ZoomRefineError as error:
        _fail(str(error))
    console = Console()
    console.print(table, markup=False, highlight=False)
    console.print(f"wrote {markdown} and {page}", markup=False)


@app.command("trace")
def trace_command(
    db: Annotated[
        str,
        typer.Argument(
            help="Trace database written by `ask`/`eval --trace-db`: a SQLite file, or "
            "postgresql://user@host:port/db."
        ),
    ],
    thread: Annotated[
        str | None,
        typer.Argument(
            help="A run's thread id, or an eval sample's METHOD:ID (its latest run): show it "
            "step by step."
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(help="With THREAD: write overview.png, hop-N.png and trace.json here."),
    ] = None,
) -> None:
    """List the runs in DB, or show run THREAD step by step (oldest first)."""
    from zoom_refine.graphs.trace_urls import describe_target
    from zoom_refine.graphs.traces import check_trace_image, list_runs, read_trace, sample_runs

    console = Console(highlight=False)
    try:
        _check_trace_db(db)  # first: its password is hidden from every message after
        if thread is None:
            if save is not None:
                raise ZoomRefineError(
                    "--save needs a THREAD (list them with `zoom-refine trace DB`)"
                )
            runs = list_runs(db)
            for run in runs:
                console.print(
                    f"{run.thread_id}  {run.started}  {run.question!r}  → {run.answer}"
                    f"  ({run.stop_reason})",
                    markup=False,
                    soft_wrap=True,
                )
            if not runs:
                console.print(f"no runs in {describe_target(db)}", markup=False)
            return
        trace = read_trace(db, thread, images=False)
        if trace.thread_id != thread:  # an eval sample's key: its latest run is shown
            count = len(sample_runs(db, thread))
            console.print(
                f"run {trace.thread_id} (the latest of {count} of {thread})", markup=False
            )
        for step in trace.steps:
            console.print(_trace_step_text(step), markup=False, soft_wrap=True)
        state = trace.state
        console.print(
            f"answer {state.get('answer')}  stopped: {state.get('stop_reason')}", markup=False
        )
        if save is not None:
            check_trace_image(state, trace.thread_id)
            _save_pictures(state, state["image"], save)
    except ZoomRefineError as error:
        _fail(str(error))
    except Exception as error:  # a Postgres trace database lost while reading
        message = _trace_db_message(error, db)
        if message is None:
            raise
        _fail(message)


def _trace_step_text(step: TraceStep) -> str:
    parts = [f"step {step.step}", f"{step.node:<8}", step.time]
    record = step.record or StepRecord(node=step.node, hop=0, raw=None)
    if record.get("view"):
        parts.append(f"view {record.get('view')} {step.view_box}")
    parts += _record_parts(record, usage=True)
    lines = ["  ".join(parts)]
    if (raw := record.get("raw")) is not None:
        lines.extend("    | " + line for line in raw.splitlines() or [""])
    return "\n".join(lines)


prompts_app = App(
    cls=FlagGroup,
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
        _fail(str(error))
    used = official.placeholders()
    lines = [f"wrote {path}"]
    for name, key in official.keys.items():
        shown = ", ".join(f"{{{p}}}" for p in used[name]) or "no placeholders"
        lines.append(f"  {name} ← prompts[{key!r}] ({shown})")
    _print_lines(lines)


def _register_command_modules() -> None:
    """Commands that live in their own modules (one concern each) join the app here."""
    from zoom_refine import cli_experiments, cli_mcp, cli_official

    for module in (cli_official, cli_mcp, cli_experiments):
        module.register(app)


_register_command_modules()
