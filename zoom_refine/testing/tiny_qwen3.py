"""A tiny random Qwen3-VL checkpoint built from transformers' own classes, for tests.

`Qwen3VLForConditionalGeneration` (model_type `qwen3_vl`) with `Qwen3VLProcessor`: the image
processor resizes so both sides are multiples of 16-px patches × 2×2 merge = 32 px, with its
pixel budget in `size={"shortest_edge": MIN, "longest_edge": MAX}` (both pixel counts, not
sides). Boxes are read in 0–1000 (`agent.families`). Tiny widths, seeded weights; the weights
are random, so its replies are noise: it tests shapes, sizes and the plumbing, not answers.
"""

from __future__ import annotations

import pathlib
from typing import Any

from zoom_refine.testing.tiny_parts import save_checkpoint, tiny_decoder
from zoom_refine.testing.tiny_qwen import (
    QWEN_CHAT_TEMPLATE,
    build_tiny_qwen_tokenizer,
    seeded_qwen_vl,
    tiny_qwen_vision,
)

QWEN3_PATCH_PX = 16
QWEN3_MERGE_SIZE = 2
QWEN3_TEMPORAL_PATCH_SIZE = 2
QWEN3_FACTOR = QWEN3_PATCH_PX * QWEN3_MERGE_SIZE
"""Qwen3-VL's resized sides are multiples of 32 px."""
QWEN3_MIN_PIXELS = 64 * 32 * 32
QWEN3_MAX_PIXELS = 1024 * 32 * 32
"""1,048,576 px: the budget of the issue's example (a 3840x2160 image's first view must be made
within it, e.g. 1344x768, so the processor never resizes it again)."""


def build_tiny_qwen3_vl_processor(
    tokenizer: Any, *, min_pixels: int = QWEN3_MIN_PIXELS, max_pixels: int = QWEN3_MAX_PIXELS
) -> Any:
    """The real Qwen3-VL processor with a pixel budget of `min_pixels`..`max_pixels`."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    common: dict[str, Any] = {
        "patch_size": QWEN3_PATCH_PX,
        "temporal_patch_size": QWEN3_TEMPORAL_PATCH_SIZE,
        "merge_size": QWEN3_MERGE_SIZE,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return Qwen3VLProcessor(  # type: ignore[no-untyped-call]
        image_processor=Qwen2VLImageProcessor(size=size, **common),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**common),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def build_tiny_qwen3_vl_model(tokenizer: Any) -> Any:
    """A 2-block vision tower (one deepstack level) and a 1-layer decoder with interleaved
    multimodal rotary positions; tiny widths, seeded weights."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text_config = tiny_decoder(tokenizer, max_position_embeddings=32768)
    text_config["head_dim"] = 32
    # head_dim 32 → 16 rotary frequencies over (time, height, width)
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": [6, 5, 5],
        "mrope_interleaved": True,
    }
    vision_config = tiny_qwen_vision(
        QWEN3_PATCH_PX,
        QWEN3_MERGE_SIZE,
        QWEN3_TEMPORAL_PATCH_SIZE,
        num_position_embeddings=144,
        deepstack_visual_indexes=[0],
    )
    return seeded_qwen_vl(
        Qwen3VLConfig, Qwen3VLForConditionalGeneration, tokenizer, text_config, vision_config
    )


def build_tiny_qwen3_vl(
    out_dir: pathlib.Path,
    *,
    min_pixels: int = QWEN3_MIN_PIXELS,
    max_pixels: int = QWEN3_MAX_PIXELS,
) -> pathlib.Path:
    """Save a tiny random Qwen3-VL checkpoint (model, tokenizer, processor) into `out_dir`."""
    tokenizer = build_tiny_qwen_tokenizer()
    processor = build_tiny_qwen3_vl_processor(
        tokenizer, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return save_checkpoint(out_dir, processor, build_tiny_qwen3_vl_model(tokenizer))
