"""Run records under concurrent access and hostile content: readers that never write, one writer
per run folder, replies that UTF-8 cannot hold, a disk that fills mid-run.

The process-level tests run `zoom-refine eval` as a user would, against a stand-in
OpenAI-compatible server started in this test process (`FakeServer`): it answers by prompt kind
like `RuleVisionModel`, instantly, and can hold the replies of one model name back (`hold`) so a
run stays in progress for as long as a test needs it to.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import dataset_fixtures as fixtures
import pytest
from typer.testing import CliRunner
from typing_extensions import get_type_hints

from zoom_refine import ZoomContext
from zoom_refine.agent.state import StopReason
from zoom_refine.cli import app
from zoom_refine.evals.records import PredictionRecord, record_key
from zoom_refine.evals.replay import replay_outcomes
from zoom_refine.evals.report import merge_runs
from zoom_refine.evals.run_lock import hold_run_lock
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.evals.store import PredictionStore
from zoom_refine.testing import RuleVisionModel
from zoom_refine.tools.errors import RunFolderBusyError

ZOOM_REFINE = Path(sys.executable).with_name("zoom-refine")
RUN_TIMEOUT_S = 120.0
"""A run of the 6-row fixture against the instant server takes a few seconds; longer is a hang."""
TEXT: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 60, "check": True}
LONE_SURROGATE = "\ud800"
LOCALIZE = "Answer: A\nBounding box: [0.2, 0.2, 0.8, 0.8]"
REFINE = "Rechecked Answer: B\nConfidence: 0.9"
DIRECT = "A"


# --- a stand-in OpenAI-compatible server ----------------------------------------------------------


class FakeServer(ThreadingHTTPServer):
    """`/v1/chat/completions` replying like `RuleVisionModel`. Requests for the model named `held`
    wait while `hold` is set, once `free_replies` of them have been answered."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.held = "held"
        self.hold = threading.Event()
        self.free_replies = 0
        self._count = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply_for(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last)
        if "Rechecked Answer" in text:
            return REFINE
        if "Bounding box" in text:
            return LOCALIZE
        return DIRECT

    def must_wait(self, model: str | None) -> bool:
        """Whether a request for `model` is held back (one free reply used up per call)."""
        if model != self.held or not self.hold.is_set():
            return False
        with self._count:
            self.free_replies -= 1
            return self.free_replies < 0


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.must_wait(body.get("model")):
            while self.server.hold.is_set():
                time.sleep(0.02)
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.server.reply_for(body)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
        }
        data = json.dumps(payload).encode("ascii")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows stderr of failing tests, and request lines are noise there."""


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.hold.clear()
        fake.shutdown()
        fake.server_close()


@pytest.fixture
def hr_bench(tmp_path: Path) -> Path:
    """The shared 6-row HR-Bench fixture (row 4 is malformed: a counted bad row)."""
    return fixtures.write_hr_bench_tsv(tmp_path / "data")


def eval_args(data: Path, out: Path, server: FakeServer, model: str, *extra: str) -> list[str]:
    return [
        str(ZOOM_REFINE),
        "eval",
        "hr-bench",
        "--data",
        str(data),
        "--method",
        "both",
        "--model",
        f"openai:{model}",
        "--base-url",
        server.base_url,
        "--api-key",
        "EMPTY",
        "--out",
        str(out),
        *extra,
    ]


def run_cli(args: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """A command in a fresh process; a hang fails the test (TimeoutExpired) instead of stalling."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, **options
    )


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_bytes().splitlines()]


def assert_each_key_once(out: Path) -> None:
    keys = [record_key(record) for record in records(out)]
    assert sorted(keys) == sorted(
        (str(i), m) for i in range(6) for m in ("baseline", "zoom-refine")
    )


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (path.exists() and path.read_bytes().count(b"\n") >= count):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run wrote no line"
        time.sleep(0.02)


# --- 1. readers never write ------------------------------------------------------------------------


def finished_run(tmp_path: Path, data: Path) -> Path:
    out = tmp_path / "run"
    run_eval(
        EvalPlan(benchmark="hr-bench", data=data, out=out, methods=("baseline", "zoom-refine")),
        ZoomContext(model=RuleVisionModel()),
    )
    return out


