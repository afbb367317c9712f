"""Several OpenAI-compatible servers behind one model (`--base-url` repeated, `agent.replicas`).

Three layers: the routing policy alone (`ReplicaRouter`, a fake clock); `ReplicaChatModel` as
`agent.models` builds it (one real `ChatOpenAI` per URL) against small OpenAI-compatible HTTP
servers in this process that answer, fail with a status, hold a request, or drop the connection
(real sockets, real client); and `zoom-refine eval` over two real `transformers serve` servers
with the protocol-trained tiny InternVL3, one of them killed mid-run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import openai
import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from servers import (
    FakeOpenAIServer,
    RunningServer,
    free_port,
    log_tail,
    served_model_name,
    start_server,
)
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.models import load_chat_model
from zoom_refine.agent.replicas import (
    ReplicaChatModel,
    ReplicaRouter,
    conversation_key,
    server_urls,
)
from zoom_refine.cli import ModelOptions, app
from zoom_refine.evals.run_config import resumed_config
from zoom_refine.graphs.calls import is_transient_model_error
from zoom_refine.testing import PROTOCOL_REPLIES, protocol_context, protocol_inputs
from zoom_refine.tools.errors import AllReplicasDownError, InvalidInputError

URLS = ("http://a/v1", "http://b/v1")


class Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replica_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "zoom_refine.agent.replicas"]


def router(count: int = 2, **options: Any) -> tuple[ReplicaRouter, Clock]:
    clock = Clock()
    urls = [f"http://replica{index}/v1" for index in range(count)]
    return ReplicaRouter(urls, clock=clock, **options), clock


# --- the routing policy -----------------------------------------------------------------------


def test_new_conversations_go_to_the_replica_with_fewest_requests_in_flight() -> None:
    policy, _ = router(3)
    first = [policy.acquire(f"c{index}") for index in range(3)]
    assert first == [0, 1, 2]  # all idle: spread
    policy.release(1, "answered")  # replica 1 is free again, 0 and 2 still busy
    assert policy.acquire("c3") == 1
    assert policy.acquire("c4") == 0  # one in flight each: the fewest sent (0, 2), lower index
    assert [replica.in_flight for replica in policy.replicas] == [2, 1, 1]


def test_ties_in_flight_go_to_the_replica_sent_fewest_so_far() -> None:
    policy, _ = router(2)
    for key in ("a", "b", "c"):  # one at a time: nothing ever in flight when the next comes
        index = policy.acquire(key)
        assert index is not None
        policy.release(index, "answered")
    assert [replica.sent for replica in policy.replicas] == [2, 1]
    assert policy.acquire("d") == 1


def test_a_conversation_stays_on_its_replica_even_when_that_one_is_busier() -> None:
    policy, _ = router(2)
    assert policy.acquire("talk") == 0
    policy.release(0, "answered")
    for key in ("x", "y", "z"):  # load replica 0 with three requests in flight
        policy.acquire(key, exclude={1})
    assert policy.acquire("talk") == 0  # its prefix is cached there
    assert policy.acquire("new") == 1


def test_a_refused_connection_takes_the_replica_out_and_its_conversations_move(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy, _ = router(2)
    assert policy.acquire("talk") == 0
    with caplog.at_level(logging.WARNING, logger="zoom_refine.agent.replicas"):
        policy.release(0, "down", "[Errno 111] Connection refused")
    assert policy.replicas[0].down_until is not None
    assert policy.acquire("talk") == 1 and policy.home_of("talk") == 1
    assert all(policy.acquire(f"c{i}") == 1 for i in range(5))  # nothing new goes to 0
    (warning,) = replica_warnings(caplog)
    assert "http://replica0/v1 is down ([Errno 111] Connection refused)" in warning


def test_failures_in_a_row_take_a_replica_out_and_an_answer_resets_the_count() -> None:
    policy, _ = router(2, strikes_to_drop=3)
    for _ in range(2):
        policy.acquire(None, exclude={1})
        policy.release(0, "failed", "HTTP 503")
    policy.acquire(None, exclude={1})
    policy.release(0, "answered")  # an answer in between: the count starts again
    for _ in range(2):
        policy.acquire(None, exclude={1})
        policy.release(0, "failed", "HTTP 503")
    assert policy.replicas[0].down_until is None  # two in a row: still up
    policy.acquire(None, exclude={1})
    policy.release(0, "failed", "HTTP 503")
    assert policy.replicas[0].down_until is not None  # the third in a row: out


def test_a_replica_taken_out_gets_one_trial_request_later_and_rejoins_when_it_answers() -> None:
    policy, clock = router(2, retry_down_after=30.0)
    policy.acquire("a")
    policy.release(0, "down", "reset")
    clock.now += 29.0
    assert policy.acquire("b") == 1
    clock.now += 1.0
    assert policy.acquire("c") == 0  # its trial: idle, and its time has come
    assert policy.acquire("d") == 1  # one trial per period, the others keep away
    policy.release(0, "answered")
    assert policy.replicas[0].down_until is None
    assert policy.acquire("e") == 0  # back in service (fewer in flight than replica 1)


def test_a_failed_trial_waits_another_period() -> None:
    policy, clock = router(2, retry_down_after=10.0)
    policy.acquire("a")
    policy.release(0, "down", "refused")
    assert policy.acquire("busy") == 1
    clock.now += 10.0
    assert policy.acquire("b") == 0
    policy.release(0, "down", "refused")
    clock.now += 9.0
    assert policy.acquire("c") == 1


def test_every_replica_down_is_one_error_that_names_each_server_and_why() -> None:
    policy, _ = router(2)
    policy.acquire("a")
    policy.acquire("b")
    policy.release(0, "down", "[Errno 111] Connection refused")
    policy.release(1, "down", "Server disconnected without sending a response.")
    with pytest.raises(AllReplicasDownError) as caught:
        policy.acquire("a")
    message = str(caught.value)
    assert message.startswith("all 2 model servers are down: ")
    assert "http://replica0/v1 ([Errno 111] Connection refused)" in message
    assert "http://replica1/v1 (Server disconnected without sending a response.)" in message
    assert "\n" not in message
    assert is_transient_model_error(caught.value)  # the graph retries it like one dead server


def test_a_request_that_failed_on_every_live_replica_is_told_so_not_that_all_are_down() -> None:
    policy, _ = router(2)
    policy.acquire("a")
    policy.release(0, "failed", "HTTP 500")  # still up (one strike)
    policy.acquire("b")
    policy.release(1, "down", "refused")
    assert policy.acquire("a", exclude={0}) is None  # the caller re-raises its own failure


def test_only_the_most_recent_conversations_are_remembered() -> None:
    policy, _ = router(2, remembered=2)
    for key in ("a", "b", "c"):
        index = policy.acquire(key)
        assert index is not None
        policy.release(index, "answered")
    assert policy.home_of("a") is None and policy.home_of("c") is not None


def test_counts_stay_exact_under_many_threads() -> None:
    policy, _ = router(3)

    def work(worker: int) -> None:
        for step in range(200):
            index = policy.acquire(f"{worker}-{step % 7}")
            assert index is not None
            policy.release(index, "answered")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [replica.in_flight for replica in policy.replicas] == [0, 0, 0]
    assert sum(replica.sent for replica in policy.replicas) == 8 * 200


# --- conversations and URLs -------------------------------------------------------------------

IMAGE = {
    "type": "image",
    "base64": fixtures.b64(fixtures.jpeg_bytes("red")),
    "mime_type": "image/jpeg",
}
OTHER_IMAGE = {**IMAGE, "base64": fixtures.b64(fixtures.jpeg_bytes("blue"))}


def opening(image: dict[str, Any] = IMAGE, question: str = "Which colour?") -> HumanMessage:
    return HumanMessage(content=[image, {"type": "text", "text": question}])


def test_a_conversations_key_is_its_opening_turn() -> None:
    localize = [opening()]
    refine = [opening(), AIMessage(content="Answer: A"), HumanMessage(content=[IMAGE, "Recheck."])]
    assert conversation_key(localize) == conversation_key(refine) is not None
    assert conversation_key([opening(OTHER_IMAGE)]) != conversation_key(localize)  # the image
    assert conversation_key([opening(question="Which shape?")]) != conversation_key(localize)
    assert conversation_key([AIMessage(content="no user turn")]) is None


def test_base_url_takes_one_url_or_several() -> None:
    assert server_urls(None) is None and server_urls([]) is None
    assert server_urls("http://a/v1") == "http://a/v1"
    assert server_urls(["http://a/v1"]) == "http://a/v1"  # one replica is a plain server
    assert server_urls(["http://a/v1", "http://b/v1"]) == URLS
    with pytest.raises(InvalidInputError, match="lists http://a/v1/ more than once"):
        server_urls(["http://a/v1", "http://a/v1/"])
    with pytest.raises(InvalidInputError, match="must be server URLs"):
        server_urls(["http://a/v1", 8000])
    context = ZoomContext(model="openai:m", base_url=list(URLS))
    assert context.base_url == URLS
    assert context.model_settings()["base_url"] == URLS  # hashable: the model cache's key


def test_the_cli_takes_base_url_repeated_or_a_comma_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ModelOptions(model="openai:m", base_url=list(URLS)).context().base_url == URLS
    monkeypatch.setenv("ZOOM_REFINE_BASE_URL", "http://a/v1, http://b/v1")
    assert ModelOptions(model="openai:m").context().base_url == URLS
    monkeypatch.setenv("ZOOM_REFINE_BASE_URL", "http://a/v1")
    assert ModelOptions(model="openai:m").context().base_url == "http://a/v1"


def test_a_resume_on_another_set_of_replicas_of_the_same_model_is_allowed(tmp_path: Path) -> None:
    old = {"model": "openai:m", "context": {"base_url": list(URLS), "max_hops": 1}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "predictions.jsonl").write_text('{"id": "0"}\n')
    for urls in ("http://c/v1", ["http://b/v1", "http://c/v1", "http://d/v1"]):
        new = {"model": "openai:m", "context": {"base_url": urls, "max_hops": 1}}
        written = resumed_config(tmp_path, new)
        assert written["context"]["base_url"] == urls
        assert written["previous_configs"] == [old]  # the earlier replica list is kept


# --- ReplicaChatModel against real HTTP servers -----------------------------------------------

PROTOCOL = PROTOCOL_REPLIES["internvl3"]


def protocol_reply(request: dict[str, Any]) -> str:
    """The Zoom-Refine protocol's reply, chosen by how many assistant turns the request holds."""
    turns = sum(message["role"] == "assistant" for message in request["messages"])
    return PROTOCOL[turns % len(PROTOCOL)]


