"""Hostile and odd images through the whole graph and the CLI (decoding alone: test_images.py).

Each case is one clear error line for the user, or a correct run: the box lands on the image as
the user sees it, and the crop stays inside it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_graph
from zoom_refine.cli import app
from zoom_refine.testing import ScriptedVisionModel, images_in

runner = CliRunner()
RED = (255, 0, 0)
BLUE = (0, 0, 255)
FIND_AND_CHECK = [
    "Answer: A\nBounding box: [0.5, 0.0, 1.0, 0.25]",
    "Rechecked Answer: A\nConfidence: 0.9",
]


def ask(image: Path | bytes, replies: list[str]) -> tuple[dict[str, Any], ScriptedVisionModel]:
    model = ScriptedVisionModel(replies=replies)
    context = ZoomContext(model=model)
    source = image if isinstance(image, bytes) else str(image)
    result = build_graph().invoke(
        {"image": source, "question": "What colour?", "options": {"A": "red", "B": "blue"}},
        context=context,
    )
    return result, model


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 2000×1000 (red block in the stored top-left, rest blue), EXIF orientation 6: shown
    rotated 90° clockwise as 1000×2000, red in the top-right corner [500, 0, 1000, 500]."""
    stored = Image.new("RGB", (2000, 1000), BLUE)
    stored.paste(RED, (0, 0, 500, 500))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


@pytest.mark.reliability(
    "Images",
    "EXIF-rotated JPEG (orientation 6)",
    "the box is read on the rotated image the user sees; the crop shows the red corner",
)
def test_a_box_on_an_exif_rotated_jpeg_lands_on_the_image_as_shown(tmp_path: Path) -> None:
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg")
    result, model = ask(path, FIND_AND_CHECK)
    (first, crop) = result["views"]
    assert first["box"] == [0, 0, 1000, 2000]  # width and height as displayed
    assert crop["box"] == [400, 0, 1000, 700]  # [500, 0, 1000, 500] padded, on the shown image
    (crop_image,) = images_in(model.requests[1][-1])
    red = np.all(np.abs(np.asarray(crop_image, dtype=int) - RED) < 40, axis=-1)
    assert red.mean() > 0.5  # stored top-left = shown top-right: red, not the blue elsewhere


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(
            (1, 1),
            id="1x1",
            marks=pytest.mark.reliability(
                "Images", "1×1 image", "runs end to end; the crop is the whole 1×1 image"
            ),
        ),
        pytest.param(
            (1, 5000),
            id="1x5000",
            marks=pytest.mark.reliability(
                "Images",
                "1×5000 image",
                "runs end to end; the crop is inside the image and at least 1 px wide",
            ),
        ),
    ],
)
def test_degenerate_sizes_run_end_to_end(size: tuple[int, int], tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.new("RGB", size, RED).save(path)
    result, _ = ask(path, FIND_AND_CHECK)
    x1, y1, x2, y2 = result["views"][1]["box"]
    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
    assert result["answer"] == "A"


@pytest.mark.reliability(
    "Images", "animated GIF", "the first frame is used: the crop shows its colour"
)
def test_an_animated_gif_is_read_as_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in (RED, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    _, model = ask(path, FIND_AND_CHECK)
    (crop_image,) = images_in(model.requests[1][-1])
    pixel = crop_image.getpixel((1, 1))
    assert isinstance(pixel, tuple) and pixel[0] > 240 and pixel[2] < 15  # red, not the blue


@pytest.mark.reliability(
    "Images",
    "CMYK JPEG through the graph",
    "converted to RGB; the model is sent an RGB view of the right colour",
)
def test_a_cmyk_jpeg_reaches_the_model_as_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(buffer, "JPEG", quality=95)  # red
    _, model = ask(buffer.getvalue(), FIND_AND_CHECK)
    (view,) = images_in(model.requests[0][-1])
    pixel = view.getpixel((32, 32))
    assert isinstance(pixel, tuple) and pixel[0] > 200 and pixel[1] < 60


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda p: p.write_bytes(b""),
            "image is empty (0 bytes)",
            id="empty",
            marks=pytest.mark.reliability(
                "Images", "0-byte file (CLI)", "one line: 'image is empty (0 bytes)'; exit 2"
            ),
        ),
        pytest.param(
            lambda p: p.write_text("not a picture\n" * 20),
            "not a readable image",
            id="text-as-jpg",
            marks=pytest.mark.reliability(
                "Images", "text file named .jpg (CLI)", "one line: 'not a readable image'; exit 2"
            ),
        ),
    ],
)
def test_unreadable_files_are_one_line_from_the_cli(
    make: Any, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    make(path)
    line = one_line_error(["ask", str(path), "What is it?"])
    assert expected in line and str(path) in line


@pytest.mark.reliability(
    "Images",
    "an image URL",
    "one line: 'image URLs are not fetched … download the file first'; exit 2; nothing fetched",
)
def test_an_image_url_is_refused_not_fetched() -> None:
    line = one_line_error(["ask", "https://example.com/photo.jpg", "What is it?"])
    assert "not fetched" in line and "https://example.com/photo.jpg" in line


@pytest.mark.reliability(
    "Images", "a path that does not exist", "one line: 'image not found: PATH'; exit 2"
)
def test_a_missing_path_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cat.png"
    line = one_line_error(["ask", str(missing), "What is it?"])
    assert f"image not found: {missing}" in line
