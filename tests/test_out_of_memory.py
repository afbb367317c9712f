"""Out of memory on one sample: recorded for that sample, caches freed, the run goes on.

The real tiny InternVL runs every call; only the out-of-memory itself is simulated (as issue 6
asks): the loaded model's vision encoder raises `torch.OutOfMemoryError` whenever it is shown the
one magenta image (where a too-large image would fail), so that sample fails on every attempt and
every other sample runs for real.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage
from PIL import Image
from transformers import DynamicCache

from zoom_refine import ask
from zoom_refine.agent.local.backend import LocalBackend, load_local_backend
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.testing import PROTOCOL_OPTIONS, PROTOCOL_QUESTION, protocol_context
from zoom_refine.tools.errors import ModelOutOfMemoryError

POISON = (255, 0, 255)
"""Magenta: unlike every colour in `dataset_fixtures.COLORS`, red and blue high, green low."""
HINT = "out of memory on this sample: lower max_patches or view_max_side, or use a smaller batch"
POISON_ID = "2"
SIMULATED = "CUDA out of memory. Tried to allocate 20.00 GiB (simulated)"


def square_jpeg(color: tuple[int, int, int]) -> bytes:
    """A flat 64×64 JPEG: square, so InternVL shows it as one tile (fast on CPU)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def shows_poison(pixel_values: torch.Tensor | None) -> bool:
    """Whether the (normalised) tiles are the magenta image: red and blue well above green."""
    if pixel_values is None:
        return False
    red, green, blue = pixel_values.float().mean(dim=(0, 2, 3)).tolist()
    return bool(min(red - green, blue - green) > 0.5)


