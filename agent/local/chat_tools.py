"""Tools in the local backend's prompt, put there as OpenAI-compatible servers put them.

vLLM and `transformers serve` hand a request's `tools` to the checkpoint's own chat template and
read `<tool_call>{"name": …, "arguments": {…}}</tool_call>` back out of the reply (vLLM's `hermes`
parser). The local backend does the same, so that one checkpoint sees one prompt in every
backend: `template_renders_tools` says whether a template has a tools section (then the tools
and the tool turns go to the template), `tool_call_entry` writes a call as vLLM hands it to the
template, and `with_parsed_calls` turns a reply's call text into `tool_calls`. Unlike vLLM, whose
parser gives up on the whole reply at the first bad call, a call that cannot be read becomes an
`invalid_tool_call` with the reason (`agent.tool_calls`), the others are kept, and nothing raises.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from langchain_core.messages import AIMessage, InvalidToolCall, ToolCall
from langchain_core.messages.tool import invalid_tool_call, tool_call

from zoom_refine.agent.tool_calls import TOOL_CALL_TAG, parse_text_tool_calls

TOOLS_VARIABLE = "tools"
"""The variable transformers and vLLM render a request's tools through."""
TOOL_USE_TEMPLATE = "tool_use"
"""The name of a checkpoint's tool template when it keeps several (tokenizers pick it for tools)."""
TOOL_CHOICES = (None, "auto", "none")
FORCED_TOOL_CHOICE = (
    "tool_choice {choice!r}: the local backend cannot force a tool call (it has no guided "
    "decoding); bind the tools with tool_choice 'auto' (the default) or 'none'"
)
_TOOLS_WORD = re.compile(rf"\b{TOOLS_VARIABLE}\b")
_CALL_START = f"<{TOOL_CALL_TAG}>"


def check_tool_choice(tool_choice: object) -> None:
    """Refuse a forced tool choice (`required`, a named tool) at bind time, in one line."""
    if tool_choice not in TOOL_CHOICES:
        raise ValueError(FORCED_TOOL_CHOICE.format(choice=tool_choice))


def template_for_tools(template: str | dict[str, str] | None) -> str | None:
    """The template source a request with tools is rendered with: the `tool_use` one of a
    checkpoint that keeps several (as a tokenizer picks it), else its `default`, else the one."""
    if isinstance(template, dict):
        return template.get(TOOL_USE_TEMPLATE) or template.get("default")
    return template


def template_renders_tools(template: str | dict[str, str] | None) -> bool:
    """Whether the chat template reads the `tools` variable: it has a tools section, so a
    request's tools are written into the prompt in the checkpoint's own words."""
    source = template_for_tools(template)
    return bool(source) and _reads_tools(str(source))


@lru_cache(maxsize=16)
def _reads_tools(source: str) -> bool:
    """`tools` among the template's free variables; a template plain Jinja cannot parse (a
    transformers-only tag such as `{% generation %}`) is searched for the word instead."""
    environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    try:
        variables = meta.find_undeclared_variables(environment.parse(source))
    except jinja2.TemplateSyntaxError:
        return _TOOLS_WORD.search(source) is not None
    return TOOLS_VARIABLE in variables


def tool_call_entry(call_id: str | None, name: str, arguments: object) -> dict[str, Any]:
    """A call of an assistant turn as vLLM hands it to the template: OpenAI's shape with the
    arguments as an object (a JSON string is read; anything that is not an object becomes `{}`,
    as vLLM coerces it)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            arguments = None
    if not isinstance(arguments, dict):
        arguments = {}
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def with_parsed_calls(message: AIMessage, turn: int) -> AIMessage:
    """The reply with its `<tool_call>` blocks read into `tool_calls` (ids `call-<turn>-<k>`,
    `turn` counting assistant turns from 1); a block that cannot be read becomes an
    `invalid_tool_call` with its text and the reason. The content keeps the text before the
    first block, as vLLM's `hermes` parser does. A reply without blocks is returned as it is."""
    text = str(message.content) if isinstance(message.content, str) else message.text
    found = parse_text_tool_calls(text, TOOL_CALL_TAG)
    if not found:
        return message
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for k, call in enumerate(found, start=1):
        call_id = f"call-{turn}-{k}"
        if call.error is None and call.name is not None:
            calls.append(tool_call(name=call.name, args=call.args, id=call_id))
        else:
            invalid.append(
                invalid_tool_call(name=call.name, args=call.raw, id=call_id, error=call.error)
            )
    metadata = dict(message.response_metadata)
    if calls:
        metadata["finish_reason"] = "tool_calls"
    return AIMessage(
        content=text[: text.find(_CALL_START)],
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=message.usage_metadata,
        response_metadata=metadata,
    )
