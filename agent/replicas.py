"""Several OpenAI-compatible servers of one model behind one chat model (`--base-url` repeated).

`ReplicaChatModel` is a LangChain chat model over one `ChatOpenAI` per server URL (built by
`agent.models`); the graphs call it like any other model. Each request goes to one replica:

- **A conversation stays on its replica**, so the server's prefix cache holds its opening when the
  refine request (the localize request plus a turn) arrives. A conversation is recognised by
  `conversation_key`: a hash of its opening messages (up to and including the first user turn,
  images included). That is exactly what a server's prefix cache is keyed on, and every request of
  one Zoom-Refine run starts with it byte for byte (`agent.conversation`). The LangGraph thread id
  is not used: a run has one only when it is checkpointed (`eval --trace-db`, Studio), and one
  Studio thread may hold several questions with different openings.
- **A new conversation goes to the replica with the fewest requests in flight** (ties: the one
  sent the fewest requests so far), so a slow or busy replica gets less.
- **A failing replica is taken out; no request is lost.** A refused or dropped connection takes it
  out at once; a 5xx, a timeout, a rate limit or a malformed reply (HTTP 200 whose body is not a
  chat completion: not JSON, cut short, no `choices`; `malformed_reply`) sends the request
  elsewhere, and `strikes_to_drop` such failures in a row take it out too. The failed request is
  re-sent at once to another replica (its conversation moves there); only when every replica is
  out does the request fail, with `AllReplicasDownError` naming each server and why it is out.
  That error is a `ConnectionError`, so the graph's `MODEL_RETRY` retries it like an unreachable
  single server. A replica out of service is tried again with one request every
  `retry_down_after` seconds, and rejoins when it answers.

`ReplicaRouter` is the policy alone (no LangChain, no network), tested on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable
from pydantic import PrivateAttr, model_validator

from zoom_refine.tools.errors import AllReplicasDownError, InvalidInputError

logger = logging.getLogger(__name__)

Outcome = Literal["answered", "failed", "down"]
"""How a request to a replica ended: it `answered` (any readable reply, a 4xx included: the
server is alive), `failed` (5xx, timeout, rate limit, a malformed reply: a strike), or the replica
is `down` (connection refused or dropped: out at once)."""

STRIKES_TO_DROP = 3
"""Failed requests in a row (5xx, timeouts) that take a replica out, as `MODEL_RETRY`'s attempts
would give up on a single server."""
RETRY_DOWN_AFTER_S = 30.0
"""Seconds before a replica that was taken out is sent one request again."""
REMEMBERED_CONVERSATIONS = 4096
"""Conversations whose replica is remembered (least recently used forgotten first): far more
than are ever in flight at once."""
REASON_CHARS = 120
REPLY_READERS = frozenset({"_create_chat_result", "_acreate_chat_result"})
"""langchain-openai's functions that turn a server's parsed reply into a chat result: an error
raised inside one is the reply's fault (no `choices`, a choice without a message, a body that
was not JSON at all), never the request's."""
MALFORMED = "malformed reply ({reason})"

ALL_DOWN = (
    "all {count} model servers are down: {servers}; start them (or fix --base-url) and run "
    "again — each is retried {retry:g} s after it went down"
)
DUPLICATE_URL = "base_url lists {url} more than once; give each server once"
NOT_A_URL = "base_url must be server URLs (strings), got {value!r}"


