"""`zoom_refine_tool` and `make_crop_tool` inside a prebuilt agent (`langchain.agents.create_agent`)
whose state names the image `photo_path`, driven by a scripted tool-calling model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from compose_fixtures import RED, finds_red, write_photo
from langchain.agents import AgentState, create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from typing_extensions import NotRequired

from zoom_refine import ZoomContext, make_crop_tool, zoom_refine_tool
from zoom_refine.testing import ScriptedToolCallingModel, ScriptedVisionModel, images_in


class PhotoAgentState(AgentState):  # type: ignore[type-arg]
    """An agent's state that keeps the user's photo under its own key."""

    photo_path: NotRequired[str]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return write_photo(tmp_path)


def vision_model() -> ScriptedVisionModel:
    return finds_red(confidence=0.85)


def run_agent(tool: Any, args: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    call = {"name": tool.name, "args": args, "id": "call-1"}
    model = ScriptedToolCallingModel(
        replies=[AIMessage(content="", tool_calls=[call]), AIMessage(content="done")]
    )
    agent = create_agent(model, tools=[tool], state_schema=PhotoAgentState)
    question = HumanMessage(content="What colour is the square?")
    result: dict[str, Any] = agent.invoke({"messages": [question], **state})
    result["model"] = model
    return result


def test_zoom_refine_tool_gives_answer_confidence_crop_and_steps(photo: Path) -> None:
    vision = vision_model()
    tool = zoom_refine_tool(context=ZoomContext(model=vision), image_key="photo_path")
    result = run_agent(
        tool,
        {"question": "What colour is the square?", "options": ["red", "blue"]},
        {"photo_path": str(photo)},
    )
    message = result["messages"][2]
    assert isinstance(message, ToolMessage) and message.status == "success"
    text, image = message.content
    assert isinstance(text, dict) and isinstance(image, dict)
    assert text["text"].startswith("Answer: A (red). Confidence: 0.85. Zoomed 1 time")
    # a model that is not in-process gets JPEG views, and so does the agent's model
    assert image["type"] == "image" and image["mime_type"] == "image/jpeg"
    [crop] = images_in(message)
    view = message.artifact["views"][-1]
    assert crop.size == tuple(view["size"])
    centre = (
        (RED[0] + RED[2]) // 2 - view["box"][0],
        (RED[1] + RED[3]) // 2 - view["box"][1],
    )
    scale = view["size"][0] / (view["box"][2] - view["box"][0])
    red, green, blue = crop.getpixel((int(centre[0] * scale), int(centre[1] * scale)))
    assert red > 240 and green < 15 and blue < 15
    # the artifact holds the step records of the run
    assert [step["node"] for step in message.artifact["steps"]] == ["localize", "refine"]
    assert message.artifact["stop_reason"] == "confident"
    # the agent's model got the crop back in the tool result
    assert images_in(result["model"].requests[1][-1])
    assert len(vision.requests) == 2


def test_zoom_refine_tool_takes_the_agents_context_when_none_given(photo: Path) -> None:
    tool = zoom_refine_tool(image_key="photo_path")
    call = {"name": "zoom_refine", "args": {"question": "Colour?"}, "id": "call-1"}
    model = ScriptedToolCallingModel(
        replies=[AIMessage(content="", tool_calls=[call]), AIMessage(content="done")]
    )
    agent = create_agent(
        model, tools=[tool], state_schema=PhotoAgentState, context_schema=ZoomContext
    )
    result = agent.invoke(
        {"messages": [HumanMessage("?")], "photo_path": str(photo)},
        context=ZoomContext(model=vision_model()),
    )
    assert result["messages"][2].artifact["answer"] == "A"


def test_zoom_refine_tool_without_a_crop_has_text_only(photo: Path) -> None:
    vision = ScriptedVisionModel(replies=["Answer: B (no box given)"])
    tool = zoom_refine_tool(context=ZoomContext(model=vision), image_key="photo_path")
    result = run_agent(tool, {"question": "Colour?"}, {"photo_path": str(photo)})
    message = result["messages"][2]
    assert [block["type"] for block in message.content] == ["text"]
    assert "Zoomed 0 times (stop: no_box)" in message.content[0]["text"]


@pytest.mark.reliability(
    "Composing",
    "the zoom_refine tool called with no image in the agent's state, or a bad option list",
    "an error ToolMessage the agent's model reads (one line), not a crash",
)
@pytest.mark.parametrize(
    ("args", "state", "words"),
    [
        ({"question": "Colour?"}, {}, "the state has no 'photo_path'"),
        ({"question": "Colour?", "options": []}, None, "options must be a non-empty list"),
        ({"question": "   "}, None, "the question is empty"),
    ],
)
def test_zoom_refine_tool_user_errors_go_back_to_the_model(
    photo: Path, args: dict[str, Any], state: dict[str, Any] | None, words: str
) -> None:
    vision = ScriptedVisionModel(replies=[])
    tool = zoom_refine_tool(context=ZoomContext(model=vision), image_key="photo_path")
    result = run_agent(tool, args, {"photo_path": str(photo)} if state is None else state)
    message = result["messages"][2]
    assert message.status == "error" and words in message.content
    assert result["messages"][-1].content == "done"
    assert vision.requests == []


def test_crop_tool_on_another_key_in_create_agent(photo: Path) -> None:
    tool = make_crop_tool(image_key="photo_path")
    assert tool.name == "crop"
    result = run_agent(
        tool, {"image_id": "img0", "box": [0.75, 0.6, 0.875, 0.8]}, {"photo_path": str(photo)}
    )
    message = result["messages"][2]
    assert message.status == "success"
    box = message.artifact["view"]["box"]
    assert box[0] <= RED[0] and box[2] >= RED[2]
    [crop] = images_in(message)
    assert crop.getpixel(((RED[0] + RED[2]) // 2 - box[0], (RED[1] + RED[3]) // 2 - box[1])) == (
        255,
        0,
        0,
    )


@pytest.mark.reliability(
    "Composing",
    "make_crop_tool's key absent from the agent's state, or holding a number",
    "an error ToolMessage naming the key, not a crash",
)
@pytest.mark.parametrize(
    ("state", "words"),
    [({}, "the state has no 'photo_path'"), ({"photo_path": 7}, "holds a value of type int")],
)
def test_crop_tool_key_missing_or_wrong(state: dict[str, Any], words: str) -> None:
    class LooseState(AgentState):  # type: ignore[type-arg]
        photo_path: NotRequired[Any]

    tool = make_crop_tool(image_key="photo_path")
    call = {"name": "crop", "args": {"image_id": "img0", "box": [0, 0, 1, 1]}, "id": "c"}
    model = ScriptedToolCallingModel(
        replies=[AIMessage(content="", tool_calls=[call]), AIMessage(content="done")]
    )
    agent = create_agent(model, tools=[tool], state_schema=LooseState)
    result = agent.invoke({"messages": [HumanMessage("?")], **state})
    message = result["messages"][2]
    assert message.status == "error" and words in message.content
