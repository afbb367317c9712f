"""The run index (`graphs.run_index`): listing runs reads one small table, not the checkpoints; it
lists what the old path (two whole checkpoints decoded per run) listed; databases written before
it get it once. Postgres: tests/test_postgres_traces.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.state import InputState
from zoom_refine.graphs import run_index
from zoom_refine.graphs.trace_sql import SQLITE
from zoom_refine.graphs.trace_urls import describe_target, display_url, trace_target
from zoom_refine.graphs.traces import (
    GRAPH_KEY,
    IndexedCompactSqliteSaver,
    list_runs,
    open_saver,
    run_graph,
)
from zoom_refine.testing import ScriptedVisionModel
from zoom_refine.tools.errors import InvalidInputError

LOCALIZE = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE = "The close-up is clear.\nRechecked Answer: A\nConfidence: 0.9"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    picture = Image.new("RGB", (800, 600), (128, 128, 128))
    picture.paste((255, 0, 0), (480, 360, 560, 420))
    picture.save(path)
    return path


def inputs(image: Path, question: str = "Colour?") -> InputState:
    return {"image": str(image), "question": question, "options": ["red", "blue"]}


def context(*replies: str) -> ZoomContext:
    return ZoomContext(model=ScriptedVisionModel(replies=list(replies)))


def old_path(db: Path) -> list[run_index.RunSummary]:
    """What listing read before the index: two checkpoints decoded per run."""
    with open_saver(db, images=False) as saver:
        assert isinstance(saver, IndexedCompactSqliteSaver)
        threads = run_index.run_threads(saver.conn)
        return run_index.runs_from_checkpoints(saver, threads, GRAPH_KEY)


def write_runs(db: Path, image: Path) -> list[str]:
    """Four runs of three kinds: Zoom-Refine twice, the baseline, and one that failed midway
    (its model ran out of replies: no answer, no stop reason)."""
    threads = [
        run_graph(inputs(image, "first?"), context(LOCALIZE, REFINE), db=db).thread_id,
        run_graph(inputs(image, "base?"), context("Answer: B"), db=db, graph="baseline").thread_id,
    ]
    heard: list[str] = []
    with pytest.raises(Exception):  # noqa: B017 - any failure: the model has no reply left
        run_graph(inputs(image, "broken?"), context(LOCALIZE), db=db, on_thread=heard.append)
    threads += heard
    threads.append(run_graph(inputs(image, "last?"), context(LOCALIZE, REFINE), db=db).thread_id)
    return [str(thread) for thread in threads]


def test_the_index_lists_what_the_checkpoints_say(tmp_path: Path, image: Path) -> None:
    db = tmp_path / "t.db"
    threads = write_runs(db, image)
    runs = list_runs(db)
    assert runs == old_path(db)  # field by field, in the same order
    assert [run.thread_id for run in runs] == threads
    summary = [(run.question, run.answer, run.stop_reason, run.graph) for run in runs]
    assert summary[0] == ("first?", "A", "confident", "zoom_refine")
    assert summary[1][0] == "base?" and summary[1][3] == "baseline"
    assert summary[2] == ("broken?", "B", None, "zoom_refine")  # localize's answer, then it failed
    assert summary[3] == ("last?", "A", "confident", "zoom_refine")
    assert all(run.started.endswith("+00:00") for run in runs)


def test_listing_decodes_no_checkpoint(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "t.db"
    threads = write_runs(db, image)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("listing read a checkpoint")

    monkeypatch.setattr(IndexedCompactSqliteSaver, "get_tuple", refuse)
    assert [run.thread_id for run in list_runs(db)] == threads


def test_a_run_writes_its_row_three_times(tmp_path: Path, image: Path) -> None:
    """Once with its first checkpoint (the question), again for localize's answer and for the
    refined answer with the stop reason; the other checkpoints change nothing listed."""
    db = tmp_path / "t.db"
    written: list[tuple[Any, ...]] = []
    with open_saver(db, create=True) as saver:
        assert saver.run_index is not None
        write = saver.run_index._write
        saver.run_index._write = lambda row: (written.append(row), write(row))[1]  # type: ignore[assignment, func-returns-value]
        from zoom_refine.graphs.traces import thread_config

        config = thread_config(ZoomContext(), "one-run")
        build_graph(checkpointer=saver).invoke(
            inputs(image), context=context(LOCALIZE, REFINE), config=config
        )
    listed = [(row[0], row[4], row[5], row[6]) for row in written]
    assert listed == [
        ("one-run", "Colour?", None, None),
        ("one-run", "Colour?", "B", None),
        ("one-run", "Colour?", "A", "confident"),
    ]


def test_an_old_database_gets_its_index_once(tmp_path: Path, image: Path) -> None:
    db = tmp_path / "t.db"
    threads = write_runs(db, image)
    indexed = list_runs(db)
    with sqlite3.connect(db) as conn:  # as databases were before the index
        conn.execute(f"DROP TABLE {run_index.RUNS_TABLE}")
    assert list_runs(db) == indexed  # backfilled from the checkpoints ...
    with sqlite3.connect(db) as conn:
        assert run_index.has_index(conn, SQLITE)  # ... and kept
        (rows,) = conn.execute(f"SELECT COUNT(*) FROM {run_index.RUNS_TABLE}").fetchone()
    assert rows == len(threads)
    later = run_graph(inputs(image, "after?"), context(LOCALIZE, REFINE), db=db).thread_id
    assert [run.thread_id for run in list_runs(db)] == [*threads, later]


def index_rows(count: int) -> list[tuple[str, ...]]:
    """`count` finished runs' index rows (`run_index.COLUMNS`), oldest first."""
    started = "2026-01-01T00:00:00+00:00"
    return [
        (
            f"zoom-refine:{i}:{i:032x}",
            f"1f0{i:05d}",
            started,
            "zoom_refine",
            f"question {i}",
            "A",
            "ok",
        )
        for i in range(count)
    ]


