"""Shared pytest fixtures."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from servers import ServedModel

# --- tiny real models (local backend) ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_internvl_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A tiny random InternVL3-hf checkpoint, built once per test session (a few seconds)."""
    from tiny_models import build_tiny_internvl3  # imported lazily: pulls in torch/transformers

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
