"""The zoom tools of the leading tool-calling VLMs: schemas, box frames, prompts, result formats.

A model trained to zoom by tool calls expects one tool's name, arguments and box frame, and
reads the crop back in one format. Each `ToolConvention` names those, reads a call's arguments
into a `CropRequest` (the image to cut from, the box as written, its frame), and renders the
crop results the way that model saw them in training. The graph (`graphs.agent`) converts every
request to original-image pixels and runs our one crop tool (`tools.crop_tool`).

| convention | tool (call)                               | box frame                                              |
| ---------- | ----------------------------------------- | ------------------------------------------------------ |
| `crop`     | `crop(image_id, box, box_format)`         | `box_format` of image `image_id` (default 0–1)         |
| `qwen3_vl` | `image_zoom_in_tool(bbox_2d, label, img_idx)` | 0–1000 of image `img_idx` (0 = the original)       |
| `deepeyes` | `image_zoom_in_tool(bbox_2d, label)`      | pixels of the original as shown (processor-resized)   |
| `mini_o3`  | `<grounding>{bbox_2d, source}</grounding>` | 0–1 of `source` (`original_image`, `observation_k`)  |

The wording the model reads (system turn, zoom hint, answer format, result hints, errors) is
the prompt set's `[agent]` table (`agent/prompt_sets/default.toml`, `ZoomContext.prompt_set`);
this module picks each convention's texts and fills them.

Sources read for the schemas and result formats (public code; our wording throughout):
Qwen-Agent `qwen_agent/tools/image_zoom_in_qwen3vl.py`, DeepEyes `eval/eval_vstar.py` and
`verl/workers/agent/envs/mm_process_engine/`, Mini-o3's grounding parser and crop tool.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from zoom_refine.agent.prompt_set import FRAGMENTS, PromptSet, default_prompt_set
from zoom_refine.agent.prompts import answer_hint, question_block
from zoom_refine.agent.strict_json import shown
from zoom_refine.agent.tool_calls import GROUNDING_TAG, TOOL_CALL_TAG
from zoom_refine.agent.tool_images import is_image_block, move_tool_images_to_user
from zoom_refine.tools.boxes import BoxFrame
from zoom_refine.tools.crop_tool import CropRule

ToolConventionName = Literal["crop", "qwen3_vl", "deepeyes", "mini_o3"]
TOOL_CONVENTIONS: tuple[ToolConventionName, ...] = ("crop", "qwen3_vl", "deepeyes", "mini_o3")
ToolCallFormat = Literal["auto", "openai", "text"]
ToolImages = Literal["user", "tool"]
AnswerStyle = Literal["label", "tag"]

WIRE_KEY = "tool_call_format"
"""`AIMessage.response_metadata` key: how the reply's calls arrived, `openai` or `text`."""

BAD_BOX = "{field} must be four finite numbers [x1, y1, x2, y2], got {value}"
BOX_TOO_LARGE = "{field} numbers must lie within ±{limit:g}, got {value}"
OUTSIDE = "the box {box} lies outside the image ({frame}); draw it inside the image"
UNKNOWN_IMAGE = "{field} {value} names no image shown so far; known: {known}"
BAD_BOX_FORMAT = "box_format must be one of norm1, norm1000, pixel, got {value}"
BAD_SOURCE = 'source must be "original_image" or "observation_<k>", got {value}'
UNKNOWN_TOOL = "unknown tool {name}: the only tool is {tool!r}"
BUDGET_SPENT = "too many zoom calls: the limit of {limit} is used up; answer with what you have"
FINAL_TURN = "zoom budget spent: tool calls are no longer run"
MAX_BOX_VALUE = 1e6
"""Largest box number read, in any frame: past it a box is refused, not converted (pixel
arithmetic on 1e300 overflows to infinity; no image is a million pixels wide)."""
_INDEX = re.compile(r"[0-9]{1,6}")
"""An image number written as text: ASCII digits only (`"²".isdigit()` is true, but `int`
refuses it), short enough that it can name a view."""


