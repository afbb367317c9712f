"""`zoom-refine report` and `zoom-refine trace`: what finished runs left, read back.

`report FOLDER…` scores eval run folders (or an experiment folder) into report.md/.html;
`trace DB [THREAD]` lists the runs in a trace database or replays one step by step. Registered on
the main app by `register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zoom_refine.cli_app import App
from zoom_refine.cli_errors import check_trace_db, fail, trace_db_message
from zoom_refine.cli_render import print_lines, save_pictures, trace_step_text
from zoom_refine.tools.errors import ZoomRefineError


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
            print_lines(report_experiment_from_cli(folders[0], reference))
        except ZoomRefineError as error:
            fail(str(error))
        return
    try:
        table, markdown, page = write_report(folders, skip_unanswered=skip_unanswered)
    except ZoomRefineError as error:
        fail(str(error))
    console = Console()
    console.print(table, markup=False, highlight=False)
    console.print(f"wrote {markdown} and {page}", markup=False)


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
        check_trace_db(db)  # first: its password is hidden from every message after
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
            console.print(trace_step_text(step), markup=False, soft_wrap=True)
        state = trace.state
        console.print(
            f"answer {state.get('answer')}  stopped: {state.get('stop_reason')}", markup=False
        )
        if save is not None:
            check_trace_image(state, trace.thread_id)
            save_pictures(state, state["image"], save)
    except ZoomRefineError as error:
        fail(str(error))
    except Exception as error:  # a Postgres trace database lost while reading
        message = trace_db_message(error, db)
        if message is None:
            raise
        fail(message)


def register(app: App) -> None:
    """Add `report` and `trace` to `app` (called once by zoom_refine.cli)."""
    app.command("report")(report_command)
    app.command("trace")(trace_command)
