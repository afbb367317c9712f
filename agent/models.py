"""One function turns a model spec into a LangChain chat model; loaded models are cached.

Specs:
- `hf:<repo id or local path>`: our local transformers backend (InternVL3 `-hf` checkpoints…);
- `openai:<model>`: `ChatOpenAI`, for OpenAI or any OpenAI-compatible server given `base_url`
  (vLLM, LMDeploy, SGLang, `transformers serve`); several URLs give one `ChatOpenAI` per server
  behind `agent.replicas.ReplicaChatModel`;
- any other `provider:model`: LangChain's `init_chat_model` (needs the `langchain` package).

Every spec is checked (`check_model_spec`) before a model is made, so a spec that cannot work fails
at once with one line saying what to do: an unknown provider, a missing provider package, a hosted
`openai:` model without a key, a model folder that does not exist, or hub weights that are neither
cached nor downloadable (no waiting out the hub client's retries).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.lru import LruMap

BAD_SPEC = (
    "model spec {spec!r} is not understood: use hf:<repo or path>, openai:<model> (with a base "
    "URL for a local server) or provider:model"
)
NEEDS_LANGCHAIN = (
    "model spec {spec!r} needs LangChain's init_chat_model: pip install langchain (and the "
    "provider's package)"
)
UNKNOWN_PROVIDER = (
    "model spec {spec!r}: unknown provider {provider!r}{suggestion}; use hf:<repo or path>, "
    "openai:<model>, or one of LangChain's {count} init_chat_model providers (anthropic:, "
    "google_genai:, ollama:, …)"
)
MISSING_PACKAGE = "model spec {spec!r} needs the {package} package: pip install {package}"
MISSING_KEY = (
    "model spec {spec!r} needs an API key: set OPENAI_API_KEY or pass --api-key; for a local "
    "OpenAI-compatible server give its URL with --base-url (any key works there)"
)
CANNOT_CREATE = "cannot create model {spec!r}: {reason}"
NO_MODEL_FOLDER = "cannot load model {spec!r}: no model folder at {path} (no config.json there)"
NOT_A_REPO = (
    "cannot load model {spec!r}: {name!r} is neither a model folder nor a hub repo id (org/name)"
)
ALTERNATIVES = (
    "use a downloaded checkpoint (--model hf:/path/to/checkpoint), a model server (--model "
    "openai:NAME --base-url URL), or try the workflow offline with `zoom-refine demo`"
)
HUB_UNREACHABLE = (
    "cannot download {repo!r}: the Hugging Face hub ({endpoint}) cannot be reached ({reason}) and "
    "the weights are not in the cache ({cache}); " + ALTERNATIVES
)
HUB_OFFLINE = (
    "cannot load {repo!r}: HF_HUB_OFFLINE is set and the weights are not in the cache ({cache}); "
    + ALTERNATIVES
)
HUB_PROBE_SECONDS = 4.0
"""How long to wait for the hub to answer one HEAD request before calling it unreachable."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
NO_API_KEY = "EMPTY"
"""Local OpenAI-compatible servers accept any key; the client library requires one."""
API_KEY_ENV = "OPENAI_API_KEY"
"""Where `openai:` models read their key: the environment, or `use_api_key` (CLI `--api-key`)."""

ServerUrls = str | tuple[str, ...] | None
"""`base_url`: one server URL, several (replicas of one model, see `agent.replicas`), or none."""

_ModelKey = tuple[str, ServerUrls, int, int | None, float, str, bool, int | None, int | None]
_CACHE: LruMap[_ModelKey, BaseChatModel] = LruMap(capacity=64)
"""Chat models by spec and settings (a few objects each; weights live in the local backend's
own cache, `agent.local.backend`)."""


