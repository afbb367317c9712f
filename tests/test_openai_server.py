"""The OpenAI-compatible path against a real server: `transformers serve` with the tiny InternVL3.

The model is random, so its replies are noise; what is checked is what is real: the server
decodes the images LangChain sends (prompt tokens grow by 256 per 448-px tile), the whole graph
runs through an `openai:` spec, and per-request processor options reach the InternVL tiler.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI
from PIL import Image
from servers import ServedModel

from zoom_refine import ZoomContext, build_graph

pytestmark = pytest.mark.slow

IMAGE_TOKENS_PER_TILE = 256  # (448 / 14)² patches × 0.5² pixel-shuffle
IMAGE_WRAPPER_TOKENS = 3  # `<img>` … `</img>` and the template's newline after each image
QUESTION = "What colour is the sky?"


def png_base64(size: tuple[int, int], colour: tuple[int, int, int] = (40, 90, 160)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_block(data: str) -> dict[str, Any]:
    """LangChain's standard image content block (ChatOpenAI sends it as a data-URL image_url)."""
    return {"type": "image", "base64": data, "mime_type": "image/png"}


def chat_model(server: ServedModel, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=server.model_name,
        base_url=server.base_url,
        api_key="EMPTY",
        max_tokens=8,
        temperature=0,
        **options,
    )


def ask(model: Any, *images: str) -> AIMessage:
    content = [*(image_block(data) for data in images), {"type": "text", "text": QUESTION}]
    reply = model.invoke([HumanMessage(content=content)])
    assert isinstance(reply, AIMessage)
    return reply


def input_tokens(reply: AIMessage) -> int:
    assert reply.usage_metadata is not None, reply.response_metadata
    return reply.usage_metadata["input_tokens"]


def tile_budget(max_patches: int) -> dict[str, Any]:
    """The request field `transformers serve` forwards to the processor: `chat_template_kwargs`
    goes to `processor.apply_chat_template(**kwargs)`, whose own `processor_kwargs` argument
    reaches `InternVLProcessor.__call__` (a top-level `processor_kwargs` field is refused, 422)."""
    return {
        "chat_template_kwargs": {
            "processor_kwargs": {"images_kwargs": {"max_patches": max_patches}}
        }
    }


@pytest.fixture(scope="module")
def wide_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "wide.png"
    Image.new("RGB", (1920, 1080), (40, 90, 160)).save(path)
    return path


def test_chat_openai_sends_standard_image_blocks(internvl_server: ServedModel) -> None:
    model = chat_model(internvl_server)
    # 896×448 is 2:1 → a 2×1 grid of 448-px tiles + a thumbnail = 3 tiles.
    picture = png_base64((896, 448))

    one = ask(model, picture)
    two = ask(model, picture, picture)

    for reply in (one, two):
        assert isinstance(reply.content, str)
        assert reply.response_metadata["model_name"] == internvl_server.model_name
        assert 1 <= reply.usage_metadata["output_tokens"] <= 8  # type: ignore[index]
    assert input_tokens(one) > 3 * IMAGE_TOKENS_PER_TILE
    # The second image costs exactly its tiles: the server decoded it and ran the InternVL tiler.
    extra = input_tokens(two) - input_tokens(one)
    assert extra == 3 * IMAGE_TOKENS_PER_TILE + IMAGE_WRAPPER_TOKENS


def test_tile_budget_per_request(internvl_server: ServedModel) -> None:
    model = chat_model(internvl_server)
    # 1792×896 is 2:1 → 12 tiles allow a 4×2 grid + thumbnail = 9; 2 allow 2×1 + thumbnail = 3.
    picture = png_base64((1792, 896))

    default = input_tokens(ask(model, picture))
    limited = input_tokens(ask(model.bind(extra_body=tile_budget(2)), picture))
    again = input_tokens(ask(model, picture))

    assert default - limited == (9 - 3) * IMAGE_TOKENS_PER_TILE
    assert again == default  # the option lives in one request, not in the server


