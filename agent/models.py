"""One function turns a model spec into a LangChain chat model; loaded models are cached.

Specs:
- `hf:<repo id or local path>`: our local transformers backend (InternVL3 `-hf` checkpoints…);
- `openai:<model>`: `ChatOpenAI`, for OpenAI or any OpenAI-compatible server given `base_url`
  (vLLM, LMDeploy, SGLang, `transformers serve`);
- any other `provider:model`: LangChain's `init_chat_model` (needs the `langchain` package).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from langchain_core.language_models import BaseChatModel

from zoom_refine.tools.errors import InvalidInputError

BAD_SPEC = (
    "model spec {spec!r} is not understood: use hf:<repo or path>, openai:<model> (with a base "
    "URL for a local server) or provider:model"
)
NEEDS_LANGCHAIN = (
    "model spec {spec!r} needs LangChain's init_chat_model: pip install langchain (and the "
    "provider's package)"
)
NO_API_KEY = "EMPTY"
"""Local OpenAI-compatible servers accept any key; the client library requires one."""
API_KEY_ENV = "OPENAI_API_KEY"
"""Where `openai:` models read their key: the environment, or `use_api_key` (CLI `--api-key`)."""

_CACHE: dict[tuple[str, str | None, int, int | None, float, str], BaseChatModel] = {}
_LOCK = threading.Lock()


def load_chat_model(
    spec: str,
    *,
    base_url: str | None = None,
    max_new_tokens: int = 512,
    max_patches: int | None = 12,
    request_timeout: float = 120.0,
    server_tile_budget: str = "none",
) -> BaseChatModel:
    """The chat model for `spec`, created once per process and argument set.

    Nothing is downloaded or loaded here for `hf:` specs: the local backend loads its weights
    on its first call.
    """
    key = (spec, base_url, max_new_tokens, max_patches, request_timeout, server_tile_budget)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _create(*key)
        return _CACHE[key]


def loaded_chat_model(
    spec: str,
    *,
    base_url: str | None = None,
    max_new_tokens: int = 512,
    max_patches: int | None = 12,
    request_timeout: float = 120.0,
    server_tile_budget: str = "none",
) -> BaseChatModel | None:
    """The chat model `load_chat_model` made for these arguments, or None if it has not (never
    creates one)."""
    key = (spec, base_url, max_new_tokens, max_patches, request_timeout, server_tile_budget)
    with _LOCK:
        return _CACHE.get(key)


def _create(
    spec: str,
    base_url: str | None,
    max_new_tokens: int,
    max_patches: int | None,
    request_timeout: float,
    server_tile_budget: str,
) -> BaseChatModel:
    provider, _, name = spec.partition(":")
    if not name.strip():
        raise InvalidInputError(BAD_SPEC.format(spec=spec))
    if provider == "hf":
        from zoom_refine.agent.local.model import LocalVisionChatModel

        return LocalVisionChatModel(
            model_path=name, max_new_tokens=max_new_tokens, max_patches=max_patches
        )
    if provider == "openai":
        extra_body = server_tile_budget_body(server_tile_budget, max_patches)
        return _openai_model(name, base_url, max_new_tokens, request_timeout, extra_body)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as error:
        raise InvalidInputError(NEEDS_LANGCHAIN.format(spec=spec)) from error
    model: BaseChatModel = init_chat_model(spec, temperature=0, max_tokens=max_new_tokens)
    return model


def use_api_key(key: str | None) -> None:
    """Use an explicitly given key (CLI `--api-key`) for `openai:` models in this process.

    It is put where the environment's key would be, so both take the same path: into the client's
    request headers only. The key is never part of a model spec, the context, `config.json`,
    traces or messages. None (no option given) keeps the environment's key.
    """
    if key:
        os.environ[API_KEY_ENV] = key


def server_tile_budget_body(field: str, max_patches: int | None) -> dict[str, Any] | None:
    """The request-body fields that carry an InternVL tile budget to a given server."""
    if max_patches is None or field == "none":
        return None
    if field == "transformers":
        images_kwargs = {"images_kwargs": {"max_patches": max_patches}}
        return {"chat_template_kwargs": {"processor_kwargs": images_kwargs}}
    if field == "vllm":
        return {"mm_processor_kwargs": {"max_dynamic_patch": max_patches}}
    raise InvalidInputError(f"server_tile_budget must be none, transformers or vllm; got {field!r}")


def _openai_model(
    name: str,
    base_url: str | None,
    max_new_tokens: int,
    request_timeout: float,
    extra_body: dict[str, Any] | None,
) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    options: dict[str, Any] = {
        "model": name,
        "temperature": 0,
        "max_tokens": max_new_tokens,
        "timeout": request_timeout,
        "max_retries": 0,  # the graph's RetryPolicy retries, with backoff, per node
    }
    if extra_body:
        options["extra_body"] = extra_body
    if base_url:
        options["base_url"] = base_url
        # A local server needs no real key; a hosted one reads OPENAI_API_KEY as usual.
        options["api_key"] = os.environ.get(API_KEY_ENV) or NO_API_KEY
    return ChatOpenAI(**options)
