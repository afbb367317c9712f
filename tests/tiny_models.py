"""Tiny randomly initialised vision-language checkpoints built at test time (no hub, no GPU).

The weights are noise, but the processor, tokenizer, chat template and tiling are the real
InternVL3-hf ones (448-px tiles, 14-px patches, 256 image-context tokens per tile), so token and
tile counts seen by tests match what a real checkpoint would produce.
"""

from __future__ import annotations

import pathlib

import torch
from tokenizers import AddedToken, pre_tokenizers
from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
    InternVLVisionConfig,
    Qwen2Config,
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

CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
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
    """Qwen2 tokenizer over byte-level BPE with no merges (one token per byte) plus specials."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    specials = [*CHAT_TOKENS, *IMAGE_TOKENS.values()]
    vocab.update({token: len(alphabet) + index for index, token in enumerate(specials)})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(IMAGE_TOKENS),
        chat_template=INTERNVL_CHAT_TEMPLATE,
        model_max_length=8192,
    )
    tokenizer.add_tokens([AddedToken(token, special=True) for token in specials])
    return tokenizer


def build_tiny_internvl_processor(tokenizer: Qwen2Tokenizer) -> InternVLProcessor:
    """The InternVL3-hf processor: GotOcr2 tiling at 448 px, ImageNet statistics, 12 tiles max."""
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


def build_tiny_internvl3_model(tokenizer: Qwen2Tokenizer) -> InternVLForConditionalGeneration:
    """A 1-layer vision tower and a 1-layer Qwen2 decoder with tiny widths, seeded weights."""
    vocab_size = len(tokenizer)
    text_config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=TILE_PX,
        patch_size=PATCH_PX,
    )
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(0)
        model = InternVLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = text_config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_internvl3(out_dir: pathlib.Path) -> pathlib.Path:
    """Save a tiny random InternVL3-hf checkpoint (model, tokenizer, processor) into `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    processor = build_tiny_internvl_processor(tokenizer)
    model = build_tiny_internvl3_model(tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
