"""The crop Qwen-Agent's Qwen3-VL zoom tool (`image_zoom_in_tool`) makes, for the `qwen3_vl`
tool convention: the model was trained against it, so its crops are made its way, not ours.

From a box already in pixels of the image it was drawn on: clamp it to the image; if a side is
under 32 px, grow the box about its centre so the shorter side reaches 32 (kept only when both
sides then exceed 32 px, else the clamped box); no padding. The crop (the box rounded as Pillow
rounds a crop box) is then resized to sides that are multiples of 32 px within 262,144 ..
12,845,056 px — small crops are enlarged. Held to Qwen-Agent's own code by golden data recorded
from a checkout (`scripts/qwen_agent_golden.py`, tests/test_qwen_agent_zoom.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zoom_refine.tools.boxes import Box, FloatBox

MIN_SIDE = 32
"""A crop side under this many pixels is grown about the box's centre."""
FACTOR = 32
"""Resized sides are multiples of this (Qwen3-VL's 16-px patch × 2×2 merge)."""
MIN_PIXELS = 256 * 32 * 32
"""262,144: the least pixels a zoomed crop is resized to (Qwen-Agent enlarges smaller crops)."""
MAX_PIXELS = 12_845_056
"""The most pixels a zoomed crop is resized to."""
NO_AREA = "the box {box} has no area inside the image: give x2 > x1 and y2 > y1 within it"


@dataclass(frozen=True)
class QwenAgentZoom:
    """A zoom made Qwen-Agent's way: the box as it computes it, the pixels cut, the size shown."""

    box: FloatBox
    """The crop box in image pixels, before rounding (floats, as Qwen-Agent keeps it)."""
    crop: Box
    """The whole pixels cut: `box` rounded as Pillow rounds a crop box."""
    size: tuple[int, int]
    """(width, height) the crop is resized to."""


def qwen_agent_zoom(box: FloatBox, image_size: tuple[int, int]) -> QwenAgentZoom:
    """The zoom of `box` (x1, y1, x2, y2 in pixels of an image of `image_size`); ValueError
    (`NO_AREA`) for a box with no area inside the image, where Qwen-Agent's tool fails too."""
    width, height = image_size
    grown = _grown(_clamped(box, width, height), width, height)
    left, top, right, bottom = grown
    crop = Box(round(left), round(top), round(right), round(bottom))
    if right - left <= 0 or bottom - top <= 0 or crop.width <= 0 or crop.height <= 0:
        raise ValueError(NO_AREA.format(box=[round(value, 2) for value in box]))
    return QwenAgentZoom(box=grown, crop=crop, size=zoom_size(right - left, bottom - top))


def _clamped(box: FloatBox, width: int, height: int) -> FloatBox:
    x1, y1, x2, y2 = box
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def _grown(box: FloatBox, width: int, height: int) -> FloatBox:
    """`box` with a side under `MIN_SIDE` grown about its centre by the ratio that brings the
    shorter side to `MIN_SIDE`, clamped; `box` itself when that fails to exceed `MIN_SIDE`."""
    left, top, right, bottom = box
    box_width, box_height = right - left, bottom - top
    if box_width >= MIN_SIDE and box_height >= MIN_SIDE:
        return box
    shorter = min(box_width, box_height)
    if shorter <= 0:
        return box  # no area: refused by the caller
    ratio = MIN_SIDE / shorter
    half_width = math.ceil(box_width * ratio * 0.5)
    half_height = math.ceil(box_height * ratio * 0.5)
    centre_x, centre_y = (left + right) / 2.0, (top + bottom) / 2.0
    new = (
        max(0, math.floor(centre_x - half_width)),
        max(0, math.floor(centre_y - half_height)),
        min(width, math.ceil(centre_x + half_width)),
        min(height, math.ceil(centre_y + half_height)),
    )
    if new[2] - new[0] > MIN_SIDE and new[3] - new[1] > MIN_SIDE:
        return (float(new[0]), float(new[1]), float(new[2]), float(new[3]))
    return box


def zoom_size(width: float, height: float) -> tuple[int, int]:
    """(width, height) a crop of `width` × `height` px is resized to: each side rounded to a
    multiple of `FACTOR` (at least one), then scaled as a whole into `MIN_PIXELS`..`MAX_PIXELS`
    (down: floored to the factor; up: ceiled)."""
    new_width = max(FACTOR, _round_to(width))
    new_height = max(FACTOR, _round_to(height))
    if new_width * new_height > MAX_PIXELS:
        scale = math.sqrt(width * height / MAX_PIXELS)
        new_width = math.floor(width / scale / FACTOR) * FACTOR
        new_height = math.floor(height / scale / FACTOR) * FACTOR
    elif new_width * new_height < MIN_PIXELS:
        scale = math.sqrt(MIN_PIXELS / (width * height))
        new_width = math.ceil(width * scale / FACTOR) * FACTOR
        new_height = math.ceil(height * scale / FACTOR) * FACTOR
    return new_width, new_height


def _round_to(value: float) -> int:
    return round(value / FACTOR) * FACTOR