@pytest.mark.reliability(
    "Records",
    "`zoom-refine report` of a run folder whose predictions.jsonl ends in a torn line (a run "
    "killed mid-write, or one still writing)",
    "the report is written from the whole lines and the torn one is counted, not repaired: "
    "predictions.jsonl is byte for byte what it was; only the run's own writer repairs it",
)
def test_report_leaves_a_torn_tail_byte_identical(tmp_path: Path, hr_bench: Path) -> None:
    out = finished_run(tmp_path, hr_bench)
    path = out / "predictions.jsonl"
    torn = path.read_bytes() + b'{"id": "9", "method": "zoom-ref'
    path.write_bytes(torn)

    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == torn
    store = PredictionStore(path, read_only=True)
    assert store.torn_lines == 1 and len(store) == 12
    assert path.read_bytes() == torn


@pytest.mark.reliability(
    "Records",
    "a reader (the report's loader and a read-only store) polls a run folder while a writer "
    "appends 40 records, each line landing in two writes 5 ms apart",
    "the file is never changed by the reader: it ends as exactly the 40 lines written; each "
    "poll sees only whole records, never more than the writer has finished",
)
def test_a_reader_polling_a_live_writer_never_changes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"benchmark": "hr-bench"}))
    path = out / "predictions.jsonl"
    path.touch()  # the run has started, nothing is finished yet
    lines = [
        (json.dumps({"id": str(i), "method": "baseline", "answer": "A" * 300}) + "\n").encode()
        for i in range(40)
    ]
    finished = threading.Event()
    written = [0]

    def writer() -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for line in lines:  # a slow write: readers see the first half alone for a while
                os.write(descriptor, line[:150])
                time.sleep(0.005)
                os.write(descriptor, line[150:])
                written[0] += 1
        finally:
            os.close(descriptor)
            finished.set()

    thread = threading.Thread(target=writer)
    thread.start()
    polls = 0
    while not finished.is_set():
        done_before = written[0]
        _, seen = merge_runs([out])
        store = PredictionStore(path, read_only=True)
        assert done_before <= len(seen) <= written[0] + 1
        assert len(store) <= written[0] + 1
        polls += 1
    thread.join()
    assert polls > 10
    assert path.read_bytes() == b"".join(lines)


# --- 2. one writer per run folder -------------------------------------------------------------------


