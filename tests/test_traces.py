"""Persistent traces (SQLite checkpoints, strict serde), `zoom-refine trace`, and streaming."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.agent.state import InputState
from zoom_refine.cli import app
from zoom_refine.graphs.traces import list_runs, read_trace, run_graph, strict_serde
from zoom_refine.testing import ScriptedVisionModel

RED = (255, 0, 0)
GREY = (128, 128, 128)
LOCALIZE = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE = "The close-up shows a red square.\nRechecked Answer: A\nConfidence: 0.9"
runner = CliRunner()


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """1000×750 grey image with a red square at [600, 450, 700, 525]."""
    image = Image.new("RGB", (1000, 750), GREY)
    image.paste(RED, (600, 450, 700, 525))
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def inputs(scene: Path, question: str = "What colour is the square?") -> InputState:
    return {"image": str(scene), "question": question, "options": ["red", "blue"]}


def traced_run(
    scene: Path, db: Path, question: str = "What colour is the square?", **kwargs: Any
) -> Any:
    model = ScriptedVisionModel(replies=[LOCALIZE, REFINE])
    context = ZoomContext(model=model, image_format="png")
    return run_graph(inputs(scene, question), context, db=db, **kwargs)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`zoom-refine ARGS` in a fresh Python process."""
    code = "from zoom_refine.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_a_run_is_read_back_step_by_step_by_another_process(scene: Path, tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    heard: list[str] = []
    run = traced_run(scene, db, on_thread=heard.append)
    assert run.result["answer"] == "A" and "messages" not in run.result
    assert heard == [run.thread_id]

    shown = cli("trace", str(db), str(run.thread_id))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[2] for line in steps] == ["localize", "crop", "refine"]
    localize, crop, refine = steps
    assert "view img0 [0, 0, 1000, 750]" in localize
    assert "box [0.6, 0.6, 0.7, 0.7] (norm1)" in localize and "answer B" in localize
    assert "input_tokens=100" in localize and " s" in localize
    crop_box = run.result["views"][1]["box"]
    assert f"view img1 {crop_box}" in crop
    assert f"view img1 {crop_box}" in refine
    assert "answer A" in refine and "confidence 0.90" in refine
    assert "    | Bounding box: [0.6, 0.6, 0.7, 0.7]" in lines  # the raw replies
    assert "    | Rechecked Answer: A" in lines
    assert lines[-1] == "answer A  stopped: confident"


