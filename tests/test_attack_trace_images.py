"""`trace --save` draws a persisted run's boxes on its input image: only while that image is the
one the run saw (issue 21, item 12). `graphs.traces.check_trace_image` compares the state's
`image_sha256` with the file now and refuses, in one line, pixels changed, size changed, the path
now a link to another image, a non-image, or a file gone."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.cli import app
from zoom_refine.graphs.traces import check_trace_image, read_trace, run_graph
from zoom_refine.testing import RuleVisionModel
from zoom_refine.tools.errors import ImageChangedError, ZoomRefineError

SIZE = (96, 64)


def png(colour: str, size: tuple[int, int] = SIZE) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def traced_run(tmp_path: Path) -> tuple[Path, str, Path]:
    """A Zoom-Refine run on `image.png` (a box at 0.2-0.8), persisted: (db, thread, image)."""
    image = tmp_path / "image.png"
    image.write_bytes(png("red"))
    db = tmp_path / "traces.db"
    inputs: Any = {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}
    run = run_graph(inputs, ZoomContext(model=RuleVisionModel()), db=db)
    assert run.thread_id is not None
    return db, run.thread_id, image


def state_of(db: Path, thread: str) -> dict[str, Any]:
    return read_trace(db, thread, images=False).state


def test_the_unchanged_image_passes(tmp_path: Path) -> None:
    db, thread, _ = traced_run(tmp_path)
    state = state_of(db, thread)
    assert len(state["image_sha256"]) == 64
    check_trace_image(state, thread)  # no error


def relink(image: Path, tmp_path: Path) -> str:
    other = tmp_path / "other.png"
    other.write_bytes(png("blue"))
    image.unlink()
    image.symlink_to(other)
    return f"now a link to {other}"


CHANGES = {
    "pixels": (lambda image, _: image.write_bytes(png("green")) and "", "other pixels, same size"),
    "size": (
        lambda image, _: image.write_bytes(png("red", (100, 64))) and "",
        f"now 100×64 px, the run saw {SIZE[0]}×{SIZE[1]} px",
    ),
    "link": (relink, "now a link to"),
    "not an image": (
        lambda image, _: image.write_bytes(b"plain text, no image " * 8) and "",
        "now not a readable image",
    ),
    "gone": (lambda image, _: image.unlink(), "is gone (image not found"),
}


@pytest.mark.reliability(
    "Traces",
    "`trace --save` after the input image changed: other pixels, another size, the path now a "
    "link to another image, a text file, deleted",
    "ImageChangedError: one line naming the image and what changed (SHA-256 now and then); no "
    "picture drawn",
)
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_image_is_refused_in_one_line(tmp_path: Path, change: str) -> None:
    db, thread, image = traced_run(tmp_path)
    state = state_of(db, thread)
    alter, expected = CHANGES[change]
    alter(image, tmp_path)
    with pytest.raises(ImageChangedError) as caught:
        check_trace_image(state, thread)
    message = str(caught.value)
    assert isinstance(caught.value, ZoomRefineError) and "\n" not in message
    assert str(image) in message and expected in message, message
    if change != "gone":
        assert "changed since the run" in message and "the run saw" in message


def test_bytes_kept_in_the_state_are_the_runs_own(tmp_path: Path) -> None:
    state = {"image": png("red"), "image_sha256": "0" * 64}
    check_trace_image(state)  # nothing on disk to compare: the trace holds the image itself


def test_a_state_without_an_image_is_refused() -> None:
    with pytest.raises(ImageChangedError, match="run t1 has no input image"):
        check_trace_image({"answer": "A"}, "t1")


def test_trace_save_refuses_a_changed_image_with_exit_2(tmp_path: Path) -> None:
    """Through the CLI (`zoom_refine/cli.py` calls `check_trace_image` before drawing)."""
    db, thread, image = traced_run(tmp_path)
    image.write_bytes(png("green"))
    pictures = tmp_path / "pictures"
    result = CliRunner().invoke(app, ["trace", str(db), thread, "--save", str(pictures)])
    assert result.exit_code == 2, result.output
    assert "changed since the run" in result.stderr and "Traceback" not in result.output
    assert not (pictures / "overview.png").exists()
