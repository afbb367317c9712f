"""For servers that refuse images inside tool messages: re-send them as a user message.

OpenAI's chat API (and servers that copy it, such as vLLM) accept images only in user messages;
a tool result must be text. `move_tool_images_to_user` rewrites a conversation before it is sent:
each ToolMessage keeps its text (plus a note saying where the image went), and the images of a
run of consecutive tool messages follow them in one user message, so the assistant's tool calls
are still answered first, as the API requires. The conversation in the graph state is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage

IMAGE_BLOCK_TYPES = frozenset({"image", "image_url"})
MOVED_NOTE = "[the image of this tool result follows in the next user message]"
HEADER = "Images returned by the tool call(s) above:"


def is_image_block(block: object) -> bool:
    """A standard LangChain image block, or an OpenAI-style `image_url` part."""
    return isinstance(block, dict) and block.get("type") in IMAGE_BLOCK_TYPES


def move_tool_images_to_user(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The same conversation with every tool message's images moved to a following user message.

    Messages without images in tool results are returned as they are (the same objects)."""
    out: list[BaseMessage] = []
    pending: list[Any] = []
    for message in messages:
        if not isinstance(message, ToolMessage):
            _flush(out, pending)
        if isinstance(message, ToolMessage) and isinstance(message.content, list):
            images = [block for block in message.content if is_image_block(block)]
            if images:
                texts = [block for block in message.content if not is_image_block(block)]
                note = {"type": "text", "text": MOVED_NOTE}
                out.append(message.model_copy(update={"content": [*texts, note]}))
                pending.append({"type": "text", "text": f"{message.name or 'tool'} result:"})
                pending.extend(images)
                continue
        out.append(message)
    _flush(out, pending)
    return out


def _flush(out: list[BaseMessage], pending: list[Any]) -> None:
    if pending:
        out.append(HumanMessage(content=[{"type": "text", "text": HEADER}, *pending]))
        pending.clear()
