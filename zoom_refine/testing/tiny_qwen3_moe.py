"""The tiny Qwen3-VL-MoE recipe: Qwen3-VL's processor, tokenizer and vision tower over a
mixture-of-experts decoder (`Qwen3VLMoeForConditionalGeneration`, model_type `qwen3_vl_moe`, as
`Qwen/Qwen3-VL-30B-A3B-Instruct`), built from transformers' own classes. Its replies are noise: it
tests loading, the family (read as `qwen3_vl`), sizes and token counts, in process and in vLLM.

The experts are saved as the released checkpoints hold them. transformers 5 keeps each layer's
fused experts as `gate_up_proj` [experts, 2 x intermediate, hidden] and `down_proj` [experts,
hidden, intermediate], and transposes the released layout ([experts, hidden, 2 x intermediate],
[experts, intermediate, hidden]) when it loads one, but `save_pretrained` writes its own layout
back; vLLM reads the released layout only. So the saved experts are transposed to it, and the
sizes are chosen so that no expert matrix is square (the layouts cannot be confused).
"""

from __future__ import annotations

import pathlib
from typing import Any

from zoom_refine.testing.tiny_parts import save_checkpoint
from zoom_refine.testing.tiny_qwen import build_tiny_qwen_tokenizer, seeded_qwen_vl
from zoom_refine.testing.tiny_qwen3 import (
    QWEN3_MAX_PIXELS,
    QWEN3_MIN_PIXELS,
    build_tiny_qwen3_vl_processor,
    tiny_qwen3_text_config,
    tiny_qwen3_vision_config,
)

EXPERTS = 4
EXPERTS_PER_TOKEN = 2
EXPERT_INTERMEDIATE = 16
"""Each expert's hidden width: 2 x 16 = 32 and 16 differ from the decoder's width (64)."""
FUSED_EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
"""The names (suffixes) of the fused expert weights whose saved layout differs."""


def build_tiny_qwen3_vl_moe_model(tokenizer: Any) -> Any:
    """Qwen3-VL's tiny vision tower and a 1-layer decoder whose MLP is 4 experts, 2 per token
    (router probabilities renormalised over the chosen ones), seeded weights."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    text_config = tiny_qwen3_text_config(tokenizer) | {
        "num_experts": EXPERTS,
        "num_experts_per_tok": EXPERTS_PER_TOKEN,
        "moe_intermediate_size": EXPERT_INTERMEDIATE,
        "decoder_sparse_step": 1,
        "norm_topk_prob": True,  # the released config's value; vLLM reads it, it has no default
    }
    return seeded_qwen_vl(
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
        tokenizer,
        text_config,
        tiny_qwen3_vision_config(),
    )


def build_tiny_qwen3_vl_moe(
    out_dir: pathlib.Path,
    *,
    min_pixels: int = QWEN3_MIN_PIXELS,
    max_pixels: int = QWEN3_MAX_PIXELS,
) -> pathlib.Path:
    """Save a tiny random Qwen3-VL-MoE checkpoint (model, tokenizer, processor) into `out_dir`,
    its experts in the released layout, its processor's budget `min_pixels`..`max_pixels`."""
    tokenizer = build_tiny_qwen_tokenizer()
    processor = build_tiny_qwen3_vl_processor(
        tokenizer, min_pixels=min_pixels, max_pixels=max_pixels
    )
    out_dir = save_checkpoint(out_dir, processor, build_tiny_qwen3_vl_moe_model(tokenizer))
    to_released_expert_layout(out_dir / "model.safetensors")
    return out_dir


def to_released_expert_layout(weights: pathlib.Path) -> None:
    """Rewrite `weights` (one safetensors file) with each fused expert weight transposed from
    transformers' layout to the released checkpoints' (see the module docstring)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    for name, tensor in tensors.items():
        if name.endswith(FUSED_EXPERTS):
            tensors[name] = tensor.transpose(1, 2).contiguous()
    save_file(tensors, weights, metadata={"format": "pt"})
