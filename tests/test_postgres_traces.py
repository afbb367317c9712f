"""Trace databases in PostgreSQL (`--trace-db postgresql://…`), against a real server started here
(`tests/postgres_server.py`: initdb into a temp folder, 127.0.0.1, a free port; skipped with the
apt package to install when no server binaries exist). Also: a URL scheme we do not support is
one clear error, never a file under a folder named after the scheme."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from PIL import Image
from postgres_server import INSTALL_HINT, PostgresServer, postgres_server, server_binaries
from postgres_server import USER as PG_USER
from postgres_server import _stop as stop_postgres
from servers import free_port
from test_run_index import index_rows
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.agent.state import InputState
from zoom_refine.cli import app
from zoom_refine.graphs import run_index
from zoom_refine.graphs.trace_blobs import BlobStore
from zoom_refine.graphs.trace_postgres import postgres_blobs
from zoom_refine.graphs.trace_sql import POSTGRES
from zoom_refine.graphs.traces import list_runs, open_saver, read_trace, run_graph, sample_runs
from zoom_refine.testing import ScriptedVisionModel

runner = CliRunner()
LOCALIZE = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE = "The close-up is clear.\nRechecked Answer: A\nConfidence: 0.9"
ROW_LIMIT = 64 * 1024
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.+-]+|\b[\d.]+ s\b")
"""Times and durations: what two equal runs' replays differ in."""
_names = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if server_binaries() is None:
        pytest.skip(f"no PostgreSQL server binaries: {INSTALL_HINT}")
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A new, empty database for each test."""
    return postgres.create_database(f"traces_{os.getpid()}_{next(_names)}")


def scene(path: Path) -> Path:
    image = Image.new("RGB", (1000, 750), (128, 128, 128))
    image.paste((255, 0, 0), (600, 450, 700, 525))
    image.save(path)
    return path


def inputs(image: Path) -> InputState:
    return {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}


def timeless(value: Any) -> Any:
    """`value` without the `seconds` a step took (the only thing two equal runs differ in)."""
    if isinstance(value, dict):
        return {key: timeless(item) for key, item in value.items() if key != "seconds"}
    if isinstance(value, list):
        return [timeless(item) for item in value]
    return value


def conversation(messages: list[Any]) -> list[Any]:
    return [(m.type, m.content, getattr(m, "artifact", None)) for m in messages]


def context() -> ZoomContext:
    return ZoomContext(model=ScriptedVisionModel(replies=[LOCALIZE, REFINE]), image_format="bmp")


# --- what --trace-db accepts ------------------------------------------------------------------


def cli_commands(image: Path, target: str) -> list[list[str]]:
    data = str(image.parent / "missing.tsv")
    return [
        ["ask", str(image), "Colour?", "--trace-db", target],
        ["eval", "hr-bench", "--data", data, "--trace-db", target],
        ["trace", target],
    ]


@pytest.mark.parametrize(
    "target",
    ["mysql://me:s3cret@db.example:3306/traces", "sqlite:///tmp/x.db", "postgresql:/h/db"],
)
def test_an_unsupported_trace_db_url_is_one_clear_error(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = scene(tmp_path / "scene.png")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    for args in cli_commands(image, target):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "unsupported trace database" in lines[0], result.stderr
        assert "s3cret" not in result.output
    assert list(work.iterdir()) == []  # no folder `mysql:` or `postgresql:`, no file


def test_an_unreachable_postgres_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"postgresql://me:s3cret@127.0.0.1:{free_port()}/traces"  # nothing listens there
    result = runner.invoke(app, ["trace", url])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach the trace database postgresql://me:***@127.0.0.1")
    assert "s3cret" not in result.output
    assert list(tmp_path.iterdir()) == []


# --- one run, both stores ---------------------------------------------------------------------


def test_a_run_reads_back_from_postgres_as_from_sqlite(pg_url: str, tmp_path: Path) -> None:
    image = scene(tmp_path / "scene.png")
    on_pg = run_graph(inputs(image), context(), db=pg_url)
    on_sqlite = run_graph(inputs(image), context(), db=tmp_path / "t.db")
    assert timeless(on_pg.result) == timeless(on_sqlite.result) and on_pg.thread_id

    pg, lite = (
        read_trace(pg_url, on_pg.thread_id),
        read_trace(tmp_path / "t.db", on_sqlite.thread_id),
    )
    assert [(s.step, s.node, timeless(s.record), s.view_box) for s in pg.steps] == [
        (s.step, s.node, timeless(s.record), s.view_box) for s in lite.steps
    ]
    assert [s.node for s in pg.steps] == ["localize", "crop", "refine"]
    # the state, the conversation's images included (rebuilt from zr_blobs); ids are per run
    assert conversation(pg.state["messages"]) == conversation(lite.state["messages"])
    assert timeless({**pg.state, "messages": 0}) == timeless({**lite.state, "messages": 0})
    (listed,) = list_runs(pg_url)
    assert (listed.thread_id, listed.question, listed.answer, listed.stop_reason) == (
        on_pg.thread_id,
        "Colour?",
        "A",
        "confident",
    )
    assert listed.graph == "zoom_refine"

    import psycopg

    with psycopg.connect(pg_url) as conn:
        kinds = {row[0] for row in conn.execute("SELECT type FROM checkpoint_blobs")}
        kinds |= {row[0] for row in conn.execute("SELECT type FROM checkpoint_writes")}
        assert kinds <= {"msgpack", "empty", "null"}, kinds  # never pickle
        (largest,) = conn.execute(
            "SELECT MAX(GREATEST(octet_length(blob), 0)) FROM checkpoint_blobs"
        ).fetchone()
        (writes,) = conn.execute("SELECT MAX(octet_length(blob)) FROM checkpoint_writes").fetchone()
        assert largest < ROW_LIMIT and writes < ROW_LIMIT  # images live in zr_blobs, once
        (images,) = conn.execute("SELECT COUNT(*) FROM zr_blobs").fetchone()
        assert images == 2  # the first view and the crop


def test_cli_asks_into_postgres_and_trace_lists_and_replays(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = scene(tmp_path / "scene.png")
    model = ScriptedVisionModel(replies=[LOCALIZE, REFINE] * 2)
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    monkeypatch.chdir(tmp_path)
    shown = {}
    for db in (pg_url, str(tmp_path / "t.db")):
        asked = runner.invoke(
            app, ["ask", str(image), "Colour?", "-o", "red", "-o", "blue", "--trace-db", db]
        )
        assert asked.exit_code == 0, asked.output
        (run,) = list_runs(db)
        assert f"trace: thread {run.thread_id} in {db}" in asked.stderr
        listed = runner.invoke(app, ["trace", db])
        assert listed.exit_code == 0, listed.output
        assert listed.stdout.split()[0] == run.thread_id and "→ A" in listed.stdout
        replayed = runner.invoke(app, ["trace", db, run.thread_id])
        assert replayed.exit_code == 0, replayed.output
        shown[db] = [line.replace(run.thread_id, "T") for line in replayed.stdout.splitlines()]
    pg_lines, lite_lines = (
        [ISO_TIME.sub("TIME", line) for line in lines] for lines in shown.values()
    )
    assert pg_lines == lite_lines and len(pg_lines) > 3
    assert pg_lines[-1] == "answer A  stopped: confident"
    assert [p for p in tmp_path.iterdir() if p.name.startswith("postgres")] == []


# --- one store, two backends: the same contract -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def trace_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty trace database of each backend: a SQLite file, a Postgres database."""
    if request.param == "sqlite":
        return str(tmp_path / "t.db")
    return str(request.getfixturevalue("pg_url"))


