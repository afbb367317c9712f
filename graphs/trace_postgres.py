"""Trace databases in PostgreSQL, for runs written from several machines (eval shards).

`--trace-db postgresql://user@host:port/db` stores the same checkpoints as a SQLite trace
database, through LangGraph's `PostgresSaver` (langgraph-checkpoint-postgres, psycopg 3), with
the same strict serializer and the same compaction: `TraceSerializer` keeps each image once, in
a table `zr_blobs` of the same database (`PostgresBlobStore`: `graphs.trace_blobs.BlobStore`
with its two queries in Postgres), and the run index `zr_runs` (`graphs.run_index`) is kept
there too. Writers on many machines share the database: LangGraph's tables are created under an
advisory lock (two shards starting together would otherwise race in `setup()`), blobs are
inserted with `ON CONFLICT DO NOTHING`, and each run is its own thread.

A view stored as a recipe (`trace_blobs`) names the input image by its absolute path: rebuilding
that view's pixels on another machine needs the image at the same path (listing and replaying
steps never do).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from zoom_refine.graphs.run_index import (
    IndexedSaver,
    RunIndexWriter,
    RunSummary,
    postgres_ensure_index,
    postgres_runs,
    upsert_sql,
)
from zoom_refine.graphs.trace_blobs import BlobRunSaver, BlobStore
from zoom_refine.graphs.trace_urls import display_url, redact
from zoom_refine.tools.errors import InvalidInputError

CONNECT_TIMEOUT_SECONDS = 10
SETUP_LOCK_KEY = 0x7A725F7365747570
"""`pg_advisory_lock` key held while the tables are created ("zr_setup")."""
SETUP_WAIT_SECONDS = 120.0
SETUP_TIMEOUT = (
    "another process has been creating the tables of {url} for over 2 minutes; is it stuck?"
)
CANNOT_CONNECT = "cannot reach the trace database {url}: {reason}"
NO_CREATE_RIGHTS = (
    "the trace database {url} refused to create its tables ({reason}): grant the user CREATE "
    "on the schema (GRANT CREATE ON SCHEMA public TO <user>, as its owner), have its owner write "
    "to it once (the tables are then created), or use another database"
)
NOT_A_DB = "not a trace database: {url} (no checkpoint tables; write one with `--trace-db {url}`)"
BLOB_SCHEMA = """CREATE TABLE IF NOT EXISTS zr_blobs (
    sha256 TEXT PRIMARY KEY,
    mime TEXT NOT NULL DEFAULT '',
    codec TEXT NOT NULL,
    size BIGINT NOT NULL,
    data BYTEA NOT NULL
)"""


def _connect(url: str, **options: Any) -> Any:
    import psycopg

    try:
        return psycopg.Connection.connect(
            url,
            autocommit=True,
            prepare_threshold=0,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            **options,
        )
    except (psycopg.OperationalError, psycopg.ProgrammingError) as error:
        # ProgrammingError: a malformed connection string. libpq's reason may quote it: redacted.
        raise InvalidInputError(
            CANNOT_CONNECT.format(url=display_url(url), reason=error_reason(error, url))
        ) from error


def error_reason(error: BaseException, url: str) -> str:
    """A driver error on one line (libpq's lines joined), every password of `url` (or of any
    other connection string it quotes) hidden."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return redact(text or type(error).__name__, url)


class PostgresBlobStore(BlobStore):
    """`BlobStore` on a table `zr_blobs` in Postgres: the same codecs and checks, its own
    connection (autocommit) and lock."""

    def __init__(self, url: str, *, recipes: bool = True) -> None:
        super().__init__(".", recipes=recipes)
        self.url = url
        self._pg: Any = None
        self._pg_lock = threading.Lock()

    def _connection(self) -> Any:  # never the SQLite file of the base class
        raise NotImplementedError("PostgresBlobStore has no SQLite connection")

    def _pg_connection(self) -> Any:
        if self._pg is None:
            self._pg = _connect(self.url)
        return self._pg

    def close(self) -> None:
        with self._pg_lock:
            if self._pg is not None:
                self._pg.close()
                self._pg = None

    def create_table(self) -> None:
        with self._pg_lock:
            self._pg_connection().execute(BLOB_SCHEMA)
        self._table_ready = True

    def put_bytes(self, data: bytes, mime: str = "") -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._stored:
                return digest
        with self._pg_lock:
            found = (
                self._pg_connection()
                .execute("SELECT 1 FROM zr_blobs WHERE sha256 = %s", (digest,))
                .fetchone()
            )
        if found is None:
            codec, stored = self._encode(data, mime)
            with self._pg_lock:
                self._pg_connection().execute(
                    "INSERT INTO zr_blobs (sha256, mime, codec, size, data) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                    (digest, mime, codec, len(data), stored),
                )
        with self._lock:
            self._stored.add(digest)
        return digest

    def _fetch(self, digest: str) -> tuple[bytes | None, str]:
        import psycopg

        with self._pg_lock:
            try:
                row = (
                    self._pg_connection()
                    .execute("SELECT codec, data FROM zr_blobs WHERE sha256 = %s", (digest,))
                    .fetchone()
                )
            except psycopg.errors.UndefinedTable:  # no table: a marker copied from elsewhere
                row = None
        data, reason = self._decode((str(row[0]), bytes(row[1])) if row else None)
        if data is not None and hashlib.sha256(data).hexdigest() != digest:
            changed = row is not None and row[0] == "view"
            return None, "the input image changed since the run" if changed else "corrupt data"
        return data, reason


