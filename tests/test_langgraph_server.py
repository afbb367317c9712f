"""LangGraph's own server (`langgraph dev`, in-memory runtime) runs every graph in langgraph.json.

The server is started on 127.0.0.1 and a free port from a copy of langgraph.json whose paths are
absolute (it resolves `./graphs/...` against its working directory, which is a temp folder so its
`.langgraph_api/` state stays out of the repo), with no browser and no reload; it is stopped by
its process group. Each graph runs through `langgraph_sdk` with a context naming the
protocol-trained tiny InternVL3, and the server's run must be the run the same graph makes in
this process: same nodes in the same order, same answer, views and model replies.

What the server does differently from `graph.stream`: its `updates` events carry only the
graph's output channels (`OutputState`), so the crop node's update (it writes only `messages`)
arrives as `null`; the crop itself is in the `custom` stream and in the thread's history.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from servers import (
    HOST,
    PORT_ATTEMPTS,
    PORT_TAKEN,
    exit_status,
    free_port,
    log_tail,
    server_environment,
    stop_process_group,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 120.0
"""Measured: about 3 s on two CPU cores (imports, then each graph module loaded once)."""
RUN_TIMEOUT_S = 180.0

pytestmark = pytest.mark.slow


class ServerStartError(RuntimeError):
    """`langgraph dev` exited or never answered `/ok`; the message holds its output."""


@dataclass(frozen=True)
class LangGraphServer:
    url: str
    graphs: dict[str, str]
    """Graph id → `path:attribute`, as langgraph.json names them."""
    startup_seconds: float


def server_config(folder: pathlib.Path) -> pathlib.Path:
    """langgraph.json with absolute paths, written into `folder`."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT / dep) for dep in config.get("dependencies", ["."])]
    config["graphs"] = {
        name: str(ROOT / spec) if spec.startswith("./") else spec
        for name, spec in config["graphs"].items()
    }
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def langgraph_executable() -> pathlib.Path:
    executable = pathlib.Path(sys.executable).with_name("langgraph")
    if not executable.exists():
        pytest.skip("no `langgraph` CLI in this environment: pip install 'langgraph-cli[inmem]'")
    return executable


