"""A real OpenAI-compatible server for tests: `transformers serve` on 127.0.0.1, one model, CPU.

Facts about `transformers serve` (transformers 5.x, `cli/serve.py` and `cli/serving/`) that the
helpers below rely on:
- The positional `FORCE_MODEL` argument preloads the model before the HTTP server starts
  listening, so the first successful `/health` means the model is in memory.
- A server pinned to a model answers only requests whose `model` is **exactly** the string it was
  started with (`"/tmp/x"` and `"/tmp/x/"` differ: HTTP 400 "Server is pinned to ..."). For a
  local directory that string is the path as given on the command line; `/v1/models` lists it.
- It stops cleanly on SIGTERM (uvicorn's graceful shutdown, about 2-3 s on CPU).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Literal

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180.0
"""Import of torch + transformers and the model load: about 7 s on two CPU cores."""
STOP_GRACE_S = 15.0
"""How long SIGTERM may take before the whole process group is killed."""
LOG_TAIL_CHARS = 6000
PORT_ATTEMPTS = 3
PORT_TAKEN = "address already in use"


class ServerStartError(RuntimeError):
    """`transformers serve` exited or never became healthy; the message holds its output."""


@dataclass(frozen=True)
class ServedModel:
    """Where a test reaches the server, and the model name its requests must carry."""

    base_url: str
    """`http://127.0.0.1:PORT/v1`, ready for `ChatOpenAI(base_url=...)`."""
    model_name: str
    """The `model` field requests must send (see `served_model_name`)."""


@dataclass(frozen=True)
class RunningServer:
    """A started server and its process, for tests that fault it (kill, pause, resume)."""

    base_url: str
    """`http://127.0.0.1:PORT/v1`."""
    process: subprocess.Popen[bytes]
    """The server process (`transformers serve`, vLLM's API server), leader of its own process
    group."""
    model_name: str = ""
    """The `model` field requests must send."""
    log: IO[bytes] | None = None
    """The server's output so far (read it with `log_tail`), while it runs."""

    def output(self) -> str:
        """The end of what the server printed (for assertion messages)."""
        return log_tail(self.log) if self.log is not None else ""

    def kill(self) -> None:
        """SIGKILL the whole group, as a crash or the OOM killer would: no graceful shutdown."""
        signal_group(self.process, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE_S
        while exit_status(self.process) is None:  # gone for sure before the caller goes on
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.process.pid} survived SIGKILL")
            time.sleep(0.01)

    def pause(self) -> None:
        """SIGSTOP the group: the kernel still accepts connections, nothing ever answers."""
        signal_group(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the group after `pause`."""
        signal_group(self.process, signal.SIGCONT)


def served_model_name(model_dir: Path | str) -> str:
    """The model name a server started by `serve_model(model_dir)` expects in requests.

    It is the `FORCE_MODEL` string itself: `transformers serve` compares it verbatim.
    """
    return str(model_dir)


def transformers_executable() -> Path:
    """The `transformers` CLI of the running interpreter's environment (the venv's)."""
    executable = Path(sys.executable).with_name("transformers")
    if not executable.exists():
        raise ServerStartError(
            f"no `transformers` CLI next to {sys.executable}: "
            "install the dev extra (pip install -e '.[dev]', which brings transformers[serving])"
        )
    return executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_environment() -> dict[str, str]:
    """This process's environment, offline: the server must never reach the Hub."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


@contextmanager
def serve_model(
    model_dir: Path | str,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT_S,
    stop_grace: float = STOP_GRACE_S,
) -> Iterator[str]:
    """Run `transformers serve <model_dir>` on a free local port; yield its `/v1` base URL.

    The server runs on the CPU in its own process group, with the Hub switched off; it is
    always stopped on exit (SIGTERM, then SIGKILL after `stop_grace` seconds). If it dies or is
    not healthy within `startup_timeout` seconds, `ServerStartError` carries its output.
    `extra_args` are appended to the command line (e.g. `["--dtype", "float32"]`).
    """
    with start_server(
        model_dir, extra_args=extra_args, startup_timeout=startup_timeout, stop_grace=stop_grace
    ) as server:
        yield server.base_url


@contextmanager
def start_server(
    model_dir: Path | str,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT_S,
    stop_grace: float = STOP_GRACE_S,
) -> Iterator[RunningServer]:
    """`serve_model`, yielding the process too: for tests that kill or pause the server. Stopped
    on exit the same way, whatever the test did to it (killed, paused)."""
    model_name = served_model_name(model_dir)

    def command(port: int) -> list[str]:
        return [
            str(transformers_executable()),
            "serve",
            model_name,
            "--host",
            HOST,
            "--port",
            str(port),
            "--device",
            "cpu",
            *extra_args,
        ]

    with run_server(
        command,
        model_name=model_name,
        env=server_environment(),
        startup_timeout=startup_timeout,
        stop_grace=stop_grace,
        log_prefix="transformers-serve-",
    ) as server:
        yield server


@contextmanager
def run_server(
    command: Callable[[int], list[str]],
    *,
    model_name: str,
    env: dict[str, str],
    startup_timeout: float,
    stop_grace: float,
    log_prefix: str,
    listed_as_loaded: bool = True,
) -> Iterator[RunningServer]:
    """Start `command(port)` on a free port in its own process group, wait for `/health` and for
    `/v1/models` to list `model_name` (with `listed_as_loaded`, also its status `loaded`, as
    `transformers serve` reports it), yield it, and stop the whole group on exit. A port taken
    between `free_port` and the bind is retried on another port."""
    with tempfile.TemporaryFile(prefix=log_prefix, suffix=".log") as log:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port()
            argv = command(port)
            log.seek(0)
            log.truncate()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stopped as a whole, never orphaned
            )
            try:
                root = f"http://{HOST}:{port}"
                try:
                    wait_until_healthy(process, root, log, argv, startup_timeout)
                except ServerStartError:
                    # Another process may have taken the port between `free_port` and the bind.
                    if attempt < PORT_ATTEMPTS and PORT_TAKEN in log_tail(log).lower():
                        continue
                    raise
                check_model_listed(root, model_name, log, require_loaded=listed_as_loaded)
                yield RunningServer(
                    base_url=f"{root}/v1", process=process, model_name=model_name, log=log
                )
                return
            finally:
                stop_process_group(process, stop_grace)


