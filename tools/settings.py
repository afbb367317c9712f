"""Image-side settings shared by the crop tool and the graph (the graph's context extends them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zoom_refine.tools.encoding import ImageFormat
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.images import DEFAULT_MAX_PIXELS

PaddingMode = Literal["region", "box"]


@dataclass(kw_only=True)
class ImageSettings:
    """How images are shown to the model and how its boxes become crops. Defaults = the paper."""

    padding: float = 0.1
    """Context added on each side of a box, as a fraction (0.1 = 10 %); of what: `padding_mode`."""

    padding_mode: PaddingMode = "region"
    """`region`: a fraction of the side of the image the box was drawn on (the whole image on the
    first hop, the paper's rule; the current crop on nested hops). `box`: of the box's own side."""

    min_crop_side: int = 448
    """Smallest crop side in original pixels (one InternVL tile); capped at the image side."""

    view_max_side: int = 2048
    """Longest side, in pixels, of any image sent to the model; larger regions are downsampled."""

    image_format: ImageFormat | Literal["auto"] = "auto"
    """Encoding of images sent to the model: lossless `png`, or `jpeg` for requests a fraction of
    the size (an 8K-derived view is ~1 MB, not ~10 MB). `auto`: `png` for in-process models,
    `jpeg` for servers and APIs (resolved by the graph's context)."""

    jpeg_quality: int = 90
    """JPEG quality (1–95) when `image_format` is `jpeg`."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    """Largest input image accepted (width × height); a guard against decompression bombs."""

    @property
    def encoding(self) -> ImageFormat:
        """The concrete format: `auto` means `png` unless a subclass resolved it."""
        return "png" if self.image_format == "auto" else self.image_format

    def __post_init__(self) -> None:
        if not 0.0 <= self.padding <= 10.0:
            raise InvalidInputError(f"padding must be a fraction within 0..10, got {self.padding}")
        if self.min_crop_side < 0:
            raise InvalidInputError(f"min_crop_side must be >= 0 pixels, got {self.min_crop_side}")
        if self.view_max_side < 28:
            raise InvalidInputError(f"view_max_side must be >= 28 pixels, got {self.view_max_side}")
        if not 1 <= self.jpeg_quality <= 95:
            raise InvalidInputError(f"jpeg_quality must be within 1..95, got {self.jpeg_quality}")
