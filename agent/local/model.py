"""A LangChain chat model over a local Hugging Face vision-language model.

Built for InternVL3 `-hf` checkpoints (e.g. `OpenGVLab/InternVL3-2B-hf`) and generic enough for any
`AutoModelForImageTextToText` model whose processor has a chat template. Images arrive as LangChain
content blocks holding base64 data; nothing is ever fetched from a URL or read from a path
(`local.messages`). Tools bound with `bind_tools` are rendered by the checkpoint's chat template
and read back from the reply as a server does (`local.chat_tools`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import field_validator

from zoom_refine.agent.families import (
    Family,
    family_from_model_type,
    processor_input_size,
    visual_tokens,
)
from zoom_refine.agent.local.backend import (
    ATTN_IMPLEMENTATIONS,
    LocalBackend,
    load_local_backend,
    loaded_local_backend,
)
from zoom_refine.agent.local.batching import MicroBatcher
from zoom_refine.agent.local.chat_tools import (
    check_tool_choice,
    template_for_tools,
    template_renders_tools,
    with_parsed_calls,
)
from zoom_refine.agent.local.generation import (
    Generation,
    GenerationRequest,
    generate_many,
    out_of_memory,
)
from zoom_refine.agent.local.messages import (
    HFMessage,
    image_from_block,
    to_hf_conversation,
    with_tool_turns,
)
from zoom_refine.agent.local.prefix_cache import image_fingerprint
from zoom_refine.tools.errors import ModelOutOfMemoryError

__all__ = ["LocalVisionChatModel", "image_from_block", "to_hf_conversation", "with_tool_turns"]


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
    min_pixels: int | None = None
    """Qwen pixel budget: least pixels (a count, not a side) the processor resizes an image to;
    None keeps the processor's own. Ignored by processors without one (InternVL: `max_patches`)."""
    max_pixels: int | None = None
    """Qwen pixel budget: most pixels the processor resizes an image to; None keeps its own."""
    attn_implementation: str = "auto"
    """'auto' (flash_attention_2 on CUDA when flash-attn is installed, else sdpa), 'sdpa',
    'flash_attention_2' (needs the `flash` extra) or 'eager'. The one used is reported in each
    reply's `response_metadata["attn_implementation"]`."""
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
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
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
                qwen_min_pixels=self.min_pixels or int(processor.size.shortest_edge),
                qwen_max_pixels=self.max_pixels or int(processor.size.longest_edge),
                qwen_factor=_qwen_factor(processor),
            )
        return None

    def size_step(self) -> int:
        """Pixels this model's processor rounds each image side to: patch × merge size for
        Qwen2.5-VL and Qwen3-VL; 0 for other processors (InternVL tiles) and before loading."""
        backend = self.loaded()
        if backend is None:
            return 0
        family = family_from_model_type(getattr(backend.model.config, "model_type", None))
        processor: Any = getattr(backend.processor, "image_processor", None)
        if family in ("qwen2_5_vl", "qwen3_vl") and processor is not None:
            return _qwen_factor(processor)
        return 0

    def visual_tokens(self, size: tuple[int, int]) -> int | None:
        """Visual tokens an image costs once this model's processor has made it `size` (width,
        height in pixels): the family's rule with this processor's tile side and tokens per tile
        (InternVL) or patch × merge size (Qwen). None before the model is loaded, or for other
        processors."""
        backend = self.loaded()
        if backend is None:
            return None
        family = family_from_model_type(getattr(backend.model.config, "model_type", None))
        processor: Any = getattr(backend.processor, "image_processor", None)
        if family == "internvl" and getattr(processor, "crop_to_patches", False):
            tile = int(processor.size.height)
            return visual_tokens(family, size, tile=tile, tokens_per_tile=backend.tokens_per_tile)
        if family in ("qwen2_5_vl", "qwen3_vl") and processor is not None:
            return visual_tokens(family, size, qwen_factor=_qwen_factor(processor))
        return None

    @property
    def renders_tools(self) -> bool:
        """Whether the checkpoint's chat template has a tools section (loads the model): then
        bound tools and tool turns go to the template as a server sends them, else the agent
        graph writes the tools into the system turn itself (`agent.tool_checks`)."""
        return template_renders_tools(self.load().processor.chat_template)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer `tools` (OpenAI's function format, `convert_to_openai_tool`) as a server does:
        rendered by the chat template's tools section, `<tool_call>` blocks of the reply read
        into `tool_calls`. `tool_choice` 'auto' or 'none' (render, do not read); forcing a call
        is refused."""
        check_tool_choice(tool_choice)
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def prompt_inputs(
        self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None
    ) -> Any:
        """The processor's output for `messages` with `tools` (token ids, pixels), on the model's
        device: exactly what a call sends to `generate` before any prefix reuse."""
        conversation = to_hf_conversation(messages)
        backend = self.load()
        return self._prepare_inputs(backend, _shaped(backend, messages, conversation), tools)

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
        conversation = _shaped(backend, messages, conversation)
        tools: list[dict[str, Any]] | None = kwargs.get("tools") or None
        reads_calls = tools is not None and kwargs.get("tool_choice") != "none"
        max_new_tokens = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        logprobs = bool(kwargs.get("logprobs", False))
        try:  # in the caller's thread, so in parallel; moving to the GPU may run out of memory
            inputs = self._prepare_inputs(backend, conversation, tools)
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
        message = self._message(backend, generation, keep_special=reads_calls)
        if reads_calls:
            message = with_parsed_calls(message, turn=_assistant_turns(messages) + 1)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _message(
        self, backend: LocalBackend, generation: Generation, *, keep_special: bool = False
    ) -> AIMessage:
        new_ids, prompt_tokens = generation.new_ids, generation.prompt_tokens
        text = _decode(backend, new_ids, keep_special=keep_special)
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
                "attn_implementation": backend.attn_implementation,
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
        key = (
            self.max_batch_size,
            self.batch_wait_ms,
            self.max_patches,
            self.min_pixels,
            self.max_pixels,
            self.reuse_prefix,
        )
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

    def _prepare_inputs(
        self,
        backend: LocalBackend,
        conversation: list[HFMessage],
        tools: list[dict[str, Any]] | None = None,
    ) -> Any:
        """Render the chat template (with `tools` in its tools section, as vLLM renders a request
        with tools), tile the images and tokenize, on the model's device."""
        processor_kwargs: dict[str, Any] = {}
        image_processor: Any = getattr(backend.processor, "image_processor", None)
        images_kwargs: dict[str, Any] = {}
        if self.max_patches is not None and hasattr(image_processor, "max_patches"):
            images_kwargs["max_patches"] = self.max_patches
        budget = (self.min_pixels, self.max_pixels)
        if hasattr(image_processor, "merge_size") and budget != (None, None):  # Qwen: pixels
            size = image_processor.size
            images_kwargs["size"] = {
                "shortest_edge": self.min_pixels or int(size.shortest_edge),
                "longest_edge": self.max_pixels or int(size.longest_edge),
            }
        if images_kwargs:
            processor_kwargs["images_kwargs"] = images_kwargs
        template = backend.processor.chat_template
        inputs = backend.processor.apply_chat_template(
            conversation,
            chat_template=template_for_tools(template) if tools else None,
            tools=tools,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs,
        )
        return inputs.to(backend.model.device, dtype=backend.model.dtype)


def _shaped(
    backend: LocalBackend, messages: Sequence[BaseMessage], conversation: list[HFMessage]
) -> list[HFMessage]:
    """The conversation in the shape this checkpoint's template expects (`with_tool_turns` when
    it has a tools section)."""
    if template_renders_tools(backend.processor.chat_template):
        return with_tool_turns(messages, conversation)
    return conversation


def _assistant_turns(messages: Sequence[BaseMessage]) -> int:
    return sum(isinstance(message, AIMessage) for message in messages)


def _decode(backend: LocalBackend, new_ids: list[int], *, keep_special: bool) -> str:
    """The reply's text. With `keep_special` (tools bound) special tokens stay, bar the closing
    end-of-turn token, as vLLM decodes a request with tools: some checkpoints make `<tool_call>`
    a special token, which the parser must still see."""
    if not keep_special:
        return str(backend.processor.decode(new_ids, skip_special_tokens=True))
    ids = list(new_ids)
    eos = _eos_ids(backend)
    while ids and ids[-1] in eos:
        ids.pop()
    return str(backend.processor.decode(ids, skip_special_tokens=False))


def _eos_ids(backend: LocalBackend) -> set[int]:
    eos = backend.model.generation_config.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos or [])


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
    return bool(new_ids) and new_ids[-1] in _eos_ids(backend)


def _qwen_factor(image_processor: Any) -> int:
    """The side, in pixels, a Qwen image processor's sizes are multiples of: patch × merge."""
    return int(image_processor.patch_size) * int(image_processor.merge_size)
