"""Images as LangChain standard content blocks (base64 data), the form every chat model accepts."""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

from PIL import Image

from zoom_refine.tools.lru import LruMap

ImageFormat = Literal["png", "jpeg", "bmp"]
"""`png` lossless and compressed; `jpeg` lossy and small (for requests over a network); `bmp`
lossless and uncompressed: ~2 ms to encode a 1792×896 view where PNG takes ~150 ms, the size of
the raw pixels (for in-process models, where nothing crosses a network; browsers show it)."""

RECENT_LOSSLESS = 16
"""How many recently encoded lossless images an in-process model can take back undecoded."""


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
        _recent_lossless.put(data, image)
    return {"type": "image", "base64": data, "mime_type": f"image/{image_format}"}


def recently_encoded(data: str) -> Image.Image | None:
    """The image whose PNG or BMP base64 is `data`, if this process encoded it recently: decoding
    the block would give these very pixels (lossless, RGB), so an in-process model skips it."""
    return _recent_lossless.get(data)


_recent_lossless: LruMap[str, Image.Image] = LruMap(RECENT_LOSSLESS)


def text_content_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
