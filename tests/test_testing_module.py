"""`zoom_refine.testing` as a user sees it: importable as is, light to import, and enough to test
the real graph offline with a scripted model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.testing import ReplyFake, ScriptedVisionModel, images_in, texts_in


def test_a_scripted_model_drives_the_real_graph(tmp_path: Path) -> None:
    image = Image.new("RGB", (2000, 1500), (128, 128, 128))
    image.paste((255, 0, 0), (1200, 900, 1400, 1050))  # the red square, under the box below
    path = tmp_path / "scene.png"
    image.save(path)
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",  # 0-1 of the image the model saw
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    context = ZoomContext(model=model)
    result = build_graph().invoke(
        {"image": str(path), "question": "What colour is the square?", "options": ["red", "blue"]},
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )

    assert (result["initial_answer"], result["answer"]) == ("B", "A")
    assert [step["node"] for step in result["steps"]] == ["localize", "refine"]
    whole, crop = result["views"]
    assert whole["box"] == [0, 0, 2000, 1500]
    # The box in original pixels, [1200, 900, 1400, 1050], padded by 0.1 of each image side.
    assert crop == {"id": "img1", "box": [1000, 750, 1600, 1200], "hop": 1, "size": [600, 450]}
    # The refine request is the localize one plus the reply and the crop, as the fake recorded.
    localize, refine = model.requests
    assert "What colour is the square?" in texts_in(localize[-1])
    (shown_crop,) = images_in(refine[-1])
    assert shown_crop.size == (600, 450)
    red, green, blue = shown_crop.getpixel((300, 225))  # its centre: the square (JPEG, so near)
    assert red > 240 and green < 15 and blue < 15


def test_importing_it_pulls_in_neither_torch_nor_transformers() -> None:
    code = (
        "import json, sys, zoom_refine.testing\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(output) == []


def test_a_reply_fake_answers_from_what_it_was_sent_and_records_it() -> None:
    def reply(messages: list[BaseMessage]) -> str | AIMessage:
        text = texts_in(messages[-1])
        if text == "refuse":
            raise ValueError("the server says no")
        if text == "zoom":
            return AIMessage(
                "", tool_calls=[{"name": "crop", "args": {"box": [0, 0, 1, 1]}, "id": "c1"}]
            )
        return f"{len(messages)} messages, last {text!r}"

    model = ReplyFake(reply=reply)
    tools = [{"type": "function", "function": {"name": "crop"}}]
    assert model.bind_tools(tools) is model and model.bound == [tools]
    assert model.invoke([HumanMessage("a"), HumanMessage("b")]).content == "2 messages, last 'b'"
    assert model.invoke([HumanMessage("zoom")]).tool_calls[0]["id"] == "c1"
    with pytest.raises(ValueError, match="says no"):
        model.invoke([HumanMessage("refuse")])
    assert model.calls == 3
    assert [[texts_in(m) for m in request] for request in model.requests] == [
        ["a", "b"],
        ["zoom"],
        ["refuse"],
    ]
    quiet = ReplyFake(reply=reply, keep_requests=False)
    quiet.invoke([HumanMessage("a")])
    assert quiet.calls == 1 and quiet.requests == [] and repr(quiet) == "ReplyFake()"
