"""The crop tool inside a prebuilt tool-calling agent (`langchain.agents.create_agent`), and the
helper that moves tool-result images into a user message for servers that refuse them there."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain.agents import AgentState, create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from PIL import Image
from typing_extensions import NotRequired

from zoom_refine import crop_tool
from zoom_refine.agent.tool_images import MOVED_NOTE, move_tool_images_to_user
from zoom_refine.testing import ScriptedToolCallingModel, images_in, texts_in

RED_BOX = (1200, 600, 1400, 800)  # in original pixels of the 1600×1000 test image


class ImageAgentState(AgentState):  # type: ignore[type-arg]
    """The agent's state plus the image the crop tool reads (path or bytes)."""

    image: NotRequired[str | bytes]


@pytest.fixture
def scene(tmp_path: pathlib.Path) -> pathlib.Path:
    image = Image.new("RGB", (1600, 1000), (200, 200, 200))
    image.paste((255, 0, 0), RED_BOX)
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def script(box: list[float]) -> list[AIMessage]:
    call = {"name": "crop", "args": {"image_id": "img0", "box": box}, "id": "call-1"}
    return [AIMessage(content="", tool_calls=[call]), AIMessage(content="The square is red.")]


def run_agent(
    scene: pathlib.Path, model: ScriptedToolCallingModel, middleware: Sequence[Any] = ()
) -> dict[str, Any]:
    agent = create_agent(
        model, tools=[crop_tool], state_schema=ImageAgentState, middleware=middleware
    )
    question = HumanMessage(content="What colour is the square near the bottom right?")
    result: dict[str, Any] = agent.invoke({"messages": [question], "image": str(scene)})
    return result


def test_agent_tool_call_returns_the_crop_image(scene: pathlib.Path) -> None:
    # the box covers exactly the red square, in fractions of the whole image (img0)
    model = ScriptedToolCallingModel(replies=script([0.75, 0.6, 0.875, 0.8]))
    result = run_agent(scene, model)
    tool_message = result["messages"][2]
    assert isinstance(tool_message, ToolMessage)
    assert tool_message.status == "success"
    assert tool_message.artifact["view"]["id"] == "img1"
    [crop] = images_in(tool_message)
    # padded by 0.1 of the image side and grown to 448 px: the red square sits inside grey context
    box = tool_message.artifact["view"]["box"]
    assert box[0] <= RED_BOX[0] and box[1] <= RED_BOX[1]
    assert box[2] >= RED_BOX[2] and box[3] >= RED_BOX[3]
    assert crop.size == (box[2] - box[0], box[3] - box[1])
    centre = ((RED_BOX[0] + RED_BOX[2]) // 2 - box[0], (RED_BOX[1] + RED_BOX[3]) // 2 - box[1])
    assert crop.getpixel(centre) == (255, 0, 0)
    assert crop.getpixel((0, 0)) == (200, 200, 200)
    # the model's second request carried the crop back to it
    assert images_in(model.requests[1][-1])[0].tobytes() == crop.tobytes()
    assert result["messages"][-1].content == "The square is red."


def test_agent_tool_error_is_reported_to_the_model(scene: pathlib.Path) -> None:
    call = {"name": "crop", "args": {"image_id": "img7", "box": [0, 0, 1, 1]}, "id": "bad"}
    replies = [AIMessage(content="", tool_calls=[call]), AIMessage(content="sorry")]
    result = run_agent(scene, ScriptedToolCallingModel(replies=replies))
    tool_message = result["messages"][2]
    assert tool_message.status == "error"
    assert "unknown image_id 'img7'" in texts_in(tool_message)


def images_to_user_middleware() -> Any:
    """Middleware for `create_agent`: what the model is sent has no images in tool messages."""

    @wrap_model_call  # type: ignore[arg-type]
    def images_to_user(
        request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        return handler(request.override(messages=move_tool_images_to_user(request.messages)))

    return images_to_user


def test_middleware_moves_crop_image_to_a_user_message(scene: pathlib.Path) -> None:
    model = ScriptedToolCallingModel(replies=script([0.75, 0.6, 0.875, 0.8]))
    result = run_agent(scene, model, middleware=[images_to_user_middleware()])
    sent = model.requests[1]
    assert [type(m).__name__ for m in sent] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "HumanMessage",
    ]
    assert images_in(sent[2]) == []
    assert "img1: crop of img0" in texts_in(sent[2]) and MOVED_NOTE in texts_in(sent[2])
    [moved] = images_in(sent[3])
    [kept] = images_in(result["messages"][2])  # the agent's own state keeps the image in place
    assert moved.tobytes() == kept.tobytes()


def tool_message(call_id: str, text: str, image: dict[str, Any] | None) -> ToolMessage:
    content: list[Any] = [{"type": "text", "text": text}]
    if image:
        content.append(image)
    return ToolMessage(content=content, tool_call_id=call_id, name="crop")


def test_move_tool_images_groups_consecutive_tool_messages() -> None:
    image_a = {"type": "image", "base64": "AAAA", "mime_type": "image/png"}
    image_b = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}}
    calls = [{"name": "crop", "args": {}, "id": i} for i in ("a", "b", "c")]
    messages: list[BaseMessage] = [
        HumanMessage(content="look"),
        AIMessage(content="", tool_calls=calls),
        tool_message("a", "first", image_a),
        tool_message("b", "second", None),
        tool_message("c", "third", image_b),
        AIMessage(content="done"),
    ]
    moved = move_tool_images_to_user(messages)
    assert [type(m).__name__ for m in moved] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "ToolMessage",
        "HumanMessage",
        "AIMessage",
    ]
    assert moved[3] is messages[3]  # no image: untouched
    assert texts_in(moved[2]) == f"first\n{MOVED_NOTE}"
    assert moved[2].tool_call_id == "a"
    user = moved[5].content
    assert [b for b in user if isinstance(b, dict) and b["type"] != "text"] == [image_a, image_b]
    assert messages[2].content[1] == image_a  # the input is not modified


def test_move_tool_images_leaves_plain_conversations_alone() -> None:
    messages: list[BaseMessage] = [
        HumanMessage(content="hi"),
        AIMessage(content="", tool_calls=[{"name": "crop", "args": {}, "id": "x"}]),
        ToolMessage(content="text only", tool_call_id="x"),
        AIMessage(content="ok"),
    ]
    moved = move_tool_images_to_user(messages)
    assert moved == messages
    assert all(a is b for a, b in zip(moved, messages, strict=True))
    assert move_tool_images_to_user([]) == []
