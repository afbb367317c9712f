"""`zoom-refine demo`: the whole workflow offline, in about a minute, with no download.

The model is the protocol-trained tiny InternVL3 of `zoom_refine.testing`
(`trained_protocol_model("internvl3")`): built and trained on the CPU the first time (about a
minute), then cached by recipe (`.cache/tiny-models/` in a source checkout, else
`~/.cache/zoom-refine/tiny-models/`, or `$ZOOM_REFINE_TINY_MODEL_CACHE`). It runs through the
real local backend and the real graph, with the settings it was trained for
(`protocol_context`: 2 tiles per image, 0–1 boxes, 64 new tokens). It only learned the reply
format: it answers B with a box first and A with confidence 0.9 after the crop, whatever the
image and the question, so the answer shows the workflow, never what the image shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from zoom_refine.agent.context import ZoomContext

FAMILY: Final = "internvl3"
EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "examples" / "station.png"
"""The README's example image, in a source checkout (a wheel has no `examples/`)."""
QUESTION = "Which platform does the train to Geneva leave from?"
OPTIONS = ["3", "7", "12", "5"]
SCENE_SIZE = (3840, 2160)
"""Size of the synthetic scene drawn when `EXAMPLE_IMAGE` is absent."""

BUILDING = "tiny demo model: found in the cache, or trained now (about a minute on the CPU)…"
NOTE = (
    "Note: this tiny model ignores the image. It was trained offline only to follow "
    "Zoom-Refine's reply format (always B first, then A after the crop), so its answer says "
    "nothing about the picture: it shows the workflow, not a real answer."
)


def demo_model() -> Path:
    """The protocol-trained tiny InternVL3 checkpoint: from the cache, else trained now."""
    from zoom_refine.testing import trained_protocol_model

    return trained_protocol_model(FAMILY)


def demo_context(model_path: Path) -> ZoomContext:
    """The settings the tiny model was trained with (it answers the protocol under these only)."""
    from zoom_refine.testing import protocol_context

    context: ZoomContext = protocol_context(FAMILY, f"hf:{model_path}")
    return context


def demo_inputs(folder: Path) -> tuple[str, str, list[str]]:
    """(image, question, options): the README's station example in a checkout; elsewhere a
    synthetic scene written into `folder`, with the question the tiny model was trained on."""
    if EXAMPLE_IMAGE.is_file():
        return str(EXAMPLE_IMAGE), QUESTION, list(OPTIONS)
    from zoom_refine.testing import PROTOCOL_OPTIONS, PROTOCOL_QUESTION, protocol_image

    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "scene.png"
    protocol_image(SCENE_SIZE, "demo").save(image)
    return str(image), PROTOCOL_QUESTION, list(PROTOCOL_OPTIONS)
