"""The OpenAI-compatible path without a server: request bodies, image encoding, retries."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI
from langgraph.types import RetryPolicy
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.graphs.calls import is_transient_model_error
from zoom_refine.testing import ScriptedVisionModel

REPLIES = [
    "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
    "Rechecked Answer: B\nConfidence: 0.3",
    "Answer: B\nBounding box: [0.2, 0.2, 0.6, 0.6]",
    "Rechecked Answer: A\nConfidence: 0.9",
]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    image = Image.effect_noise((3000, 2000), 60).convert("RGB")
    path = tmp_path / "photo.png"
    image.save(path)
    return path


FAST_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.01, retry_on=is_transient_model_error)


def invoke(photo: Path, model: Any, **settings: Any) -> dict[str, Any]:
    context = ZoomContext(model=model, **settings)
    result: dict[str, Any] = build_graph(retry_policy=FAST_RETRY).invoke(
        {"image": str(photo), "question": "Which?", "options": ["a", "b", "c", "d"]},
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )
    return result


def test_each_request_body_starts_with_the_previous_one_byte_for_byte(photo: Path) -> None:
    """What ChatOpenAI would POST: a growing prefix, so vLLM / SGLang prefix caching reuses it."""
    model = ScriptedVisionModel(replies=REPLIES)
    invoke(photo, model, max_hops=2, image_format="jpeg")
    client = ChatOpenAI(model="served", base_url="http://127.0.0.1:1/v1", api_key="EMPTY")
    bodies = [client._get_request_payload(request)["messages"] for request in model.requests]

    assert len(bodies) == 4
    for earlier, later in itertools.pairwise(bodies):
        earlier_json = [json.dumps(message, sort_keys=True) for message in earlier]
        later_json = [json.dumps(message, sort_keys=True) for message in later]
        assert later_json[: len(earlier_json)] == earlier_json
    first_image = bodies[0][0]["content"][0]["image_url"]["url"]
    assert first_image.startswith("data:image/jpeg;base64,")
    # The refine body: [user: view + localize prompt, assistant: reply, user: crop + refine prompt]
    assert [message["role"] for message in bodies[1]] == ["user", "assistant", "user"]
    assert bodies[1][1]["content"] == REPLIES[0]
    assert bodies[1][2]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_servers_get_jpeg_and_local_models_get_bmp() -> None:
    assert ZoomContext(model="openai:served").image_format == "jpeg"
    assert ZoomContext(model="hf:OpenGVLab/InternVL3-2B-hf").image_format == "bmp"
    assert ZoomContext(model="openai:served", image_format="png").image_format == "png"


def test_jpeg_requests_are_much_smaller_than_png(photo: Path) -> None:
    sizes = {}
    for image_format in ("png", "jpeg"):
        model = ScriptedVisionModel(replies=REPLIES[:2])
        invoke(photo, model, image_format=image_format)
        sizes[image_format] = len(json.dumps([m.content for m in model.requests[-1]]))
    assert sizes["jpeg"] < sizes["png"] / 2


class FlakyModel(ScriptedVisionModel):
    """Fails its first `failures` calls with `error`, then replies from the script."""

    failures: int
    error: Exception
    attempts: int = 0

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        return super()._generate(messages, stop, run_manager, **kwargs)


REQUEST = httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions")


def test_connection_errors_are_retried(photo: Path) -> None:
    error = openai.APIConnectionError(request=REQUEST)
    model = FlakyModel(replies=REPLIES[:2], failures=2, error=error)
    result = invoke(photo, model)
    assert model.attempts == 4  # two failures, then localize and refine
    assert result["answer"] == "B"


def test_client_errors_are_not_retried(photo: Path) -> None:
    error = openai.BadRequestError("bad", response=httpx.Response(400, request=REQUEST), body=None)
    model = FlakyModel(replies=REPLIES, failures=1, error=error)
    with pytest.raises(openai.BadRequestError):
        invoke(photo, model)
    assert model.attempts == 1


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (openai.APIConnectionError(request=REQUEST), True),
        (openai.APITimeoutError(request=REQUEST), True),
        (
            openai.InternalServerError(
                "x", response=httpx.Response(503, request=REQUEST), body=None
            ),
            True,
        ),
        (
            openai.RateLimitError("x", response=httpx.Response(429, request=REQUEST), body=None),
            True,
        ),
        (
            openai.BadRequestError("x", response=httpx.Response(400, request=REQUEST), body=None),
            False,
        ),
        (httpx.ConnectError("refused"), True),
        (ValueError("parse"), False),
        (KeyError("bug"), False),
    ],
)
def test_transient_error_classification(error: Exception, transient: bool) -> None:
    assert is_transient_model_error(error) is transient
