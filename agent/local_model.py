"""A LangChain chat model over a local Hugging Face vision-language model.

Built for InternVL3 `-hf` checkpoints (e.g. `OpenGVLab/InternVL3-2B-hf`) and generic enough for any
`AutoModelForImageTextToText` model whose processor has a chat template. Images arrive as LangChain
content blocks holding base64 data; nothing is ever fetched from a URL or read from a path here.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from pydantic import field_validator

from zoom_refine.agent.batching import MicroBatcher
from zoom_refine.agent.prefix_cache import (
    PrefixCache,
    back_off_image,
    image_fingerprint,
    match_key,
)

if TYPE_CHECKING:
    import torch

ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
HFMessage = dict[str, Any]
HFBlock = dict[str, Any]


@dataclass(frozen=True)
class LocalBackend:
    """A loaded processor and model (eval mode), shared by every chat model that names them.

    `lock` serialises generation (one forward pass at a time on the model); `prefix_cache`
    holds recent conversations' key/value caches for reuse (see `agent/prefix_cache.py`).
    """

    processor: Any
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefix_cache: PrefixCache = field(default_factory=PrefixCache)
    batchers: dict[Any, MicroBatcher[Any, Any]] = field(default_factory=dict)

    @property
    def reuses_prefixes(self) -> bool:
        """Prefix reuse needs 1-D positions and a fixed token count per image tile (InternVL).
        Qwen-VL's 3-D rotary positions depend on the whole prompt: full prefill there."""
        return getattr(self.model.config, "model_type", None) == "internvl"

    @property
    def image_token_id(self) -> int | None:
        token_id = getattr(self.model.config, "image_token_id", None)
        return int(token_id) if token_id is not None else None

    @property
    def tokens_per_tile(self) -> int:
        return int(getattr(self.processor, "image_seq_length", 256))


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


_BackendKey = tuple[str, str, str, str]
_BACKENDS: dict[_BackendKey, LocalBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def resolve_device(device: str | None) -> str:
    """`None` means the first CUDA GPU when there is one, else the CPU."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`"auto"` is bfloat16 on CUDA and float32 elsewhere; otherwise a torch dtype name."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    resolved = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype name; use 'auto', 'bfloat16', …")
    return resolved


def check_attn_implementation(attn_implementation: str) -> None:
    """Reject unknown names, and flash_attention_2 where the `flash_attn` package is missing."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {attn_implementation!r} is not one of {ATTN_IMPLEMENTATIONS}"
        )
    if (
        attn_implementation == "flash_attention_2"
        and importlib.util.find_spec("flash_attn") is None
    ):
        raise ValueError(
            "attn_implementation='flash_attention_2' needs the flash-attn package: install the "
            "`flash` extra (pip install 'zoom-refine[flash]') on a CUDA host, or use 'sdpa'"
        )


def load_local_backend(
    model_path: str,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str = "sdpa",
) -> LocalBackend:
    """Load (once per process and resolved arguments) the processor and model of `model_path`."""
    check_attn_implementation(attn_implementation)
    device_name = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device_name)
    key = (model_path, str(torch_dtype), device_name, attn_implementation)
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            backend = _load_backend(model_path, torch_dtype, device_name, attn_implementation)
            _BACKENDS[key] = backend
    return backend


def clear_local_backends() -> None:
    """Forget every cached backend (frees its memory once no chat model holds it)."""
    with _BACKENDS_LOCK:
        _BACKENDS.clear()


def _load_backend(
    model_path: str, torch_dtype: torch.dtype, device: str, attn_implementation: str
) -> LocalBackend:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path)  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(
        model_path, dtype=torch_dtype, attn_implementation=attn_implementation, device_map=device
    )
    model.eval()  # type: ignore[no-untyped-call]
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"  # batched generation continues each row at its end
    return LocalBackend(processor=processor, model=model)


# --- LangChain messages -> Hugging Face chat conversation -------------------------------------

_REMOTE_IMAGE_HINT = (
    "only base64 image data is accepted (a standard block with 'base64', or a data: URL); "
    "remote URLs and file paths are never fetched: load the image yourself and send it as a "
    "base64 image block"
)