def test_read_trace_gives_the_steps_oldest_first(scene: Path, tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    run = traced_run(scene, db)
    trace = read_trace(db, str(run.thread_id))

    assert [step.node for step in trace.steps] == ["localize", "crop", "refine"]
    assert [step.step for step in trace.steps] == [0, 1, 2]
    localize, crop, refine = trace.steps
    assert localize.record is not None and refine.record is not None and crop.record is not None
    assert localize.record["raw"] == LOCALIZE and localize.record.get("answer") == "B"
    assert localize.record.get("box") == [0.6, 0.6, 0.7, 0.7]
    assert localize.record.get("usage", {})["model_calls"] == 1
    assert localize.record.get("seconds") is not None
    assert crop.record.get("view") == "img1" and crop.view_box == run.result["views"][1]["box"]
    assert crop.record["raw"] is None and crop.record["hop"] == 1
    assert refine.record["raw"] == REFINE and refine.record.get("confidence") == pytest.approx(0.9)
    assert trace.state["image"] == str(scene) and trace.state["answer"] == "A"


def test_each_run_is_a_new_thread_and_listed(scene: Path, tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    first = traced_run(scene, db, question="First question?")
    second = traced_run(scene, db, question="Second question?")
    assert first.thread_id != second.thread_id

    runs = list_runs(db)
    assert [run.thread_id for run in runs] == [first.thread_id, second.thread_id]
    assert [run.question for run in runs] == ["First question?", "Second question?"]
    assert all(run.answer == "A" and run.started for run in runs)

    listed = cli("trace", str(db))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(str(first.thread_id)) and "'First question?'" in lines[0]
    assert lines[1].startswith(str(second.thread_id)) and "→ A" in lines[1]


@pytest.mark.reliability(
    "Security",
    "trace checkpoints written by SqliteSaver",
    "msgpack only: no pickle type in any checkpoint or write row",
)
def test_checkpoints_hold_no_pickle(scene: Path, tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    traced_run(scene, db)
    with sqlite3.connect(db) as conn:
        types = {row[0] for row in conn.execute("SELECT type FROM checkpoints")}
        types |= {row[0] for row in conn.execute("SELECT type FROM writes")}
    assert types <= {"msgpack", "null", "bytes"}


class NotPlain:
    def __init__(self) -> None:
        self.handle = object()


@dataclasses.dataclass
class Smuggled:
    value: int = 1


@pytest.mark.reliability(
    "Security",
    "a pickled or unknown-type checkpoint read back",
    "strict serde: pickle refused (NotImplementedError), unknown types not revived",
)
def test_strict_serde_refuses_objects_and_revives_no_unknown_types() -> None:
    serde = strict_serde()
    assert serde.pickle_fallback is False
    with pytest.raises(TypeError, match="not msgpack serializable"):
        serde.dumps_typed({"value": NotPlain()})
    # A dataclass encodes by its fields, but reading never constructs an unlisted type.
    kind, data = serde.dumps_typed({"value": Smuggled()})
    assert kind == "msgpack"
    revived = serde.loads_typed((kind, data))["value"]
    assert not isinstance(revived, Smuggled)
    with pytest.raises(NotImplementedError):
        serde.loads_typed(("pickle", b"\x80\x04N."))


def test_a_state_with_a_non_plain_object_is_refused(scene: Path, tmp_path: Path) -> None:
    model = ScriptedVisionModel(replies=[LOCALIZE, REFINE])
    bad: Any = {"image": str(scene), "question": "Colour?", "options": {"A": NotPlain()}}
    with pytest.raises(TypeError, match="not msgpack serializable"):
        run_graph(bad, ZoomContext(model=model, image_format="png"), db=tmp_path / "t.db")


def test_streaming_reports_node_updates_and_the_crop_event(scene: Path) -> None:
    events: list[tuple[str, Any]] = []
    model = ScriptedVisionModel(replies=[LOCALIZE, REFINE])
    run = run_graph(
        inputs(scene),
        ZoomContext(model=model, image_format="png"),
        on_event=lambda mode, data: events.append((mode, data)),
    )
    assert run.thread_id is None and run.result["answer"] == "A"
    assert "messages" not in run.result and len(run.result["views"]) == 2
    order = [next(iter(data)) if mode == "updates" else data["event"] for mode, data in events]
    assert order == ["localize", "crop", "crop", "refine"]  # update, custom event, update, update
    (crop_event,) = [data for mode, data in events if mode == "custom"]
    assert crop_event["event"] == "crop" and crop_event["source_id"] == "img0"
    assert crop_event["view"] == run.result["views"][1]
    assert crop_event["requested_box"] == [600.0, 450.0, 700.0, 525.0]


def test_cli_ask_streams_records_and_saves(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedVisionModel(replies=[LOCALIZE, REFINE])
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    db, pictures = tmp_path / "traces.db", tmp_path / "pictures"
    args = ["ask", str(scene), "Colour?", "-o", "red", "-o", "blue", "--stream"]
    result = runner.invoke(app, [*args, "--trace-db", str(db), "--save-trace", str(pictures)])
    assert result.exit_code == 0, result.output

    lines = result.stdout.splitlines()
    crop_box = json.loads((pictures / "trace.json").read_text())["views"][1]["box"]
    assert lines[0].startswith("update   localize") and "box [0.6, 0.6, 0.7, 0.7]" in lines[0]
    assert (
        lines[1]
        == f"event    crop img1 box {crop_box} from img0 (asked [600.0, 450.0, 700.0, 525.0])"
    )
    assert lines[2].startswith("update   crop") and str(crop_box) in lines[2]
    assert lines[3].startswith("update   refine") and "answer A" in lines[3]
    (thread_id,) = [run.thread_id for run in list_runs(db)]
    assert f"trace: thread {thread_id} in {db}" in result.stderr
    assert sorted(path.name for path in pictures.iterdir()) == [
        "hop-1.png",
        "overview.png",
        "trace.json",
    ]


def test_trace_save_writes_pictures_from_the_stored_state(scene: Path, tmp_path: Path) -> None:
    db, pictures = tmp_path / "traces.db", tmp_path / "pictures"
    run = traced_run(scene, db)
    result = runner.invoke(app, ["trace", str(db), str(run.thread_id), "--save", str(pictures)])
    assert result.exit_code == 0, result.output
    view = run.result["views"][1]
    hop = Image.open(pictures / "hop-1.png")
    assert list(hop.size) == view["size"]
    x1, y1, x2, _ = view["box"]
    scale = hop.width / (x2 - x1)
    assert hop.getpixel((round((650 - x1) * scale), round((487 - y1) * scale))) == RED  # the square


def test_trace_errors_are_one_line_and_exit_2(scene: Path, tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    traced_run(scene, db)
    cases = {
        "trace database not found": ["trace", str(tmp_path / "nope.db")],
        "not a trace database": ["trace", str(scene)],
        "no run 'no-such-thread'": ["trace", str(db), "no-such-thread"],
        "--save needs a THREAD": ["trace", str(db), "--save", str(tmp_path / "out")],
    }
    for expected, args in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr + result.stdout
    missing = cli("trace", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: trace database not found")
