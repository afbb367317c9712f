"""LangChain messages as a transformers chat conversation, for the local backend's template.

Images arrive as LangChain content blocks holding base64 data (standard v1 / v0.3 blocks or
OpenAI `image_url` data URLs) and are decoded to PIL images here; nothing is ever fetched from a
URL or read from a path. Two shapes: the plain one, for templates without a tools section (a
tool result is a user turn, calls are written back into the assistant's text), and the one vLLM
hands an OpenAI request with tools to the template (`with_tool_turns`), so that a checkpoint whose
template has a tools section gets the same prompt in process and through a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from PIL import Image

from zoom_refine.agent.local.chat_tools import tool_call_entry
from zoom_refine.agent.tool_calls import tool_call_text
from zoom_refine.tools.encoding import decode_block_image

HFMessage = dict[str, Any]
HFBlock = dict[str, Any]


_REMOTE_IMAGE_HINT = (
    "only base64 image data is accepted (a standard block with 'base64', or a data: URL); "
    "remote URLs and file paths are never fetched: load the image yourself and send it as a "
    "base64 image block"
)


def to_hf_conversation(
    messages: Sequence[BaseMessage], *, tool_turns: bool = False
) -> list[HFMessage]:
    """The transformers chat format, with every image decoded to a PIL image.

    Without `tool_turns` (a template with no tools section), a tool result is a user turn and
    an assistant turn's calls are written back into its text as `<tool_call>` blocks. With it,
    the turns are shaped as vLLM hands an OpenAI request to the template (`with_tool_turns`)."""
    conversation = [_to_hf_message(message) for message in messages]
    return with_tool_turns(messages, conversation) if tool_turns else conversation


def with_tool_turns(
    messages: Sequence[BaseMessage], conversation: list[HFMessage]
) -> list[HFMessage]:
    """`conversation` (made from `messages`, images already decoded) as vLLM renders the same
    request through a template with a tools section: a tool result is a `tool` turn with its
    `tool_call_id` (text only: its texts joined by newlines), an assistant turn carries its
    `tool_calls` (no content when it had none), and a message's `name` is kept."""
    return [_tool_turn(message, turn) for message, turn in zip(messages, conversation, strict=True)]


def _tool_turn(message: BaseMessage, turn: HFMessage) -> HFMessage:
    if isinstance(message, ToolMessage):
        content = turn["content"]
        if all(block["type"] == "text" for block in content):
            content = "\n".join(block["text"] for block in content)
        return {"role": "tool", "content": content, "tool_call_id": message.tool_call_id}
    shaped = dict(turn)
    if message.name:
        shaped["name"] = message.name
    if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
        shaped["content"] = _text_blocks(message.content) if message.content else []
        shaped["tool_calls"] = [
            *(
                tool_call_entry(call["id"], call["name"], call["args"])
                for call in message.tool_calls
            ),
            *(
                tool_call_entry(call.get("id"), call.get("name") or "", call.get("args"))
                for call in message.invalid_tool_calls
            ),
        ]
    return shaped


def _to_hf_message(message: BaseMessage) -> HFMessage:
    if isinstance(message, AIMessage):
        return {"role": "assistant", "content": _assistant_blocks(message)}
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": _content_blocks(message.content)}
    if isinstance(message, (HumanMessage, ToolMessage)):
        return {"role": "user", "content": _content_blocks(message.content)}
    if isinstance(message, ChatMessage) and message.role in ("user", "assistant", "system"):
        return {"role": message.role, "content": _content_blocks(message.content)}
    raise ValueError(f"cannot send a {type(message).__name__} to a local chat model")


def _assistant_blocks(message: AIMessage) -> list[HFBlock]:
    """The turn's text, then its calls written as the model writes them (one block each)."""
    blocks = _text_blocks(message.content)
    written = [tool_call_text(call["name"], call["args"]) for call in message.tool_calls]
    if written and any(block["text"] for block in blocks):
        written[0] = "\n" + written[0]
    return blocks + [{"type": "text", "text": text} for text in written]


def _as_list(content: str | list[str | dict[Any, Any]]) -> list[str | dict[Any, Any]]:
    return [content] if isinstance(content, str) else list(content)


def _text_blocks(content: str | list[str | dict[Any, Any]]) -> list[HFBlock]:
    """Text only (assistant turns): tool calls, reasoning and other blocks are dropped."""
    blocks: list[HFBlock] = []
    for item in _as_list(content):
        if isinstance(item, str):
            blocks.append({"type": "text", "text": item})
        elif item.get("type") == "text":
            blocks.append({"type": "text", "text": str(item.get("text", ""))})
    return blocks


def _content_blocks(content: str | list[str | dict[Any, Any]]) -> list[HFBlock]:
    return [_to_hf_block(item) for item in _as_list(content)]


def _to_hf_block(item: str | dict[Any, Any]) -> HFBlock:
    if isinstance(item, str):
        return {"type": "text", "text": item}
    block_type = item.get("type")
    if block_type == "text":
        return {"type": "text", "text": str(item.get("text", ""))}
    if block_type in ("image", "image_url"):
        return {"type": "image", "image": image_from_block(item)}
    raise ValueError(f"unsupported content block type {block_type!r} for a local chat model")


def image_from_block(block: dict[Any, Any]) -> Image.Image:
    """Decode a LangChain v1 / v0.3 standard image block or an OpenAI `image_url` block."""
    if block.get("type") == "image_url":
        value = block.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        return _image_from_url(url)
    if "base64" in block:
        return decode_block_image(block["base64"])
    if block.get("source_type") == "base64":
        return decode_block_image(block.get("data"))
    if "url" in block:
        return _image_from_url(block["url"])
    raise ValueError(f"image block has no base64 data: {_REMOTE_IMAGE_HINT}")


def _image_from_url(url: object) -> Image.Image:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ValueError(f"image URL {str(url)[:80]!r} is not a data: URL; {_REMOTE_IMAGE_HINT}")
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        raise ValueError("image data: URL must be base64-encoded (data:image/png;base64,...)")
    return decode_block_image(data)
