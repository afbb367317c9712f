"""Model families and the box conventions each one speaks.

- InternVL2.5 / InternVL3: native grounding is `<box>[[…]]</box>` in 0–1000; under the paper's
  prompt they answer in 0–1.
- Qwen2.5-VL: absolute pixels **of the resized input its processor produced** (sides multiples of
  28, area within `min_pixels`..`max_pixels`), not of the image we sent.
- Qwen3-VL: 0–1000.
- Anything else (API models, unknown servers): the prompt asks for 0–1 and `auto` detection applies.

The family comes from the model's config for local models, or from `ZoomContext.model_family`
for servers (whose config we cannot see).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from zoom_refine.tools.errors import InvalidInputError

Family = Literal["internvl", "qwen2_5_vl", "qwen3_vl", "other"]

MODEL_TYPES: dict[str, Family] = {
    "internvl": "internvl",
    "internvl_chat": "internvl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
}

QWEN_PATCH_FACTOR = 28
"""Qwen2.5-VL resizes so both sides are multiples of 14-px patches × 2×2 merge = 28 px."""
QWEN3_PATCH_FACTOR = 32
"""Qwen3-VL resizes so both sides are multiples of 16-px patches × 2×2 merge = 32 px."""
QWEN_FACTORS: dict[Family, int] = {"qwen2_5_vl": QWEN_PATCH_FACTOR, "qwen3_vl": QWEN3_PATCH_FACTOR}
QWEN_RELEASED_PIXELS: dict[Family, tuple[int, int]] = {
    "qwen2_5_vl": (3136, 12_845_056),
    "qwen3_vl": (65_536, 16_777_216),
}
"""(min, max) pixel counts of the released checkpoints' processors (`min_pixels`/`max_pixels`,
Qwen3-VL's `size` shortest/longest_edge): what a server uses when it is sent no budget."""
INTERNVL_TOKENS_PER_TILE = 256
"""InternVL: a 448-px tile becomes 256 visual tokens (pixel shuffle 0.5 of 32×32 patches)."""
STARVED_LONG_SIDE = 1000
"""A first view under this many pixels on its long side ..."""
LARGE_IMAGE_SIDE = 3000
"""... of an image over this many on its long side has lost the detail the method is for: warn."""
BUDGET_STARVED = (
    "the pixel budget shows this {image_width}x{image_height} image to the model at "
    "{view_width}x{view_height} (long side under {floor} px): small details are lost before any "
    "zoom; raise the image budget (--max-pixels for Qwen models, --max-patches for InternVL; a "
    "low max_pixels has cost Qwen3-VL-8B 31 points on HR-Bench 4K)"
)


def family_from_model_type(model_type: str | None) -> Family:
    """The family of a transformers `config.model_type` (e.g. `internvl`, `qwen2_5_vl`)."""
    return MODEL_TYPES.get(model_type or "", "other")


QWEN_MAX_ASPECT = 200
"""The longest side over the shortest a Qwen-VL processor accepts (its `smart_resize` refuses
more)."""


def qwen_resized_size(
    size: tuple[int, int], *, min_pixels: int, max_pixels: int, factor: int = QWEN_PATCH_FACTOR
) -> tuple[int, int]:
    """(width, height) a Qwen-VL processor resizes an image of `size` to (its pixel frame):
    sides multiples of `factor` px (28 for Qwen2.5-VL, 32 for Qwen3-VL), area within
    `min_pixels`..`max_pixels` (pixel counts, the processor's `size` shortest/longest_edge)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    width, height = size
    resized_height, resized_width = smart_resize(
        height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return int(resized_width), int(resized_height)


INTERNVL_TILE = 448
"""InternVL's tile side in pixels."""


def internvl_canvas_size(
    size: tuple[int, int], *, max_patches: int, min_patches: int = 1, tile: int = INTERNVL_TILE
) -> tuple[int, int]:
    """(width, height) InternVL's processor resizes an image of `size` to before cutting it into
    `tile`-px tiles: the tile grid whose aspect ratio is closest to the image's (its own rule)."""
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    width, height = size
    columns, rows = get_optimal_tiled_canvas(
        (height, width), (tile, tile), min_patches, max_patches
    )
    return columns * tile, rows * tile


