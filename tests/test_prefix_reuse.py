"""Key/value prefix reuse in the local backend: the refine turn encodes only the new image."""

from __future__ import annotations

import base64
import io
import pathlib
from typing import Any

import pytest
import torch
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from PIL import Image

from zoom_refine.agent.local.model import LocalVisionChatModel, load_local_backend
from zoom_refine.agent.local.prefix_cache import (
    PrefixCache,
    back_off_image,
    common_prefix_length,
    match_key,
)

IMAGE = 7  # a stand-in image token id for the pure helpers


def test_common_prefix_length() -> None:
    assert common_prefix_length(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4, 5])) == 2
    assert common_prefix_length(torch.tensor([1, 2]), torch.tensor([1, 2, 3])) == 2
    assert common_prefix_length(torch.tensor([9]), torch.tensor([1])) == 0
    assert common_prefix_length(torch.tensor([], dtype=torch.long), torch.tensor([1])) == 0


def test_prefix_never_ends_inside_an_image() -> None:
    ids = torch.tensor([1, 2, IMAGE, IMAGE, IMAGE, 3, 4])
    assert back_off_image(ids, 4, IMAGE) == 2  # inside the run: back to its start
    assert back_off_image(ids, 5, IMAGE) == 5  # right after the run: whole image kept
    assert back_off_image(ids, 2, IMAGE) == 2  # at the run's start
    assert back_off_image(ids, 6, IMAGE) == 6


def test_prefix_cache_takes_the_longest_match_and_evicts_oldest() -> None:
    cache = PrefixCache(capacity=2)
    cache.put(torch.tensor([1, 2, 3]), "short")
    cache.put(torch.tensor([1, 2, 3, 4, 5]), "long")
    hit = cache.take(torch.tensor([1, 2, 3, 4, 9]))
    assert hit is not None and hit[0].cache == "long" and hit[1] == 4
    assert len(cache) == 1  # taken entries leave the store
    cache.put(torch.tensor([5]), "a")
    cache.put(torch.tensor([6]), "b")
    assert len(cache) == 2
    assert cache.take(torch.tensor([1, 2, 3])) is None  # "short" was evicted
    assert cache.take(torch.tensor([8]), minimum=1) is None


def block(image: Image.Image) -> dict[str, Any]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image", "base64": data, "mime_type": "image/png"}


VIEW = Image.effect_noise((1280, 720), 40).convert("RGB")
CROP = Image.effect_noise((600, 500), 90).convert("RGB")


def two_turns(first_reply: str) -> tuple[list[BaseMessage], list[BaseMessage]]:
    view, crop = VIEW, CROP
    first: list[BaseMessage] = [
        HumanMessage(content=[block(view), {"type": "text", "text": "Where?"}])
    ]
    second = [
        *first,
        AIMessage(content=first_reply),
        HumanMessage(content=[block(crop), {"type": "text", "text": "Look closer."}]),
    ]
    return first, second


@pytest.mark.slow
def test_refine_turn_encodes_only_the_crop_and_prefills_only_new_tokens(
    tiny_internvl_path: pathlib.Path,
) -> None:
    load_local_backend(str(tiny_internvl_path)).prefix_cache.clear()
    reuse = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), max_new_tokens=5, max_patches=4
    )
    fresh = reuse.model_copy(update={"reuse_prefix": False})
    first, _ = two_turns("")
    localize = reuse.invoke(first)
    _, second = two_turns(str(localize.content))

    refine = reuse.invoke(second)
    baseline = fresh.invoke(second)

    meta, full = refine.response_metadata, baseline.response_metadata
    # 1280×720 at ≤4 tiles: 2×1 grid + thumbnail = 3 tiles; 600×500: 1×1 = 1 tile (no thumbnail).
    assert localize.response_metadata["vision_tiles"] == 3
    assert full["vision_tiles"] == 4 and meta["vision_tiles"] == 1
    assert meta["prompt_tokens"] == full["prompt_tokens"]
    # Reused: the localize prompt and the reply (all but its end-of-turn token's successor).
    reply_tokens = localize.response_metadata["generated_tokens"]
    assert meta["cached_tokens"] >= localize.response_metadata["prompt_tokens"] + reply_tokens - 1
    assert meta["prefilled_tokens"] == meta["prompt_tokens"] - meta["cached_tokens"]
    assert full["cached_tokens"] == 0 and full["prefilled_tokens"] == full["prompt_tokens"]
    assert meta["prefilled_tokens"] < 0.5 * full["prefilled_tokens"]
    # Greedy decoding gives the same tokens either way.
    assert refine.content == baseline.content
    assert refine.usage_metadata is not None
    assert refine.usage_metadata["input_token_details"]["cache_read"] == meta["cached_tokens"]