def blob_store(db: str) -> BlobStore:
    """A store of its own on `db` (nothing remembered from another store's writes)."""
    return postgres_blobs(db) if db.startswith("postgresql://") else BlobStore(db)


def blob_rows(db: str) -> list[tuple[str, str, int]]:
    """(sha256, codec, size) of every row of `zr_blobs`, read with the driver itself."""
    query = "SELECT sha256, codec, size FROM zr_blobs ORDER BY sha256"
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            return [(str(a), str(b), int(c)) for a, b, c in conn.execute(query).fetchall()]
    with closing(sqlite3.connect(db)) as lite:
        return [(str(a), str(b), int(c)) for a, b, c in lite.execute(query).fetchall()]


def test_the_blob_store_keeps_the_same_contract_on_both_backends(trace_db: str) -> None:
    packed = b"zoom-refine " * 2000  # compresses: stored as zlib
    noise = random.Random(7).randbytes(5000)  # does not: stored as it is
    missing = hashlib.sha256(b"never stored").hexdigest()
    first = blob_store(trace_db)
    try:
        assert first.get_bytes(missing) is None  # no table yet: nothing, not an error
        digests = [first.put_bytes(packed, "image/bmp"), first.put_bytes(noise)]
        assert digests == [hashlib.sha256(data).hexdigest() for data in (packed, noise)]
        first.table.insert(digests[1], "", "raw", len(noise), noise)  # a racing writer's insert
    finally:
        first.close()
    second = blob_store(trace_db)  # another process: it knows nothing of the first's writes
    try:
        assert second.put_bytes(packed, "image/bmp") == digests[0]
        assert second.get_bytes(digests[0]) == packed and second.get_bytes(digests[1]) == noise
        assert second.get_bytes(missing) is None
    finally:
        second.close()
    assert blob_rows(trace_db) == sorted(
        [(digests[0], "zlib", len(packed)), (digests[1], "raw", len(noise))]
    )


