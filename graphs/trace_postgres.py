"""Trace databases in PostgreSQL, for runs written from several machines (eval shards).

`--trace-db postgresql://user@host:port/db` stores the same checkpoints as a SQLite trace
database, through LangGraph's `PostgresSaver` (langgraph-checkpoint-postgres, psycopg 3), with
the same strict serializer and the same compaction: `TraceSerializer` keeps each image once, in
a table `zr_blobs` of the same database (`postgres_blobs`: the one `graphs.trace_blobs.BlobStore`
on a Postgres connection), and the run index `zr_runs` (`graphs.run_index`) is kept there too.
What is Postgres' own is here: connecting, and creating LangGraph's tables once; the SQL that
differs from SQLite's is in `graphs.trace_sql`. Writers on many machines share the database:
LangGraph's tables are created under an advisory lock (two shards starting together would
otherwise race in `setup()`), blobs are inserted with `ON CONFLICT DO NOTHING`, and each run is
its own thread.

A view stored as a recipe (`trace_blobs`) names the input image by its absolute path: rebuilding
that view's pixels on another machine needs the image at the same path (listing and replaying
steps never do).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from zoom_refine.graphs.run_index import GRAPH_KEY, IndexedSaver, RunIndexWriter, ensure_index
from zoom_refine.graphs.trace_blobs import BlobRunSaver, BlobStore
from zoom_refine.graphs.trace_sql import POSTGRES, BlobTable, has_table
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


def postgres_blobs(url: str, *, recipes: bool = True) -> BlobStore:
    """The image table `zr_blobs` of the database `url`, on a connection of its own
    (autocommit). Its tables are created by `open_postgres_saver`, under the setup lock."""
    return BlobStore(BlobTable(POSTGRES, lambda: _connect(url)), recipes=recipes)


class TracePostgresSaver(IndexedSaver, BlobRunSaver, PostgresSaver):
    """PostgresSaver that keeps the run index and compacts its rows per run (`BlobRunSaver`, as
    `trace_blobs.CompactSqliteSaver` does for SQLite)."""

    sql = POSTGRES

    def _locked_cursor(self) -> AbstractContextManager[Any]:
        return self._cursor()


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
    return all(has_table(conn, POSTGRES, table) for table in POSTGRES.checkpoint_tables)


@contextlib.contextmanager
def open_postgres_saver(
    url: str,
    *,
    create: bool,
    serde: SerializerProtocol,
    blobs: BlobStore | None,
) -> Iterator[TracePostgresSaver]:
    """A `TracePostgresSaver` on `url`. Writing (`create`) creates the tables once per database,
    under an advisory lock; reading refuses a database without checkpoint tables. Either way
    the run index exists afterwards (`run_index.ensure_index`)."""
    from psycopg.rows import dict_row

    conn = _connect(url, row_factory=dict_row)
    try:
        saver = TracePostgresSaver(conn, serde=serde)
        with _creating_tables(url):
            _set_up(saver, conn, url, create=create, blobs=blobs)
        saver.run_index = RunIndexWriter(saver.index_write, GRAPH_KEY)
        yield saver
    finally:
        conn.close()


def _set_up(
    saver: TracePostgresSaver,
    conn: Any,
    url: str,
    *,
    create: bool,
    blobs: BlobStore | None,
) -> None:
    """Create the tables (writing) or check they exist (reading); the run index either way."""
    if create:
        _take_setup_lock(conn, url)
        try:
            saver.setup()
            if blobs is not None:
                blobs.table.create()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
    elif not has_checkpoint_tables(conn):
        raise InvalidInputError(NOT_A_DB.format(url=display_url(url)))
    ensure_index(conn, POSTGRES, saver)


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
