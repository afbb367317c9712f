"""`zoom-refine ask`: the main job, and every user mistake as one clear line with exit status 2."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dataset_fixtures as fixtures
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine.agent.local.backend import load_local_backend
from zoom_refine.cli import ModelOptions, app
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel

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


# --- the first five minutes: model specs fail fast, with a way forward ----------------------------


def script() -> str:
    return shutil.which("zoom-refine") or str(Path(sys.executable).parent / "zoom-refine")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_unknown_provider_is_one_line() -> None:
    result = runner.invoke(app, ["ask", str(EXAMPLE), "Which platform?", "--model", "foo:bar"])
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert "unknown provider 'foo'" in line and "openai:<model>" in line


@pytest.mark.parametrize("command", ["ask", "eval"])
def test_hosted_openai_model_without_key_is_one_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ZOOM_REFINE_BASE_URL", raising=False)
    if command == "ask":
        args = ["ask", str(EXAMPLE), "Which platform?", "-o", "3", "-o", "7"]
    else:
        data = fixtures.write_hr_bench_tsv(tmp_path / "data")
        args = ["eval", "hr-bench", "--data", str(data), "--out", str(tmp_path / "run")]
    result = runner.invoke(app, [*args, "--model", "openai:gpt-4o"])
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert "OPENAI_API_KEY" in line and "--api-key" in line and "--base-url" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written


ALTERNATIVES = ("hf:/path/to/checkpoint", "--model openai:NAME --base-url URL", "zoom-refine demo")


@pytest.mark.parametrize(
    "hub",
    [
        {"HF_HUB_OFFLINE": "1"},
        {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},  # nothing listens there
    ],
    ids=["offline", "unreachable"],
)
@pytest.mark.parametrize("command", ["ask", "eval"])
def test_hub_model_that_cannot_be_downloaded_fails_fast(
    command: str, hub: dict[str, str], tmp_path: Path
) -> None:
    """Not 146 s of retried requests: one line within 15 s naming the ways on."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty-hf-home"), **hub}
    env.pop("TRANSFORMERS_OFFLINE", None)
    if command == "ask":
        args = ["ask", str(EXAMPLE), "Which platform?", "-o", "3", "-o", "7"]
    else:
        data = fixtures.write_hr_bench_tsv(tmp_path / "data")
        args = ["eval", "hr-bench", "--data", str(data), "--out", str(tmp_path / "run")]
    started = time.perf_counter()
    done = subprocess.run(
        [script(), *args, "--model", "hf:OpenGVLab/InternVL3-2B-hf"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 2, done.stderr[-3000:]
    assert elapsed < 15, elapsed
    line = one_line(done.stderr)
    assert line.startswith("error: cannot ") and "OpenGVLab/InternVL3-2B-hf" in line
    assert ("HF_HUB_OFFLINE" if hub["HF_HUB_OFFLINE"] == "1" else "cannot be reached") in line
    assert all(way in line for way in ALTERNATIVES), line


@pytest.mark.slow
def test_cached_hub_model_is_used_offline_when_the_hub_is_unreachable(
    tmp_path: Path, trained_internvl_path: Path
) -> None:
    """Weights in the hub cache, hub unreachable: used at once (not after minutes of retried
    freshness checks), and said so."""
    snapshot = tmp_path / "hf" / "hub" / "models--tiny--protocol" / "snapshots" / ("0" * 40)
    shutil.copytree(trained_internvl_path, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    args = ["ask", str(EXAMPLE), "Which platform?", "-o", "3", "-o", "7", "-o", "12", "-o", "5"]
    started = time.perf_counter()
    done = subprocess.run(
        [script(), *args, "--model", "hf:tiny/protocol", "--max-patches", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.perf_counter() - started < 60
    assert "using the cached weights of hf:tiny/protocol offline" in done.stderr
    assert "Retrying" not in done.stderr
    assert done.stdout.startswith("Answer: A (3)")


# --- answers, shared options, help ------------------------------------------------------------------


def test_ask_prints_the_answer_with_its_option_text(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ScriptedVisionModel(
        replies=[
            "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]",
            "Rechecked Answer: A\nConfidence: 0.9",
        ]
    )
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    args = ["ask", str(EXAMPLE), "Which platform?", "-o", "3", "-o", "7", "-o", "12"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Answer: A (3)"
    assert "answer B (7)" in lines[1] and "answer A (3)" in lines[2]


SHARED = {
    "--confidence-threshold": ("0.5", "confidence_threshold", 0.5),
    "--prompt-style": ("internvl", "prompt_style", "internvl"),
    "--view-max-side": ("1024", "view_max_side", 1024),
    "--max-patches": ("6", "max_patches", 6),
    "--model-family": ("qwen3_vl", "model_family", "qwen3_vl"),
    "--server-tile-budget": ("vllm", "server_tile_budget", "vllm"),
    "--box-format": ("norm1000", "box_format", "norm1000"),
    "--max-hops": ("2", "max_hops", 2),
}


def test_eval_takes_the_shared_model_options_into_config_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RuleVisionModel()
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--limit", "1"]
    args += ["--model", "openai:served", "--base-url", "http://127.0.0.1:9/v1"]
    for option, (value, _field, _expected) in SHARED.items():
        args += [option, value]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["context"]
    assert {field: settings[field] for _, field, _ in SHARED.values()} == {
        field: expected for _, field, expected in SHARED.values()
    }


def test_ask_and_eval_share_one_set_of_model_options() -> None:
    import typer.main

    command = typer.main.get_command(app)
    renamed = {"qwen_min_pixels": "--min-pixels", "qwen_max_pixels": "--max-pixels"}
    shared = {
        renamed.get(field.name, "--" + field.name.replace("_", "-"))
        for field in dataclasses.fields(ModelOptions)
    }
    assert set(SHARED) <= shared
    for name in ("ask", "eval"):
        params = command.commands[name].params  # type: ignore[attr-defined]
        options = {opt for param in params for opt in param.opts}
        assert shared <= options, shared - options


@pytest.mark.parametrize("command", ["ask", "eval", "demo", "trace", ""])
def test_help_shows_flags_as_flags(command: str) -> None:
    """`--json`, not `--json <bool>` (typer 0.29 prints a type for every option)."""
    result = runner.invoke(app, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    flag = {"ask": "--json", "eval": "--exact-preprocessing"}.get(command, "--help")
    (line,) = [line for line in result.stdout.splitlines() if f" {flag} " in line]
    assert line.split(flag, 1)[1].split()[0] not in ("<bool>", "BOOLEAN")


# --- the offline demo ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_the_whole_workflow_offline(
    tmp_path: Path, trained_internvl_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zoom-refine demo` (the protocol-trained tiny model the suite caches): the answer with
    its option, the steps, the pictures, a trace that `zoom-refine trace` replays, and a plain
    word that the model ignores the image."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched
    folder = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert str(trained_internvl_path) in result.stderr
    stdout = result.stdout
    assert "Answer: A (3)" in stdout
    assert "localize  hop 0" in stdout and "refine    hop 1" in stdout
    assert "this tiny model ignores the image" in stdout
    assert {path.name for path in folder.iterdir()} >= {
        "overview.png",
        "hop-1.png",
        "trace.json",
        "trace.db",
    }
    listed = runner.invoke(app, ["trace", str(folder / "trace.db")])
    assert listed.exit_code == 0 and "→ A" in listed.stdout


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"zoom-refine {version('zoom-refine')}"


def test_testing_module_help_trains_nothing(tmp_path: Path) -> None:
    """`python -m zoom_refine.testing --help` prints its usage and exits before any training:
    an empty cache stays empty."""
    environment = {**os.environ, "ZOOM_REFINE_TINY_MODEL_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "zoom_refine.testing", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m zoom_refine.testing" in result.stdout
    assert not (tmp_path / "cache").exists()


def test_stray_values_after_a_repeatable_option_say_to_repeat_it() -> None:
    """`-o 3 7 12 5` is one option and three stray words: the error says how to give several."""
    result = CliRunner().invoke(app, ["ask", "x.png", "How many?", "-o", "3", "7", "12", "5"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "unexpected extra argument" in text
    assert "repeated, one value each" in text and "-o A -o B" in text


# --- help a newcomer can read; eval's progress and output -------------------------------------------


@pytest.mark.parametrize("command", ["ask", "eval", "demo", "trace", "report", "replay", "mcp"])
def test_help_shows_plain_metavars(command: str) -> None:
    """No Python types (`<str>`, `<list[str]>`, `<int range> [x>=0]`) and no `{image}`: plain
    words (`INTEGER`, `URL`, `1..8`) and `IMAGE QUESTION` in the usage line."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert not re.search(r"<(str|int|float|bool|path|list)\b|\[x[<>]=|\{\w+\}", text), text
    if command == "ask":
        assert "Usage: root ask [OPTIONS] IMAGE QUESTION" in text
        assert re.search(r"--base-url +URL ", text) and re.search(r"--max-hops +1\.\.8 ", text)
        assert re.search(r"--max-patches +INTEGER ", text)


def test_eval_method_is_a_choice_of_the_registered_methods(tmp_path: Path) -> None:
    from zoom_refine.graphs.registry import METHOD_GRAPHS

    shown = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).stdout
    (line,) = [line for line in shown.splitlines() if " --method " in line]
    choices = line.split("--method", 1)[1].split()[0].strip("[]").split("|")
    assert set(METHOD_GRAPHS) <= set(choices) and "both" in choices
    ask_help = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "200"}).stdout
    (ask_line,) = [line for line in ask_help.splitlines() if " --method " in line]
    assert ask_line.split("--method", 1)[1].split()[0] == "[" + "|".join(METHOD_GRAPHS) + "]"

    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--method", "zoom,agent"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "Invalid value for '--method'" in text and "zoom-refine, baseline, agent" in text
    assert not out.exists()  # refused while parsing the command line


def progress_line(stderr: str, benchmark: str = "hr-bench") -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith(benchmark + " ")]
    return line


def test_eval_progress_shows_its_total_and_resumes_from_what_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`12/12`, not `12/?`: six rows (one malformed, recorded as wrong) times two methods; a
    resumed run starts from the records already in the folder; skipped bad rows are not planned."""
    monkeypatch.setattr(
        "zoom_refine.agent.models.load_chat_model", lambda *a, **k: RuleVisionModel()
    )
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--method", "both"]
    first = runner.invoke(app, [*args, "--limit", "2"], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    assert " 4/4 " in progress_line(first.stderr)
    resumed = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert resumed.exit_code == 0, resumed.output
    assert " 12/12 " in progress_line(resumed.stderr)
    skipped = [*args[:-4], "--out", str(tmp_path / "skip"), "--bad-rows", "skip"]
    result = runner.invoke(app, skipped, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert " 5/5 " in progress_line(result.stderr)


@pytest.mark.slow
def test_eval_with_a_local_model_shows_our_lines_not_transformers_bars(
    tmp_path: Path, tiny_internvl_path: Path
) -> None:
    """The real console script on a real local checkpoint: stderr holds our loading line and
    the progress bar with its total; no transformers loading bar, tqdm line or warning."""
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(tmp_path / "run")]
    args += ["--model", f"hf:{tiny_internvl_path}", "--max-patches", "1", "--limit", "3"]
    done = subprocess.run(
        [script(), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"loading hf:{tiny_internvl_path} …"
    assert lines[1].startswith(f"loaded hf:{tiny_internvl_path} in ")
    assert " 3/3 " in progress_line(done.stderr) and len(lines) == 3, done.stderr
    for noise in ("Loading", "it/s", "%|", "Warning", "warn"):
        assert noise not in done.stderr, noise
    assert done.stdout.startswith("hr-bench (extractor: strict)")