def opening_digest(request: dict[str, Any]) -> str:
    first = next(message for message in request["messages"] if message["role"] == "user")
    return hashlib.sha256(json.dumps(first, sort_keys=True).encode()).hexdigest()


def openings(server: FakeOpenAIServer) -> set[str]:
    """The first user turns of the requests `server` got, hashed."""
    return {opening_digest(request) for request in server.requests}


@contextmanager
def fake_servers(count: int) -> Iterator[list[FakeOpenAIServer]]:
    """`count` fake OpenAI-compatible servers (`servers.FakeOpenAIServer`) answering the
    protocol; every one stopped on exit."""
    with ExitStack() as stack:
        yield [stack.enter_context(FakeOpenAIServer(reply=protocol_reply)) for _ in range(count)]


def replicas_model(*urls: str) -> ReplicaChatModel:
    """What `--model openai:fake --base-url A --base-url B` makes (agent.models' builder)."""
    model = load_chat_model("openai:fake", base_url=tuple(urls), request_timeout=10.0)
    assert isinstance(model, ReplicaChatModel)
    return model


def localize(colour: str) -> list[BaseMessage]:
    image = {**IMAGE, "base64": fixtures.b64(fixtures.jpeg_bytes(colour))}
    return [opening(image)]


def refine(colour: str) -> list[BaseMessage]:
    return [*localize(colour), AIMessage(content=PROTOCOL[0]), HumanMessage(content=[IMAGE, "?"])]


