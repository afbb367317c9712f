"""Micro-batching: concurrent calls share one padded forward pass; results stay per sample."""

from __future__ import annotations

import base64
import io
import pathlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.local.batching import MicroBatcher
from zoom_refine.testing import RuleVisionModel


def test_concurrent_submits_share_batches_and_get_their_own_results() -> None:
    seen: list[list[int]] = []

    def double(requests: Sequence[int]) -> list[int]:
        seen.append(list(requests))
        return [2 * value for value in requests]

    batcher: MicroBatcher[int, int] = MicroBatcher(double, max_batch_size=4, wait_seconds=0.05)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batcher.submit, range(8)))

    assert results == [2 * value for value in range(8)]
    assert max(batcher.batch_sizes) > 1 and max(batcher.batch_sizes) <= 4
    assert sorted(value for batch in seen for value in batch) == list(range(8))


def test_requests_with_different_keys_never_share_a_batch() -> None:
    """The first batch is held until four requests of two keys are queued: the leader then runs
    exactly one batch per key, each holding both of that key's requests."""
    seen: list[list[str]] = []
    release = threading.Event()

    def run(requests: Sequence[str]) -> list[str]:
        seen.append(list(requests))
        if requests == ["a0"]:
            assert release.wait(timeout=30), "the queued requests never arrived"
        return list(requests)

    batcher: MicroBatcher[str, str] = MicroBatcher(run, max_batch_size=8, wait_seconds=0.0)
    jobs = [("a0", "a"), ("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(batcher.submit, "a0", "a")
        while seen != [["a0"]]:
            time.sleep(0.001)
        later = [pool.submit(batcher.submit, item, key) for item, key in jobs[1:]]
        deadline = time.monotonic() + 30
        while len(batcher._pending) < 4:
            assert time.monotonic() < deadline, "requests did not queue"
            time.sleep(0.001)
        release.set()
        results = [first.result(timeout=30), *(job.result(timeout=30) for job in later)]

    assert results == [item for item, _ in jobs]
    assert seen == [["a0"], ["a1", "a2"], ["b1", "b2"]]
    assert batcher.batch_sizes == [1, 2, 2]


def test_a_failing_batch_fails_each_of_its_callers_and_the_batcher_goes_on() -> None:
    calls = {"count": 0}
    lock = threading.Lock()

    def flaky(requests: Sequence[int]) -> list[int]:
        with lock:
            calls["count"] += 1
            first = calls["count"] == 1
        if first:
            raise RuntimeError("out of memory")
        return list(requests)

    batcher: MicroBatcher[int, int] = MicroBatcher(flaky, max_batch_size=8, wait_seconds=0.0)
    with pytest.raises(RuntimeError):
        batcher.submit(1)
    assert batcher.submit(2) == 2


class SlowRuleModel(RuleVisionModel):
    """Answers by rule after a pause, counting how many calls are in flight at once."""

    in_flight: int = 0
    most_in_flight: int = 0

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        with FLIGHT_LOCK:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.2)
            return super()._generate(messages, stop, run_manager, **kw)
        finally:
            with FLIGHT_LOCK:
                self.in_flight -= 1


FLIGHT_LOCK = threading.Lock()


def test_graph_batch_runs_samples_concurrently_with_any_chat_model(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "img.png"
    Image.new("RGB", (1000, 800), (10, 20, 30)).save(image)
    model = SlowRuleModel()
    inputs = [{"image": str(image), "question": f"q{i}", "options": ["x", "y"]} for i in range(6)]
    results = build_graph().batch(
        inputs, config={"max_concurrency": 3}, context=ZoomContext(model=model)
    )
    assert len(results) == 6 and all(result["answer"] for result in results)
    assert model.most_in_flight == 3  # three samples' model calls overlapped, never more


def image_message(seed: int) -> list[HumanMessage]:
    image = Image.effect_noise((640 + 64 * seed, 480), 30 + 10 * seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    block: dict[str, Any] = {"type": "image", "base64": data, "mime_type": "image/png"}
    return [HumanMessage(content=[block, {"type": "text", "text": f"Question {seed}?"}])]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["internvl3", "qwen3_vl"])
def test_local_backend_batches_concurrent_calls_with_per_sample_results(
    family: str, request: pytest.FixtureRequest
) -> None:
    """Qwen3-VL too: its 3-D rotary positions are built per row of a left-padded batch."""
    from zoom_refine.agent.local.model import LocalVisionChatModel

    fixture = {"internvl3": "tiny_internvl_path", "qwen3_vl": "tiny_qwen3_path"}[family]
    path: pathlib.Path = request.getfixturevalue(fixture)
    single = LocalVisionChatModel(
        model_path=str(path), max_new_tokens=4, max_patches=4, reuse_prefix=False
    )
    batched = single.model_copy(update={"max_batch_size": 8, "batch_wait_ms": 200.0})
    conversations = [image_message(seed) for seed in range(6)]

    expected = [single.invoke(conversation) for conversation in conversations]
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(batched.invoke, conversations))

    assert max(reply.response_metadata["batch_size"] for reply in replies) > 1
    for reply, reference in zip(replies, expected, strict=True):
        for key in ("prompt_tokens", "vision_tiles"):
            assert reply.response_metadata[key] == reference.response_metadata[key], key
        assert reply.content == reference.content


@pytest.mark.slow
def test_batched_refine_turns_reuse_each_rows_prefix(tiny_internvl_path: pathlib.Path) -> None:
    """Concurrent two-turn conversations: each row reuses its own cached first turn, decodes in a
    shared batch, and gets the same tokens as when run alone."""
    from langchain_core.messages import AIMessage

    from zoom_refine.agent.local.model import LocalVisionChatModel, load_local_backend

    backend = load_local_backend(str(tiny_internvl_path))
    alone = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), max_new_tokens=4, max_patches=4, reuse_prefix=True
    )
    # A long window: under load the four callers' preprocessing can arrive far apart.
    together = alone.model_copy(update={"max_batch_size": 8, "batch_wait_ms": 1000.0})
    crop = image_message(9)[0].content[0]

    def conversation(model: LocalVisionChatModel, seed: int) -> tuple[Any, Any]:
        first = image_message(seed)
        reply = model.invoke(first)
        second = [
            *first,
            AIMessage(content=reply.content),
            HumanMessage(content=[crop, {"type": "text", "text": "Closer?"}]),
        ]
        return reply, model.invoke(second)

    backend.prefix_cache.clear()
    expected = [conversation(alone, seed) for seed in range(4)]
    backend.prefix_cache.clear()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda seed: conversation(together, seed), range(4)))

    sizes = [reply.response_metadata["batch_size"] for pair in results for reply in pair]
    assert max(sizes) > 1, sizes
    for (first, second), (first_ref, second_ref) in zip(results, expected, strict=True):
        assert first.content == first_ref.content and second.content == second_ref.content
        # Only the crop was encoded: 1216×480 at ≤4 tiles is 3×1 + thumbnail; the first image
        # (one tile) came from the row's cache.
        assert second.response_metadata["vision_tiles"] == 4
        assert second_ref.response_metadata["vision_tiles"] == 4
        assert (
            second.response_metadata["cached_tokens"]
            == second_ref.response_metadata["cached_tokens"]
        )
