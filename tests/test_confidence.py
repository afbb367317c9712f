"""Confidence from token probabilities, as an alternative to the stated confidence."""

from __future__ import annotations

import base64
import io
import math
import pathlib
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.confidence import letter_probability, token_at
from zoom_refine.testing import ScriptedVisionModel

TEXT = "Rechecked Answer: B\nConfidence: 0.4"


def test_letter_probability_reads_the_token_that_wrote_the_letter() -> None:
    content = [
        {"token": "Rechecked Answer:", "logprob": -0.01},
        {"token": " B", "logprob": math.log(0.8)},
        {"token": "\nConfidence: 0.4", "logprob": -0.2},
    ]
    offset = TEXT.index("B")
    assert letter_probability(TEXT, offset, {"content": content}) == pytest.approx(0.8)
    assert token_at(content, offset, TEXT) is content[1]


def test_tokens_that_do_not_spell_the_text_give_no_probability() -> None:
    content = [{"token": "Something else", "logprob": -0.1}]
    assert letter_probability(TEXT, TEXT.index("B"), {"content": content}) is None
    assert letter_probability(TEXT, 0, None) is None
    assert (
        letter_probability(TEXT, 0, {"content": [{"token": "R", "logprob": float("nan")}]}) is None
    )


@pytest.fixture
def picture(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "p.png"
    Image.new("RGB", (1200, 900), (200, 10, 10)).save(path)
    return path


def run(picture: pathlib.Path, model: ScriptedVisionModel, **settings: Any) -> dict[str, Any]:
    result: dict[str, Any] = build_graph().invoke(
        {"image": str(picture), "question": "Which?", "options": ["a", "b"]},
        context=ZoomContext(model=model, **settings),
    )
    return result


def test_graph_uses_the_letter_probability_when_asked(picture: pathlib.Path) -> None:
    model = ScriptedVisionModel(
        replies=["Answer: A\nBounding box: [0.1, 0.1, 0.5, 0.5]", TEXT],
        token_logprob=math.log(0.25),
    )
    result = run(picture, model, confidence_source="token")
    assert result["confidence"] == pytest.approx(0.25)
    assert result["steps"][1]["confidence_source"] == "token"


def test_graph_falls_back_to_the_stated_confidence_without_logprobs(picture: pathlib.Path) -> None:
    model = ScriptedVisionModel(replies=["Answer: A\nBounding box: [0.1, 0.1, 0.5, 0.5]", TEXT])
    result = run(picture, model, confidence_source="token")
    assert result["confidence"] == pytest.approx(0.4)
    assert result["steps"][1]["confidence_source"] == "verbal"


@pytest.mark.slow
def test_local_backend_returns_logprobs_that_spell_its_reply(
    tiny_internvl_path: pathlib.Path,
) -> None:
    from zoom_refine.agent.local.model import LocalVisionChatModel

    buffer = io.BytesIO()
    Image.new("RGB", (448, 448), (1, 2, 3)).save(buffer, format="PNG")
    block = {
        "type": "image",
        "base64": base64.b64encode(buffer.getvalue()).decode(),
        "mime_type": "image/png",
    }
    model = LocalVisionChatModel(
        model_path=str(tiny_internvl_path), max_new_tokens=6, max_patches=1
    )
    reply = model.bind(logprobs=True).invoke(
        [HumanMessage(content=[block, {"type": "text", "text": "Hi"}])]
    )
    content = reply.response_metadata["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == reply.content
    assert all(entry["logprob"] <= 0.0 for entry in content)
    plain = model.invoke([HumanMessage(content=[block, {"type": "text", "text": "Hi"}])])
    assert "logprobs" not in plain.response_metadata
