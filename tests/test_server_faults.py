"""Server faults against a real `transformers serve`: killed mid-run, unreachable, hung.

The protocol-trained tiny InternVL3 is served (it answers localize and refine properly), and
`zoom-refine eval` runs against it as a user would run it. Each fault must end the same way: the
failing requests are retried (`graphs.calls.MODEL_RETRY`: 3 attempts, waits of 1 s then 2 s, plus
up to 1 s of jitter each), every sample that still fails is recorded as an error in
`predictions.jsonl`, the run finishes with its summary, and `--retry-errors` against a live
server completes it without losing or duplicating a finished sample.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from servers import free_port, served_model_name, start_server
from typer.testing import CliRunner

from zoom_refine.cli import app

ZOOM_REFINE = Path(sys.executable).with_name("zoom-refine")
MIN_RETRY_WAIT_S = 1.0 + 2.0
"""The two backoff waits of `MODEL_RETRY`, before the 2nd and the 3rd attempt."""
MAX_RETRY_WAIT_S = MIN_RETRY_WAIT_S + 2 * 1.0
"""The same with the most jitter LangGraph adds to each wait (up to 1 s)."""
SLACK_S = 10.0
"""Headroom for a loaded two-core machine (other test runs share it)."""
RUN_TIMEOUT_S = 180.0
"""A run that takes longer than this is hung: every fault here ends in seconds."""


def square_rows_tsv(folder: Path, count: int) -> Path:
    """An HR-Bench TSV of `count` rows with 64×64 images: one 448-px tile per image, so each
    request to the served tiny model is cheap (a 4:3 image would be tiled 4×3 + thumbnail)."""
    colours = list(fixtures.COLORS)
    rows = []
    for index in range(count):
        image = fixtures.b64(fixtures.jpeg_bytes(colours[index % len(colours)], (64, 64)))
        row = [index, f"Question {index}?", "ABCD"[index % 4], "single"]
        rows.append([*row, "red", "blue", "green", "white", f"cycle{index % 4 + 1}", image])
    return fixtures.write_tsv(folder / "hr_bench_4k.tsv", fixtures.HR_HEADER, rows)


def eval_args(data: Path, out: Path, model_dir: Path, base_url: str, *extra: str) -> list[str]:
    """`zoom-refine eval` arguments for the served model (its name is the path, verbatim)."""
    return [
        "eval",
        "hr-bench",
        "--data",
        str(data),
        "--model",
        f"openai:{served_model_name(model_dir)}",
        "--base-url",
        base_url,
        "--out",
        str(out),
        *extra,
    ]


def run_cli(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run `zoom-refine` in a fresh process; a hang fails the test (TimeoutExpired) instead."""
    return subprocess.run(
        [str(ZOOM_REFINE), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def lines(out: Path) -> list[dict[str, Any]]:
    """The records written so far; a line still being written (no newline yet) is left out."""
    data = (out / "predictions.jsonl").read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def assert_finished_normally(returncode: int, stdout: str, stderr: str, errors: int) -> None:
    """Exit 0, the summary table on stdout with the error count, no traceback anywhere."""
    assert returncode == 0, stderr[-3000:]
    assert f"{errors} errors (counted wrong)" in stdout, stdout
    assert "Traceback" not in stderr + stdout


def recover(args: Sequence[str]) -> None:
    """The recovery run, `--retry-errors` against a live server: in-process (no second import of
    the stack; the faulted runs above are the ones that need a process of their own)."""
    result = CliRunner().invoke(app, [*args, "--retry-errors"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert_finished_normally(result.exit_code, result.stdout, result.stderr, errors=0)


CONNECTION_ERROR = "ConnectionError: Connection error."
"""How a refused or dropped connection reads (langchain-openai's `OpenAIConnectionError`)."""
TIMEOUT_ERROR = "TimeoutError: Request timed out."
"""How a request past `request_timeout` reads (`OpenAITimeoutError`)."""


def assert_error_record(record: dict[str, Any], *kinds: str) -> None:
    """A per-sample error: status, no answer, a one-line message naming the failure."""
    assert record["status"] == "error" and record["answer"] is None, record
    message = record["error"]
    assert isinstance(message, str) and "\n" not in message, message
    assert any(kind in message for kind in kinds), message


def assert_each_id_once(records: list[dict[str, Any]], count: int) -> None:
    ids = Counter(record["id"] for record in records)
    assert sorted(ids, key=int) == [str(index) for index in range(count)]
    assert set(ids.values()) == {1}, ids


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    """Until the run has written `count` predictions; fail if it exits or stalls first."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (path.exists() and path.read_bytes().count(b"\n") >= count):
        assert process.poll() is None, f"the run exited early with {process.returncode}"
        assert time.monotonic() < deadline, f"fewer than {count} predictions after a while"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.reliability(
    "Server faults",
    "server killed (SIGKILL) mid-run, then restarted",
    "in-flight and later samples retried (≥ 3 s of backoff each), then recorded as one-line "
    "connection errors; the run exits 0 "
    "with its summary; samples done before the kill unchanged; --retry-errors on a restarted "
    "server completes the run, each id once, nothing lost",
)
def test_server_killed_mid_run_then_retry_errors_on_a_restarted_server(
    tmp_path: Path, trained_internvl_path: Path
) -> None:
    count = 24  # 2 done before the kill, up to 8 in flight, the rest not started: errors certain
    data = square_rows_tsv(tmp_path / "data", count)
    out = tmp_path / "run"
    log_path = tmp_path / "first-run.log"
    with start_server(trained_internvl_path) as server, log_path.open("w") as log:
        args = eval_args(data, out, trained_internvl_path, server.base_url, "--concurrency", "8")
        process = subprocess.Popen([str(ZOOM_REFINE), *args], stdout=log, stderr=log)
        try:
            wait_for_lines(out / "predictions.jsonl", 2, process)
            server.kill()
            before = {record["id"]: record for record in lines(out)}
            returncode = process.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output and "errors (counted wrong)" in output

    first = lines(out)
    assert_each_id_once(first, count)
    by_id = {record["id"]: record for record in first}
    assert all(by_id[key] == record for key, record in before.items())  # untouched by the kill
    done = {key: record for key, record in by_id.items() if record["status"] == "ok"}
    failed = [record for record in first if record["status"] == "error"]
    assert len(done) >= len(before) >= 2 and failed, [r["status"] for r in first]
    assert all(record["steps"][-1]["node"] == "refine" for record in done.values())
    for record in failed:
        # The sample in flight saw its connection drop, the rest a refused connection: both
        # transient, so each was attempted 3 times, waiting at least 1 s + 2 s in between.
        assert_error_record(record, CONNECTION_ERROR)
        assert record["seconds"] >= MIN_RETRY_WAIT_S, record

    with start_server(trained_internvl_path) as restarted:  # same model dir, a new port
        recover(
            eval_args(data, out, trained_internvl_path, restarted.base_url, "--concurrency", "8")
        )
    after = lines(out)
    assert_each_id_once(after, count)
    assert all(record["status"] == "ok" for record in after), [r["error"] for r in after]
    for record in after:
        if record["id"] in done:
            assert record == done[record["id"]]  # finished before: kept, not re-run


@pytest.mark.reliability(
    "Server faults",
    "server unreachable (nothing listens on the port)",
    "each sample retried 3× (2 retries logged, ≥ 3 s of backoff), then recorded as a one-line "
    "connection error; the run exits 0 with its summary and no traceback",
)
def test_an_unreachable_server_is_retried_then_each_sample_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = 4
    data = square_rows_tsv(tmp_path / "data", count)
    out = tmp_path / "run"
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # free: nothing listens there
    caplog.set_level(logging.INFO, logger="langgraph")
    started = time.monotonic()
    args = eval_args(data, out, Path("/models/absent"), base_url, "--concurrency", str(count))
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert f"{count} errors (counted wrong)" in result.stdout
    assert "Traceback" not in result.output and result.exception is None
    records = lines(out)
    assert_each_id_once(records, count)
    for record in records:
        assert_error_record(record, CONNECTION_ERROR)
        assert MIN_RETRY_WAIT_S <= record["seconds"] <= MAX_RETRY_WAIT_S + SLACK_S, record
    # LangGraph logs each retry of a node: 2 per sample (localize), so 3 attempts each.
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retries) == 2 * count, retries
    assert all("task localize" in message for message in retries), retries
    assert elapsed < MAX_RETRY_WAIT_S + SLACK_S  # samples in parallel, none waits out a timeout


@pytest.mark.slow
@pytest.mark.reliability(
    "Server faults",
    "server hung (SIGSTOP: connects, never answers), --request-timeout 1",
    "each request times out after 1 s and is retried 3× (≥ 6 s per sample: 3 × 1 s + backoff), "
    "then recorded as a one-line timeout error; the run exits 0; after SIGCONT --retry-errors "
    "completes it, every sample answered",
)
def test_a_hung_server_times_out_then_retry_errors_completes_after_it_resumes(
    tmp_path: Path, trained_internvl_path: Path
) -> None:
    count = 3
    data = square_rows_tsv(tmp_path / "data", count)
    out = tmp_path / "run"
    with start_server(trained_internvl_path) as server:
        args = eval_args(data, out, trained_internvl_path, server.base_url)
        server.pause()
        try:
            started = time.monotonic()
            completed = run_cli([*args, "--request-timeout", "1", "--concurrency", str(count)])
            elapsed = time.monotonic() - started
        finally:
            server.resume()
        assert_finished_normally(completed.returncode, completed.stdout, completed.stderr, count)
        first = lines(out)
        assert_each_id_once(first, count)
        for record in first:
            assert_error_record(record, TIMEOUT_ERROR)
            # 3 attempts of 1 s each, plus the waits of 1 s and 2 s (+ jitter) between them.
            timed_out = 3 * 1.0
            assert timed_out + MIN_RETRY_WAIT_S - 0.1 <= record["seconds"], record
            assert record["seconds"] <= timed_out + MAX_RETRY_WAIT_S + SLACK_S, record
        assert elapsed < 3 * 1.0 + MAX_RETRY_WAIT_S + 2 * SLACK_S  # imports included

        # Resumed, the server first works off the requests it queued while paused.
        recover([*args, "--request-timeout", "60"])
    after = lines(out)
    assert_each_id_once(after, count)
    assert all(record["status"] == "ok" for record in after), [r["error"] for r in after]
    assert all(record["steps"][-1]["node"] == "refine" for record in after)


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
@pytest.mark.parametrize("command", ["eval", "ask"])
def test_a_request_timeout_that_is_not_positive_is_refused_in_one_line(
    tmp_path: Path, command: str, value: str
) -> None:
    server = ["--model", "openai:absent", "--base-url", "http://127.0.0.1:9/v1"]
    if command == "ask":
        args = ["ask", str(tmp_path / "image.png"), "Which?", *server]
    else:
        data = square_rows_tsv(tmp_path / "data", 1)
        args = ["eval", "hr-bench", "--data", str(data), *server, "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--request-timeout", value])
    assert result.exit_code == 2 and "--request-timeout" in result.stderr, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