def put_checkpoint(saver: Any, thread_id: str, namespace: str = "") -> None:
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": namespace}}
    saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


def test_threads_with_prefix_matches_literally_on_both_backends(trace_db: str) -> None:
    """`%` and `_` in a prefix are characters, not LIKE's wildcards; runs come oldest first,
    one entry per run, subgraph checkpoints not counted."""
    threads = ["50%_off:2", "50%Xoff:1", "50X_off:3", "5%_off:4", "50%_off:1", "a_b:1", "axb:1"]
    with open_saver(trace_db, create=True) as saver:
        for thread in threads:
            put_checkpoint(saver, thread)
        put_checkpoint(saver, "50%_off:2")  # a second checkpoint of an earlier run
        put_checkpoint(saver, "50%_off:9", namespace="child")  # a subgraph's, not a run
        assert saver.threads_with_prefix("50%_off:") == ["50%_off:2", "50%_off:1"]
        assert saver.threads_with_prefix("a_b") == ["a_b:1"]
        assert saver.threads_with_prefix("%") == []
        assert saver.threads_with_prefix("") == [*threads]


def test_the_run_index_merges_rows_alike_on_both_backends(trace_db: str) -> None:
    started = "2026-01-01T00:00:00+00:00"
    with open_saver(trace_db, create=True) as saver:
        saver.index_write(("run:1", "1f02", started, "zoom_refine", "Colour?", None, None))
        saver.index_write(("run:0", "1f01", started, "baseline", "Shape?", "B", "ok"))
        saver.index_write(("run:1", "1f02", started, None, None, "A", "confident"))
        listed = saver.listed_runs()
    assert [(r.thread_id, r.graph, r.question, r.answer, r.stop_reason) for r in listed] == [
        ("run:0", "baseline", "Shape?", "B", "ok"),
        ("run:1", "zoom_refine", "Colour?", "A", "confident"),
    ]
    assert list_runs(trace_db) == listed


# --- shards on several machines ---------------------------------------------------------------

SHARD_SCRIPT = (
    "import sys; from pathlib import Path; from zoom_refine import ZoomContext;"
    "from zoom_refine.evals.runner import EvalPlan, parse_shard, run_eval;"
    "from zoom_refine.testing import RuleVisionModel;"
    "run_eval(EvalPlan(benchmark='hr-bench', data=Path(sys.argv[1]), out=Path(sys.argv[2]),"
    " methods=('baseline', 'zoom-refine'), trace_db=sys.argv[3], shard=parse_shard(sys.argv[4]),"
    " concurrency=2), ZoomContext(model=RuleVisionModel()))"
)


