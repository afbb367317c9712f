"""`data synth`: HR-Bench TSVs that load through our own loader, deterministic by seed, with
targets legible only at full resolution."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine.agent.families import processor_input_size
from zoom_refine.evals.loaders import load_samples
from zoom_refine.evals.samples import Sample
from zoom_refine.evals.synth import (
    DEFAULT_SIDE,
    DEFAULT_TARGET_PX,
    PLATE,
    make_scene,
    parse_target_box,
    write_synth_tsv,
)
from zoom_refine.testing.tiny_models import PROTOCOL_MAX_PATCHES


def _invoke(*args: str) -> tuple[int, str]:
    from zoom_refine.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_synth_file_loads_through_the_hr_bench_loader(tmp_path: Path) -> None:
    path = write_synth_tsv(tmp_path / "synth.tsv", 6, side=640, target_px=16, seed=4)
    rows = list(load_samples("hr-bench", path))
    assert [type(row) for row in rows] == [Sample] * 6
    assert [row.id for row in rows] == [str(i) for i in range(6)]
    assert [row.fields["category"] for row in rows] == ["text", "marker", "count"] * 2
    for row in rows:
        assert set(row.options) == {"A", "B", "C", "D"} and row.answer in row.options
        image = Image.open(io.BytesIO(row.image if isinstance(row.image, bytes) else b""))
        assert image.size == (640, 480)
        box = parse_target_box(row.source["target_box"])
        assert box is not None
        x1, y1, x2, y2 = (int(v) for v in box)
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        plate = image.convert("RGB").crop((x1, y1, x2, y2))
        colours = {colour for _, colour in plate.getcolors(maxcolors=4096) or []}
        assert PLATE in colours and len(colours) == 2  # the white plate and the ink on it
        assert image.convert("RGB").getpixel((x1 - 2, y1 - 2)) != PLATE  # the box is tight


def test_answer_matches_what_is_drawn(tmp_path: Path) -> None:
    """The text kind's answer is the code drawn: read back by matching the glyph bitmaps."""
    from zoom_refine.evals.synth import DIGITS, INK, _text_unit

    scene = make_scene(0, side=800, target_px=26, seed=9)
    assert scene.kind == "text"
    unit = _text_unit(26)
    x1, y1, _, _ = scene.target_box
    read = ""
    for position in range(2):
        left = x1 + unit * (1 + 6 * position)
        cells = tuple(
            "".join(
                "#" if scene.image.getpixel((left + c * unit, y1 + unit * (1 + r))) == INK else " "
                for c in range(5)
            )
            for r in range(7)
        )
        read += next(digit for digit, glyph in DIGITS.items() if glyph == cells)
    assert scene.options["ABCD".index(scene.answer)] == read


def test_same_seed_same_bytes_other_seed_other_file(tmp_path: Path) -> None:
    first = write_synth_tsv(tmp_path / "a.tsv", 3, side=512, target_px=12, seed=7).read_bytes()
    again = write_synth_tsv(tmp_path / "b.tsv", 3, side=512, target_px=12, seed=7).read_bytes()
    other = write_synth_tsv(tmp_path / "c.tsv", 3, side=512, target_px=12, seed=8).read_bytes()
    assert first == again
    assert first != other


def test_target_is_a_few_pixels_at_the_first_view() -> None:
    """At the defaults the target is about 24 px of a 4096-px scene: at the tiny InternVL's
    first view (its processor's input size, 448 x 448) it spans under 4 px, while a crop of a
    few hundred pixels around it shows it at full size."""
    scene = make_scene(0, side=DEFAULT_SIDE, target_px=DEFAULT_TARGET_PX, seed=0)
    width, height = scene.image.size
    view = processor_input_size(
        "internvl",
        (width, height),
        max_patches=PROTOCOL_MAX_PATCHES,
        qwen_min_pixels=3136,
        qwen_max_pixels=12_845_056,
    )
    x1, y1, x2, y2 = scene.target_box
    shown_w = (x2 - x1) * view[0] / width
    shown_h = (y2 - y1) * view[1] / height
    assert view == (448, 448)
    assert shown_w < 4 and shown_h < 4
    assert 20 <= max(x2 - x1, y2 - y1) <= 30  # about --target-px at full resolution
    # downsampled for real, the sign's two digits (ink columns apart) no longer have a white gap
    small = scene.image.resize(view, Image.Resampling.BOX)
    cx, cy = int((x1 + x2) / 2 * view[0] / width), int((y1 + y2) / 2 * view[1] / height)
    patch = small.crop((cx - 2, cy - 2, cx + 3, cy + 3)).convert("L")
    assert patch.getextrema()[1] < 250  # no pure-white pixel survives: nothing legible


@pytest.mark.reliability("data synth", "sizes that cannot make a scene", "one line, exit 2")
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--n", "0"], "--n"),
        (["--n", "2", "--side", "100"], "--side"),
        (["--n", "2", "--side", "512", "--target-px", "200"], "--target-px"),
        (["--n", "2", "--target-px", "2"], "--target-px"),
    ],
)
def test_bad_sizes_are_one_line(tmp_path: Path, args: list[str], named: str) -> None:
    code, output = _invoke("data", "synth", str(tmp_path / "x.tsv"), *args)
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in output
    assert not (tmp_path / "x.tsv").exists()


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "d" / "synth.tsv"
    code, output = _invoke("data", "synth", str(out), "--n", "2", "--side", "512", "--seed", "1")
    assert code == 0 and out.is_file(), output
    before = out.read_bytes()
    code, output = _invoke("data", "synth", str(out), "--n", "3", "--side", "512")
    assert code == 2 and "--force" in output and out.read_bytes() == before
    code, _ = _invoke("data", "synth", str(out), "--n", "3", "--side", "512", "--force")
    assert code == 0 and len(list(load_samples("hr-bench", out))) == 3
    header = out.read_text().splitlines()[0].split("\t")
    assert header[:9] == [
        "index",
        "question",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "cycle_category",
    ]
    assert "target_box" in header and header[-1] == "image"
    first = out.read_text().splitlines()[1].split("\t")
    assert json.loads(first[header.index("target_box")])
    assert base64.b64decode(first[-1])[:8] == b"\x89PNG\r\n\x1a\n"
