"""The SQL a trace database speaks: SQLite and PostgreSQL differ here, and only here.

The image table (`BlobTable`, used by `graphs.trace_blobs`) and the run index
(`graphs.run_index`) are written once, against a DB-API connection (sqlite3 or psycopg 3) and a
`TraceSql`. The two backends differ in the driver's parameter mark, two column types, how to ask
whether a table exists, how a writer takes the database for itself, and which error means "no
such table". Every statement uses the table and column names traces were first written with, so
databases written before this module read as they always did.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

LOCK_TIMEOUT_SECONDS = 60.0
"""How long a SQLite connection waits for another writer's lock (eval shards on one machine)."""
BLOBS_TABLE = "zr_blobs"


@dataclass(frozen=True)
class TraceSql:
    """What one backend's SQL looks like; each statement is built from these in one place."""

    name: Literal["sqlite", "postgres"]
    mark: str
    """The driver's parameter mark: `?` (sqlite3) or `%s` (psycopg)."""
    bytes_type: str
    """Column type of binary data."""
    size_type: str
    """Column type of a byte count (images over 2 GiB fit in Postgres' BIGINT)."""
    table_exists: str
    """One row whose one value is true when the table named by the parameter exists."""
    exclusive: tuple[str, ...]
    """Statements that open a transaction no other writer of the database runs beside it (the
    run index's one-time backfill): SQLite's write lock, a Postgres advisory lock."""
    checkpoint_tables: tuple[str, ...]
    """LangGraph's tables in a trace database of this backend."""
    missing_table: Callable[[BaseException], bool]
    """Whether a driver error says a table does not exist."""

    def marks(self, count: int) -> str:
        """`count` parameter marks, comma-separated."""
        return ", ".join([self.mark] * count)

    @property
    def create_blobs(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {BLOBS_TABLE} (\n"
            "    sha256 TEXT PRIMARY KEY,\n"
            "    mime TEXT NOT NULL DEFAULT '',\n"
            "    codec TEXT NOT NULL,\n"
            f"    size {self.size_type} NOT NULL,\n"
            f"    data {self.bytes_type} NOT NULL\n"
            ")"
        )

    @property
    def has_blob(self) -> str:
        return f"SELECT 1 FROM {BLOBS_TABLE} WHERE sha256 = {self.mark}"

    @property
    def insert_blob(self) -> str:
        """Writers of the same image (threads, processes, machines) agree: the first one wins."""
        return (
            f"INSERT INTO {BLOBS_TABLE} (sha256, mime, codec, size, data) "
            f"VALUES ({self.marks(5)}) ON CONFLICT (sha256) DO NOTHING"
        )

    @property
    def select_blob(self) -> str:
        return f"SELECT codec, data FROM {BLOBS_TABLE} WHERE sha256 = {self.mark}"

    @property
    def threads_with_prefix(self) -> str:
        """Thread ids starting with a prefix (parameters: its length, itself), oldest run first.
        A substring compare, not LIKE: `%` and `_` in the prefix are plain characters."""
        return (
            "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
            f"AND substr(thread_id, 1, {self.mark}) = {self.mark} "
            "GROUP BY thread_id ORDER BY MIN(checkpoint_id)"
        )


def _sqlite_missing_table(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)


def _postgres_missing_table(error: BaseException) -> bool:
    from psycopg.errors import UndefinedTable  # reached only with a Postgres store: psycopg is in

    return isinstance(error, UndefinedTable)


SQLITE = TraceSql(
    name="sqlite",
    mark="?",
    bytes_type="BLOB",
    size_type="INTEGER",
    table_exists="SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
    exclusive=("BEGIN IMMEDIATE",),
    checkpoint_tables=("checkpoints", "writes"),
    missing_table=_sqlite_missing_table,
)
POSTGRES_INDEX_LOCK = 0x7A725F72756E73
"""`pg_advisory_xact_lock` key held while the run index is created and backfilled ("zr_runs")."""
POSTGRES = TraceSql(
    name="postgres",
    mark="%s",
    bytes_type="BYTEA",
    size_type="BIGINT",
    table_exists="SELECT to_regclass(%s) IS NOT NULL",
    exclusive=("BEGIN", f"SELECT pg_advisory_xact_lock({POSTGRES_INDEX_LOCK})"),
    checkpoint_tables=("checkpoints", "checkpoint_writes"),
    missing_table=_postgres_missing_table,
)


def values(row: Sequence[Any] | Mapping[str, Any]) -> tuple[Any, ...]:
    """A row as a tuple, whichever row factory the connection has (psycopg's `dict_row`)."""
    return tuple(row.values()) if isinstance(row, Mapping) else tuple(row)


def has_table(conn: Any, sql: TraceSql, table: str) -> bool:
    """Whether `table` exists; `conn` is a connection or a cursor (anything with `execute`)."""
    row = conn.execute(sql.table_exists, (table,)).fetchone()
    return row is not None and bool(values(row)[0])


@contextmanager
def exclusive(conn: Any, sql: TraceSql) -> Iterator[None]:
    """One transaction on `conn` that no other writer runs beside (`TraceSql.exclusive`),
    committed at the end, rolled back on an error. A transaction left open before is committed
    first (sqlite3 opens one implicitly; a psycopg connection in autocommit has none)."""
    conn.commit()
    for statement in sql.exclusive:
        conn.execute(statement)
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def sqlite_connect(path: str | Path, *, autocommit: bool = False) -> sqlite3.Connection:
    """A connection to the SQLite file `path`, shareable by threads, that waits for another
    writer's lock rather than fail after sqlite's default 5 s. `autocommit`: every statement is
    its own transaction, as on the Postgres store's connection."""
    return sqlite3.connect(
        str(path),
        check_same_thread=False,
        timeout=LOCK_TIMEOUT_SECONDS,
        isolation_level=None if autocommit else "DEFERRED",
    )


class BlobTable:
    """The `zr_blobs` table of one trace database, on a connection of its own (opened by
    `connect` on first use, autocommit) under a lock of its own: the checkpoint saver
    serializes inside its lock, which must not be taken again."""

    def __init__(self, sql: TraceSql, connect: Callable[[], Any]) -> None:
        self.sql = sql
        self._connect = connect
        self._conn: Any = None
        self._lock = threading.RLock()
        self._ready = False

    @classmethod
    def sqlite(cls, path: str | Path) -> BlobTable:
        return cls(SQLITE, lambda: sqlite_connect(path, autocommit=True))

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def create(self) -> None:
        """Create the table unless it exists (Postgres: under the setup lock, by the opener)."""
        with self._lock:
            if not self._ready:
                self._connection().execute(self.sql.create_blobs)
                self._ready = True

    def contains(self, digest: str) -> bool:
        self.create()
        with self._lock:
            return self._connection().execute(self.sql.has_blob, (digest,)).fetchone() is not None

    def insert(self, digest: str, mime: str, codec: str, size: int, data: bytes) -> None:
        """Store one image (a no-op when another writer stored it first). `size`: its bytes
        before `codec`."""
        self.create()
        with self._lock:
            self._connection().execute(self.sql.insert_blob, (digest, mime, codec, size, data))

    def row(self, digest: str) -> tuple[str, bytes] | None:
        """(codec, stored data) of `digest`; None when it is not there, or there is no table (a
        marker copied from another database). Reading never creates the table."""
        with self._lock:
            try:
                found = self._connection().execute(self.sql.select_blob, (digest,)).fetchone()
            except Exception as error:  # only "no such table"; anything else is raised again
                if not self.sql.missing_table(error):
                    raise
                found = None
        return (str(found[0]), bytes(found[1])) if found is not None else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