@dataclass
class OutOfMemoryOnPoison:
    """Wraps the real vision encoder: raises for the magenta image, records the cache then."""

    backend: LocalBackend
    cache_sizes: list[int] = field(default_factory=list)
    """`len(prefix_cache)` at each simulated failure, in order."""

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace the vision tower's forward (both the first call's `generate` and the refine
        prefill encode images through it); `functools.wraps` keeps its signature."""
        tower = self.backend.model.model.vision_tower
        real_forward = tower.forward

        @functools.wraps(real_forward)
        def forward(*args: Any, **kwargs: Any) -> Any:
            if shows_poison(kwargs.get("pixel_values", args[0] if args else None)):
                self.cache_sizes.append(len(self.backend.prefix_cache))
                raise torch.OutOfMemoryError(SIMULATED)
            return real_forward(*args, **kwargs)

        monkeypatch.setattr(tower, "forward", forward)


@pytest.fixture
def poisoned(
    trained_internvl_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OutOfMemoryOnPoison]:
    """The protocol-trained tiny InternVL (the process-wide backend the runner will load), whose
    vision encoder runs out of memory on the magenta image; restored afterwards."""
    backend = load_local_backend(str(trained_internvl_path))
    hook = OutOfMemoryOnPoison(backend)
    hook.install(monkeypatch)
    backend.prefix_cache.clear()
    yield hook
    backend.prefix_cache.clear()


def seed_unrelated_prefix(backend: LocalBackend) -> weakref.ref[Any]:
    """Cache a prefix no prompt can match (a negative id), so only a release can remove it."""
    cache = DynamicCache()
    backend.prefix_cache.put(torch.tensor([-7]), cache)
    return weakref.ref(cache)


@pytest.mark.slow
@pytest.mark.reliability(
    "Out of memory",
    "the local model raises torch.OutOfMemoryError on one sample of a 6-sample eval run",
    "that sample alone is recorded with ModelOutOfMemoryError and the hint to lower max_patches "
    "or view_max_side or the batch; it is tried twice (once more alone after the release) and "
    "the prefix cache is empty at the retry; the other 5 samples have answers; the summary "
    "counts 1 error",
)
def test_out_of_memory_on_one_sample_is_recorded_and_the_run_goes_on(
    tmp_path: Path, trained_internvl_path: Path, poisoned: OutOfMemoryOnPoison
) -> None:
    colours = list(fixtures.COLORS.values())
    rows = []
    for index in range(6):
        colour = POISON if str(index) == POISON_ID else colours[index % len(colours)]
        image = fixtures.b64(square_jpeg(colour))
        rows.append([index, f"Question {index}?", "ABCD"[index % 4], "single", "red", "blue"])
        rows[-1] += ["green", "white", f"cycle{index % 4 + 1}", image]
    data = fixtures.write_tsv(tmp_path / "data" / "hr_bench_4k.tsv", fixtures.HR_HEADER, rows)
    unrelated = seed_unrelated_prefix(poisoned.backend)

    plan = EvalPlan(benchmark="hr-bench", data=data, out=tmp_path / "run")
    summary = run_eval(plan, protocol_context("internvl3", f"hf:{trained_internvl_path}"))

    lines = (plan.out / "predictions.jsonl").read_text().splitlines()
    records = {record["id"]: record for record in map(json.loads, lines)}
    assert sorted(records) == [str(index) for index in range(6)] and len(lines) == 6
    failed = records.pop(POISON_ID)
    assert failed["status"] == "error" and failed["answer"] is None
    assert failed["error"].startswith(f"ModelOutOfMemoryError: {HINT}")
    assert SIMULATED in failed["error"]  # the original error's first line, for diagnosis
    # Two attempts: the first beside the unrelated cached prefix, the retry after the release.
    assert len(poisoned.cache_sizes) == 2
    assert poisoned.cache_sizes[0] >= 1 and poisoned.cache_sizes[1] == 0
    assert unrelated() is None  # dropped and freed, not just forgotten
    for record in records.values():  # before and after the failure
        assert record["status"] == "ok" and record["answer"] in ("A", "B", "C", "D")
    method = summary["methods"]["zoom-refine"]
    assert method["error_ids"] == [POISON_ID]
    assert method["groups"]["overall"]["errors"] == 1
    assert method["groups"]["overall"]["total"] == 6


@pytest.mark.slow
@pytest.mark.reliability(
    "Out of memory",
    "`ask` on an image the local model runs out of memory on, between two good questions",
    "raises ModelOutOfMemoryError (a ZoomRefineError) with the hint; right after it the prefix "
    "cache is empty and every key/value cache it held, the one the failed call took included, "
    "is freed; the next question is answered",
)
def test_ask_out_of_memory_frees_the_caches_and_the_model_still_answers(
    tmp_path: Path, trained_internvl_path: Path, poisoned: OutOfMemoryOnPoison
) -> None:
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(square_jpeg(fixtures.COLORS["blue"]))
    bad.write_bytes(square_jpeg(POISON))
    context = protocol_context("internvl3", f"hf:{trained_internvl_path}")
    options = list(PROTOCOL_OPTIONS)

    first = ask(str(good), PROTOCOL_QUESTION, options, context=context)
    assert first["answer"] is not None
    unrelated = seed_unrelated_prefix(poisoned.backend)
    held = [weakref.ref(entry.cache) for entry in poisoned.backend.prefix_cache._entries.values()]
    assert len(held) == 2  # the good conversation's cache (the failing call takes it) + unrelated

    with pytest.raises(ModelOutOfMemoryError, match=HINT):
        ask(str(bad), PROTOCOL_QUESTION, options, context=context)
    assert len(poisoned.backend.prefix_cache) == 0
    assert all(ref() is None for ref in held)
    assert unrelated() is None

    again = ask(str(good), PROTOCOL_QUESTION, options, context=context)
    assert again["answer"] == first["answer"]


def image_message(image: bytes) -> list[HumanMessage]:
    block = {"type": "image", "base64": base64.b64encode(image).decode(), "mime_type": "image/jpeg"}
    return [HumanMessage(content=[block, {"type": "text", "text": PROTOCOL_QUESTION}])]


@pytest.mark.slow
@pytest.mark.reliability(
    "Out of memory",
    "two concurrent calls micro-batched together (max_batch_size=2), one of them on an image "
    "the model runs out of memory on",
    "the batch of 2 fails, the caches are dropped and each call runs once more alone: the good "
    "one gets its reply, only the other raises ModelOutOfMemoryError with the hint",
)
def test_out_of_memory_in_a_batch_fails_only_the_call_that_does_not_fit(
    trained_internvl_path: Path, poisoned: OutOfMemoryOnPoison
) -> None:
    model = LocalVisionChatModel(
        model_path=str(trained_internvl_path),
        max_new_tokens=16,
        max_patches=2,
        max_batch_size=2,
        batch_wait_ms=500.0,  # a fresh batcher, and time for the second call to join the first
    )
    replies = model.batch(
        [image_message(square_jpeg(fixtures.COLORS["blue"])), image_message(square_jpeg(POISON))],
        config={"max_concurrency": 2},
        return_exceptions=True,
    )
    batcher = poisoned.backend.batchers[(2, 500.0, 2, None, None, True)]
    assert batcher.batch_sizes == [2]  # they did run together
    good, bad = replies
    assert isinstance(good, AIMessage) and good.content
    assert isinstance(bad, ModelOutOfMemoryError) and HINT in str(bad)
    assert len(poisoned.cache_sizes) == 2  # the batch, then the poisoned call alone