def to_hf_conversation(messages: Sequence[BaseMessage]) -> list[HFMessage]:
    """The transformers chat format, with every image decoded to a PIL image."""
    return [_to_hf_message(message) for message in messages]


def _to_hf_message(message: BaseMessage) -> HFMessage:
    if isinstance(message, AIMessage):
        return {"role": "assistant", "content": _text_blocks(message.content)}
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": _content_blocks(message.content)}
    if isinstance(message, (HumanMessage, ToolMessage)):
        return {"role": "user", "content": _content_blocks(message.content)}
    if isinstance(message, ChatMessage) and message.role in ("user", "assistant", "system"):
        return {"role": message.role, "content": _content_blocks(message.content)}
    raise ValueError(f"cannot send a {type(message).__name__} to a local chat model")


def _as_list(content: str | list[str | dict[Any, Any]]) -> list[str | dict[Any, Any]]:
    return [content] if isinstance(content, str) else list(content)


def _text_blocks(content: str | list[str | dict[Any, Any]]) -> list[HFBlock]:
    """Text only (assistant turns): tool calls, reasoning and other blocks are dropped."""
    blocks: list[HFBlock] = []
    for item in _as_list(content):
        if isinstance(item, str):
            blocks.append({"type": "text", "text": item})
        elif item.get("type") == "text":
            blocks.append({"type": "text", "text": str(item.get("text", ""))})
    return blocks


def _content_blocks(content: str | list[str | dict[Any, Any]]) -> list[HFBlock]:
    return [_to_hf_block(item) for item in _as_list(content)]


def _to_hf_block(item: str | dict[Any, Any]) -> HFBlock:
    if isinstance(item, str):
        return {"type": "text", "text": item}
    block_type = item.get("type")
    if block_type == "text":
        return {"type": "text", "text": str(item.get("text", ""))}
    if block_type in ("image", "image_url"):
        return {"type": "image", "image": image_from_block(item)}
    raise ValueError(f"unsupported content block type {block_type!r} for a local chat model")


def image_from_block(block: dict[Any, Any]) -> Image.Image:
    """Decode a LangChain v1 / v0.3 standard image block or an OpenAI `image_url` block."""
    if block.get("type") == "image_url":
        value = block.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        return _image_from_url(url)
    if "base64" in block:
        return decode_base64_image(block["base64"])
    if block.get("source_type") == "base64":
        return decode_base64_image(block.get("data"))
    if "url" in block:
        return _image_from_url(block["url"])
    raise ValueError(f"image block has no base64 data: {_REMOTE_IMAGE_HINT}")


def _image_from_url(url: object) -> Image.Image:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ValueError(f"image URL {str(url)[:80]!r} is not a data: URL; {_REMOTE_IMAGE_HINT}")
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        raise ValueError("image data: URL must be base64-encoded (data:image/png;base64,...)")
    return decode_base64_image(data)


def decode_base64_image(data: object) -> Image.Image:
    """Fully decode base64 image bytes now, so a corrupt image fails here and not in the model."""
    if not isinstance(data, str) or not data:
        raise ValueError("image block holds no base64 string")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image block holds invalid base64: {error}") from error
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image block could not be decoded as an image: {error}") from error
    return image


# --- the chat model ---------------------------------------------------------------------------


