"""Where to cut: from a model's (possibly sloppy) box to a valid crop box in original pixels.

The steps, in order: swap inverted corners, clamp to the image, pad, clamp, enforce a minimum side
(growing a zero-area box around its point), and round outwards to whole pixels. The result always
lies inside the image and has positive area.

With several regions per question (`max_regions > 1`), `merge_overlapping_pixel_boxes` first joins
regions whose crops would show the same thing twice (see its docstring for the rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from zoom_refine.tools.boxes import (
    Box,
    FloatBox,
    pixel_box_area,
    pixel_box_intersection_area,
    pixel_box_iou,
    pixel_box_union,
)
from zoom_refine.tools.settings import ImageSettings


def plan_crop(
    box: FloatBox, region: Box, image_size: tuple[int, int], settings: ImageSettings
) -> Box:
    """The crop, in original pixels, for `box` (original pixels) drawn on `region`.

    `region` is the part of the original the model was shown (for padding in `region` mode);
    `image_size` = (width, height) of the original image, which bounds the result.
    """
    width, height = image_size
    x1, y1, x2, y2 = _ordered(box)
    x1, x2 = _clamp_span(x1, x2, 0, width)
    y1, y2 = _clamp_span(y1, y2, 0, height)
    pad_x, pad_y = _padding(x2 - x1, y2 - y1, region, settings)
    x1, x2 = _clamp_span(x1 - pad_x, x2 + pad_x, 0, width)
    y1, y2 = _clamp_span(y1 - pad_y, y2 + pad_y, 0, height)
    min_side = max(settings.min_crop_side, 1)
    x1, x2 = _grow_to(x1, x2, min(min_side, width), width)
    y1, y2 = _grow_to(y1, y2, min(min_side, height), height)
    return _round_outwards(x1, y1, x2, y2, width, height)


def _ordered(box: FloatBox) -> FloatBox:
    """Swap inverted corners (x2 < x1 or y2 < y1) instead of rejecting the box."""
    x1, y1, x2, y2 = box
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _clamp_span(low: float, high: float, lower: float, upper: float) -> tuple[float, float]:
    return min(max(low, lower), upper), min(max(high, lower), upper)


def _padding(
    box_width: float, box_height: float, region: Box, settings: ImageSettings
) -> tuple[float, float]:
    if settings.padding_mode == "box":
        return settings.padding * box_width, settings.padding * box_height
    return settings.padding * region.width, settings.padding * region.height


def _grow_to(low: float, high: float, side: float, upper: float) -> tuple[float, float]:
    """Widen [low, high) to at least `side` around its centre, shifted to stay in [0, upper]."""
    if high - low >= side:
        return low, high
    centre = (low + high) / 2.0
    low, high = centre - side / 2.0, centre + side / 2.0
    if low < 0:
        low, high = 0.0, side
    if high > upper:
        low, high = upper - side, upper
    return low, high


def _round_outwards(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Box:
    left, top = max(math.floor(x1), 0), max(math.floor(y1), 0)
    right, bottom = min(math.ceil(x2), width), min(math.ceil(y2), height)
    # A sub-pixel box at the far edge rounds to zero width: keep one pixel.
    if right <= left:
        left, right = min(left, width - 1), min(left, width - 1) + 1
    if bottom <= top:
        top, bottom = min(top, height - 1), min(top, height - 1) + 1
    return Box(left, top, right, bottom)


CONTAINED_FRACTION = 0.5
"""Two crops also merge when their shared area is at least this fraction of the smaller crop."""


@dataclass(frozen=True)
class MergedRegion:
    """One region after merging: its box in original pixels (corners ordered, not padded) and
    the indices of the input boxes it holds, in input order."""

    box: FloatBox
    members: tuple[int, ...]


def merge_overlapping_pixel_boxes(
    boxes: Sequence[FloatBox],
    region: Box,
    image_size: tuple[int, int],
    settings: ImageSettings,
    iou_threshold: float,
) -> list[MergedRegion]:
    """Join boxes (original pixels, drawn on `region`) whose crops would overlap heavily.

    The rule compares the crops `plan_crop` would cut (padded, clamped, minimum side), so it
    judges what the model would actually be shown: two regions merge into the union of their
    boxes when their crops' IoU exceeds `iou_threshold`, or when the crops share at least
    `CONTAINED_FRACTION` of the smaller crop (one nearly inside the other). Merging repeats until
    no pair qualifies (a union may reach a third region). The result keeps the order in which
    each merged region's first box was given.
    """
    groups = [MergedRegion(_ordered(box), (index,)) for index, box in enumerate(boxes)]
    merged = True
    while merged:
        merged = False
        crops = [plan_crop(group.box, region, image_size, settings).as_tuple() for group in groups]
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _heavy_overlap(crops[i], crops[j], iou_threshold):
                    joined = MergedRegion(
                        pixel_box_union(groups[i].box, groups[j].box),
                        tuple(sorted(groups[i].members + groups[j].members)),
                    )
                    groups = [*groups[:i], joined, *groups[i + 1 : j], *groups[j + 1 :]]
                    merged = True
                    break
            if merged:
                break
    return groups


def _heavy_overlap(a: Sequence[float], b: Sequence[float], iou_threshold: float) -> bool:
    smaller = min(pixel_box_area(a), pixel_box_area(b))
    shared = pixel_box_intersection_area(a, b)
    contained = smaller > 0 and shared >= CONTAINED_FRACTION * smaller
    return pixel_box_iou(a, b) > iou_threshold or contained
