"""The on-disk cache of trained tiny checkpoints: where it is, the key a checkpoint is filed
under, and building one exactly once.

A family's key is the SHA-256 of everything that shapes its weights: the source of its recipe
modules (`recipe_modules(family)`: the shared protocol and training, `SHARED_RECIPE_MODULES`, and
the family's own builders, `FAMILY_RECIPE_MODULES`), its entry in `protocol_families` (replies,
box format, settings, training and held-out samples: `family_entry`), the transformers and torch versions, and the text
of the training conversations as the graph renders them today (so a prompt change in
`agent/prompts.py` retrains too). Another family's builders or entry never enter it: adding or
editing a family retrains that family only. Editing another module of `zoom_refine.testing`
(this one, the fakes, the vLLM venv) retrains nothing.

A build runs under a file lock (concurrent callers wait and share it) in a temporary folder
renamed into place when done, so an interrupted run never leaves a partial checkpoint under the
final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from zoom_refine.testing import (
    protocol,
    protocol_training,
    tiny_internvl,
    tiny_parts,
    tiny_qwen,
    tiny_qwen3,
)
from zoom_refine.testing.protocol import sample_conversations
from zoom_refine.testing.protocol_families import (
    FAMILIES,
    PROTOCOL_BASELINE_REPLY,
    PROTOCOL_BOX_FORMAT,
    PROTOCOL_HELD_OUT,
    PROTOCOL_REPLIES,
    PROTOCOL_SETTINGS,
    PROTOCOL_TRAIN_SAMPLES,
    TinyFamily,
)
from zoom_refine.testing.protocol_training import (
    REPORT_FILE,
    TrainingReport,
    build_protocol_model,
    read_training_report,
    write_report,
)
from zoom_refine.tools.encoding import decode_block_image

CACHE_ENV = "ZOOM_REFINE_TINY_MODEL_CACHE"
"""Overrides the cache folder (see `cache_root`)."""
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
"""The source checkout this module runs from (`zoom_refine/testing/` is two levels down), if any."""
STALE_TEMP_SECONDS = 3600
SHARED_RECIPE_MODULES: tuple[ModuleType, ...] = (tiny_parts, protocol, protocol_training)
"""The modules whose source shapes every family's trained weights (hashed into every key): the
shared builder parts, the protocol and the training."""
FAMILY_RECIPE_MODULES: dict[TinyFamily, tuple[ModuleType, ...]] = {
    "internvl3": (tiny_internvl,),
    "qwen2_5_vl": (tiny_qwen,),
    "qwen3_vl": (tiny_qwen, tiny_qwen3),
}
"""Each family's own recipe modules (hashed into its key only); the last one's
`build_protocol_base` makes the random checkpoint its protocol model is trained from."""
RECIPE_MODULES: tuple[ModuleType, ...] = tuple(
    dict.fromkeys(
        [
            *SHARED_RECIPE_MODULES,
            *(module for modules in FAMILY_RECIPE_MODULES.values() for module in modules),
        ]
    )
)
"""Every module whose source shapes some trained checkpoint."""


def recipe_modules(family: TinyFamily) -> tuple[ModuleType, ...]:
    """The modules hashed into `family`'s key: the shared ones and its own."""
    return (*SHARED_RECIPE_MODULES, *FAMILY_RECIPE_MODULES[family])


def family_entry(family: TinyFamily) -> str:
    """`family`'s entry in `protocol_families` as canonical JSON (hashed into its key in place of
    that module's source, which holds every family's)."""
    entry = {
        "family": family,
        "replies": PROTOCOL_REPLIES[family],
        "baseline_reply": PROTOCOL_BASELINE_REPLY[family],
        "box_format": PROTOCOL_BOX_FORMAT[family],
        "settings": PROTOCOL_SETTINGS[family],
        "train_samples": PROTOCOL_TRAIN_SAMPLES[family],
        "held_out": PROTOCOL_HELD_OUT[family],
    }
    return json.dumps(entry, sort_keys=True)


