"""Pictures of a run: the overview with every hop's box, each crop as the model saw it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageColor

import zoom_refine
from zoom_refine.tools.overlay import (
    box_colour,
    render_hops,
    render_overview,
    save_trace,
    show_trace,
)

GREY = (128, 128, 128)
VIEWS = [
    {"id": "img0", "box": [0, 0, 2000, 1000], "hop": 0, "size": [2000, 1000]},
    {"id": "img1", "box": [1000, 400, 1800, 800], "hop": 1, "size": [800, 400]},
    {"id": "img2", "box": [1200, 500, 1600, 700], "hop": 2, "size": [200, 100]},
]


@pytest.fixture
def quadrants() -> Image.Image:
    """2000×1000: four coloured quadrants, so any crop's content says where it came from."""
    image = Image.new("RGB", (2000, 1000))
    image.paste((255, 0, 0), (0, 0, 1000, 500))
    image.paste((0, 255, 0), (1000, 0, 2000, 500))
    image.paste((0, 0, 255), (0, 500, 1000, 1000))
    image.paste((255, 255, 0), (1000, 500, 2000, 1000))
    return image


def rgb(number: int) -> tuple[int, int, int]:
    red, green, blue = ImageColor.getrgb(box_colour(number))[:3]
    return red, green, blue


def test_overview_is_downscaled_with_each_box_drawn_in_its_own_colour() -> None:
    image = Image.new("RGB", (2000, 1000), GREY)
    overview = render_overview(image, VIEWS, max_side=1000)  # scale 0.5

    assert overview.size == (1000, 500)
    assert rgb(1) != rgb(2)
    # hop 1: [1000, 400, 1800, 800] → [500, 200, 900, 400]; check the middle of each edge
    for point in [(500, 300), (899, 300), (700, 200), (700, 399)]:
        assert overview.getpixel(point) == rgb(1), point
    # hop 2: [1200, 500, 1600, 700] → [600, 250, 800, 350]
    for point in [(600, 300), (799, 300), (700, 250), (700, 349)]:
        assert overview.getpixel(point) == rgb(2), point
    # outside the outlines and inside the inner box: the image itself
    for point in [(100, 100), (480, 300), (920, 300), (700, 300)]:
        assert overview.getpixel(point) == GREY, point


def test_overview_never_enlarges_and_accepts_a_path(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (400, 200), GREY).save(path)
    views = [{"id": "img0", "box": [0, 0, 400, 200], "hop": 0, "size": [400, 200]}]
    overview = render_overview(str(path), views)
    assert overview.size == (400, 200)
    assert overview.getpixel((200, 100)) == GREY  # no boxes: just the image


def test_hops_are_the_crops_as_shown(quadrants: Image.Image) -> None:
    hop1, hop2 = render_hops(quadrants, VIEWS)

    assert hop1.size == (800, 400) and hop2.size == (200, 100)
    # hop 1 covers x 1000–1800, y 400–800: green above y 500, yellow below
    assert hop1.getpixel((400, 50)) == (0, 255, 0)
    assert hop1.getpixel((400, 150)) == (255, 255, 0)
    assert hop1.getpixel((5, 5)) == (0, 255, 0) and hop1.getpixel((795, 395)) == (255, 255, 0)
    # hop 2 covers x 1200–1600, y 500–700, resized by half: all yellow
    assert hop2.getpixel((0, 0)) == hop2.getpixel((199, 99)) == (255, 255, 0)


def test_hop_crops_follow_the_box_on_a_resized_view(quadrants: Image.Image) -> None:
    # the region straddling the four quadrants, shown at a quarter of its size
    views = [VIEWS[0], {"id": "img1", "box": [800, 300, 1200, 700], "hop": 1, "size": [100, 100]}]
    (hop,) = render_hops(quadrants, views)
    assert hop.size == (100, 100)
    assert hop.getpixel((10, 10)) == (255, 0, 0)
    assert hop.getpixel((90, 10)) == (0, 255, 0)
    assert hop.getpixel((10, 90)) == (0, 0, 255)
    assert hop.getpixel((90, 90)) == (255, 255, 0)


def test_save_trace_writes_pictures_and_the_output_state(
    quadrants: Image.Image, tmp_path: Path
) -> None:
    result = {
        "answer": "A",
        "views": VIEWS,
        "steps": [{"node": "localize"}],
        "messages": ["not written"],
        "image": b"not written",
    }
    paths = save_trace(result, quadrants, tmp_path / "out")

    assert [path.name for path in paths] == ["overview.png", "hop-1.png", "hop-2.png", "trace.json"]
    assert all(path.is_file() for path in paths)
    overview = Image.open(paths[0]).convert("RGB")
    assert overview.size == (1600, 800)  # scale 0.8: hop 1's left edge at x 800
    assert overview.getpixel((800, 400)) == rgb(1)
    assert Image.open(paths[2]).size == (200, 100)
    assert json.loads(paths[3].read_text()) == {
        "answer": "A",
        "views": VIEWS,
        "steps": [{"node": "localize"}],
    }


def test_show_trace_is_exported_for_notebooks(quadrants: Image.Image) -> None:
    pictures = zoom_refine.show_trace({"views": VIEWS}, quadrants)
    assert pictures[0].size == (1600, 800)
    assert [picture.size for picture in pictures[1:]] == [(800, 400), (200, 100)]
    assert zoom_refine.show_trace is show_trace
    assert len(show_trace({"views": VIEWS[:1]}, quadrants)) == 1  # no zoom: the overview only
