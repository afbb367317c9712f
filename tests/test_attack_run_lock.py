"""The run-folder lock where the filesystem has no flock (issue 21, item 6).

Two real processes start `eval` on one `--out` at the same instant (a barrier), each with
`fcntl.flock` failing with ENOLCK as on some network file systems: in every try exactly one
writes and the other is refused with `RunFolderBusyError`; nothing crashes (no shared temporary
config file), and each (id, method) is recorded once."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest

from zoom_refine import ZoomContext
from zoom_refine.evals import run_lock
from zoom_refine.evals.run_lock import CLAIM_NAME, hold_run_lock
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.testing import RuleVisionModel
from zoom_refine.tools.errors import RunFolderBusyError

TRIES = 12
SLOW_OPEN_S = 0.05
HOLD_S = 0.3
"""How long the winner holds the folder before running (the CLI also locks before it runs):
long enough that the loser's attempt, released by the same barrier, finds it held."""


def no_flock(*args: object) -> None:
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def slow_network_filesystem() -> None:
    """This process's filesystem, as an NFS mount without locking: `flock` fails with ENOLCK,
    and opening a lock file or reading at an offset takes a round trip to the server (50 ms)."""
    import fcntl
    import time

    fcntl.flock = no_flock
    real_open, real_pread = os.open, os.pread

    def slow_pread(descriptor: int, length: int, offset: int) -> bytes:
        data = real_pread(descriptor, length, offset)
        time.sleep(SLOW_OPEN_S)
        return data

    def slow_open(path: Any, *args: Any, **kwargs: Any) -> int:
        descriptor = real_open(path, *args, **kwargs)
        if os.path.basename(os.fspath(path)).startswith(".lock"):
            time.sleep(SLOW_OPEN_S)
        return descriptor

    os.open = slow_open
    os.pread = slow_pread


def racer(data: str, out: str, barrier: Any, results: Any) -> None:
    """One `eval` writer with no flock: 'ok', 'busy', or the exception that escaped."""
    import time

    slow_network_filesystem()
    plan = EvalPlan(benchmark="hr-bench", data=Path(data), out=Path(out))
    barrier.wait()
    try:
        with hold_run_lock(plan.out):  # as the CLI does, before its progress bar
            time.sleep(HOLD_S)
            run_eval(plan, ZoomContext(model=RuleVisionModel()))
    except RunFolderBusyError:
        results.put("busy")
    except BaseException as error:  # reported to the parent, which fails the test
        results.put(f"{type(error).__name__}: {error}")
    else:
        results.put("ok")


def keys(out: Path) -> Counter[tuple[str, str]]:
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return Counter((record["id"], record["method"]) for record in map(json.loads, lines))


@pytest.mark.reliability(
    "Records",
    f"two eval processes start on one --out at the same instant, {TRIES} times, on a filesystem "
    "without flock (ENOLCK)",
    "each time exactly one writes and the other is refused (RunFolderBusyError); no crash, "
    "every (id, method) recorded once, no claim file left",
)
def test_without_flock_exactly_one_of_two_racing_writers_runs(tmp_path: Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    context = multiprocessing.get_context("fork")
    outcomes = []
    for attempt in range(TRIES):
        out = tmp_path / f"run{attempt}"
        barrier, results = context.Barrier(2), context.Queue()
        procs = [
            context.Process(target=racer, args=(str(data), str(out), barrier, results))
            for _ in range(2)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
            assert proc.exitcode == 0
        pair = sorted(results.get(timeout=5) for _ in procs)
        outcomes.append(pair)
        assert pair == ["busy", "ok"], (attempt, pair)
        counted = keys(out)
        assert counted and set(counted.values()) == {1}, counted
        assert not (out / CLAIM_NAME).exists()
        leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or ".lock." in p.name]
        assert leftovers == []
    assert outcomes == [["busy", "ok"]] * TRIES


def test_a_claim_left_by_a_dead_process_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / CLAIM_NAME).write_text(dead.stdout)
    with hold_run_lock(folder):
        assert (folder / CLAIM_NAME).read_text().strip() == str(os.getpid())
    assert not (folder / CLAIM_NAME).exists()
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


def test_a_claim_of_a_live_process_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    folder = tmp_path / "run"
    folder.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (folder / CLAIM_NAME).write_text(f"{live.pid}\n")
        busy = f"is being written by pid {live.pid}"
        with pytest.raises(RunFolderBusyError, match=busy), hold_run_lock(folder):
            pass
    finally:
        live.kill()
        live.wait()
    assert (folder / CLAIM_NAME).read_text() == f"{live.pid}\n"  # not ours: left alone
