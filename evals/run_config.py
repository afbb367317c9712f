"""A run folder's `config.json`, and the check that a resume only adds predictions made the same way.

`config.json` records what produced a folder's predictions (`evals.runner.run_config`). Running
`zoom-refine eval` again on the same `--out` resumes: finished samples are skipped and new ones
appended. That is only sound when the new predictions are made as the old ones were, so before a
run writes anything (inside the folder's lock, before the store is opened) its settings are
compared with the folder's `config.json`:

- A recorded setting that changes results (the model, benchmark, dataset content, methods,
  extractor, bad-row handling, every `ZoomContext` field that shapes a reply: prompts, boxes,
  images, hops, regions, confidence, token and tile budgets, …) differs: the run is refused with
  one `RunSettingsChangedError` line naming each setting, old → new, and the ways on (a new
  `--out`, or `--resume-anyway`).
- Only result-neutral settings differ (`RESULT_NEUTRAL_SETTINGS`: which samples run, where the
  data lies or the server listens, how long to wait, and the package version; and the agent's
  own settings when neither run has `--method agent`): the run goes on.
- Settings that are never recorded (`UNRECORDED_SETTINGS`: concurrency, --ids, --retry-errors,
  --trace-db, the API key) cannot differ and may change freely.

Any recorded difference that goes ahead (neutral, a new package version, or `--resume-anyway`)
is kept: the written config.json holds the new settings and, in `previous_configs`, every earlier
config.json this folder had, oldest first, so the history of what made its predictions survives.
Everything recorded and not listed as neutral counts as result-changing, so a setting added
later is protected by default.

A folder without config.json (fresh, or written before one existed) runs as it always did. A
config.json that cannot be read is treated the same when the folder has no predictions (a run
stopped while first writing it); with predictions, their settings are unknown and the run is
refused unless `--resume-anyway`. A setting missing from the recorded config (written by an older
version) is not compared.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoom_refine.agent.prompt_set import PromptSet
from zoom_refine.agent.strict_json import strict_json
from zoom_refine.tools.errors import RunSettingsChangedError
from zoom_refine.tools.files import replace_bytes

CONFIG_NAME = "config.json"
HISTORY_KEY = "previous_configs"
CONTEXT_KEY = "context"
VERSION_KEY = "zoom_refine_version"
PROMPTS_KEY = "prompts"
PROMPTS_FILE_KEY = "prompts_file"
AGENT_METHOD = "agent"
AGENT_PANEL = "agent"
"""`metadata["cli"]["panel"]` of the `ZoomContext` fields only `--method agent` reads."""

RESULT_NEUTRAL_SETTINGS: frozenset[str] = frozenset(
    {
        "data",  # where the dataset lies; its content is `dataset_sha256`, which is compared
        "shard",  # which samples run (--shard), not how: each record is a whole (sample, method)
        "limit",  # likewise (--limit)
        "base_url",  # where the model is served (a restarted server on another port, or
        # another set of replicas: one URL is recorded as a string, several as a list); the
        # model itself is `model`, which is compared
        "request_timeout",  # how long to wait; a timeout is an error record, which
        # --retry-errors reruns
        VERSION_KEY,  # allowed, and noted: the earlier config (with its version) is kept in
        # previous_configs
        PROMPTS_FILE_KEY,  # where the prompt set lies; its content is `prompts` (a hash of
        # its templates), which is compared
    }
)
"""Recorded settings (top-level config.json keys, or `context` fields, by name) that may differ
from the folder's config.json without refusing a resume: they choose which samples run or how
the run reaches the model, not what a sample's prediction is. Every other recorded setting
changes results."""

UNRECORDED_SETTINGS: tuple[str, ...] = (
    "concurrency",
    "ids",
    "retry_errors",
    "trace_db",
    "api_key",
    "resume_anyway",
)
"""Run options never written to config.json, so never compared: how many samples are in flight,
which ids, whether errors are rerun, where traces go, the API key (never stored anywhere)."""

REFUSED = (
    "run folder {folder} holds predictions made with other settings: {changes}; use a new --out "
    "for these settings, or --resume-anyway to add to these predictions anyway (config.json then "
    "keeps the earlier settings in {history})"
)
UNREADABLE = (
    "run folder {folder} holds predictions but its {name} cannot be read ({reason}), so the "
    "settings that made them are unknown; use a new --out, or --resume-anyway to add to them "
    "anyway"
)
SHOWN_MAX = 60
"""Longest value shown in a refusal, in characters (a dataset's SHA-256 is cut short)."""


@dataclass(frozen=True)
class Change:
    """One recorded setting that differs: its name (a context field by its own name)."""

    name: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.name} {_shown(self.old)} → {_shown(self.new)}"


