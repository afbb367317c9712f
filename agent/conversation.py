"""From the graph's message log to the conversation the model is sent.

The log keeps LangGraph's tool protocol (an AI message with a `crop` tool call, then a ToolMessage
holding the crop). Vision models that are not tool-callers (InternVL, most served VLMs) see plain
turns instead: the AI turn's text, then one user turn with the crop image and the next prompt.
The mapping is deterministic, so every request starts with the previous request byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from zoom_refine.tools.views import View


def to_model_messages(log: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Plain user / assistant turns: tool calls dropped, tool results become user images."""
    turns: list[BaseMessage] = []
    for message in log:
        if isinstance(message, AIMessage):
            turns.append(AIMessage(content=message.content))
        elif isinstance(message, ToolMessage):
            _append_user_blocks(turns, [b for b in _blocks(message.content) if _is_image(b)])
        elif isinstance(message, HumanMessage):
            _append_user_blocks(turns, _blocks(message.content))
        else:
            turns.append(message)
    return turns


def last_tool_results(log: Sequence[BaseMessage]) -> list[ToolMessage]:
    """The ToolMessages after the last AI message (every crop of this hop), in call order."""
    results: list[ToolMessage] = []
    for message in reversed(log):
        if not isinstance(message, ToolMessage):
            break
        results.append(message)
    return results[::-1]


def crop_results(results: Sequence[ToolMessage]) -> tuple[list[View], list[str]]:
    """The views the crop tool made, in call order, and why each other call failed (its error
    text); a hop whose every call failed with no message at all says "no crop result"."""
    made = [View.from_record(r.artifact["view"]) for r in results if _is_crop(r)]
    failed = [str(r.content) for r in results if not _is_crop(r)]
    return made, failed if results else ["no crop result"]


def _is_crop(result: ToolMessage) -> bool:
    return result.status != "error" and bool(result.artifact)


def _append_user_blocks(turns: list[BaseMessage], blocks: list[dict[str, Any]]) -> None:
    """Consecutive user content is merged into one user turn (the models expect alternation)."""
    if turns and isinstance(turns[-1], HumanMessage):
        previous = _blocks(turns[-1].content)
        turns[-1] = HumanMessage(content=[*previous, *blocks])
    else:
        turns.append(HumanMessage(content=list(blocks)))


def _blocks(content: str | list[Any]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [
        block if isinstance(block, dict) else {"type": "text", "text": block} for block in content
    ]


def _is_image(block: dict[str, Any]) -> bool:
    return block.get("type") in ("image", "image_url")
