"""Adversarial run of `zoom-refine eval`'s records: kills, two writers, a live reader, a file size
limit and hostile TSVs, all through the real command in subprocesses.

Every eval runs the protocol-trained tiny InternVL3 (`zoom_refine.testing.trained_protocol_model`,
`hf:`; cached on disk, trained on first use) on an HR-Bench TSV of 64×64 flat-colour JPEGs (one
448-px tile each, a fraction of a second per sample), `--method both`, with OMP_NUM_THREADS=1.

1. clean: a reference run with `--trace-db`.
2. SIGKILL ×3 at seeded random moments (the first 0-4 s after the start, the others a random
   0-0.4 s after a random number of lines), then a resume to the end; once without `--trace-db`,
   once with one database shared by all four processes. Also checked: every line written before a
   kill is still there, byte for byte, in place.
3. two writers on one `--out`: started at the same instant, and a second (plus a third with
   `--retry-errors`) started while the first is writing. The refused one exits 2 with one line
   `run folder … is being written by pid N` naming the holder; the holder finishes.
4. two evals on two `--out` folders sharing one `--trace-db`, at the same time.
5. a reader polling a live run: `zoom-refine report <out>` in a loop and, in this process,
   `zoom_refine.evals.report.merge_runs` every 20 ms; each snapshot of predictions.jsonl taken
   around a read must be a prefix of every later one (the readers never modify the file).
6. `RLIMIT_FSIZE` (as `ulimit -f`) at five sizes, fresh folders (512 B, where config.json cannot
   be written, and 10 %, 35 %, 70 % and all but 500 B of the clean records' size), plus 512 B
   on a resume of a partly written folder: the run stops with exit status != 0 and one `error:`
   line on stderr (no traceback), every line of predictions.jsonl is whole JSON; then a resume
   without the limit finishes. Row "6+" records what `zoom-refine report` says of each stopped
   folder (exit 0, or exit 2 with one line; never a traceback).
7. hostile TSVs: quotes (a stray quote, an unbalanced quote mid-file and at the end, a literal
   quote inside a cell), duplicate ids with real ids spelling the labels duplicates get
   (`2 @ line 6`), a NUL in an id and in a question, Latin-1 bytes in the first 64 KiB (the file is
   refused: exit 2, one line) and past them (that row is a bad row). Every data row must end up as
   exactly one record per method, `ok` or `error` as expected for it.

Checks for 1-6: every (id, method) of the dataset is in predictions.jsonl exactly once (no
duplicates, none lost), every line is valid JSON, and every record is `status: ok` and equals the
clean run's on (answer, initial_answer, stop_reason, [(step node, hop)], [(view id, view box)],
usage model_calls). With `--trace-db`: each record's `thread_id` is unique (across every folder
and database of the run), and `zoom_refine.graphs.traces.read_trace(db, thread_id)` is that run:
its thread, its question, its final answer, its number of views and its [(step node, hop)] equal
the record's. For 7, ok records of rows whose inputs repeat a clean row's equal that row's record.

Prints one measured line per scenario as it finishes, then a table (scenario, ids found/expected,
duplicates, mismatches vs clean, lost, result) and the evidence of anything that failed; exits 1
if any check failed. About 5-6 minutes on 2 CPU cores with the defaults:

    python benchmarks/adversarial_records.py [--rows 24] [--seed 0] [--concurrency 2]
        [--scenarios 2,3,7] [--keep]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # for dataset_fixtures (test data, not in the package)

import dataset_fixtures as fixtures  # noqa: E402

from zoom_refine.evals.records import Key, record_key  # noqa: E402
from zoom_refine.evals.report import merge_runs  # noqa: E402
from zoom_refine.graphs.traces import read_trace  # noqa: E402
from zoom_refine.testing import trained_protocol_model  # noqa: E402
from zoom_refine.tools.errors import InvalidInputError  # noqa: E402

ZOOM_REFINE = str(Path(sys.executable).parent / "zoom-refine")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
"""One intra-op thread: the tiny model gains nothing from more on a busy 2-core machine."""
METHODS = ("baseline", "zoom-refine")
TIMEOUT_S = 600
STORAGE_LINE = re.compile(r"^error: cannot write (.+?): ([^(;]+?) \(")
BUSY = re.compile(r"^error: run folder (.+) is being written by pid (\d+);")
MAX_EVIDENCE = 8


# --- data ----------------------------------------------------------------------------------------

OPTIONS = ["red", "blue", "green", "white"]


def flat_jpeg(index: int, side: int = 64) -> bytes:
    colours = list(fixtures.COLORS.values())
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colours[index % len(colours)]).save(buffer, format="JPEG")
    return buffer.getvalue()


def noise_jpeg(seed: int, side: int = 128) -> bytes:
    """A JPEG of random noise: about 20 KB, to push later rows past the first 64 KiB."""
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def row_cells(index: int) -> list[str]:
    """Clean row `index` of the dataset, as TSV cells (id first)."""
    answer = "ABCD"[index % 4]
    return [
        str(index),
        f"Question {index}?",
        answer,
        "single",
        *OPTIONS,
        f"cycle{index % 4 + 1}",
        fixtures.b64(flat_jpeg(index)),
    ]


def write_clean_tsv(path: Path, rows: int) -> Path:
    return fixtures.write_tsv(path, fixtures.HR_HEADER, [row_cells(i) for i in range(rows)])


def write_raw_tsv(path: Path, rows: Iterable[list[str | bytes]]) -> Path:
    """Cells joined by tabs exactly as given (no quoting: hostile cells stay hostile)."""
    lines = [b"\t".join(name.encode() for name in fixtures.HR_HEADER)]
    for row in rows:
        lines.append(b"\t".join(c if isinstance(c, bytes) else c.encode() for c in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# --- records -------------------------------------------------------------------------------------


def signature(record: dict[str, Any]) -> dict[str, Any]:
    """What a rerun must reproduce: the answers, the path through the graph, the views, calls."""
    return {
        "status": record.get("status"),
        "answer": record.get("answer"),
        "initial_answer": record.get("initial_answer"),
        "stop_reason": record.get("stop_reason"),
        "steps": [(s.get("node"), s.get("hop")) for s in record.get("steps") or []],
        "views": [(v.get("id"), v.get("box")) for v in record.get("views") or []],
        "model_calls": (record.get("usage") or {}).get("model_calls"),
    }


def differences(got: dict[str, Any], want: dict[str, Any]) -> str:
    a, b = signature(got), signature(want)
    return "; ".join(
        f"{name}: got {a[name]!r}, clean {b[name]!r}" for name in a if a[name] != b[name]
    )


def without_thread(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "thread_id"}


def complete_lines(path: Path) -> bytes:
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1]


def line_count(path: Path) -> int:
    return complete_lines(path).count(b"\n")


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a predictions file, and a note for each line that is not whole JSON."""
    data = path.read_bytes() if path.exists() else b""
    records, bad = [], []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line and number == data.count(b"\n") + 1:
            continue  # the empty text after the last newline
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            records.append(record)
        except ValueError as error:
            bad.append(f"{path.parent.name} line {number} is not JSON ({error}): {line[:80]!r}")
    if data and not data.endswith(b"\n"):
        bad.append(f"{path.parent.name}: the file ends in a torn line {data[-60:]!r}")
    return records, bad


