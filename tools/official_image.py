"""The official pipeline's image steps, for the `official` preset and for measuring against it.

Written after reading xavier-yu114/Zoom-Refine (commit fc6c1ad), `zoomrefine/ZoomRefine_Base.py`
(the paper's runs); our own code, behaviour matched by the tests in
`tests/test_official_preset.py`:

- **First-call image** (`official_first_image`, Base lines 402–438 with `compress_image_to_memory`,
  lines 42–110): a file within 7 MiB and 4096 × 4096 px is sent as its own bytes; otherwise it
  is shrunk to fit 4096 × 4096 (Pillow `thumbnail`, Lanczos, aspect kept) and re-saved as JPEG
  at quality 85, lowered by 5 (down to 10) while it is still over 7 MiB. No EXIF rotation is
  applied, as there.
- **Decoding** (`official_rgb`, `truncated_images_allowed`; Base lines 15, 177 and 288–289): Pillow's
  `LOAD_TRUNCATED_IMAGES` is on (a truncated file decodes as far as its data goes, the rest
  grey), EXIF orientation is ignored and any other mode becomes RGB by Pillow's own
  `convert("RGB")`: alpha is dropped (not composited), 16-bit grey is clipped, a palette's
  transparent colour is ignored. `tools.images.load_image(official=True)` decodes this way.
- **Crop box** (`official_crop_box`, `expand_bbox` lines 221–255 and `crop_image_from_bbox`
  lines 284–311): the 0–1 box padded by a fraction of the whole side on each side in 0–1
  coordinates, clamped, then floored / ceiled to whole pixels.
- **Tiling** (`official_tiles`, `dynamic_preprocess` lines 126–172): InternVL's dynamic tiling
  done with Pillow (its default bicubic): the tile grid whose aspect ratio is closest (ties go to
  the larger grid when the image has more than half its area), up to 12 tiles of 448 px, plus a
  448 × 448 thumbnail when there is more than one tile. Our model backends tile with the model's
  own processor instead; `benchmarks/image_pipeline.py` measures the difference.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from zoom_refine.tools.boxes import Box
from zoom_refine.tools.errors import ImageLoadError

OFFICIAL_MAX_SIDE = 4096
"""Longest width or height, in pixels, the official first call sends unchanged (Base line 19)."""

OFFICIAL_MAX_BYTES = 7 * 1024 * 1024
"""Largest file, in bytes, the official first call sends unchanged (Base line 18)."""

OFFICIAL_FIRST_QUALITY = 85
"""JPEG quality of a re-saved first image, lowered by `OFFICIAL_QUALITY_STEP` while too big."""

OFFICIAL_QUALITY_STEP = 5
OFFICIAL_MIN_QUALITY = 10

OFFICIAL_CROP_QUALITY = 95
"""JPEG quality of the official crops (Base line 310)."""

OFFICIAL_PADDING = 0.1
"""The official padding: a tenth of the image side on each side, in 0–1 (Base line 372)."""

TILE_SIDE = 448
"""InternVL's tile side in pixels (`model.config.image_size` of InternVL3)."""

MAX_TILES = 12
"""The official tile budget per image (Base line 327)."""

CANNOT_RESAVE = (
    "the official pipeline cannot re-save {name} (mode {mode}) as JPEG: {reason}; it fails this "
    "sample too (convert the image to RGB to run it)"
)


_TRUNCATED_LOCK = threading.Lock()
_truncated_users = 0


@contextlib.contextmanager
def truncated_images_allowed() -> Iterator[None]:
    """Decode truncated files as the official code does (it sets Pillow's process-wide
    `ImageFile.LOAD_TRUNCATED_IMAGES` at import). Here it is on only while an official decode
    runs, counted so that overlapping official decodes on threads keep it on until the last
    ends; a default-path decode that overlaps one of them accepts a truncated file too."""
    global _truncated_users
    with _TRUNCATED_LOCK:
        if _truncated_users == 0:
            _truncated_users_saved[0] = ImageFile.LOAD_TRUNCATED_IMAGES
        _truncated_users += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        with _TRUNCATED_LOCK:
            _truncated_users -= 1
            if _truncated_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncated_users_saved[0]


_truncated_users_saved = [False]


def official_rgb(image: Image.Image) -> Image.Image:
    """The official conversion: Pillow's `convert("RGB")` for any mode but RGB (module
    docstring); no EXIF rotation, no compositing."""
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class PreparedImage:
    """An image as the official first call sends it: encoded bytes and what they hold."""

    data: bytes
    """The encoded image: the file's own bytes, or the shrunk, re-saved JPEG."""
    mime_type: str
    """`image/jpeg`, `image/png`, …: the format of `data`."""
    size: tuple[int, int]
    """(width, height) in pixels of the image `data` decodes to."""
    quality: int | None
    """The JPEG quality it was re-saved at; None when the file's own bytes are sent."""


def needs_official_shrink(byte_count: int, size: tuple[int, int]) -> bool:
    """Whether the official first call re-encodes a file of `byte_count` bytes and `size` px."""
    width, height = size
    return (
        byte_count > OFFICIAL_MAX_BYTES or width > OFFICIAL_MAX_SIDE or height > OFFICIAL_MAX_SIDE
    )


