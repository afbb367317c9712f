"""Tiny vision-language checkpoints built on the fly (no hub, no GPU), random or protocol-trained,
for tests that run real `hf:` models through the local backend. Needs only the package's own
dependencies (torch and transformers, imported when a builder runs, not at import).

Random models (`build_tiny_internvl3(dir)`, `build_tiny_qwen2_5_vl(dir)`,
`tiny_qwen3.build_tiny_qwen3_vl(dir)`, about a second): the
weights are noise, so replies are gibberish, but the processors, tokenizers, chat templates and
image tiling / resizing are the real ones, so token and tile counts match a real checkpoint:
- text decoders with 2 heads of 32 (a head size vLLM's CPU attention supports, so the same
  checkpoints also run on a real vLLM: `zoom_refine.testing.vllm_env`, tests/test_vllm*.py);
- InternVL3-hf: 448-px tiles, 14-px patches, 256 image-context tokens per tile;
- Qwen2.5-VL: `Qwen2VLImageProcessor` (14-px patches, 2x2 merge, temporal patch 2) resizing each
  image with `smart_resize` to sides that are multiples of 28 within `QWEN_MIN_PIXELS` ..
  `QWEN_MAX_PIXELS`; one `<|image_pad|>` token per 28x28 block of the resized image;
- Qwen3-VL: the same resize on a 32-px grid (16-px patches, 2x2 merge), its budget in
  `size={"shortest_edge", "longest_edge"}` (pixel counts); one token per 32x32 block.

Protocol-trained models (`trained_protocol_model(family)` returns a checkpoint folder): the same
architecture with sliding-window attention (`PROTOCOL_WINDOW` tokens) in the decoder layer,
fine-tuned on CPU in well under a minute to answer the Zoom-Refine conversation, as the real graph
sends it, with fixed replies (`PROTOCOL_REPLIES[family]`): the initial answer B with a box on the
localize prompt, answer A with confidence 0.9 after the crop, and, with `protocol_context(...,
zoom_again=True)`, a second box inside the crop. Each answers in its family's native frame:
InternVL3 in fractions (0-1) of the image it was shown (`LOCALIZE_BOX` = 0.6-0.7 of each side),
Qwen2.5-VL in pixels of its resized input (`QWEN_LOCALIZE_BOX`, run with `box_format="pixel"`),
Qwen3-VL in 0-1000 (`QWEN3_LOCALIZE_BOX`, `box_format="norm1000"`); `protocol_context` sets
each. The window makes each reply depend only on the end of the prompt before it, so the replies
are the same on any image. Qwen3-VL's decoder has no sliding window: it is trained on whole
conversations from a blind checkpoint (`tiny_qwen3`), its replies checked on several held-out
scenes::

    from zoom_refine import build_graph
    from zoom_refine.testing import protocol_context, protocol_inputs, trained_protocol_model

    path = trained_protocol_model("internvl3")
    context = protocol_context("internvl3", f"hf:{path}")
    result = build_graph().invoke(protocol_inputs("scene.png"), context=context)
    assert result["initial_answer"] == "B" and result["answer"] == "A"

Trained checkpoints are cached by recipe (`protocol_cache_key`: the source of the recipe
modules, the torch and transformers versions, the prompts) under `cache_root()`:
`$ZOOM_REFINE_TINY_MODEL_CACHE`, else `<repo>/.cache/tiny-models/` in a source checkout, else
`~/.cache/zoom-refine/tiny-models/`. `python -m zoom_refine.testing` trains (or finds) each and
prints its report.

This module gathers, under one import, what lives in one module per concern:
`tiny_parts` (tokenizer, decoder sizes, seeded construction, saving), `tiny_internvl`,
`tiny_qwen` and `tiny_qwen3` (the recipes), `protocol_families` (each family's replies and
settings), `protocol` (question, scenes, recorded requests), `protocol_training` (tokenizing,
reply windows, the training loop) and `model_cache` (cache folder, keys, building once).
"""

from __future__ import annotations