def wait_until_healthy(
    process: subprocess.Popen[bytes],
    root: str,
    log: IO[bytes],
    command: Sequence[str],
    timeout: float,
) -> None:
    """Poll `GET /health` until it answers 200; fail early, with the output, if the server exits."""
    deadline = time.monotonic() + timeout
    while True:
        code = exit_status(process)
        if code is not None:
            raise ServerStartError(
                f"`{' '.join(command)}` exited with code {code} before it was healthy.\n"
                f"Its output:\n{log_tail(log)}"
            )
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet (the model loads before the socket opens)
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"`{' '.join(command)}` was not healthy after {timeout:.0f} s.\n"
                f"Its output:\n{log_tail(log)}"
            )
        time.sleep(0.2)


def check_model_listed(
    root: str, model_name: str, log: IO[bytes], *, require_loaded: bool = True
) -> None:
    """`/v1/models` must list the pinned model under the name requests will use (and, with
    `require_loaded`, report it loaded: `transformers serve` does, vLLM has no such field)."""
    with urllib.request.urlopen(f"{root}/v1/models", timeout=10) as response:
        listing = json.load(response)
    entries = {entry.get("id"): entry for entry in listing.get("data", [])}
    entry = entries.get(model_name)
    loaded = entry is not None and entry.get("status", {}).get("value") == "loaded"
    if entry is None or (require_loaded and not loaded):
        raise ServerStartError(
            f"the server does not list {model_name!r} as loaded: {listing}\n"
            f"Its output:\n{log_tail(log)}"
        )


def stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace` seconds, reap the server.

    The leader is only reaped after the group got its SIGKILL: until then its pid (the group id)
    cannot be reused, so the signals never reach an unrelated process.
    """
    if exit_status(process) is None:
        signal_group(process, signal.SIGTERM)
        signal_group(process, signal.SIGCONT)  # a paused (SIGSTOPped) server must see the SIGTERM
        deadline = time.monotonic() + grace
        while exit_status(process) is None and time.monotonic() < deadline:
            time.sleep(0.1)
    # Whatever the leader did, nothing of its group may outlive the test session.
    signal_group(process, signal.SIGKILL)
    process.wait()


def exit_status(process: subprocess.Popen[bytes]) -> int | None:
    """The server's exit status (negative: killed by that signal), or None while it runs.

    The process is not reaped: it stays a zombie, keeping its pid (our group id) from reuse.
    """
    if process.returncode is not None:
        return process.returncode
    info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status


def signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Send `signum` to the process group the server leads (it was started in a new session)."""
    with suppress(ProcessLookupError):  # the group is already gone
        os.killpg(process.pid, signum)


def log_tail(log: IO[bytes], limit: int = LOG_TAIL_CHARS) -> str:
    """The last `limit` characters the server wrote (stdout and stderr together).

    Read with `pread`: the server shares the file offset, which must stay at the end.
    """
    size = os.fstat(log.fileno()).st_size
    start = max(0, size - 4 * limit)
    text = os.pread(log.fileno(), size - start, start).decode("utf-8", errors="replace")
    return text[-limit:]


# --- vLLM (CPU build, in its own venv: zoom_refine.testing.vllm_env) --------------------------

VLLM_STARTUP_TIMEOUT_S = 300.0
"""Import of vLLM, engine start and model load with `--enforce-eager`: about 30 s on two idle
CPU cores; a shared machine can take several times that."""
VLLM_KV_CACHE_GIB = 1
"""`VLLM_CPU_KVCACHE_SPACE`: the KV cache vLLM's CPU backend reserves, in GiB (its default
takes a large share of the machine's memory)."""
VLLM_BASE_ARGS: tuple[str, ...] = (
    "--max-model-len",
    "8192",
    "--dtype",
    "float32",
    "--enforce-eager",
)
"""What any vLLM server in the tests runs with: a context that fits two 12-tile images (the tiny
models' own limit, `max_position_embeddings`),
the checkpoint's own precision (the tiny models' greedy replies were trained in float32), and no
graph compilation (about 28 s to start instead of 90 s)."""
VLLM_ZOOM_REFINE_ARGS: tuple[str, ...] = (
    "--limit-mm-per-prompt",
    '{"image": 4}',
    "--trust-request-mm-kwargs",
    "--enable-prompt-tokens-details",
)
"""The flags our defaults need (docs/vllm.md): refine sends the view and the crop in one request
(more than vLLM's default of one image per prompt), `server_tile_budget="vllm"` sends
per-request processor kwargs, and `usage.cached_tokens` needs the prompt-token details."""


def vllm_environment(cache_dir: Path) -> dict[str, str]:
    """Offline, a bounded KV cache, vLLM's own caches under `cache_dir`, no usage reporting, and
    none of this project's venv (the server runs in the vLLM venv)."""
    env = server_environment()
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": str(VLLM_KV_CACHE_GIB),
            "VLLM_CACHE_ROOT": str(cache_dir),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


@contextmanager
def start_vllm(
    model_dir: Path | str,
    *,
    python: Path | None = None,
    extra_args: Sequence[str] = VLLM_ZOOM_REFINE_ARGS,
    startup_timeout: float = VLLM_STARTUP_TIMEOUT_S,
    stop_grace: float = STOP_GRACE_S,
) -> Iterator[RunningServer]:
    """Run vLLM's OpenAI-compatible server for `model_dir` (any checkpoint folder vLLM can load)
    on a free port of 127.0.0.1; yield it once `/health` answers and `/v1/models` lists it.

    `python` is the vLLM venv's interpreter (default: `ensure_vllm_env()`, built now if not
    cached). The command line is `VLLM_BASE_ARGS` + `extra_args`: by default the flags our
    defaults need (`VLLM_ZOOM_REFINE_ARGS`); pass `()` for a server with none of them. Requests
    send `model=str(model_dir)` (`RunningServer.model_name`). Stopped by its process group on
    exit (the API server and its engine-core child together).
    """
    if python is None:
        from zoom_refine.testing.vllm_env import ensure_vllm_env

        python = ensure_vllm_env().python
    model_name = str(model_dir)

    def command(port: int) -> list[str]:
        return [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_name,
            "--host",
            HOST,
            "--port",
            str(port),
            *VLLM_BASE_ARGS,
            *extra_args,
        ]

    with (
        tempfile.TemporaryDirectory(prefix="vllm-cache-") as cache_dir,
        run_server(
            command,
            model_name=model_name,
            env=vllm_environment(Path(cache_dir)),
            startup_timeout=startup_timeout,
            stop_grace=stop_grace,
            log_prefix="vllm-",
            listed_as_loaded=False,
        ) as server,
    ):
        yield server


def vllm_metrics(server: RunningServer) -> str:
    """vLLM's Prometheus text (`GET /metrics` at the server root)."""
    root = server.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as response:
        return str(response.read().decode("utf-8"))


def vllm_block_size(server: RunningServer) -> int:
    """The KV-cache block size (tokens): prefix-cache hits come in whole blocks. From the
    `vllm:cache_config_info` gauge's `block_size` label."""
    for line in vllm_metrics(server).splitlines():
        if line.startswith("vllm:cache_config_info{"):
            for label in line[line.index("{") + 1 : line.index("}")].split(","):
                name, _, value = label.partition("=")
                if name == "block_size":
                    return int(value.strip('"'))
    raise ServerStartError(f"{server.base_url}: no vllm:cache_config_info block_size in /metrics")


# --- a fake OpenAI-compatible server (one process, real sockets) ------------------------------

FakeMode = Literal["answer", "hang", "status", "close", "garbage"]
"""How `FakeOpenAIServer` treats a request: `answer` (a completion), `hang` (holds it until
`release` is set or the server stops: a hung server), `status` (HTTP `status`, e.g. 500),
`close` (closes the connection without a reply: a server killed mid-request), `garbage` (HTTP
200 with a body that is not a completion, see `GARBAGE_KINDS`)."""

GARBAGE_KINDS: tuple[str, ...] = (
    "not-json",
    "truncated",
    "no-choices",
    "null-choices",
    "empty",
    "text-plain",
    "choice-without-message",
)
"""The broken HTTP 200 bodies of mode `garbage`, in the order served (cycling): a body that is not
JSON, a completion cut in half (Content-Length matching the cut), JSON without `choices`,
`choices: null`, an empty body, an HTML page as text/html, a choice without its `message`."""

HANG_LIMIT_S = 30.0
"""The longest a `hang` request is held when nobody releases it (so a test never waits forever)."""


def completion(text: str) -> dict[str, Any]:
    """A chat completion (OpenAI's schema) whose one choice replies `text`."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def garbage_body(kind: str, text: str) -> tuple[str, bytes]:
    """(content type, body) of one broken HTTP 200 reply of `kind` (`GARBAGE_KINDS`)."""
    whole = json.dumps(completion(text)).encode()
    bodies: dict[str, tuple[str, bytes]] = {
        "not-json": ("application/json", b"<html><body>502 Bad Gateway</body></html>"),
        "truncated": ("application/json", whole[: len(whole) // 2]),
        "no-choices": ("application/json", json.dumps({"id": "x", "object": "x"}).encode()),
        "null-choices": (
            "application/json",
            json.dumps({**completion(text), "choices": None}).encode(),
        ),
        "empty": ("application/json", b""),
        "text-plain": ("text/html", b"<!doctype html><title>proxy login</title>"),
        "choice-without-message": (
            "application/json",
            json.dumps({**completion(text), "choices": [{"index": 0}]}).encode(),
        ),
    }
    return bodies[kind]


class FakeOpenAIServer:
    """A minimal OpenAI-compatible chat server on 127.0.0.1: real sockets, one thread per
    request, in this process. Use it as a context manager (serves on enter, stops on exit).

    In mode `answer` it replies `reply(request)` (default: `text`); `mode` may be changed at any
    time (see `FakeMode`); `answer_first` requests are answered before the mode applies (a
    server that fails mid-run). Every request body is kept in `requests` (JSON), in arrival
    order; `held` counts requests now waiting in mode `hang`."""

    def __init__(
        self,
        mode: FakeMode = "answer",
        *,
        status: int = 500,
        reply: Callable[[dict[str, Any]], str] | None = None,
        text: str = "Answer: A",
        answer_first: int = 0,
        garbage: Sequence[str] = GARBAGE_KINDS,
    ) -> None:
        self.mode: FakeMode = mode
        self.status = status
        self.reply = reply or (lambda _request: text)
        self.answer_first = answer_first
        self.garbage = list(garbage)
        self.release = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.held = 0
        self.garbage_sent: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((HOST, 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Release held requests, stop serving and close the socket (idempotent)."""
        self.release.set()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state._lock:
                    state.requests.append(body)
                    faulty = len(state.requests) > state.answer_first
                mode = state.mode if faulty else "answer"
                if mode == "close":
                    self.close_connection = True
                    return
                if mode == "hang":
                    with state._lock:
                        state.held += 1
                    try:
                        state.release.wait(HANG_LIMIT_S)
                    finally:
                        with state._lock:
                            state.held -= 1
                if mode == "status":
                    self._send(state.status, "application/json", _error_body())
                    return
                if mode == "garbage":
                    with state._lock:
                        kind = state.garbage[len(state.garbage_sent) % len(state.garbage)]
                        state.garbage_sent.append(kind)
                    self._send(200, *garbage_body(kind, state.reply(body)))
                    return
                data = json.dumps(completion(state.reply(body))).encode()
                self._send(200, "application/json", data)

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                with suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _error_body() -> bytes:
    return json.dumps({"error": {"message": "failing on purpose"}}).encode()
