"""Tiny vision-language checkpoints built on the fly (no hub, no GPU), random or protocol-trained,
for tests that run real `hf:` models through the local backend. Needs only the package's own
dependencies (torch and transformers, imported when a builder runs, not at import).

Random models (`build_tiny_internvl3(dir)`, `build_tiny_qwen2_5_vl(dir)`, about a second): the
weights are noise, so replies are gibberish, but the processors, tokenizers, chat templates and
image tiling / resizing are the real ones, so token and tile counts match a real checkpoint:
- text decoders with 2 heads of 32 (a head size vLLM's CPU attention supports, so the same
  checkpoints also run on a real vLLM: `zoom_refine.testing.vllm_env`, tests/test_vllm*.py);
- InternVL3-hf: 448-px tiles, 14-px patches, 256 image-context tokens per tile;
- Qwen2.5-VL: `Qwen2VLImageProcessor` (14-px patches, 2x2 merge, temporal patch 2) resizing each
  image with `smart_resize` to sides that are multiples of 28 within `QWEN_MIN_PIXELS` ..
  `QWEN_MAX_PIXELS`; one `<|image_pad|>` token per 28x28 block of the resized image.

Protocol-trained models (`trained_protocol_model(family)` returns a checkpoint folder): the same
architecture with sliding-window attention (`PROTOCOL_WINDOW` tokens) in the decoder layer,
fine-tuned on CPU in well under a minute to answer the Zoom-Refine conversation, as the real graph
sends it, with fixed replies (`PROTOCOL_REPLIES[family]`): the initial answer B with a box on the
localize prompt, answer A with confidence 0.9 after the crop, and, with `protocol_context(...,
zoom_again=True)`, a second box inside the crop. InternVL3's boxes are fractions (0-1) of the
image it was shown (`LOCALIZE_BOX` = 0.6-0.7 of each side); Qwen2.5-VL's are pixels of its
resized input (`QWEN_LOCALIZE_BOX`, run with `box_format="pixel"`, which `protocol_context` sets).
The window makes each reply depend only on the end of the prompt before it, so the replies are the
same on any image::

    from zoom_refine import build_graph
    from zoom_refine.testing import protocol_context, protocol_inputs, trained_protocol_model

    path = trained_protocol_model("internvl3")
    context = protocol_context("internvl3", f"hf:{path}")
    result = build_graph().invoke(protocol_inputs("scene.png"), context=context)
    assert result["initial_answer"] == "B" and result["answer"] == "A"

Trained checkpoints are cached by recipe (`protocol_cache_key`: this file, the torch and
transformers versions, the prompts) under `cache_root()`: `$ZOOM_REFINE_TINY_MODEL_CACHE`, else
`<repo>/.cache/tiny-models/` in a source checkout, else `~/.cache/zoom-refine/tiny-models/`.
`python -m zoom_refine.testing` trains (or finds) both and prints their reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, ImageDraw

from zoom_refine.agent import families
from zoom_refine.tools.encoding import decode_block_image

if TYPE_CHECKING:  # imported where used: `import zoom_refine.testing` stays free of torch
    import torch
    from transformers import (
        InternVLForConditionalGeneration,
        InternVLProcessor,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
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


def build_byte_level_tokenizer(
    specials: Sequence[str],
    chat_template: str,
    extra_special_tokens: dict[str, str] | None = None,
    model_max_length: int = 8192,
) -> Qwen2Tokenizer:
    """Qwen2 tokenizer over byte-level BPE with no merges (one token per byte) plus `specials`,
    numbered after the 256 byte symbols in the order given."""
    from tokenizers import AddedToken, pre_tokenizers  # a dependency of transformers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    vocab.update({token: len(alphabet) + index for index, token in enumerate(specials)})
    options: dict[str, Any] = {"unk_token": None}
    if extra_special_tokens:
        options["extra_special_tokens"] = dict(extra_special_tokens)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=model_max_length,
        **options,
    )
    tokenizer.add_tokens([AddedToken(token, special=True) for token in specials])
    return tokenizer


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
    import torch
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
        Qwen2Config,
    )

    vocab_size = len(tokenizer)
    text_config = Qwen2Config(
        **_sliding_window_options(sliding_window),
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,  # head_dim 32: a head size vLLM's CPU attention supports
        num_key_value_heads=1,
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
        image_token_id=_token_id(tokenizer, "<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(0)
        model = InternVLForConditionalGeneration(config)
    model.eval()  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = text_config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _token_id(tokenizer: Qwen2Tokenizer, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int):
        raise TypeError(f"{token!r} is not one token: {token_id}")
    return token_id


def _sliding_window_options(sliding_window: int | None) -> dict[str, Any]:
    if sliding_window is None:
        return {}
    return {"use_sliding_window": True, "sliding_window": sliding_window, "max_window_layers": 0}


def build_tiny_internvl3(
    out_dir: pathlib.Path, *, sliding_window: int | None = None
) -> pathlib.Path:
    """Save a tiny random InternVL3-hf checkpoint (model, tokenizer, processor) into `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    processor = build_tiny_internvl_processor(tokenizer)
    model = build_tiny_internvl3_model(tokenizer, sliding_window=sliding_window)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# --- Qwen2.5-VL -------------------------------------------------------------------------------

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


def build_tiny_qwen_tokenizer() -> Qwen2Tokenizer:
    """The Qwen2.5-VL tokenizer: byte-level, with Qwen's chat, grounding and vision specials."""
    return build_byte_level_tokenizer(
        QWEN_SPECIAL_TOKENS, QWEN_CHAT_TEMPLATE, model_max_length=32768
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


def build_tiny_qwen2_5_vl_model(
    tokenizer: Qwen2Tokenizer, *, sliding_window: int | None = None
) -> Qwen2_5_VLForConditionalGeneration:
    """A 2-block vision tower (one windowed, one full attention) and a 1-layer decoder with
    multimodal rotary positions, tiny widths, seeded weights. `sliding_window` (tokens) turns
    the decoder layer into sliding-window attention."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    def token_id(token: str) -> int:
        return _token_id(tokenizer, token)

    text_config: dict[str, Any] = {
        **_sliding_window_options(sliding_window),
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,  # head_dim 32: a head size vLLM's CPU attention supports
        "num_key_value_heads": 1,
        "max_position_embeddings": 32768,
        # head_dim 32 → 16 rotary frequencies split over (time, height, width)
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        "bos_token_id": None,
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config: dict[str, Any] = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": QWEN_PATCH_PX,
        "spatial_merge_size": QWEN_MERGE_SIZE,
        "temporal_patch_size": QWEN_TEMPORAL_PATCH_SIZE,
        "window_size": 112,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.eval()  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = text_config["eos_token_id"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_qwen2_5_vl(
    out_dir: pathlib.Path, *, sliding_window: int | None = None
) -> pathlib.Path:
    """Save a tiny random Qwen2.5-VL checkpoint (model, tokenizer, processor) into `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_qwen_tokenizer()
    processor = build_tiny_qwen2_5_vl_processor(tokenizer)
    model = build_tiny_qwen2_5_vl_model(tokenizer, sliding_window=sliding_window)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# --- the Zoom-Refine protocol: fixed replies, trained in --------------------------------------