@dataclass
class Result:
    """One scenario's outcome: the counts of the table, the measured line, failures' evidence."""

    name: str
    found: int = 0
    expected: int = 0
    duplicates: int = 0
    mismatches: int = 0
    lost: int = 0
    detail: str = ""
    ids: str | None = None
    """What the ids column shows instead of found/expected (e.g. a refused file)."""
    evidence: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.evidence

    def fail(self, message: str) -> None:
        self.evidence.append(message)


class Checker:
    """Checks run folders against the clean run; remembers every thread id seen."""

    def __init__(self, expected: set[Key]) -> None:
        self.expected = expected
        self.clean: dict[Key, dict[str, Any]] = {}
        self.threads: dict[str, str] = {}
        """thread id → where it was recorded (to find one reused by two records)."""

    def folder(
        self,
        result: Result,
        out: Path,
        db: Path | None = None,
        *,
        against_clean: bool = True,
    ) -> list[dict[str, Any]]:
        """Add `out`'s counts to `result` and its failures to the evidence; its records."""
        records, bad = read_records(out / "predictions.jsonl")
        for note in bad:
            result.fail(note)
        counts = Counter(record_key(record) for record in records)
        present = set(counts)
        result.found += len(present & self.expected)
        result.expected += len(self.expected)
        for dup, times in sorted(counts.items()):
            if times > 1:
                result.duplicates += times - 1
                result.fail(f"{out.name}: {dup[1]} {dup[0]!r} appears {times} times")
        lost = sorted(self.expected - present)
        result.lost += len(lost)
        if lost:
            result.fail(f"{out.name}: lost {len(lost)}: {shown(lost)}")
        extra = sorted(present - self.expected)
        if extra:
            result.fail(f"{out.name}: unexpected keys {shown(extra)}")
        if against_clean:
            for record in records:
                want = self.clean.get(record_key(record))
                if want is None:
                    continue
                if record.get("status") != "ok" or signature(record) != signature(want):
                    result.mismatches += 1
                    what = differences(record, want)
                    if record.get("status") != "ok":
                        what += f" (error: {record.get('error')})"
                    sample, method = record_key(record)
                    result.fail(f"{out.name}: {method} {sample!r}: {what}")
        if db is not None:
            self.traces(result, out, db, records)
        return records

    def traces(self, result: Result, out: Path, db: Path, records: list[dict[str, Any]]) -> None:
        """Each ok record names a thread of its own, which `read_trace` returns as that run."""
        for record in records:
            name = f"{out.name}: {record.get('method')} {record.get('id')!r}"
            thread = record.get("thread_id")
            if record.get("status") != "ok":
                continue
            if not isinstance(thread, str):
                result.fail(f"{name}: no thread_id although --trace-db was given")
                continue
            if thread in self.threads:
                result.fail(f"{name}: thread_id {thread} also recorded by {self.threads[thread]}")
                continue
            self.threads[thread] = name
            try:
                trace = read_trace(db, thread)
            except Exception as error:
                result.fail(f"{name}: read_trace({db.name}, {thread}) raised {error!r}")
                continue
            state = trace.state
            checks = {
                "thread": (trace.thread_id, thread),
                "question": (state.get("question"), record.get("question")),
                "answer": (state.get("answer"), record.get("answer")),
                "views": (len(state.get("views") or []), len(record.get("views") or [])),
                "steps": (
                    [(s.get("node"), s.get("hop")) for s in state.get("steps") or []],
                    [(s.get("node"), s.get("hop")) for s in record.get("steps") or []],
                ),
            }
            for what, (traced, recorded) in checks.items():
                if traced != recorded:
                    result.mismatches += 1
                    result.fail(f"{name}: trace {what} {traced!r} != record {recorded!r}")