@pytest.mark.reliability(
    "Records",
    "a second `zoom-refine eval`, and then a `--retry-errors`, started on a run folder while "
    "another eval process is writing it",
    "each is refused before it writes anything: one line on stderr naming the folder and the "
    "writer's pid, exit status 2; the first run finishes with every (id, method) exactly once",
)
def test_a_second_writer_on_a_live_run_folder_is_refused(
    tmp_path: Path, hr_bench: Path, server: FakeServer
) -> None:
    out = tmp_path / "run"
    path = out / "predictions.jsonl"
    server.held = "first"
    server.free_replies = 1  # the first run answers its first sample, then waits on the next
    server.hold.set()
    first = subprocess.Popen(
        eval_args(hr_bench, out, server, "first"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_lines(path, 1, first)  # it holds the lock and stays in progress
        before = path.read_bytes()
        for extra in ((), ("--retry-errors",)):
            second = run_cli(eval_args(hr_bench, out, server, "second", *extra))
            assert second.returncode == 2, second.stderr
            assert second.stderr.strip().splitlines() == [
                f"error: run folder {out} is being written by pid {first.pid}; wait for it or "
                "use another --out"
            ]
            assert path.read_bytes().startswith(before)
        server.hold.clear()
        _, stderr = first.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        server.hold.clear()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert path.read_bytes().startswith(before)
    assert_each_key_once(out)

    again = run_cli(eval_args(hr_bench, out, server, "first"))  # the lock went with its owner
    assert again.returncode == 0, again.stderr
    assert_each_key_once(out)


@pytest.mark.reliability(
    "Records",
    "a run folder whose `.lock` was left by a run that died (its pid written, the process gone, "
    "so no flock held)",
    "the lock is stale and the next run takes it over and finishes; the file is left without a "
    "pid when that run ends",
)
def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path: Path, hr_bench: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **TEXT)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(dead.stdout)
    finished_run(tmp_path, hr_bench)
    assert_each_key_once(out)
    assert (out / ".lock").read_text() == ""


@pytest.mark.reliability(
    "Records",
    "`run_eval` called from a second thread of the process whose other thread is writing the "
    "same run folder",
    "refused with RunFolderBusyError naming this pid, before it touches any file",
)
def test_a_second_thread_of_the_writing_process_is_refused(tmp_path: Path, hr_bench: Path) -> None:
    out = tmp_path / "run"
    failures: list[BaseException] = []

    def second() -> None:
        try:
            run_eval(
                EvalPlan(benchmark="hr-bench", data=hr_bench, out=out),
                ZoomContext(model=RuleVisionModel(fail_on="must not be called")),
            )
        except BaseException as error:
            failures.append(error)

    with hold_run_lock(out):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(failures) == 1 and isinstance(failures[0], RunFolderBusyError)
    assert f"is being written by pid {os.getpid()}" in str(failures[0])
    assert sorted(path.name for path in out.iterdir()) == [".lock"]


# --- 3. what UTF-8 cannot hold ----------------------------------------------------------------------


@pytest.mark.reliability(
    "Records",
    "a record whose `raw` and `answer` hold a lone surrogate (`\\ud800`, which a server's JSON "
    "can carry and UTF-8 cannot encode), among non-ASCII text",
    "it is appended as one JSON line (the surrogate escaped, other text kept as UTF-8) and "
    "reads back equal, string for string; the next append follows it",
)
def test_a_lone_surrogate_is_stored_and_read_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    record = {
        "id": "0",
        "method": "baseline",
        "answer": LONE_SURROGATE,
        "raw": f"A{LONE_SURROGATE}b \udfff é 中",
        "steps": [{"raw": "\udc80"}],
    }
    store = PredictionStore(path)
    store.append(record)
    store.append({"id": "1", "method": "baseline", "answer": "中"})

    data = path.read_bytes()
    data.decode("utf-8")  # strict: the file is valid UTF-8
    assert "中".encode() in data.splitlines()[1]  # text UTF-8 can hold stays readable
    again = PredictionStore(path, read_only=True)
    assert again.torn_lines == 0
    assert again.records[("0", "baseline")] == record
    assert again.records[("1", "baseline")]["answer"] == "中"


@pytest.mark.reliability(
    "Records",
    "every model reply of an eval run of both methods ends in a lone surrogate (`\\ud800`), "
    "and the model fails on two samples with an error message holding one",
    "the run finishes with every (id, method) recorded once, predictions.jsonl valid UTF-8, "
    "each failure's message read back holding the surrogate exactly (and each answered "
    "sample's `raw` the reply); running it again finds every sample done and writes nothing",
)
def test_a_run_whose_model_output_holds_a_lone_surrogate_finishes(
    tmp_path: Path, hr_bench: Path
) -> None:
    model = RuleVisionModel(
        localize=LOCALIZE + LONE_SURROGATE,
        refine=REFINE + LONE_SURROGATE,
        direct=DIRECT + LONE_SURROGATE,
        fail_on="cars",  # rows 2 and 3
        error=ValueError(f"the server sent {LONE_SURROGATE}"),
    )
    methods: tuple[Any, ...] = ("baseline", "zoom-refine")
    plan = EvalPlan(benchmark="hr-bench", data=hr_bench, out=tmp_path / "run", methods=methods)
    run_eval(plan, ZoomContext(model=model))
    assert_each_key_once(plan.out)
    data = (plan.out / "predictions.jsonl").read_bytes()
    data.decode("utf-8")
    by_key = {record_key(record): record for record in records(plan.out)}
    for method in methods:
        for sample in ("2", "3"):
            assert by_key[sample, method]["error"].startswith(
                f"ValueError: the server sent {LONE_SURROGATE} at"
            )
        for sample in ("0", "1", "5"):  # a reply the graph refuses is a sample error instead
            record = by_key[sample, method]
            assert record["status"] == "error" or record["raw"].endswith(LONE_SURROGATE)

    run_eval(plan, ZoomContext(model=RuleVisionModel(fail_on="must not be called")))
    assert (plan.out / "predictions.jsonl").read_bytes() == data
    report = CliRunner().invoke(app, ["report", str(plan.out)])
    assert report.exit_code == 0, report.output
    assert "\\ud800" in (plan.out / "report.html").read_text(encoding="utf-8")


# --- 4. a full disk stops the run -------------------------------------------------------------------

FILE_SIZE_LIMIT = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, like a full disk's ENOSPC
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), hard))
os.execv(sys.argv[2], sys.argv[2:])  # the ignored signal and the limit survive exec
"""


@pytest.mark.reliability(
    "Crash safety",
    "the disk fills during `zoom-refine eval` (no --trace-db): RLIMIT_FSIZE lets "
    "predictions.jsonl reach about three records, then writes fail with EFBIG",
    "the run stops with one line on stderr naming predictions.jsonl and the file size limit, "
    "exit status 2, no traceback; every line written is whole JSON, and a plain resume "
    "finishes with every (id, method) once, the earlier lines kept byte for byte",
)
def test_a_full_disk_stops_the_run_with_one_line_and_a_resume_finishes(
    tmp_path: Path, hr_bench: Path, server: FakeServer
) -> None:
    sizing = tmp_path / "sizing"
    assert run_cli(eval_args(hr_bench, sizing, server, "model")).returncode == 0
    line_sizes = [
        len(line) + 1 for line in (sizing / "predictions.jsonl").read_bytes().splitlines()
    ]
    limit = sum(line_sizes[:3]) + line_sizes[3] // 2

    out = tmp_path / "run"
    path = out / "predictions.jsonl"
    limited = [sys.executable, "-c", FILE_SIZE_LIMIT, str(limit)]
    result = run_cli(limited + eval_args(hr_bench, out, server, "model"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {path}: the file size limit was hit"), last
    kept = path.read_bytes()
    assert kept.endswith(b"\n") and 1 <= kept.count(b"\n") < 12
    assert all(json.loads(line) for line in kept.splitlines())

    resumed = run_cli(eval_args(hr_bench, out, server, "model"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert path.read_bytes().startswith(kept)
    assert_each_key_once(out)


@pytest.mark.reliability(
    "Records",
    "a model load that fails for lack of room (EFBIG / ENOSPC while loading an hf: model)",
    "one line naming the file and the disk, not 'cannot load model'",
)
@pytest.mark.parametrize("code", [errno.EFBIG, errno.ENOSPC])
def test_a_full_disk_while_loading_a_model_blames_the_disk(
    code: int, tiny_internvl_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `ask` loading a real checkpoint through the local backend; the disk fills while
    transformers reads the weights (the fault is raised where a full cache disk raises it)."""
    import transformers

    from zoom_refine.agent.local.backend import clear_local_backends

    weights = tiny_internvl_path / "model.safetensors"

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code), str(weights))

    clear_local_backends()  # so this process loads the model now, not from its cache
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", disk_full)
    image = fixtures.photo_like((640, 480), seed=4)
    path = tiny_internvl_path.parent / f"disk-full-{code}.png"
    image.save(path)
    args = ["ask", str(path), "What is it?", "--model", f"hf:{tiny_internvl_path}"]
    result = CliRunner().invoke(app, args)
    clear_local_backends()
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [result.output.strip().splitlines()[-1]]  # one error line, the last
    assert errors[0].startswith(f"error: cannot write {weights}: the disk is full") or (
        errors[0].startswith(f"error: cannot write {weights}: the file size limit was hit")
    )
    assert "cannot load model" not in result.output and "Traceback" not in result.output


