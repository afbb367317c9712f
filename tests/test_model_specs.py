"""`agent.models.check_model_spec`: a spec that cannot work is refused at once, in one line that
says what to do; the hub is probed once, briefly, and a cached model is used offline."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from zoom_refine.agent import models
from zoom_refine.agent.models import check_model_spec, hub_unreachable_reason
from zoom_refine.tools.errors import InvalidInputError


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty hub cache, online mode, restored afterwards (the check may switch it off)."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return cache


def refused(spec: str, base_url: str | None = None) -> str:
    with pytest.raises(InvalidInputError) as caught:
        check_model_spec(spec, base_url)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("spec", ["nocolon", "hf:", ":model", "openai:  "])
def test_malformed_specs(spec: str) -> None:
    assert "is not understood" in refused(spec)


def test_unknown_provider_suggests_the_close_one() -> None:
    assert "did you mean 'openai'" in refused("opnai:gpt-4o")
    assert "unknown provider 'foo'" in refused("foo:bar")


def test_missing_provider_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = models.importlib.util.find_spec

    def find_spec(name: str) -> object:
        return None if name == "langchain_anthropic" else real(name)

    monkeypatch.setattr(models.importlib.util, "find_spec", find_spec)
    assert "pip install langchain-anthropic" in refused("anthropic:claude-sonnet-4-5")


def test_openai_needs_a_key_or_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    message = refused("openai:gpt-4o")
    assert "OPENAI_API_KEY" in message and "--api-key" in message and "--base-url" in message
    check_model_spec("openai:served", "http://127.0.0.1:8000/v1")  # a local server: any key
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    check_model_spec("openai:gpt-4o")


def test_local_folders(tmp_path: Path, tiny_folder: Path) -> None:
    check_model_spec(f"hf:{tiny_folder}")
    assert "no model folder at" in refused(f"hf:{tmp_path / 'missing'}")
    assert "no model folder at" in refused("hf:./models/a/b")
    assert "neither a model folder nor a hub repo id" in refused("hf:not a repo!")


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def cache_repo(cache: Path, repo_id: str, files: dict[str, str]) -> None:
    revision = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name, text in files.items():
        (snapshot / name).write_text(text)


def test_offline_mode_without_the_weights_is_refused_without_a_request(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "hub_unreachable_reason", pytest.fail)  # never probes
    cache_repo(hub, "org/config-only", {"config.json": "{}"})  # no weights: not enough
    for repo in ("org/absent", "org/config-only"):
        message = refused(f"hf:{repo}")
        assert "HF_HUB_OFFLINE is set" in message and str(hub) in message
        assert "hf:/path/to/checkpoint" in message and "zoom-refine demo" in message
    cache_repo(hub, "org/cached", {"config.json": "{}", "model.safetensors": "x"})
    check_model_spec("hf:org/cached")


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A real HTTP server on 127.0.0.1 as the hub endpoint (`HF_ENDPOINT`); lists the methods
    and paths it was asked for, so a test sees the probe really go out."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            seen.append(f"HEAD {self.path}")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield seen
    server.shutdown()
    thread.join(timeout=10)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_hub_refuses_uncached_and_goes_offline_for_cached(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    message = refused("hf:org/absent")
    assert "cannot be reached (" in message and "refused" in message.lower()
    assert "--model openai:NAME --base-url URL" in message
    assert constants.HF_HUB_OFFLINE is False  # nothing to use offline: mode unchanged
    cache_repo(hub, "org/cached", {"config.json": "{}", "model.safetensors": "x"})
    check_model_spec("hf:org/cached")
    assert constants.HF_HUB_OFFLINE is True  # cached files used as they are, no retries


def test_reachable_hub_lets_the_download_go_ahead(hub: Path, local_hub: list[str]) -> None:
    check_model_spec("hf:org/absent")
    assert local_hub == ["HEAD /"]  # the probe reached the endpoint, once
    assert constants.HF_HUB_OFFLINE is False  # so the download may go ahead


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_hub_probe_is_bounded(monkeypatch: pytest.MonkeyPatch, silent_server: str) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", silent_server)
    started = time.perf_counter()
    reason = hub_unreachable_reason(timeout=0.5)
    assert reason is not None
    assert time.perf_counter() - started < 3
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert hub_unreachable_reason(timeout=0.5) is not None