def thread_ids(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")}


def shown(items: list[Any], most: int = 6) -> str:
    text = ", ".join(str(item) for item in items[:most])
    return text + (f" … (+{len(items) - most})" if len(items) > most else "")


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Setup:
    work: Path
    data: Path
    model: Path
    concurrency: int
    rng: random.Random
    checker: Checker


def eval_args(
    setup: Setup,
    out: Path,
    *,
    data: Path | None = None,
    trace_db: Path | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    args = [ZOOM_REFINE, "eval", "hr-bench", "--data", str(data or setup.data)]
    args += ["--out", str(out), "--model", f"hf:{setup.model}", "--method", "both"]
    args += ["--concurrency", str(setup.concurrency)]
    if trace_db is not None:
        args += ["--trace-db", str(trace_db)]
    return [*args, *extra]


class Proc:
    """A child process whose stderr goes to a file (nothing to drain while it runs)."""

    _count = 0

    def __init__(self, setup: Setup, args: list[str]) -> None:
        Proc._count += 1
        self.err_path = setup.work / "logs" / f"{Proc._count:03d}.err"
        self.err_path.parent.mkdir(parents=True, exist_ok=True)
        with self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=ENV)
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            return -9999

    def kill(self) -> bool:
        """SIGKILL it if it still runs; whether it did."""
        if self.popen.poll() is not None:
            return False
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()
        return True

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


def run_to_end(setup: Setup, args: list[str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    process = Proc(setup, args)
    code = process.wait()
    return code, process.stderr, time.perf_counter() - started


def stderr_lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def error_lines(text: str) -> list[str]:
    return [line for line in stderr_lines(text) if line.startswith("error:")]


def has_traceback(text: str) -> bool:
    return "Traceback" in text or bool(re.search(r"^\w+(Error|Exception): ", text, re.M))


def tail(text: str, size: int = 300) -> str:
    return " | ".join(stderr_lines(text[-size:]))


# --- scenarios -----------------------------------------------------------------------------------


def clean_run(setup: Setup) -> Result:
    result = Result("1 clean (--trace-db)")
    out, db = setup.work / "clean", setup.work / "clean.db"
    code, err, seconds = run_to_end(setup, eval_args(setup, out, trace_db=db))
    if code != 0:
        result.fail(f"clean run exit {code}: {tail(err)}")
    records = setup.checker.folder(result, out, db, against_clean=False)
    setup.checker.clean = {record_key(r): r for r in records}
    not_ok = [record_key(r) for r in records if r.get("status") != "ok"]
    if not_ok:
        result.fail(f"clean run has records that are not ok: {shown(not_ok)}")
    result.detail = (
        f"exit {code} in {seconds:.1f}s; {len(records)} records, "
        f"{(out / 'predictions.jsonl').stat().st_size if records else 0} bytes"
    )
    return result


def kill_and_resume(setup: Setup, name: str, out: Path, db: Path | None) -> Result:
    result = Result(name)
    predictions = out / "predictions.jsonl"
    total = len(setup.checker.expected)
    targets = [0, *sorted(setup.rng.sample(range(1, total), 2))]
    delays = [setup.rng.uniform(0.0, 4.0), setup.rng.uniform(0, 0.4), setup.rng.uniform(0, 0.4)]
    kept, moments = [], []
    for lines, delay in zip(targets, delays, strict=True):
        process = Proc(setup, eval_args(setup, out, trace_db=db))
        started = time.perf_counter()
        while process.poll() is None and line_count(predictions) < lines:
            time.sleep(0.005)
        time.sleep(delay)
        at = line_count(predictions)
        landed = process.kill()
        moments.append(
            f"{at}L@{time.perf_counter() - started:.1f}s" if landed else f"exit {process.poll()}"
        )
        if not landed and process.poll() != 0:
            result.fail(f"a process to be killed exited {process.poll()}: {tail(process.stderr)}")
        kept.append(complete_lines(predictions))
    code, err, seconds = run_to_end(setup, eval_args(setup, out, trace_db=db))
    if code != 0:
        result.fail(f"resume exit {code}: {tail(err)}")
    final = predictions.read_bytes() if predictions.exists() else b""
    for number, before in enumerate(kept, 1):
        if not final.startswith(before):
            lines = before.count(b"\n")
            result.fail(f"the {lines} lines kept at kill {number} were changed")
    records = setup.checker.folder(result, out, db)
    result.detail = (
        f"kills at {', '.join(moments)} (lines/time since start); resume exit {code} "
        f"in {seconds:.1f}s; kept lines in place: "
        f"{all(final.startswith(before) for before in kept)}"
    )
    if db is not None:
        threads = thread_ids(db)
        orphans = len(threads - {str(r.get("thread_id")) for r in records})
        result.detail += f"; {len(threads)} threads in the db, {orphans} of runs cut by a kill"
    return result


def check_refusal(result: Result, refused: Proc, holder: Proc, label: str) -> str:
    """The refused writer: exit 2, one stderr line naming the holder's pid."""
    code = refused.wait()
    lines = stderr_lines(refused.stderr)
    match = BUSY.match(lines[0]) if len(lines) == 1 else None
    named = int(match.group(2)) if match else None
    if code != 2:
        result.fail(f"{label}: exit {code}, not 2: {tail(refused.stderr)}")
    if len(lines) != 1 or match is None:
        result.fail(f"{label}: stderr is not one busy line: {lines[:4]!r}")
    elif named != holder.pid:
        result.fail(f"{label}: names pid {named}, the holder is pid {holder.pid}")
    return f"{label} exit {code} naming pid {named} (holder {holder.pid})"


def two_writers(setup: Setup) -> Result:
    result = Result("3 two writers, one --out")
    notes = []
    # a: both at the same instant; whichever locks first must be named by the other
    out = setup.work / "lock-same-time"
    first = Proc(setup, eval_args(setup, out))
    second = Proc(setup, eval_args(setup, out))
    codes = (first.wait(), second.wait())
    if sorted(codes) != [0, 2]:
        result.fail(f"same instant: exit codes {codes}, want one 0 and one 2")
        notes.append(f"same instant: exits {codes}")
    else:
        holder, refused = (first, second) if codes[0] == 0 else (second, first)
        notes.append(check_refusal(result, refused, holder, "same instant: loser"))
    setup.checker.folder(result, out)
    # b: a second writer and a --retry-errors one while the first is writing
    out = setup.work / "lock-mid-run"
    predictions = out / "predictions.jsonl"
    holder = Proc(setup, eval_args(setup, out))
    third_of_it = len(setup.checker.expected) // 3
    while holder.poll() is None and line_count(predictions) < third_of_it:
        time.sleep(0.01)
    before = complete_lines(predictions)
    at = before.count(b"\n")
    late = Proc(setup, eval_args(setup, out))
    retry = Proc(setup, eval_args(setup, out, extra=["--retry-errors"]))
    notes.append(check_refusal(result, late, holder, f"mid-run (at {at}L)"))
    notes.append(check_refusal(result, retry, holder, "--retry-errors"))
    if holder.poll() is None:
        notes.append("holder still running after both refusals")
    code = holder.wait()
    if code != 0:
        result.fail(f"mid-run: the holder exited {code}: {tail(holder.stderr)}")
    if not predictions.read_bytes().startswith(before):
        result.fail("mid-run: lines written before the second writer started were changed")
    setup.checker.folder(result, out)
    result.detail = "; ".join([*notes, f"holder exit {code}"])
    return result


def shared_trace_db(setup: Setup) -> Result:
    result = Result("4 two --out, one --trace-db")
    db = setup.work / "pair.db"
    outs = [setup.work / "pair-a", setup.work / "pair-b"]
    processes = [Proc(setup, eval_args(setup, out, trace_db=db)) for out in outs]
    codes = [process.wait() for process in processes]
    for out, process, code in zip(outs, processes, codes, strict=True):
        if code != 0:
            result.fail(f"{out.name}: exit {code}: {tail(process.stderr)}")
        setup.checker.folder(result, out, db)
    result.detail = f"exits {codes}; thread ids unique across both folders and earlier runs"
    return result


class PrefixChain:
    """Snapshots of a file, each of which must be a prefix of the next."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.last = b""
        self.snapshots = 0
        self.violations: list[str] = []

    def snap(self) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        self.snapshots += 1
        if not data.startswith(self.last):
            self.violations.append(
                f"{self.name}: snapshot {self.snapshots} ({len(data)} B) does not extend the "
                f"previous one ({len(self.last)} B)"
            )
        self.last = data


def live_reader(setup: Setup) -> Result:
    result = Result("5 reader polls a live run")
    out = setup.work / "live"
    predictions = out / "predictions.jsonl"
    polled = PrefixChain(predictions, "merge_runs")
    reported = PrefixChain(predictions, "report")
    stop = threading.Event()
    counts: Counter[str] = Counter()
    problems: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            polled.snap()
            try:
                _, records = merge_runs([out])
                counts[f"merge {len(records) > 0}"] += 1
            except InvalidInputError:  # no predictions.jsonl yet
                counts["merge none yet"] += 1
            except Exception as error:
                problems.append(f"merge_runs raised {error!r}")
            polled.snap()
            time.sleep(0.02)

    writer = Proc(setup, eval_args(setup, out))
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    reports: list[str] = []
    try:
        while writer.poll() is None:
            reported.snap()
            done = subprocess.run(
                [ZOOM_REFINE, "report", str(out)],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=TIMEOUT_S,
                check=False,
            )
            reported.snap()
            lines = stderr_lines(done.stderr)
            reports.append(f"{done.returncode}@{line_count(predictions)}L")
            if has_traceback(done.stderr + done.stdout) or (
                done.returncode != 0 and len(lines) != 1
            ):
                result.fail(f"report exit {done.returncode}: {tail(done.stderr, 600)}")
    finally:
        code = writer.wait()
        stop.set()
        poller.join()
    final = predictions.read_bytes() if predictions.exists() else b""
    for chain in (polled, reported):
        result.evidence.extend(chain.violations)
        if not final.startswith(chain.last):
            result.fail(f"{chain.name}: the last snapshot is not a prefix of the final file")
    result.evidence.extend(problems)
    if code != 0:
        result.fail(f"the eval exited {code}: {tail(writer.stderr)}")
    setup.checker.folder(result, out)
    result.detail = (
        f"eval exit {code}; {polled.snapshots} merge_runs snapshots ({dict(counts)}), "
        f"{len(reports)} reports (exit@lines: {' '.join(reports)}); all prefixes of the final "
        f"file: {not polled.violations and not reported.violations}"
    )
    return result


def size_limited(size: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec: both survive the exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit = size if hard == resource.RLIM_INFINITY else min(size, hard)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return apply


def limited_run(setup: Setup, out: Path, size: int) -> subprocess.CompletedProcess[str]:
    """Stderr through a pipe: a file would be cut off by the limit too."""
    return subprocess.run(
        eval_args(setup, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=size_limited(size),
        timeout=TIMEOUT_S,
        check=False,
    )


def report_of_stopped(out: Path) -> str | None:
    """None when `zoom-refine report` handles the folder (exit 0, or 2 with one line)."""
    done = subprocess.run(
        [ZOOM_REFINE, "report", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=TIMEOUT_S,
        check=False,
    )
    lines = stderr_lines(done.stderr)
    if done.returncode == 0 or (done.returncode == 2 and len(lines) == 1):
        return None
    return f"exit {done.returncode}, {len(lines)} stderr lines, last: {tail(done.stderr, 200)}"


def file_size_limit(setup: Setup) -> tuple[Result, Result]:
    result = Result("6 RLIMIT_FSIZE, resume")
    readers = Result("6+ report on stopped folder")
    clean_size = sum(  # the clean records as a run without --trace-db writes them
        len(json.dumps(without_thread(r), ensure_ascii=False).encode()) + 1
        for r in setup.checker.clean.values()
    )
    sizes = [512, clean_size // 10, clean_size * 35 // 100, clean_size * 70 // 100]
    cases = [(f"fsize-{s}", s) for s in [*sizes, clean_size - 500]]
    cases.insert(2, (f"fsize-{sizes[1]}", 512))  # 512 B on a resume of the 10 % folder
    notes = []
    for index, (name, size) in enumerate(cases):
        out = setup.work / name
        stopped = limited_run(setup, out, size)
        label = f"{size} B" + (" (resume)" if index == 2 else "")
        errors = error_lines(stopped.stderr)
        if stopped.returncode == 0:
            result.fail(f"{label}: exit 0 although the limit should stop it")
        if len(errors) != 1 or has_traceback(stopped.stderr):
            result.fail(f"{label}: {len(errors)} error lines, stderr tail {tail(stopped.stderr)}")
        records, bad = read_records(out / "predictions.jsonl")
        for note in bad:
            result.fail(f"{label}: {note}")
        config_ok = True
        config = out / "config.json"
        try:  # absent is fine (never written: the write was refused whole); torn is not
            if config.exists():
                json.loads(config.read_text())
            elif records:
                raise ValueError("missing although predictions were written")
        except (OSError, ValueError) as error:
            config_ok = False
            readers.fail(f"{label}: config.json left unreadable after the stop: {error}")
        problem = report_of_stopped(out)
        if problem:
            readers.fail(f"{label}: `zoom-refine report {name}` on the stopped folder: {problem}")
        said = STORAGE_LINE.match(errors[0]) if errors else None
        reason = f"{Path(said[1]).name}: {said[2]}" if said else (errors or ["no error line"])[0]
        notes.append(
            f"{label}: exit {stopped.returncode} at {len(records)}L, '{reason}', "
            f"config.json {'ok' if config_ok else 'BROKEN'}"
        )
        if index == 1:
            continue  # this folder is stopped again at 512 B before its unlimited resume
        code, err, _ = run_to_end(setup, eval_args(setup, out))
        if code != 0:
            result.fail(f"{label}: resume without the limit exit {code}: {tail(err)}")
        setup.checker.folder(result, out)
    result.detail = "; ".join(notes)
    readers.detail = f"{len(cases)} stopped folders; {len(readers.evidence)} problems"
    return result, readers


@dataclass
class Row:
    cells: list[str | bytes]
    ok: bool
    """The record's expected status: ok, or error (a bad row)."""
    base: int | None = None
    """The clean row whose inputs this row repeats unchanged (its ok record must equal it)."""


def hostile_files(rows: int) -> dict[str, tuple[bool, list[Row]]]:
    """name → (refused, rows): whether the whole file must be refused, and its data rows."""

    def clean(position: int, sample_id: str | bytes | None = None, ok: bool = True) -> Row:
        base = position % rows
        cells: list[str | bytes] = list(row_cells(base))
        if sample_id is not None:
            cells[0] = sample_id
        return Row(cells, ok, base if ok else None)

    def edited(position: int, column: int, value: str | bytes, ok: bool) -> Row:
        row = clean(position, str(position), ok)
        row.cells[column] = value
        row.base = None
        return row

    quotes = [clean(i, str(i)) for i in range(10)]
    quotes[2] = edited(2, 1, 'Question 2 about the "EXIT" sign?', True)  # a literal quote
    quotes[4] = edited(4, 1, '"Question 4" asked twice?', False)  # stray: closes mid-cell
    quotes[6] = edited(6, 1, '"Question 6? never closed', False)  # unbalanced, mid-file
    quotes[9] = edited(9, 7, '"white', False)  # unbalanced, in the last row

    ids = [clean(i, str(i)) for i in range(12)]
    ids[1] = clean(1, "2 @ line 6")  # a real id, before the duplicate that would get it as label
    ids[4] = clean(4, "2", ok=False)  # line 6: duplicate of 2
    ids[5] = clean(5, "2 @ line 6 #2", ok=False)  # spells the label line 6 gets
    ids[6] = clean(6, "3", ok=False)  # line 8: duplicate of 3, labelled "3 @ line 8"
    ids[7] = clean(7, "3 @ line 8", ok=False)  # a real id after the label spelling it
    ids[8] = clean(8, "8\0", ok=False)  # NUL in the id: labelled "line 10"
    ids[9] = clean(9, "line 10", ok=False)  # spells that label
    ids[11] = edited(11, 1, "Question\x0011?", False)  # NUL in the question

    early = [clean(i, str(i)) for i in range(6)]
    early[2] = edited(2, 1, "Caf\xe9 question?".encode("latin-1"), False)

    mixed = [clean(i, str(i)) for i in range(14)]
    for position in range(7):  # ~20 KB each: the rows from 7 on start past the first 64 KiB
        mixed[position].cells[-1] = fixtures.b64(noise_jpeg(position))
        mixed[position].base = None
    mixed[3].cells[0] = "2 @ line 6"
    mixed[4].cells[0], mixed[4].ok = "2", False  # line 6: duplicate of 2
    mixed[7] = edited(7, 1, '"Question 7? never closed', False)
    mixed[9] = edited(9, 1, '"Question 9" asked twice?', False)
    mixed[10] = clean(10, "10\0", ok=False)
    mixed[11] = edited(11, 1, "Na\xefve caf\xe9 question?".encode("latin-1"), False)
    mixed[13] = clean(13, "2 @ line 6 #2", ok=False)
    return {
        "7a quotes": (False, quotes),
        "7b duplicate ids, NUL": (False, ids),
        "7c Latin-1 in first 64K": (True, early),
        "7d all, Latin-1 past 64K": (False, mixed),
    }


def hostile_tsvs(setup: Setup, rows: int) -> list[Result]:
    results = []
    for index, (name, (refused, spec)) in enumerate(hostile_files(rows).items()):
        result = Result(name)
        data = write_raw_tsv(
            setup.work / f"hostile-{index}" / "hr_bench_4k.tsv", (r.cells for r in spec)
        )
        out = setup.work / f"hostile-{index}-out"
        code, err, _ = run_to_end(setup, eval_args(setup, out, data=data))
        records, bad = read_records(out / "predictions.jsonl")
        for note in bad:
            result.fail(note)
        expected_keys = len(spec) * len(METHODS)
        result.expected = expected_keys
        if refused:
            lines = stderr_lines(err)
            if code != 2 or len(lines) != 1 or has_traceback(err) or records:
                result.fail(
                    f"not refused in one line: exit {code}, {len(records)} records, {lines[:3]!r}"
                )
            result.detail = f"exit {code}: {lines[0] if lines else '(no stderr)'}"
            result.ids = "refused" if code == 2 and not records else None
            results.append(result)
            continue
        if code != 0 or has_traceback(err):
            result.fail(f"exit {code}: {tail(err)}")
        counts = Counter(record_key(record) for record in records)
        result.found = len(counts)
        result.duplicates = sum(times - 1 for times in counts.values())
        if result.duplicates:
            result.fail(f"duplicate keys: {shown([k for k, t in counts.items() if t > 1])}")
        for method in METHODS:
            mine = [r for r in records if r.get("method") == method]
            want_ok = {str(row.cells[0]) for row in spec if row.ok}
            got_ok = {str(r["id"]) for r in mine if r.get("status") == "ok"}
            errors = [r for r in mine if r.get("status") == "error"]
            result.lost += max(0, len(spec) - len({str(r["id"]) for r in mine}))
            if len(mine) != len(spec):
                result.fail(f"{method}: {len(mine)} records for {len(spec)} data rows")
            if got_ok != want_ok:
                result.fail(
                    f"{method}: ok ids {sorted(got_ok)!r}, expected {sorted(want_ok)!r} "
                    f"(errors: {[(r['id'], r['error']) for r in errors][:6]!r})"
                )
            if len(errors) != sum(not row.ok for row in spec):
                result.fail(
                    f"{method}: {len(errors)} error records, expected "
                    f"{sum(not row.ok for row in spec)}: {[(r['id'], r['error']) for r in errors]!r}"
                )
            for record in errors:
                if "\n" in str(record.get("error")):
                    result.fail(f"{method} {record['id']!r}: error of several lines")
        by_id = {record_key(r): r for r in records}
        for row in spec:
            for method in METHODS:
                got = by_id.get((str(row.cells[0]), method))
                want = setup.checker.clean.get((str(row.base), method))
                if row.base is None or got is None or want is None:
                    continue
                if signature(got) != signature(want):
                    result.mismatches += 1
                    result.fail(
                        f"{method} {row.cells[0]!r} (clean row {row.base}): {differences(got, want)}"
                    )
        labels = sorted({str(r["id"]) for r in records if r.get("status") == "error"})
        result.detail = (
            f"exit {code}; {len(spec)} data rows → {len(records)} records "
            f"({sum(r.get('status') == 'ok' for r in records)} ok); bad-row ids {labels!r}"
        )
        results.append(result)
    return results


# --- main ----------------------------------------------------------------------------------------


def print_line(result: Result) -> None:
    mark = "PASS" if result.passed else "FAIL"
    print(f"[{mark}] {result.name}: {result.detail}", flush=True)


def print_table(results: list[Result]) -> None:
    header = ("scenario", "ids", "duplicates", "mismatches", "lost", "result")
    rows = [
        (
            r.name,
            r.ids or (f"{r.found}/{r.expected}" if r.expected else "-"),
            str(r.duplicates),
            str(r.mismatches),
            str(r.lost),
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=24, help="rows in the dataset (>= 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--concurrency", type=int, default=2, help="--concurrency of each eval")
    parser.add_argument(
        "--scenarios", default="2,3,4,5,6,7", help="which of 2-7 to run (1 always runs)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.rows < 4:
        parser.error("--rows must be at least 4")
    chosen = {part.strip() for part in args.scenarios.split(",")}
    work = Path(tempfile.mkdtemp(prefix="adversarial-records-"))
    started = time.perf_counter()
    print(
        f"adversarial records: {args.rows} rows × {len(METHODS)} methods, seed {args.seed}, "
        f"--concurrency {args.concurrency}, work folder {work}",
        flush=True,
    )
    expected = {(str(i), method) for i in range(args.rows) for method in METHODS}
    setup = Setup(
        work=work,
        data=write_clean_tsv(work / "data" / "hr_bench_4k.tsv", args.rows),
        model=trained_protocol_model("internvl3"),
        concurrency=args.concurrency,
        rng=random.Random(f"adversarial-records-{args.seed}"),
        checker=Checker(expected),
    )
    results = [clean_run(setup)]
    print_line(results[0])
    if results[0].passed:
        steps: list[tuple[str, Callable[[], list[Result]]]] = [
            ("2", lambda: [kill_and_resume(setup, "2a SIGKILL×3, resume", work / "kill", None)]),
            (
                "2",
                lambda: [
                    kill_and_resume(
                        setup,
                        "2b SIGKILL×3, resume, --trace-db",
                        work / "kill-db",
                        work / "kill.db",
                    )
                ],
            ),
            ("3", lambda: [two_writers(setup)]),
            ("4", lambda: [shared_trace_db(setup)]),
            ("5", lambda: [live_reader(setup)]),
            ("6", lambda: list(file_size_limit(setup))),
            ("7", lambda: hostile_tsvs(setup, args.rows)),
        ]
        for number, step in steps:
            if number not in chosen:
                continue
            for result in step():
                print_line(result)
                results.append(result)
    else:
        print("the clean run failed: nothing to compare against, scenarios 2-7 skipped")
    print()
    print_table(results)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(f"\nFAILED {result.name}:")
        for line in result.evidence[:MAX_EVIDENCE]:
            print(f"  - {line}")
        if len(result.evidence) > MAX_EVIDENCE:
            print(f"  … and {len(result.evidence) - MAX_EVIDENCE} more")
    print(
        f"\n{len(results) - len(failed)}/{len(results)} scenarios passed in "
        f"{time.perf_counter() - started:.0f}s"
    )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
