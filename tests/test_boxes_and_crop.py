"""Tests for box frames (tools.boxes), crop planning (tools.crop) and views (tools.views).

Expected numbers are worked out by hand in the comments next to them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoom_refine.tools.boxes import (
    Box,
    BoxFrame,
    box_norm1_to_pixels,
    box_norm1000_to_pixels,
    box_shown_pixels_to_pixels,
    box_to_pixels,
    is_finite_box,
)
from zoom_refine.tools.crop import plan_crop
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.settings import ImageSettings
from zoom_refine.tools.views import View, render_view, shown_size_for

FULL = Box(0, 0, 1000, 800)  # a 1000×800 original, shown whole
NESTED = Box(200, 100, 600, 400)  # a 400×300 crop of it, shown on a second hop


def approx_box(actual: tuple[float, ...], expected: tuple[float, ...]) -> bool:
    return all(math.isclose(a, e, abs_tol=1e-9) for a, e in zip(actual, expected, strict=True))


# --- Box -----------------------------------------------------------------------------------------


def test_box_basics() -> None:
    box = Box(10, 20, 110, 70)
    assert (box.width, box.height) == (100, 50)
    assert box.as_list() == [10, 20, 110, 70]
    assert Box.from_list([10, 20, 110, 70]) == box
    assert Box.from_list([10.9, 20.0, 110.2, 70.7]) == box  # int() truncates
    assert Box.full((640, 480)) == Box(0, 0, 640, 480)


def test_is_finite_box() -> None:
    assert is_finite_box([0, 0, 1, 1])
    assert not is_finite_box([0, 0, math.nan, 1])
    assert not is_finite_box([0, -math.inf, 1, 1])
    assert not is_finite_box([0, 0, 1])


# --- frame conversions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "numbers", "shown", "region", "expected"),
    [
        # Full 1000×800 image: x · 1000, y · 800.
        ("norm1", [0.1, 0.2, 0.5, 0.75], (1000, 800), FULL, (100, 160, 500, 600)),
        ("norm1000", [100, 200, 500, 750], (1000, 800), FULL, (100, 160, 500, 600)),
        # Shown at half size (500×400): shown pixels · 2.
        ("pixel", [50, 80, 250, 300], (500, 400), FULL, (100, 160, 500, 600)),
        ("pixel", [100, 160, 500, 600], (1000, 800), FULL, (100, 160, 500, 600)),
        # Nested region (200,100)-(600,400), 400×300: 200 + x·400, 100 + y·300.
        ("norm1", [0.25, 0.5, 0.75, 1.0], (400, 300), NESTED, (300, 250, 500, 400)),
        ("norm1000", [250, 500, 750, 1000], (400, 300), NESTED, (300, 250, 500, 400)),
        # The nested region shown at 200×150: shown pixels · 2 + offset.
        ("pixel", [50, 75, 150, 150], (200, 150), NESTED, (300, 250, 500, 400)),
        ("norm1", [0, 0, 1, 1], (400, 300), NESTED, (200, 100, 600, 400)),
        # Values outside 0..1 are converted linearly (clamping is the crop planner's job).
        ("norm1", [-0.5, 0, 1.5, 1], (400, 300), NESTED, (0, 100, 800, 400)),
    ],
)
def test_frame_conversions(
    frame: BoxFrame,
    numbers: list[float],
    shown: tuple[int, int],
    region: Box,
    expected: tuple[float, float, float, float],
) -> None:
    assert approx_box(box_to_pixels(numbers, frame, region, shown), expected)
    direct = {
        "norm1": lambda: box_norm1_to_pixels(numbers, region),
        "norm1000": lambda: box_norm1000_to_pixels(numbers, region),
        "pixel": lambda: box_shown_pixels_to_pixels(numbers, region, shown),
    }[frame]()
    assert approx_box(direct, expected)


def test_shown_pixels_scale_each_axis_separately() -> None:
    # A 300×100 region shown at 150×100 (a squashed view): x · 2, y · 1.
    region = Box(0, 0, 300, 100)
    assert approx_box(
        box_shown_pixels_to_pixels([15, 10, 30, 20], region, (150, 100)), (30, 10, 60, 20)
    )


def test_two_hops_compose() -> None:
    # Hop 1: a 4000×3000 original is shown at 2048×1536; the model answers in 0–1000.
    original = Box.full((4000, 3000))
    shown1 = shown_size_for((4000, 3000), 2048)
    assert shown1 == (2048, 1536)
    first = box_to_pixels([500, 500, 750, 1000], "norm1000", original, shown1)
    assert approx_box(first, (2000, 1500, 3000, 3000))
    crop = Box(*(int(v) for v in first))
    # Hop 2: that 1000×1500 crop is shown as is; a box in its pixels and the same box in 0–1
    # both land at 2000 + x, 1500 + y of the original.
    shown2 = shown_size_for((crop.width, crop.height), 2048)
    assert shown2 == (1000, 1500)
    by_pixels = box_to_pixels([100, 300, 600, 900], "pixel", crop, shown2)
    by_norm1 = box_to_pixels([0.1, 0.2, 0.6, 0.6], "norm1", crop, shown2)
    assert approx_box(by_pixels, (2100, 1800, 2600, 2400))
    assert approx_box(by_norm1, (2100, 1800, 2600, 2400))
    # Hop 2 shown downsampled (a 3000×3000 crop shown at 2048×2048): pixels scale by 3000/2048.
    big = Box(1000, 0, 4000, 3000)
    shown_big = shown_size_for((3000, 3000), 2048)
    assert shown_big == (2048, 2048)
    assert approx_box(
        box_to_pixels([1024, 512, 2048, 2048], "pixel", big, shown_big), (2500, 750, 4000, 3000)
    )


# --- crop planning -------------------------------------------------------------------------------

PAPER = ImageSettings(min_crop_side=0)  # padding 0.1 of the region side, no minimum side
DEFAULT = ImageSettings()  # padding 0.1 of the region side, minimum side 448
EXACT = ImageSettings(padding=0.0, min_crop_side=0)


@pytest.mark.parametrize(
    ("box", "region", "settings_", "expected"),
    [
        # Paper padding on a 1000×800 image: 100 px left/right, 80 px top/bottom.
        ((400, 300, 600, 500), FULL, PAPER, Box(300, 220, 700, 580)),
        # …clamped at the top-left corner: (-80, -70, 300, 180) → (0, 0, 300, 180).
        ((20, 10, 200, 100), FULL, PAPER, Box(0, 0, 300, 180)),
        # …clamped at the bottom-right: (800, 620, 1090, 870) → (800, 620, 1000, 800).
        ((900, 700, 990, 790), FULL, PAPER, Box(800, 620, 1000, 800)),
        # Nested region 400×300: padding 40 / 30 px (of the region, not the whole image).
        ((300, 250, 500, 350), NESTED, PAPER, Box(260, 220, 540, 380)),
        # Padding may leave the region (it is bounded by the image only).
        ((200, 100, 300, 200), NESTED, PAPER, Box(160, 70, 340, 230)),
        # Box-relative padding 0.5: a 200×100 box gains 100 / 50 px each side.
        (
            (400, 300, 600, 400),
            FULL,
            ImageSettings(padding=0.5, padding_mode="box", min_crop_side=0),
            Box(300, 250, 700, 450),
        ),
        # Box mode pads relative to the clamped box: (−100..100) → 0..100 wide, +10 % = 10 px.
        (
            (-100, 0, 100, 100),
            FULL,
            ImageSettings(padding=0.1, padding_mode="box", min_crop_side=0),
            Box(0, 0, 110, 110),
        ),
        # No padding, no minimum: the box itself, rounded outwards.
        ((400, 300, 600, 500), FULL, EXACT, Box(400, 300, 600, 500)),
        ((10.2, 20.7, 30.5, 40.1), FULL, EXACT, Box(10, 20, 31, 41)),
        # Minimum side 448 around the centre: padded 400×360 around (500, 400) → 448×448.
        ((400, 300, 600, 500), FULL, DEFAULT, Box(276, 176, 724, 624)),
        # …shifted inside at the top-left: padded (0,0,300,180) grows to (0, 0, 448, 448).
        ((20, 10, 200, 100), FULL, DEFAULT, Box(0, 0, 448, 448)),
        # …and at the bottom-right: (800,620,1000,800) → x 676..1124 → 552..1000,
        # y 486..934 → 352..800.
        ((900, 700, 990, 790), FULL, DEFAULT, Box(552, 352, 1000, 800)),
        # A side already over 448 is kept; only the short side grows: y 400..480 → 216..664.
        ((100, 420, 900, 460), FULL, DEFAULT, Box(0, 216, 1000, 664)),
        # Inverted corners are swapped, not rejected.
        ((600, 500, 400, 300), FULL, DEFAULT, Box(276, 176, 724, 624)),
        ((600, 300, 400, 500), FULL, PAPER, Box(300, 220, 700, 580)),
        # A zero-area box grows around its point.
        ((500, 400, 500, 400), FULL, DEFAULT, Box(276, 176, 724, 624)),
        ((500, 400, 500, 400), FULL, PAPER, Box(400, 320, 600, 480)),
        # With no padding and no minimum: one pixel around it (499.5..500.5 rounds out to 2 px).
        ((500, 400, 500, 400), FULL, EXACT, Box(499, 399, 501, 401)),
        # …and a point on the far corner keeps the last pixel.
        ((1000, 800, 1000, 800), FULL, EXACT, Box(999, 799, 1000, 800)),
        ((0, 0, 0, 0), FULL, EXACT, Box(0, 0, 1, 1)),
        # Entirely outside (beyond the far corner): clamps to (1000, 800), then pads to
        # (900..1000, 720..800), then grows to 448 inside the image.
        ((5000, 5000, 6000, 6000), FULL, DEFAULT, Box(552, 352, 1000, 800)),
        ((5000, 5000, 6000, 6000), FULL, PAPER, Box(900, 720, 1000, 800)),
        # Entirely negative: clamps to (0, 0), pads to (0..100, 0..80), grows to 448.
        ((-500, -400, -100, -50), FULL, DEFAULT, Box(0, 0, 448, 448)),
        ((-500, -400, -100, -50), FULL, PAPER, Box(0, 0, 100, 80)),
        # Huge values: the whole image.
        ((-1e300, -1e300, 1e300, 1e300), FULL, DEFAULT, Box(0, 0, 1000, 800)),
        ((1e308, 1e308, -1e308, -1e308), FULL, EXACT, Box(0, 0, 1000, 800)),
        ((-50, 100, 1e9, 200), FULL, EXACT, Box(0, 100, 1000, 200)),
    ],
)
def test_plan_crop_hand_computed(
    box: tuple[float, float, float, float], region: Box, settings_: ImageSettings, expected: Box
) -> None:
    assert plan_crop(box, region, (1000, 800), settings_) == expected


def test_min_side_capped_at_a_small_image() -> None:
    # 300×200 image, min side 448: padded (70, 30, 150, 90) grows to the whole image.
    small = Box(0, 0, 300, 200)
    assert plan_crop((100, 50, 120, 70), small, (300, 200), DEFAULT) == small
    # 1000×300: x grows to 448 around 500 (276..724); y is capped at the image height.
    wide = Box(0, 0, 1000, 300)
    assert plan_crop((490, 140, 510, 160), wide, (1000, 300), DEFAULT) == Box(276, 0, 724, 300)


def test_one_pixel_image() -> None:
    assert plan_crop((5, 5, 9, 9), Box(0, 0, 1, 1), (1, 1), DEFAULT) == Box(0, 0, 1, 1)
    # A 1×5000 strip: x capped at 1 px; y clamps to 0..0, pads by 500 (0.1 · 5000) to 0..500.
    strip = Box(0, 0, 1, 5000)
    assert plan_crop((-3, 0, -1, 0), strip, (1, 5000), DEFAULT) == Box(0, 0, 1, 500)
    # With box-relative padding the zero-height box gains nothing and grows to 448.
    box_mode = ImageSettings(padding_mode="box")
    assert plan_crop((-3, 0, -1, 0), strip, (1, 5000), box_mode) == Box(0, 0, 1, 448)


def test_odd_min_side_and_fractional_centre_round_outwards() -> None:
    # min side 101 around centre 50.5 (box 50..51): 0..101 after the shift at the left edge;
    # around centre 500.25 (box 500..500.5): 449.75..550.75 → 449..551 (102 px, never fewer).
    settings_ = ImageSettings(padding=0.0, min_crop_side=101)
    assert plan_crop((50, 50, 51, 51), FULL, (1000, 800), settings_) == Box(0, 0, 101, 101)
    crop = plan_crop((500, 400, 500.5, 400.5), FULL, (1000, 800), settings_)
    assert crop == Box(449, 349, 551, 451)


def test_settings_validation() -> None:
    with pytest.raises(InvalidInputError):
        ImageSettings(padding=-0.1)
    with pytest.raises(InvalidInputError):
        ImageSettings(padding=10.5)
    with pytest.raises(InvalidInputError):
        ImageSettings(min_crop_side=-1)


finite = st.floats(allow_nan=False, allow_infinity=False)
coordinate = st.one_of(finite, st.floats(-20000, 20000), st.integers(-20000, 20000).map(float))


@st.composite
def image_and_region(draw: st.DrawFn) -> tuple[tuple[int, int], Box]:
    width = draw(st.integers(1, 9000))
    height = draw(st.integers(1, 9000))
    x1 = draw(st.integers(0, width - 1))
    y1 = draw(st.integers(0, height - 1))
    x2 = draw(st.integers(x1 + 1, width))
    y2 = draw(st.integers(y1 + 1, height))
    return (width, height), Box(x1, y1, x2, y2)


crop_settings = st.builds(
    ImageSettings,
    padding=st.floats(0.0, 10.0),
    padding_mode=st.sampled_from(["region", "box"]),
    min_crop_side=st.integers(0, 10000),
)


@given(
    box=st.tuples(coordinate, coordinate, coordinate, coordinate),
    image=image_and_region(),
    settings_=crop_settings,
)
@settings(max_examples=1000, deadline=None)
def test_plan_crop_always_valid(
    box: tuple[float, float, float, float],
    image: tuple[tuple[int, int], Box],
    settings_: ImageSettings,
) -> None:
    (width, height), region = image
    crop = plan_crop(box, region, (width, height), settings_)
    assert isinstance(crop, Box)
    assert all(type(v) is int for v in crop.as_list())
    assert 0 <= crop.x1 < crop.x2 <= width
    assert 0 <= crop.y1 < crop.y2 <= height
    assert crop.width >= min(settings_.min_crop_side, width)
    assert crop.height >= min(settings_.min_crop_side, height)
    # The crop covers the part of the (ordered) box that lies inside the image.
    x1, y1, x2, y2 = box
    left, right = min(max(min(x1, x2), 0), width), min(max(max(x1, x2), 0), width)
    top, bottom = min(max(min(y1, y2), 0), height), min(max(max(y1, y2), 0), height)
    assert crop.x1 <= left and right <= crop.x2
    assert crop.y1 <= top and bottom <= crop.y2


@given(image=image_and_region(), data=st.data())
@settings(max_examples=300, deadline=None)
def test_plan_crop_without_padding_or_minimum_is_the_box(
    image: tuple[tuple[int, int], Box], data: st.DataObject
) -> None:
    (width, height), region = image
    x1 = data.draw(st.integers(0, width - 1))
    y1 = data.draw(st.integers(0, height - 1))
    x2 = data.draw(st.integers(x1 + 1, width))
    y2 = data.draw(st.integers(y1 + 1, height))
    crop = plan_crop((x1, y1, x2, y2), region, (width, height), EXACT)
    assert crop == Box(x1, y1, x2, y2)


# --- views ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "shown"),
    [
        ((1000, 500), 2048, (1000, 500)),  # small enough: never enlarged
        ((2048, 10), 2048, (2048, 10)),  # exactly at the limit
        ((4000, 3000), 2048, (2048, 1536)),  # × 0.512
        ((3000, 4000), 2048, (1536, 2048)),
        ((3000, 1000), 1000, (1000, 333)),  # 333.3 rounds to 333
        ((1001, 3), 1000, (1000, 3)),  # 2.997 rounds to 3
        ((1, 5000), 2048, (1, 2048)),  # 0.41 would round to 0: at least 1 px
        ((5000, 1), 2048, (2048, 1)),
        ((1, 1), 2048, (1, 1)),
    ],
)
def test_shown_size_for(size: tuple[int, int], max_side: int, shown: tuple[int, int]) -> None:
    assert shown_size_for(size, max_side) == shown


@given(width=st.integers(1, 20000), height=st.integers(1, 20000), max_side=st.integers(28, 4096))
@settings(max_examples=500, deadline=None)
def test_shown_size_properties(width: int, height: int, max_side: int) -> None:
    shown_width, shown_height = shown_size_for((width, height), max_side)
    assert 1 <= shown_width <= width
    assert 1 <= shown_height <= height
    assert max(shown_width, shown_height) <= max_side
    if max(width, height) <= max_side:
        assert (shown_width, shown_height) == (width, height)
    else:
        assert max(shown_width, shown_height) == max_side
        # Each side is the exact scaled side rounded (or raised to 1 px).
        scale = max_side / max(width, height)
        assert abs(shown_width - width * scale) <= 0.5 or shown_width == 1
        assert abs(shown_height - height * scale) <= 0.5 or shown_height == 1


def synthetic(width: int, height: int) -> Image.Image:
    """Every pixel distinct enough to catch an off-by-one: (x, y, x+y) mod 256."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    array = np.stack([xs % 256, ys % 256, (xs * 7 + ys * 3) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(array)


