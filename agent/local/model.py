"""A LangChain chat model over a local Hugging Face vision-language model.

Built for InternVL3 `-hf` checkpoints (e.g. `OpenGVLab/InternVL3-2B-hf`) and generic enough for any
`AutoModelForImageTextToText` model whose processor has a chat template. Images arrive as LangChain
content blocks holding base64 data; nothing is ever fetched from a URL or read from a path here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

from zoom_refine.agent.families import Family, family_from_model_type, processor_input_size
from zoom_refine.agent.local.backend import (
    ATTN_IMPLEMENTATIONS,
    LocalBackend,
    load_local_backend,
    loaded_local_backend,
)
from zoom_refine.agent.local.batching import MicroBatcher
from zoom_refine.agent.local.generation import (
    Generation,
    GenerationRequest,
    generate_many,
    out_of_memory,
)
from zoom_refine.agent.local.prefix_cache import image_fingerprint
from zoom_refine.tools.encoding import decode_block_image
from zoom_refine.tools.errors import ModelOutOfMemoryError

HFMessage = dict[str, Any]
HFBlock = dict[str, Any]


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
        return decode_block_image(block["base64"])
    if block.get("source_type") == "base64":
        return decode_block_image(block.get("data"))
    if "url" in block:
        return _image_from_url(block["url"])
    raise ValueError(f"image block has no base64 data: {_REMOTE_IMAGE_HINT}")


def _image_from_url(url: object) -> Image.Image:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ValueError(f"image URL {str(url)[:80]!r} is not a data: URL; {_REMOTE_IMAGE_HINT}")
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        raise ValueError("image data: URL must be base64-encoded (data:image/png;base64,...)")
    return decode_block_image(data)


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

    @property
    def family(self) -> Family:
        """The checkpoint's model family (from `config.model_type`); loads the model."""
        return family_from_model_type(self.model_type)

    def load(self) -> LocalBackend:
        """The shared processor and model, loading them now if this process has not yet."""
        return load_local_backend(
            self.model_path, self.dtype, self.device, self.attn_implementation
        )

    def loaded(self) -> LocalBackend | None:
        """The processor and model if this process has loaded them, else None (never loads)."""
        return loaded_local_backend(
            self.model_path, self.dtype, self.device, self.attn_implementation
        )

    def input_size(self, size: tuple[int, int], *, load: bool = True) -> tuple[int, int] | None:
        """(width, height) this model's processor resizes an image of `size` to, when it is a
        size the processor then leaves unchanged: InternVL's tile canvas (under `max_patches`),
        Qwen2.5-VL's and Qwen3-VL's resized input. None for other processors, and with `load=False` when the
        model is not loaded yet. The graph makes its views at this size, so the processor's own
        resize of a large image becomes a no-op."""
        backend = self.load() if load else self.loaded()
        if backend is None:
            return None
        family = family_from_model_type(getattr(backend.model.config, "model_type", None))
        processor: Any = getattr(backend.processor, "image_processor", None)
        if family == "internvl" and getattr(processor, "crop_to_patches", False):
            return processor_input_size(
                family,
                size,
                max_patches=self.max_patches or int(processor.max_patches),
                min_patches=int(processor.min_patches),
                tile=int(processor.size.height),
                qwen_min_pixels=0,
                qwen_max_pixels=0,
            )
        if family in ("qwen2_5_vl", "qwen3_vl") and processor is not None:
            return processor_input_size(
                family,
                size,
                max_patches=None,
                qwen_min_pixels=int(processor.size.shortest_edge),
                qwen_max_pixels=int(processor.size.longest_edge),
                qwen_factor=int(processor.patch_size) * int(processor.merge_size),
            )
        return None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import torch

        conversation = to_hf_conversation(messages)  # bad input fails before any loading
        backend = self.load()
        max_new_tokens = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        logprobs = bool(kwargs.get("logprobs", False))
        try:  # in the caller's thread, so in parallel; moving to the GPU may run out of memory
            inputs = self._prepare_inputs(backend, conversation)
        except torch.OutOfMemoryError as error:
            raise out_of_memory(backend, error) from None
        request = GenerationRequest(
            conversation,
            max_new_tokens,
            tuple(stop or ()),
            logprobs,
            # Fingerprinting hashes every image's pixels: only when a prefix can be reused.
            _fingerprints(conversation) if self.reuse_prefix and backend.reuses_prefixes else (),
            inputs,
        )
        if self.max_batch_size > 1:
            batcher = self._batcher(backend)
            generation = batcher.submit(request, key=(max_new_tokens, request.stop, logprobs))
        else:
            generation = generate_many(backend, [request], reuse=self.reuse_prefix)[0]
        if isinstance(generation, ModelOutOfMemoryError):
            raise generation  # this sample only: the caches are already freed
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

    def _batcher(
        self, backend: LocalBackend
    ) -> MicroBatcher[GenerationRequest, Generation | ModelOutOfMemoryError]:
        """The backend's shared micro-batcher for this model's batch settings."""
        key = (self.max_batch_size, self.batch_wait_ms, self.max_patches, self.reuse_prefix)
        with backend.lock:
            if key not in backend.batchers:
                backend.batchers[key] = MicroBatcher(
                    run_batch=lambda requests: generate_many(
                        backend, requests, reuse=self.reuse_prefix
                    ),
                    max_batch_size=self.max_batch_size,
                    wait_seconds=self.batch_wait_ms / 1000.0,
                )
            return backend.batchers[key]

    def _prepare_inputs(self, backend: LocalBackend, conversation: list[HFMessage]) -> Any:
        """Render the chat template, tile the images and tokenize, on the model's device."""
        processor_kwargs: dict[str, Any] = {}
        image_processor = getattr(backend.processor, "image_processor", None)
        if self.max_patches is not None and hasattr(image_processor, "max_patches"):
            processor_kwargs["images_kwargs"] = {"max_patches": self.max_patches}
        inputs = backend.processor.apply_chat_template(
            conversation,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs,
        )
        return inputs.to(backend.model.device, dtype=backend.model.dtype)


def _fingerprints(conversation: list[HFMessage]) -> tuple[int, ...]:
    return tuple(
        image_fingerprint(block["image"].tobytes())
        for message in conversation
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "image"
    )


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
