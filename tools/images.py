"""Safe image loading: any file or bytes a user hands us becomes one RGB image with a content hash.

EXIF orientation is applied (boxes land on the image the user sees), every mode is converted to RGB
(transparency composited on white, 16-bit values rescaled), animated images give their first frame,
and a pixel limit is enforced *before* decoding. A truncated file is refused.

`official=True` decodes as the official Zoom-Refine code does instead (the `official` preset,
`tools.official_image`): truncated files are read as far as they go (Pillow's
`LOAD_TRUNCATED_IMAGES`), EXIF orientation is ignored and the mode is changed with Pillow's plain
`convert("RGB")` (alpha dropped, 16-bit values clipped). The pixel limit still applies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from zoom_refine.tools.errors import ImageLoadError, ImageTooLargeError
from zoom_refine.tools.lru import LruMap
from zoom_refine.tools.official_image import official_rgb, truncated_images_allowed

ImageSource = str | os.PathLike[str] | bytes
"""A path to an image file, or the encoded bytes of one."""

DEFAULT_MAX_PIXELS = 150_000_000
"""Largest image accepted, in pixels (width × height): ~12K × 12K. HR-Bench 8K images are ~33 M."""

CACHED_IMAGES = 8
"""Decoded images kept per process (an 8K RGB image is ~100 MB): enough for eight samples in
flight, each decoding its image once for the first view and the crop."""

URL_SCHEMES = ("http", "https", "ftp", "s3", "gs")
URL_GIVEN = (
    "image URLs are not fetched: {url} (download the file first, e.g. `curl -LO URL`, and pass "
    "its path)"
)
MISSING_FILE = "image not found: {path} (check the path)"
NOT_A_FILE = "not a file: {path} (pass the path of an image file)"
EMPTY_FILE = "image is empty (0 bytes): {name} (re-download or re-export it)"
NOT_AN_IMAGE = (
    "not a readable image: {name} ({reason}); use a PNG, JPEG, WebP, TIFF, BMP or GIF file"
)
TOO_LARGE = (
    "image too large: {name} declares {width}×{height} = {pixels:,} pixels, over the limit of "
    "{limit:,}; downscale it first or raise max_pixels"
)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image, oriented as displayed, plus the SHA-256 of the bytes it came from."""

    image: Image.Image
    sha256: str
    name: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels of the original, EXIF-oriented image."""
        return self.image.size


def _looks_like_url(text: str) -> bool:
    return text.split(":", 1)[0].lower() in URL_SCHEMES and "://" in text


def describe_source(source: ImageSource) -> str:
    """A short human name for a source, for messages and traces (never the bytes themselves)."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return str(source)


def read_source_bytes(source: ImageSource) -> bytes:
    """The encoded bytes of a source; a missing path raises ImageLoadError."""
    if isinstance(source, bytes):
        return source
    path = _check_is_file(source)
    try:
        return path.read_bytes()
    except OSError as error:
        raise ImageLoadError(NOT_AN_IMAGE.format(name=path, reason=error.strerror)) from error


def _check_is_file(source: str | os.PathLike[str]) -> Path:
    """`source` as a Path; ImageLoadError unless it names an existing file (URLs are never
    fetched: a graph that reads URLs would let any prompt make it download)."""
    if _looks_like_url(str(source)):
        raise ImageLoadError(URL_GIVEN.format(url=source))
    path = Path(source)
    if not path.exists():
        raise ImageLoadError(MISSING_FILE.format(path=path))
    if not path.is_file():
        raise ImageLoadError(NOT_A_FILE.format(path=path))
    return path


