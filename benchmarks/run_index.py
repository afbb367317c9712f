"""Listing runs: the old path (two whole checkpoints decoded per run) vs the run index
(`graphs.run_index`: one small row per run), side by side, on SQLite and on PostgreSQL.

Each store gets one real Zoom-Refine run (localize, crop, refine; a scripted model; a 1000×750
image, PNG views), then N-1 copies of it under new thread ids, each written through the trace
saver as a run would be (its first and last checkpoints: all the old path reads, with their
index rows written by the saver). Then both listings are timed on the same database:

- `old path`: `run_index.runs_from_checkpoints`, what `graphs.traces.list_runs` did before the
  index (one GROUP BY over the checkpoints, then two `get_tuple` per run);
- `index`: `graphs.traces.list_runs` now (open the database, read `zr_runs`).

Postgres: a throwaway server started here (`tests/postgres_server.py`, needs Debian's
`postgresql`), or `--postgres URL` of an empty database.

    python benchmarks/run_index.py [--runs 10000] [--postgres postgresql://user@host:port/db]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base.id import uuid6
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # postgres_server.py: a test helper, not in the package

from zoom_refine import ZoomContext  # noqa: E402
from zoom_refine.graphs import run_index  # noqa: E402
from zoom_refine.graphs.traces import GRAPH_KEY, list_runs, open_saver, run_graph  # noqa: E402
from zoom_refine.testing import ScriptedVisionModel  # noqa: E402

LOCALIZE = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE = "The close-up is clear.\nRechecked Answer: A\nConfidence: 0.9"
TARGET_SECONDS = 1.0


def fill(db: str | Path, image: Path, runs: int) -> float:
    """One real run into `db`, then `runs - 1` copies of its first and last checkpoints under
    new threads; the seconds the copies took to write."""
    context = ZoomContext(model=ScriptedVisionModel(replies=[LOCALIZE, REFINE]))
    inputs = {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}
    real = run_graph(inputs, context, db=db)  # type: ignore[arg-type]
    with open_saver(db, images=False) as saver:
        history = list(saver.list({"configurable": {"thread_id": real.thread_id}}))
        first, last = history[-1], history[0]  # newest first
        if isinstance(db, Path):  # a benchmark file: no fsync per commit
            saver.conn.execute("PRAGMA synchronous = OFF")  # type: ignore[attr-defined]
        started = time.perf_counter()
        clock = datetime.now(UTC)
        for index in range(1, runs):
            thread = f"zoom-refine:{index}:{uuid6().hex}"
            parent: str | None = None
            for found in (first, last):
                clock += timedelta(milliseconds=1)
                checkpoint = {**found.checkpoint, "id": str(uuid6()), "ts": clock.isoformat()}
                config: dict[str, Any] = {
                    "configurable": {"thread_id": thread, "checkpoint_ns": ""}
                }
                if parent:
                    config["configurable"]["checkpoint_id"] = parent
                config["metadata"] = {GRAPH_KEY: "zoom_refine"}
                saver.put(
                    config,  # type: ignore[arg-type]
                    checkpoint,  # type: ignore[arg-type]
                    found.metadata,
                    dict(checkpoint["channel_versions"]),
                )
                parent = checkpoint["id"]
        return time.perf_counter() - started


def old_path(db: str | Path) -> list[run_index.RunSummary]:
    with open_saver(db, images=False) as saver:
        conn: Any = saver.conn  # type: ignore[attr-defined]
        if isinstance(conn, sqlite3.Connection):
            threads = run_index.sqlite_threads(conn)
        else:
            threads = run_index.postgres_threads(conn)
        return run_index.runs_from_checkpoints(saver, threads, GRAPH_KEY)


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def measure(name: str, db: str | Path, image: Path, runs: int) -> dict[str, Any]:
    writing = fill(db, image, runs)
    list_runs(db)  # warm: the first open of a process imports and connects
    indexed, index_seconds = timed(list_runs, db)
    old, old_seconds = timed(old_path, db)
    if indexed != old:
        raise SystemExit(f"{name}: the index lists something else than the checkpoints")
    return {
        "store": name,
        "runs": len(indexed),
        "write": writing,
        "old": old_seconds,
        "index": index_seconds,
    }


@contextlib.contextmanager
def postgres_database(url: str | None) -> Iterator[str | None]:
    if url:
        yield url
        return
    from postgres_server import postgres_server, server_binaries

    if server_binaries() is None:
        print("no PostgreSQL server binaries (apt-get install postgresql): Postgres skipped")
        yield None
        return
    with postgres_server() as server:
        yield server.create_database("run_index_benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--postgres", help="URL of an empty Postgres database")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "scene.png"
        picture = Image.new("RGB", (1000, 750), (128, 128, 128))
        picture.paste((255, 0, 0), (600, 450, 700, 525))
        picture.save(image)
        rows.append(measure("SQLite", Path(folder) / "traces.db", image, args.runs))
        with postgres_database(args.postgres) as url:
            if url:
                rows.append(measure("Postgres", url, image, args.runs))
    print(f"{'store':<9} {'runs':>6}  {'old path':>9}  {'index':>8}  {'speed-up':>8}  (writing)")
    for row in rows:
        verdict = "ok" if row["index"] < TARGET_SECONDS else f"over {TARGET_SECONDS:.0f} s"
        print(
            f"{row['store']:<9} {row['runs']:>6}  {row['old']:>8.2f}s  {row['index']:>7.3f}s  "
            f"{row['old'] / row['index']:>7.0f}x  ({row['write']:.0f} s)  {verdict}"
        )


if __name__ == "__main__":
    main()
