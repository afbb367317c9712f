"""The resumable, parallel benchmark runner behind `zoom-refine eval`.

Samples stream from the loader; up to `concurrency` (sample, method) runs are in flight at once in
threads (each a `graph.invoke`; a local model micro-batches concurrent calls); every finished run
is appended to `predictions.jsonl` at once. Running the same command again skips what is done.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.tool_conventions import TOOL_CONVENTIONS
from zoom_refine.agent.view_cost import budget_warning
from zoom_refine.evals.loaders import dataset_fingerprint, load_samples
from zoom_refine.evals.prompts import benchmark_prompt, official_prompt, official_question
from zoom_refine.evals.records import (
    Method,
    PredictionRecord,
    bad_row_record,
    error_record,
    result_record,
)
from zoom_refine.evals.run_config import prompt_set_settings, resumed_config, write_config_file
from zoom_refine.evals.run_lock import hold_run_lock
from zoom_refine.evals.samples import BadRow, Benchmark, Sample
from zoom_refine.evals.scoring import Extractor, summarize
from zoom_refine.evals.store import FULL_DISK_REASONS, PredictionStore, replace_json, storage_errors
from zoom_refine.graphs.registry import METHOD_GRAPHS, graph_named
from zoom_refine.graphs.traces import GRAPH_KEY, is_trace_store_error, open_saver
from zoom_refine.tools.errors import InvalidInputError, StorageError

METHODS: dict[str, tuple[Method, ...]] = {
    "zoom-refine": ("zoom-refine",),
    "baseline": ("baseline",),
    "agent": ("agent",),
    "both": ("baseline", "zoom-refine"),
}
"""Each name `--method` takes (a comma list of them, `parse_methods`) and the methods it runs:
`zoom-refine`, `baseline`, `agent` (model-driven zoom, `graphs.agent`), `both` = the first two."""
BAD_METHOD = "--method takes a comma list of {known}; got {value!r}"


def parse_methods(value: str) -> tuple[Method, ...]:
    """`baseline,zoom-refine,agent` → the methods in that order, each once (`both` expands)."""
    methods: list[Method] = []
    for name in (part.strip() for part in value.split(",")):
        if name not in METHODS:
            raise InvalidInputError(BAD_METHOD.format(known=", ".join(METHODS), value=value))
        methods.extend(method for method in METHODS[name] if method not in methods)
    return tuple(methods)


BAD_SHARD = "--shard must be I/N with 0 <= I < N (e.g. 0/4), got {value!r}"


@dataclass(kw_only=True)
class EvalPlan:
    """What to run: which benchmark file, which samples, which methods, where to write."""

    benchmark: Benchmark
    data: Path
    out: Path
    methods: tuple[Method, ...] = ("zoom-refine",)
    limit: int | None = None
    ids: frozenset[str] | None = None
    shard: tuple[int, int] = (0, 1)
    concurrency: int = 1
    retry_errors: bool = False
    bad_rows: Literal["skip", "wrong"] = "wrong"
    extractor: Extractor = "strict"
    skip_unanswered: bool = False
    """Score as the official scripts do: records without a first answer leave the denominator
    (`evals.scoring`; off: they count as wrong)."""
    trace_db: str | Path | None = None
    """Also checkpoint every run into this trace database (a SQLite file, or a `postgresql://`
    URL: `graphs.trace_urls.trace_target`), each run in a new thread
    (`run_thread_id`: `<method>:<id>:<uuid>`, recorded as the prediction's `thread_id`), for
    `zoom-refine trace`."""
    resume_anyway: bool = False
    """Resume into `out` even when its config.json records other result-changing settings (a
    different model, --max-hops, dataset, …; see `evals.run_config`): the new predictions join
    the old ones, and config.json keeps the earlier settings in `previous_configs`. Off, such a
    run is refused before it writes anything."""
    _fingerprint: tuple[tuple[Path, int, int], str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """((data, size, mtime), its `dataset_fingerprint`): the CLI checks the settings before its
    progress bar and `run_eval` again, and a large dataset takes seconds to hash, so the second
    reuses the first's; `run_eval` then forgets it (a plan run again hashes again)."""

    def dataset_sha256(self) -> str:
        """`dataset_fingerprint(data)`, reused while `data`'s size and mtime are unchanged."""
        try:
            status = self.data.stat()
            key = (self.data, status.st_size, status.st_mtime_ns)
        except OSError:
            return dataset_fingerprint(self.data)  # its own error names the path
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, dataset_fingerprint(self.data))
        return self._fingerprint[1]