def cache_root() -> pathlib.Path:
    """Where trained checkpoints are cached: `$ZOOM_REFINE_TINY_MODEL_CACHE` when set; else
    `<repo>/.cache/tiny-models` when running from a source checkout (an editable install);
    else `$XDG_CACHE_HOME/zoom-refine/tiny-models` (`~/.cache/...` by default)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return pathlib.Path(override)
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / ".cache" / "tiny-models"
    user_cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(user_cache) / "zoom-refine" / "tiny-models"


def recipe_digest(
    modules: Iterable[ModuleType], label: str, conversations: Iterable[list[Any]]
) -> str:
    """SHA-256 of the `modules`' source, `label`, the transformers and torch versions, and the
    `conversations`' text (`fingerprint`)."""
    import torch
    import transformers

    digest = hashlib.sha256()
    for module in modules:
        digest.update(pathlib.Path(str(module.__file__)).read_bytes())
    digest.update(f"\0{label}\0{transformers.__version__}\0{torch.__version__}\0".encode())
    for conversation in conversations:
        for message in conversation:
            digest.update(fingerprint(message).encode())
    return digest.hexdigest()


def fingerprint(message: Any) -> str:
    """A message's type, texts, and image sizes (not bytes: the pixels do not shape the text)."""
    content = message.content if isinstance(message.content, list) else [message.content]
    parts = [type(message).__name__]
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text")))
        else:
            image = decode_block_image(block["base64"])
            parts.append(f"<image {image.size[0]}x{image.size[1]}>")
    return "\0".join(parts) + "\n"


def protocol_cache_key(family: TinyFamily) -> str:
    """The key of `family`'s protocol-trained checkpoint (see the module docstring)."""
    conversations = (
        conversation
        for sample in PROTOCOL_TRAIN_SAMPLES[family]
        for conversation in sample_conversations(family, sample)
    )
    return recipe_digest(recipe_modules(family), family_entry(family), conversations)


def build_once(
    final: pathlib.Path, done_file: str, build: Callable[[pathlib.Path], pathlib.Path]
) -> pathlib.Path:
    """`final`, unless it already holds `done_file` built now: `build(scratch)` makes the
    checkpoint inside the empty folder `scratch` (writing `done_file` last) and returns its
    folder, which is renamed to `final`. Concurrent callers wait on a lock and share one build."""
    if (final / done_file).is_file():
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{final.name}.lock"):
        if (final / done_file).is_file():  # built by another process while we waited
            return final
        _remove_stale_temporaries(root)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".tmp-{final.name}-") as scratch:
            built = build(pathlib.Path(scratch))
            if final.exists() and not (final / done_file).is_file():
                shutil.rmtree(final)  # left by something other than this function
            try:
                os.rename(built, final)
            except OSError:
                if not (final / done_file).is_file():  # not a concurrent run that finished first
                    raise
    return final


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive lock on `path` while the block runs (POSIX; elsewhere none, and concurrent
    builds both run: the rename keeps one)."""
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _remove_stale_temporaries(root: pathlib.Path) -> None:
    """Scratch folders of runs killed more than an hour ago."""
    now = time.time()
    for path in root.glob(".tmp-*"):
        try:
            if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def trained_protocol_model(family: TinyFamily) -> pathlib.Path:
    """The protocol-trained tiny checkpoint of `family`: from the cache, else trained now (well
    under a minute on 2 CPU cores; Qwen3-VL, trained on whole conversations, about two) and
    cached under `cache_root()`."""
    if family not in FAMILY_RECIPE_MODULES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    key = protocol_cache_key(family)
    build_base = FAMILY_RECIPE_MODULES[family][-1].build_protocol_base

    def build(scratch: pathlib.Path) -> pathlib.Path:
        trained = build_protocol_model(family, scratch, build_base)
        report = TrainingReport(**read_training_report(trained))
        write_report(trained, report, cache_key=key)
        return trained

    return build_once(cache_root() / f"{family}-{key[:16]}", REPORT_FILE, build)


def main() -> None:
    """`python -m zoom_refine.testing`: train (or find) every protocol model, print its report."""
    for name in FAMILIES:
        location = trained_protocol_model(name)
        print(location, read_training_report(location))
