"""Calling the node model (with retries for transient server failures) and recording the call,
shared by every graph."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from langgraph.types import RetryPolicy

from zoom_refine.agent import models
from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.conversation import to_model_messages
from zoom_refine.agent.families import Family
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.state import StepRecord
from zoom_refine.agent.strict_json import strict_json
from zoom_refine.tools.errors import InvalidInputError


def is_transient_model_error(error: BaseException) -> bool:
    """Worth retrying: the server was unreachable, timed out, overloaded or failed (5xx).

    Never a parse problem (those are recorded, not raised) nor a 4xx (a bad request stays bad).
    """
    import httpx
    import openai

    if isinstance(error, (openai.APIConnectionError, openai.RateLimitError)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(error, openai.APIStatusError):
        return error.status_code >= 500
    return isinstance(error, (httpx.TransportError, ConnectionError, TimeoutError))


NEEDS_TRUSTED_MM_KWARGS = (
    "the model server refuses per-request processor options (server_tile_budget 'vllm' sends "
    "mm_processor_kwargs with the tile budget): start vLLM with --trust-request-mm-kwargs, or set "
    "the budget server-wide with --mm-processor-kwargs '{{\"max_patches\": N}}' and use "
    "--server-tile-budget none (server: {server})"
)
TOO_MANY_IMAGES = (
    "the model server refuses this many images in one request (refine sends the view and each "
    "crop together: 1 + max_hops x max_regions images): start vLLM with --limit-mm-per-prompt "
    "'{{\"image\": 4}}' or more (server: {server})"
)
CONTEXT_TOO_LONG = (
    "the request is longer than the model server's context (images cost tokens per tile): start "
    "vLLM with a larger --max-model-len, or send a smaller tile budget (--max-patches N with "
    "--server-tile-budget vllm) (server: {server})"
)
SERVER_REFUSALS = (
    ("Per-request mm_processor_kwargs are disabled", NEEDS_TRUSTED_MM_KWARGS),
    ("may be provided in one prompt", TOO_MANY_IMAGES),
    ("maximum context length is", CONTEXT_TOO_LONG),  # "This model's maximum context length is N"
    ("exceeds model's maximum context length", CONTEXT_TOO_LONG),  # after images are expanded
)
"""(text in vLLM's 400 reply, what to tell the user): refusals a server flag fixes."""


def server_refusal(error: BaseException) -> str | None:
    """One line saying which server flag fixes `error`, when it is a 400 from an
    OpenAI-compatible server (vLLM's wording) that a flag fixes; else None."""
    import openai

    if not isinstance(error, openai.BadRequestError):
        return None
    text = error.message
    for marker, message in SERVER_REFUSALS:
        if marker in text:
            server = " ".join(text.split())[:300]
            return message.format(server=server)
    return None


MODEL_RETRY = RetryPolicy(
    max_attempts=3, initial_interval=1.0, backoff_factor=2.0, retry_on=is_transient_model_error
)
"""Retries for the nodes that call the model: 3 attempts, waiting about 1 s then 2 s."""


@dataclass(frozen=True)
class ModelReply:
    """The model's text, how long the call took, and the counters it reported."""

    text: str
    seconds: float
    usage: dict[str, int]
    image_sizes: list[list[int]] | None = None
    """[width, height] each image was resized to by the model's processor, when it says."""
    logprobs: dict[str, Any] | None = None
    """OpenAI-style token log-probabilities, when asked for and returned."""

    @property
    def processed_size(self) -> tuple[int, int] | None:
        """(width, height) the processor resized the last image to, when the backend says."""
        if not self.image_sizes:
            return None
        width, height = self.image_sizes[-1]
        return int(width), int(height)


def resolve_model(context: ZoomContext) -> BaseChatModel:
    """The context's model object, or the process-wide cached model its spec names. An
    in-process model is loaded here, once, so that views are made at its input size
    (`ZoomContext.model_input_size` asks the loaded model and never loads one itself)."""
    model = context.model
    if isinstance(model, str):
        model = models.load_chat_model(model, **context.model_settings())
    if isinstance(model, LocalVisionChatModel):
        model.load()
    return model


def resolve_family(context: ZoomContext, model: BaseChatModel) -> Family:
    """The model family (`ZoomContext.resolved_family`)."""
    return context.resolved_family(model)


def call_model(
    model: BaseChatModel, log: Sequence[BaseMessage], *, logprobs: bool = False
) -> ModelReply:
    """Send the conversation (as plain turns) and time the call."""
    runnable = model.bind(logprobs=True) if logprobs else model
    reply, seconds = chat(runnable, to_model_messages(log))
    return model_reply(reply, seconds)


def chat(runnable: Runnable[Any, Any], messages: Sequence[BaseMessage]) -> tuple[AIMessage, float]:
    """The one model call of every graph: send `messages` as they are, and return the reply and
    the seconds it took. A server's 400 that a server flag fixes becomes one line
    (`InvalidInputError`, `server_refusal`); other failures pass through (retried by
    `MODEL_RETRY` when transient)."""
    started = time.perf_counter()
    try:
        reply = runnable.invoke(list(messages))
    except Exception as error:  # re-raised unless a server flag fixes it (one line, user error)
        refusal = server_refusal(error)
        if refusal is None:
            raise
        raise InvalidInputError(refusal) from error
    seconds = time.perf_counter() - started
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=reply.content)
    return reply, seconds


def model_reply(reply: AIMessage, seconds: float) -> ModelReply:
    """The record fields of a reply: its text, time, counters, image sizes, log-probabilities."""
    sizes = reply.response_metadata.get("image_sizes")
    return ModelReply(
        text=reply.text,
        seconds=round(seconds, 4),
        usage=reply_usage(reply),
        image_sizes=sizes if isinstance(sizes, list) else None,
        logprobs=_logprobs(reply),
    )


def _logprobs(reply: BaseMessage) -> dict[str, Any] | None:
    value = reply.response_metadata.get("logprobs") if isinstance(reply, AIMessage) else None
    return value if isinstance(value, dict) else None


def reply_usage(reply: BaseMessage) -> dict[str, int]:
    """Counters for `usage`: one call; tokens in / out / reused from a cache where reported; for
    the local backend also the vision tiles encoded and the prompt tokens actually prefilled."""
    usage: dict[str, int] = {"model_calls": 1}
    metadata = getattr(reply, "usage_metadata", None) or {}
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        if isinstance(metadata.get(key), int):
            usage[key] = int(metadata[key])
    details = metadata.get("input_token_details") or {}
    if isinstance(details.get("cache_read"), int):
        usage["cached_tokens"] = int(details["cache_read"])
    response = reply.response_metadata if isinstance(reply, AIMessage) else {}
    for key in ("vision_tiles", "prefilled_tokens"):
        if isinstance(response.get(key), int):
            usage[key] = int(response[key])
    return usage


def step_record(node: str, hop: int, reply: ModelReply, **parsed: Any) -> StepRecord:
    """One row of the trace: which node, what the model said (verbatim), what we read from it
    (`parsed`: the other `StepRecord` fields, made strict JSON: a non-finite number the model
    wrote is kept as a string, `agent.strict_json`)."""
    record: dict[str, Any] = {"node": node, "hop": hop, "raw": reply.text}
    record |= strict_json(parsed)
    record |= {"seconds": reply.seconds, "usage": reply.usage}
    return cast(StepRecord, record)