def test_render_view_crop_matches_the_original_region() -> None:
    original = synthetic(300, 200)
    box = Box(10, 20, 110, 70)
    view, shown = render_view(original, box, view_id="img1", hop=1, size=(box.width, box.height))
    assert view == View(id="img1", box=box, hop=1, shown_size=(100, 50))
    assert shown.size == (100, 50)
    assert np.array_equal(np.asarray(shown), np.asarray(original)[20:70, 10:110])
    assert shown.getpixel((0, 0)) == (10, 20, (70 + 60) % 256)


def test_render_view_full_image_not_resized() -> None:
    original = synthetic(64, 48)
    view, shown = render_view(original, Box.full((64, 48)), view_id="img0", hop=0, size=(64, 48))
    assert view.shown_size == (64, 48)
    assert view.box == Box(0, 0, 64, 48)
    assert np.array_equal(np.asarray(shown), np.asarray(original))


def test_render_view_downsamples_and_keeps_layout() -> None:
    original = Image.new("RGB", (400, 200), (255, 0, 0))
    original.paste((0, 0, 255), (200, 0, 400, 200))  # right half blue
    view, shown = render_view(
        original, Box.full((400, 200)), view_id="img0", hop=0, size=shown_size_for((400, 200), 100)
    )
    assert view.shown_size == (100, 50)
    assert shown.size == (100, 50)
    assert shown.getpixel((10, 25)) == (255, 0, 0)
    assert shown.getpixel((90, 25)) == (0, 0, 255)


def test_render_view_of_a_planned_crop() -> None:
    original = synthetic(1000, 800)
    crop = plan_crop((400, 300, 600, 500), FULL, original.size, DEFAULT)
    assert crop == Box(276, 176, 724, 624)
    view, shown = render_view(
        original, crop, view_id="img1", hop=1, size=shown_size_for((crop.width, crop.height), 224)
    )
    assert view.shown_size == (224, 224)  # 448 → 224, never above max_side
    assert shown.size == (224, 224)
    # The top-left shown pixel averages the original's top-left 2×2 neighbourhood of the crop.
    top_left = shown.getpixel((0, 0))
    assert isinstance(top_left, tuple)
    assert abs(top_left[0] - 276 % 256) <= 2
    assert abs(top_left[1] - 176) <= 2


def test_view_record_round_trip() -> None:
    view = View(id="img2", box=Box(1, 2, 30, 40), hop=2, shown_size=(29, 38))
    record = view.to_record()
    assert record == {"id": "img2", "box": [1, 2, 30, 40], "hop": 2, "size": [29, 38]}
    assert View.from_record(record) == view
    assert View.from_record(dict(record)) == view
