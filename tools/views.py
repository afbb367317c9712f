"""Views: the downsampled images the model is shown, each remembering its region of the original.

A view never carries more pixels than the model will use: it is the region resized (never
enlarged) so that its longest side is at most `max_side`, or straight to the size the model's
processor would resize it to (`ImageSettings.shown_size`). Downsampling first averages whole
pixel blocks (`Image.reduce`, cheap) and then resamples bicubically, instead of one bicubic pass
over a 33-megapixel original: several times faster, and within about half a grey level of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from typing_extensions import TypedDict

from zoom_refine.tools.boxes import Box

RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 1.5
"""Pillow's `reducing_gap`: block-average down to at most 1.5× the target size, then bicubic.
Measured on an 8K photo-like JPEG (`benchmarks/image_pipeline.py`): 0.42 mean absolute difference
(0–255) from a single bicubic pass, in under half its time; 3.0 would be exact and no faster."""


class ViewRecord(TypedDict):
    """A view as stored in graph state (plain data)."""

    id: str
    """Identifier the model and the crop tool use: `img0` is the full image, `img1` the first crop…"""
    box: list[int]
    """`[x1, y1, x2, y2]` of the region shown, in original-image pixels."""
    hop: int
    """0 for the full image, n for the crop made on zoom hop n."""
    size: list[int]
    """`[width, height]` in pixels of the image as shown to the model."""


@dataclass(frozen=True)
class View:
    """A region of the original image and the size it is shown at."""

    id: str
    box: Box
    hop: int
    shown_size: tuple[int, int]

    def to_record(self) -> ViewRecord:
        return ViewRecord(
            id=self.id, box=self.box.as_list(), hop=self.hop, size=list(self.shown_size)
        )

    @classmethod
    def from_record(cls, record: ViewRecord | Mapping[str, Any]) -> View:
        width, height = record["size"]
        return cls(
            id=str(record["id"]),
            box=Box.from_list(record["box"]),
            hop=int(record["hop"]),
            shown_size=(int(width), int(height)),
        )


def shown_size_for(region_size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) a region of `region_size` is shown at: longest side ≤ `max_side`, no upscale."""
    width, height = region_size
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_view(
    original: Image.Image, box: Box, *, view_id: str, hop: int, size: tuple[int, int]
) -> tuple[View, Image.Image]:
    """Cut `box` (original pixels) from the original and resize it to `size` (shown pixels), the
    size chosen by `ImageSettings.shown_size` or `shown_size_for`."""
    region = original if box == Box.full(original.size) else original.crop(box.as_tuple())
    return View(id=view_id, box=box, hop=hop, shown_size=size), downsample(region, size)


def downsample(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` resized to `size` (width, height): block-average first, then bicubic."""
    if size == image.size:
        return image
    return image.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP)
