"""The local transformers chat model against a tiny random InternVL3-hf built at test time.

Counts are checked against InternVL's tiling rule computed here independently: a W x H image
gets the (cols, rows) grid with cols * rows <= max_patches whose aspect ratio is closest to W / H
(ties go to the larger grid while the image area exceeds half the grid's area), plus one thumbnail
tile when the grid has more than one tile; every tile costs 256 `<IMG_CONTEXT>` tokens.
"""

from __future__ import annotations

import base64
import io
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image, ImageDraw

from zoom_refine.agent.local.model import (
    LocalVisionChatModel,
    load_local_backend,
    to_hf_conversation,
)

TILE = 448
IMAGE_SEQ_LENGTH = 256
QUESTION = "What is in the red box?"


def internvl_tiles(width: int, height: int, max_patches: int, min_patches: int = 1) -> int:
    """Tiles InternVL encodes for one image: the best grid plus a thumbnail if the grid is > 1."""
    grids = sorted(
        (
            (cols, rows)
            for cols in range(1, max_patches + 1)
            for rows in range(1, max_patches + 1)
            if min_patches <= cols * rows <= max_patches
        ),
        key=lambda grid: grid[0] * grid[1],
    )
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(width / height - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * TILE * TILE * cols * rows:
            best = (cols, rows)
    count = best[0] * best[1]
    return count + 1 if count > 1 else count


def make_image(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 3, height // 3, width // 2, height // 2), outline=(255, 0, 0), width=9)
    return image


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def uhd_base64() -> str:
    return png_base64(make_image(3840, 2160))


def v1_block(data: str) -> dict[str, Any]:
    return {"type": "image", "base64": data, "mime_type": "image/png"}


def v03_block(data: str) -> dict[str, Any]:
    return {"type": "image", "source_type": "base64", "data": data, "mime_type": "image/png"}


def openai_block(data: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def ask(image_block: dict[str, Any]) -> HumanMessage:
    return HumanMessage(content=[image_block, {"type": "text", "text": QUESTION}])


def text_prompt_tokens(path: pathlib.Path, conversation: list[dict[str, Any]]) -> int:
    """Tokens of the rendered prompt before the processor expands each image placeholder."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


# --- no model needed --------------------------------------------------------------------------


def test_tiling_rule_matches_known_grids() -> None:
    assert internvl_tiles(3840, 2160, 12) == 9  # 4 x 2 grid + thumbnail
    assert internvl_tiles(3840, 2160, 6) == 3  # 2 x 1 grid + thumbnail
    assert internvl_tiles(448, 448, 12) == 1  # one tile, no thumbnail


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": "http://example.com/a.png"},
        {"type": "image", "url": "https://example.com/a.png"},
        {"type": "image", "source_type": "url", "url": "https://example.com/a.png"},
        {"type": "image_url", "image_url": {"url": "/tmp/a.png"}},
        {"type": "image", "file_id": "file-123"},
        {"type": "image", "base64": "not base64!", "mime_type": "image/png"},
        {
            "type": "image",
            "base64": base64.b64encode(b"not an image").decode(),
            "mime_type": "image/png",
        },
    ],
)
def test_unusable_image_blocks_raise_before_loading(block: dict[str, Any]) -> None:
    model = LocalVisionChatModel(model_path="/nonexistent/never-loaded")
    with pytest.raises(ValueError, match="image"):
        model.invoke([ask(block)])


def test_messages_map_to_hf_roles() -> None:
    data = png_base64(make_image(64, 32))
    conversation = to_hf_conversation(
        [
            SystemMessage(content="Be brief."),
            ask(v1_block(data)),
            AIMessage(content=[{"type": "text", "text": "A cat."}, {"type": "reasoning"}]),
            ToolMessage(content=[v03_block(data), "crop"], tool_call_id="call-1"),
        ]
    )
    assert [turn["role"] for turn in conversation] == ["system", "user", "assistant", "user"]
    assert conversation[2]["content"] == [{"type": "text", "text": "A cat."}]
    tool_turn = conversation[3]["content"]
    assert tool_turn[0]["type"] == "image" and tool_turn[0]["image"].size == (64, 32)
    assert tool_turn[1] == {"type": "text", "text": "crop"}


def test_flash_attention_without_package_is_a_clear_error() -> None:
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="flash"):
            load_local_backend("/nonexistent", attn_implementation="flash_attention_2")
    else:
        pytest.skip("flash_attn is installed here")


def test_unknown_attention_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="attn_implementation"):
        LocalVisionChatModel(model_path="x", attn_implementation="magic")


# --- the tiny real model ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("max_patches", [6, 12])
def test_uhd_image_counts_real_tiles_and_tokens(
    tiny_internvl_path: pathlib.Path, uhd_base64: str, max_patches: int
) -> None:
    model = LocalVisionChatModel(
        reuse_prefix=False,
        model_path=str(tiny_internvl_path),
        max_new_tokens=8,
        max_patches=max_patches,
    )
    reply = model.invoke([ask(v1_block(uhd_base64))])
    meta = reply.response_metadata

    tiles = internvl_tiles(3840, 2160, max_patches)
    assert tiles > 1
    assert meta["vision_tiles"] == tiles
    placeholder_conv = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    # One `<IMG_CONTEXT>` placeholder becomes `<img>` + tiles * 256 context tokens + `</img>`.
    expected_prompt = text_prompt_tokens(tiny_internvl_path, placeholder_conv)
    expected_prompt += tiles * IMAGE_SEQ_LENGTH + 1
    assert meta["prompt_tokens"] == expected_prompt
    assert isinstance(reply.content, str)
    assert 1 <= meta["generated_tokens"] <= 8
    assert meta["finish_reason"] in ("stop", "length")
    assert meta["model_name"] == str(tiny_internvl_path)
    assert reply.usage_metadata == {
        "input_tokens": meta["prompt_tokens"],
        "output_tokens": meta["generated_tokens"],
        "total_tokens": meta["prompt_tokens"] + meta["generated_tokens"],
        "input_token_details": {"cache_read": meta["cached_tokens"]},
    }


@pytest.mark.slow
def test_image_block_shapes_give_identical_prompts(
    tiny_internvl_path: pathlib.Path, uhd_base64: str
) -> None:
    model = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), reuse_prefix=False, max_new_tokens=2
    )
    data_url = f"data:image/png;base64,{uhd_base64}"
    blocks = [
        v1_block(uhd_base64),
        v03_block(uhd_base64),
        openai_block(uhd_base64),
        {"type": "image_url", "image_url": data_url},
        {"type": "image", "url": data_url},
    ]
    metas = [model.invoke([ask(block)]).response_metadata for block in blocks]
    assert {(m["prompt_tokens"], m["vision_tiles"]) for m in metas} == {
        (metas[0]["prompt_tokens"], internvl_tiles(3840, 2160, 12))
    }


@pytest.mark.slow
def test_two_image_conversation_counts_both_images(
    tiny_internvl_path: pathlib.Path, uhd_base64: str
) -> None:
    model = LocalVisionChatModel(
        reuse_prefix=False, model_path=str(tiny_internvl_path), max_new_tokens=4, max_patches=12
    )
    crop = png_base64(make_image(1000, 600))
    messages = [
        ask(v1_block(uhd_base64)),
        AIMessage(content="Answer: B\n[0.3, 0.3, 0.5, 0.5]"),
        HumanMessage(content=[v1_block(crop), {"type": "text", "text": "Recheck."}]),
    ]
    meta = model.invoke(messages).response_metadata

    tiles = internvl_tiles(3840, 2160, 12) + internvl_tiles(1000, 600, 12)
    assert meta["vision_tiles"] == tiles
    placeholder_conv = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": messages[1].content}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Recheck."}]},
    ]
    expected = text_prompt_tokens(tiny_internvl_path, placeholder_conv)
    assert meta["prompt_tokens"] == expected + tiles * IMAGE_SEQ_LENGTH + 2


@pytest.mark.slow
def test_text_only_and_stop_strings(tiny_internvl_path: pathlib.Path) -> None:
    model = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), reuse_prefix=False, max_new_tokens=8
    )
    full = model.invoke("Say something.")
    assert full.response_metadata["vision_tiles"] == 0
    text = str(full.content)
    if not text:
        pytest.skip("the random model produced no visible text to stop on")
    marker = text[len(text) // 2]
    cut = model.invoke("Say something.", stop=[marker])
    assert cut.content == text[: text.index(marker)]
    assert cut.response_metadata["finish_reason"] == "stop"
    assert cut.response_metadata["generated_tokens"] <= full.response_metadata["generated_tokens"]


@pytest.mark.slow
def test_backend_is_loaded_once_per_process(tiny_internvl_path: pathlib.Path) -> None:
    first = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), reuse_prefix=False, max_patches=2
    )
    second = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), reuse_prefix=False, max_new_tokens=3
    )
    backend = first.load()
    assert second.load() is backend
    assert load_local_backend(str(tiny_internvl_path), "float32", "cpu", "sdpa") is backend
    assert not backend.model.training


@pytest.mark.slow
def test_a_local_run_logs_no_cache_deprecation_warning(trained_internvl_path: pathlib.Path) -> None:
    """The engine reads a generate output's `cache` (transformers 5), not `past_key_values`,
    whose getter logs a deprecation warning on every local run. In a fresh process, since
    transformers logs each warning once per process."""
    script = (
        "import sys; from zoom_refine import build_graph;"
        "from zoom_refine.testing import protocol_context, protocol_image_png, PROTOCOL_QUESTION,"
        " PROTOCOL_OPTIONS;"
        "ctx = protocol_context('internvl3', 'hf:' + sys.argv[1]);"
        "r = build_graph().invoke({'image': protocol_image_png((448, 448), 'w'),"
        " 'question': PROTOCOL_QUESTION, 'options': list(PROTOCOL_OPTIONS)}, context=ctx,"
        " config={'recursion_limit': 10});"
        "print(len(r['steps']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(trained_internvl_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"  # localize and refine both ran (prefix reuse included)
    assert "deprecated" not in done.stderr, done.stderr
