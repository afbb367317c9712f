"""Loading local transformers vision-language models, once per process.

`load_local_backend` returns the shared processor and model for a checkpoint (bf16 on GPU,
float32 on CPU, sdpa attention unless told otherwise), plus the per-model state that generation
shares: a lock, the prefix cache and the micro-batchers.

Out of memory: `release_memory` drops every cached key/value cache and returns freed CUDA blocks;
generation calls it when the model raises `torch.OutOfMemoryError` and then fails the sample with
`ModelOutOfMemoryError` (see `agent/local/generation.py`), so one oversized sample does not stop a run.
"""

from __future__ import annotations

import gc
import importlib.util
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoom_refine.agent.local.batching import MicroBatcher
from zoom_refine.agent.local.image_cache import CachingImageProcessor
from zoom_refine.agent.local.prefix_cache import PrefixCache
from zoom_refine.tools.lru import LruMap

if TYPE_CHECKING:
    import torch

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "eager")
"""`auto`: flash_attention_2 on CUDA when the flash-attn package is installed, else sdpa."""
OUT_OF_MEMORY_HINT = (
    "out of memory on this sample: lower max_patches or view_max_side, or use a smaller batch "
    "(max_batch_size, --concurrency)"
)


@dataclass(frozen=True)
class LocalBackend:
    """A loaded processor and model (eval mode), shared by every chat model that names them.

    `lock` serialises generation (one forward pass at a time on the model); `prefix_cache`
    holds recent conversations' key/value caches for reuse (see `agent/local/prefix_cache.py`).
    """

    processor: Any
    model: Any
    attn_implementation: str = "sdpa"
    """The attention kernel the model was loaded with (`auto` resolved): reported per call."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefix_cache: PrefixCache = field(default_factory=PrefixCache)
    batchers: dict[Any, MicroBatcher[Any, Any]] = field(default_factory=dict)

    def release_memory(self) -> None:
        """Drop the prefix cache (every held key/value cache), collect garbage, and hand freed
        CUDA blocks back to the driver (`empty_cache`) when CUDA is in use: after an
        out-of-memory error, what the next sample may need."""
        self.prefix_cache.clear()
        gc.collect()
        import torch

        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # CUDA in use
            torch.cuda.empty_cache()

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


_BackendKey = tuple[str, str, str, str]
_BACKENDS: LruMap[_BackendKey, LocalBackend] = LruMap(capacity=8)
"""Loaded processors and weights, by checkpoint, dtype, device and attention: loaded once per
process (the least recently used of more than 8 is dropped, freeing its memory)."""


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


def resolve_attn_implementation(attn_implementation: str, device: str) -> str:
    """`auto` → `flash_attention_2` on a CUDA device with the flash-attn package installed, else
    `sdpa`; any other name as given."""
    if attn_implementation != "auto":
        return attn_implementation
    has_flash = importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if device.startswith("cuda") and has_flash else "sdpa"


def load_local_backend(
    model_path: str,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str = "auto",
) -> LocalBackend:
    """Load (once per process and resolved arguments) the processor and model of `model_path`."""
    check_attn_implementation(attn_implementation)
    device_name = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device_name)
    attn_implementation = resolve_attn_implementation(attn_implementation, device_name)
    key = (model_path, str(torch_dtype), device_name, attn_implementation)
    return _BACKENDS.get_or_create(
        key, lambda: _load_backend(model_path, torch_dtype, device_name, attn_implementation)
    )


def loaded_local_backend(
    model_path: str,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str = "auto",
) -> LocalBackend | None:
    """The backend `load_local_backend` would return if it is loaded already, else None (never
    loads: for callers that only want to know, such as the context's view sizing)."""
    device_name = resolve_device(device)
    attn_implementation = resolve_attn_implementation(attn_implementation, device_name)
    key = (model_path, str(resolve_dtype(dtype, device_name)), device_name, attn_implementation)
    return _BACKENDS.get(key)


def clear_local_backends() -> None:
    """Forget every cached backend (frees its memory once no chat model holds it)."""
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
    if hasattr(processor, "image_processor"):  # each image tiled once, not once per turn
        processor.image_processor = CachingImageProcessor(processor.image_processor)
    return LocalBackend(processor=processor, model=model, attn_implementation=attn_implementation)
