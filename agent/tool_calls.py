"""Tool calls written as text in a reply, for models whose server did not parse them.

Tool-calling VLMs trained on Qwen's chat format (Qwen2.5-VL, Qwen3-VL, DeepEyes) write a call as
`<tool_call>{"name": …, "arguments": {…}}</tool_call>` in their reply; an OpenAI-compatible
server turns that into `tool_calls` only when started with a tool-call parser (vLLM:
`--enable-auto-tool-choice --tool-call-parser hermes`). The local `hf:` backend and servers
without a parser return the text as it is, and this module reads it. Mini-o3 writes its call as
`<grounding>{"bbox_2d": […], "source": …}</grounding>`: the object is the arguments themselves.

A call that cannot be read (broken JSON, no name, arguments that are not an object, a tag never
closed, nesting thousands deep, an integer too long to read, a key that is not text) is returned
with its `error`, never raised: the graph records it and tells the model.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from zoom_refine.agent.strict_json import plain_json, shown

TOOL_CALL_TAG = "tool_call"
GROUNDING_TAG = "grounding"

NOT_JSON = "the call is not a JSON object: {reason}"
NO_NAME = 'the call has no "name": write {{"name": <tool name>, "arguments": {{…}}}}'
ARGUMENTS_NOT_OBJECT = 'the call\'s "arguments" must be a JSON object, got {value}'
UNCLOSED = "the <{tag}> block is never closed with </{tag}>"

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_THINK_TAGS = re.compile(r"<(/?)think>", re.IGNORECASE)
_ANSWER_TAGS = re.compile(r"<(/?)answer>", re.IGNORECASE)


@dataclass(frozen=True)
class TextToolCall:
    """One call found in a reply's text: its name and arguments, or why it could not be read."""

    raw: str
    """The text between the tags, as written."""
    name: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Why the call cannot be run; None for a well-formed call."""


def _block_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<{tag}>(.*?)(?:</{tag}>|$)", re.DOTALL)


def parse_text_tool_calls(
    text: str, tag: str = TOOL_CALL_TAG, *, name: str | None = None
) -> list[TextToolCall]:
    """Every `<tag>…</tag>` block of `text`, in order. With `tag="tool_call"` each body is a
    `{"name", "arguments"}` object (`parameters` is accepted for `arguments`, and `arguments`
    may itself be a JSON string); otherwise the body is the arguments of the tool `name`.
    A last block whose closing tag is missing (a reply cut by the token limit) is malformed."""
    calls = []
    for match in _block_pattern(tag).finditer(text):
        body = match.group(1)
        if not match.group(0).endswith(f"</{tag}>"):
            calls.append(TextToolCall(raw=body, error=UNCLOSED.format(tag=tag)))
            continue
        value, reason = _load_object(body)
        if reason is not None:
            calls.append(TextToolCall(raw=body, error=NOT_JSON.format(reason=reason)))
        elif tag != TOOL_CALL_TAG:
            calls.append(TextToolCall(raw=body, name=name, args=value))
        else:
            calls.append(_named_call(body, value))
    return calls


def _named_call(raw: str, value: dict[str, Any]) -> TextToolCall:
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return TextToolCall(raw=raw, error=NO_NAME)
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        loaded, _ = _load_object(args)
        args = loaded if loaded is not None else args
    if not isinstance(args, dict):
        return TextToolCall(
            raw=raw, name=name, error=ARGUMENTS_NOT_OBJECT.format(value=shown(args))
        )
    return TextToolCall(raw=raw, name=name.strip(), args=args)


def _load_object(body: str) -> tuple[Any, str | None]:
    """The JSON object in `body` (code fences allowed), else a Python literal dict (DeepEyes'
    own evaluation reads calls with Python's `eval`; `ast.literal_eval` runs nothing), as plain
    JSON data (`strict_json.plain_json`: string keys, bounded depth); or None and why not.
    JSON's own failures include nesting too deep for the parser (RecursionError) and integers
    too long to read (ValueError, over 4,300 digits)."""
    text = _FENCE.sub("", body.strip())
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None, _reason(error)
    if not isinstance(value, dict):
        return None, f"got {type(value).__name__}"
    return plain_json(value)


def _reason(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply to read"
    return str(error)


def tool_call_text(name: str, args: dict[str, Any], tag: str = TOOL_CALL_TAG) -> str:
    """A call written back as text, in the form Qwen's chat templates render a parsed call:
    `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` (`grounding`: the arguments
    alone inside the tag)."""
    if tag != TOOL_CALL_TAG:
        return f"<{tag}>{json.dumps(args, ensure_ascii=False)}</{tag}>"
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"<{tag}>\n{body}\n</{tag}>"


def strip_tool_calls(text: str, tag: str = TOOL_CALL_TAG) -> str:
    """The reply without its tool-call blocks (closed or not)."""
    return _block_pattern(tag).sub("", text).strip()


def answer_text(text: str, tag: str = TOOL_CALL_TAG) -> str:
    """The part of a reply that states an answer: the last `<answer>…</answer>` when there is
    one (DeepEyes, Mini-o3), else the reply without its tool calls and `<think>` blocks."""
    answers = _tag_spans(text, _ANSWER_TAGS)
    if answers:
        _, body_start, body_end, _ = answers[-1]
        return text[body_start:body_end].strip()
    rest = strip_tool_calls(text, tag)
    kept, position = [], 0
    for start, _, _, end in _tag_spans(rest, _THINK_TAGS):
        kept.append(rest[position:start])
        position = end
    kept.append(rest[position:])
    return "".join(kept).strip()


def _tag_spans(text: str, tags: re.Pattern[str]) -> list[tuple[int, int, int, int]]:
    """(start, body start, body end, end) of each `<t>…</t>` (case-insensitive), paired as the
    lazy pattern `<t>.*?</t>` would pair them (from an opening tag to the first closing tag
    after it), in one pass: the lazy pattern itself takes quadratic time on a reply of many
    opening tags and no closing one (35 kB of `<think>`: 2 s)."""
    spans = []
    opened: re.Match[str] | None = None
    for match in tags.finditer(text):
        if not match.group(1):
            opened = opened or match
        elif opened is not None:
            spans.append((opened.start(), opened.end(), match.start(), match.end()))
            opened = None
    return spans
