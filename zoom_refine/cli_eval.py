"""`zoom-refine eval BENCHMARK --data FILE`: a benchmark run, resumable; registered by `register`.

Everything that can be refused (options, the dataset, the model spec, the trace database, a
resume with other settings) is refused before the progress bar starts or anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from zoom_refine.agent.context import ZoomContext
from zoom_refine.cli_app import App
from zoom_refine.cli_errors import check_model, check_trace_db, check_trace_writable, fail
from zoom_refine.cli_options import ModelSettings, with_model_options
from zoom_refine.cli_progress import run_with_progress
from zoom_refine.cli_render import print_lines
from zoom_refine.evals.runner import METHODS
from zoom_refine.evals.samples import Benchmark
from zoom_refine.evals.scoring import Extractor
from zoom_refine.tools.errors import ZoomRefineError

METHOD_METAVAR = f"[{'|'.join(METHODS)}]"
"""`--method`'s choices: the runner's, which are the registered methods and `both`."""
METHOD_HELP = (
    "Which method to run; several as a comma list (e.g. baseline,agent). "
    f"both = {','.join(METHODS['both'])}; agent: the model calls the zoom tool itself."
)


def _methods(value: str) -> str:
    """`--method` checked while the command line is parsed: a usage error (exit 2) naming the
    choices, before anything runs."""
    from zoom_refine.evals.runner import parse_methods

    try:
        parse_methods(value)
    except ZoomRefineError as error:
        raise typer.BadParameter(str(error).removeprefix("--method ")) from None
    return value


@with_model_options
def eval_command(
    benchmark: Annotated[Benchmark, typer.Argument(help="Which benchmark the data is.")],
    data: Annotated[Path, typer.Option(help="The benchmark file or folder (layout detected).")],
    method: Annotated[
        str,
        typer.Option(
            help=METHOD_HELP,
            metavar=METHOD_METAVAR,
            callback=_methods,
            autocompletion=lambda: list(METHODS),
        ),
    ] = "zoom-refine",
    limit: Annotated[int | None, typer.Option(help="Run at most N samples.", metavar="N")] = None,
    ids: Annotated[
        Path | None, typer.Option(help="A file of sample ids, one per line.", metavar="FILE")
    ] = None,
    shard: Annotated[
        str, typer.Option(help="I/N: this machine's share of the samples.", metavar="I/N")
    ] = "0/1",
    concurrency: Annotated[int, typer.Option(help="Samples in flight at once.")] = 1,
    out: Annotated[
        Path, typer.Option(help="Output folder (resumed if it exists).", metavar="FOLDER")
    ] = Path("runs/eval"),
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
            "postgresql://user@host:port/db (shards on several machines can share it).",
            metavar="DB",
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
            metavar="NAME=V1,V2",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Run a --grid of more than 64 cells.")] = False,
    *,
    settings: ModelSettings,
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
            trace_db=check_trace_db(trace_db),
            resume_anyway=resume_anyway,
        )
        context = settings.context()
        if not data.exists():
            raise ZoomRefineError(f"dataset not found: {data} (check --data)")
        _check_dataset(plan)
        check_model(context)
        check_trace_writable(plan.trace_db)
        if grid:
            print_lines(_run_grid(grid, yes, plan, context))
            return
        with storage_errors(plan.out), hold_run_lock(plan.out):  # refused before the progress bar
            check_resume(plan, context)  # other settings than the folder's: refused here too
            summary = run_with_progress(plan, context, run_eval)
    except ZoomRefineError as error:
        fail(str(error))
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
            return run_with_progress(cell_plan, cell_context, run_eval)

    with storage_errors(plan.out):
        return run_grid_from_cli(grid, yes, plan, context, run_cell)


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


def register(app: App) -> None:
    """Add `zoom-refine eval` to `app` (called once by zoom_refine.cli)."""
    app.command("eval")(eval_command)