COLOURS = list(fixtures.COLORS)


def test_each_conversation_stays_on_one_server_and_new_ones_are_spread() -> None:
    with fake_servers(2) as (first, second):
        model = replicas_model(first.url, second.url)
        for colour in COLOURS[:3]:  # three localize requests, then their refine requests
            model.invoke(localize(colour))
        replies = [model.invoke(refine(colour)) for colour in COLOURS[:3]]
    # Spread alone would send the refine requests first, second, first: not where they started.
    assert [len(first.requests), len(second.requests)] == [4, 2]
    assert [len(openings(first)), len(openings(second))] == [2, 1]
    assert not openings(first) & openings(second)  # each conversation on one server
    assert {reply.response_metadata["replica"] for reply in replies} == {first.url, second.url}
    assert all(reply.text == PROTOCOL[1] for reply in replies)


def test_a_new_conversation_goes_to_the_server_with_fewer_requests_in_flight() -> None:
    with fake_servers(2) as (slow, fast):
        slow.mode = "hang"  # answers only when released: its request stays in flight
        model = replicas_model(slow.url, fast.url)
        held = threading.Thread(target=model.invoke, args=(localize("red"),))
        held.start()
        while not slow.requests:
            time.sleep(0.01)
        for colour in COLOURS[1:5]:
            model.invoke(localize(colour))
        slow.release.set()
        held.join()
    assert [len(slow.requests), len(fast.requests)] == [1, 4]