@dataclass(frozen=True)
class CropRequest:
    """A zoom call read: the image to cut from (a view id), the box as written, its frame."""

    image_id: str
    box: tuple[float, float, float, float]
    frame: BoxFrame
    """`norm1`, `norm1000` or `pixel` of the image `image_id`."""
    label: str | None = None


@dataclass(frozen=True)
class ToolConvention:
    """One model family's zoom tool: what the model is offered and how its calls are read."""

    name: ToolConventionName
    tool_name: str
    """The function name the model calls (Mini-o3: the tag, `grounding`)."""
    description: str
    parameters: dict[str, Any]
    """The JSON schema of the arguments, as offered to the model."""
    frame_text: str
    """The box frame, in words (docs, traces, the schema's own description)."""
    tag: str = TOOL_CALL_TAG
    """The tag a text call is written in: `tool_call` (Qwen's format) or `grounding`."""
    answer_style: AnswerStyle = "label"
    """How the final answer is asked for: `Answer: X` (`label`) or `<answer>X</answer>` (`tag`)."""
    crop_rule: CropRule = "ours"
    """How the crop tool cuts the box (`tools.crop_tool`): `ours` (padding, minimum side) or
    `qwen_agent` (Qwen-Agent's zoom tool, which the Qwen3-VL models were trained against)."""

    def schema(self) -> dict[str, Any]:
        """The tool in OpenAI's function format (what `bind_tools` and `<tools>` carry)."""
        return {
            "type": "function",
            "function": {
                "name": self.tool_name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def read(
        self, name: str | None, args: Mapping[str, Any], image_ids: Sequence[str]
    ) -> CropRequest | str:
        """A call's arguments as a `CropRequest`, or why it cannot be run (a message for the
        model). `image_ids` are the views shown so far (`img0` the original, then each crop)."""
        if name != self.tool_name:
            return UNKNOWN_TOOL.format(name=shown(name), tool=self.tool_name)
        reader = _READERS[self.name]
        return reader(args, image_ids)


def _box(args: Mapping[str, Any], field: str) -> tuple[float, float, float, float] | str:
    """Four finite numbers within ±`MAX_BOX_VALUE` (numbers written as text are read too),
    or why not: a huge integer (OverflowError in `float`), a non-number, NaN or infinity."""
    value = args.get(field)
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return BAD_BOX.format(field=field, value=shown(value))
    try:
        numbers = [float(v) for v in value if not isinstance(v, bool)]
    except (TypeError, ValueError, OverflowError):
        return BAD_BOX.format(field=field, value=shown(value))
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        return BAD_BOX.format(field=field, value=shown(value))
    if any(abs(v) > MAX_BOX_VALUE for v in numbers):
        return BOX_TOO_LARGE.format(field=field, limit=MAX_BOX_VALUE, value=shown(value))
    return (numbers[0], numbers[1], numbers[2], numbers[3])


def _known(image_id: str, field: str, value: object, image_ids: Sequence[str]) -> str | None:
    if image_id in image_ids:
        return None
    return UNKNOWN_IMAGE.format(field=field, value=shown(value), known=", ".join(image_ids))


def _label(args: Mapping[str, Any]) -> str | None:
    label = args.get("label")
    return label if isinstance(label, str) else None


def _image_number(value: object) -> int | None:
    """An image number: an int (or a whole float) from 0 to 999,999, or ASCII digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        value = int(value)
    if isinstance(value, str) and _INDEX.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1_000_000:
        return value
    return None


def _read_crop(args: Mapping[str, Any], image_ids: Sequence[str]) -> CropRequest | str:
    box = _box(args, "box")
    if isinstance(box, str):
        return box
    image_id = args.get("image_id", "img0")
    frame = args.get("box_format", "norm1")
    if frame not in ("norm1", "norm1000", "pixel"):
        return BAD_BOX_FORMAT.format(value=shown(frame))
    if not isinstance(image_id, str) or image_id not in image_ids:
        return UNKNOWN_IMAGE.format(
            field="image_id", value=shown(image_id), known=", ".join(image_ids)
        )
    return CropRequest(image_id, box, frame)


def _read_qwen3_vl(args: Mapping[str, Any], image_ids: Sequence[str]) -> CropRequest | str:
    box = _box(args, "bbox_2d")
    if isinstance(box, str):
        return box
    written = args.get("img_idx", 0)
    index = _image_number(written)
    if index is None:
        return UNKNOWN_IMAGE.format(
            field="img_idx", value=shown(written), known=", ".join(image_ids)
        )
    image_id = f"img{index}"
    error = _known(image_id, "img_idx", written, image_ids)
    return error or CropRequest(image_id, box, "norm1000", _label(args))


def _read_deepeyes(args: Mapping[str, Any], image_ids: Sequence[str]) -> CropRequest | str:
    box = _box(args, "bbox_2d")
    return box if isinstance(box, str) else CropRequest("img0", box, "pixel", _label(args))


def _read_mini_o3(args: Mapping[str, Any], image_ids: Sequence[str]) -> CropRequest | str:
    box = _box(args, "bbox_2d")
    if isinstance(box, str):
        return box
    source = args.get("source", "original_image")
    if source in ("original_image", None, ""):
        image_id = "img0"
    elif isinstance(source, str) and source.startswith("observation_"):
        number = _image_number(source.removeprefix("observation_"))
        if number is None:
            return BAD_SOURCE.format(value=shown(source))
        image_id = f"img{number}"
    else:
        return BAD_SOURCE.format(value=shown(source))
    return _known(image_id, "source", source, image_ids) or CropRequest(image_id, box, "norm1")


_READERS = {
    "crop": _read_crop,
    "qwen3_vl": _read_qwen3_vl,
    "deepeyes": _read_deepeyes,
    "mini_o3": _read_mini_o3,
}

_BOX_ITEMS = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}

CONVENTIONS: dict[ToolConventionName, ToolConvention] = {
    "crop": ToolConvention(
        name="crop",
        tool_name="crop",
        description="Zoom in: cut a region of an image out of the original high-resolution "
        "image and look at it closely.",
        parameters={
            "type": "object",
            "properties": {
                "image_id": {
                    "type": "string",
                    "description": 'The image the box is drawn on: "img0" is the whole image, '
                    '"img1" the first crop, and so on.',
                },
                "box": {
                    **_BOX_ITEMS,
                    "description": "[x1, y1, x2, y2]: left, top, right, bottom of the region "
                    "within that image, in the units box_format names.",
                },
                "box_format": {
                    "type": "string",
                    "enum": ["norm1", "norm1000", "pixel"],
                    "description": 'Units of box: "norm1" fractions 0-1 of the image\'s width '
                    'and height (default), "norm1000" the same on 0-1000, "pixel" pixels of '
                    "that image as you were shown it.",
                },
            },
            "required": ["image_id", "box"],
        },
        frame_text="box_format (default norm1: fractions 0-1) of the image image_id",
    ),
    "qwen3_vl": ToolConvention(
        name="qwen3_vl",
        tool_name="image_zoom_in_tool",
        description="Zoom in on a region of an image by cropping it to a bounding box, with a "
        "label for what it contains.",
        parameters={
            "type": "object",
            "properties": {
                "bbox_2d": {
                    **_BOX_ITEMS,
                    "description": "[x1, y1, x2, y2], top-left then bottom-right corner, on a "
                    "0-1000 scale of the width and height of the image img_idx.",
                },
                "label": {"type": "string", "description": "What the box contains."},
                "img_idx": {
                    "type": "number",
                    "description": "Which image to zoom into: 0 is the original image, 1 the "
                    "first zoomed-in image, and so on.",
                },
            },
            "required": ["bbox_2d", "label", "img_idx"],
        },
        frame_text="0-1000 of the image img_idx (0 = the original)",
        crop_rule="qwen_agent",
    ),
    "deepeyes": ToolConvention(
        name="deepeyes",
        tool_name="image_zoom_in_tool",
        description="Zoom in on a region of the image by cropping it to a bounding box, with "
        "an optional label for what it contains.",
        parameters={
            "type": "object",
            "properties": {
                "bbox_2d": {
                    **_BOX_ITEMS,
                    "description": "[x1, y1, x2, y2], top-left then bottom-right corner, in "
                    "pixels of the original image as you see it.",
                },
                "label": {"type": "string", "description": "What the box contains (optional)."},
            },
            "required": ["bbox_2d"],
        },
        frame_text="absolute pixels of the original image as the model saw it (for Qwen2.5-VL: "
        "the size its processor resized the view to)",
        answer_style="tag",
    ),
    "mini_o3": ToolConvention(
        name="mini_o3",
        tool_name="grounding",
        description="Zoom in on a region of the original image or of an earlier observation.",
        parameters={
            "type": "object",
            "properties": {
                "bbox_2d": {
                    **_BOX_ITEMS,
                    "description": "[x0, y0, x1, y1], top-left then bottom-right corner, "
                    "relative to the source image (its width and height are 1.0).",
                },
                "source": {
                    "type": "string",
                    "description": '"original_image", or "observation_<k>" for the k-th '
                    "zoomed-in image.",
                },
            },
            "required": ["bbox_2d"],
        },
        frame_text="relative 0-1 of the image source (original_image, observation_k)",
        tag=GROUNDING_TAG,
        answer_style="tag",
    ),
}


def tool_convention(name: ToolConventionName) -> ToolConvention:
    return CONVENTIONS[name]


# --- what the model is told (the prompt set's [agent] texts) -----------------------------------


def answer_format(
    convention: ToolConvention, options: Mapping[str, str] | None, prompts: PromptSet
) -> str:
    """How the final answer is asked for: the convention's answer style, with the answer hint
    (a letter with options, a short answer without) from the set's fragments, or ours."""
    hint = answer_hint(options, prompts.fragments_or_ours(*FRAGMENTS["answer_hint"]))
    return prompts.agent_text(f"answer_format.{convention.answer_style}", answer_hint=hint)


def system_prompt(
    convention: ToolConvention, prompts: PromptSet | None = None, *, text_calls: bool
) -> str | None:
    """The system turn: the tool's signature in Qwen's `<tools>` format when calls are written
    as text (a server with a parser renders the tools itself); Mini-o3's grounding instructions."""
    prompts = prompts or default_prompt_set()
    if convention.name == "mini_o3":
        return prompts.agent_text("mini_o3_system")
    if not text_calls:
        return None
    tools = json.dumps(convention.schema(), ensure_ascii=False)
    return prompts.agent_text("tools_system", tools=tools)


def question_prompt(
    convention: ToolConvention,
    question: str,
    options: Mapping[str, str] | None,
    limit: int,
    prompts: PromptSet | None = None,
) -> str:
    """The first user turn's text (after the image): the question block (the set's
    `question_with_options` / `question_open`, or ours), the zoom hint, the answer format."""
    prompts = prompts or default_prompt_set()
    block = question_block(
        question, options, prompts.fragments_or_ours(*FRAGMENTS["question_block"])
    )
    parts = [block, prompts.agent_text(f"zoom_hint.{convention.name}", limit=limit)]
    if convention.name != "deepeyes":
        parts.append(answer_format(convention, options, prompts))
    return "\n\n".join(parts)


def final_prompt(
    convention: ToolConvention,
    options: Mapping[str, str] | None,
    limit: int,
    prompts: PromptSet | None = None,
) -> str:
    """Asked once the zoom budget is spent: answer without tools."""
    prompts = prompts or default_prompt_set()
    answer = answer_format(convention, options, prompts)
    return prompts.agent_text("final", limit=limit, answer_format=answer)


# --- the conversation as this model expects it ------------------------------------------------


def result_blocks(
    convention: ToolConvention, message: ToolMessage, action: int, prompts: PromptSet
) -> list[Any]:
    """What the model reads for one tool result (`action`: the call's number in the run, from 1):
    an observation line (Mini-o3), the crop, our crop tool's line (`crop`), then the
    convention's result hint (what to do next; none for Qwen-Agent); an error as `Error: …`."""
    if message.status == "error" or not message.artifact:
        error = prompts.agent_text("error", message=_text(message.content))
        return [{"type": "text", "text": error}]
    content = message.content if isinstance(message.content, list) else [message.content]
    blocks: list[Any] = []
    if convention.name == "mini_o3":
        number = str(message.artifact["view"]["id"]).removeprefix("img")
        line = prompts.agent_text("observation", action=action, number=number)
        blocks.append({"type": "text", "text": line})
    blocks.extend(block for block in content if is_image_block(block))
    if convention.name == "crop":  # what the crop is: our crop tool's own line
        blocks.extend(block for block in content if not is_image_block(block))
    if hint := prompts.agent_text(f"result_hint.{convention.name}"):
        blocks.append({"type": "text", "text": hint})
    return blocks


def _text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return " ".join(
        str(block.get("text", "")) if isinstance(block, dict) else str(block) for block in content
    )


def to_agent_messages(
    log: Sequence[BaseMessage],
    convention: ToolConvention,
    prompts: PromptSet | None = None,
    *,
    tool_images: ToolImages,
) -> list[BaseMessage]:
    """The graph's log as this model is sent it. Calls that arrived as OpenAI `tool_calls` are
    answered by ToolMessages (their images moved to a user message when `tool_images="user"`,
    `agent.tool_images`); calls written as text get their results in the next user turn, inside
    `<tool_response>` tags (Qwen's format), or as Mini-o3 observations. Result texts come from
    `prompts` (default: ours)."""
    prompts = prompts or default_prompt_set()
    out: list[BaseMessage] = []
    openai_ids: set[str] = set()
    action = 0
    for message in log:
        if isinstance(message, AIMessage):
            if message.response_metadata.get(WIRE_KEY) == "openai":
                calls = [*message.tool_calls, *_invalid_as_calls(message)]
                openai_ids |= {str(call["id"]) for call in calls}
                out.append(AIMessage(content=message.content, tool_calls=calls))
            else:
                out.append(AIMessage(content=message.content))
        elif isinstance(message, ToolMessage):
            action += 1
            blocks = result_blocks(convention, message, action, prompts)
            if message.tool_call_id in openai_ids:
                out.append(message.model_copy(update={"content": blocks, "artifact": None}))
            else:
                _append_user(out, _wrapped(convention, blocks))
        elif isinstance(message, (HumanMessage, SystemMessage)):
            if isinstance(message, HumanMessage) and out and isinstance(out[-1], HumanMessage):
                _append_user(out, _as_blocks(message.content))
            else:
                out.append(message)
        else:
            out.append(message)
    return move_tool_images_to_user(out) if tool_images == "user" else out


def _invalid_as_calls(message: AIMessage) -> list[Any]:
    """A server's unparseable calls, sent back as calls so the error result has one to answer."""
    return [
        {"name": call.get("name") or "", "args": {}, "id": call.get("id"), "type": "tool_call"}
        for call in message.invalid_tool_calls
        if call.get("id")
    ]


def _wrapped(convention: ToolConvention, blocks: list[Any]) -> list[Any]:
    if convention.name == "mini_o3":
        return blocks
    return [
        {"type": "text", "text": "<tool_response>\n"},
        *blocks,
        {"type": "text", "text": "\n</tool_response>"},
    ]


def _as_blocks(content: str | list[Any]) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _append_user(out: list[BaseMessage], blocks: list[Any]) -> None:
    """Consecutive user content goes into one user turn (chat templates expect alternation)."""
    if out and isinstance(out[-1], HumanMessage):
        out[-1] = HumanMessage(content=[*_as_blocks(out[-1].content), *blocks])
    else:
        out.append(HumanMessage(content=list(blocks)))
