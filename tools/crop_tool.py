"""The crop as a LangChain tool: zoom into a region of a registered image at full resolution.

The tool reads only images registered for the current run: the graph state's `image` (the user's
input; another key with `make_crop_tool(image_key=...)`) and its `views` (the ids shown so far).
A model names an *id*, never a path, so nothing a model writes can make the tool open a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.prebuilt import ToolRuntime
from PIL import Image
from typing_extensions import TypedDict

from zoom_refine.tools.boxes import Box, BoxFrame, FloatBox, box_to_pixels, is_finite_box
from zoom_refine.tools.crop import plan_crop
from zoom_refine.tools.encoding import image_content_block, text_content_block
from zoom_refine.tools.images import ImageSource, load_image
from zoom_refine.tools.qwen_agent_zoom import qwen_agent_zoom
from zoom_refine.tools.settings import ImageSettings
from zoom_refine.tools.views import View, ViewRecord, next_view_ids, render_view

CROP_TOOL_NAME = "crop"

UNKNOWN_IMAGE_ID = "unknown image_id {image_id!r}; registered ids: {known}"
BAD_BOX = "box must be four finite numbers [x1, y1, x2, y2], got {box!r}"
NO_IMAGE = "no image registered for this run (the state has no {key!r})"
BAD_IMAGE = "the state's {key!r} holds a value of type {kind}, not an image path or bytes"
TAKEN_VIEW_ID = "view_id {view_id!r} is already registered; leave it out to get the next free id"

CropFrame = BoxFrame | Literal["original"]
CropRule = Literal["ours", "qwen_agent"]
"""How a box becomes a crop: `ours` (`tools.crop.plan_crop`: padding, minimum side, the view at
the model's input size) or `qwen_agent` (`tools.qwen_agent_zoom`: Qwen-Agent's zoom tool)."""
"""The frames the tool reads a box in: a model's (`tools.boxes.BoxFrame`, relative to the image
`image_id`), or `original`: pixels of the original image, the frame our graph's box reader has
already converted to (`agent.regions`), so the box is not converted again."""


@dataclass(frozen=True)
class Crop:
    """A crop made from a model's box: the new view, the image shown, and how it was derived."""

    view: View
    image: Image.Image
    source_view: View
    requested_box: FloatBox
    """The model's box mapped to original pixels, before padding / clamping (for traces)."""


def make_crop(
    original: Image.Image,
    views: Sequence[ViewRecord | Mapping[str, Any]],
    image_id: str,
    box: Sequence[float],
    box_format: CropFrame,
    settings: ImageSettings,
    view_id: str | None = None,
    rule: CropRule = "ours",
) -> Crop:
    """Cut the region `box` (in `box_format` of view `image_id`) from the full-resolution image.

    The new view gets `view_id`, by default the next free id (`tools.views.next_view_ids`), and
    hop (source hop + 1). Several crops made from the same `views` in one step (one tool call per
    region) must each pass their own `view_id`, or they would all get the same default.
    Raises ToolException (a model mistake, reported back, not a crash) for an unknown id, a
    `view_id` already registered, or a box that is not four finite numbers.
    """
    source = _find_view(views, image_id)
    if not is_finite_box(box):
        raise ToolException(BAD_BOX.format(box=list(box)))
    if view_id is not None and any(record["id"] == view_id for record in views):
        raise ToolException(TAKEN_VIEW_ID.format(view_id=view_id))
    requested = _requested_pixels(box, box_format, source)
    if rule == "qwen_agent":
        crop_box, size = _qwen_agent_crop(requested, source.box, settings)
    else:
        crop_box = plan_crop(requested, source.box, original.size, settings)
        size = settings.shown_size((crop_box.width, crop_box.height))
    view, shown = render_view(
        original, crop_box, view_id=view_id or next_view_ids(views)[0], hop=source.hop + 1,
        size=size,
    )  # fmt: skip
    return Crop(view=view, image=shown, source_view=source, requested_box=requested)


def _qwen_agent_crop(
    box: FloatBox, region: Box, settings: ImageSettings
) -> tuple[Box, tuple[int, int]]:
    """Qwen-Agent's zoom of `box` (original pixels) within the view `region` it was drawn on:
    clamped to the region, small sides grown to 32 px, no padding; shown at Qwen-Agent's resize
    of the crop, or the model's input size for that (so its processor keeps it). Unlike
    Qwen-Agent, a zoom inside a zoom is cut from the original at full resolution, not from the
    resized zoom image."""
    local = (box[0] - region.x1, box[1] - region.y1, box[2] - region.x1, box[3] - region.y1)
    try:
        zoom = qwen_agent_zoom(local, (region.width, region.height))
    except ValueError as error:
        raise ToolException(str(error)) from None
    crop = zoom.crop
    crop_box = Box(
        crop.x1 + region.x1, crop.y1 + region.y1, crop.x2 + region.x1, crop.y2 + region.y1
    )
    return crop_box, settings.model_input_size(zoom.size) or zoom.size


def _requested_pixels(box: Sequence[float], box_format: CropFrame, source: View) -> FloatBox:
    """The box in original pixels: as given for `original`, else converted from `source`'s frame."""
    if box_format == "original":
        x1, y1, x2, y2 = (float(value) for value in box)
        return (x1, y1, x2, y2)
    return box_to_pixels(box, box_format, source.box, source.shown_size)


