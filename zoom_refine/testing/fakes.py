"""Scripted chat models for testing graphs that call a vision chat model, offline and instantly.

- `ScriptedVisionModel(replies=[...])` returns the replies in order (one per call, and fails the
  test if called more often) and keeps every conversation it was sent in `.requests`.
- `RuleVisionModel()` answers by the kind of prompt (localize, refine, anything else), so it is
  safe under `graph.batch` and concurrency; `fail_on` makes matching requests raise.
- `ScriptedToolCallingModel(replies=[AIMessage(..., tool_calls=[...]), ...])` for agents that
  bind tools (its `bind_tools` is a no-op).
- `ReplyFake(reply=fn)` replies with `fn(messages)` (a string or an AIMessage; it may raise, as a
  refusing server does), for a model whose reply depends on what it was sent; it counts its
  calls, records them, and records the tools an agent binds.
- `images_in(message)` / `texts_in(message)` decode what a request carried.

A Zoom-Refine localize reply names the answer and a box, `[x1, y1, x2, y2]`, by default in
fractions (0-1) of the image the model was shown (0-1000 is detected too; see `box_format`)::

    from zoom_refine import ZoomContext, build_graph
    from zoom_refine.testing import ScriptedVisionModel

    model = ScriptedVisionModel(replies=[
        "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
        "Rechecked Answer: A\nConfidence: 0.9",
    ])
    result = build_graph().invoke(
        {"image": "scene.png", "question": "What colour is the square?", "options": ["red", "blue"]},
        context=ZoomContext(model=model),
    )
    assert result["answer"] == "A" and len(model.requests) == 2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from pydantic import Field

from zoom_refine.tools.encoding import decode_block_image


class ScriptedVisionModel(BaseChatModel):
    """Replies with `replies` in order; `requests` holds each conversation it was sent."""

    replies: list[str]
    requests: list[list[BaseMessage]] = Field(default_factory=list)
    token_logprob: float | None = None
    """When set and the call asks for logprobs: every reply character is one token with it."""

    @property
    def _llm_type(self) -> str:
        return "scripted-vision"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        index = len(self.requests)
        self.requests.append(list(messages))
        if index >= len(self.replies):
            raise AssertionError(f"model called {index + 1} times; script has {len(self.replies)}")
        metadata: dict[str, Any] = {}
        if kwargs.get("logprobs") and self.token_logprob is not None:
            tokens = [{"token": c, "logprob": self.token_logprob} for c in self.replies[index]]
            metadata["logprobs"] = {"content": tokens}
        reply = AIMessage(
            content=self.replies[index],
            usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
            response_metadata=metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


def images_in(message: BaseMessage) -> list[Image.Image]:
    """Decode the base64 image blocks of a message, in order."""
    blocks: Sequence[Any] = [] if isinstance(message.content, str) else message.content
    return [
        decode_block_image(block["base64"]).convert("RGB")
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "image"
    ]


def texts_in(message: BaseMessage) -> str:
    """The text blocks of a message (or its string content), joined by newlines."""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(
        block["text"]
        for block in message.content
        if isinstance(block, dict) and block.get("type") == "text"
    )


class RuleVisionModel(BaseChatModel):
    """Answers by rule from the last prompt, so it is safe under concurrency: a localize prompt
    gets `localize`, a refine prompt `refine`, anything else (a baseline prompt) `direct`.
    `fail_on` makes any request whose text contains that string raise `error`."""

    localize: str = "Answer: A\nBounding box: [0.2, 0.2, 0.8, 0.8]"
    refine: str = "Rechecked Answer: B\nConfidence: 0.9"
    direct: str = "A"
    fail_on: str | None = None
    error: Exception = ValueError("scripted failure")

    @property
    def _llm_type(self) -> str:
        return "rule-vision"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        everything = "\n".join(texts_in(message) for message in messages)
        if self.fail_on and self.fail_on in everything:
            raise self.error
        last = texts_in(messages[-1])
        if "Rechecked Answer" in last:
            text = self.refine
        elif "Bounding box" in last:
            text = self.localize
        else:
            text = self.direct
        reply = AIMessage(
            content=text,
            usage_metadata={"input_tokens": 50, "output_tokens": 5, "total_tokens": 55},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


class ScriptedToolCallingModel(BaseChatModel):
    """Replays `replies` (AIMessages, some with `tool_calls`); records every request."""

    replies: list[AIMessage]
    requests: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-calling"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedToolCallingModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.requests.append(list(messages))
        reply = self.replies[len(self.requests) - 1]
        return ChatResult(generations=[ChatGeneration(message=reply)])


Reply = Callable[[list[BaseMessage]], str | AIMessage]
"""What `ReplyFake` calls with each conversation: the reply's text, or the whole AIMessage."""


class ReplyFake(BaseChatModel):
    """Replies with `reply(messages)`: a string becomes an AIMessage's content; an AIMessage (with
    `tool_calls` or `usage_metadata`, say) is returned as is; an exception propagates, as from a
    server that refuses. Counts its calls and keeps each conversation in `requests` (unless
    `keep_requests` is False: a long eval that only counts); `bind_tools` records the tools in
    `bound` and returns the model itself, as a server with a tool parser does."""

    reply: Reply
    requests: list[list[BaseMessage]] = Field(default_factory=list)
    keep_requests: bool = True
    calls: int = 0
    bound: list[list[Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "reply-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ReplyFake:
        self.bound.append(list(tools))
        return self

    def __repr__(self) -> str:
        """Cheap and stable: LangChain may repr the model on every call, and a run's settings
        may hold its text (not every request recorded so far)."""
        return f"{type(self).__name__}()"

    __str__ = __repr__

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        if self.keep_requests:
            self.requests.append(list(messages))
        answer = self.reply(list(messages))
        message = answer if isinstance(answer, AIMessage) else AIMessage(content=answer)
        return ChatResult(generations=[ChatGeneration(message=message)])
