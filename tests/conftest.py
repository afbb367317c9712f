"""Shared pytest fixtures."""

from __future__ import annotations

import pathlib

import pytest

# --- tiny real models (local backend) ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_internvl_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A tiny random InternVL3-hf checkpoint, built once per test session (a few seconds)."""
    from tiny_models import build_tiny_internvl3  # imported lazily: pulls in torch/transformers

    return build_tiny_internvl3(tmp_path_factory.mktemp("tiny-internvl3"))