def _find_view(views: Sequence[ViewRecord | Mapping[str, Any]], image_id: str) -> View:
    for record in views:
        if record["id"] == image_id:
            return View.from_record(record)
    known = ", ".join(str(record["id"]) for record in views) or "none"
    raise ToolException(UNKNOWN_IMAGE_ID.format(image_id=image_id, known=known))


def crop_message_content(crop: Crop, settings: ImageSettings) -> list[dict[str, Any]]:
    """The tool's content: a line of text and the crop as a standard image block."""
    width, height = crop.view.shown_size
    text = (
        f"{crop.view.id}: crop of {crop.source_view.id} covering {crop.view.box.as_list()} "
        f"(original pixels), shown at {width}×{height}."
    )
    return [
        text_content_block(text),
        image_content_block(crop.image, settings.encoding, settings.jpeg_quality),
    ]


class CropArtifact(TypedDict):
    """The crop tool's artifact (plain data, kept in the ToolMessage for the graph and traces)."""

    view: ViewRecord
    """The new view."""
    source_id: str
    """Id of the view the box was drawn on."""
    requested_box: list[float]
    """The box in original pixels before padding and clamping, rounded to 0.01 px."""


def crop_artifact(crop: Crop) -> CropArtifact:
    """Plain data for the graph and traces: the new view and the box before padding."""
    return CropArtifact(
        view=crop.view.to_record(),
        source_id=crop.source_view.id,
        requested_box=[round(v, 2) for v in crop.requested_box],
    )


def full_view(image_size: tuple[int, int], settings: ImageSettings) -> View:
    """View `img0`: the whole image, shown as `settings.shown_size` says."""
    return View(
        id="img0", box=Box.full(image_size), hop=0, shown_size=settings.shown_size(image_size)
    )


def _settings_from(context: object) -> ImageSettings:
    return context if isinstance(context, ImageSettings) else ImageSettings()


def make_crop_tool(image_key: str = "image") -> BaseTool:
    """The crop tool reading the run's image from the state key `image_key` (a path or encoded
    bytes), for agents whose state names it otherwise (`make_crop_tool("photo_path")`).

    The tool is named `crop` whatever the key; nested crops find their source view in the
    state's `views`, when the state keeps them."""

    @tool(CROP_TOOL_NAME, response_format="content_and_artifact")
    def crop(
        image_id: str,
        box: list[float],
        runtime: ToolRuntime[Any, Any],
        box_format: CropFrame = "norm1",
        view_id: str | None = None,
        rule: CropRule = "ours",
    ) -> tuple[list[dict[str, Any]], CropArtifact]:
        """Zoom in: cut a region of an image at full resolution and look at it closely.

        Args:
            image_id: which image the box is drawn on: "img0" is the whole image, "img1" the
                first crop, and so on.
            box: [x1, y1, x2, y2] of the region within that image (left, top, right, bottom).
            box_format: the units of `box`: "norm1" (fractions 0–1 of the image's width and
                height), "norm1000" (0–1000), "pixel" (pixels of that image as it was shown), or
                "original" (pixels of the original full-resolution image, whatever `image_id`).
            view_id: id for the new image (optional; by default the next free one, "img1", …).
                Give distinct ids when asking for several crops at once.
            rule: "ours" (padding and a minimum side), or "qwen_agent" (the crop Qwen-Agent's
                zoom tool makes, for models trained against it).
        """
        return run_crop(runtime, image_key, image_id, box, box_format, view_id, rule)

    crop.handle_tool_error = True
    return crop


def run_crop(
    runtime: ToolRuntime[Any, Any],
    image_key: str,
    image_id: str,
    box: Sequence[float],
    box_format: CropFrame,
    view_id: str | None,
    rule: CropRule = "ours",
) -> tuple[list[dict[str, Any]], CropArtifact]:
    """The crop tool's work: the image from state key `image_key`, settings from the run's
    context when it is an ImageSettings (a ZoomContext is one), else the defaults."""
    state = runtime.state
    source = registered_image(state, image_key)
    settings = _settings_from(runtime.context)
    views = state.get("views") if isinstance(state, Mapping) else None
    official = settings.decodes_as_official
    original = load_image(source, max_pixels=settings.max_pixels, official=official).image
    if not views:  # used outside our graph: the whole image is the only registered view
        views = [full_view(original.size, settings).to_record()]
    crop = make_crop(original, views, image_id, box, box_format, settings, view_id, rule)
    if runtime.stream_writer is not None:
        runtime.stream_writer({"event": "crop", **crop_artifact(crop)})
    return crop_message_content(crop, settings), crop_artifact(crop)


def registered_image(state: object, image_key: str) -> ImageSource:
    """The image the state registers under `image_key`; a ToolException (reported to the
    model, not a crash) when it is absent or not a path / bytes."""
    source = state.get(image_key) if isinstance(state, Mapping) else getattr(state, image_key, None)
    if source is None:
        raise ToolException(NO_IMAGE.format(key=image_key))
    if not isinstance(source, (str, bytes, os.PathLike)):
        raise ToolException(BAD_IMAGE.format(key=image_key, kind=type(source).__name__))
    return source


crop_tool = make_crop_tool("image")
"""The crop tool on the state key `image` (the key our graphs use)."""
