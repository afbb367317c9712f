"""How often our default crop box lands a pixel away from the official one, by box precision.

The default pads by 0.1 of the region side in pixels (`x·W − 0.1·W`, `tools.crop.plan_crop`);
the official code pads in 0–1 first (`(x − 0.1)·W`, `tools.official_image.official_crop_box`,
checked against the official functions by `zoom-refine official verify`). Both then floor the
left / top edge and ceil the right / bottom one, so float rounding alone moves an edge by a pixel
on some boxes. Random ordered 0–1 boxes with 1, 2 and 3 decimals on images 28–8000 px a side,
minimum crop side off (the official code has none), first hop (region = whole image).

    python benchmarks/padding_rounding.py [--boxes 20000]
"""

from __future__ import annotations

import argparse
import random

from zoom_refine.tools.boxes import Box
from zoom_refine.tools.crop import plan_crop
from zoom_refine.tools.official_image import official_crop_box
from zoom_refine.tools.settings import ImageSettings


def differing_share(decimals: int, boxes: int) -> tuple[int, int]:
    """(boxes whose crop differs by at least a pixel on an edge, boxes tried)."""
    rng, settings = random.Random(decimals), ImageSettings(min_crop_side=0)
    differ = total = 0
    for _ in range(boxes):
        width, height = rng.randint(28, 8000), rng.randint(28, 8000)
        xs = sorted(round(rng.random(), decimals) for _ in range(2))
        ys = sorted(round(rng.random(), decimals) for _ in range(2))
        if xs[0] == xs[1] or ys[0] == ys[1]:
            continue
        full = Box.full((width, height))
        pixels = (xs[0] * width, ys[0] * height, xs[1] * width, ys[1] * height)
        ours = plan_crop(pixels, full, (width, height), settings)
        theirs = official_crop_box([xs[0], ys[0], xs[1], ys[1]], full)
        total += 1
        differ += ours != theirs
    return differ, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20000, help="boxes per precision")
    args = parser.parse_args()
    for decimals in (1, 2, 3):
        differ, total = differing_share(decimals, args.boxes)
        print(
            f"{decimals}-decimal boxes: {differ} of {total} differ ({100 * differ / total:.1f} %)"
        )


if __name__ == "__main__":
    main()