def test_a_request_dropped_mid_flight_is_sent_again_to_another_server_and_its_conversation_moves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with fake_servers(2) as (dying, alive):
        dying.mode = "close"
        model = replicas_model(dying.url, alive.url)
        with caplog.at_level(logging.WARNING, logger="zoom_refine.agent.replicas"):
            first = model.invoke(localize("red"))  # goes to `dying` first, which drops it
            second = model.invoke(refine("red"))
            others = [model.invoke(localize(colour)) for colour in COLOURS[1:]]
    assert len(dying.requests) == 1  # taken out at once: nothing more was sent there
    assert first.text == PROTOCOL[0] and second.text == PROTOCOL[1]
    assert {r.response_metadata["replica"] for r in [first, second, *others]} == {alive.url}
    assert len(alive.requests) == 2 + len(others)
    (warning,) = replica_warnings(caplog)
    assert f"{dying.url} is down (" in warning and "move to the others (1 up)" in warning


def test_5xx_sends_the_request_elsewhere_and_three_in_a_row_take_the_server_out() -> None:
    with fake_servers(2) as (failing, healthy):
        failing.mode = "status"
        failing.status = 503
        model = replicas_model(failing.url, healthy.url)
        replies = [model.invoke(localize(colour)) for colour in COLOURS]
    assert len(failing.requests) == 3  # each new conversation tried it until the third strike
    assert all(reply.response_metadata["replica"] == healthy.url for reply in replies)
    assert model.router.replicas[0].down_until is not None
    assert "503" in model.router.replicas[0].reason


def test_a_4xx_is_the_requests_own_fault_it_is_raised_and_the_server_stays_in() -> None:
    with fake_servers(2) as (first, second):
        first.mode = "status"
        first.status = 400
        model = replicas_model(first.url, second.url)
        with pytest.raises(openai.BadRequestError):
            model.invoke(localize("red"))
    assert second.requests == []  # not re-sent: a bad request stays bad
    assert model.router.replicas[0].down_until is None
    assert [replica.in_flight for replica in model.router.replicas] == [0, 0]


def test_every_server_down_is_one_error_naming_each() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]  # nothing listens there
    model = replicas_model(*urls)
    with pytest.raises(AllReplicasDownError) as caught:
        model.invoke(localize("red"))
    message = str(caught.value)
    assert all(f"{url} ([Errno 111] Connection refused)" in message for url in urls), message


def test_request_options_usage_and_tools_pass_through_to_the_server() -> None:
    @tool
    def crop(box: list[float]) -> str:
        """Crop the image to `box`."""
        return "cropped"

    with fake_servers(2) as (first, second):
        model = replicas_model(first.url, second.url)
        with get_usage_metadata_callback() as usage:
            reply = model.bind(logprobs=True).invoke(localize("red"))
        model.bind_tools([crop]).invoke(localize("blue"))
    assert first.requests[0]["logprobs"] is True
    assert second.requests[0]["tools"][0]["function"]["name"] == "crop"
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] == 7
    assert [entry["total_tokens"] for entry in usage.usage_metadata.values()] == [7]  # once


def test_the_async_path_fails_over_too() -> None:
    with fake_servers(2) as (dying, alive):
        dying.mode = "close"
        model = replicas_model(dying.url, alive.url)
        reply = asyncio.run(model.ainvoke(localize("red")))
    assert reply.response_metadata["replica"] == alive.url and len(dying.requests) == 1


def run_graph_batch(urls: list[str], images: list[bytes]) -> list[dict[str, Any]]:
    """The real graph over `urls`, zooming again (localize, refine, localize, refine: four
    requests per run), four runs at a time."""
    context = protocol_context("internvl3", "openai:fake", zoom_again=True, base_url=urls)
    inputs = [protocol_inputs(image) for image in images]
    config = {"recursion_limit": context.recursion_limit, "max_concurrency": 4}
    results: list[dict[str, Any]] = build_graph().batch(inputs, config=config, context=context)
    for result in results:
        assert [step["node"] for step in result["steps"]] == ["localize", "refine"] * 2
        assert result["answer"] == "A"
    return results


