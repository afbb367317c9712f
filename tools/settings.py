"""Image-side settings shared by the crop tool and the graph (the graph's context extends them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zoom_refine.tools.encoding import ImageFormat
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.images import DEFAULT_MAX_PIXELS
from zoom_refine.tools.views import shown_size_for

PaddingMode = Literal["region", "box"]
FirstImageStep = Literal["view", "official"]


@dataclass(kw_only=True)
class ImageSettings:
    """How images are shown to the model and how its boxes become crops. Defaults = the paper.

    Each field's description is in its `metadata` (one place: the CLI's help and README's
    configuration table are made from it, `ZoomContext` documents the rest)."""

    padding: float = field(
        default=0.1,
        metadata={
            "description": "Context added on each side of a box, as a fraction (0.1 = 10 %) "
            "of what `padding_mode` says.",
            "range": (0.0, 10.0),
        },
    )
    padding_mode: PaddingMode = field(
        default="region",
        metadata={
            "description": "What `padding` is a fraction of: `region`, the side of the image the "
            "box was drawn on (the whole image on the first hop, the paper's rule; the current "
            "crop on nested hops); `box`, the box's own side."
        },
    )
    min_crop_side: int = field(
        default=448,
        metadata={
            "description": "Smallest crop side in original pixels (one InternVL tile), capped at "
            "the image side; `0` = the official code (no minimum).",
            "range": (0, None),
        },
    )
    view_max_side: int = field(
        default=2048,
        metadata={
            "description": "Longest side, in pixels, of any image sent to the model; larger "
            "regions are downsampled.",
            "range": (28, None),
            "cli": {},
        },
    )
    image_format: ImageFormat | Literal["auto"] = field(
        default="auto",
        metadata={
            "description": "Encoding of images sent to the model: lossless `png`; `jpeg` for "
            "requests a fraction of the size (an 8K-derived view is ~1 MB, not ~10 MB); lossless "
            "uncompressed `bmp`, the fastest to encode and decode; `auto`: `bmp` for in-process "
            "(`hf:`) models, `jpeg` for servers and APIs (`png` outside a graph)."
        },
    )
    jpeg_quality: int = field(
        default=90,
        metadata={
            "description": "JPEG quality when `image_format` is `jpeg`.",
            "range": (1, 95),
        },
    )
    first_image: FirstImageStep = field(
        default="view",
        metadata={
            "description": "How the first call's image is made. `view`: the whole image resized "
            "as the views are (see `exact_preprocessing`) and encoded as `image_format`. "
            "`official`: as the official code sends it (`tools.official_image`): the file's own "
            "bytes when within 7 MiB and 4096 × 4096 px, else shrunk to fit 4096 px (Lanczos) "
            "and re-saved as JPEG at quality 85 or lower; the model's processor then tiles it."
        },
    )
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata={
            "description": "Largest input image accepted (width × height, in pixels): a guard "
            "against decompression bombs."
        },
    )
    exact_preprocessing: bool = field(
        default=False,
        metadata={
            "description": "Send the whole image and every crop at full resolution and let the "
            "model's processor resize them, as the paper's code does (the official pixels; "
            "slower; `view_max_side` is then ignored). Off, views are made here, once, straight "
            "at the size the processor would resize them to (its tile canvas): the same tiles "
            "(only the thumbnail differs, by a fraction of a grey level) in under a third of the "
            "CPU time on 8K images.",
            "cli": {},
        },
    )

    def shown_size(self, region_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) in pixels at which a region of `region_size` original pixels is sent.

        Exact preprocessing: the region itself. Otherwise the model's own input size, so its
        processor never resizes the view again: the size it makes of the region, else of the
        region fitted to `view_max_side`, when that size is no larger than the fitted region
        but for the processor's rounding (`model_size_step` pixels a side: Qwen's multiples of
        32 round 504 up to 512). Unknown, or larger (an InternVL tile canvas), the region
        fitted to `view_max_side` (never enlarged beyond rounding)."""
        if self.exact_preprocessing:
            return region_size
        fitted = shown_size_for(region_size, self.view_max_side)
        step = self.model_size_step()
        model_size = self.model_input_size(region_size)  # raises for a region it refuses
        if model_size is not None and _within(model_size, fitted, step):
            return model_size
        if step:
            fitted_size = self._fitted_input_size(fitted)
            if fitted_size is not None and _within(fitted_size, fitted, step):
                return fitted_size
        return fitted

    def _fitted_input_size(self, fitted: tuple[int, int]) -> tuple[int, int] | None:
        """`model_input_size` of the region fitted to `view_max_side`; None where the fitting's
        rounding made a shape the model refuses though the region itself is accepted."""
        try:
            return self.model_input_size(fitted)
        except InvalidInputError:
            return None

    def model_input_size(self, region_size: tuple[int, int]) -> tuple[int, int] | None:
        """The size the model's processor resizes an image of `region_size` to, if known and
        stable (that size maps to itself); None here: the graph's context knows the model."""
        return None

    def model_size_step(self) -> int:
        """Pixels the model's processor rounds each side to (Qwen: patch × merge); 0 when it
        does not round (InternVL tiles) or is unknown, as here: the graph's context knows."""
        return 0

    @property
    def decodes_as_official(self) -> bool:
        """Whether image files are decoded as the official code decodes them (`load_image(...,
        official=True)`: truncated files read, no EXIF rotation, alpha dropped): with the
        official first image, for that image and every crop cut from the same file."""
        return self.first_image == "official"

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


def _within(size: tuple[int, int], limit: tuple[int, int], step: int) -> bool:
    """Whether `size` exceeds `limit` on neither side by `step` pixels or more (width, height)."""
    return all(side < bound + max(step, 1) for side, bound in zip(size, limit, strict=True))