def test_logprobs_are_accepted_but_not_returned(internvl_server: ServedModel) -> None:
    # `transformers serve` lists `logprobs` and `top_logprobs` among the OpenAI fields it ignores
    # (UNUSED_CHAT_COMPLETION_FIELDS in cli/serving/chat_completion.py): the request succeeds,
    # the reply has no logprobs. Confidence cannot be read from token probabilities there.
    model = chat_model(internvl_server, logprobs=True, top_logprobs=5)
    reply = ask(model, png_base64((448, 448)))

    assert isinstance(reply.content, str)
    assert reply.response_metadata.get("logprobs") is None, (
        "transformers serve now returns logprobs: update this test and the docs"
    )


def test_whole_graph_through_an_openai_spec(internvl_server: ServedModel, wide_image: Path) -> None:
    context = ZoomContext(
        model=f"openai:{internvl_server.model_name}",
        base_url=internvl_server.base_url,
        max_new_tokens=8,
    )
    result: dict[str, Any] = build_graph().invoke(
        {"image": str(wide_image), "question": QUESTION, "options": ["blue", "red"]},
        context=context,
    )

    assert result["stop_reason"] == "no_box"  # a random model draws no box
    (step,) = result["steps"]
    assert step["node"] == "localize" and isinstance(step["raw"], str)
    assert result["usage"]["model_calls"] == 1
    assert 1 <= result["usage"]["output_tokens"] <= 8
    # 1920×1080 is shown whole (≤ 2048 px): 16:9 → a 4×2 grid + thumbnail = 9 tiles.
    assert result["usage"]["input_tokens"] > 9 * IMAGE_TOKENS_PER_TILE
    assert result["views"][0]["size"] == [1920, 1080]


def test_server_sees_what_the_local_backend_sees(
    internvl_server: ServedModel, tiny_internvl_path: Path, wide_image: Path
) -> None:
    # Same checkpoint, same conversation: the `openai:` path must prefill exactly the tokens the
    # local `hf:` backend does (same text, same image tiles), and greedy decoding must agree.
    inputs = {"image": str(wide_image), "question": QUESTION, "options": ["blue", "red"]}
    served = build_graph().invoke(
        inputs,
        context=ZoomContext(
            model=f"openai:{internvl_server.model_name}",
            base_url=internvl_server.base_url,
            max_new_tokens=8,
        ),
    )
    local = build_graph().invoke(
        inputs, context=ZoomContext(model=f"hf:{tiny_internvl_path}", max_new_tokens=8)
    )

    for key in ("input_tokens", "output_tokens"):
        assert served["usage"][key] == local["usage"][key], key
    assert served["steps"][0]["raw"] == local["steps"][0]["raw"]


def test_graph_sends_the_tile_budget_to_transformers_serve(
    internvl_server: ServedModel, wide_image: Path
) -> None:
    inputs = {"image": str(wide_image), "question": QUESTION, "options": ["blue", "red"]}
    tokens = {}
    for budget in (12, 2):
        context = ZoomContext(
            model=f"openai:{internvl_server.model_name}",
            base_url=internvl_server.base_url,
            max_new_tokens=4,
            max_patches=budget,
            server_tile_budget="transformers",
        )
        tokens[budget] = build_graph().invoke(inputs, context=context)["usage"]["input_tokens"]
    # 16:9 at ≤12 tiles: 4×2 + thumbnail = 9; at ≤2: 2×1 + thumbnail = 3.
    assert tokens[12] - tokens[2] == (9 - 3) * IMAGE_TOKENS_PER_TILE


def test_graph_batch_against_the_server(internvl_server: ServedModel, wide_image: Path) -> None:
    context = ZoomContext(
        model=f"openai:{internvl_server.model_name}",
        base_url=internvl_server.base_url,
        max_new_tokens=4,
    )
    inputs = [
        {"image": str(wide_image), "question": f"Question {i}?", "options": ["a", "b"]}
        for i in range(3)
    ]
    results = build_graph().batch(inputs, context=context, config={"max_concurrency": 3})
    assert len(results) == 3
    assert all(result["usage"]["model_calls"] == 1 for result in results)
    assert all(result["usage"]["input_tokens"] > 9 * IMAGE_TOKENS_PER_TILE for result in results)