class TracePostgresSaver(IndexedSaver, BlobRunSaver, PostgresSaver):
    """PostgresSaver that keeps the run index and compacts its rows per run (`BlobRunSaver`, as
    `trace_blobs.CompactSqliteSaver` does for SQLite)."""

    def index_write(self, row: tuple[str | None, ...]) -> None:
        with self._cursor() as cursor:
            cursor.execute(upsert_sql("postgres"), row)

    def listed_runs(self) -> list[RunSummary]:
        return postgres_runs(self.conn)

    def threads_with_prefix(self, prefix: str) -> list[str]:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
                "AND left(thread_id, %s) = %s GROUP BY thread_id ORDER BY MIN(checkpoint_id)",
                (len(prefix), prefix),
            )
            return [str(row["thread_id"]) for row in cursor.fetchall()]


def _take_setup_lock(conn: Any, url: str) -> None:
    """Wait for the setup lock by polling `pg_try_advisory_lock` (autocommit: no transaction
    stays open while waiting). A blocking `pg_advisory_lock` would deadlock: LangGraph's
    migrations build an index `CONCURRENTLY`, which waits for every open transaction, including
    a second opener's blocked lock call."""
    deadline = time.monotonic() + SETUP_WAIT_SECONDS
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s) AS taken", (SETUP_LOCK_KEY,)).fetchone()
        if row["taken"]:
            return
        if time.monotonic() > deadline:
            raise InvalidInputError(SETUP_TIMEOUT.format(url=display_url(url)))
        time.sleep(0.05)


def has_checkpoint_tables(conn: Any) -> bool:
    row = conn.execute(
        "SELECT to_regclass('checkpoints'), to_regclass('checkpoint_writes')"
    ).fetchone()
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return all(value is not None for value in values)


@contextlib.contextmanager
def open_postgres_saver(
    url: str,
    *,
    create: bool,
    serde: SerializerProtocol,
    graph_key: str,
    blobs: PostgresBlobStore | None,
) -> Iterator[TracePostgresSaver]:
    """A `TracePostgresSaver` on `url`. Writing (`create`) creates the tables once per database,
    under an advisory lock; reading refuses a database without checkpoint tables. Either way
    the run index exists afterwards (`run_index.postgres_ensure_index`)."""
    from psycopg.rows import dict_row

    conn = _connect(url, row_factory=dict_row)
    try:
        saver = TracePostgresSaver(conn, serde=serde)
        with _creating_tables(url):
            _set_up(saver, conn, url, create=create, graph_key=graph_key, blobs=blobs)
        saver.run_index = RunIndexWriter(saver.index_write, graph_key)
        yield saver
    finally:
        conn.close()


def _set_up(
    saver: TracePostgresSaver,
    conn: Any,
    url: str,
    *,
    create: bool,
    graph_key: str,
    blobs: PostgresBlobStore | None,
) -> None:
    """Create the tables (writing) or check they exist (reading); the run index either way."""
    if create:
        _take_setup_lock(conn, url)
        try:
            saver.setup()
            if blobs is not None:
                blobs.create_table()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
    elif not has_checkpoint_tables(conn):
        raise InvalidInputError(NOT_A_DB.format(url=display_url(url)))
    postgres_ensure_index(conn, saver, graph_key)


@contextlib.contextmanager
def _creating_tables(url: str) -> Iterator[None]:
    """A user the database refuses tables to (no CREATE on the schema: PostgreSQL 15's default
    for all but the schema's owner) gets one line saying what to do, not a traceback."""
    import psycopg

    try:
        yield
    except psycopg.errors.InsufficientPrivilege as error:
        raise InvalidInputError(
            NO_CREATE_RIGHTS.format(url=display_url(url), reason=error_reason(error, url))
        ) from error