class LocalVisionChatModel(BaseChatModel):
    """Greedy generation with a local transformers vision-language model.

    The model is loaded on first use and shared process-wide (see `load_local_backend`).
    `response_metadata` reports `vision_tiles` (image tiles encoded, all images together),
    `prompt_tokens`, `generated_tokens` and `finish_reason`.
    """

    model_path: str
    """Hugging Face repo id or local directory of the checkpoint."""
    max_new_tokens: int = 512
    """Upper bound on generated tokens per call."""
    max_patches: int | None = 12
    """InternVL tile budget per image (448-px tiles, plus a thumbnail when >1 tile); None keeps
    the processor's default. Ignored by processors without a tile budget."""
    attn_implementation: str = "sdpa"
    """'sdpa', 'flash_attention_2' (needs the `flash` extra) or 'eager'."""
    dtype: str = "auto"
    """'auto' (bfloat16 on CUDA, float32 on CPU) or a torch dtype name such as 'float16'."""
    device: str | None = None
    """Torch device; None means CUDA when available, else CPU."""
    max_batch_size: int = 1
    """Most concurrent calls (e.g. from `graph.batch`) run as one padded `generate`; 1 = none.
    A batch of one keeps prefix reuse; larger batches prefill in full."""
    batch_wait_ms: float = 5.0
    """How long the first of several concurrent calls waits for company, in milliseconds."""
    reuse_prefix: bool = True
    """Start each call from the key/value cache of an earlier call in the same conversation
    (InternVL), so the refine turn encodes only the crop and prefills only the new tokens."""

    @field_validator("attn_implementation")
    @classmethod
    def _known_attn_implementation(cls, value: str) -> str:
        if value not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
        return value

    @property
    def _llm_type(self) -> str:
        return "zoom-refine-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "max_new_tokens": self.max_new_tokens,
            "max_patches": self.max_patches,
            "attn_implementation": self.attn_implementation,
            "dtype": self.dtype,
        }

    @property
    def model_type(self) -> str | None:
        """The checkpoint's `config.model_type` (e.g. `internvl`, `qwen2_5_vl`); loads the model."""
        model_type = getattr(self.load().model.config, "model_type", None)
        return str(model_type) if model_type is not None else None

    def load(self) -> LocalBackend:
        """The shared processor and model, loading them now if this process has not yet."""
        return load_local_backend(
            self.model_path, self.dtype, self.device, self.attn_implementation
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        conversation = to_hf_conversation(messages)  # bad input fails before any loading
        backend = self.load()
        max_new_tokens = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        logprobs = bool(kwargs.get("logprobs", False))
        request = GenerationRequest(
            conversation, max_new_tokens, tuple(stop or ()), logprobs, _fingerprints(conversation)
        )
        if self.max_batch_size > 1:
            batcher = self._batcher(backend)
            generation = batcher.submit(request, key=(max_new_tokens, request.stop, logprobs))
        else:
            generation = self._generate_batch(backend, [request])[0]
        return ChatResult(generations=[ChatGeneration(message=self._message(backend, generation))])

    def _message(self, backend: LocalBackend, generation: Generation) -> AIMessage:
        new_ids, prompt_tokens = generation.new_ids, generation.prompt_tokens
        text = backend.processor.decode(new_ids, skip_special_tokens=True)
        text, was_cut = _cut_at_stop(text, list(generation.stop))
        finish = (
            "stop" if was_cut or _ends_generation(backend, new_ids, generation.budget) else "length"
        )
        extra: dict[str, Any] = {}
        if generation.image_sizes:
            extra["image_sizes"] = generation.image_sizes
        if generation.token_logprobs is not None:
            extra["logprobs"] = _logprobs_content(backend, new_ids, generation.token_logprobs)
        return AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": len(new_ids),
                "total_tokens": prompt_tokens + len(new_ids),
                "input_token_details": {"cache_read": generation.cached_tokens},
            },
            response_metadata={
                "model_name": self.model_path,
                "vision_tiles": generation.vision_tiles,
                "prompt_tokens": prompt_tokens,
                "prefilled_tokens": prompt_tokens - generation.cached_tokens,
                "cached_tokens": generation.cached_tokens,
                "generated_tokens": len(new_ids),
                "batch_size": generation.batch_size,
                "finish_reason": finish,
                **extra,
            },
        )

    def _batcher(self, backend: LocalBackend) -> MicroBatcher[GenerationRequest, Generation]:
        """The backend's shared micro-batcher for this model's batch settings."""
        key = (self.max_batch_size, self.batch_wait_ms, self.max_patches, self.reuse_prefix)
        with backend.lock:
            if key not in backend.batchers:
                backend.batchers[key] = MicroBatcher(
                    run_batch=lambda requests: self._generate_batch(backend, requests),
                    max_batch_size=self.max_batch_size,
                    wait_seconds=self.batch_wait_ms / 1000.0,
                )
            return backend.batchers[key]

    def _generate_batch(
        self, backend: LocalBackend, requests: Sequence[GenerationRequest]
    ) -> list[Generation]:
        """One request: greedy decoding with prefix reuse. Several: one left-padded generate."""
        inputs = self._prepare_inputs(backend, [request.conversation for request in requests])
        first = requests[0]
        if len(requests) == 1:
            return [generate(backend, inputs, first, reuse=self.reuse_prefix)]
        return generate_padded(backend, inputs, requests)

    def _prepare_inputs(self, backend: LocalBackend, conversations: list[list[HFMessage]]) -> Any:
        """Render the chat template, tile the images and tokenize (left-padded), on the device."""
        processor_kwargs: dict[str, Any] = {"padding": len(conversations) > 1}
        image_processor = getattr(backend.processor, "image_processor", None)
        if self.max_patches is not None and hasattr(image_processor, "max_patches"):
            processor_kwargs["images_kwargs"] = {"max_patches": self.max_patches}
        inputs = backend.processor.apply_chat_template(
            conversations if len(conversations) > 1 else conversations[0],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs,
        )
        return inputs.to(backend.model.device, dtype=backend.model.dtype)


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