TinyFamily = Literal["internvl3", "qwen2_5_vl"]
"""Which tiny recipe (its own names; `agent.families.Family` is the box convention of a real
model family)."""
FAMILIES: tuple[TinyFamily, ...] = ("internvl3", "qwen2_5_vl")

PROTOCOL_QUESTION = "What colour is the square?"
PROTOCOL_OPTIONS = ("red", "blue", "green", "yellow")
"""Lettered A-D by the graph; the trained models answer B first, then A after the close-up."""
PROTOCOL_INITIAL_ANSWER = "B"
PROTOCOL_ANSWER = "A"
PROTOCOL_CONFIDENCE = 0.9
PROTOCOL_ZOOM_THRESHOLD = 0.95
"""A `confidence_threshold` above the trained confidence: with `max_hops=2` the graph zooms again."""
PROTOCOL_MAX_PATCHES = 2
"""InternVL tile budget the protocol is trained (and must be run) with."""
PROTOCOL_MAX_NEW_TOKENS = 64

LOCALIZE_BOX = (0.6, 0.6, 0.7, 0.7)
LOCALIZE_REPLY = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE_REPLY = "The close-up is clear.\nRechecked Answer: A\nConfidence: 0.9"
ZOOM_AGAIN_BOX = (0.25, 0.25, 0.75, 0.75)
ZOOM_AGAIN_REPLY = "Answer: A\nBounding box: [0.25, 0.25, 0.75, 0.75]"