def test_the_graph_runs_concurrently_over_two_servers_each_run_on_one() -> None:
    images = [fixtures.jpeg_bytes(colour, (64, 48 + index)) for index, colour in enumerate(COLOURS)]
    with fake_servers(2) as (first, second):
        run_graph_batch([first.url, second.url], images * 2)  # each image twice: same opening
    assert openings(first) and openings(second)
    assert not openings(first) & openings(second)
    assert len(first.requests) + len(second.requests) == 4 * 2 * len(images)


def test_the_graph_runs_over_two_servers_one_failing_mid_run_and_no_run_is_lost() -> None:
    """The real graph (localize, refine, zoom again, refine: four requests per run) batched 4 at
    a time over two servers; the first server drops every request after its third."""
    images = [fixtures.jpeg_bytes(colour, (64, 48 + index)) for index, colour in enumerate(COLOURS)]
    images *= 2
    with fake_servers(2) as (dying, alive):
        dying.mode = "close"
        dying.answer_first = 3  # fewer than a run's four requests: none can finish there
        run_graph_batch([dying.url, alive.url], images)
    assert 3 < len(dying.requests) < 4 * len(images)
    assert len(dying.requests) + len(alive.requests) > 4 * len(images)  # the dropped, re-sent
    answered = [dying.requests[index] for index in range(3)]
    moved = {opening_digest(request) for request in answered}
    assert moved <= openings(alive)  # every conversation it had finished on the other one


# --- two real servers, one killed mid-run -----------------------------------------------------

ZOOM_REFINE = Path(sys.executable).with_name("zoom-refine")
RUN_TIMEOUT_S = 150.0
RECEIVED = "[Request received]"
ANSWERED = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')


def server_output(server: RunningServer) -> str:
    """Everything the server printed so far (its log file, read without moving its offset)."""
    log = getattr(server, "log", None)
    if log is not None:
        return log_tail(log, limit=10**8)
    return Path(f"/proc/{server.process.pid}/fd/1").read_text(errors="replace")


def requests_seen(server: RunningServer) -> tuple[int, int]:
    """(requests received, requests answered) by a `transformers serve`, from its log."""
    output = server_output(server)
    return output.count(RECEIVED), len(ANSWERED.findall(output))


def square_rows_tsv(folder: Path, count: int) -> Path:
    """HR-Bench rows with 64×64 images (one tile each: cheap requests to the tiny model)."""
    colours = list(fixtures.COLORS)
    rows = []
    for index in range(count):
        image = fixtures.b64(fixtures.jpeg_bytes(colours[index % len(colours)], (64, 64)))
        row = [index, f"Question {index}?", "ABCD"[index % 4], "single"]
        rows.append([*row, "red", "blue", "green", "white", f"cycle{index % 4 + 1}", image])
    return fixtures.write_tsv(folder / "hr_bench_4k.tsv", fixtures.HR_HEADER, rows)


