"""What we send vLLM and how its refusals reach the user, without a server (the real server's
answers are in tests/test_vllm.py and tests/test_vllm_flags.py): the tile-budget body and the
mapping of vLLM's 400 wordings to one line naming the flag that fixes each."""

from __future__ import annotations

import httpx
import openai
import pytest

from zoom_refine.agent.models import server_tile_budget_body
from zoom_refine.graphs.calls import server_refusal


def bad_request(message: str, status: int = 400) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions")
    body = {"object": "error", "message": message, "type": "BadRequestError", "code": status}
    response = httpx.Response(status, json=body, request=request)
    error_type = openai.BadRequestError if status == 400 else openai.InternalServerError
    return error_type(f"Error code: {status} - {body}", response=response, body=body)


def test_vllm_budget_carries_both_internvl_keys() -> None:
    # `max_patches`: -hf checkpoints (GotOcr2 processor); `max_dynamic_patch`: the original format.
    assert server_tile_budget_body("vllm", 4) == {
        "mm_processor_kwargs": {"max_patches": 4, "max_dynamic_patch": 4}
    }
    assert server_tile_budget_body("vllm", None) is None
    assert server_tile_budget_body("none", 4) is None


@pytest.mark.parametrize(
    ("vllm_says", "flags"),
    [
        (
            "Per-request mm_processor_kwargs are disabled by default because they can be used "
            "to exhaust server resources. Start the server with --trust-request-mm-kwargs",
            ["--trust-request-mm-kwargs", "--mm-processor-kwargs", "--server-tile-budget none"],
        ),
        ("At most 1 image(s) may be provided in one prompt.", ["--limit-mm-per-prompt"]),
        (
            "This model's maximum context length is 8192 tokens. However, your prompt contains "
            "9001 input tokens, which exceeds this limit even without any output tokens.",
            ["--max-model-len", "--max-patches"],
        ),
    ],
)
def test_each_refusal_names_the_flag_on_one_line(vllm_says: str, flags: list[str]) -> None:
    message = server_refusal(bad_request(vllm_says))
    assert message is not None and "\n" not in message
    for flag in flags:
        assert flag in message
    assert "http" not in message.split("(server:")[0]  # the advice first, vLLM's words after


def test_other_errors_pass_through() -> None:
    assert server_refusal(bad_request("Invalid 'messages': expected a list")) is None
    assert server_refusal(bad_request("At most 1 image(s) may be provided", status=500)) is None
    assert server_refusal(ValueError("maximum context length is 8192")) is None
