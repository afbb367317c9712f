"""Images as LangChain standard content blocks (base64 data), the form every chat model accepts."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, Literal

from PIL import Image

from zoom_refine.tools.lru import LruMap

ImageFormat = Literal["png", "jpeg", "bmp"]
"""`png` lossless and compressed; `jpeg` lossy and small (for requests over a network); `bmp`
lossless and uncompressed: ~2 ms to encode a 1792×896 view where PNG takes ~150 ms, the size of
the raw pixels (for in-process models, where nothing crosses a network; browsers show it)."""

BLOCK_IMAGES = 16
"""How many images the block cache keeps: the base64 data of an image block → its pixels."""


def encode_image(image: Image.Image, image_format: ImageFormat = "png", quality: int = 90) -> bytes:
    """Encode deterministically (same pixels → same bytes), so repeated requests share a prefix."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    elif image_format == "bmp":
        image.convert("RGB").save(buffer, format="BMP")
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_content_block(
    image: Image.Image, image_format: ImageFormat = "png", quality: int = 90
) -> dict[str, Any]:
    """A LangChain standard image block: `{"type": "image", "base64": …, "mime_type": …}`."""
    data = base64.b64encode(encode_image(image, image_format, quality)).decode("ascii")
    if image_format in ("png", "bmp") and image.mode == "RGB":
        _block_images.put(data, image)
    return {"type": "image", "base64": data, "mime_type": f"image/{image_format}"}


def encoded_image_block(data: bytes, mime_type: str) -> dict[str, Any]:
    """A standard image block holding already-encoded bytes as they are (no re-encoding): the
    official preset sends the first image's own file bytes, or its shrunk JPEG
    (`tools.official_image`)."""
    encoded = base64.b64encode(data).decode("ascii")
    return {"type": "image", "base64": encoded, "mime_type": mime_type}


def decode_block_image(data: object) -> Image.Image:
    """The image a block's base64 `data` holds: from the block cache, or decoded fully now (so a
    corrupt image fails here, with a ValueError, not later in a model) and cached, since every
    turn of a conversation re-sends the earlier images. The image is shared: never draw on it."""
    if not isinstance(data, str) or not data:
        raise ValueError("image block holds no base64 string")
    image = _block_images.get(data)
    if image is None:
        image = _decode_base64(data)
        _block_images.put(data, image)
    return image


def _decode_base64(data: str) -> Image.Image:
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image block holds invalid base64: {error}") from error
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image block could not be decoded as an image: {error}") from error
    return image


_block_images: LruMap[str, Image.Image] = LruMap(BLOCK_IMAGES)
"""The block cache. Key: the base64 string; value: its pixels. Bound: `BLOCK_IMAGES` entries.
Owner: this module (process-wide). Filled when a lossless RGB block is encoded and when any block
is decoded; read by in-process models (`agent.local.model`)."""


def text_content_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
