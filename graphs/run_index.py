"""The run index of a trace database: one small row per run, so listing runs reads no checkpoint.

A run's checkpoints hold its whole state (the conversation included); listing runs from them
means decoding two checkpoints per run (`runs_from_checkpoints`, the old path: ~seconds per
thousand runs). The table `zr_runs`, in the same database as the checkpoints (SQLite or
Postgres), holds what a listing shows: thread id, first checkpoint (its id orders runs as the
old path did, and its time is when the run started), the graph that ran, question, answer, stop
reason. The saver writes a run's row with its first checkpoint and again whenever one of those
fields changes (the answer of localize, then the refined answer and stop reason when the run
finishes): two or three small writes per run, none when nothing listed changed.

Databases written before the index existed get it once: `ensure_index` creates the table and
fills it from the checkpoints in one transaction (the table's existence marks the backfill as
done). Runs written later by an older version of this package (which does not know the table)
are not indexed. Everything here is written once for SQLite and Postgres: their SQL differs only
through `graphs.trace_sql.TraceSql`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from typing import Any, ClassVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)

from zoom_refine.graphs.trace_sql import TraceSql, exclusive, has_table, values

GRAPH_KEY = "graph"
"""Run-config metadata key naming the compiled graph that ran (`baseline`, `zoom_refine`),
stored with every checkpoint, so a trace is replayed with the graph that wrote it."""
RUNS_TABLE = "zr_runs"
ROWS_REMEMBERED = 4096
"""Threads whose last written row a saver remembers (to skip writing an unchanged row)."""
COLUMNS = ("thread_id", "first_checkpoint", "started", "graph", "question", "answer", "stop_reason")

_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    thread_id TEXT PRIMARY KEY,
    first_checkpoint TEXT NOT NULL,
    started TEXT NOT NULL,
    graph TEXT,
    question TEXT,
    answer TEXT,
    stop_reason TEXT
)"""
_ORDER_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {RUNS_TABLE}_order ON {RUNS_TABLE} (first_checkpoint, thread_id)"
)
_UPSERT = (
    f"INSERT INTO {RUNS_TABLE} ({', '.join(COLUMNS)}) VALUES ({{marks}}) "
    "ON CONFLICT (thread_id) DO UPDATE SET "
    f"graph = COALESCE({RUNS_TABLE}.graph, excluded.graph), "
    f"question = COALESCE(excluded.question, {RUNS_TABLE}.question), "
    f"answer = COALESCE(excluded.answer, {RUNS_TABLE}.answer), "
    f"stop_reason = COALESCE(excluded.stop_reason, {RUNS_TABLE}.stop_reason)"
)
_BACKFILL = (
    f"INSERT INTO {RUNS_TABLE} ({', '.join(COLUMNS)}) VALUES ({{marks}}) ON CONFLICT DO NOTHING"
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {RUNS_TABLE} ORDER BY first_checkpoint, thread_id"
_THREADS = (
    "SELECT thread_id, MIN(checkpoint_id), MAX(checkpoint_id) FROM checkpoints "
    "WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY MIN(checkpoint_id)"
)


def upsert_sql(sql: TraceSql) -> str:
    """Insert a run's row (`COLUMNS`), or fill in what a later checkpoint knows."""
    return _UPSERT.format(marks=sql.marks(len(COLUMNS)))


@dataclass(frozen=True)
class RunSummary:
    """One run in a trace database."""

    thread_id: str
    started: str
    """ISO time of the run's first checkpoint (UTC)."""
    question: str | None
    answer: str | None
    stop_reason: str | None
    graph: str | None = None
    """The graph that ran (`GRAPH_KEY` metadata: `zoom_refine`, `baseline`, …); None when the
    run did not record it."""
    first_checkpoint: str = ""
    """Id of the run's first checkpoint (time-ordered: runs are listed by it)."""

    def row(self) -> tuple[str | None, ...]:
        return (
            self.thread_id,
            self.first_checkpoint,
            self.started,
            self.graph,
            self.question,
            self.answer,
            self.stop_reason,
        )


def summary_of(
    thread_id: str,
    checkpoint: Checkpoint | Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    graph_key: str,
) -> RunSummary:
    """The index row a checkpoint of run `thread_id` implies (its channel values as written;
    the graph from its metadata's `graph_key`)."""
    values = checkpoint.get("channel_values") or {}
    values = values if isinstance(values, Mapping) else {}
    given = values.get("__start__")  # the input checkpoint holds the input only here
    question = values.get("question")
    if question is None and isinstance(given, Mapping):
        question = given.get("question")
    graph = (metadata or {}).get(graph_key)
    return RunSummary(
        thread_id=thread_id,
        started=str(checkpoint.get("ts", "")),
        question=_text(question),
        answer=_text(values.get("answer")),
        stop_reason=_text(values.get("stop_reason")),
        graph=graph if isinstance(graph, str) else None,
        first_checkpoint=str(checkpoint.get("id", "")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class RunIndexWriter:
    """Keeps a saver's runs in the index: `note` after each checkpoint it stores; `write` runs
    the upsert on the saver's own connection (in its lock)."""

    def __init__(self, write: Callable[[tuple[str | None, ...]], None], graph_key: str) -> None:
        self._write = write
        self.graph_key = graph_key
        self._last: OrderedDict[str, tuple[str | None, ...]] = OrderedDict()

    def note(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> None:
        configurable = config.get("configurable") or {}
        if configurable.get("checkpoint_ns", ""):  # a subgraph's checkpoint: not a run
            return
        thread_id = str(configurable["thread_id"])
        metadata = get_checkpoint_metadata(config, metadata)  # the run config's, as stored
        summary = summary_of(thread_id, checkpoint, metadata, self.graph_key)
        listed = (summary.graph, summary.question, summary.answer, summary.stop_reason)
        if self._last.get(thread_id) == listed:
            self._last.move_to_end(thread_id)
            return
        self._write(summary.row())
        self._last[thread_id] = listed
        while len(self._last) > ROWS_REMEMBERED:
            self._last.popitem(last=False)


class IndexedSaver(BaseCheckpointSaver[str]):
    """Mixin for a checkpoint saver: after each checkpoint it stores, its `run_index` (when
    set) updates the run's index row. Put it first among the bases. A concrete saver names its
    `sql` and how it takes a cursor (`_locked_cursor`); the rest is the same for every backend."""

    run_index: RunIndexWriter | None = None
    sql: ClassVar[TraceSql]

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saved = super().put(config, checkpoint, metadata, new_versions)
        if self.run_index is not None:
            self.run_index.note(config, checkpoint, metadata)
        return saved

    def _locked_cursor(self) -> AbstractContextManager[Any]:
        """A cursor on the saver's own connection, in the saver's lock, committed after."""
        raise NotImplementedError

    def index_write(self, row: tuple[str | None, ...]) -> None:
        """Upsert one index row (`COLUMNS`) on the saver's own connection."""
        with self._locked_cursor() as cursor:
            cursor.execute(upsert_sql(self.sql), row)

    def listed_runs(self) -> list[RunSummary]:
        """Every run, oldest first: from the index, or the old way (a read-only database never
        indexed: two whole checkpoints decoded per run)."""
        with self._locked_cursor() as cursor:
            if has_table(cursor, self.sql, RUNS_TABLE):
                return [_summary(values(row)) for row in cursor.execute(_SELECT).fetchall()]
            threads = run_threads(cursor)
        return runs_from_checkpoints(self, threads, GRAPH_KEY)

    def threads_with_prefix(self, prefix: str) -> list[str]:
        """Thread ids starting with `prefix` (literally: `%` and `_` are no wildcards), in the
        order their runs started."""
        with self._locked_cursor() as cursor:
            rows = cursor.execute(self.sql.threads_with_prefix, (len(prefix), prefix)).fetchall()
        return [str(values(row)[0]) for row in rows]


def runs_from_checkpoints(
    saver: BaseCheckpointSaver[Any], threads: Iterable[tuple[str, str, str]], graph_key: str
) -> list[RunSummary]:
    """The old path: each run's summary from its first and last checkpoints, decoded whole.
    `threads` are (thread id, first checkpoint id, last checkpoint id), in listing order."""
    runs = []
    for thread_id, first_id, last_id in threads:
        first = _checkpoint(saver, thread_id, first_id)
        last = _checkpoint(saver, thread_id, last_id)
        if first is None or last is None:
            continue
        start = summary_of(thread_id, first.checkpoint, first.metadata, graph_key)
        end = summary_of(thread_id, last.checkpoint, last.metadata, graph_key)
        runs.append(
            RunSummary(
                thread_id=thread_id,
                started=start.started,
                question=end.question if end.question is not None else start.question,
                answer=end.answer if end.answer is not None else start.answer,
                stop_reason=end.stop_reason if end.stop_reason is not None else start.stop_reason,
                graph=start.graph or end.graph,
                first_checkpoint=start.first_checkpoint,
            )
        )
    return runs


def _checkpoint(saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str) -> Any:
    config: RunnableConfig = {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": "",
            "checkpoint_id": checkpoint_id,
        }
    }
    return saver.get_tuple(config)


def has_index(conn: Any, sql: TraceSql) -> bool:
    return has_table(conn, sql, RUNS_TABLE)


def run_threads(conn: Any) -> list[tuple[str, str, str]]:
    """(thread, first, last checkpoint id) of every run: the old path's query (either backend)."""
    rows = conn.execute(_THREADS).fetchall()
    return [(str(thread), str(first), str(last)) for thread, first, last in map(values, rows)]


sqlite_threads = postgres_threads = run_threads
"""The names `benchmarks/run_index.py` reads the old path by."""


def ensure_index(conn: Any, sql: TraceSql, saver: BaseCheckpointSaver[Any]) -> None:
    """Create the index (backfilled from the checkpoints) unless it exists, in one transaction
    no other writer runs beside (`trace_sql.exclusive`), so concurrent openers (eval shards)
    backfill once. `conn` is the saver's connection; call before the saver is shared with other
    threads: the backfill reads through it."""
    if has_index(conn, sql):
        return
    with exclusive(conn, sql):
        if has_index(conn, sql):
            return
        rows = [run.row() for run in runs_from_checkpoints(saver, run_threads(conn), GRAPH_KEY)]
        conn.execute(_SCHEMA)
        conn.execute(_ORDER_INDEX)
        with closing(conn.cursor()) as cursor:
            cursor.executemany(_BACKFILL.format(marks=sql.marks(len(COLUMNS))), rows)


def _summary(row: tuple[Any, ...]) -> RunSummary:
    thread_id, first, started, graph, question, answer, stop_reason = row
    return RunSummary(
        thread_id=thread_id,
        started=started,
        question=question,
        answer=answer,
        stop_reason=stop_reason,
        graph=graph,
        first_checkpoint=first,
    )