def _fingerprints(conversation: list[HFMessage]) -> tuple[int, ...]:
    return tuple(
        image_fingerprint(block["image"].tobytes())
        for message in conversation
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "image"
    )


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
        hit = backend.prefix_cache.take(key) if reuse else None
        if hit is None:
            output = _run_generate(backend, inputs, request, None)
            cached, tiles = 0, _vision_tiles(inputs)
        else:
            entry, length = hit
            cached, tiles = _prefill_suffix(backend, inputs, entry.cache, length)
            output = _run_generate(backend, _text_only(inputs), request, entry.cache)
        sequence = output.sequences[0]
        cache = getattr(output, "past_key_values", None) or getattr(output, "cache", None)
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


def _logprobs_content(
    backend: LocalBackend, new_ids: list[int], values: list[float]
) -> dict[str, list[dict[str, Any]]]:
    """OpenAI's `logprobs` shape: `{"content": [{"token": text, "logprob": float}, …]}`, special
    tokens left out so the tokens concatenate to the reply text."""
    special = set(getattr(backend.processor.tokenizer, "all_special_ids", []))
    content = [
        {"token": backend.processor.decode([token]), "logprob": value}
        for token, value in zip(new_ids, values, strict=False)
        if token not in special
    ]
    return {"content": content}


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
            tiles = int(grid[image_index : image_index + count].prod(dim=1).sum())
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


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut at the earliest stop string; says whether one was found."""
    positions = [text.find(marker) for marker in stop or [] if marker]
    found = [position for position in positions if position >= 0]
    if not found:
        return text, False
    return text[: min(found)], True


def _ends_generation(backend: LocalBackend, new_ids: list[int], max_new_tokens: int) -> bool:
    """True when decoding ended on an end-of-sequence token or before the token budget."""
    if len(new_ids) < max_new_tokens:
        return True
    eos = backend.model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    return bool(new_ids) and new_ids[-1] in eos_ids


def _image_sizes(backend: LocalBackend, grid: Any) -> list[list[int]] | None:
    """[width, height] each image was resized to, where the processor resizes whole images
    (Qwen-VL: `image_grid_thw` × patch size); the frame of Qwen2.5-VL's pixel boxes."""
    if grid is None:
        return None
    patch = int(getattr(backend.processor.image_processor, "patch_size", 14))
    return [[int(w) * patch, int(h) * patch] for _, h, w in grid.tolist()]


def _vision_tiles(inputs: Any) -> int:
    """Image tiles encoded (InternVL: tiles plus thumbnails over all images); 0 without images."""
    pixel_values = inputs.get("pixel_values")
    return 0 if pixel_values is None else int(pixel_values.shape[0])