@dataclass
class Progress:
    """Running counts for the progress bar, and the warnings said so far (`run_eval`'s
    `on_warning` hears each once as it is found)."""

    finished: int = 0
    correct: int = 0
    errors: int = 0
    started: float = field(default_factory=time.perf_counter)
    warnings: list[str] = field(default_factory=list)

    def add(self, record: Mapping[str, Any]) -> None:
        self.finished += 1
        self.correct += int(bool(record.get("correct")))
        self.errors += int(record.get("status") == "error")

    @property
    def accuracy(self) -> float:
        return self.correct / self.finished if self.finished else 0.0


def parse_shard(value: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError as error:
        raise InvalidInputError(BAD_SHARD.format(value=value)) from error
    if not 0 <= index < count:
        raise InvalidInputError(BAD_SHARD.format(value=value))
    return index, count


def select(plan: EvalPlan, rows: Iterable[Sample | BadRow]) -> Iterator[Sample | BadRow]:
    """Apply --ids, --shard (every N-th row from I, in file order) and --limit."""
    taken = 0
    shard_index, shard_count = plan.shard
    for position, row in enumerate(rows):
        if position % shard_count != shard_index:
            continue
        if plan.ids is not None and row.id not in plan.ids:
            continue
        if plan.limit is not None and taken >= plan.limit:
            return
        taken += 1
        yield row


NO_TOOL_CALL_SAMPLES = 3
"""How many finished agent samples with neither a tool call nor a readable answer, and nothing
else yet, make `run_eval` say the model ignores the tool convention."""
IGNORES_CONVENTION = (
    "the model made no tool call and gave no readable answer in its first {count} agent samples: "
    "it does not seem to follow the tool convention {convention!r} with {call_format} tool calls; "
    "try another --tool-convention ({conventions}) or --tool-call-format (openai, text)"
)


@dataclass
class ConventionWatch:
    """Finds, once, an agent run whose model ignores the tool convention: its first
    `NO_TOOL_CALL_SAMPLES` finished agent samples made no tool call and gave no answer the
    parser could read (every answer "unparsed"). A model that follows the convention at all in
    those samples is never warned about."""

    context: ZoomContext
    seen: int = 0
    silent: int = 0
    warning: str | None = None

    def add(self, record: Mapping[str, Any]) -> str | None:
        """Count one finished record; the warning when this record completes the pattern."""
        if record.get("method") != "agent" or record.get("status") != "ok":
            return None
        if self.seen >= NO_TOOL_CALL_SAMPLES:
            return None
        self.seen += 1
        steps = record.get("steps") or []
        calls = any(step.get("tool_calls") for step in steps if isinstance(step, dict))
        self.silent += int(not calls and record.get("answer") is None)
        if self.seen == NO_TOOL_CALL_SAMPLES and self.silent == self.seen:
            call_format = self.context.tool_call_format
            self.warning = IGNORES_CONVENTION.format(
                count=self.seen,
                convention=self.context.tool_convention,
                call_format="text" if call_format == "text" else f"{call_format!r}",
                conventions=", ".join(TOOL_CONVENTIONS),
            )
            return self.warning
        return None


@dataclass
class BudgetWatch:
    """Says once that a pixel budget starves the first view (`agent.view_cost.budget_warning`):
    the first finished record whose first view is under 1,000 px on its long side for an image
    over 3,000 px."""

    warned: bool = False

    def add(self, record: Mapping[str, Any]) -> str | None:
        if self.warned or record.get("status") != "ok":
            return None
        warning = budget_warning(record)
        self.warned = warning is not None
        return warning


def run_eval(
    plan: EvalPlan,
    context: ZoomContext,
    *,
    on_record: Callable[[dict[str, Any], Progress], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the plan to the end (resuming), then write and return the summary. The run folder is
    locked meanwhile (one writer at a time: `RunFolderBusyError`), and a write that fails for lack
    of room stops the run as a one-line `StorageError` (the records before it are kept).
    `on_warning` hears, once each, what the user should know while the run goes on (a model that
    ignores the agent's tool convention, `ConventionWatch`); the summary keeps them under
    `warnings`."""
    with storage_errors(plan.out), hold_run_lock(plan.out):
        return _run_eval_locked(plan, context, on_record, on_warning)


def _run_eval_locked(
    plan: EvalPlan,
    context: ZoomContext,
    on_record: Callable[[dict[str, Any], Progress], None] | None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`run_eval` holding the folder's lock: this process alone writes it, so opening the store
    may repair a torn tail and `--retry-errors` may rewrite the file. First of all, before either,
    a resume with other result-changing settings is refused (`check_resume`)."""
    config = check_resume(plan, context)
    plan._fingerprint = None
    store = PredictionStore(plan.out / "predictions.jsonl")
    if plan.retry_errors:
        store.drop_errors()
    write_config(plan, context, config)
    with ExitStack() as stack:
        saver = (
            stack.enter_context(open_saver(plan.trace_db, create=True)) if plan.trace_db else None
        )
        graphs = {method: graph_named(method, checkpointer=saver) for method in METHOD_GRAPHS}
        progress = Progress()
        watches = (ConventionWatch(context), BudgetWatch())

        def watched(record: dict[str, Any]) -> None:
            for watch in watches:
                warning = watch.add(record)
                if warning is not None:
                    progress.warnings.append(warning)
                    if on_warning:
                        on_warning(warning)

        def finished(record: dict[str, Any]) -> None:
            watched(record)
            if on_record:
                on_record(record, progress)

        for record in store:  # a resumed run's earlier samples count first
            watched(record)
        _run_all(plan, context, store, graphs, progress, finished, traced=saver is not None)
    summary = summarize(
        plan.benchmark,
        list(store),
        extractor=plan.extractor,
        skip_unanswered=plan.skip_unanswered,
    )
    if progress.warnings:
        summary["warnings"] = list(progress.warnings)
    replace_json(plan.out / "summary.json", summary)
    return summary


def _run_all(
    plan: EvalPlan,
    context: ZoomContext,
    store: PredictionStore,
    graphs: dict[str, Any],
    progress: Progress,
    on_record: Callable[[dict[str, Any]], None],
    *,
    traced: bool,
) -> None:
    def finish(record: PredictionRecord) -> None:
        stored = store.append(record)
        progress.add(stored)
        on_record(stored)

    def jobs() -> Iterator[tuple[Sample, Method]]:
        for row in select(plan, load_samples(plan.benchmark, plan.data)):
            for method in plan.methods:
                if store.done((row.id, method)):
                    continue
                if isinstance(row, BadRow):
                    if plan.bad_rows == "wrong":
                        finish(bad_row_record(row, method))
                    continue
                yield row, method

    with ThreadPoolExecutor(max_workers=plan.concurrency) as pool:
        in_flight: set[Future[PredictionRecord]] = set()
        for sample, method in jobs():
            in_flight.add(
                pool.submit(
                    run_one, graphs[method], plan.benchmark, sample, method, context, traced
                )
            )
            if len(in_flight) >= 2 * plan.concurrency:  # bounded: samples hold decoded images
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(future.result())
        for future in in_flight:
            finish(future.result())


def run_one(
    graph: Any,
    benchmark: Benchmark,
    sample: Sample,
    method: Method,
    context: ZoomContext,
    traced: bool = False,
) -> PredictionRecord:
    """One (sample, method): the graph's output as a record, or the error it ended in."""
    started = time.perf_counter()
    inputs = {"image": sample.image, "question": sample.question, "options": sample.options}
    official = context.question_text == "official"  # the official conversion's whole prompt
    if official and method != "baseline":
        inputs["question"] = official_question(benchmark, sample)
    if method == "baseline":  # the benchmark's own prompt, as its official numbers were made
        inputs["prompt"] = (official_prompt if official else benchmark_prompt)(benchmark, sample)
    config: dict[str, Any] = {"recursion_limit": context.recursion_limit}
    thread = run_thread_id(method, sample.id)
    if traced:
        config["configurable"] = {"thread_id": thread}
        config["metadata"] = {GRAPH_KEY: graph.name}  # which graph `read_trace` replays it with
    try:
        result = graph.invoke(inputs, context=context, config=config)
    except Exception as error:  # one sample's failure is recorded; the run goes on
        if is_storage_failure(error):  # not the sample's fault: stop, so a resume reruns it
            raise StorageError(STORAGE_FAILED.format(error=error)) from error
        return error_record(sample, method, error, time.perf_counter() - started)
    record = result_record(sample, method, result, time.perf_counter() - started)
    if traced:
        record["thread_id"] = thread
    return record


def run_thread_id(method: Method, sample_id: str) -> str:
    """A new trace thread per run: `<method>:<sample id>:<32 hex>`. Never reused, so a rerun
    (a resume, a second eval, another process on the same database) cannot continue an old
    run's checkpoints; `graphs.traces.sample_runs` finds a sample's runs by the prefix."""
    return f"{method}:{sample_id}:{uuid.uuid4().hex}"


STORAGE_FAILED = (
    "could not store a run ({error}): the disk may be full, a file size limit hit, or the "
    "--trace-db file broken. The run stopped; predictions written so far are intact: free space "
    "and run the same command again to resume"
)


def is_storage_failure(error: BaseException) -> bool:
    """A failure to store (the trace database, or a full disk), as opposed to a model's or a
    sample's."""
    if is_trace_store_error(error):  # SQLite or Postgres
        return True
    return isinstance(error, OSError) and error.errno in FULL_DISK_REASONS


def check_resume(plan: EvalPlan, context: ZoomContext) -> dict[str, Any]:
    """The config.json this run is to write, or `RunSettingsChangedError` (one line, old → new)
    when `plan.out` already holds predictions made with other result-changing settings and
    `plan.resume_anyway` is off. Writes nothing: call it holding the folder's lock, before the
    store is opened (see `evals.run_config`)."""
    return resumed_config(plan.out, run_config(plan, context), resume_anyway=plan.resume_anyway)


def write_config(
    plan: EvalPlan, context: ZoomContext, config: dict[str, Any] | None = None
) -> None:
    """config.json: what produced these predictions (`config`, from `check_resume`, else this
    run's own settings), replaced atomically. No API keys: the model is a spec or a name."""
    write_config_file(plan.out, config if config is not None else run_config(plan, context))


def run_config(plan: EvalPlan, context: ZoomContext) -> dict[str, Any]:
    """This run's settings as config.json records them (plain JSON values, so they compare equal
    to a config read back): what `evals.run_config` compares on a resume."""
    settings = {
        item.name: getattr(context, item.name)
        for item in dataclasses.fields(context)
        if item.name != "model"
    }
    settings |= prompt_set_settings(context.prompt_set)
    model = context.model if isinstance(context.model, str) else _model_name(context.model)
    config = {
        "benchmark": plan.benchmark,
        "data": str(plan.data),
        "dataset_sha256": plan.dataset_sha256(),
        "methods": list(plan.methods),
        "shard": f"{plan.shard[0]}/{plan.shard[1]}",
        "limit": plan.limit,
        "extractor": plan.extractor,
        "skip_unanswered": plan.skip_unanswered,
        "bad_rows": plan.bad_rows,
        "model": model,
        "context": settings,
        "zoom_refine_version": version("zoom-refine"),
    }
    plan_config: dict[str, Any] = json.loads(json.dumps(config, default=str))
    return plan_config


def _model_name(model: BaseChatModel) -> str:
    name = getattr(model, "model_name", None) or getattr(model, "model_path", None)
    return f"{type(model).__name__}({name})" if name else type(model).__name__