def load_chat_model(
    spec: str,
    *,
    base_url: ServerUrls = None,
    max_new_tokens: int = 512,
    max_patches: int | None = 12,
    request_timeout: float = 120.0,
    server_tile_budget: str = "none",
    reuse_prefix: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> BaseChatModel:
    """The chat model for `spec`, created once per process and argument set.

    Nothing is downloaded or loaded here for `hf:` specs: the local backend loads its weights
    on its first call.
    """
    key = (
        spec, base_url, max_new_tokens, max_patches, request_timeout, server_tile_budget,
        reuse_prefix, min_pixels, max_pixels,
    )  # fmt: skip
    return _CACHE.get_or_create(key, lambda: _create(*key))


def loaded_chat_model(
    spec: str,
    *,
    base_url: ServerUrls = None,
    max_new_tokens: int = 512,
    max_patches: int | None = 12,
    request_timeout: float = 120.0,
    server_tile_budget: str = "none",
    reuse_prefix: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> BaseChatModel | None:
    """The chat model `load_chat_model` made for these arguments, or None if it has not (never
    creates one)."""
    key = (
        spec, base_url, max_new_tokens, max_patches, request_timeout, server_tile_budget,
        reuse_prefix, min_pixels, max_pixels,
    )  # fmt: skip
    return _CACHE.get(key)


def _create(
    spec: str,
    base_url: ServerUrls,
    max_new_tokens: int,
    max_patches: int | None,
    request_timeout: float,
    server_tile_budget: str,
    reuse_prefix: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> BaseChatModel:
    check_model_spec(spec, base_url)
    provider, _, name = spec.partition(":")
    if provider == "hf":
        from zoom_refine.agent.local.model import LocalVisionChatModel

        return LocalVisionChatModel(
            model_path=name,
            max_new_tokens=max_new_tokens,
            max_patches=max_patches,
            reuse_prefix=reuse_prefix,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
    if provider == "openai":
        extra_body = server_tile_budget_body(
            server_tile_budget, max_patches, min_pixels=min_pixels, max_pixels=max_pixels
        )
        if isinstance(base_url, tuple):  # several servers of this model: one client each
            from zoom_refine.agent.replicas import ReplicaChatModel

            return ReplicaChatModel.over(
                base_url,
                lambda url: _openai_model(name, url, max_new_tokens, request_timeout, extra_body),
            )
        return _openai_model(name, base_url, max_new_tokens, request_timeout, extra_body)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as error:
        raise InvalidInputError(NEEDS_LANGCHAIN.format(spec=spec)) from error
    try:
        model: BaseChatModel = init_chat_model(spec, temperature=0, max_tokens=max_new_tokens)
    except Exception as error:  # a missing key or setting, as the provider's class words it
        raise InvalidInputError(
            CANNOT_CREATE.format(spec=spec, reason=_first_line(error))
        ) from error
    return model


def check_model_spec(spec: str, base_url: ServerUrls = None) -> None:
    """Raise InvalidInputError, with one line saying what to do, unless `spec` can be made into a
    model here: `provider:name` with a known provider whose package is installed; `openai:`
    with a key (OPENAI_API_KEY) or a `base_url`; `hf:` with an existing model folder, or a hub
    repo id whose weights are cached or can be downloaded.

    Loads nothing. For an `hf:` repo id it makes at most one quick request (`HUB_PROBE_SECONDS`)
    to see whether the hub answers. When it does not but the weights are cached, huggingface_hub
    is switched to offline mode for this process (`use_hub_offline`): the cached files are used
    at once instead of after minutes of retried freshness checks. Called by `load_chat_model`.
    """
    provider, _, name = spec.partition(":")
    if not provider.strip() or not name.strip():
        raise InvalidInputError(BAD_SPEC.format(spec=spec))
    if provider == "hf":
        _check_hf(spec, name)
    elif provider == "openai":
        _check_package(spec, "langchain_openai")
        if not base_url and not os.environ.get(API_KEY_ENV):
            raise InvalidInputError(MISSING_KEY.format(spec=spec))
    else:
        _check_provider(spec, provider)


def _check_provider(spec: str, provider: str) -> None:
    """A provider LangChain's `init_chat_model` knows, with its package installed."""
    _check_package(spec, "langchain", hint=NEEDS_LANGCHAIN)
    from langchain.chat_models import base

    known: dict[str, tuple[Any, ...]] | None = getattr(base, "_BUILTIN_PROVIDERS", None)
    if not isinstance(known, dict):  # another LangChain version: init_chat_model will tell
        return
    if provider not in known:
        close = difflib.get_close_matches(provider, ["hf", *known], n=1)
        raise InvalidInputError(
            UNKNOWN_PROVIDER.format(
                spec=spec,
                provider=provider,
                suggestion=f" (did you mean {close[0]!r}?)" if close else "",
                count=len(known),
            )
        )
    module = str(known[provider][0])
    _check_package(spec, module)


def _check_package(spec: str, module: str, hint: str = MISSING_PACKAGE) -> None:
    top = module.split(".", maxsplit=1)[0]
    if importlib.util.find_spec(top) is None:
        raise InvalidInputError(hint.format(spec=spec, package=top.replace("_", "-")))


def _check_hf(spec: str, name: str) -> None:
    """A model folder with a config.json, or a hub repo id whose weights we can get."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        if not (path / "config.json").is_file():
            raise InvalidInputError(NO_MODEL_FOLDER.format(spec=spec, path=path))
        return
    try:
        validate_repo_id(name)
    except HFValidationError as error:
        raise InvalidInputError(NOT_A_REPO.format(spec=spec, name=name)) from error
    _check_hub_weights(name)


def _check_hub_weights(repo_id: str) -> None:
    from huggingface_hub import constants

    cached = hub_weights_cached(repo_id)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise InvalidInputError(HUB_OFFLINE.format(repo=repo_id, cache=constants.HF_HUB_CACHE))
        return
    reason = hub_unreachable_reason()
    if reason is None:
        return
    if not cached:
        raise InvalidInputError(
            HUB_UNREACHABLE.format(
                repo=repo_id,
                endpoint=constants.ENDPOINT,
                reason=reason,
                cache=constants.HF_HUB_CACHE,
            )
        )
    use_hub_offline()


def hub_weights_cached(repo_id: str) -> bool:
    """Whether the hub cache holds `repo_id`'s config and weights (main revision)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and any(cached(filename) for filename in WEIGHT_FILES)


def hub_unreachable_reason(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None when the hub (`HF_ENDPOINT`) answers a HEAD request within `timeout` seconds (any
    HTTP status), else why not. Bounded even where name resolution hangs: the request runs in a
    daemon thread that is given up on after `timeout` + 1 s."""
    from huggingface_hub import constants, get_session

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            get_session().head(constants.ENDPOINT, timeout=timeout)
            outcome.append(None)
        except Exception as error:  # any failure to get an answer means unreachable
            outcome.append(_first_line(error) or type(error).__name__)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def use_hub_offline() -> None:
    """Put huggingface_hub (and transformers, which asks it) into offline mode for this process:
    cached files are used without freshness checks, and nothing is downloaded."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def use_api_key(key: str | None) -> None:
    """Use an explicitly given key (CLI `--api-key`) for `openai:` models in this process.

    It is put where the environment's key would be, so both take the same path: into the client's
    request headers only. The key is never part of a model spec, the context, `config.json`,
    traces or messages. None (no option given) keeps the environment's key.
    """
    if key:
        os.environ[API_KEY_ENV] = key


def server_tile_budget_body(
    field: str,
    max_patches: int | None,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any] | None:
    """The request-body fields that carry an InternVL tile budget and a Qwen pixel budget
    (`min_pixels`/`max_pixels`, pixel counts) to a given server.

    vLLM (`mm_processor_kwargs`, accepted only by a server started with
    `--trust-request-mm-kwargs`) passes each key to the checkpoint's processor and drops, with a
    warning in its log, the keys that processor does not take. Both InternVL formats are covered:
    `max_patches` is read by `-hf` checkpoints (`InternVLForConditionalGeneration`, served by
    vLLM's `interns1` model with transformers' GotOcr2 image processor), `max_dynamic_patch` by
    the original format (`InternVLChatModel`, vLLM's own `InternVLProcessor`). Both count tiles
    without the thumbnail. Qwen2.5-VL's and Qwen3-VL's image processors read `min_pixels` and
    `max_pixels`; other processors drop them.
    """
    budget: dict[str, int] = {}
    if max_patches is not None:
        budget["max_patches"] = max_patches
    if min_pixels:
        budget["min_pixels"] = min_pixels
    if max_pixels:
        budget["max_pixels"] = max_pixels
    if not budget or field == "none":
        return None
    if field == "transformers":
        return {"chat_template_kwargs": {"processor_kwargs": {"images_kwargs": budget}}}
    if field == "vllm":
        if max_patches is not None:
            budget["max_dynamic_patch"] = max_patches
        return {"mm_processor_kwargs": budget}
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
