"""What the composition tests share (a Zoom-Refine node in a parent graph, the graph as a tool
of a prebuilt agent): a photo with a red square, and a scripted model that finds it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from zoom_refine.testing import ScriptedVisionModel

RED = (1200, 600, 1400, 800)
"""The red square, in pixels of the 1600×1000 photo."""
FIND_RED = "Answer: B\nBounding box: [0.75, 0.6, 0.875, 0.8]"
"""A localize reply whose box (fractions of the view) is the red square."""


def write_photo(folder: Path) -> Path:
    """`folder/photo.png`: 1600×1000, grey, the red square at `RED`."""
    image = Image.new("RGB", (1600, 1000), (200, 200, 200))
    image.paste((255, 0, 0), RED)
    path = folder / "photo.png"
    image.save(path)
    return path


def finds_red(confidence: float) -> ScriptedVisionModel:
    """Localizes the red square (initial answer B), then answers A with `confidence`."""
    return ScriptedVisionModel(replies=[FIND_RED, f"Rechecked Answer: A\nConfidence: {confidence}"])
