"""Pictures of a run: the original with every zoom box drawn, and each crop as the model saw it.

All boxes are `[x1, y1, x2, y2]` in original-image pixels (the views' frame). Nothing here needs
the model or the graph: a run's output state (its `views`) and the image are enough.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from zoom_refine.tools.boxes import Box
from zoom_refine.tools.images import ImageSource, load_image
from zoom_refine.tools.views import render_view

BOX_COLOURS = ["#ff3b30", "#ffcc00", "#34c759", "#007aff", "#ff2d95", "#00c7be", "#af52de"]
"""Outline colours, hop 1 first, cycling: distinct from each other at a glance."""
OVERVIEW_SIDE = 1600
TRACE_KEYS = (
    "answer",
    "initial_answer",
    "confidence",
    "views",
    "steps",
    "usage",
    "image_sha256",
    "stop_reason",
)
"""The output-state keys written to trace.json (a checkpoint's state also holds the conversation)."""


def box_colour(number: int) -> str:
    """The outline colour of box `number` (1 = the first hop's crop)."""
    return BOX_COLOURS[(number - 1) % len(BOX_COLOURS)]


def as_image(image: Image.Image | ImageSource) -> Image.Image:
    """A PIL image as is (converted to RGB); a path or encoded bytes loaded as the graph loads them."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return load_image(image).image


def draw_boxes(
    original: Image.Image, boxes: Sequence[Sequence[int]], *, max_side: int
) -> Image.Image:
    """A copy of `original` downscaled to `max_side` (never enlarged), with `boxes` — in pixels of
    `original`, scaled here with the picture — drawn and numbered."""
    scale = min(1.0, max_side / max(original.size))
    size = (max(1, round(original.width * scale)), max(1, round(original.height * scale)))
    picture = original.resize(size, Image.Resampling.BILINEAR) if scale < 1 else original.copy()
    picture = picture.convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(size) / 400))
    font = _font(max(10, round(max(size) / 40)))
    for number, box in enumerate(boxes, start=1):
        colour = box_colour(number)
        x1, y1, x2, y2 = (round(value * scale) for value in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        # the number on a tag of the box's colour, just inside its top-left corner
        left, top, right, bottom = draw.textbbox((0, 0), str(number), font=font)
        pad = max(1, width // 2)
        tag = (x1, y1, x1 + right - left + 2 * pad + width, y1 + bottom - top + 2 * pad + width)
        draw.rectangle(tag, fill=colour)
        draw.text(
            (x1 + width + pad - left, y1 + width + pad - top), str(number), fill="black", font=font
        )
    return picture


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def hop_boxes(views: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The boxes of the crops (every view after `img0`), in original pixels, in the order made."""
    return [list(view["box"]) for view in views[1:]]


def render_overview(
    image: Image.Image | ImageSource,
    views: Sequence[Mapping[str, Any]],
    max_side: int = OVERVIEW_SIDE,
) -> Image.Image:
    """The original, downscaled to `max_side`, with every hop's box drawn and numbered (1 = hop 1)."""
    return draw_boxes(as_image(image), hop_boxes(views), max_side=max_side)


def render_hops(
    image: Image.Image | ImageSource, views: Sequence[Mapping[str, Any]]
) -> list[Image.Image]:
    """Each crop as the model saw it: the view's box cut from the original and resized to its
    shown size with the same resampling that made the view (`tools.views.render_view`), so the
    pixels equal those sent (before any lossy encoding such as JPEG)."""
    original = as_image(image)
    return [
        render_view(original, Box.from_list(view["box"]), view_id="", hop=0, size=_size(view))[1]
        for view in views[1:]
    ]


def _size(view: Mapping[str, Any]) -> tuple[int, int]:
    return int(view["size"][0]), int(view["size"][1])


def show_trace(result: Mapping[str, Any], image: Image.Image | ImageSource) -> list[Image.Image]:
    """For notebooks: the overview first, then each hop's crop."""
    original = as_image(image)
    views = result.get("views") or []
    return [render_overview(original, views), *render_hops(original, views)]


def trace_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """The output-state part of `state` (no conversation, no image bytes), as written to trace.json."""
    return {key: state[key] for key in TRACE_KEYS if key in state}


def save_trace(
    result: Mapping[str, Any], image: Image.Image | ImageSource, folder: str | Path
) -> list[Path]:
    """Write `overview.png`, `hop-1.png` … and `trace.json` into `folder`; returns the paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    overview, *hops = show_trace(result, image)
    paths = [out / "overview.png"]
    overview.save(paths[0])
    for number, hop in enumerate(hops, start=1):
        paths.append(out / f"hop-{number}.png")
        hop.save(paths[-1])
    paths.append(out / "trace.json")
    paths[-1].write_text(json.dumps(trace_record(result), indent=2, default=str) + "\n")
    return paths
