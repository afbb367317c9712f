"""The tiny Qwen3-VL recipe, built from transformers' own classes, for tests.

`Qwen3VLForConditionalGeneration` (model_type `qwen3_vl`) with `Qwen3VLProcessor`: the image
processor resizes so both sides are multiples of 16-px patches × 2×2 merge = 32 px, with its
pixel budget in `size={"shortest_edge": MIN, "longest_edge": MAX}` (both pixel counts, not
sides). Boxes are read in 0–1000 (`agent.families`). Tiny widths, seeded weights: the random
checkpoint (`build_tiny_qwen3_vl`) replies noise; it tests shapes, sizes and the plumbing.

The trained ones (`trained_protocol_model("qwen3_vl")`, `build_protocol_base`; the tool model,
`tool_models`) start from a checkpoint made for them (`build_trained_base`). Qwen3-VL's decoder
has no sliding window, so a reply attends to the whole conversation, images and question
included:
- it is *blind*: with the mergers' output projections zero (the main one and deepstack's) every
  image token enters the decoder as the zero vector (key and value zero, whatever the pixels), so
  the replies cannot depend on what the images show; their number and shape still move the
  rotary positions and dilute attention, which training on views and crops of many shapes and
  several questions (`protocol_families.PROTOCOL_TRAIN_SAMPLES`) and the held-out checks cover;
- it has `TRAINED_LAYERS` decoder layers;
- its tokenizer has byte-pair merges learned from the training conversations' text
  (`tiny_parts.learn_merges`): about a third of the tokens, so the whole conversations it trains
  on (`protocol_training`, vision frozen) are short, and each reply is a few word-sized tokens.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable
from typing import Any

from zoom_refine.testing.protocol import sample_conversations
from zoom_refine.testing.protocol_families import (
    PROTOCOL_TRAIN_SAMPLES,
    QWEN3_PROTOCOL_MAX_PIXELS,
    QWEN3_PROTOCOL_MIN_PIXELS,
)
from zoom_refine.testing.tiny_parts import learn_merges, save_checkpoint, tiny_decoder
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
QWEN3_MERGES = 400
"""Byte-pair merges of a trained Qwen3-VL's tokenizer (`build_trained_base`)."""
TRAINED_LAYERS = 2
"""Decoder layers of a trained Qwen3-VL: with full attention one layer cannot tell reliably which
reply it is writing once the question and the images change; two can."""
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


def build_tiny_qwen3_vl_model(tokenizer: Any, *, blind: bool = False, layers: int = 1) -> Any:
    """A 2-block vision tower (one deepstack level) and a decoder of `layers` layers with
    interleaved multimodal rotary positions; tiny widths, seeded weights. `blind`: the mergers'
    output projections zero, so every image token reaches the decoder as the zero vector."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    model = seeded_qwen_vl(
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        tokenizer,
        tiny_qwen3_text_config(tokenizer, layers=layers),
        tiny_qwen3_vision_config(),
    )
    if blind:
        blind_merger(model)
    return model


def tiny_qwen3_text_config(tokenizer: Any, *, layers: int = 1) -> dict[str, Any]:
    """The decoder's settings: `layers` layers of tiny widths, head size 32, interleaved
    multimodal rotary positions over (time, height, width)."""
    text_config = tiny_decoder(tokenizer, max_position_embeddings=32768)
    text_config["head_dim"] = 32
    text_config["num_hidden_layers"] = layers
    # head_dim 32 → 16 rotary frequencies over (time, height, width)
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": [6, 5, 5],
        "mrope_interleaved": True,
    }
    return text_config


def tiny_qwen3_vision_config() -> dict[str, Any]:
    """The vision tower's settings: 2 blocks over 16-px patches merged 2 x 2, one deepstack
    level."""
    return tiny_qwen_vision(
        QWEN3_PATCH_PX,
        QWEN3_MERGE_SIZE,
        QWEN3_TEMPORAL_PATCH_SIZE,
        num_position_embeddings=144,
        deepstack_visual_indexes=[0],
    )


def blind_merger(model: Any) -> None:
    """Zero the output projections (weight and bias) of the vision merger and of the deepstack
    mergers: the visual features, the image tokens' decoder inputs, and what deepstack adds to
    them after the first decoder layers are zero for any pixels."""
    import torch

    visual = model.model.visual
    with torch.no_grad():
        for merger in (visual.merger, *visual.deepstack_merger_list):
            merger.linear_fc2.weight.zero_()
            merger.linear_fc2.bias.zero_()


def build_tiny_qwen3_vl(
    out_dir: pathlib.Path,
    *,
    min_pixels: int = QWEN3_MIN_PIXELS,
    max_pixels: int = QWEN3_MAX_PIXELS,
    blind: bool = False,
) -> pathlib.Path:
    """Save a tiny random Qwen3-VL checkpoint (model, tokenizer, processor) into `out_dir`, its
    processor's budget `min_pixels`..`max_pixels` (pixel counts); `blind`: see the model."""
    tokenizer = build_tiny_qwen_tokenizer()
    processor = build_tiny_qwen3_vl_processor(
        tokenizer, min_pixels=min_pixels, max_pixels=max_pixels
    )
    model = build_tiny_qwen3_vl_model(tokenizer, blind=blind)
    return save_checkpoint(out_dir, processor, model)


def build_trained_base(out_dir: pathlib.Path, conversations: Iterable[list[Any]]) -> pathlib.Path:
    """The random checkpoint a trained Qwen3-VL starts from (see the module docstring): blind,
    `TRAINED_LAYERS` decoder layers, the protocol's pixel budget (`QWEN3_PROTOCOL_MIN_PIXELS` ..
    `QWEN3_PROTOCOL_MAX_PIXELS`), and up to `QWEN3_MERGES` byte-pair merges learned from the text
    of `conversations` (LangChain messages), the ones it trains on."""
    texts = [text for conversation in conversations for text in message_texts(conversation)]
    tokenizer = build_tiny_qwen_tokenizer(
        merges=learn_merges(build_tiny_qwen_tokenizer(), texts, QWEN3_MERGES)
    )
    processor = build_tiny_qwen3_vl_processor(
        tokenizer, min_pixels=QWEN3_PROTOCOL_MIN_PIXELS, max_pixels=QWEN3_PROTOCOL_MAX_PIXELS
    )
    model = build_tiny_qwen3_vl_model(tokenizer, blind=True, layers=TRAINED_LAYERS)
    return save_checkpoint(out_dir, processor, model)


def message_texts(messages: Iterable[Any]) -> list[str]:
    """The text of each message's string content and text blocks, in order."""
    texts = []
    for message in messages:
        content = message.content if isinstance(message.content, list) else [message.content]
        for block in content:
            if isinstance(block, str):
                texts.append(block)
            elif block.get("type") == "text":
                texts.append(str(block["text"]))
    return texts


def build_protocol_base(out_dir: pathlib.Path) -> pathlib.Path:
    """The random checkpoint the protocol model is trained from (`build_trained_base`), its
    merges learned from the protocol's training conversations."""
    conversations = (
        conversation
        for sample in PROTOCOL_TRAIN_SAMPLES["qwen3_vl"]
        for conversation in sample_conversations("qwen3_vl", sample)
    )
    return build_trained_base(out_dir, conversations)
