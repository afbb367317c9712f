"""Views: the downsampled images the model is shown, each remembering its region of the original.

A view never carries more pixels than the model will use: it is the region resized (never
enlarged) so that its longest side is at most `max_side`, or straight to the size the model's
processor would resize it to (`ImageSettings.shown_size`). Resizing uses torchvision's
antialiased bicubic on uint8 pixels, the very operation transformers' image processors apply
(so a view made at the processor's size is the image the processor would have made), and 2–5×
faster than Pillow's bicubic on 4K–8K images (`benchmarks/image_pipeline.py`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from typing_extensions import TypedDict

from zoom_refine.tools.boxes import Box

RESAMPLE = Image.Resampling.BICUBIC
_VIEW_ID = re.compile(r"img(\d+)")


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


def next_view_ids(views: Sequence[ViewRecord | Mapping[str, Any]], count: int = 1) -> list[str]:
    """Ids for the next `count` views: `img{n}`, `img{n+1}`, … from one past the highest
    `img<number>` registered (numbers a failed crop skipped stay unused); `img0` first. The one
    rule for view ids, used by the crop tool and by the graph when it names several crops."""
    numbers = [int(m.group(1)) for v in views if (m := _VIEW_ID.fullmatch(str(v["id"])))]
    start = max(numbers, default=-1) + 1
    return [f"img{start + k}" for k in range(count)]


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
    """`image` resized to `size` (width, height) with antialiased bicubic resampling."""
    if size == image.size:
        return image
    if image.mode != "RGB":
        return image.resize(size, RESAMPLE)
    import numpy as np
    import torch
    from torchvision.transforms.v2 import functional

    # HWC pixels viewed as CHW without a copy (the uint8 kernel works on this layout directly);
    # the view is read-only, which torch warns about, and is only ever read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
    resized = functional.resize(
        pixels,
        [size[1], size[0]],
        interpolation=functional.InterpolationMode.BICUBIC,
        antialias=True,
    )
    return Image.fromarray(resized.permute(1, 2, 0).contiguous().numpy())
