"""Boxes and their coordinate frames.

Internally a box is `Box(x1, y1, x2, y2)` in pixels of the **original image** (x right, y down,
x2/y2 exclusive). Models speak other frames; each conversion below names the frame it reads:

- `norm1`:    normalized 0–1 of the image the model was shown (the paper's prompt);
- `norm1000`: normalized 0–1000 of the image shown (InternVL's `<box>`, Qwen3-VL);
- `pixel`:    pixels of the image shown, at the size it was shown (Qwen2.5-VL: the size its
              processor resized it to).

Which frame a model's numbers are in is decided in one place, `agent.regions`.

"The image shown" covers a *region* of the original (the full image, or a crop for nested zooms),
so every conversion takes that region (a `Box` in original pixels) and lands in original pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

BoxFrame = Literal["norm1", "norm1000", "pixel"]
"""The coordinate frame a model's box numbers are written in (see module docstring)."""

BOX_FRAMES: tuple[BoxFrame, ...] = ("norm1", "norm1000", "pixel")

FloatBox = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in original-image pixels, not yet rounded or clamped."""


@dataclass(frozen=True)
class Box:
    """An integer box in original-image pixels; x2/y2 exclusive, so width = x2 - x1."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_list(self) -> list[int]:
        """`[x1, y1, x2, y2]`, the form stored in graph state and traces."""
        return [self.x1, self.y1, self.x2, self.y2]

    def as_tuple(self) -> tuple[int, int, int, int]:
        """`(x1, y1, x2, y2)`, the form PIL's `Image.crop` takes."""
        return (self.x1, self.y1, self.x2, self.y2)

    @classmethod
    def from_list(cls, values: Sequence[int]) -> Box:
        x1, y1, x2, y2 = (int(v) for v in values)
        return cls(x1, y1, x2, y2)

    @classmethod
    def full(cls, size: tuple[int, int]) -> Box:
        """The box covering a whole image of `size` = (width, height)."""
        return cls(0, 0, size[0], size[1])


FRACTION_LIMIT = 1e12
"""Fractions of a region beyond ±this are clamped to it before scaling, so an absurd number a
model wrote (1e308, finite) cannot overflow to inf pixels. No crop changes: a corner a trillion
regions away lands beyond the image edge either way, where the crop planner clamps it."""


def box_norm1_to_pixels(box: Sequence[float], region: Box) -> FloatBox:
    """A 0–1 box relative to `region` (the image shown) → original-image pixels (finite for
    finite input: see `FRACTION_LIMIT`)."""
    x1, y1, x2, y2 = (min(max(v, -FRACTION_LIMIT), FRACTION_LIMIT) for v in box)
    return (
        region.x1 + x1 * region.width,
        region.y1 + y1 * region.height,
        region.x1 + x2 * region.width,
        region.y1 + y2 * region.height,
    )


def box_norm1000_to_pixels(box: Sequence[float], region: Box) -> FloatBox:
    """A 0–1000 box relative to `region` (the image shown) → original-image pixels."""
    return box_norm1_to_pixels([v / 1000.0 for v in box], region)


def box_shown_pixels_to_pixels(
    box: Sequence[float], region: Box, shown_size: tuple[int, int]
) -> FloatBox:
    """A box in pixels of the image as shown (`shown_size` = its width, height) → original pixels.

    The shown image is `region` resized to `shown_size`, so pixels scale by region / shown.
    """
    shown_width, shown_height = shown_size
    x1, y1, x2, y2 = box
    return box_norm1_to_pixels(
        [x1 / shown_width, y1 / shown_height, x2 / shown_width, y2 / shown_height], region
    )


def box_to_pixels(
    box: Sequence[float], frame: BoxFrame, region: Box, shown_size: tuple[int, int]
) -> FloatBox:
    """Dispatch on `frame`: model box numbers → original-image pixels."""
    if frame == "norm1":
        return box_norm1_to_pixels(box, region)
    if frame == "norm1000":
        return box_norm1000_to_pixels(box, region)
    return box_shown_pixels_to_pixels(box, region, shown_size)


def is_finite_box(box: Sequence[float]) -> bool:
    """True when the box has four finite numbers (NaN / inf boxes are treated as 'no box')."""
    return len(box) == 4 and all(math.isfinite(v) for v in box)


def pixel_box_area(box: Sequence[float]) -> float:
    """Area of a box in original pixels (0 for an empty or inverted one)."""
    x1, y1, x2, y2 = box
    return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def pixel_box_intersection_area(a: Sequence[float], b: Sequence[float]) -> float:
    """Area shared by two boxes in original pixels."""
    return pixel_box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def pixel_box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes in original pixels (0 when both are empty)."""
    shared = pixel_box_intersection_area(a, b)
    union = pixel_box_area(a) + pixel_box_area(b) - shared
    return shared / union if union > 0 else 0.0


def pixel_box_union(a: Sequence[float], b: Sequence[float]) -> FloatBox:
    """The smallest box in original pixels holding both boxes."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