def predictions(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_two_eval_shards_write_one_postgres_database_concurrently(
    pg_url: str, tmp_path: Path
) -> None:
    """`--shard 0/2` and `--shard 1/2` as two processes at once (as on two machines), one
    database: every run of both is there, and each replays to exactly its record."""
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    started = time.perf_counter()
    procs = {
        shard: subprocess.Popen(
            [
                sys.executable,
                "-c",
                SHARD_SCRIPT,
                str(data),
                str(tmp_path / f"s{shard[0]}"),
                pg_url,
                shard,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in ("0/2", "1/2")
    }
    for proc in procs.values():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    print(f"two shards into one Postgres database: {time.perf_counter() - started:.1f} s")

    records = [r for shard in ("s0", "s1") for r in predictions(tmp_path / shard)]
    ok = [r for r in records if r["status"] == "ok"]
    by_shard = [{r["id"] for r in predictions(tmp_path / s)} for s in ("s0", "s1")]
    assert by_shard[0] and by_shard[1] and not by_shard[0] & by_shard[1]  # really two shards
    assert len(ok) == 10  # 5 good rows x 2 methods (row 4 is malformed: no run)

    runs = {run.thread_id: run for run in list_runs(pg_url)}
    assert set(runs) == {r["thread_id"] for r in ok}  # nothing lost, nothing extra
    for record in ok:
        run = runs[record["thread_id"]]
        assert (run.question, run.answer, run.stop_reason) == (
            record["question"],
            record["answer"],
            record["stop_reason"],
        )
        assert run.graph == {"baseline": "baseline", "zoom-refine": "zoom_refine"}[record["method"]]
        trace = read_trace(pg_url, record["thread_id"], images=False)
        assert trace.state["answer"] == record["answer"]
        assert trace.state["views"] == record["views"]
        assert [s["raw"] for s in trace.state["steps"]] == [s["raw"] for s in record["steps"]]
        recorded = [s.record for s in trace.steps if s.record and s.record.get("raw") is not None]
        assert [s["raw"] for s in recorded] == [s["raw"] for s in record["steps"]]
        key = f"{record['method']}:{record['id']}"
        assert sample_runs(pg_url, key) == [record["thread_id"]]
    shown = runner.invoke(app, ["trace", pg_url, f"zoom-refine:{sorted(by_shard[1])[0]}"])
    assert shown.exit_code == 0, shown.output
    assert "step 0" in shown.stdout and shown.stdout.splitlines()[-1].startswith("answer ")


# --- the run index in Postgres ----------------------------------------------------------------


def test_an_old_postgres_database_gets_its_index_once(pg_url: str, tmp_path: Path) -> None:
    image = scene(tmp_path / "scene.png")
    first = [run_graph(inputs(image), context(), db=pg_url).thread_id for _ in range(3)]
    indexed = list_runs(pg_url)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {run_index.RUNS_TABLE}")  # as written before the index
    with open_saver(pg_url, images=False) as saver:  # the old path, for comparison
        threads = run_index.run_threads(saver.conn)
        old = run_index.runs_from_checkpoints(saver, threads, "graph")
    assert [run.thread_id for run in old] == first
    backfilled = list_runs(pg_url)  # builds the index from the checkpoints, once
    assert backfilled == indexed == old
    later = run_graph(inputs(image), context(), db=pg_url).thread_id
    assert [run.thread_id for run in list_runs(pg_url)] == [*first, later]


@pytest.mark.slow
def test_postgres_lists_10000_runs_from_the_index(pg_url: str) -> None:
    """As tests/test_run_index.py does for SQLite: the bound only catches a hang or a per-run
    scan on a loaded machine; `benchmarks/run_index.py --postgres` measures the speed."""
    with open_saver(pg_url, create=True) as saver:
        rows = index_rows(10_000)
        with saver._cursor() as cursor:
            cursor.executemany(run_index.upsert_sql(POSTGRES), rows)
    list_runs(pg_url)  # connect once (warm)
    started = time.perf_counter()
    runs = list_runs(pg_url)
    seconds = time.perf_counter() - started
    assert len(runs) == 10_000 and runs[1234].question == "question 1234"
    assert seconds < 30.0, seconds


# --- a database that refuses, or goes away (issue 21, item 5) --------------------------------


def user_without_create(postgres: PostgresServer, url: str) -> str:
    """`url` for a new login role that may connect but not create tables (PostgreSQL 15+: the
    public schema grants CREATE to its owner only; revoked explicitly for older servers)."""
    import psycopg

    role = f"limited_{os.getpid()}_{next(_names)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    return url.replace(f"//{PG_USER}@", f"//{role}@", 1)


@pytest.mark.reliability(
    "Traces",
    "a Postgres trace database whose user may not create tables (ask, eval)",
    "one line saying the database refused to create its tables and what to do; eval writes "
    "nothing (no config.json) and loads no model",
)
def test_a_user_without_create_rights_gets_one_line_and_nothing_written(
    postgres: PostgresServer, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limited = user_without_create(postgres, pg_url)
    image = scene(tmp_path / "scene.png")
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    model = ScriptedVisionModel(replies=[])  # never called: refused before
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    out = tmp_path / "run"
    for args in (
        ["ask", str(image), "Colour?", "--trace-db", limited],
        ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--trace-db", limited],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert "refused to create its tables" in line and "GRANT CREATE ON SCHEMA" in line, line
        assert "permission denied" in line, line
    assert not out.exists()  # checked before the folder, its lock or config.json
    assert model.requests == []


class StopsTheDatabase(ScriptedVisionModel):
    """Replies as scripted; on call `stop_at` first stops the PostgreSQL server `server`."""

    server: Any = None
    stop_at: int = 2

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        if len(self.requests) == self.stop_at:
            stop_postgres(self.server.process)
        return super()._generate(messages, stop, run_manager, **kwargs)


@pytest.mark.reliability(
    "Traces",
    "the Postgres trace database stops mid-eval",
    "one line saying the trace database became unreachable (not 'free space'); the records "
    "before it are kept and the run resumes",
)
def test_postgres_stopping_mid_eval_says_the_database_became_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if server_binaries() is None:
        pytest.skip(f"no PostgreSQL server binaries: {INSTALL_HINT}")
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    with postgres_server() as server:  # its own server: this test stops it
        url = server.create_database("stops")
        model = StopsTheDatabase(replies=[LOCALIZE, REFINE] * 10, server=server, stop_at=2)
        monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
        args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--trace-db", url]
        result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert "error: the trace database postgresql://" in line, line
    assert "became unreachable" in line and "free space" not in line, line
    assert "run the same command again to resume" in line
    assert len(predictions(out)) == 1  # the sample before the stop is kept
