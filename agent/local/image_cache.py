"""Preprocess each image once: a cache in front of InternVL's image processor.

Every turn of a conversation re-sends its earlier images, so the refine call would tile and
normalize view `img0` again, as the localize call just did (a third of the preprocessing of a
sample, for nothing). `CachingImageProcessor` keeps each image's tiles, keyed by its pixels and
the processing options, and runs the wrapped processor only on images it has not seen.

Only tile-cropping processors (InternVL's `GotOcr2ImageProcessor`: `pixel_values` holds each
image's tiles one after the other, `num_patches` how many) are cached; any other processor is
called as it is.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from PIL import Image

from zoom_refine.agent.local.prefix_cache import image_fingerprint
from zoom_refine.tools.lru import LruMap

CACHED_IMAGES = 8
"""Images whose tiles are kept: a 12-tile InternVL image is ~22 MB of float32 tiles."""


class CachingImageProcessor:
    """Wraps an image processor; `__call__` reuses the tiles of images it processed recently.

    Everything else (attributes, other methods) is the wrapped processor's."""

    def __init__(self, processor: Any, capacity: int = CACHED_IMAGES) -> None:
        self.wrapped = processor
        self.tiles: LruMap[Hashable, Any] = LruMap(capacity)
        self.hits = 0
        """Images served from the cache so far (for tests and benchmarks)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def __call__(self, images: Any = None, **kwargs: Any) -> Any:
        batch = _flat_images(images)
        if not batch or not getattr(self.wrapped, "crop_to_patches", False):
            return self.wrapped(images, **kwargs)
        import torch
        from transformers import BatchFeature

        options = repr(sorted(kwargs.items()))
        keys: list[Hashable] = [(_pixels_key(image), options) for image in batch]
        known: dict[Hashable, Any] = {}
        for key in keys:
            tiles = self.tiles.get(key)
            if tiles is not None:
                known[key] = tiles
        new = {key: image for key, image in zip(keys, batch, strict=True) if key not in known}
        if new:
            known.update(self._process(list(new), list(new.values()), kwargs))
        self.hits += sum(1 for key in keys if key not in new)
        per_image = [known[key] for key in keys]
        return BatchFeature(
            data={
                "pixel_values": torch.cat(per_image),
                "num_patches": [int(tiles.shape[0]) for tiles in per_image],
            },
            tensor_type=kwargs.get("return_tensors"),
        )

    def _process(
        self, keys: list[Hashable], images: list[Image.Image], kwargs: dict[str, Any]
    ) -> dict[Hashable, Any]:
        """Run the wrapped processor on `images`; store and return each image's tiles."""
        import torch

        output = self.wrapped(images, **{**kwargs, "return_tensors": "pt"})
        counts = [int(n) for n in output["num_patches"]]
        tiles = dict(zip(keys, torch.split(output["pixel_values"], counts), strict=True))
        for key, value in tiles.items():
            self.tiles.put(key, value)
        return tiles


def _flat_images(images: Any) -> list[Image.Image] | None:
    """The images as a flat list of PIL images, or None for any other input (left uncached)."""
    if isinstance(images, Image.Image):
        return [images]
    if not isinstance(images, (list, tuple)):
        return None
    flat: list[Image.Image] = []
    for item in images:
        nested = _flat_images(item)
        if nested is None:
            return None
        flat.extend(nested)
    return flat


def _pixels_key(image: Image.Image) -> tuple[str, tuple[int, int], int]:
    return image.mode, image.size, image_fingerprint(image.tobytes())
