"""`zoom-refine` commands for experiments: registered on the main app by `register`.

- `data synth OUT.tsv --n N`: an offline HR-Bench TSV whose answers need a zoom (`evals.synth`).
- `replay RUN --max-hops 1,2,3 --confidence-threshold 0.5,0.7,0.9 [--json]`: every stopping
  rule's figures from one `--always-zoom` run, no model call (`evals.replay`).

`eval --grid` (`zoom_refine.cli_eval`) and `report EXP` (`zoom_refine.cli_results`) call
`run_grid_from_cli` and `report_experiment_from_cli` here (never importing `zoom_refine.cli`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from zoom_refine.cli_app import App
from zoom_refine.tools.errors import ZoomRefineError

EXIT_USER_ERROR = 2
EXISTS = "{path} exists; pass --force to overwrite it"
err = Console(stderr=True)

data_app = App(
    no_args_is_help=True,
    help="Datasets for offline experiments.",
)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _say(line: str) -> None:
    Console(highlight=False).print(line, markup=False, soft_wrap=True)


@data_app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Argument(help="The TSV file to write (HR-Bench format).")],
    n: Annotated[int, typer.Option("--n", help="Number of rows (questions).")],
    side: Annotated[int, typer.Option(help="Image width in pixels (height is 3/4 of it).")] = 4096,
    target_px: Annotated[
        int, typer.Option(help="Size of the target (text, marker, dots) in pixels.")
    ] = 24,
    seed: Annotated[int, typer.Option(help="Same seed, same file.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write an HR-Bench TSV of scenes whose answer is legible only at full resolution.

    Columns: index, question, A-D, answer, category, cycle_category (the target kind),
    target_box (x1, y1, x2, y2 in pixels of the original) and image (base64 PNG).
    Run it with `zoom-refine eval hr-bench --data OUT`."""
    from zoom_refine.evals.synth import write_synth_tsv

    try:
        if out.exists() and not force:
            raise ZoomRefineError(EXISTS.format(path=out))
        write_synth_tsv(out, n, side=side, target_px=target_px, seed=seed)
    except ZoomRefineError as error:
        _fail(str(error))
    _say(f"wrote {out}: {n} rows, {side} x {side * 3 // 4} px, targets of about {target_px} px")


def replay_command(
    run: Annotated[Path, typer.Argument(help="A run folder made with --always-zoom.")],
    max_hops: Annotated[
        str | None,
        typer.Option(help="Hop limits to replay, a comma list (default: 1 to the run's)."),
    ] = None,
    confidence_threshold: Annotated[
        str, typer.Option(help="Thresholds to replay, a comma list of numbers in 0-1.")
    ] = "0.5,0.7,0.9",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON list.")] = False,
) -> None:
    """Every (max_hops, threshold) cell's accuracy, model calls, tokens and seconds, replayed
    with no model call from one run made with `eval --max-hops H --always-zoom`.

    Exact for deterministic decoding; a note on stderr says when the run's settings make it not
    so (docs/experiments.md)."""
    from zoom_refine.evals.replay import parse_hops, parse_thresholds, replay_run

    try:
        hops = parse_hops(max_hops) if max_hops is not None else None
        replay = replay_run(run, hops, parse_thresholds(confidence_threshold))
    except ZoomRefineError as error:
        _fail(str(error))
    for note in replay.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps([row.as_json() for row in replay.rows], indent=2))
        return
    for line in replay_table(replay.rows):
        _say(line)


def replay_table(rows: Sequence[Any]) -> list[str]:
    """The replay rows as aligned text lines, a header first."""
    header = ("method", "max_hops", "threshold", "accuracy", "correct", "calls", "prompt tok",
              "completion tok", "seconds")  # fmt: skip
    table = [header] + [
        (
            row.method,
            str(row.max_hops),
            f"{row.confidence_threshold:g}",
            f"{row.accuracy:.1%}",
            f"{row.correct}/{row.total}",
            str(row.model_calls),
            str(row.prompt_tokens),
            str(row.completion_tokens),
            f"{row.seconds:.1f}",
        )
        for row in rows
    ]
    widths = [max(len(line[index]) for line in table) for index in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in table]  # fmt: skip


def run_grid_from_cli(
    grid_values: Sequence[str],
    yes: bool,
    plan: Any,
    context: Any,
    run_cell: Callable[[Any, Any], dict[str, Any]],
) -> list[str]:
    """`eval --grid`: run every cell of `grid_values` (the `--grid` options, `NAME=V1,V2`) with
    `run_cell(cell_plan, cell_context)` (the CLI's progress-bar runner), each into
    `plan.out/<cell name>`; `yes` allows more than 64 cells. Returns the lines to print (one
    per cell × method). Raises ZoomRefineError (one line) for a bad grid before anything runs."""
    from zoom_refine.evals.grid import run_grid

    def announce(cell: Any, number: int, count: int) -> None:
        err.print(f"cell {number}/{count}: {cell.name}", markup=False, highlight=False)

    finished = run_grid(plan, context, grid_values, yes=yes, run=run_cell, on_cell=announce)
    lines = []
    for item in finished:
        for method, figures in _method_figures(item.summary):
            lines.append(f"{item.cell.name}  {method}: {figures}")
    lines.append(f"experiment: {plan.out / 'experiment.json'} (zoom-refine report {plan.out})")
    return lines


def _method_figures(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, `accuracy 61.2% (49/80)`) for each method of a run's summary.json."""
    figures = []
    for method, group in (summary.get("methods") or {}).items():
        overall = (group.get("groups") or {}).get("overall") if isinstance(group, dict) else None
        if not isinstance(overall, dict):
            continue
        accuracy = overall.get("accuracy")
        shown = f"{accuracy:.1%}" if isinstance(accuracy, (int, float)) else "—"
        figures.append(
            (str(method), f"accuracy {shown} ({overall.get('correct')}/{overall.get('total')})")
        )
    return figures


def is_experiment_folder(folder: Path) -> bool:
    """Whether `report FOLDER` should write the experiment page (`report_experiment_from_cli`)
    rather than one run's report: it holds experiment.json, or run sub-folders and no
    predictions of its own."""
    from zoom_refine.evals.grid import is_experiment

    return is_experiment(folder)


def report_experiment_from_cli(folder: Path, reference: str | None = None) -> list[str]:
    """`report EXP`: write EXP/report.html (every cell side by side), frontier.png,
    results.csv and results.parquet; returns the lines to print. `reference`: the cell
    McNemar's test compares against (default: the first). Raises ZoomRefineError (one line)."""
    from zoom_refine.evals.experiment_report import write_experiment_report

    report = write_experiment_report(folder, reference=reference)
    return [
        *report.lines,
        f"wrote {report.page}, {report.frontier_png}, {report.results_csv} and "
        f"{report.results_parquet}",
    ]


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app` (called once by zoom_refine.cli)."""
    app.add_typer(data_app, name="data")
    app.command("replay")(replay_command)
