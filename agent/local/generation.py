"""Greedy generation on a local backend: one conversation, or several in one batch.

- One conversation: it starts from the longest cached prefix of an earlier call (see
  `agent/local/prefix_cache.py`), so a refine turn encodes only the crop and prefills only new tokens.
- Several (micro-batched): each is prefilled on its own, reusing its cached prefix, then all are
  decoded together in one left-padded batch; each row's cache is stored again for its next turn.
- Without reuse (`reuse=False`, the official-style path): a plain `generate` over the whole
  prompt, batched with left padding when several arrive together.

Out of memory (`torch.OutOfMemoryError`): the backend drops every key/value cache (the prefix
cache, and those the failed call held, by clearing its finished frames) and empties the CUDA cache;
then each request of the failed call runs once more, alone. One retry, because the first attempt
ran beside cached prefixes and batch-mates whose memory is now free; not more, because alone and
from an empty cache the same input needs the same memory again. A request that runs out of memory
alone gets a `ModelOutOfMemoryError` in its place (its sample fails, the others go on).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zoom_refine.agent.local.backend import OUT_OF_MEMORY_HINT, LocalBackend
from zoom_refine.agent.local.prefix_cache import back_off_image, match_key
from zoom_refine.tools.errors import ModelOutOfMemoryError

HFMessage = dict[str, Any]
QWEN_MERGE = 4
"""Qwen-VL merges 2×2 patches into one image token."""


@dataclass(frozen=True)
class Generation:
    """New token ids, and what the call cost: tokens prefilled and reused, vision tiles encoded."""

    new_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    vision_tiles: int
    budget: int
    """The max_new_tokens the call ran with."""
    stop: tuple[str, ...] = ()
    image_sizes: list[list[int]] | None = None
    """[width, height] per image where the processor resizes whole images (Qwen-VL)."""
    batch_size: int = 1
    token_logprobs: list[float] | None = None
    """Natural-log probability of each new token under the model, when asked for."""


@dataclass(frozen=True)
class GenerationRequest:
    """One conversation to continue, with its token budget and stop strings."""

    conversation: list[HFMessage]
    max_new_tokens: int
    stop: tuple[str, ...]
    logprobs: bool = False
    """Also return each generated token's log-probability (OpenAI's `logprobs` format)."""
    image_fingerprints: tuple[int, ...] = ()
    """One fingerprint per image, in order: prefix reuse matches images by content, not by id."""
    inputs: Any = None
    """The processor's output for this conversation (prepared in the caller's thread)."""


def generate_many(
    backend: LocalBackend, requests: Sequence[GenerationRequest], *, reuse: bool
) -> list[Generation | ModelOutOfMemoryError]:
    """Generate for one or several requests (each with `inputs` prepared); on out-of-memory, free
    the caches and retry each request once alone (see the module docstring). A request that still
    runs out of memory gets its `ModelOutOfMemoryError` (not raised) in its place."""
    import torch

    try:
        return list(_generate_together(backend, requests, reuse=reuse))
    except torch.OutOfMemoryError as error:
        out_of_memory(backend, error)
    results: list[Generation | ModelOutOfMemoryError] = []
    for request in requests:
        try:
            results.append(generate(backend, request.inputs, request, reuse=reuse))
        except torch.OutOfMemoryError as error:
            results.append(out_of_memory(backend, error))
    return results


def out_of_memory(backend: LocalBackend, error: BaseException) -> ModelOutOfMemoryError:
    """Free what the failed call held (its finished frames' tensors, the prefix cache, CUDA's
    cached blocks) and return the per-sample error to report."""
    traceback.clear_frames(error.__traceback__)  # the failed call's locals hold KV caches
    backend.release_memory()
    first_line = next(iter(str(error).strip().splitlines()), "")
    detail = f" ({type(error).__name__}: {first_line})" if first_line else ""
    return ModelOutOfMemoryError(OUT_OF_MEMORY_HINT + detail)


def _generate_together(
    backend: LocalBackend, requests: Sequence[GenerationRequest], *, reuse: bool
) -> list[Generation]:
    if len(requests) == 1:
        return [generate(backend, requests[0].inputs, requests[0], reuse=reuse)]
    if reuse and backend.reuses_prefixes and backend.image_token_id is not None:
        return generate_rows(backend, requests)
    return generate_padded(backend, pad_inputs(backend, [r.inputs for r in requests]), requests)


def generate(
    backend: LocalBackend, inputs: Any, request: GenerationRequest, *, reuse: bool
) -> Generation:
    """Greedy decoding, starting from a cached prefix of the same conversation when there is one.

    Returns only the new token ids (the end-of-turn token included) and the call's costs.
    """
    import torch

    ids = inputs["input_ids"][0]
    image_token_id = backend.image_token_id
    reuse = reuse and backend.reuses_prefixes and image_token_id is not None
    fingerprints = request.image_fingerprints
    with backend.lock, torch.inference_mode():
        key = match_key(ids, image_token_id, fingerprints) if image_token_id is not None else ids
        hit = _take_prefix(backend, ids, key) if reuse else None
        if hit is None:
            output = _run_generate(backend, inputs, request, None)
            cached, tiles = 0, _vision_tiles(inputs)
        else:
            cache, length = hit
            cached, tiles = _prefill_suffix(backend, inputs, cache, length)
            output = _run_generate(backend, _text_only(inputs), request, cache)
        sequence = output.sequences[0]
        cache = output_cache(output)
        if reuse and cache is not None and image_token_id is not None:
            covered = sequence[: cache.get_seq_length()]
            backend.prefix_cache.put(match_key(covered, image_token_id, fingerprints), cache)
    prompt_length = int(ids.shape[0])
    new_ids = [int(token) for token in sequence[prompt_length:].tolist()]
    sizes = _image_sizes(backend, inputs.get("image_grid_thw"))
    return Generation(
        new_ids,
        prompt_length,
        cached,
        tiles,
        request.max_new_tokens,
        request.stop,
        sizes,
        token_logprobs=_token_logprobs(output, 0, new_ids) if request.logprobs else None,
    )


def generate_padded(
    backend: LocalBackend, inputs: Any, requests: Sequence[GenerationRequest]
) -> list[Generation]:
    """Several conversations in one left-padded greedy `generate` (no prefix reuse)."""
    import torch

    first = requests[0]
    with backend.lock, torch.inference_mode():
        output = _run_generate(backend, inputs, first, None)
    width = int(inputs["input_ids"].shape[1])
    image_rows = _image_rows_per_sample(backend, inputs, requests)
    generations = []
    for row, request in enumerate(requests):
        new_ids = _until_end(backend, output.sequences[row, width:].tolist())
        prompt_tokens = int(inputs["attention_mask"][row].sum())
        tiles, sizes = image_rows[row]
        generations.append(
            Generation(
                new_ids,
                prompt_tokens,
                0,
                tiles,
                request.max_new_tokens,
                request.stop,
                sizes,
                batch_size=len(requests),
                token_logprobs=_token_logprobs(output, row, new_ids) if first.logprobs else None,
            )
        )
    return generations


@dataclass
class _Row:
    """One request of a batch after its own prefill: a cache of all its prompt tokens but the
    last, and what that prefill cost."""

    ids: Any
    cache: Any
    cached: int
    tiles: int


def generate_rows(backend: LocalBackend, requests: Sequence[GenerationRequest]) -> list[Generation]:
    """Prefill each request alone (reusing its cached prefix), then decode all in one batch."""
    import torch

    first = requests[0]
    image_token_id = backend.image_token_id
    assert image_token_id is not None
    with backend.lock, torch.inference_mode():
        rows = [_prefill_row(backend, request, image_token_id) for request in requests]
        ids, mask, cache, pads = _merge_rows(backend, rows)
        output = _run_generate(backend, {"input_ids": ids, "attention_mask": mask}, first, cache)
        merged = output_cache(output)
        width = int(ids.shape[1])
        generations = []
        for index, (row, request) in enumerate(zip(rows, requests, strict=True)):
            new_ids = _until_end(backend, output.sequences[index, width:].tolist())
            covered = torch.cat([row.ids, row.ids.new_tensor(new_ids[:-1])])
            row_cache = _row_cache(merged, index, pads[index], pads[index] + covered.shape[0])
            key = match_key(covered, image_token_id, request.image_fingerprints)
            backend.prefix_cache.put(key, row_cache)
            logprobs = _token_logprobs(output, index, new_ids) if first.logprobs else None
            inputs = request.inputs
            generations.append(
                Generation(
                    new_ids,
                    int(row.ids.shape[0]),
                    row.cached,
                    row.tiles,
                    request.max_new_tokens,
                    request.stop,
                    _image_sizes(backend, inputs.get("image_grid_thw")),
                    batch_size=len(requests),
                    token_logprobs=logprobs,
                )
            )
    return generations


def _prefill_row(backend: LocalBackend, request: GenerationRequest, image_token_id: int) -> _Row:
    from transformers import DynamicCache

    inputs = request.inputs
    ids = inputs["input_ids"][0]
    hit = _take_prefix(backend, ids, match_key(ids, image_token_id, request.image_fingerprints))
    cache, length = hit if hit else (DynamicCache(), 0)
    cached, tiles = _prefill_suffix(backend, inputs, cache, length)
    return _Row(ids=ids, cache=cache, cached=cached, tiles=tiles)


def _merge_rows(backend: LocalBackend, rows: Sequence[_Row]) -> tuple[Any, Any, Any, list[int]]:
    """Left-pad every row to the longest prompt: ids, attention mask, and one batched cache
    (each row's cache covers its prompt but the last token; padding is masked out)."""
    import torch
    from torch.nn.functional import pad
    from transformers import DynamicCache

    longest = max(int(row.ids.shape[0]) for row in rows)
    pads = [longest - int(row.ids.shape[0]) for row in rows]
    pad_id = _pad_token_id(backend)
    ids = torch.stack(
        [pad(row.ids, (gap, 0), value=pad_id) for row, gap in zip(rows, pads, strict=True)]
    )
    mask = torch.stack(
        [
            pad(torch.ones_like(row.ids), (gap, 0), value=0)
            for row, gap in zip(rows, pads, strict=True)
        ]
    )
    layers = []
    for layer in range(len(rows[0].cache.layers)):
        keys = [
            pad(row.cache.layers[layer].keys, (0, 0, gap, 0))
            for row, gap in zip(rows, pads, strict=True)
        ]
        values = [
            pad(row.cache.layers[layer].values, (0, 0, gap, 0))
            for row, gap in zip(rows, pads, strict=True)
        ]
        layers.append((torch.cat(keys), torch.cat(values)))
    return ids, mask, DynamicCache(ddp_cache_data=layers), pads


def _row_cache(merged: Any, index: int, start: int, end: int) -> Any:
    """Row `index` of a batched cache, positions [start, end), as a cache of its own."""
    from transformers import DynamicCache

    layers = [
        (
            layer.keys[index : index + 1, :, start:end].clone(),
            layer.values[index : index + 1, :, start:end].clone(),
        )
        for layer in merged.layers
    ]
    return DynamicCache(ddp_cache_data=layers)


def pad_inputs(backend: LocalBackend, inputs: Sequence[Any]) -> dict[str, Any]:
    """Left-pad separately prepared inputs into one batch: ids and masks padded, image tensors
    (pixel values, Qwen's grids) concatenated in row order."""
    import torch
    from torch.nn.functional import pad

    longest = max(int(item["input_ids"].shape[1]) for item in inputs)
    pad_id = _pad_token_id(backend)
    batch: dict[str, Any] = {
        "input_ids": torch.cat(
            [
                pad(item["input_ids"], (longest - item["input_ids"].shape[1], 0), value=pad_id)
                for item in inputs
            ]
        ),
        "attention_mask": torch.cat(
            [
                pad(item["attention_mask"], (longest - item["attention_mask"].shape[1], 0), value=0)
                for item in inputs
            ]
        ),
    }
    for name in ("pixel_values", "image_grid_thw"):
        tensors = [item[name] for item in inputs if item.get(name) is not None]
        if tensors:
            batch[name] = torch.cat(tensors)
    return batch


def _pad_token_id(backend: LocalBackend) -> int:
    tokenizer = backend.processor.tokenizer
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return int(pad_id)


def _until_end(backend: LocalBackend, ids: list[int]) -> list[int]:
    """A padded row's new tokens up to and including its first end-of-sequence token."""
    eos = backend.model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    for index, token in enumerate(ids):
        if token in eos_ids:
            return [int(t) for t in ids[: index + 1]]
    return [int(t) for t in ids]


def _image_rows_per_sample(
    backend: LocalBackend, inputs: Any, requests: Sequence[GenerationRequest]
) -> list[tuple[int, list[list[int]] | None]]:
    """Per sample: vision tiles encoded, and resized image sizes (Qwen-VL), from batch tensors."""
    image_token_id = backend.image_token_id
    pixel_values = inputs.get("pixel_values")
    grid = inputs.get("image_grid_thw")
    counts = [
        sum(
            1
            for message in request.conversation
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "image"
        )
        for request in requests
    ]
    rows: list[tuple[int, list[list[int]] | None]] = []
    image_index = 0
    for row, count in enumerate(counts):
        sizes = None
        if grid is not None:
            sizes = _image_sizes(backend, grid[image_index : image_index + count])
            tiles = int(grid[image_index : image_index + count].prod(dim=1).sum()) // QWEN_MERGE
        elif pixel_values is not None and image_token_id is not None:
            image_tokens = int((inputs["input_ids"][row] == image_token_id).sum())
            tiles = image_tokens // backend.tokens_per_tile
        else:
            tiles = 0
        image_index += count
        rows.append((tiles, sizes))
    return rows


def _run_generate(
    backend: LocalBackend, inputs: Any, request: GenerationRequest, cache: Any
) -> Any:
    options: dict[str, Any] = {}
    if request.stop:
        options = {"stop_strings": list(request.stop), "tokenizer": backend.processor.tokenizer}
    if cache is not None:
        options["cache"] = cache
    return backend.model.generate(
        **inputs,
        max_new_tokens=request.max_new_tokens,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=request.logprobs,
        **options,
    )


def _token_logprobs(output: Any, row: int, new_ids: list[int]) -> list[float]:
    """Log-probability of each new token from the raw logits `generate` returned per step."""
    values = []
    for step, token in enumerate(new_ids):
        logits = output.logits[step][row].float()
        values.append(float(logits.log_softmax(-1)[token]))
    return values


def _take_prefix(backend: LocalBackend, ids: Any, key: Any) -> tuple[Any, int] | None:
    """The cached prefix to start from (cache, matched length), or None.

    A cache that must be cut back (the new prompt diverges inside it) is refused when any layer
    is a sliding window: those caches have dropped old tokens and cannot be cropped.
    """
    hit = backend.prefix_cache.take(key)
    if hit is None:
        return None
    entry, length = hit
    image_token_id = backend.image_token_id
    assert image_token_id is not None
    usable = back_off_image(ids, min(length, ids.shape[0] - 1), image_token_id)
    sliding = any(getattr(layer, "is_sliding", False) for layer in entry.cache.layers)
    if sliding and usable < entry.cache.get_seq_length():
        return None
    return entry.cache, length


def output_cache(output: Any) -> Any:
    """The key/value cache a `generate` or forward output holds: its `cache` field (transformers
    5); `past_key_values` only where no such field exists, since reading that name on newer
    outputs logs a deprecation warning on every run."""
    if "cache" in getattr(type(output), "__dataclass_fields__", {}):
        return output.cache
    return getattr(output, "past_key_values", None)


def _prefill_suffix(backend: LocalBackend, inputs: Any, cache: Any, length: int) -> tuple[int, int]:
    """Extend `cache` (valid for the first `length` ids) to all ids but the last, encoding only
    the images after the reused prefix. Returns (tokens reused, vision tiles encoded)."""
    ids = inputs["input_ids"][0]
    image_token_id = backend.image_token_id
    assert image_token_id is not None
    # Leave at least the last prompt token for generate(), and never split an image.
    length = back_off_image(ids, min(length, ids.shape[0] - 1), image_token_id)
    stored = cache.get_seq_length()
    if length < stored:
        cache.crop(length - stored)
    prefix_tiles = int((ids[:length] == image_token_id).sum()) // backend.tokens_per_tile
    pixel_values = inputs.get("pixel_values")
    suffix_pixels = None if pixel_values is None else pixel_values[prefix_tiles:]
    if suffix_pixels is not None and suffix_pixels.shape[0] == 0:
        suffix_pixels = None
    end = ids.shape[0] - 1
    if end > length:
        backend.model(
            input_ids=inputs["input_ids"][:, length:end],
            pixel_values=suffix_pixels,
            attention_mask=inputs["attention_mask"][:, :end],
            cache=cache,
            use_cache=True,
        )
    return length, 0 if suffix_pixels is None else int(suffix_pixels.shape[0])


def _text_only(inputs: Any) -> dict[str, Any]:
    """Inputs for decoding once every image is in the cache: ids and mask only."""
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}


def _image_sizes(backend: LocalBackend, grid: Any) -> list[list[int]] | None:
    """[width, height] each image was resized to, where the processor resizes whole images
    (Qwen-VL: `image_grid_thw` × patch size); the frame of Qwen2.5-VL's pixel boxes."""
    if grid is None:
        return None
    patch = int(getattr(backend.processor.image_processor, "patch_size", 14))
    return [[int(w) * patch, int(h) * patch] for _, h, w in grid.tolist()]


def _vision_tiles(inputs: Any) -> int:
    """Vision units encoded: InternVL tiles (with thumbnails), or for Qwen-VL the merged 28-px
    patches (= its image tokens); 0 without images."""
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        return int(grid.prod(dim=1).sum()) // QWEN_MERGE
    pixel_values = inputs.get("pixel_values")
    return 0 if pixel_values is None else int(pixel_values.shape[0])
