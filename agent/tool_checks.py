"""Checking an agent turn's zoom calls before anything runs (the model-driven graph,
`graphs.agent`).

A reply's calls arrive as the server's `tool_calls` or as text (`agent.tool_calls`);
`read_calls` gives each one as `ReadCall` (id, name, arguments, or why it cannot be read).
`check_calls` reads each call in the tool convention (`agent.tool_conventions`), converts its
box once to original-image pixels, and splits the calls into crop calls for our crop tool and
error results for the model: malformed, an unknown tool or image, a bad or huge box, a box
wholly outside its image, over the zoom budget, or in the final turn. Nothing a model writes
raises here: every call becomes a view or a recorded error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.messages.tool import tool_call

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import Family
from zoom_refine.agent.local.model import LocalVisionChatModel
from zoom_refine.agent.regions import pixel_frame_size
from zoom_refine.agent.state import ToolCallRecord
from zoom_refine.agent.strict_json import plain_json, shown
from zoom_refine.agent.tool_calls import parse_text_tool_calls, tool_call_text
from zoom_refine.agent.tool_conventions import (
    BUDGET_SPENT,
    FINAL_TURN,
    OUTSIDE,
    WIRE_KEY,
    CropRequest,
    ToolConvention,
)
from zoom_refine.tools.boxes import FloatBox, box_to_pixels
from zoom_refine.tools.crop_tool import CROP_TOOL_NAME
from zoom_refine.tools.views import View, ViewRecord, next_view_ids

REFUSED = "refused"
"""`ToolMessage.additional_kwargs` key marking an error result the agent node wrote itself (the
call was never run), as opposed to a crop that failed in the tool."""
SERVER_INVALID = "the arguments are not a JSON object: {args}"
NOT_PLAIN = "the arguments cannot be used: {reason}"


def uses_text_calls(context: ZoomContext, model: BaseChatModel) -> bool:
    """Whether tools are offered in the system turn in our words and calls read from text (see
    `ZoomContext.tool_call_format`). `auto`: a local model whose chat template has a tools
    section gets them through its template, as vLLM would render them (one prompt in every
    backend); a local template without one, servers of the InternVL family (whose templates have
    none) and chat models that cannot bind tools get ours."""
    if context.tool_call_format != "auto":
        return context.tool_call_format == "text"
    if isinstance(model, LocalVisionChatModel):
        return not model.renders_tools
    if context.resolved_family(model) == "internvl":  # its template has no tools section: a
        return True  # server would render the request without them (InternVL3, InternVL3.5)
    return type(model).bind_tools is BaseChatModel.bind_tools


@dataclass(frozen=True)
class ReadCall:
    """One call of a reply before it is checked: id, name, arguments, or why it is unreadable."""

    id: str
    name: str | None
    args: dict[str, Any] | None
    error: str | None = None


def text_reply(message: AIMessage, tag: str) -> AIMessage:
    """A reply whose calls are read from its text (calls written as text, `tag` the
    convention's). A server that also parsed the calls into `tool_calls` (`transformers serve`
    does, and vLLM with a parser) is not believed twice: when the text still holds the calls,
    it is kept verbatim and the parsed copy dropped (each call runs once); when the server took
    them out, they are written back as the model wrote them, so the conversation goes on in the
    format the model knows."""
    if not message.tool_calls and not message.invalid_tool_calls:
        return message
    text: str = str(message.text)
    if not parse_text_tool_calls(text, tag):
        written = [_written_back(call["name"], call["args"], tag) for call in message.tool_calls]
        written += [
            f"<{tag}>{call.get('args') or ''}</{tag}>" for call in message.invalid_tool_calls
        ]
        text = "\n".join([text, *written]) if text else "\n".join(written)
    return AIMessage(
        content=text,
        response_metadata=message.response_metadata,
        usage_metadata=message.usage_metadata,
    )


def _written_back(name: str, args: dict[str, Any], tag: str) -> str:
    plain, reason = plain_json(args)
    if reason is not None:  # printed as it could be; read back, it is refused with a reason
        return f"<{tag}>{shown(args)}</{tag}>"
    return tool_call_text(name, plain, tag)


def read_calls(
    message: AIMessage, convention: ToolConvention, turn: int
) -> tuple[list[ReadCall], AIMessage]:
    """The reply's calls, and the reply as the graph's log keeps it (marked with how its calls
    arrived, `WIRE_KEY`): the server's `tool_calls` (and the ones it could not parse) as
    `openai`, kept as the server sent them so the next request repeats them; else calls
    written as text (ids `call-<turn>-<k>`), the text kept alone with the calls as read beside
    it for traces. A server call whose arguments are not plain JSON (a key that is not text,
    nesting too deep, an integer too long to print) is kept as an invalid call."""
    if message.tool_calls or message.invalid_tool_calls:
        return _server_calls(message)
    found = parse_text_tool_calls(message.text, convention.tag, name=convention.tool_name)
    calls = [
        ReadCall(
            id=f"call-{turn}-{k}",
            name=call.name,
            args=call.args if call.error is None else None,
            error=call.error,
        )
        for k, call in enumerate(found, start=1)
    ]
    read = [tool_call(name=c.name or "", args=c.args or {}, id=c.id) for c in calls]
    kept = AIMessage(content=message.text, tool_calls=read, response_metadata={WIRE_KEY: "text"})
    return calls, kept


def _server_calls(message: AIMessage) -> tuple[list[ReadCall], AIMessage]:
    calls: list[ReadCall] = []
    valid: list[ToolCall] = []
    invalid: list[dict[str, Any]] = []
    for k, call in enumerate(message.tool_calls, start=1):
        call_id = str(call["id"] or f"call-{k}")
        args, reason = plain_json(call["args"])
        if reason is None:
            calls.append(ReadCall(id=call_id, name=call["name"], args=args))
            valid.append(tool_call(name=call["name"], args=args, id=call_id))
        else:
            calls.append(ReadCall(call_id, call["name"], None, NOT_PLAIN.format(reason=reason)))
            invalid.append({"name": call["name"], "args": shown(call["args"]), "id": call_id})
    for k, bad in enumerate(message.invalid_tool_calls, start=1):
        call_id = str(bad.get("id") or f"invalid-{k}")
        error = SERVER_INVALID.format(args=shown(bad.get("args")))
        calls.append(ReadCall(id=call_id, name=bad.get("name"), args=None, error=error))
        invalid.append({"name": bad.get("name"), "args": bad.get("args"), "id": call_id})
    kept = AIMessage(
        content=message.content,
        tool_calls=valid,
        invalid_tool_calls=[
            {**item, "error": None, "type": "invalid_tool_call"} for item in invalid
        ],
        response_metadata={WIRE_KEY: "openai"},
    )
    return calls, kept


@dataclass(frozen=True)
class Checked:
    """A turn's calls checked: each call's record, the crop calls to run, the refusals."""

    records: list[ToolCallRecord]
    sends: list[ToolCall]
    """Crop calls in original pixels, each with a distinct new view id."""
    refusals: list[ToolMessage]


def check_calls(
    calls: Sequence[ReadCall],
    convention: ToolConvention,
    views: Sequence[ViewRecord],
    family: Family,
    context: ZoomContext,
    image_sizes: list[list[int]] | None,
    budget: int,
    *,
    final: bool,
) -> Checked:
    """Each call's record; the crop calls to run within `budget` (none in the `final` turn);
    error results for the rest. `image_sizes` are the sizes the model's processor resized each
    image to, in view order, when the backend reports them."""
    image_ids = [view["id"] for view in views]
    fresh = iter(next_view_ids(views, len(calls))) if calls else iter(())
    checked = Checked(records=[], sends=[], refusals=[])
    for call in calls:
        request = convention.read(call.name, call.args or {}, image_ids) if not call.error else None
        error = call.error or (request if isinstance(request, str) else None)
        item = ToolCallRecord(
            id=call.id, name=call.name, args=call.args, image=None, box=None, box_frame=None,
            view=None, error=None,
        )  # fmt: skip
        pixels: FloatBox | None = None
        if isinstance(request, CropRequest):
            item |= {"image": request.image_id, "box": list(request.box)}
            item["box_frame"] = request.frame
            converted = original_pixels(request, views, family, context, image_sizes)
            pixels, error = (None, converted) if isinstance(converted, str) else (converted, None)
        if error is None and (final or budget <= 0):
            error = FINAL_TURN if final else BUDGET_SPENT.format(limit=context.max_hops)
        if error is None and isinstance(request, CropRequest) and pixels is not None:
            budget -= 1
            item["view"] = view_id = next(fresh)
            args = {"image_id": request.image_id, "box": list(pixels), "box_format": "original"}
            if convention.crop_rule != "ours":  # cut as the model's own tool cuts
                args["rule"] = convention.crop_rule
            checked.sends.append(
                tool_call(name=CROP_TOOL_NAME, args=args | {"view_id": view_id}, id=call.id)
            )
        else:
            item["error"] = error
            checked.refusals.append(refusal(call, convention, str(error)))
        checked.records.append(item)
    return checked


def refusal(call: ReadCall, convention: ToolConvention, error: str) -> ToolMessage:
    """The error result the model reads for a call that was not run."""
    return ToolMessage(
        content=error,
        tool_call_id=call.id,
        name=call.name or convention.tool_name,
        status="error",
        additional_kwargs={REFUSED: True},
    )


def original_pixels(
    request: CropRequest,
    views: Sequence[ViewRecord],
    family: Family,
    context: ZoomContext,
    image_sizes: list[list[int]] | None,
) -> FloatBox | str:
    """The request's box in original-image pixels, or why it is refused (it lies wholly
    outside the image it was drawn on). A `pixel` box is read in the size the model saw the
    image at (`regions.pixel_frame_size`: what the backend reports for that image, one per
    image in conversation order, which is view order; Qwen2.5-VL's resize rule for servers;
    else the size we showed it at)."""
    index = [view["id"] for view in views].index(request.image_id)
    view = View.from_record(views[index])
    size = view.shown_size
    if request.frame == "pixel":
        processed = _size_at(image_sizes, index)
        size = pixel_frame_size(view, family, context, processed)
    x1, y1, x2, y2 = box_to_pixels(request.box, request.frame, view.box, size)
    left, top, right, bottom = min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    region = view.box
    if right < region.x1 or bottom < region.y1 or left > region.x2 or top > region.y2:
        frame = f"{request.frame} of {request.image_id}"
        return OUTSIDE.format(box=list(request.box), frame=frame)
    return (x1, y1, x2, y2)


def _size_at(image_sizes: list[list[int]] | None, index: int) -> tuple[int, int] | None:
    if not image_sizes or index >= len(image_sizes):
        return None
    width, height = image_sizes[index]
    return int(width), int(height)


def tool_results(results: Sequence[ToolMessage]) -> tuple[list[ViewRecord], list[str]]:
    """The views the crop tool made, in order, and why each crop it was asked for failed
    (results the agent node wrote itself for refused calls are already in its step)."""
    made = [r.artifact["view"] for r in results if r.status != "error" and r.artifact]
    failed = [
        str(r.content)
        for r in results
        if (r.status == "error" or not r.artifact) and not r.additional_kwargs.get(REFUSED)
    ]
    return made, failed
