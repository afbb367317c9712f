"""A chat template with a tools section, for tests that need a checkpoint rendering `tools` itself.

The tiny Qwen models' template (`testing.tiny_qwen.QWEN_CHAT_TEMPLATE`) has no tools section.
`TOOLS_CHAT_TEMPLATE` is that template plus what Qwen's tool-calling templates (Qwen3-VL's
among them) do with tools, in the same format: the tools as JSON lines inside `<tools>` in the
system turn, an assistant turn's calls as `<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`
and tool results inside `<tool_response>` in a user turn (a run of results in one turn). Without
tools and tool turns it renders exactly what the tiny template renders, so a model trained on
that template meets the same text wherever the two formats agree. Written for these tests (not
copied from a checkpoint); it iterates over `message['content']` as Qwen's templates do, so
vLLM sends it content parts (its `openai` content format).
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOOLS_SECTION = (
    "{%- set tools_text = namespace(value='') %}"
    "{%- if tools %}"
    "{%- set tools_text.value = '\\n\\n# Tools\\n\\nYou may call the functions below. Their "
    "signatures are inside <tools></tools>:\\n<tools>' %}"
    "{%- for tool in tools %}"
    "{%- set tools_text.value = tools_text.value + '\\n' + (tool | tojson) %}"
    "{%- endfor %}"
    "{%- set tools_text.value = tools_text.value + '\\n</tools>\\n\\nTo call one, write its name "
    "and arguments as one JSON object inside <tool_call></tool_call> tags:\\n<tool_call>\\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>\' %}'
    "{%- endif %}"
)
CONTENT = (
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
)
TOOL_CALLS = (
    "{%- for call in message['tool_calls'] %}"
    "{%- if not loop.first or message['content'] %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' "
    "+ (call['function']['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}"
)
TOOLS_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    + TOOLS_SECTION
    + "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.' + tools_text.value + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' }}{%- endif %}"
    + CONTENT
    + "{%- if message['role'] == 'tool' %}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{%- if loop.first and message['role'] == 'system' %}{{- tools_text.value }}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['tool_calls'] %}"
    + TOOL_CALLS
    + "{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TEMPLATE_FILE = "chat_template.jinja"


def with_tools_template(model_dir: Path, out_dir: Path) -> Path:
    """A copy of the checkpoint in `model_dir` at `out_dir` whose chat template (the processor's
    and the tokenizer's: both read `chat_template.jinja`) is `TOOLS_CHAT_TEMPLATE`."""
    shutil.copytree(model_dir, out_dir)
    (out_dir / TEMPLATE_FILE).write_text(TOOLS_CHAT_TEMPLATE)
    return out_dir