def prompt_set_settings(prompt_set: PromptSet) -> dict[str, str]:
    """How config.json records a run's prompt set (`ZoomContext.prompts`), in its `context`:
    `prompts` is `sha256:` and the hash of the template texts (compared: another wording refuses
    a resume), `prompts_file` where it was read from (`default` for ours; neutral: the same
    texts moved elsewhere are the same set)."""
    return {PROMPTS_KEY: f"sha256:{prompt_set.sha256}", PROMPTS_FILE_KEY: prompt_set.source}


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """A config's recorded settings by name: the top-level keys and the `context` fields
    (without the history)."""
    flat = {key: value for key, value in config.items() if key not in (CONTEXT_KEY, HISTORY_KEY)}
    context = config.get(CONTEXT_KEY)
    if isinstance(context, dict):
        flat.update(context)
    return flat


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every setting recorded in both configs whose value differs, in the new config's order
    (neutral ones included)."""
    before, after = settings(old), settings(new)
    return [
        Change(name, before[name], value)
        for name, value in after.items()
        if name in before and before[name] != value
    ]


def result_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The differing settings that change results: all but `RESULT_NEUTRAL_SETTINGS`, and but the
    agent's own settings (`agent_only_settings`) when neither config runs `--method agent`."""
    neutral = set(RESULT_NEUTRAL_SETTINGS)
    if not any(AGENT_METHOD in _methods(config) for config in (old, new)):
        neutral |= agent_only_settings()
    return [change for change in changes(old, new) if change.name not in neutral]


def agent_only_settings() -> frozenset[str]:
    """`ZoomContext` fields only `--method agent` reads (the agent panel of the CLI: which tool
    is offered and how calls travel): they cannot change a baseline or zoom-refine prediction,
    so a resume of such a run does not compare them (an older default, e.g. `tool_convention`
    `crop` before `auto`, then refuses nothing)."""
    from zoom_refine.agent.context import ZoomContext

    return frozenset(
        item.name
        for item in dataclasses.fields(ZoomContext)
        if item.metadata.get("cli", {}).get("panel") == AGENT_PANEL
    )


def _methods(config: dict[str, Any]) -> list[Any]:
    methods = config.get("methods")
    return methods if isinstance(methods, list) else [AGENT_METHOD]  # unknown: assume it ran


def resumed_config(
    folder: Path, config: dict[str, Any], *, resume_anyway: bool = False
) -> dict[str, Any]:
    """The config.json to write for a run of `config`'s settings into `folder`, or
    RunSettingsChangedError when the folder's config.json records other result-changing settings
    (unless `resume_anyway`). Reads only; the caller holds the folder's lock."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        return config
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError(f"a JSON {type(old).__name__}, not an object")
    except (OSError, ValueError) as error:
        if not _has_predictions(folder):
            return config  # a run stopped while writing it: nothing was made with it
        if not resume_anyway:
            raise RunSettingsChangedError(
                UNREADABLE.format(folder=folder, name=CONFIG_NAME, reason=_reason(error))
            ) from error
        return {**config, HISTORY_KEY: [{"unreadable": _reason(error)}]}
    refused = result_changes(old, config)
    if refused and not resume_anyway:
        raise RunSettingsChangedError(
            REFUSED.format(folder=folder, changes=", ".join(map(str, refused)), history=HISTORY_KEY)
        )
    history = old.get(HISTORY_KEY)
    history = list(history) if isinstance(history, list) else []
    if changes(old, config):
        history.append({key: value for key, value in old.items() if key != HISTORY_KEY})
    return {**config, HISTORY_KEY: history} if history else config


def write_config_file(folder: Path, config: dict[str, Any]) -> None:
    """Replace `folder`/config.json atomically with strict JSON (as `store.replace_json`), through
    a temporary file of this write's own (`tools.files.replace_bytes`): two processes never share,
    truncate or remove one temporary."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strict_json(config), indent=2, default=str, allow_nan=False)
    replace_bytes(folder / CONFIG_NAME, text.encode())


def _has_predictions(folder: Path) -> bool:
    try:
        return (folder / "predictions.jsonl").stat().st_size > 0
    except OSError:
        return False


def _reason(error: BaseException) -> str:
    text = str(error).replace("\n", " ")
    return text if len(text) <= 2 * SHOWN_MAX else text[: 2 * SHOWN_MAX - 1] + "…"


def _shown(value: Any) -> str:
    """A value as JSON on one line, cut to `SHOWN_MAX` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 1] + "…"
