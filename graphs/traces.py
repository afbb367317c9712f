"""Persistent traces: run the Zoom-Refine graph with a checkpointer and read runs back.

A trace database is a SQLite file (the embedded default) or a PostgreSQL database named by a
`postgresql://user@host:port/db` URL (`graphs.trace_postgres`: several machines can write it).
Each run is one LangGraph thread (a new uuid). Checkpoints are written with a strict serializer:
msgpack only (no pickle fallback) and, on reading, only LangGraph's built-in allowlist of safe
types is revived — the state is plain data plus LangChain messages, so nothing else is needed.
Images are kept once per database, not in every row (`graphs.trace_blobs`); databases written
before that read as they always did. Runs are listed from a small index table (`graphs.run_index`)
written as they go, never from the checkpoints themselves. Both are written once for both
backends; their SQL differs only in `graphs.trace_sql`.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.state import CropArtifact, InputState, OutputState, StepRecord, ViewRecord
from zoom_refine.graphs import run_index
from zoom_refine.graphs.registry import graph_named
from zoom_refine.graphs.run_index import GRAPH_KEY, IndexedSaver, RunIndexWriter, RunSummary
from zoom_refine.graphs.trace_blobs import BlobStore, CompactSqliteSaver, TraceSerializer
from zoom_refine.graphs.trace_sql import LOCK_TIMEOUT_SECONDS, SQLITE, has_table, sqlite_connect
from zoom_refine.graphs.trace_urls import MISSING_DRIVER, TraceTarget, describe_target, trace_target
from zoom_refine.tools.errors import (
    ImageChangedError,
    ImageLoadError,
    InvalidInputError,
)
from zoom_refine.tools.images import load_image, read_source_bytes

__all__ = [  # re-exported
    "GRAPH_KEY",
    "RunSummary",
    "TraceTarget",
    "describe_target",
    "trace_target",
]

MISSING_DB = (
    "trace database not found: {path} (write one with `zoom-refine ask … --trace-db {path}`)"
)
NOT_A_DB = "not a trace database: {path} ({reason})"
UNKNOWN_THREAD = "no run {thread_id!r} in {path} (list runs with `zoom-refine trace {path}`)"
STREAM_MODES: list[StreamMode] = ["updates", "custom"]
OUTPUT_KEYS = frozenset(OutputState.__annotations__)
CROP_CALL_ID = re.compile(r"crop-(\d+)")


def strict_serde() -> JsonPlusSerializer:
    """msgpack only: no pickle on write or read; unknown types are not revived on read."""
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)


def _while_locked(action: Callable[[], object]) -> None:
    """Run `action` (a schema setup), again while SQLite answers "database is locked": two
    processes opening one new database both switch it to WAL and create its tables, and that
    switch fails at once, without waiting for the busy timeout, when the other holds the file.
    Gives up after `LOCK_TIMEOUT_SECONDS`."""
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def open_saver(
    path: str | Path, *, create: bool = False, compact: bool = True, images: bool = True
) -> Iterator[IndexedSaver]:
    """A checkpointer on the trace database `path` (a SQLite file, or a `postgresql://` URL:
    `trace_target`) with the strict serializer, keeping the run index. Reading
    (`create=False`) refuses a missing database or one that is not a trace database, with an
    InvalidInputError.

    `compact` (the default) stores each image once per database (`graphs.trace_blobs`); False
    writes every image into every row, as traces were first written. Either reads both kinds
    of row. `images=False` leaves images as `{"zr_blob": …}` markers on reading: for callers
    that never look at them (listings), and the input image is not needed."""
    target = trace_target(path)
    if isinstance(target, str):
        with _open_postgres(target, create=create, compact=compact, images=images) as shared:
            yield shared
        return
    db = target
    saver: IndexedSaver
    if not create:
        _check_trace_db(db)
    elif db.parent and not db.parent.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite_connect(db)  # several processes may write one database (eval shards)
    blobs = BlobStore(db)
    try:
        if compact:
            saver = IndexedCompactSqliteSaver(conn, serde=TraceSerializer(blobs, expand=images))
        else:
            saver = IndexedSqliteSaver(conn, serde=strict_serde())
        _while_locked(saver.setup)
        try:
            _while_locked(lambda: run_index.ensure_index(conn, SQLITE, saver))
        except sqlite3.OperationalError:
            if create:  # a database we cannot write: the run would fail anyway
                raise
            # read-only (a file or folder we may not write): listed the old way
        if run_index.has_index(conn, SQLITE):
            saver.run_index = RunIndexWriter(saver.index_write, GRAPH_KEY)
        yield saver
    finally:
        blobs.close()
        conn.close()


@contextmanager
def _open_postgres(
    url: str, *, create: bool, compact: bool, images: bool
) -> Iterator[IndexedSaver]:
    try:
        from zoom_refine.graphs.trace_postgres import open_postgres_saver, postgres_blobs
    except ImportError as error:  # psycopg or langgraph-checkpoint-postgres missing
        raise InvalidInputError(MISSING_DRIVER) from error
    blobs = postgres_blobs(url) if compact else None
    serde = TraceSerializer(blobs, expand=images) if blobs else strict_serde()
    try:
        with open_postgres_saver(url, create=create, serde=serde, blobs=blobs) as saver:
            yield saver
    finally:
        if blobs is not None:
            blobs.close()


def _check_trace_db(db: Path) -> None:
    if not db.is_file():
        raise InvalidInputError(MISSING_DB.format(path=db))
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            found = [has_table(conn, SQLITE, table) for table in SQLITE.checkpoint_tables]
    except sqlite3.DatabaseError as error:
        raise InvalidInputError(NOT_A_DB.format(path=db, reason=error)) from error
    if not all(found):
        raise InvalidInputError(NOT_A_DB.format(path=db, reason="no checkpoint tables"))


class _SqliteIndexed(IndexedSaver, SqliteSaver):
    sql = SQLITE

    def _locked_cursor(self) -> AbstractContextManager[Any]:
        return self.cursor()


class IndexedCompactSqliteSaver(_SqliteIndexed, CompactSqliteSaver):
    """The default SQLite trace saver: compact images, and the run index kept."""


class IndexedSqliteSaver(_SqliteIndexed):
    """Every image in every row (`compact=False`), and the run index kept."""


def is_trace_store_error(error: BaseException) -> bool:
    """Whether `error` is the trace database failing (SQLite or Postgres), not a run's own."""
    if isinstance(error, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(error, psycopg.Error)


def thread_config(context: ZoomContext, thread_id: str | None = None) -> RunnableConfig:
    """Run config: a new thread id (uuid4) unless given, and the context's recursion limit."""
    return {
        "configurable": {"thread_id": thread_id or str(uuid.uuid4())},
        "recursion_limit": context.recursion_limit,
    }


@dataclass
class Run:
    """The outcome of `run_graph`: the output state, and the thread id when it was persisted."""

    result: dict[str, Any]
    thread_id: str | None = None


def run_graph(
    inputs: InputState,
    context: ZoomContext,
    *,
    db: str | Path | None = None,
    on_event: Callable[[str, Any], None] | None = None,
    on_thread: Callable[[str], None] | None = None,
    graph: str = "zoom_refine",
) -> Run:
    """Run Zoom-Refine once. With `db`, every checkpoint goes to that SQLite file under a new
    thread id (`on_thread` hears it before the run starts). With `on_event`, events are streamed
    as they happen (`stream_mode=["updates", "custom"]`): node updates and crop events."""
    if db is None:
        plain: RunnableConfig = {"recursion_limit": context.recursion_limit}
        return Run(_drive(_graph_named(graph, None), inputs, context, plain, on_event))
    with open_saver(db, create=True) as saver:
        config = thread_config(context)
        config["metadata"] = {GRAPH_KEY: graph}
        thread_id = str((config.get("configurable") or {})["thread_id"])
        if on_thread:
            on_thread(thread_id)
        compiled = _graph_named(graph, saver)
        return Run(_drive(compiled, inputs, context, config, on_event), thread_id)


def _graph_named(
    name: str, saver: BaseCheckpointSaver[Any] | None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph `GRAPH_KEY` names (`zoom_refine`, `baseline`, `agent`), with `saver`."""
    return graph_named(name, checkpointer=saver)


def _drive(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    inputs: InputState,
    context: ZoomContext,
    config: RunnableConfig,
    on_event: Callable[[str, Any], None] | None,
) -> dict[str, Any]:
    if on_event is None:
        result: dict[str, Any] = graph.invoke(inputs, context=context, config=config)
        return result
    final: dict[str, Any] = {}
    for mode, data in graph.stream(
        inputs, context=context, config=config, stream_mode=[*STREAM_MODES, "values"]
    ):
        if mode == "values" and isinstance(data, Mapping):  # the full state: keep the output
            final = {key: value for key, value in data.items() if key in OUTPUT_KEYS}
        else:
            on_event(mode, data)
    return final


def list_runs(path: str | Path) -> list[RunSummary]:
    """Every run in the database, oldest first, from the run index (`graphs.run_index`; a
    database written before it gets it now, once). A SQLite database that cannot be written,
    and has no index yet, is listed the old way: two whole checkpoints decoded per run."""
    with open_saver(path, images=False) as saver:
        return saver.listed_runs()


RUN_SUFFIX = re.compile(r":[0-9a-f]{32}")
"""What `evals.runner.run_thread_id` appends to `<method>:<sample id>` for each run."""


def sample_runs(path: str | Path, key: str) -> list[str]:
    """The thread ids of every run of one eval sample, oldest first: `key` is `<method>:<id>`
    (e.g. `zoom-refine:42`); each run of it is a thread `<key>:<uuid>`."""
    with open_saver(path) as saver:
        threads = saver.threads_with_prefix(key + ":")
    return [thread for thread in threads if RUN_SUFFIX.fullmatch(thread[len(key) :])]


@dataclass(frozen=True)
class TraceStep:
    """One row of a persisted run: a step record a node wrote (`agent.state.StepRecord`: a model
    call, or a crop, made or failed), with where in the run it happened."""

    step: int
    """LangGraph's superstep number (0 = the first node)."""
    node: str
    """The graph node that ran."""
    time: str
    """ISO time of the checkpoint written after the node finished."""
    record: StepRecord | None = None
    """What the node recorded; None when it recorded nothing."""
    view_box: list[int] | None = None
    """[x1, y1, x2, y2] in original pixels of the view `record` names, when known."""


@dataclass
class Trace:
    """A run read back: its steps oldest first and its final state (conversation included)."""

    thread_id: str
    steps: list[TraceStep]
    state: dict[str, Any]


def _replaying_graph(
    saver: BaseCheckpointSaver[Any], config: dict[str, Any]
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph that wrote the thread (its `GRAPH_KEY` metadata; Zoom-Refine when absent, as in
    databases written before runs recorded it): replaying a baseline run with the Zoom-Refine
    graph finds none of its node's tasks, so its trace would hold no steps."""
    found = saver.get_tuple(config)  # type: ignore[arg-type]
    return _graph_named(str((found.metadata or {}).get(GRAPH_KEY) if found else ""), saver)


def read_trace(path: str | Path, thread_id: str, *, images: bool = True) -> Trace:
    """The run `thread_id` step by step, from `graph.get_state_history` (oldest first).
    An eval sample's key `<method>:<id>` names its latest run (`sample_runs` lists them all).
    `images=False`: the conversation's images stay markers (see `open_saver`), which is faster
    and needs no input image; the steps and the rest of the state are the same."""
    with open_saver(path, images=images) as saver:
        config = {"configurable": {"thread_id": thread_id}}
        graph = _replaying_graph(saver, config)
        history = list(graph.get_state_history(config))  # type: ignore[arg-type]
        if not history:
            runs = sample_runs(path, thread_id)
            if not runs:
                raise InvalidInputError(UNKNOWN_THREAD.format(thread_id=thread_id, path=path))
            return read_trace(path, runs[-1], images=images)
        history.reverse()
        final = dict(history[-1].values)
        if not images and isinstance(saver.serde, TraceSerializer):  # the input image, if bytes
            blobs = saver.serde.blobs
            final = {key: v if key == "messages" else blobs.expand(v) for key, v in final.items()}
        views = {view["id"]: view for view in final.get("views") or []}
        steps = []
        for snapshot, after in itertools.pairwise(history):
            for task in snapshot.tasks:
                if task.name.startswith("__") or not isinstance(task.result, Mapping):
                    continue
                step = int((snapshot.metadata or {}).get("step", 0))
                time = str(after.created_at)
                steps.extend(_trace_steps(step, task.name, time, task.result, views))
        return Trace(thread_id=thread_id, steps=steps, state=final)


def _trace_steps(
    step: int, node: str, time: str, update: Mapping[str, Any], views: dict[str, ViewRecord]
) -> list[TraceStep]:
    """The rows of one node run: one per step it recorded, one per crop it made."""
    rows = []
    for record in update.get("steps") or []:  # localize / refine: the model call
        view = views.get(record.get("view") or "")
        rows.append(TraceStep(step, node, time, record, list(view["box"]) if view else None))
    for message in update.get("messages") or []:  # crop: the tool's results
        if not isinstance(message, ToolMessage):
            continue
        artifact: CropArtifact | None = message.artifact if message.artifact else None
        if artifact:
            made = artifact["view"]
            views.setdefault(made["id"], made)
            crop = StepRecord(node=node, hop=made["hop"], raw=None, view=made["id"])
            rows.append(TraceStep(step, node, time, crop, list(made["box"])))
        else:  # the crop's hop is in the call id, `crop-{hop}` or `crop-{hop}-{k}`
            hop = int(match.group(1)) if (match := CROP_CALL_ID.match(message.tool_call_id)) else 0
            failed = StepRecord(node=node, hop=hop, raw=None, note=str(message.content))
            rows.append(TraceStep(step, node, time, failed))
    return rows or [TraceStep(step, node, time)]


# --- the run's input image, now -------------------------------------------------------------------

NO_IMAGE_IN_STATE = "run {thread} has no input image in its state: its pictures cannot be drawn"
IMAGE_GONE = (
    "cannot draw the run's pictures: its input image {image} is gone ({reason}); the trace holds "
    "the steps shown above"
)
IMAGE_CHANGED = (
    "cannot draw the run's pictures: its input image {image} changed since the run ({how}; "
    "SHA-256 {now}…, the run saw {then}…), so its boxes would land on another picture; restore "
    "the image, or read the steps above without pictures"
)


def check_trace_image(state: Mapping[str, Any], thread: str = "") -> None:
    """Refuse (ImageChangedError, one line) to draw a run's pictures when its input image file
    is gone or differs from the one the run saw: other pixels, another size, or the path now a
    link to another image. Image bytes kept in the state are the run's own; a state without
    `image_sha256` (written before runs recorded it) is not checked."""
    image = state.get("image")
    if image is None:
        raise ImageChangedError(NO_IMAGE_IN_STATE.format(thread=thread or "this"))
    then = state.get("image_sha256")
    if isinstance(image, bytes) or not isinstance(then, str) or not then:
        return
    try:
        data = read_source_bytes(image)
    except ImageLoadError as error:
        raise ImageChangedError(IMAGE_GONE.format(image=image, reason=error)) from error
    now = hashlib.sha256(data).hexdigest()
    if now != then:
        how = _how_changed(Path(image), data, state.get("views") or [])
        raise ImageChangedError(
            IMAGE_CHANGED.format(image=image, how=how, now=now[:12], then=then[:12])
        )


def _how_changed(path: Path, data: bytes, views: Any) -> str:
    """What is different about the image now, in words: a link, its size, or its pixels."""
    parts = []
    if path.is_symlink():
        parts.append(f"now a link to {path.resolve()}")
    try:
        width, height = load_image(data).size
    except ImageLoadError as error:
        return "; ".join([*parts, f"now not a readable image: {error}"])
    first = views[0].get("box") if views and isinstance(views[0], Mapping) else None
    seen = tuple(first[2:4]) if isinstance(first, list) and len(first) == 4 else None
    if seen is not None and seen != (width, height):
        parts.append(f"now {width}×{height} px, the run saw {seen[0]}×{seen[1]} px")
    elif not parts:
        parts.append("other pixels, same size")
    return "; ".join(parts)
