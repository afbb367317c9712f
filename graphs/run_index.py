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
are not indexed.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)

Dialect = Literal["sqlite", "postgres"]
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
POSTGRES_LOCK_KEY = 0x7A725F72756E73
"""`pg_advisory_xact_lock` key held while the index is created and backfilled ("zr_runs")."""


def _marks(dialect: Dialect) -> str:
    return ", ".join(["?" if dialect == "sqlite" else "%s"] * len(COLUMNS))


def upsert_sql(dialect: Dialect) -> str:
    return _UPSERT.format(marks=_marks(dialect))


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
    set) updates the run's index row. Put it first among the bases."""

    run_index: RunIndexWriter | None = None

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

    def index_write(self, row: tuple[str | None, ...]) -> None:
        """Upsert one index row (`COLUMNS`) on the saver's own connection."""
        raise NotImplementedError

    def listed_runs(self) -> list[RunSummary]:
        """Every run, oldest first: from the index, or the old way where there is none."""
        raise NotImplementedError

    def threads_with_prefix(self, prefix: str) -> list[str]:
        """Thread ids starting with `prefix`, in the order their runs started."""
        raise NotImplementedError


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


# --- SQLite -----------------------------------------------------------------------------------

_SQLITE_THREADS = (
    "SELECT thread_id, MIN(checkpoint_id), MAX(checkpoint_id) FROM checkpoints "
    "WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY MIN(checkpoint_id)"
)


def sqlite_has_index(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (RUNS_TABLE,)
    ).fetchone()
    return found is not None


def sqlite_ensure_index(
    conn: sqlite3.Connection, saver: BaseCheckpointSaver[Any], graph_key: str
) -> None:
    """Create the index (backfilled from the checkpoints) unless it exists. Taken under SQLite's
    write lock (`BEGIN IMMEDIATE`), so two processes opening one old database backfill once.
    Call before the saver is shared with other threads: the backfill reads through it."""
    if sqlite_has_index(conn):
        return
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not sqlite_has_index(conn):
            threads = conn.execute(_SQLITE_THREADS).fetchall()
            rows = [run.row() for run in runs_from_checkpoints(saver, threads, graph_key)]
            conn.execute(_SCHEMA)
            conn.execute(_ORDER_INDEX)
            conn.executemany(_BACKFILL.format(marks=_marks("sqlite")), rows)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def sqlite_runs(conn: sqlite3.Connection) -> list[RunSummary]:
    return [_summary(row) for row in conn.execute(_SELECT).fetchall()]


def sqlite_threads(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(thread, first, last checkpoint id) of every run: the old path's query."""
    return [tuple(row) for row in conn.execute(_SQLITE_THREADS).fetchall()]


# --- Postgres ---------------------------------------------------------------------------------

_POSTGRES_THREADS = (
    "SELECT thread_id, MIN(checkpoint_id), MAX(checkpoint_id) FROM checkpoints "
    "WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY MIN(checkpoint_id)"
)


def postgres_has_index(conn: Any) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (RUNS_TABLE,)).fetchone()
    value = row[0] if isinstance(row, tuple) else next(iter(row.values()))
    return value is not None


def postgres_threads(conn: Any) -> list[tuple[str, str, str]]:
    rows = conn.execute(_POSTGRES_THREADS).fetchall()
    return [tuple(row) if isinstance(row, tuple) else tuple(row.values()) for row in rows]


def postgres_ensure_index(conn: Any, saver: BaseCheckpointSaver[Any], graph_key: str) -> None:
    """Create the index (backfilled from the checkpoints) unless it exists, in one transaction
    holding an advisory lock: concurrent openers (eval shards) backfill once. `conn` is a psycopg
    connection of its own (not the saver's)."""
    if postgres_has_index(conn):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (POSTGRES_LOCK_KEY,))
        if postgres_has_index(conn):
            return
        rows = [
            run.row() for run in runs_from_checkpoints(saver, postgres_threads(conn), graph_key)
        ]
        conn.execute(_SCHEMA)
        conn.execute(_ORDER_INDEX)
        with conn.cursor() as cursor:
            cursor.executemany(_BACKFILL.format(marks=_marks("postgres")), rows)


def postgres_runs(conn: Any) -> list[RunSummary]:
    with conn.cursor() as cursor:
        cursor.execute(_SELECT)
        rows = cursor.fetchall()
    return [_summary(row if isinstance(row, tuple) else tuple(row.values())) for row in rows]


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
