"""Images as LangChain standard content blocks (base64 data), the form every chat model accepts."""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

from PIL import Image

ImageFormat = Literal["png", "jpeg"]


def encode_image(image: Image.Image, image_format: ImageFormat = "png", quality: int = 90) -> bytes:
    """Encode deterministically (same pixels → same bytes), so repeated requests share a prefix."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_content_block(
    image: Image.Image, image_format: ImageFormat = "png", quality: int = 90
) -> dict[str, Any]:
    """A LangChain standard image block: `{"type": "image", "base64": …, "mime_type": …}`."""
    data = base64.b64encode(encode_image(image, image_format, quality)).decode("ascii")
    return {"type": "image", "base64": data, "mime_type": f"image/{image_format}"}


def text_content_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
