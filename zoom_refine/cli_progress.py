"""What the commands show while they work: a spinner for slow steps, our own line for a model
load (transformers' bars and warnings silenced), and `eval`'s progress bar with its total."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

from zoom_refine.agent.context import ZoomContext
from zoom_refine.cli_errors import EVAL_RESUMABLE, trace_db_message, user_message
from zoom_refine.cli_render import err, say
from zoom_refine.tools.errors import ZoomRefineError

if TYPE_CHECKING:
    from zoom_refine.evals.runner import EvalPlan

RATE_COLUMN = (
    "acc {task.fields[accuracy]:.1%}  {task.fields[rate]:.2f}/s  errors {task.fields[errors]}"
)


def status(message: str) -> Any:
    """A spinner with the elapsed time on stderr while a slow step runs (where stderr is not a
    terminal, the message once instead)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not err.is_terminal:
        say(message)
        return contextlib.nullcontext()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    progress = Progress(*columns, console=err, transient=True)
    progress.add_task(message, total=None)
    return progress


def quiet_transformers() -> None:
    """No transformers progress bars ("Loading weights", "Loading checkpoint shards") and only
    its errors: our own status line says what loads. (Hub download bars stay: a first download
    of gigabytes should show that it moves.)"""
    from transformers.utils import logging

    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def load_model_now(context: ZoomContext) -> None:
    """Load an in-process (`hf:`) model's weights before a progress bar starts, under one status
    line, and say how long it took; a server or API model has nothing to load. A load that fails
    for a reason the user can fix becomes one line (`user_message`)."""
    from zoom_refine.agent.local.model import LocalVisionChatModel
    from zoom_refine.agent.models import load_chat_model

    model = context.model
    if isinstance(model, str):
        model = load_chat_model(model, **context.model_settings())
    if not isinstance(model, LocalVisionChatModel) or model.loaded() is not None:
        return
    quiet_transformers()
    started = time.perf_counter()
    try:
        with status(f"loading {context.model} …"):
            model.load()
    except Exception as error:
        message = user_message(error, context)
        if message is None:
            raise
        raise ZoomRefineError(message) from error
    say(f"loaded {context.model} in {time.perf_counter() - started:.1f} s")


def planned(plan: EvalPlan) -> tuple[int, int] | None:
    """(records the plan will have when done, records already in its folder) for the progress
    bar: the selected rows (`--ids`, `--shard`, `--limit`) times the methods, bad rows counted only
    when they are recorded (`--bad-rows wrong`), errors not done with `--retry-errors`. None when
    the dataset cannot be read here (the run itself then says why)."""
    from zoom_refine.evals.loaders import load_samples
    from zoom_refine.evals.runner import select
    from zoom_refine.evals.samples import BadRow
    from zoom_refine.evals.store import PredictionStore

    store = PredictionStore(plan.out / "predictions.jsonl", read_only=True)

    def done(key: tuple[str, str]) -> bool:
        if not store.done(key):
            return False
        return not (plan.retry_errors and store.records[key].get("status") == "error")

    total = finished = 0
    try:
        for row in select(plan, load_samples(plan.benchmark, plan.data)):
            for method in plan.methods:
                key = (row.id, method)
                recorded = done(key)
                if isinstance(row, BadRow) and plan.bad_rows == "skip" and not recorded:
                    continue
                total += 1
                finished += recorded
    except (ZoomRefineError, OSError):
        return None
    return total, finished


def run_with_progress(plan: EvalPlan, context: ZoomContext, run_eval: Any) -> dict[str, Any]:
    """`run_eval(plan, context)` under a progress bar on stderr (done/total, accuracy, rate,
    errors, time left), the model loaded first; warnings printed above the bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    load_model_now(context)
    counts = planned(plan)
    total, finished = counts if counts is not None else (None, 0)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(RATE_COLUMN),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(
            plan.benchmark, total=total, completed=finished, accuracy=0.0, rate=0.0, errors=0
        )

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
            warn = _warn(bar.console)
            return dict(run_eval(plan, context, on_record=on_record, on_warning=warn))
        except Exception as error:
            lost = trace_db_message(error.__cause__ or error, plan.trace_db)
            if lost is not None:  # not "free space": the database went away
                raise ZoomRefineError(lost + EVAL_RESUMABLE) from error
            message = user_message(error, context)
            if message is None:
                raise
            raise ZoomRefineError(message) from error


def _warn(console: Console) -> Callable[[str], None]:
    """The eval's warnings (e.g. a model that never calls a tool), printed above the bar."""

    def warn(message: str) -> None:
        console.print(f"warning: {message}", markup=False)

    return warn