from zoom_refine.testing.model_cache import (
    CACHE_ENV,
    FAMILY_RECIPE_MODULES,
    RECIPE_MODULES,
    REPO_ROOT,
    SHARED_RECIPE_MODULES,
    STALE_TEMP_SECONDS,
    build_once,
    cache_root,
    family_entry,
    fingerprint,
    main,
    protocol_cache_key,
    recipe_digest,
    recipe_modules,
    trained_protocol_model,
)
from zoom_refine.testing.protocol import (
    PROTOCOL_ANSWER,
    PROTOCOL_CONFIDENCE,
    PROTOCOL_INITIAL_ANSWER,
    PROTOCOL_MAX_NEW_TOKENS,
    PROTOCOL_MAX_PATCHES,
    PROTOCOL_ZOOM_THRESHOLD,
    baseline_request,
    protocol_context,
    protocol_conversation,
    protocol_image,
    protocol_image_png,
    protocol_inputs,
    protocol_requests,
    sample_conversations,
    sample_requests,
)
from zoom_refine.testing.protocol_families import (
    COLOUR,
    FAMILIES,
    HELD_OUT_IMAGE,
    LOCALIZE_BOX,
    LOCALIZE_REPLY,
    PROTOCOL_BASELINE_REPLY,
    PROTOCOL_BOX_FORMAT,
    PROTOCOL_HELD_OUT,
    PROTOCOL_OPTIONS,
    PROTOCOL_QUESTION,
    PROTOCOL_REPLIES,
    PROTOCOL_SETTINGS,
    PROTOCOL_TRAIN_SAMPLES,
    QWEN3_LOCALIZE_BOX,
    QWEN3_LOCALIZE_REPLY,
    QWEN3_PROTOCOL_MAX_PIXELS,
    QWEN3_PROTOCOL_MIN_PIXELS,
    QWEN3_ZOOM_AGAIN_BOX,
    QWEN3_ZOOM_AGAIN_REPLY,
    QWEN_CROP_RESIZED,
    QWEN_LOCALIZE_BOX,
    QWEN_LOCALIZE_REPLY,
    QWEN_PROTOCOL_RESIZED,
    QWEN_ZOOM_AGAIN_BOX,
    QWEN_ZOOM_AGAIN_REPLY,
    REFINE_REPLY,
    TRAIN_IMAGES,
    ZOOM_AGAIN_BOX,
    ZOOM_AGAIN_REPLY,
    Question,
    Sample,
    TinyFamily,
)
from zoom_refine.testing.protocol_training import (
    PROTOCOL_WINDOW,
    REPORT_FILE,
    TRAIN_CHECK_EVERY,
    TRAIN_LR,
    TRAIN_MAX_STEPS,
    TRAIN_SEED,
    TRAIN_TARGET_LOSS,
    Batch,
    TrainingReport,
    assistant_labels,
    build_protocol_model,
    conversation_batches,
    encode,
    fit_reply_windows,
    freeze_vision,
    greedy_reply,
    load_for_training,
    protocol_max_patches,
    read_training_report,
    reply_windows,
    train_protocol_model,
    training_batches,
    training_windows,
    windows_loss,
    write_report,
)
from zoom_refine.testing.tiny_internvl import (
    IMAGE_SEQ_LENGTH,
    IMAGE_TOKENS,
    INTERNVL_CHAT_TEMPLATE,
    PATCH_PX,
    TILE_PX,
    build_tiny_internvl3,
    build_tiny_internvl3_model,
    build_tiny_internvl_processor,
    build_tiny_tokenizer,
)
from zoom_refine.testing.tiny_parts import (
    CHAT_TOKENS,
    TinyRecipe,
    build_byte_level_tokenizer,
    save_checkpoint,
    seeded_model,
    tiny_decoder,
    token_id,
)
from zoom_refine.testing.tiny_qwen import (
    QWEN_CHAT_TEMPLATE,
    QWEN_FACTOR,
    QWEN_MAX_PIXELS,
    QWEN_MERGE_SIZE,
    QWEN_MIN_PIXELS,
    QWEN_PATCH_PX,
    QWEN_SPECIAL_TOKENS,
    QWEN_TEMPORAL_PATCH_SIZE,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_5_vl_model,
    build_tiny_qwen2_5_vl_processor,
    build_tiny_qwen_tokenizer,
    qwen_resized_size,
    seeded_qwen_vl,
)

