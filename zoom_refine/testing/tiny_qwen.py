"""The tiny Qwen2.5-VL recipe: the real `Qwen2VLImageProcessor` (14-px patches, 2x2 merge,
temporal patch 2) resizing each image with `smart_resize` to sides that are multiples of 28
within `QWEN_MIN_PIXELS`..`QWEN_MAX_PIXELS`, one `<|image_pad|>` token per 28x28 block of the
resized image; Qwen's chat template and specials over a byte-level tokenizer; a 2-block vision
tower and a 1-layer decoder with multimodal rotary positions. Its template, tokenizer, vision
tower settings and model tail serve the Qwen3-VL recipe (`tiny_qwen3`) too."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from zoom_refine.agent import families
from zoom_refine.testing.protocol_training import PROTOCOL_WINDOW
from zoom_refine.testing.tiny_parts import (
    Model,
    TinyRecipe,
    build_byte_level_tokenizer,
    seeded_model,
    tiny_decoder,
    token_id,
)

if TYPE_CHECKING:  # imported where used: `import zoom_refine.testing` stays free of torch
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
    )

# The Qwen2.5-VL template, after the released one: a default system turn when the conversation
# has none, and every image block becomes `<|vision_start|><|image_pad|><|vision_end|>`;
# Qwen2_5_VLProcessor expands the one `<|image_pad|>` to one per 28x28 block of the resized image.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{{ '<|im_end|>\n' }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}{{ 'Picture ' ~ image_count.value ~ ': ' }}{% endif %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}{{ 'Video ' ~ video_count.value ~ ': ' }}{% endif %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

QWEN_PATCH_PX = 14
QWEN_MERGE_SIZE = 2
QWEN_TEMPORAL_PATCH_SIZE = 2
QWEN_FACTOR = QWEN_PATCH_PX * QWEN_MERGE_SIZE  # resized sides are multiples of 28
QWEN_MIN_PIXELS = 4 * 28 * 28  # the released processor's floor (56 * 56)
QWEN_MAX_PIXELS = 400 * 28 * 28
"""Smaller than production (1280 * 28 * 28) to keep tests fast: at most 400 image tokens per
image. Any 5:3 image of at least 313,600 px is resized to 700 x 420 (e.g. 1500 x 900 or a
2048 x 1229 view), which is never the size of the view the graph shows."""


def qwen_resized_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) Qwen2VLImageProcessor resizes a `width` x `height` image to here.

    The same numbers are in the processor output: `image_grid_thw[i] = (t, h, w)` in 14-px
    patches, so the resized size is `(w * 14, h * 14)`.
    """
    return families.qwen_resized_size(
        (width, height), min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS
    )


def build_tiny_qwen_tokenizer(merges: Sequence[tuple[str, str]] = ()) -> Qwen2Tokenizer:
    """The Qwen2.5-VL tokenizer: byte-level (with `merges`, if any), with Qwen's chat, grounding
    and vision specials."""
    return build_byte_level_tokenizer(
        QWEN_SPECIAL_TOKENS, QWEN_CHAT_TEMPLATE, model_max_length=32768, merges=merges
    )


def build_tiny_qwen2_5_vl_processor(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLProcessor:
    """The real Qwen2.5-VL processor (CLIP statistics) with `QWEN_MIN/MAX_PIXELS`."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes: dict[str, Any] = {
        "min_pixels": QWEN_MIN_PIXELS,
        "max_pixels": QWEN_MAX_PIXELS,
        "patch_size": QWEN_PATCH_PX,
        "temporal_patch_size": QWEN_TEMPORAL_PATCH_SIZE,
        "merge_size": QWEN_MERGE_SIZE,
    }
    return Qwen2_5_VLProcessor(  # type: ignore[no-untyped-call]
        image_processor=Qwen2VLImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def seeded_qwen_vl(
    config_class: Callable[..., Any],
    model_class: Callable[[Any], Model],
    tokenizer: Any,
    text_config: dict[str, Any],
    vision_config: dict[str, Any],
) -> Model:
    """A Qwen-VL model (Qwen2.5-VL or Qwen3-VL) of `text_config` and `vision_config`, with the
    tokenizer's vision token ids and tied embeddings, seeded (`seeded_model`)."""
    config = config_class(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id(tokenizer, "<|image_pad|>"),
        video_token_id=token_id(tokenizer, "<|video_pad|>"),
        vision_start_token_id=token_id(tokenizer, "<|vision_start|>"),
        vision_end_token_id=token_id(tokenizer, "<|vision_end|>"),
        tie_word_embeddings=True,
    )
    return seeded_model(model_class, config, tokenizer)


def tiny_qwen_vision(
    patch_px: int, merge_size: int, temporal_patch_size: int, **extra: Any
) -> dict[str, Any]:
    """A Qwen vision tower's settings: 2 blocks of width 32 (2 heads), projected to the
    decoder's 64, over `patch_px` patches merged `merge_size` x `merge_size`; plus `extra`."""
    return {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": patch_px,
        "spatial_merge_size": merge_size,
        "temporal_patch_size": temporal_patch_size,
        **extra,
    }


def build_tiny_qwen2_5_vl_model(
    tokenizer: Qwen2Tokenizer, *, sliding_window: int | None = None
) -> Qwen2_5_VLForConditionalGeneration:
    """A 2-block vision tower (one windowed, one full attention) and a 1-layer decoder with
    multimodal rotary positions, tiny widths, seeded weights. `sliding_window` (tokens) turns
    the decoder layer into sliding-window attention."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text_config = tiny_decoder(
        tokenizer, max_position_embeddings=32768, sliding_window=sliding_window
    )
    # head_dim 32 → 16 rotary frequencies split over (time, height, width)
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1e6,
        "mrope_section": [4, 6, 6],
    }
    vision_config = tiny_qwen_vision(
        QWEN_PATCH_PX,
        QWEN_MERGE_SIZE,
        QWEN_TEMPORAL_PATCH_SIZE,
        window_size=112,
        fullatt_block_indexes=[1],
    )
    return seeded_qwen_vl(
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, tokenizer, text_config, vision_config
    )


build_tiny_qwen2_5_vl = TinyRecipe(
    "Qwen2.5-VL",
    build_tiny_qwen_tokenizer,
    build_tiny_qwen2_5_vl_processor,
    build_tiny_qwen2_5_vl_model,
)
"""Save a tiny random Qwen2.5-VL checkpoint (model, tokenizer, processor) into a folder:
`build_tiny_qwen2_5_vl(out_dir, sliding_window=None)`."""


def build_protocol_base(out_dir: pathlib.Path) -> pathlib.Path:
    """The random Qwen2.5-VL checkpoint the protocol model is trained from (`protocol_training`):
    sliding-window attention over `PROTOCOL_WINDOW` tokens in the decoder layer."""
    return build_tiny_qwen2_5_vl(out_dir, sliding_window=PROTOCOL_WINDOW)