@pytest.mark.slow
def test_reused_prefix_gives_the_same_next_token_distribution(
    tiny_internvl_path: pathlib.Path,
) -> None:
    """Stronger than comparing (noisy) tokens: the logits after a reused prefix equal a full
    prefill's, so greedy decoding cannot diverge beyond float rounding."""
    from zoom_refine.agent.local.generation import GenerationRequest, generate

    backend = load_local_backend(str(tiny_internvl_path))
    backend.prefix_cache.clear()
    model = LocalVisionChatModel(model_path=str(tiny_internvl_path), max_patches=4)
    first, second = two_turns("Answer: B")
    first_inputs = model._prepare_inputs(backend, _hf(first))
    request = GenerationRequest(_hf(first), max_new_tokens=3, stop=())
    generate(backend, first_inputs, request, reuse=True)  # fills the prefix cache
    inputs = model._prepare_inputs(backend, _hf(second))
    with torch.inference_mode():
        full_logits = backend.model(**inputs).logits[0, -1]
    hit = backend.prefix_cache.take(inputs["input_ids"][0])
    assert hit is not None
    entry, length = hit
    from zoom_refine.agent.local.generation import _prefill_suffix

    with torch.inference_mode():
        cached, tiles = _prefill_suffix(backend, inputs, entry.cache, length)
        last = backend.model(
            input_ids=inputs["input_ids"][:, -1:],
            attention_mask=inputs["attention_mask"],
            cache=entry.cache,
            use_cache=True,
        ).logits[0, -1]
    assert tiles == 1 and cached > 0
    torch.testing.assert_close(last, full_logits, rtol=1e-4, atol=1e-4)


def _hf(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    from zoom_refine.agent.local.model import to_hf_conversation

    return to_hf_conversation(messages)


@pytest.mark.slow
def test_a_different_image_of_the_same_size_is_never_reused(
    tiny_internvl_path: pathlib.Path,
) -> None:
    """Every image token has the same id: matching must look at the pixels, not the ids."""
    load_local_backend(str(tiny_internvl_path)).prefix_cache.clear()
    model = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), max_new_tokens=2, max_patches=4
    )

    def ask(colour: tuple[int, int, int]) -> Any:
        picture = Image.new("RGB", (1280, 720), colour)
        return model.invoke([HumanMessage(content=[block(picture), {"type": "text", "text": "Q"}])])

    first, other, same = ask((255, 0, 0)), ask((0, 0, 255)), ask((0, 0, 255))
    assert first.response_metadata["vision_tiles"] == 3
    assert other.response_metadata["vision_tiles"] == 3  # a new image: encoded in full
    assert same.response_metadata["vision_tiles"] == 0  # the same image again: reused
    assert same.response_metadata["cached_tokens"] > 3 * 256


def test_match_key_tells_images_apart() -> None:
    ids = torch.tensor([1, IMAGE, IMAGE, 2, IMAGE, 3])
    red, blue = match_key(ids, IMAGE, [-5, -6]), match_key(ids, IMAGE, [-5, -7])
    assert red.tolist() == [1, -5, -5, 2, -6, 3]
    assert common_prefix_length(red, blue) == 4