def server_urls(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """`base_url` normalised: None, one URL as a string, or several as a tuple (the replicas).

    A sequence of one is that URL; an empty one is None. Refuses a URL given twice (one server
    counted as two would get twice the share) and anything but strings (InvalidInputError).
    """
    if value is None or isinstance(value, str):
        return value or None
    urls = tuple(value)
    for url in urls:
        if not isinstance(url, str) or not url.strip():
            raise InvalidInputError(NOT_A_URL.format(value=url))
    seen: set[str] = set()
    for url in urls:
        if url.rstrip("/") in seen:
            raise InvalidInputError(DUPLICATE_URL.format(url=url))
        seen.add(url.rstrip("/"))
    if not urls:
        return None
    return urls[0] if len(urls) == 1 else urls


def conversation_key(messages: Sequence[BaseMessage]) -> str | None:
    """A short hash of the conversation's opening: its messages up to and including the first
    user turn (text and images). None when there is no user turn."""
    digest = hashlib.blake2b(digest_size=16)
    for message in messages:
        digest.update(message.type.encode())
        text = json.dumps(message.content, sort_keys=True, ensure_ascii=False, default=str)
        digest.update(text.encode())
        if isinstance(message, HumanMessage):
            return digest.hexdigest()
    return None


@dataclass
class Replica:
    """One server and what the router knows of it."""

    url: str
    in_flight: int = 0
    """Requests sent and not yet answered."""
    sent: int = 0
    """Requests sent so far."""
    strikes: int = 0
    """Failed requests in a row (reset by any answer)."""
    down_until: float | None = None
    """While taken out: the monotonic time (seconds) of its next trial request; None while up."""
    reason: str = ""
    """Why it last failed (one line)."""


class ReplicaRouter:
    """Which replica gets each request: the routing policy, thread-safe, with no I/O.

    Call `acquire` before sending a request and `release` with its outcome after, always.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        strikes_to_drop: int = STRIKES_TO_DROP,
        retry_down_after: float = RETRY_DOWN_AFTER_S,
        remembered: int = REMEMBERED_CONVERSATIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise InvalidInputError("a replica router needs at least one server URL")
        self.replicas = [Replica(url) for url in urls]
        self.strikes_to_drop = max(1, strikes_to_drop)
        self.retry_down_after = retry_down_after
        self._remembered = remembered
        self._clock = clock
        self._lock = threading.Lock()
        self._homes: OrderedDict[str, int] = OrderedDict()
        """Conversation key → index of the replica its requests go to."""

    def acquire(self, key: str | None, exclude: Collection[int] = ()) -> int | None:
        """The replica (index) for the next request of conversation `key`, counted as in flight.

        Its conversation's replica when that one is up, else the up replica with the fewest
        requests in flight; a replica taken out counts as up once its trial time has come (and
        that trial is then taken by this request). `exclude`: replicas this request already
        failed on. None when every replica not excluded is out but some excluded one is up (the
        caller re-raises its last failure); AllReplicasDownError when every replica is out.
        """
        with self._lock:
            now = self._clock()
            usable = [
                index
                for index, replica in enumerate(self.replicas)
                if index not in exclude
                and (replica.down_until is None or replica.down_until <= now)
            ]
            if not usable:
                if any(replica.down_until is None for replica in self.replicas):
                    return None
                raise AllReplicasDownError(self._all_down_message())
            home = self._homes.get(key) if key is not None else None
            if home not in usable:
                home = min(
                    usable, key=lambda i: (self.replicas[i].in_flight, self.replicas[i].sent, i)
                )
            replica = self.replicas[home]
            if replica.down_until is not None:  # its trial request: the next one waits again
                replica.down_until = now + self.retry_down_after
            replica.in_flight += 1
            replica.sent += 1
            if key is not None:
                self._homes[key] = home
                self._homes.move_to_end(key)
                while len(self._homes) > self._remembered:
                    self._homes.popitem(last=False)
            return home

    def release(self, index: int, outcome: Outcome, reason: str = "") -> None:
        """Record how the request `acquire` gave `index` ended; may take the replica out (a
        warning is logged) or bring it back (logged as info)."""
        with self._lock:
            replica = self.replicas[index]
            replica.in_flight -= 1
            was_down = replica.down_until is not None
            if outcome == "answered":
                replica.strikes = 0
                replica.down_until = None
                if was_down:
                    logger.info("model server %s answers again; back in service", replica.url)
                return
            replica.reason = reason
            replica.strikes += 1
            if outcome == "failed" and replica.strikes < self.strikes_to_drop and not was_down:
                return
            replica.strikes = 0
            replica.down_until = self._clock() + self.retry_down_after
            if not was_down:
                up = sum(other.down_until is None for other in self.replicas)
                logger.warning(
                    "model server %s is down (%s): taken out for %g s; %s",
                    replica.url,
                    reason,
                    self.retry_down_after,
                    f"its conversations move to the others ({up} up)" if up else "none is up",
                )

    def home_of(self, key: str) -> int | None:
        """The replica conversation `key` was last sent to, if remembered."""
        with self._lock:
            return self._homes.get(key)

    def _all_down_message(self) -> str:
        servers = ", ".join(f"{r.url} ({r.reason or 'down'})" for r in self.replicas)
        return ALL_DOWN.format(
            count=len(self.replicas), servers=servers, retry=self.retry_down_after
        )


def malformed_reply(error: BaseException) -> bool:
    """Whether `error` says the server answered (HTTP 2xx) with a body that is no chat
    completion: the client could not parse it (langchain-openai attaches the HTTP response to
    such an error), the OpenAI client refused its shape, or it failed while being read into a
    chat result (`REPLY_READERS`). A request the client could not even build is none of these."""
    import openai

    if isinstance(error, openai.APIResponseValidationError):
        return True
    status = getattr(getattr(error, "response", None), "status_code", None)  # httpx or httpx2
    if isinstance(status, int) and 200 <= status < 300:
        return True
    frames = traceback.walk_tb(error.__traceback__)
    return any(
        frame.f_code.co_name in REPLY_READERS
        and str(frame.f_globals.get("__name__", "")).startswith("langchain_openai")
        for frame, _ in frames
    )


def failure_outcome(error: BaseException) -> Outcome:
    """What an exception from a replica says about the replica (see `Outcome`). Anything that
    is not a server failure (a 4xx, our own bug) is `answered`: the replica is not to blame."""
    import httpx
    import openai

    if malformed_reply(error):
        return "failed"
    if isinstance(error, openai.APITimeoutError):
        return "failed"
    if isinstance(error, (openai.APIConnectionError, httpx.TransportError, ConnectionError)):
        return "down"
    if isinstance(error, openai.RateLimitError):
        return "failed"
    if isinstance(error, openai.APIStatusError) and error.status_code >= 500:
        return "failed"
    if isinstance(error, TimeoutError):
        return "failed"
    return "answered"


def failure_reason(error: BaseException) -> str:
    """One short line: the lowest cause's message (`[Errno 111] Connection refused` rather than
    the client's `Connection error.`); a malformed reply says so (`malformed reply (…)`)."""
    cause: BaseException = error
    while cause.__cause__ is not None and str(cause.__cause__).strip():
        cause = cause.__cause__
    text = " ".join(str(cause).split()) or type(cause).__name__
    if malformed_reply(error):
        text = MALFORMED.format(reason=text)
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


class ReplicaChatModel(BaseChatModel):
    """One chat model over several replicas of the same model (see the module docstring).

    Each request is handed to one replica's own `_generate`, so callbacks and tracing see one
    model run per request (its usage counted once). The replica that answered is in the reply's
    `response_metadata["replica"]`.
    """

    replicas: list[BaseChatModel]
    """One chat model per server, in the order of `urls`."""
    urls: list[str]
    """The servers' URLs (for messages and `response_metadata`)."""
    strikes_to_drop: int = STRIKES_TO_DROP
    """Failed requests in a row (5xx, timeouts) that take a replica out."""
    retry_down_after: float = RETRY_DOWN_AFTER_S
    """Seconds before a replica taken out is tried again (with one request)."""

    _router: ReplicaRouter = PrivateAttr()

    @model_validator(mode="after")
    def _make_router(self) -> ReplicaChatModel:
        if not self.replicas or len(self.replicas) != len(self.urls):
            raise ValueError("give one URL per replica, and at least one replica")
        self._router = ReplicaRouter(
            self.urls, strikes_to_drop=self.strikes_to_drop, retry_down_after=self.retry_down_after
        )
        return self

    @classmethod
    def over(cls, urls: Sequence[str], build: Callable[[str], BaseChatModel]) -> ReplicaChatModel:
        """A router over `build(url)` for each URL (`agent.models` passes its ChatOpenAI builder)."""
        return cls(replicas=[build(url) for url in urls], urls=list(urls))

    @property
    def router(self) -> ReplicaRouter:
        """The routing state: per-replica counts, who is up (for monitoring and tests)."""
        return self._router

    @property
    def _llm_type(self) -> str:
        return "zoom-refine-replicas"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        first = self.replicas[0]
        return {"urls": list(self.urls), "model_name": getattr(first, "model_name", None)}

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools as the replicas' own class formats them (every replica is the same kind)."""
        bound = self.replicas[0].bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        key = conversation_key(messages)
        tried: set[int] = set()
        last: BaseException | None = None
        while (index := self._router.acquire(key, tried)) is not None:
            outcome: Outcome = "answered"
            reason = ""
            try:
                result = self.replicas[index]._generate(
                    messages, stop=stop, run_manager=run_manager, **kwargs
                )
            except Exception as error:
                outcome, reason = failure_outcome(error), failure_reason(error)
                if outcome == "answered":
                    raise
                tried.add(index)
                last = error
                continue
            finally:
                self._router.release(index, outcome, reason)
            return self._mark(result, index)
        assert last is not None  # acquire returns None only after a failure
        raise last

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        key = conversation_key(messages)
        tried: set[int] = set()
        last: BaseException | None = None
        while (index := self._router.acquire(key, tried)) is not None:
            outcome: Outcome = "answered"
            reason = ""
            try:
                result = await self.replicas[index]._agenerate(
                    messages, stop=stop, run_manager=run_manager, **kwargs
                )
            except Exception as error:
                outcome, reason = failure_outcome(error), failure_reason(error)
                if outcome == "answered":
                    raise
                tried.add(index)
                last = error
                continue
            finally:
                self._router.release(index, outcome, reason)
            return self._mark(result, index)
        assert last is not None
        raise last

    def _mark(self, result: ChatResult, index: int) -> ChatResult:
        for generation in result.generations:
            generation.message.response_metadata["replica"] = self.urls[index]
        return result