def official_first_image(data: bytes, *, name: str = "image") -> PreparedImage:
    """The first call's image from a file's bytes, as the official code prepares it (module
    docstring). `name` is for messages only. Raises ImageLoadError for bytes that are not an
    image, or for an image the official code would fail to re-save as JPEG (modes such as LA,
    I;16). A truncated file is read as far as it goes, as there."""
    with truncated_images_allowed():
        return _official_first_image(data, name)


def _official_first_image(data: bytes, name: str) -> PreparedImage:
    try:
        source = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as error:
        raise ImageLoadError(f"not a readable image: {name} ({error})") from error
    with source:
        if not needs_official_shrink(len(data), source.size):
            mime = Image.MIME.get(source.format or "", "application/octet-stream")
            return PreparedImage(data=data, mime_type=mime, size=source.size, quality=None)
        try:
            image = source.copy()  # decodes fully: no JPEG draft shortcut, as officially
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageLoadError(f"not a readable image: {name} ({error})") from error
    if image.width > OFFICIAL_MAX_SIDE or image.height > OFFICIAL_MAX_SIDE:
        image.thumbnail((OFFICIAL_MAX_SIDE, OFFICIAL_MAX_SIDE), Image.Resampling.LANCZOS)
    if image.mode in ("RGBA", "P"):
        image = image.convert("RGB")  # alpha dropped, not composited: the official conversion
    quality = OFFICIAL_FIRST_QUALITY
    encoded = _jpeg(image, quality, name)
    while len(encoded) > OFFICIAL_MAX_BYTES and quality > OFFICIAL_MIN_QUALITY:
        quality -= OFFICIAL_QUALITY_STEP
        encoded = _jpeg(image, quality, name)
    return PreparedImage(data=encoded, mime_type="image/jpeg", size=image.size, quality=quality)


def _jpeg(image: Image.Image, quality: int, name: str) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    except (OSError, ValueError) as error:
        raise ImageLoadError(
            CANNOT_RESAVE.format(name=name, mode=image.mode, reason=error)
        ) from error
    return buffer.getvalue()


def official_crop_box(
    box_norm1: Sequence[float], region: Box, padding: float = OFFICIAL_PADDING
) -> Box:
    """The official crop of a parsed 0–1 box (x1 < x2, y1 < y2, each in 0–1, relative to
    `region`, in original pixels): padded by `padding` in 0–1 on each side and clamped, then
    mapped to whole pixels of `region` outwards (floor the left/top, ceil the right/bottom),
    keeping at least one pixel. Returned in original pixels."""
    x1, y1, x2, y2 = (float(v) for v in box_norm1)
    left, right = _expanded_span(x1, x2, padding)
    top, bottom = _expanded_span(y1, y2, padding)
    px1, px2 = _pixel_span(left, right, region.width)
    py1, py2 = _pixel_span(top, bottom, region.height)
    return Box(region.x1 + px1, region.y1 + py1, region.x1 + px2, region.y1 + py2)


def _expanded_span(low: float, high: float, padding: float) -> tuple[float, float]:
    """One axis of the official expansion (0–1). A span that collapses after clamping is
    re-centred at half the padding each way, as the official code does."""
    new_low, new_high = max(0.0, low - padding), min(1.0, high + padding)
    if new_low >= new_high:
        middle, half = (low + high) / 2, (high - low) / 2 + padding / 2
        new_low, new_high = max(0.0, middle - half), min(1.0, middle + half)
    return new_low, new_high


def _pixel_span(low: float, high: float, side: int) -> tuple[int, int]:
    """One axis, 0–1 → whole pixels of a side of `side` px (floor / ceil, clamped, ≥ 1 px)."""
    start = max(0, min(side - 1, math.floor(low * side)))
    end = max(0, min(side, math.ceil(high * side)))
    if start >= end:
        end = start + 1
    return start, min(side, end)


def official_tiles(
    image: Image.Image, *, max_tiles: int = MAX_TILES, tile: int = TILE_SIDE
) -> list[Image.Image]:
    """InternVL's dynamic tiles of `image` as the official code makes them with Pillow: the grid's
    tiles in reading order, then a `tile` × `tile` thumbnail when there is more than one tile."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    columns, rows = closest_grid(image.size, max_tiles, tile)
    resized = image.resize((tile * columns, tile * rows), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
        for r in range(rows)
        for c in range(columns)
    ]
    if len(tiles) > 1:
        tiles.append(image.resize((tile, tile), Image.Resampling.BICUBIC))
    return tiles


def closest_grid(
    size: tuple[int, int], max_tiles: int = MAX_TILES, tile: int = TILE_SIDE
) -> tuple[int, int]:
    """(columns, rows) of the official tile grid for an image of `size` = (width, height): the
    grid (1..`max_tiles` tiles) whose aspect ratio is nearest the image's; on a tie, the later
    (larger) grid when the image's area exceeds half the grid's."""
    width, height = size
    aspect = width / height
    # Built in the same order as the official set, so equal-size grids keep its iteration order.
    candidates = {
        (c, r)
        for n in range(1, max_tiles + 1)
        for c in range(1, n + 1)
        for r in range(1, n + 1)
        if c * r <= max_tiles
    }
    grids = sorted(candidates, key=lambda grid: grid[0] * grid[1])
    best, best_difference = (1, 1), math.inf
    for columns, rows in grids:
        difference = abs(aspect - columns / rows)
        if difference < best_difference:
            best, best_difference = (columns, rows), difference
        elif difference == best_difference and width * height > 0.5 * tile * tile * columns * rows:
            best = (columns, rows)
    return best
