"""Issue 22 item 2: the agent graph holds nodes and wiring, calls the model by the one shared
path (`graphs.calls.chat`, which turns a server refusal a flag fixes into one line), and reads
`pixel` boxes through the one Qwen resize rule (`agent.regions.pixel_frame_size`)."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import BaseMessage
from PIL import Image

from zoom_refine import InvalidInputError, ZoomContext, build_agent_graph
from zoom_refine.testing import ReplyFake

ROOT = pathlib.Path(__file__).resolve().parents[1]


def refuse(messages: list[BaseMessage]) -> str:
    """A vLLM server answering 400 because the request is longer than its context."""
    request = httpx.Request("POST", "http://vllm.test/v1/chat/completions")
    text = "This model's maximum context length is 4096 tokens. However, you requested 9000."
    response: Any = httpx.Response(400, request=request)
    raise openai.BadRequestError(text, response=response, body=None)


def test_a_server_refusal_in_the_agent_graph_is_one_line_naming_the_flag(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (9, 9, 9)).save(path)
    model = ReplyFake(reply=refuse)
    context = ZoomContext(model=model, tool_call_format="text", max_hops=2)
    with pytest.raises(InvalidInputError, match="--max-model-len") as caught:
        build_agent_graph().invoke(
            {"image": str(path), "question": "Which?"},
            context=context,
            config={"recursion_limit": context.recursion_limit},
        )
    assert "\n" not in str(caught.value) and model.calls == 1  # a 400 is not retried


def test_the_agent_graph_module_is_nodes_and_wiring() -> None:
    source = (ROOT / "graphs/agent.py").read_text()
    assert len(source.splitlines()) <= 200
    assert ".invoke(" not in source  # the model is called through graphs.calls only
    assert "def _invoke" not in source and "qwen_resized_size" not in source


def test_the_qwen_resize_rule_is_applied_in_one_place() -> None:
    users = [
        path.relative_to(ROOT).as_posix()
        for folder in ("agent", "graphs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if re.search(r"\bqwen_resized_size\(", path.read_text())
    ]
    assert users == ["agent/families.py", "agent/regions.py"]  # defined; used by regions alone