def test_sqlite_lists_10000_runs_from_the_index(tmp_path: Path) -> None:
    """10,000 index rows and no checkpoints: every run is listed from the index alone. The time
    bound only catches a hang or a per-run scan; `benchmarks/run_index.py` measures the speed."""
    db = tmp_path / "t.db"
    rows = index_rows(10_000)
    with open_saver(db, create=True) as saver:
        assert isinstance(saver, IndexedCompactSqliteSaver)
        with saver.cursor() as cursor:
            cursor.executemany(run_index.upsert_sql(SQLITE), rows)
    started = time.perf_counter()
    runs = list_runs(db)
    seconds = time.perf_counter() - started
    assert len(runs) == 10_000 and runs[1234].question == "question 1234"
    assert seconds < 30.0, seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("runs/traces.db", Path("runs/traces.db")),
        ("C:/runs/traces.db", Path("C:/runs/traces.db")),  # a Windows drive, not a scheme
        ("postgresql://me@db:5432/traces", "postgresql://me@db:5432/traces"),
        ("postgres://me@db/traces", "postgres://me@db/traces"),
    ],
)
def test_trace_target_tells_files_from_urls(value: str, expected: Path | str) -> None:
    assert trace_target(value) == expected


@pytest.mark.parametrize(
    "value", ["mysql://me@db/traces", "sqlite:///t.db", "postgresql:/db/traces", "https://x/y"]
)
def test_trace_target_refuses_other_urls(value: str) -> None:
    with pytest.raises(InvalidInputError, match="unsupported trace database"):
        trace_target(value)


def test_a_password_is_never_shown() -> None:
    url = "postgresql://me:s3cret@db.example:5432/traces?sslmode=require"
    assert display_url(url) == "postgresql://me:***@db.example:5432/traces?sslmode=require"
    assert describe_target(url) == display_url(url)
    with pytest.raises(InvalidInputError) as refused:
        trace_target("mysql://me:s3cret@db/traces")
    assert "s3cret" not in str(refused.value)