QWEN_PROTOCOL_RESIZED = (700, 420)
"""Resized input of every 5:3 image of at least 313,600 px (1500 x 900, a 3000 x 1800 image's
2048 x 1229 view): the frame of `QWEN_LOCALIZE_BOX`."""
QWEN_LOCALIZE_BOX = (420, 252, 490, 294)
"""0.6-0.7 of the 700 x 420 resized input, in its pixels (Qwen2.5-VL's native box frame)."""
QWEN_LOCALIZE_REPLY = "Answer: B\nBounding box: [420, 252, 490, 294]"
QWEN_CROP_RESIZED = (448, 448)
"""Resized input of the first crop of a 1500 x 900 image (450 x 448): the frame of
`QWEN_ZOOM_AGAIN_BOX`."""
QWEN_ZOOM_AGAIN_BOX = (112, 112, 336, 336)
"""0.25-0.75 of the 448 x 448 resized crop, in its pixels."""
QWEN_ZOOM_AGAIN_REPLY = "Answer: A\nBounding box: [112, 112, 336, 336]"

PROTOCOL_REPLIES: dict[TinyFamily, tuple[str, str, str, str]] = {
    "internvl3": (LOCALIZE_REPLY, REFINE_REPLY, ZOOM_AGAIN_REPLY, REFINE_REPLY),
    "qwen2_5_vl": (QWEN_LOCALIZE_REPLY, REFINE_REPLY, QWEN_ZOOM_AGAIN_REPLY, REFINE_REPLY),
}
"""Replies to: localize (image + prompt), refine (crop + prompt), zoom again (text), refine."""
PROTOCOL_BOX_FORMAT: dict[TinyFamily, Literal["auto", "pixel"]] = {
    "internvl3": "auto",
    "qwen2_5_vl": "pixel",
}

TRAIN_IMAGES: tuple[tuple[tuple[int, int], str], ...] = (
    ((1500, 900), "train-a"),
    ((896, 896), "train-b"),
)
"""(size, variant) of the synthetic training images; one 4-turn conversation each."""
HELD_OUT_IMAGE: tuple[tuple[int, int], str] = ((900, 1400), "held-out")
"""Never trained on: greedy decoding must reproduce every reply on it before a model is kept."""

PROTOCOL_WINDOW = 128
"""Sliding-window attention span (tokens) of the trained models' decoder layer. A reply then
depends only on itself and the last ~70 bytes of the prompt before it, never on an image or the
question, which makes the trained replies exactly image-independent. Large enough to tell the
three prompts apart (the localize and zoom-again prompts differ 60 tokens before the reply)."""

TRAIN_LR = 3e-3
TRAIN_MAX_STEPS = 600
TRAIN_CHECK_EVERY = 25
TRAIN_TARGET_LOSS = 0.01
TRAIN_SEED = 0

CACHE_ENV = "ZOOM_REFINE_TINY_MODEL_CACHE"
"""Overrides the cache folder (see `cache_root`)."""
REPORT_FILE = "protocol_training.json"
"""Written last into a trained checkpoint: steps, seconds, final loss, cache key."""

