"""Trace-database size: plain checkpoints (every image in every row) vs compact ones (each image
once per database, `graphs.trace_blobs`), side by side in one run.

Each case is written three times, each into a fresh SQLite file: `plain` with the strict
serializer alone (`graphs.traces.open_saver(compact=False)`: every image in every row), `once`
with each image stored once as zlib-compressed bytes (`BlobStore(recipes=False)`), and `compact`,
the default (`open_saver()`: views of the input image as recipes, other images as in `once`).
Cases:

- `ask` 1-hop on examples/station.png (3840×2160): localize, crop, refine with a scripted model;
  BMP views as in-process models get them (`image_format="bmp"`), and PNG views as servers do.
- a 4K photo-like sample (`tests/dataset_fixtures.photo_like`, JPEG q90) run with both methods,
  zoom-refine and baseline, into one shared saver as `evals.runner` runs them (`run_one`), with a
  rule model whose box covers the middle 60 % (a 2048×1152 crop: the largest views); once as an
  image file (V*, MME-RealWorld JSON) and once as bytes (HR-Bench TSV, parquet cells).

Prints per case the database size (the file and its -wal), the time to write the run(s) and to
read the run back with its images (`read_trace`), and the target.

    python benchmarks/trace_size.py
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.sqlite import SqliteSaver

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # for dataset_fixtures (test data, not in the package)

from dataset_fixtures import photo_like  # noqa: E402

from zoom_refine import ZoomContext, build_graph  # noqa: E402
from zoom_refine.evals.runner import run_one  # noqa: E402
from zoom_refine.evals.samples import Sample  # noqa: E402
from zoom_refine.graphs.baseline import build_baseline_graph  # noqa: E402
from zoom_refine.graphs.trace_blobs import (  # noqa: E402
    BlobStore,
    CompactSqliteSaver,
    TraceSerializer,
)
from zoom_refine.graphs.traces import (  # noqa: E402
    list_runs,
    open_saver,
    read_trace,
    thread_config,
)
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel  # noqa: E402
from zoom_refine.tools.encoding import ImageFormat  # noqa: E402

STATION = ROOT / "examples" / "station.png"
QUESTION = "Which platform does the train to Geneva leave from?"
LOCALIZE = "Answer: B\nBounding box: [0.68, 0.64, 0.78, 0.72]"
REFINE = "The board reads GENEVA 7.\nRechecked Answer: B\nConfidence: 0.9"
MB = 1024 * 1024
Mode = Literal["plain", "once", "compact"]
MODES: tuple[Mode, ...] = ("plain", "once", "compact")


@contextmanager
def saver_for(db: Path, mode: Mode) -> Iterator[SqliteSaver]:
    if mode != "once":
        with open_saver(db, create=True, compact=mode == "compact") as saver:
            yield saver
        return
    conn = sqlite3.connect(str(db), check_same_thread=False)
    blobs = BlobStore(db, recipes=False)
    try:
        yield CompactSqliteSaver(conn, serde=TraceSerializer(blobs))
    finally:
        blobs.close()
        conn.close()


def ask_station(image_format: ImageFormat) -> Callable[[Path, Mode], None]:
    """One 1-hop run on the station, as `zoom-refine ask … --trace-db DB` makes it."""

    def run(db: Path, mode: Mode) -> None:
        context = ZoomContext(
            model=ScriptedVisionModel(replies=[LOCALIZE, REFINE]), image_format=image_format
        )
        inputs: Any = {
            "image": str(STATION),
            "question": QUESTION,
            "options": ["3", "7", "12", "5"],
        }
        with saver_for(db, mode) as saver:
            build_graph(checkpointer=saver).invoke(
                inputs, context=context, config=thread_config(context)
            )

    return run


def eval_sample(image: str | bytes) -> Callable[[Path, Mode], None]:
    """One sample, both methods, one shared saver: as `zoom-refine eval --method both --trace-db`."""

    def run(db: Path, mode: Mode) -> None:
        context = ZoomContext(model=RuleVisionModel(), image_format="bmp")
        sample = Sample(
            id="0", image=image, question="Q?", options={"A": "a", "B": "b"}, answer="A"
        )
        with saver_for(db, mode) as saver:
            graphs = {
                "zoom-refine": build_graph(checkpointer=saver),
                "baseline": build_baseline_graph(checkpointer=saver),
            }
            for method, graph in graphs.items():
                record = run_one(graph, "hr-bench", sample, method, context, traced=True)
                assert record["status"] == "ok", record

    return run


def db_size(db: Path) -> int:
    return sum(path.stat().st_size for path in db.parent.glob(db.name + "*"))


def measure(run: Callable[[Path, Mode], None], db: Path, mode: Mode) -> tuple[int, float, float]:
    """(bytes, seconds to write, seconds to read every run back with its images)."""
    started = time.perf_counter()
    run(db, mode)
    written = time.perf_counter() - started
    started = time.perf_counter()
    for summary in list_runs(db):
        read_trace(db, summary.thread_id)
    return db_size(db), written, time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.jpg"
        photo_like((3840, 2160), seed=3).save(photo, "JPEG", quality=90)
        cases: list[tuple[str, Callable[[Path, Mode], None], str]] = [
            ("ask 1-hop, station 4K, BMP views", ask_station("bmp"), "≤ 1 MB"),
            ("ask 1-hop, station 4K, PNG views", ask_station("png"), "≤ 1 MB"),
            ("eval both methods, 4K photo file", eval_sample(str(photo)), "≤ 2 MB"),
            (
                f"eval both methods, 4K photo bytes ({photo.stat().st_size / MB:.1f} MB)",
                eval_sample(photo.read_bytes()),
                "the input once",
            ),
        ]
        ask_station("bmp")(Path(folder) / "warm.db", "compact")  # imports, torch: not timed
        header = (
            f"{'case':<44} {'plain':>9} {'once':>9} {'compact':>9}  "
            f"{'write s':<12}  {'read s':<12}  target"
        )
        print(header)
        print("-" * len(header))
        for number, (name, run, target) in enumerate(cases):
            sizes, times = {}, {}
            for mode in MODES:
                size, written, read = measure(run, Path(folder) / f"{mode}-{number}.db", mode)
                sizes[mode], times[mode] = size / MB, (written, read)
            (plain_write, plain_read), (write, read) = times["plain"], times["compact"]
            print(
                f"{name:<44} {sizes['plain']:>6.2f} MB {sizes['once']:>6.2f} MB "
                f"{sizes['compact']:>6.2f} MB  {plain_write:.2f} → {write:.2f}  "
                f"{plain_read:.2f} → {read:.2f}  {target}"
            )
        print("write s, read s: plain → compact (reading every run back with its images)")


if __name__ == "__main__":
    main()
