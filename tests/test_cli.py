"""`zoom-refine ask`: the main job, and every user mistake as one clear line with exit status 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine.agent.local.backend import load_local_backend
from zoom_refine.cli import app

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "examples" / "station.png"


def test_missing_image_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(tmp_path / "nope.png"), "What is it?"])
    assert result.exit_code == 2
    assert "image not found" in result.stderr and "nope.png" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_corrupt_image_is_one_line_and_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_text("this is not a JPEG")
    result = runner.invoke(app, ["ask", str(corrupt), "What is it?"])
    assert result.exit_code == 2
    assert "not a readable image" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_one_line_and_exit_2() -> None:
    result = runner.invoke(
        app,
        [
            "ask",
            str(EXAMPLE),
            "Which platform?",
            "--model",
            "openai:some-model",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_that_cannot_be_loaded_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["ask", str(EXAMPLE), "Which platform?", "--model", f"hf:{tmp_path / 'no-model'}"]
    )
    assert result.exit_code == 2, result.output
    assert "cannot load model" in result.stderr


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(EXAMPLE), "q", "--max-hops", "0"])
    assert result.exit_code == 2 and "max_hops" in result.stderr
    result = runner.invoke(app, ["ask", str(EXAMPLE), "q", "--prompt-style", "fancy"])
    assert result.exit_code == 2 and "--prompt-style" in result.stderr


def test_too_large_image_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("L", (20000, 8000)).save(path)  # 160 M pixels, over the 150 M default limit
    result = runner.invoke(app, ["ask", str(path), "q"])
    assert result.exit_code == 2 and "image too large" in result.stderr


@pytest.mark.slow
def test_ask_with_a_local_model_prints_answer_and_steps(tiny_internvl_path: Path) -> None:
    args = [
        "ask",
        str(EXAMPLE),
        "Which platform does the train to Geneva leave from?",
        "-o",
        "3",
        "-o",
        "7",
        "-o",
        "12",
        "-o",
        "5",
        "--model",
        f"hf:{tiny_internvl_path}",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Answer:")
    assert "localize" in result.stdout and "hop 0" in result.stdout

    # Same image and prompt again in this process: the local backend would reuse the cached
    # first turn (0 tiles encoded); forget it so the JSON run shows a fresh encode.
    load_local_backend(str(tiny_internvl_path)).prefix_cache.clear()
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    state = json.loads(as_json.stdout)
    assert state["views"][0] == {
        "id": "img0",
        "box": [0, 0, 3840, 2160],
        "hop": 0,
        "size": [1792, 896],  # made at the 4×2 tile canvas the processor would resize it to
    }
    assert state["steps"][0]["node"] == "localize"
    assert state["usage"]["vision_tiles"] == 9


@pytest.mark.slow
def test_console_script_runs_in_a_subprocess(tmp_path: Path) -> None:
    script = shutil.which("zoom-refine") or str(Path(sys.executable).parent / "zoom-refine")
    completed = subprocess.run(
        [script, "ask", str(tmp_path / "missing.png"), "q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error: image not found")
    assert "Traceback" not in completed.stderr
