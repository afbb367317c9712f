"""A sample's pictures on the report page: its thumbnail with every crop the model zoomed into
drawn as a numbered box (an SVG overlay in the original image's pixel frame, so the box sits
exactly where the trace says). A picture that is no longer the run's image is shown with a note
and no boxes; one that cannot be shown is a note."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from zoom_refine.evals.report_data import NoThumbnail, Picture, Thumbnail, crop_views, plain
from zoom_refine.evals.report_html import text
from zoom_refine.tools.overlay import box_colour

BOX_STROKE_PX = 3
"""Width in screen pixels of a zoom box's outline, whatever the thumbnail's scale."""
BOX_TAG_PX = 15
"""Side in screen pixels of the numbered tag in a zoom box's top-left corner."""


def pictures(runs: Sequence[Mapping[str, Any]], picture: Picture | None) -> str:
    """A thumbnail per method that zoomed, its crops drawn over it; one plain thumbnail when
    none did, or when the image changed since the run (with the note saying so)."""
    if picture is None:
        return '<p class="notes no-image">(no image)</p>'
    if isinstance(picture, NoThumbnail):
        return f'<p class="notes no-image image-problem">{text(picture.note)}</p>'
    if picture.note:
        note = f'<p class="notes image-problem">{text(picture.note)}</p>'
        return _figure(picture, [], "", "the image as it is now") + note
    zooming = [run for run in runs if crop_views(run)]
    if not zooming:
        return _figure(picture, [], "", "no zoom")
    return "".join(
        _figure(
            picture,
            crop_views(run),
            str(run["method"]),
            f"{text(run['method'])}: {len(crop_views(run))} crop"
            + ("s" if len(crop_views(run)) != 1 else ""),
        )
        for run in zooming
    )


def _figure(
    picture: Thumbnail, views: Sequence[Mapping[str, Any]], method: str, caption: str
) -> str:
    """`caption` is HTML (its user-supplied parts already escaped)."""
    width, height = picture.size
    return (
        f'<figure class="thumb" data-method="{html.escape(method)}">'
        f'<div class="frame" style="width:{width}px;height:{height}px">'
        f'<img src="data:image/jpeg;base64,{picture.jpeg_base64}" width="{width}" '
        f'height="{height}" alt="the sample\'s image">'
        f"{box_overlay(picture, views)}</div>"
        f"<figcaption>{caption}</figcaption></figure>"
    )


def view_box(view: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """A view's `box` as four finite numbers, or None when the record holds anything else."""
    box = view.get("box")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2, y2) if all(map(math.isfinite, (x1, y1, x2, y2))) else None


def box_overlay(picture: Thumbnail, views: Sequence[Mapping[str, Any]]) -> str:
    """An SVG over the thumbnail whose user units are the original image's pixels, so each
    view's `box` ([x1, y1, x2, y2], original pixels, x2/y2 exclusive) is drawn as is; outlines
    keep `BOX_STROKE_PX` screen pixels at any scale, numbered 1… in the order the crops were made
    (`tools.overlay.box_colour`, the same colours as the PNG overview). A view without a usable
    box is left out."""
    if not views:
        return ""
    original_width, original_height = picture.original_size
    per_pixel = original_width / picture.size[0]  # original pixels per screen pixel
    tag = BOX_TAG_PX * per_pixel
    shapes = []
    for number, view in enumerate(views, start=1):
        box = view_box(view)
        if box is None:
            continue
        x1, y1, x2, y2 = box
        colour = box_colour(number)
        tip = (
            f"crop {number} ({plain(view.get('id'))}, hop {plain(view.get('hop'))}): "
            f"x {x1:g}–{x2:g}, y {y1:g}–{y2:g} of {original_width}×{original_height} px"
        )
        shapes.append(
            f'<g class="box" data-number="{number}"><title>{html.escape(tip)}</title>'
            f'<rect x="{x1:g}" y="{y1:g}" width="{x2 - x1:g}" height="{y2 - y1:g}" fill="none" '
            f'stroke="{colour}" stroke-width="{BOX_STROKE_PX}" vector-effect="non-scaling-stroke"/>'
            f'<rect x="{x1:g}" y="{y1:g}" width="{tag:.2f}" height="{tag:.2f}" fill="{colour}"/>'
            f'<text x="{x1 + tag / 2:.2f}" y="{y1 + tag / 2:.2f}" text-anchor="middle" '
            f'dominant-baseline="central" font-size="{11 * per_pixel:.2f}">{number}</text></g>'
        )
    return (
        f'<svg viewBox="0 0 {original_width} {original_height}" preserveAspectRatio="none" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="zoom boxes">{"".join(shapes)}</svg>'
    )