def predictions(out: Path) -> list[dict[str, Any]]:
    data = (out / "predictions.jsonl").read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def wait_until(condition: Any, process: subprocess.Popen[bytes], what: str) -> None:
    """Poll `condition` until true; fail if the run exits first or `RUN_TIMEOUT_S` passes."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not condition():
        assert process.poll() is None, f"the run exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {RUN_TIMEOUT_S:.0f} s"
        time.sleep(0.02)


def unread_requests(base_url: str) -> int:
    """Connections to the server at `base_url` holding bytes it has not read (a request sent
    to a paused server): established TCP sockets on its port with a non-empty receive queue,
    from /proc/net/tcp (Linux)."""
    port = int(base_url.rsplit(":", 1)[1].split("/", 1)[0])
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01":  # 01: ESTABLISHED
            waiting += int(queues.split(":")[1], 16) > 0
    return waiting


@pytest.mark.slow
def test_eval_over_two_servers_loses_nothing_when_one_is_killed_mid_run(
    tmp_path: Path, trained_internvl_path: Path
) -> None:
    """The doomed server answers once, then is paused (SIGSTOP) before the eval starts: the
    router sends it the first request (a tie goes to the first replica), which it holds, so the
    run cannot finish before the kill, and the kill comes once that request sits unread in its
    socket. No race with the run's speed; every wait is bounded (`RUN_TIMEOUT_S`)."""
    count = 16
    data = square_rows_tsv(tmp_path / "data", count)
    out = tmp_path / "run"
    log_path = tmp_path / "run.log"
    with ExitStack() as stack:
        doomed = stack.enter_context(start_server(trained_internvl_path))
        survivor = stack.enter_context(start_server(trained_internvl_path))
        model = f"openai:{served_model_name(trained_internvl_path)}"
        common = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--model", model]
        args = [*common, "--base-url", doomed.base_url, "--base-url", survivor.base_url]
        args += ["--concurrency", "4"]
        client = openai.OpenAI(base_url=doomed.base_url, api_key="none", timeout=RUN_TIMEOUT_S)
        client.chat.completions.create(
            model=served_model_name(trained_internvl_path),
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=2,
        )
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while requests_seen(doomed)[1] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # its answer's log line is written
        doomed.pause()  # from now on it holds every request it gets until it is killed
        log = stack.enter_context(log_path.open("w"))
        process = subprocess.Popen([str(ZOOM_REFINE), *args], stdout=log, stderr=log)
        try:

            def held_on_doomed() -> bool:
                return unread_requests(doomed.base_url) > 0

            wait_until(held_on_doomed, process, "request held on the paused server")
            before = {"doomed": requests_seen(doomed), "survivor": requests_seen(survivor)}
            written = (out / "predictions.jsonl").exists()
            finished_before_kill = len(predictions(out)) if written else 0
            doomed.kill()
            returncode = process.wait(timeout=RUN_TIMEOUT_S)
            after = requests_seen(survivor)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=RUN_TIMEOUT_S)
    output = log_path.read_text()
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert before["doomed"][1] > 0, before  # it answered before it went down
    assert finished_before_kill < count  # the kill came mid-run
    assert after[1] > before["survivor"][1]
    assert f"model server {doomed.base_url} is down" in output

    records = predictions(out)
    assert sorted(int(record["id"]) for record in records) == list(range(count))  # each once
    for record in records:
        assert record["status"] == "ok", record.get("error")
        assert record["answer"] is not None
        assert [step["node"] for step in record["steps"]] == ["localize", "refine"]
    summary = json.loads((out / "summary.json").read_text())
    method = summary["methods"]["zoom-refine"]
    overall = method["groups"]["overall"]
    assert method["error_ids"] == [] and overall["total"] == count
    assert overall["correct"] == sum(bool(record["correct"]) for record in records)
    assert "zoom-refine: 0 unparsed, 0 errors (counted wrong)" in output
    config = json.loads((out / "config.json").read_text())
    assert config["context"]["base_url"] == [doomed.base_url, survivor.base_url]

    # A resume on another set of servers of the same model is allowed (nothing left to run).
    resumed = CliRunner().invoke(app, [*common, "--base-url", survivor.base_url])
    assert resumed.exit_code == 0, resumed.output
    assert len(predictions(out)) == count


def test_eval_with_every_server_down_records_each_sample_as_one_clear_error(
    tmp_path: Path,
) -> None:
    count = 3
    data = square_rows_tsv(tmp_path / "data", count)
    out = tmp_path / "run"
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--model", "openai:m"]
    for url in urls:
        args += ["--base-url", url]
    result = CliRunner().invoke(app, [*args, "--concurrency", str(count)])
    assert result.exit_code == 0, result.output
    assert f"zoom-refine: 0 unparsed, {count} errors (counted wrong)" in result.stdout
    records = predictions(out)
    assert Counter(record["status"] for record in records) == {"error": count}
    for record in records:
        assert record["error"].startswith("AllReplicasDownError: all 2 model servers are down: ")
        assert all(url in record["error"] for url in urls) and "\n" not in record["error"]


def test_ask_with_every_server_down_is_one_line_naming_them(tmp_path: Path) -> None:
    image = tmp_path / "image.jpg"
    image.write_bytes(fixtures.jpeg_bytes("red", (64, 64)))
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    result = CliRunner().invoke(
        app,
        ["ask", str(image), "Which colour?", "--model", "openai:m"]
        + [part for url in urls for part in ("--base-url", url)],
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if "model servers are down" in line]
    assert len(lines) == 1 and all(url in lines[0] for url in urls), result.stderr
    assert "Traceback" not in result.output