def stable_input_size(
    resize: Callable[[tuple[int, int]], tuple[int, int]], size: tuple[int, int]
) -> tuple[int, int] | None:
    """`resize(size)` when the processor would leave an image of that size as it is (so a view
    made at that size is used unchanged); None otherwise (the processor would resize it again)."""
    target = resize(size)
    try:
        again = resize(target)
    except ValueError:  # the resized size is one the processor refuses (a Qwen aspect > 200)
        return None
    return target if again == target else None


def processor_input_size(
    family: Family,
    size: tuple[int, int],
    *,
    max_patches: int | None,
    qwen_min_pixels: int | None,
    qwen_max_pixels: int | None,
    min_patches: int = 1,
    tile: int = INTERNVL_TILE,
    qwen_factor: int | None = None,
) -> tuple[int, int] | None:
    """(width, height) a processor resizes an image of `size` to, for the families whose rule we
    know (InternVL with a known tile budget, Qwen2.5-VL, Qwen3-VL), when that size is stable (see
    `stable_input_size`); else None. The settings are the processor's: read from a local one,
    or those a server is sent or documented to use."""
    if family == "internvl" and max_patches is not None:
        budget = max_patches
        return stable_input_size(
            lambda s: internvl_canvas_size(
                s, max_patches=budget, min_patches=min_patches, tile=tile
            ),
            size,
        )
    if family in QWEN_FACTORS:
        factor = qwen_factor or QWEN_FACTORS[family]
        low, high = qwen_pixel_budget(family, qwen_min_pixels, qwen_max_pixels)
        check_qwen_aspect(size)
        return stable_input_size(
            lambda s: qwen_resized_size(s, min_pixels=low, max_pixels=high, factor=factor),
            size,
        )
    return None


def check_qwen_aspect(size: tuple[int, int]) -> None:
    """Raise InvalidInputError, saying what to do, for an image (width, height in pixels) a
    Qwen-VL processor refuses: longest side over shortest above `QWEN_MAX_ASPECT`."""
    width, height = size
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > QWEN_MAX_ASPECT:
        raise InvalidInputError(
            f"a {width}x{height} px image has an aspect ratio of {ratio:.0f}:1, more than the "
            f"{QWEN_MAX_ASPECT}:1 Qwen-VL processors accept: crop or pad it to a squarer shape"
        )


def qwen_pixel_budget(
    family: Family, min_pixels: int | None, max_pixels: int | None
) -> tuple[int, int]:
    """(min, max) pixel counts of a Qwen processor: the ones given, else the released
    checkpoints' (`QWEN_RELEASED_PIXELS`)."""
    released_min, released_max = QWEN_RELEASED_PIXELS.get(
        family, QWEN_RELEASED_PIXELS["qwen2_5_vl"]
    )
    return (min_pixels or released_min, max_pixels or released_max)


def visual_tokens(
    family: Family,
    input_size: tuple[int, int],
    *,
    tile: int = INTERNVL_TILE,
    tokens_per_tile: int = INTERNVL_TOKENS_PER_TILE,
    qwen_factor: int | None = None,
) -> int | None:
    """Visual tokens an image costs once its processor has made it `input_size` (width, height in
    pixels): Qwen, one token per `factor`×`factor` px (patches merged 2×2); InternVL, 256 per
    448-px tile of its canvas plus a thumbnail tile when there are several. None for families
    whose rule we do not know."""
    width, height = input_size
    if family in QWEN_FACTORS:
        factor = qwen_factor or QWEN_FACTORS[family]
        return (width // factor) * (height // factor)
    if family == "internvl":
        tiles = (width // tile) * (height // tile)
        return (tiles + (1 if tiles > 1 else 0)) * tokens_per_tile
    return None


def starved_view(image_size: tuple[int, int], view_size: tuple[int, int]) -> bool:
    """True when a first view of `view_size` shows an image of `image_size` (both pixels) so
    small that the method cannot recover: long side under `STARVED_LONG_SIDE` for an image over
    `LARGE_IMAGE_SIDE`."""
    return max(image_size) > LARGE_IMAGE_SIDE and max(view_size) < STARVED_LONG_SIDE
