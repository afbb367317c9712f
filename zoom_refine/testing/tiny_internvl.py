"""The tiny InternVL3-hf recipe: the real processor (GotOcr2 tiling at 448 px, 14-px patches,
256 image-context tokens per tile) and chat template, a byte-level tokenizer, a 1-layer vision
tower and a 1-layer Qwen2 decoder with tiny widths. The weights are seeded noise until
`protocol_training` fine-tunes them."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from zoom_refine.testing.protocol_training import PROTOCOL_WINDOW
from zoom_refine.testing.tiny_parts import (
    CHAT_TOKENS,
    TinyRecipe,
    build_byte_level_tokenizer,
    seeded_model,
    tiny_decoder,
    token_id,
)

if TYPE_CHECKING:  # imported where used: `import zoom_refine.testing` stays free of torch
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        PretrainedConfig,
        Qwen2Tokenizer,
    )

# The -hf InternVL3 template, as written by transformers' conversion script: every image block
# becomes one `<IMG_CONTEXT>` line, which InternVLProcessor expands to
# `<img>` + `<IMG_CONTEXT>` * image_seq_length * tiles + `</img>`.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

TILE_PX = 448
PATCH_PX = 14
IMAGE_SEQ_LENGTH = 256  # (448 / 14) ** 2 patches * 0.5 ** 2 pixel-shuffle = 256 tokens per tile


def build_tiny_tokenizer() -> Qwen2Tokenizer:
    """The InternVL3 tokenizer: byte-level, chat tokens and InternVL's image tokens."""
    return build_byte_level_tokenizer(
        [*CHAT_TOKENS, *IMAGE_TOKENS.values()],
        INTERNVL_CHAT_TEMPLATE,
        extra_special_tokens=IMAGE_TOKENS,
    )


def build_tiny_internvl_processor(tokenizer: Qwen2Tokenizer) -> InternVLProcessor:
    """The InternVL3-hf processor: GotOcr2 tiling at 448 px, ImageNet statistics, 12 tiles max."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    image_processor = GotOcr2ImageProcessor(
        size={"height": TILE_PX, "width": TILE_PX},
        crop_to_patches=True,
        min_patches=1,
        max_patches=12,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    video_processor = InternVLVideoProcessor(
        size={"height": TILE_PX, "width": TILE_PX},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )


def build_tiny_internvl3_model(
    tokenizer: Qwen2Tokenizer, *, sliding_window: int | None = None
) -> InternVLForConditionalGeneration:
    """A 1-layer vision tower and a 1-layer Qwen2 decoder with tiny widths, seeded weights.
    `sliding_window` (tokens) turns the decoder layer into sliding-window attention."""
    from transformers import InternVLForConditionalGeneration, Qwen2Config

    decoder = tiny_decoder(tokenizer, max_position_embeddings=8192, sliding_window=sliding_window)
    text_config = Qwen2Config(**decoder, tie_word_embeddings=True)
    config = tiny_internvl_config(tokenizer, text_config, tied=True)
    return seeded_model(InternVLForConditionalGeneration, config, tokenizer)


def tiny_internvl_config(
    tokenizer: Qwen2Tokenizer, text_config: PretrainedConfig, *, tied: bool
) -> InternVLConfig:
    """The InternVL config around `text_config`: a 1-layer vision tower with tiny widths, the
    tile and token layout of the tiny processor; `tied` = output head tied to the embeddings."""
    from transformers import InternVLConfig, InternVLVisionConfig

    vision_config = InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=TILE_PX,
        patch_size=PATCH_PX,
    )
    return InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=token_id(tokenizer, "<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=0.5,
        tie_word_embeddings=tied,
    )


build_tiny_internvl3 = TinyRecipe(
    "InternVL3-hf", build_tiny_tokenizer, build_tiny_internvl_processor, build_tiny_internvl3_model
)
"""Save a tiny random InternVL3-hf checkpoint (model, tokenizer, processor) into a folder:
`build_tiny_internvl3(out_dir, sliding_window=None)`."""


def build_protocol_base(out_dir: pathlib.Path) -> pathlib.Path:
    """The random InternVL3 checkpoint the protocol model is trained from (`protocol_training`):
    sliding-window attention over `PROTOCOL_WINDOW` tokens in the decoder layer."""
    return build_tiny_internvl3(out_dir, sliding_window=PROTOCOL_WINDOW)