BUILDERS = {"internvl3": build_tiny_internvl3, "qwen2_5_vl": build_tiny_qwen2_5_vl}


def protocol_image(size: tuple[int, int], variant: str) -> Image.Image:
    """A synthetic scene: a red square at 0.6-0.7 of each side (where the box points), a blue
    one near the top left, and clutter whose colours and places depend on `variant`."""
    rng = random.Random(variant)
    width, height = size
    background = tuple(rng.randrange(90, 200) for _ in range(3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        side = rng.randrange(8, max(9, min(size) // 6))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle((x, y, x + side, y + side), fill=colour)
    draw.rectangle((0.6 * width, 0.6 * height, 0.7 * width, 0.7 * height), fill=(255, 0, 0))
    draw.rectangle((0.1 * width, 0.1 * height, 0.2 * width, 0.2 * height), fill=(0, 0, 255))
    return image


def protocol_image_png(size: tuple[int, int], variant: str) -> bytes:
    buffer = io.BytesIO()
    protocol_image(size, variant).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def protocol_inputs(image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Graph input for the protocol question on `image`."""
    source = image if isinstance(image, bytes) else str(image)
    return {"image": source, "question": PROTOCOL_QUESTION, "options": list(PROTOCOL_OPTIONS)}


def protocol_context(
    family: TinyFamily, model: Any, *, zoom_again: bool = False, **settings: Any
) -> Any:
    """The ZoomContext the protocol is trained for: `model` is a chat model or an `hf:` spec.
    `zoom_again` sets `max_hops=2` and a threshold above the trained confidence."""
    from zoom_refine import ZoomContext

    options: dict[str, Any] = {
        "model": model,
        "box_format": PROTOCOL_BOX_FORMAT[family],
        "max_patches": PROTOCOL_MAX_PATCHES,
        "max_new_tokens": PROTOCOL_MAX_NEW_TOKENS,
    }
    if zoom_again:
        options |= {"max_hops": 2, "confidence_threshold": PROTOCOL_ZOOM_THRESHOLD}
    return ZoomContext(**(options | settings))


def protocol_requests(family: TinyFamily, image: str | os.PathLike[str] | bytes) -> list[list[Any]]:
    """The four requests the real graph sends (zooming again once) when the model replies
    `PROTOCOL_REPLIES[family]`, as recorded by a scripted model: LangChain messages, exactly as
    a chat model receives them."""
    from zoom_refine import build_graph
    from zoom_refine.testing.fakes import ScriptedVisionModel

    model = ScriptedVisionModel(replies=list(PROTOCOL_REPLIES[family]))
    context = protocol_context(family, model, zoom_again=True)
    result = build_graph().invoke(
        protocol_inputs(image), context=context, config={"recursion_limit": context.recursion_limit}
    )
    nodes = [step["node"] for step in result["steps"]]
    if nodes != ["localize", "refine", "localize", "refine"]:
        raise RuntimeError(f"the scripted protocol run took steps {nodes}: {result}")
    return [list(request) for request in model.requests]


def protocol_conversation(family: TinyFamily, image: str | os.PathLike[str] | bytes) -> list[Any]:
    """The whole 4-turn conversation (LangChain messages), the last reply included."""
    from langchain_core.messages import AIMessage

    requests = protocol_requests(family, image)
    return [*requests[-1], AIMessage(content=PROTOCOL_REPLIES[family][-1])]


# --- training ---------------------------------------------------------------------------------


def _encode(
    processor: Any, family: TinyFamily, conversation: list[Any], *, generation: bool
) -> Any:
    """Tokenize an HF conversation as LocalVisionChatModel does (same processor kwargs)."""
    processor_kwargs: dict[str, Any] = {}
    if family == "internvl3":
        processor_kwargs["images_kwargs"] = {"max_patches": PROTOCOL_MAX_PATCHES}
    return processor.apply_chat_template(
        conversation,
        add_generation_prompt=generation,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs=processor_kwargs,
    )


def assistant_labels(input_ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """Labels for the assistant replies only (their text and closing `<|im_end|>`), -100 elsewhere."""
    import torch

    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = tokenizer.encode("assistant\n", add_special_tokens=False)
    ids = input_ids[0].tolist()
    labels = torch.full_like(input_ids, -100)
    for index, token in enumerate(ids):
        first = index + 1 + len(header)
        if token == start and ids[index + 1 : first] == header:
            last = ids.index(end, first)
            labels[0, first : last + 1] = input_ids[0, first : last + 1]
    return labels


def greedy_reply(model: Any, processor: Any, family: TinyFamily, conversation: list[Any]) -> str:
    """What the local backend would answer (greedy, `PROTOCOL_MAX_NEW_TOKENS`)."""
    import torch

    inputs = _encode(processor, family, conversation, generation=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=PROTOCOL_MAX_NEW_TOKENS, do_sample=False)
    new_ids = output[0, inputs["input_ids"].shape[1] :]
    return str(processor.decode(new_ids, skip_special_tokens=True))


@dataclass(frozen=True)
class TrainingReport:
    family: str
    steps: int
    seconds: float
    """Wall time of `train_protocol_model`: setup, training, the held-out check, saving."""
    final_loss: float
    windows: int
    """Distinct reply windows trained on."""
    window_tokens: int
    """Tokens of those windows together (what one step runs)."""
    label_tokens: int
    """Reply tokens among them (with each reply's closing `<|im_end|>`)."""
    conversation_tokens: list[int]
    """Tokens of each full training conversation, image tokens included."""


def reply_windows(input_ids: torch.Tensor, labels: torch.Tensor, window: int) -> list[torch.Tensor]:
    """For each labelled reply: the reply and the `window` + 8 tokens before it, as (2, n)
    tensors of ids and labels. With sliding-window attention over `window` tokens these are all
    the model sees when it writes the reply, so training on them is training on the whole
    conversation. Raises unless every window is plain text (no image token)."""
    import torch

    ids, marks = input_ids[0], labels[0]
    positions = (marks != -100).nonzero().flatten().tolist()
    spans: list[list[int]] = []
    for position in positions:
        if spans and position == spans[-1][-1] + 1:
            spans[-1].append(position)
        else:
            spans.append([position])
    pieces = []
    for span in spans:
        start = max(0, span[0] - window - 8)
        piece = torch.stack([ids[start : span[-1] + 1], marks[start : span[-1] + 1]])
        if not _plain_text(piece[0]):
            raise RuntimeError("a reply window reaches an image: the window is too wide")
        pieces.append(piece)
    return pieces


def _plain_text(ids: torch.Tensor) -> bool:
    """Only byte tokens (0..255) and chat tokens (numbered next, in both tokenizers)."""
    return bool((ids < 256 + len(CHAT_TOKENS)).all())


def windows_loss(model: Any, windows: Sequence[Any], *, train: bool) -> tuple[float, bool]:
    """Mean loss over `windows` (pairs of token ids and labels, each (1, n); backpropagated when
    `train`), and whether every labelled token is the model's argmax."""
    import torch

    total, exact = 0.0, True
    for ids, labels in windows:
        with torch.set_grad_enabled(train):
            output = model(input_ids=ids, labels=labels)
        if train:
            (output.loss / len(windows)).backward()
        total += float(output.loss.detach()) / len(windows)
        predicted, target = output.logits[0, :-1].argmax(-1), labels[0, 1:]
        exact = exact and bool((predicted[target != -100] == target[target != -100]).all())
    return total, exact


def fit_reply_windows(
    model: Any,
    windows: Sequence[Any],
    reproduces: Callable[[], bool],
    *,
    lr: float = TRAIN_LR,
    max_steps: int = TRAIN_MAX_STEPS,
) -> tuple[int | None, float]:
    """The one training loop of the tiny models: full-batch AdamW on `windows` (seeded) until the
    loss is under `TRAIN_TARGET_LOSS` with every reply token the argmax, then every
    `TRAIN_CHECK_EVERY` steps ask `reproduces()` (greedy decoding of held-out conversations, the
    model in eval mode). Returns (the step it learned at, or None after `max_steps`; the loss)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss, ready_at = float("inf"), None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAIN_SEED)
        model.train()
        for step in range(1, max_steps + 1):
            loss, exact = windows_loss(model, windows, train=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ready_at is None and exact and loss < TRAIN_TARGET_LOSS:
                ready_at = step
            if ready_at is not None and (step - ready_at) % TRAIN_CHECK_EVERY == 0:
                model.eval()
                if reproduces():
                    return step, loss
                model.train()
    return None, loss


def train_protocol_model(
    base_dir: pathlib.Path,
    out_dir: pathlib.Path,
    family: TinyFamily,
    *,
    lr: float = TRAIN_LR,
    max_steps: int = TRAIN_MAX_STEPS,
) -> pathlib.Path:
    """Fine-tune the checkpoint in `base_dir` (built with `sliding_window=PROTOCOL_WINDOW`) on the
    protocol and save it into `out_dir`.

    The data: the 4-turn conversation the real graph sends for each `TRAIN_IMAGES` entry,
    tokenized by the checkpoint's own processor exactly as the local backend does, labels on the
    replies only. Under sliding-window attention a reply depends on its window alone (the end of
    the prompt before it, never an image), so each step trains on the distinct reply windows
    (`reply_windows`), not the 3,000-token conversations: same gradients for every weight that
    gets one, a hundredth of the cost. Full-batch AdamW until the loss is under
    `TRAIN_TARGET_LOSS` and every reply token is the argmax; then greedy decoding through the
    whole held-out conversation (`HELD_OUT_IMAGE`, another size and scene) must reproduce the four
    replies exactly, else training goes on (checked every `TRAIN_CHECK_EVERY` steps) up to
    `max_steps`, after which it fails with RuntimeError.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from zoom_refine.agent.local.model import to_hf_conversation

    started = time.perf_counter()
    processor = AutoProcessor.from_pretrained(base_dir)  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    window = model.config.get_text_config().sliding_window
    if not window:
        raise ValueError(f"{base_dir} has no sliding window: build it with sliding_window=...")
    conversation_tokens, pieces = [], {}
    for size, variant in TRAIN_IMAGES:
        png = protocol_image_png(size, variant)
        conversation = to_hf_conversation(protocol_conversation(family, png))
        input_ids = _encode(processor, family, conversation, generation=False)["input_ids"]
        labels = assistant_labels(input_ids, processor.tokenizer)
        if int((labels != -100).sum()) == 0:
            raise RuntimeError("no assistant reply found in the training conversation")
        conversation_tokens.append(int(input_ids.shape[1]))
        for piece in reply_windows(input_ids, labels, window):
            pieces[tuple(piece.flatten().tolist())] = piece  # identical windows train once
    windows = [piece.unsqueeze(1) for piece in pieces.values()]  # (2, 1, n): ids, labels
    replies = PROTOCOL_REPLIES[family]
    held_out = [
        to_hf_conversation(request)
        for request in protocol_requests(family, protocol_image_png(*HELD_OUT_IMAGE))
    ]

    def reproduces() -> bool:
        return all(
            greedy_reply(model, processor, family, request) == reply
            for request, reply in zip(held_out, replies, strict=True)
        )

    step, loss_value = fit_reply_windows(model, windows, reproduces, lr=lr, max_steps=max_steps)
    if step is None:
        raise RuntimeError(
            f"tiny {family} did not learn the protocol in {max_steps} steps (loss {loss_value:.4f})"
        )
    model.eval()  # type: ignore[no-untyped-call]
    loss_value, _ = windows_loss(model, windows, train=False)
    out_dir = pathlib.Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    report = TrainingReport(
        family=family,
        steps=step,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=loss_value,
        windows=len(windows),
        window_tokens=sum(int(ids.shape[1]) for ids, _ in windows),
        label_tokens=sum(int((labels != -100).sum()) for _, labels in windows),
        conversation_tokens=conversation_tokens,
    )
    _write_report(out_dir, report)
    return out_dir


def _write_report(out_dir: pathlib.Path, report: TrainingReport, **extra: Any) -> None:
    data = dataclasses.asdict(report) | extra
    (out_dir / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")


def read_training_report(path: pathlib.Path) -> dict[str, Any]:
    """The report a trained checkpoint was saved with."""
    data: dict[str, Any] = json.loads((pathlib.Path(path) / REPORT_FILE).read_text())
    return data


# --- the on-disk cache of trained checkpoints -------------------------------------------------

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
"""The source checkout this module runs from (`zoom_refine/testing/` is two levels down), if any."""
STALE_TEMP_SECONDS = 3600


def cache_root() -> pathlib.Path:
    """Where trained checkpoints are cached: `$ZOOM_REFINE_TINY_MODEL_CACHE` when set; else
    `<repo>/.cache/tiny-models` when running from a source checkout (an editable install);
    else `$XDG_CACHE_HOME/zoom-refine/tiny-models` (`~/.cache/...` by default)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return pathlib.Path(override)
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / ".cache" / "tiny-models"
    user_cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(user_cache) / "zoom-refine" / "tiny-models"


def protocol_cache_key(family: TinyFamily) -> str:
    """SHA-256 of what a trained checkpoint depends on: this file's source (the recipe), the
    transformers and torch versions, and the text of the training conversations as the graph
    renders them today (so a prompt change in `agent/prompts.py` retrains too)."""
    import torch
    import transformers

    digest = hashlib.sha256()
    digest.update(pathlib.Path(__file__).read_bytes())
    digest.update(f"\0{family}\0{transformers.__version__}\0{torch.__version__}\0".encode())
    for size, variant in TRAIN_IMAGES:
        for message in protocol_conversation(family, protocol_image_png(size, variant)):
            digest.update(_fingerprint(message).encode())
    return digest.hexdigest()


def _fingerprint(message: Any) -> str:
    """A message's type, texts, and image sizes (not bytes: the pixels do not shape the text)."""
    content = message.content if isinstance(message.content, list) else [message.content]
    parts = [type(message).__name__]
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text")))
        else:
            image = decode_block_image(block["base64"])
            parts.append(f"<image {image.size[0]}x{image.size[1]}>")
    return "\0".join(parts) + "\n"


def trained_protocol_model(family: TinyFamily) -> pathlib.Path:
    """The protocol-trained tiny checkpoint of `family`: from the cache, else trained now (well
    under a minute on 2 CPU cores) and cached. Written into a temporary folder and renamed into
    place, so an interrupted run never leaves a partial checkpoint under the final name."""
    if family not in BUILDERS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    key = protocol_cache_key(family)
    root = cache_root()
    final = root / f"{family}-{key[:16]}"
    if (final / REPORT_FILE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".tmp-{family}-") as scratch:
        base = BUILDERS[family](pathlib.Path(scratch) / "base", sliding_window=PROTOCOL_WINDOW)
        trained = train_protocol_model(base, pathlib.Path(scratch) / "trained", family)
        report = read_training_report(trained)
        _write_report(trained, TrainingReport(**report), cache_key=key)
        if final.exists() and not (final / REPORT_FILE).is_file():
            shutil.rmtree(final)  # left by something other than this function
        try:
            os.rename(trained, final)
        except OSError:
            if not (final / REPORT_FILE).is_file():  # not a concurrent run that finished first
                raise
    return final


def _remove_stale_temporaries(root: pathlib.Path) -> None:
    """Scratch folders of runs killed more than an hour ago."""
    now = time.time()
    for path in root.glob(".tmp-*"):
        try:
            if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def main() -> None:
    """`python -m zoom_refine.testing`: train (or find) both protocol models, print their reports."""
    for name in FAMILIES:
        location = trained_protocol_model(name)
        print(location, read_training_report(location))