def wait_until_ok(process: subprocess.Popen[bytes], url: str, log: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = exit_status(process)
        if code is not None:
            raise ServerStartError(f"langgraph dev exited with {code}:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"langgraph dev not up after {timeout:.0f} s:\n{log_tail(log)}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def langgraph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LangGraphServer]:
    folder = tmp_path_factory.mktemp("langgraph-dev")
    config = server_config(folder)
    env = server_environment() | {
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    with tempfile.TemporaryFile(prefix="langgraph-dev-", suffix=".log") as log:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port()
            command = [
                str(langgraph_executable()),
                "dev",
                "--config",
                str(config),
                "--host",
                HOST,
                "--port",
                str(port),
                "--no-browser",
                "--no-reload",
            ]
            log.seek(0)
            log.truncate()
            started = time.perf_counter()
            process = subprocess.Popen(
                command,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole
            )
            try:
                url = f"http://{HOST}:{port}"
                try:
                    wait_until_ok(process, url, log, STARTUP_TIMEOUT_S)
                except ServerStartError:
                    if attempt < PORT_ATTEMPTS and PORT_TAKEN in log_tail(log).lower():
                        continue
                    raise
                seconds = time.perf_counter() - started
                print(f"langgraph dev answered /ok after {seconds:.1f} s")
                graphs = json.loads(config.read_text())["graphs"]
                yield LangGraphServer(url, graphs, seconds)
                return
            finally:
                stop_process_group(process, grace=10.0)
                assert exit_status(process) is not None


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from zoom_refine.testing.tiny_models import protocol_image

    path = tmp_path_factory.mktemp("scene") / "scene.png"
    protocol_image((640, 480), "langgraph-server").save(path)
    return path


@pytest.fixture(scope="module")
def server_context(trained_internvl_path: pathlib.Path) -> dict[str, Any]:
    """The run settings as Studio sends them: JSON, the model as a spec."""
    from zoom_refine.testing import tiny_models as tm

    return {
        "model": f"hf:{trained_internvl_path}",
        "box_format": tm.PROTOCOL_BOX_FORMAT["internvl3"],
        "max_patches": tm.PROTOCOL_MAX_PATCHES,
        "max_new_tokens": tm.PROTOCOL_MAX_NEW_TOKENS,
    }


@dataclass
class ServerRun:
    updates: list[dict[str, Any]]
    custom: list[Any]
    history: list[dict[str, Any]]
    """The thread's checkpoints, newest first (as the server returns them)."""
    state: dict[str, Any]


async def run_on_server(
    url: str, graph_id: str, inputs: dict[str, Any], context: dict[str, Any]
) -> ServerRun:
    from langgraph_sdk import get_client

    client = get_client(url=url, timeout=RUN_TIMEOUT_S)
    assistants = {item["graph_id"] for item in await client.assistants.search(limit=100)}
    assert graph_id in assistants  # the server made an assistant for every graph
    thread = await client.threads.create()
    updates: list[dict[str, Any]] = []
    custom: list[Any] = []
    async for part in client.runs.stream(
        thread["thread_id"],
        graph_id,
        input=inputs,
        context=context,
        stream_mode=["updates", "custom"],
    ):
        assert part.event != "error", part.data
        if part.event == "updates":
            updates.append(part.data)
        elif part.event == "custom":
            custom.append(part.data)
    history = await client.threads.get_history(thread["thread_id"], limit=100)
    state = await client.threads.get_state(thread["thread_id"])
    return ServerRun(updates, custom, list(history), dict(state["values"]))


def run_in_process(spec: str, inputs: dict[str, Any], context: dict[str, Any]) -> list[Any]:
    """The same graph, loaded as the server loads it, streamed here: (node, update) pairs and
    the final values last."""
    from test_studio import load_graph

    from zoom_refine import ZoomContext

    graph = load_graph(spec.replace(str(ROOT) + "/", "./"))
    settings = ZoomContext(**context)
    parts = list(
        graph.stream(
            inputs,
            context=settings,
            config={"recursion_limit": settings.recursion_limit},
            stream_mode=["updates", "values"],
        )
    )
    return parts


def nodes_of(updates: list[dict[str, Any]]) -> list[str]:
    return [node for update in updates for node in update if not node.startswith("__")]


def test_server_runs_every_graph_as_in_process(
    langgraph_server: LangGraphServer, scene: pathlib.Path, server_context: dict[str, Any]
) -> None:
    from zoom_refine.testing import tiny_models as tm

    assert langgraph_server.startup_seconds < STARTUP_TIMEOUT_S
    inputs = tm.protocol_inputs(scene)
    assert {"zoom_refine", "baseline"} <= set(langgraph_server.graphs)
    for graph_id, spec in sorted(langgraph_server.graphs.items()):
        served = asyncio.run(run_on_server(langgraph_server.url, graph_id, inputs, server_context))
        local = run_in_process(spec, inputs, server_context)
        local_nodes = [node for mode, data in local if mode == "updates" for node in data]
        local_final = next(data for mode, data in reversed(local) if mode == "values")

        # every node the graph ran is in the server's update stream, in order ...
        assert nodes_of(served.updates) == local_nodes, graph_id
        # ... and in the thread's history: one checkpoint per step, each naming the next node
        ran = [task["name"] for snap in reversed(served.history) for task in snap["tasks"]]
        assert [name for name in ran if not name.startswith("__")] == local_nodes, graph_id
        assert len(served.history) == len(local_nodes) + 2  # input, __start__, one per node
        assert served.history[0]["next"] == []  # the run finished
        # the server's result is the in-process one (greedy: deterministic)
        for key in ("answer", "initial_answer", "stop_reason", "views"):
            assert served.state.get(key) == local_final.get(key), (graph_id, key)
        assert [step["raw"] for step in served.state["steps"]] == [
            step["raw"] for step in local_final["steps"]
        ]
        assert served.state["image"] == str(scene)

        if graph_id == "zoom_refine":
            assert local_nodes == ["localize", "crop", "refine"]
            assert served.state["initial_answer"] == tm.PROTOCOL_INITIAL_ANSWER
            assert served.state["answer"] == tm.PROTOCOL_ANSWER
            assert served.state["confidence"] == tm.PROTOCOL_CONFIDENCE
            assert served.state["steps"][0]["box"] == list(tm.LOCALIZE_BOX)
            full, crop = served.state["views"]
            assert full["box"] == [0, 0, 640, 480]
            x1, y1, x2, y2 = crop["box"]  # the box 0.6-0.7 of 640 x 480, with context
            assert x1 <= 384 and y1 <= 288 and x2 >= 448 and y2 >= 336  # it holds the red square
            # the crop event streamed as it happened, and the tool's message in the state
            assert [event["view"] for event in served.custom] == [crop]
            tool = [msg for msg in served.state["messages"] if msg["type"] == "tool"]
            assert [msg["artifact"]["view"] for msg in tool] == [crop]
            crop_updates = [update["crop"] for update in served.updates if "crop" in update]
            assert crop_updates == [None]  # only output channels are streamed (module docstring)
        if graph_id == "baseline":
            assert local_nodes == ["answer"]
            assert [view["box"] for view in served.state["views"]] == [[0, 0, 640, 480]]
            assert served.custom == []


def test_a_bad_model_spec_fails_the_run_with_our_message(
    langgraph_server: LangGraphServer, scene: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """A context naming a model that cannot load ends the run in an `error` event carrying our
    one-line InvalidInputError message, and the server keeps serving. (The server drops context
    keys that `ZoomContext` does not have before the graph sees them: a misspelt field is
    ignored, not refused.)"""
    from langgraph_sdk import get_client

    from zoom_refine.testing import tiny_models as tm

    missing = tmp_path / "no-such-model"

    async def attempt() -> list[Any]:
        client = get_client(url=langgraph_server.url, timeout=RUN_TIMEOUT_S)
        thread = await client.threads.create()
        return [
            part
            async for part in client.runs.stream(
                thread["thread_id"],
                "baseline",
                input=tm.protocol_inputs(scene),
                context={"model": f"hf:{missing}"},
                stream_mode="updates",
            )
        ]

    parts = asyncio.run(attempt())
    errors = [part.data for part in parts if part.event == "error"]
    assert len(errors) == 1, parts
    assert errors[0]["error"] == "InvalidInputError" and str(missing) in errors[0]["message"]
    with urllib.request.urlopen(f"{langgraph_server.url}/ok", timeout=5) as response:
        assert response.status == 200