def load_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, official: bool = False
) -> LoadedImage:
    """Read, check and decode an image into RGB, oriented as a viewer would show it (or, with
    `official`, as the official code decodes it: module docstring).

    Decodes are cached (`_decoded`): a file while it is unchanged (same size and modification
    time), bytes by their content, so the graph's first view and every crop share one decode."""
    if isinstance(source, bytes):
        return decode_image_bytes(
            source, name=describe_source(source), max_pixels=max_pixels, official=official
        )
    path = _check_is_file(source)
    stat = path.stat()
    key = ("file", str(path), stat.st_mtime_ns, stat.st_size, max_pixels, official)
    loaded = _decoded.get(key)
    if loaded is None:
        data = read_source_bytes(str(path))
        digest = _sha256_of(data, str(path))
        image = _open_checked(data, str(path), max_pixels, official)
        loaded = LoadedImage(image=image, sha256=digest, name=str(path))
        _decoded.put(key, loaded)
    return loaded


def decode_image_bytes(
    data: bytes, *, name: str, max_pixels: int, official: bool = False
) -> LoadedImage:
    """Decode encoded bytes (see load_image); cached by content so a sample decodes once."""
    digest = _sha256_of(data, name)
    key = ("bytes", digest, max_pixels, official)
    cached = _decoded.get(key)
    image = cached.image if cached is not None else _open_checked(data, name, max_pixels, official)
    if cached is None:
        _decoded.put(key, LoadedImage(image=image, sha256=digest, name=name))
    return LoadedImage(image=image, sha256=digest, name=name)


def _sha256_of(data: bytes, name: str) -> str:
    if not data:
        raise ImageLoadError(EMPTY_FILE.format(name=name))
    return hashlib.sha256(data).hexdigest()


_decoded: LruMap[tuple[Any, ...], LoadedImage] = LruMap(CACHED_IMAGES)
"""The decode cache. Key: `("file", path, mtime_ns, size, max_pixels, official)` or `("bytes",
sha256, max_pixels, official)` (the encoded bytes are not kept). Value: the decoded RGB image, shared by every
caller (crop and resize it, never draw on it). Bound: `CACHED_IMAGES` images. Owner: this module
(process-wide). Failed decodes are not cached."""


def _open_checked(data: bytes, name: str, max_pixels: int, official: bool = False) -> Image.Image:
    truncated = truncated_images_allowed() if official else contextlib.nullcontext()
    try:
        with warnings.catch_warnings(), truncated:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pillow_bomb_check_within(max_pixels):
                image = Image.open(io.BytesIO(data))
            _check_pixels(image.size, name, max_pixels)
            image.seek(0)  # first frame of an animation
            image.load()
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image too large: {name} ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(NOT_AN_IMAGE.format(name=name, reason="unknown format")) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(NOT_AN_IMAGE.format(name=name, reason=str(error))) from error
    if official:
        return official_rgb(image)
    ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
    return to_rgb(image)


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_bomb_check_within(max_pixels: int) -> Iterator[None]:
    """Let `max_pixels` be the limit: Pillow on its own refuses images over twice its
    `Image.MAX_IMAGE_PIXELS` (~179 M) whatever `max_pixels` says, so when `max_pixels` is above
    that, Pillow's check is lifted (under a lock, for the header read only) and ours decides."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels <= 2 * limit:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(NOT_AN_IMAGE.format(name=name, reason=f"size {width}×{height}"))
    if width * height > max_pixels:
        raise ImageTooLargeError(
            TOO_LARGE.format(
                name=name, width=width, height=height, pixels=width * height, limit=max_pixels
            )
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit greyscale: scale the used range to 0..255 instead of clipping at 255.
        low, high = _band_extrema(image)
        span = max(high - low, 1.0)
        grey = image.point(lambda v: (v - low) * 255.0 / span).convert("L")
        return grey.convert("RGB")
    if image.mode == "F":
        low, high = _band_extrema(image)
        span = max(high - low, 1e-12)
        return image.point(lambda v: (v - low) * 255.0 / span).convert("L").convert("RGB")
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:  # GIF / PNG tRNS
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _band_extrema(image: Image.Image) -> tuple[float, float]:
    """(lowest, highest) value of a single-band image."""
    low, high = image.getextrema()
    if isinstance(low, tuple) or isinstance(high, tuple):
        raise ValueError(f"expected a single-band image, got mode {image.mode}")
    return float(low), float(high)
