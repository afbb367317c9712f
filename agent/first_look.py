"""The first look: the input image loaded and shown whole, downsampled, as view `img0`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoom_refine.agent.context import ZoomContext
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.encoding import encoded_image_block, image_content_block
from zoom_refine.tools.images import ImageSource, describe_source, load_image, read_source_bytes
from zoom_refine.tools.official_image import official_first_image
from zoom_refine.tools.views import View, render_view


@dataclass(frozen=True)
class FirstLook:
    """The whole image as first shown: its view, the image block, the original's content hash."""

    view: View
    image_block: dict[str, Any]
    image_sha256: str


def first_look(image: ImageSource, context: ZoomContext) -> FirstLook:
    """Load the input image and make view `img0`: the whole image, downsampled for the model;
    or, with `first_image="official"`, the file as the official code sends it (its own bytes,
    or shrunk to 4096 px and re-saved as JPEG: `tools.official_image`), shown at that size."""
    original = load_image(
        image, max_pixels=context.max_pixels, official=context.decodes_as_official
    )
    if context.first_image == "official":
        prepared = official_first_image(read_source_bytes(image), name=describe_source(image))
        view = View(id="img0", box=Box.full(original.size), hop=0, shown_size=prepared.size)
        block = encoded_image_block(prepared.data, prepared.mime_type)
        return FirstLook(view=view, image_block=block, image_sha256=original.sha256)
    view, shown = render_view(
        original.image,
        Box.full(original.size),
        view_id="img0",
        hop=0,
        size=context.shown_size(original.size),
    )
    block = image_content_block(shown, context.encoding, context.jpeg_quality)
    return FirstLook(view=view, image_block=block, image_sha256=original.sha256)
