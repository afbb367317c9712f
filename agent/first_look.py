"""The first look: the input image loaded and shown whole, downsampled, as view `img0`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoom_refine.agent.context import ZoomContext
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.encoding import image_content_block
from zoom_refine.tools.images import ImageSource, load_image
from zoom_refine.tools.views import View, render_view


@dataclass(frozen=True)
class FirstLook:
    """The whole image as first shown: its view, the image block, the original's content hash."""

    view: View
    image_block: dict[str, Any]
    image_sha256: str


def first_look(image: ImageSource, context: ZoomContext) -> FirstLook:
    """Load the input image and make view `img0`: the whole image, downsampled for the model."""
    original = load_image(image, max_pixels=context.max_pixels)
    view, shown = render_view(
        original.image,
        Box.full(original.size),
        view_id="img0",
        hop=0,
        size=context.shown_size(original.size),
    )
    block = image_content_block(shown, context.encoding, context.jpeg_quality)
    return FirstLook(view=view, image_block=block, image_sha256=original.sha256)
