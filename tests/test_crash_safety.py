"""Crash safety of eval output: `zoom-refine eval` SIGKILLed at random moments, then resumed.

Five seeded runs of a 40-sample HR-Bench fixture through the protocol-trained tiny InternVL (a
real model, `hf:`; square 64-px images so every view is one 448-px tile and a sample takes a
fraction of a second). Each run is killed two or three times: once during start-up (before the
first line), then after a random number of lines plus a random sub-second delay (in the next
sample, or while a line is written; the last run's final kill comes after all 40 lines, while the
summary is written), and resumed until it finishes. A SIGKILL rarely lands inside the `write` of a
line (one short syscall), so in runs 0, 2 and 4 the test also appends, after each kill that left a
line, what such a torn write leaves: a cut-off copy of a record without its newline.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dataset_fixtures as fixtures
import pytest
from PIL import Image

ROWS = 40
RUNS = 5
START_UP_KILL_S = 1.0
"""Kills before this many seconds land in start-up: importing torch alone takes longer."""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
"""One intra-op thread: the tiny model gains nothing from more, and spinning OpenMP threads on a
busy 2-core machine made the same run take anywhere from 15 to 70 s."""


@pytest.fixture(scope="module")
def square_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 HR-Bench rows (ids 0-39) of flat 64×64 images: one tile each, so samples are quick."""
    colours = list(fixtures.COLORS.values())
    rows = []
    for index in range(ROWS):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colours[index % len(colours)]).save(buffer, format="JPEG")
        options = ["red", "blue", "green", "white"]
        row = [index, f"Question {index}?", "ABCD"[index % 4], "single", *options]
        rows.append([*row, f"cycle{index % 4 + 1}", fixtures.b64(buffer.getvalue())])
    folder = tmp_path_factory.mktemp("crash-safety")
    return fixtures.write_tsv(folder / "hr_bench_4k.tsv", fixtures.HR_HEADER, rows)


def eval_command(data: Path, model: Path, out: Path, concurrency: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "zoom-refine"),
        "eval",
        "hr-bench",
        "--data",
        str(data),
        "--model",
        f"hf:{model}",
        "--out",
        str(out),
        "--concurrency",
        str(concurrency),
    ]


def complete_lines(path: Path) -> bytes:
    """The file up to its last newline: the records a resumed run must keep byte for byte."""
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1]


def kill_after(
    process: subprocess.Popen[bytes], predictions: Path, lines: int, delay: float
) -> None:
    """SIGKILL `process` `delay` seconds after the file holds `lines` lines (or it exited)."""
    while process.poll() is None and complete_lines(predictions).count(b"\n") < lines:
        time.sleep(0.005)
    time.sleep(delay)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.reliability(
    "Crash safety",
    "`zoom-refine eval` of 40 samples SIGKILLed 2-3 times at seeded random moments (during "
    "start-up before any line, after a random line count plus 0-0.3 s, and in one run after the "
    "last line), with a cut-off record appended after the kills of three runs as a torn write "
    "would leave it; resumed each time until it exits 0; five runs",
    "predictions.jsonl then holds the 40 ids exactly once each, every line is whole JSON ending "
    "in a newline (torn tails dropped on resume), and every line written before each kill is "
    "still there byte for byte, in place",
)
def test_sigkill_at_random_moments_then_resume_keeps_every_record_once(
    run: int, tmp_path: Path, square_rows: Path, trained_internvl_path: Path
) -> None:
    rng = random.Random(f"crash-safety-{run}")
    out = tmp_path / "run"
    predictions = out / "predictions.jsonl"
    targets = sorted(rng.sample(range(1, ROWS + 1), rng.randint(1, 2)))
    if run == RUNS - 1:
        targets[-1] = ROWS  # late: the last line is written, the summary is not yet
    kills = [(0, rng.uniform(0.0, START_UP_KILL_S))] + [(n, rng.uniform(0.0, 0.3)) for n in targets]
    kept: list[bytes] = []
    for lines, delay in kills:
        command = eval_command(square_rows, trained_internvl_path, out, rng.choice([1, 2]))
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
        )
        kill_after(process, predictions, lines, delay)
        kept.append(complete_lines(predictions))
        if kept[-1] and run % 2 == 0:  # what a SIGKILL inside `write` would leave
            last = kept[-1].splitlines()[-1]
            with predictions.open("ab") as handle:
                handle.write(last[: rng.randint(1, len(last) - 1)])

    command = eval_command(square_rows, trained_internvl_path, out, rng.choice([1, 2]))
    finished = subprocess.run(command, capture_output=True, timeout=300, check=False, env=ENV)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]

    data = predictions.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]  # no torn or partial line
    assert sorted(int(record["id"]) for record in records) == list(range(ROWS))
    assert all(record["method"] == "zoom-refine" for record in records)
    for before in kept:  # append-only: what was written before a kill is unchanged, in place
        assert data.startswith(before)
    assert kept[0] == b""  # the first kill landed in start-up, before any line
    if run == RUNS - 1:
        assert kept[-1].count(b"\n") == ROWS  # the late kill came after the last line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["zoom-refine"]["groups"]["overall"]["total"] == ROWS


FULL_DISK_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
from zoom_refine.evals.store import PredictionStore

path = Path(sys.argv[1])
store = PredictionStore(path)
store.append({"id": "0", "method": "baseline", "answer": "A"})
size = path.stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, like a full disk's ENOSPC
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))
try:
    store.append({"id": "1", "method": "baseline", "answer": "x" * 200})
except OSError as error:
    print("raised", error.errno)
print("size", path.stat().st_size == size)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
store.append({"id": "2", "method": "baseline", "answer": "C"})
print("ids", [json.loads(line)["id"] for line in path.read_text().splitlines()])
"""


@pytest.mark.reliability(
    "Crash safety",
    "the disk fills in the middle of a record's write (RLIMIT_FSIZE: the write is cut short, "
    "then fails with EFBIG)",
    "the append raises OSError and the file is cut back to its last whole record; the next "
    "append lands on a clean line, so the file reads back as exactly records 0 and 2",
)
def test_a_write_cut_short_by_a_full_disk_leaves_no_fragment(tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.jsonl"
    command = [sys.executable, "-c", FULL_DISK_SCRIPT, str(predictions)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split("\n")[:3] == ["raised 27", "size True", "ids ['0', '2']"]
