"""What a vLLM server started without our flags does to our defaults: one clear error line naming
the flag to add (docs/vllm.md), from a real short-lived server with none of
`servers.VLLM_ZOOM_REFINE_ARGS` and one image per prompt.

vLLM 0.32 allows 999 images per prompt unless told otherwise (`MultiModalConfig.
get_limit_per_prompt`); older releases and many deployment guides limit it to one with
`--limit-mm-per-prompt '{"image": 1}'` (it also bounds the memory vLLM profiles at start), which
is what refine's second image runs into. The test server is started that way."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from servers import RunningServer, start_vllm
from typer.testing import CliRunner

from zoom_refine import build_graph
from zoom_refine.cli import app
from zoom_refine.graphs.calls import reply_usage
from zoom_refine.testing import tiny_models as tm
from zoom_refine.tools.errors import InvalidInputError

pytestmark = pytest.mark.slow


SERVER_MAX_PATCHES = 2
"""The flagless server's tile budget, set server-wide (`--mm-processor-kwargs`)."""


@pytest.fixture(scope="module")
def flagless_vllm(vllm_python: Path, trained_internvl_path: Path) -> Iterator[RunningServer]:
    """vLLM with only the basics (`servers.VLLM_BASE_ARGS`), one image per prompt and the tile
    budget set server-wide: no per-request processor kwargs, no prompt-token details."""
    args = (
        "--limit-mm-per-prompt",
        '{"image": 1}',
        "--mm-processor-kwargs",
        json.dumps({"max_patches": SERVER_MAX_PATCHES}),
    )
    with start_vllm(trained_internvl_path, python=vllm_python, extra_args=args) as server:
        yield server


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flags") / "scene.png"
    tm.protocol_image((1500, 900), "flags").save(path)
    return path


def image_block(path: Path) -> dict[str, Any]:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"type": "image", "base64": data, "mime_type": "image/png"}


def run(server: RunningServer, image: Path, **settings: Any) -> dict[str, Any]:
    options = {"base_url": server.base_url, "model_family": "internvl"} | settings
    context = tm.protocol_context("internvl3", f"openai:{server.model_name}", **options)
    result: dict[str, Any] = build_graph().invoke(
        tm.protocol_inputs(image), context=context, config={"recursion_limit": 10}
    )
    return result


def test_per_request_tile_budget_needs_trust_request_mm_kwargs(
    flagless_vllm: RunningServer, image: Path
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        run(flagless_vllm, image, server_tile_budget="vllm")
    message = str(caught.value)
    assert "\n" not in message
    assert "--trust-request-mm-kwargs" in message and "--mm-processor-kwargs" in message


def test_refine_needs_more_than_one_image_per_prompt(
    flagless_vllm: RunningServer, image: Path
) -> None:
    # Localize sends one image and works; refine sends the view and the crop.
    with pytest.raises(InvalidInputError) as caught:
        run(flagless_vllm, image, server_tile_budget="none", max_patches=None)
    message = str(caught.value)
    assert "\n" not in message and "--limit-mm-per-prompt" in message
    assert "At most 1 image(s)" in message  # vLLM's own words, for the record


def test_no_cached_tokens_without_prompt_token_details(
    flagless_vllm: RunningServer, image: Path
) -> None:
    """Without `--enable-prompt-tokens-details` vLLM still caches prefixes but does not say so:
    `usage` has prompt and completion tokens and no `cached_tokens`."""
    model = ChatOpenAI(
        model=flagless_vllm.model_name,
        base_url=flagless_vllm.base_url,
        api_key="EMPTY",
        max_tokens=8,
    )
    messages = [HumanMessage(content=[image_block(image), {"type": "text", "text": "Hi"}])]
    first, second = (reply_usage(model.invoke(messages)) for _ in range(2))
    for usage in (first, second):
        assert usage["input_tokens"] > 3 * 256 and usage["output_tokens"] > 0
        assert "cached_tokens" not in usage


def test_the_cli_prints_the_flag_on_one_line(flagless_vllm: RunningServer, image: Path) -> None:
    args = [
        "ask",
        str(image),
        tm.PROTOCOL_QUESTION,
        *[item for option in tm.PROTOCOL_OPTIONS for item in ("-o", option)],
        "--model",
        f"openai:{flagless_vllm.model_name}",
        "--base-url",
        flagless_vllm.base_url,
        "--model-family",
        "internvl",
        "--max-patches",
        "2",
        "--server-tile-budget",
        "vllm",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "--trust-request-mm-kwargs" in result.output and "Traceback" not in result.output


def test_server_wide_tile_budget(flagless_vllm: RunningServer, image: Path, tmp_path: Path) -> None:
    """`--mm-processor-kwargs '{"max_patches": 2}'`: the budget without per-request kwargs."""
    one_tile = tmp_path / "one-tile.png"
    tm.protocol_image((448, 448), "one-tile").save(one_tile)
    model = ChatOpenAI(
        model=flagless_vllm.model_name,
        base_url=flagless_vllm.base_url,
        api_key="EMPTY",
        max_tokens=4,
    )

    def prompt_tokens(path: Path) -> int:
        content = [image_block(path), {"type": "text", "text": "Hi"}]
        return reply_usage(model.invoke([HumanMessage(content=content)]))["input_tokens"]

    big, small = prompt_tokens(image), prompt_tokens(one_tile)
    # 1500x900 within 2 tiles: 2x1 + thumbnail = 3 tiles (at the default 12: 3x2 + thumbnail = 7);
    # 448x448: one tile, no thumbnail. 256 image tokens per tile, the same text around them.
    assert big - small == (3 - 1) * 256


def test_a_prompt_longer_than_the_context_names_max_model_len(
    flagless_vllm: RunningServer, image: Path
) -> None:
    context = tm.protocol_context(
        "internvl3",
        f"openai:{flagless_vllm.model_name}",
        base_url=flagless_vllm.base_url,
        model_family="internvl",
    )
    inputs = tm.protocol_inputs(image) | {"question": "Which one? " * 6000}  # > 8192 tokens
    with pytest.raises(InvalidInputError) as caught:
        build_graph().invoke(inputs, context=context, config={"recursion_limit": 10})
    message = str(caught.value)
    assert "\n" not in message and "--max-model-len" in message
    assert "maximum context length is 8192" in message  # vLLM's own words, for the record