@pytest.mark.reliability(
    "Records",
    "config.json cut off by a stopped write (found by benchmarks/adversarial_records.py)",
    "config.json and summary.json are replaced atomically; `report` on a torn config.json "
    "says so in one line (exit 2) instead of a traceback",
)
def test_run_files_are_replaced_atomically_and_a_torn_config_is_one_line(
    tmp_path: Path, hr_bench: Path
) -> None:
    from zoom_refine.evals.store import replace_json
    from zoom_refine.tools import files

    out = finished_run(tmp_path, hr_bench)
    summary = out / "summary.json"
    before = summary.read_bytes()

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(OSError) as caught:
        patch.setattr(files.os, "fsync", disk_full)  # the temporary is written, never synced
        replace_json(summary, {"cut": "short"})
    assert caught.value.filename == str(summary)  # the error names the file a user knows
    assert summary.read_bytes() == before  # the old file stays whole
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".summary")) == []
    (out / "config.json").write_text('{"benchmark": "hr-bench", "model": "cut off her')
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "config.json cannot be read" in result.output


# --- 5. one record type ------------------------------------------------------------------------------

RECORD_HINTS = get_type_hints(PredictionRecord)
FIRST_VERSION_RECORDS = Path(__file__).parent / "golden" / "records" / "e888a7d.jsonl"
"""Six lines as the first runner (commit e888a7d) wrote them, running its own code on the 6-row
HR-Bench fixture with `RuleVisionModel(fail_on="cars")`: rows 0 (ok), 2 (model error) and 4 (bad
row), baseline and zoom-refine each."""


def literal_values(hint: Any) -> set[object]:
    """Every value a hint built of Literals, None and unions of them allows."""
    if get_origin(hint) is Literal:
        return set(get_args(hint))
    if hint is type(None):
        return {None}
    members = get_args(hint)
    assert members, f"{hint} is not a Literal, None or a union of them"
    return set().union(*(literal_values(member) for member in members))


