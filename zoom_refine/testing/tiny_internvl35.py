"""The tiny InternVL3.5-HF recipe: InternVL3's processor, tokenizer and chat template (GotOcr2
tiling at 448 px, 256 image-context tokens per tile) over a Qwen3 text backbone.

Released InternVL3.5 `-HF` checkpoints (e.g. `OpenGVLab/InternVL3_5-8B-HF`) are
`InternVLForConditionalGeneration` with model_type `internvl` and `text_config.model_type`
`qwen3`: the vision side and the processor are InternVL3's, the decoder is Qwen3's (a decoupled
`head_dim`, RMS-normed queries and keys, an untied output head on the 8B). This recipe builds the
same structure at tiny widths: a 1-layer vision tower and a 1-layer Qwen3 decoder with 2 heads
of 32 (a head size vLLM's CPU attention supports), seeded weights. Its replies are noise: it
tests loading, sizes, token counts and the plumbing, not answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoom_refine.testing.tiny_internvl import (
    build_tiny_internvl_processor,
    build_tiny_tokenizer,
    tiny_internvl_config,
)
from zoom_refine.testing.tiny_parts import TinyRecipe, seeded_model, tiny_decoder

if TYPE_CHECKING:  # imported where used: `import zoom_refine.testing` stays free of torch
    from transformers import InternVLForConditionalGeneration, Qwen2Tokenizer

QWEN3_HEAD_DIM = 32
"""Set explicitly: Qwen3Config's default head_dim is 128 whatever the width (Qwen3 decouples it
from hidden_size / heads); 32 keeps the model tiny and is one vLLM's CPU attention supports."""
MAX_POSITIONS = 8192
"""Room for two 12-tile images (13 × 256 tokens each) and the text around them."""


def build_tiny_internvl35_model(
    tokenizer: Qwen2Tokenizer, *, sliding_window: int | None = None
) -> InternVLForConditionalGeneration:
    """A 1-layer InternViT-style vision tower and a 1-layer Qwen3 decoder with tiny widths and
    an untied output head (as InternVL3.5-8B's), seeded weights. `sliding_window` (tokens) turns
    the decoder layer into sliding-window attention."""
    from transformers import InternVLForConditionalGeneration, Qwen3Config

    decoder = tiny_decoder(
        tokenizer, max_position_embeddings=MAX_POSITIONS, sliding_window=sliding_window
    )
    text_config = Qwen3Config(**decoder, head_dim=QWEN3_HEAD_DIM, tie_word_embeddings=False)
    config = tiny_internvl_config(tokenizer, text_config, tied=False)
    return seeded_model(InternVLForConditionalGeneration, config, tokenizer)


build_tiny_internvl35 = TinyRecipe(
    "InternVL3.5-HF",
    build_tiny_tokenizer,
    build_tiny_internvl_processor,
    build_tiny_internvl35_model,
)
"""Save a tiny random InternVL3.5-HF checkpoint (model, tokenizer, processor) into a folder:
`build_tiny_internvl35(out_dir, sliding_window=None)`."""
