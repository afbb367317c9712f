"""The crop tool on its own: inside a ToolNode, as any tool-calling agent would run it."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from PIL import Image
from typing_extensions import TypedDict

from zoom_refine import ZoomContext, crop_tool, make_crop_tool
from zoom_refine.tools.crop_tool import make_crop
from zoom_refine.tools.settings import ImageSettings

GREEN = (0, 200, 0)


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    image = Image.new("RGB", (3000, 2000), (255, 255, 255))
    image.paste(GREEN, (1500, 1000, 1800, 1200))
    path = tmp_path / "picture.png"
    image.save(path)
    return path


class AgentState(TypedDict, total=False):
    """The state of some other agent that registers an image for the crop tool."""

    messages: Annotated[list[AnyMessage], add_messages]
    image: str | bytes


def call_crop(state: dict[str, Any], args: dict[str, Any], context: Any = None) -> ToolMessage:
    builder = StateGraph(AgentState)
    builder.add_node("tools", ToolNode([crop_tool]))
    builder.add_edge(START, "tools")
    call = AIMessage(content="", tool_calls=[{"name": "crop", "args": args, "id": "call-1"}])
    output = builder.compile().invoke({**state, "messages": [call]}, context=context)
    message = output["messages"][-1]
    assert isinstance(message, ToolMessage)
    return message


def test_tool_returns_text_image_block_and_artifact(picture: Path) -> None:
    message = call_crop(
        {"image": str(picture)},
        {"image_id": "img0", "box": [0.5, 0.5, 0.6, 0.6], "box_format": "norm1"},
        context=ImageSettings(padding=0.0, min_crop_side=0),
    )
    assert message.status == "success"
    text, image_block = message.content
    assert isinstance(text, dict) and text["type"] == "text" and "img1" in text["text"]
    assert isinstance(image_block, dict) and image_block["type"] == "image"
    assert image_block["mime_type"] == "image/png"
    assert message.artifact["view"]["box"] == [1500, 1000, 1800, 1200]
    crop = Image.open(io.BytesIO(base64.b64decode(image_block["base64"]))).convert("RGB")
    assert crop.size == (300, 200)
    assert crop.getpixel((0, 0)) == GREEN and crop.getpixel((299, 199)) == GREEN


def test_tool_uses_the_graph_context_settings(picture: Path) -> None:
    message = call_crop(
        {"image": str(picture)},
        {"image_id": "img0", "box": [500, 500, 600, 600], "box_format": "norm1000"},
        context=ZoomContext(model="openai:unused", padding=0.1, image_format="jpeg"),
    )
    assert message.artifact["view"]["box"] == [1200, 800, 2100, 1400]
    assert message.content[1]["mime_type"] == "image/jpeg"


def test_unknown_image_id_is_an_error_message_not_a_crash(picture: Path) -> None:
    message = call_crop(
        {"image": str(picture)}, {"image_id": "../../etc/passwd", "box": [0, 0, 1, 1]}
    )
    assert message.status == "error"
    assert "unknown image_id" in str(message.content)
    assert message.artifact is None


def test_tool_never_opens_a_path_from_its_arguments(picture: Path) -> None:
    """A model can only name registered ids; a path in the id is not a registered id."""
    message = call_crop({"image": str(picture)}, {"image_id": str(picture), "box": [0, 0, 1, 1]})
    assert message.status == "error"


def test_non_finite_box_is_an_error_message(picture: Path) -> None:
    message = call_crop(
        {"image": str(picture)}, {"image_id": "img0", "box": [0, 0, float("nan"), 1]}
    )
    assert message.status == "error" and "finite" in str(message.content)


def test_nested_crop_composes_through_the_registered_view(picture: Path) -> None:
    views = [
        {"id": "img0", "box": [0, 0, 3000, 2000], "hop": 0, "size": [1500, 1000]},
        {"id": "img1", "box": [1000, 500, 2000, 1500], "hop": 1, "size": [1000, 1000]},
    ]
    settings = ImageSettings(padding=0.0, min_crop_side=0)
    original = Image.open(picture).convert("RGB")
    # Pixels of img1 as shown (1000 × 1000 for a 1000 × 1000 region): offset by its box.
    crop = make_crop(original, views, "img1", [500, 500, 800, 700], "pixel", settings)
    assert crop.view.box.as_list() == [1500, 1000, 1800, 1200]
    assert crop.view.id == "img2" and crop.view.hop == 2
    # Pixels of img0 as shown at half size scale by two.
    crop = make_crop(original, views, "img0", [750, 500, 900, 600], "pixel", settings)
    assert crop.view.box.as_list() == [1500, 1000, 1800, 1200]


def test_crop_tool_on_another_state_key_reads_bytes_there(picture: Path) -> None:
    class PhotoState(TypedDict, total=False):
        messages: Annotated[list[AnyMessage], add_messages]
        photo: bytes

    builder = StateGraph(PhotoState)
    builder.add_node("tools", ToolNode([make_crop_tool(image_key="photo")]))
    builder.add_edge(START, "tools")
    args = {"image_id": "img0", "box": [0.5, 0.5, 0.6, 0.6]}
    call = AIMessage(content="", tool_calls=[{"name": "crop", "args": args, "id": "call-1"}])
    state = {"photo": picture.read_bytes(), "messages": [call]}
    settings = ImageSettings(padding=0.0, min_crop_side=0)
    message = builder.compile().invoke(state, context=settings)["messages"][-1]
    assert message.status == "success"
    assert message.artifact["view"]["box"] == [1500, 1000, 1800, 1200]
    # the `image`-key instance finds nothing in such a state, and says which key it read
    missing = call_crop({"photo": picture.read_bytes()}, args)
    assert missing.status == "error" and "the state has no 'image'" in str(missing.content)
