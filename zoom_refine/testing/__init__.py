"""Test helpers for code built on Zoom-Refine: the fakes and tiny models this project's tests use.

- `fakes`: scripted chat models (`ScriptedVisionModel`, `RuleVisionModel`,
  `ScriptedToolCallingModel`, and `ReplyFake` for replies computed from the request) and
  `images_in` / `texts_in` to read what a request carried. Pass one as `ZoomContext(model=...)`
  to run the real graph offline with replies you choose.
- `tiny_models`: tiny InternVL3 / Qwen2.5-VL / Qwen3-VL checkpoints built on CPU, random
  (`build_tiny_internvl3`, `build_tiny_qwen2_5_vl`) or trained to follow the Zoom-Refine protocol
  (`trained_protocol_model(family)`, cached on disk), to exercise the local `hf:` backend for
  real. One import for the recipes (`tiny_internvl`, `tiny_qwen`, `tiny_qwen3`, their shared
  `tiny_parts`), each family's replies (`protocol_families`), the protocol (`protocol`), its
  training (`protocol_training`) and the cache (`model_cache`); `tiny_qwen3` (the random
  Qwen3-VL builder), `tiny_qwen3_moe` (a random Qwen3-VL-MoE, experts in the released layout),
  `tiny_internvl35` (a random InternVL3.5) and `tool_models` (a Qwen2.5-VL and
  a Qwen3-VL trained to call the zoom tool, `trained_tool_model(family)`) are imported by name.
- `vllm_env`: a separate venv with vLLM's CPU release, built once and cached by recipe
  (`ensure_vllm_env`), to serve those checkpoints with a real vLLM (not imported here).

Importing this package does not import torch or transformers; the tiny-model builders do, when
called. Box numbers in scripted replies are `[x1, y1, x2, y2]`, by default fractions (0-1) of the
image the model was shown (see `ZoomContext.box_format`)::

    from zoom_refine import ZoomContext, build_graph
    from zoom_refine.testing import ScriptedVisionModel

    model = ScriptedVisionModel(replies=[
        "Answer: B\\nBounding box: [0.6, 0.6, 0.7, 0.7]",
        "Rechecked Answer: A\\nConfidence: 0.9",
    ])
    result = build_graph().invoke(
        {"image": "scene.png", "question": "Which colour?", "options": ["red", "blue"]},
        context=ZoomContext(model=model),
    )
    assert result["answer"] == "A"
"""

from __future__ import annotations

from zoom_refine.testing.fakes import (
    ReplyFake,
    RuleVisionModel,
    ScriptedToolCallingModel,
    ScriptedVisionModel,
    images_in,
    texts_in,
)
from zoom_refine.testing.tiny_models import (
    FAMILIES,
    PROTOCOL_ANSWER,
    PROTOCOL_INITIAL_ANSWER,
    PROTOCOL_OPTIONS,
    PROTOCOL_QUESTION,
    PROTOCOL_REPLIES,
    TinyFamily,
    build_tiny_internvl3,
    build_tiny_qwen2_5_vl,
    cache_root,
    protocol_context,
    protocol_image,
    protocol_image_png,
    protocol_inputs,
    trained_protocol_model,
)

__all__ = [
    "FAMILIES",
    "PROTOCOL_ANSWER",
    "PROTOCOL_INITIAL_ANSWER",
    "PROTOCOL_OPTIONS",
    "PROTOCOL_QUESTION",
    "PROTOCOL_REPLIES",
    "ReplyFake",
    "RuleVisionModel",
    "ScriptedToolCallingModel",
    "ScriptedVisionModel",
    "TinyFamily",
    "build_tiny_internvl3",
    "build_tiny_qwen2_5_vl",
    "cache_root",
    "images_in",
    "protocol_context",
    "protocol_image",
    "protocol_image_png",
    "protocol_inputs",
    "texts_in",
    "trained_protocol_model",
]