def record_problems(record: dict[str, Any]) -> list[str]:
    """How `record` departs from `PredictionRecord`: keys it lacks or should not have, and values
    of its Literal fields (`method`, `status`, `stop_reason`) outside their Literals."""
    problems = [f"unexpected key {name!r}" for name in record if name not in RECORD_HINTS]
    missing = sorted(PredictionRecord.__required_keys__ - record.keys())
    problems += [f"missing key {name!r}" for name in missing]
    for name in ("method", "status", "stop_reason"):
        allowed = literal_values(RECORD_HINTS[name])
        if name in record and record[name] not in allowed:
            problems.append(f"{name} {record[name]!r} is none of {sorted(map(str, allowed))}")
    return problems


def test_the_record_check_catches_an_untyped_status_an_extra_key_and_a_missing_one() -> None:
    good = {name: None for name in PredictionRecord.__required_keys__} | {
        "method": "baseline",
        "status": "ok",
        "stop_reason": "confident",
    }
    assert record_problems(good) == []
    assert literal_values(RECORD_HINTS["stop_reason"]) == {*get_args(StopReason), None}
    bad = {key: value for key, value in good.items() if key != "raw"}
    bad |= {"status": "skipped", "stop_reason": "timeout", "note": "x"}
    assert record_problems(bad) == [
        "unexpected key 'note'",
        "missing key 'raw'",
        "status 'skipped' is none of ['error', 'ok']",
        "stop_reason 'timeout' is none of ['None', 'answered', 'baseline', 'confident', "
        "'crop_failed', 'max_hops', 'no_box', 'refine_failed']",
    ]


def test_every_record_a_real_eval_writes_is_a_prediction_record(
    tmp_path: Path, hr_bench: Path
) -> None:
    plan = EvalPlan(
        benchmark="hr-bench",
        data=hr_bench,
        out=tmp_path / "run",
        methods=("baseline", "zoom-refine", "agent"),
        trace_db=tmp_path / "traces.db",
    )
    run_eval(plan, ZoomContext(model=RuleVisionModel(fail_on="cars")))  # rows 2 and 3 fail
    written = records(plan.out)
    assert len(written) == 18  # 6 rows × 3 methods
    for record in written:
        assert record_problems(record) == [], record
    shapes = {
        (record["status"], (record["error"] or "").split(":")[0], "thread_id" in record)
        for record in written
    }
    # a finished run (traced), a run that raised, a bad row: the three shapes were all checked
    assert shapes == {("ok", "", True), ("error", "ValueError", False), ("error", "bad row", False)}
    stops = {(r["method"], r["stop_reason"]) for r in written if r["status"] == "ok"}
    assert stops == {("baseline", "baseline"), ("zoom-refine", "confident"), ("agent", "answered")}


def test_records_written_by_the_first_version_still_load_resume_and_score(
    tmp_path: Path, hr_bench: Path
) -> None:
    old = FIRST_VERSION_RECORDS.read_bytes()
    out = tmp_path / "run"
    out.mkdir()
    (out / "predictions.jsonl").write_bytes(old)
    loaded = list(PredictionStore(out / "predictions.jsonl", read_only=True))
    assert [record_key(record) for record in loaded] == [
        (sample, method) for sample in ("0", "2", "4") for method in ("baseline", "zoom-refine")
    ]
    for record in loaded:
        assert record_problems(record) == [], record

    plan = EvalPlan(
        benchmark="hr-bench", data=hr_bench, out=out, methods=("baseline", "zoom-refine")
    )
    summary = run_eval(plan, ZoomContext(model=RuleVisionModel()))
    data = (out / "predictions.jsonl").read_bytes()
    assert data.startswith(old) and data.count(b"\n") == 12  # old lines kept; 1, 3, 5 added
    for method in ("baseline", "zoom-refine"):  # the old errors stay (no --retry-errors)
        assert summary["methods"][method]["error_ids"] == ["2", "4"]
    assert "0" in summary["paired"]["broken_ids"]  # the old row 0: baseline A right, zoom B wrong
    replayed = {
        (o.id, o.method): o for o in replay_outcomes(records(out), max_hops=1, threshold=0.5)
    }
    assert replayed["0", "zoom-refine"].answer == "B"
    assert replayed["0", "zoom-refine"].stop_reason == "confident"