__all__ = [
    "CACHE_ENV",
    "CHAT_TOKENS",
    "COLOUR",
    "FAMILIES",
    "FAMILY_RECIPE_MODULES",
    "HELD_OUT_IMAGE",
    "IMAGE_SEQ_LENGTH",
    "IMAGE_TOKENS",
    "INTERNVL_CHAT_TEMPLATE",
    "LOCALIZE_BOX",
    "LOCALIZE_REPLY",
    "PATCH_PX",
    "PROTOCOL_ANSWER",
    "PROTOCOL_BASELINE_REPLY",
    "PROTOCOL_BOX_FORMAT",
    "PROTOCOL_CONFIDENCE",
    "PROTOCOL_HELD_OUT",
    "PROTOCOL_INITIAL_ANSWER",
    "PROTOCOL_MAX_NEW_TOKENS",
    "PROTOCOL_MAX_PATCHES",
    "PROTOCOL_OPTIONS",
    "PROTOCOL_QUESTION",
    "PROTOCOL_REPLIES",
    "PROTOCOL_SETTINGS",
    "PROTOCOL_TRAIN_SAMPLES",
    "PROTOCOL_WINDOW",
    "PROTOCOL_ZOOM_THRESHOLD",
    "QWEN3_LOCALIZE_BOX",
    "QWEN3_LOCALIZE_REPLY",
    "QWEN3_PROTOCOL_MAX_PIXELS",
    "QWEN3_PROTOCOL_MIN_PIXELS",
    "QWEN3_ZOOM_AGAIN_BOX",
    "QWEN3_ZOOM_AGAIN_REPLY",
    "QWEN_CHAT_TEMPLATE",
    "QWEN_CROP_RESIZED",
    "QWEN_FACTOR",
    "QWEN_LOCALIZE_BOX",
    "QWEN_LOCALIZE_REPLY",
    "QWEN_MAX_PIXELS",
    "QWEN_MERGE_SIZE",
    "QWEN_MIN_PIXELS",
    "QWEN_PATCH_PX",
    "QWEN_PROTOCOL_RESIZED",
    "QWEN_SPECIAL_TOKENS",
    "QWEN_TEMPORAL_PATCH_SIZE",
    "QWEN_ZOOM_AGAIN_BOX",
    "QWEN_ZOOM_AGAIN_REPLY",
    "RECIPE_MODULES",
    "REFINE_REPLY",
    "REPORT_FILE",
    "REPO_ROOT",
    "SHARED_RECIPE_MODULES",
    "STALE_TEMP_SECONDS",
    "TILE_PX",
    "TRAIN_CHECK_EVERY",
    "TRAIN_IMAGES",
    "TRAIN_LR",
    "TRAIN_MAX_STEPS",
    "TRAIN_SEED",
    "TRAIN_TARGET_LOSS",
    "ZOOM_AGAIN_BOX",
    "ZOOM_AGAIN_REPLY",
    "Batch",
    "Question",
    "Sample",
    "TinyFamily",
    "TinyRecipe",
    "TrainingReport",
    "assistant_labels",
    "baseline_request",
    "build_byte_level_tokenizer",
    "build_once",
    "build_protocol_model",
    "build_tiny_internvl3",
    "build_tiny_internvl3_model",
    "build_tiny_internvl_processor",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen2_5_vl_model",
    "build_tiny_qwen2_5_vl_processor",
    "build_tiny_qwen_tokenizer",
    "build_tiny_tokenizer",
    "cache_root",
    "conversation_batches",
    "encode",
    "family_entry",
    "fingerprint",
    "fit_reply_windows",
    "freeze_vision",
    "greedy_reply",
    "load_for_training",
    "main",
    "protocol_cache_key",
    "protocol_context",
    "protocol_conversation",
    "protocol_image",
    "protocol_image_png",
    "protocol_inputs",
    "protocol_max_patches",
    "protocol_requests",
    "qwen_resized_size",
    "read_training_report",
    "recipe_digest",
    "recipe_modules",
    "reply_windows",
    "sample_conversations",
    "sample_requests",
    "save_checkpoint",
    "seeded_model",
    "seeded_qwen_vl",
    "tiny_decoder",
    "token_id",
    "train_protocol_model",
    "trained_protocol_model",
    "training_batches",
    "training_windows",
    "windows_loss",
    "write_report",
]
