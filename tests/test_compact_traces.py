"""Compact traces: each image is stored once per trace database (`graphs.trace_blobs`), the state
read back is the state written, and databases written before read as they did."""

from __future__ import annotations

import base64
import copy
import io
import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.state import InputState
from zoom_refine.cli import app
from zoom_refine.evals.runner import run_one
from zoom_refine.evals.samples import Sample
from zoom_refine.graphs.baseline import build_baseline_graph
from zoom_refine.graphs.trace_blobs import BlobStore, CompactSqliteSaver, TraceSerializer
from zoom_refine.graphs.traces import (
    list_runs,
    open_saver,
    read_trace,
    run_graph,
    sample_runs,
    thread_config,
)
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel
from zoom_refine.tools.encoding import encode_image

ROOT = Path(__file__).resolve().parents[1]
STATION = ROOT / "examples" / "station.png"
STATION_QUESTION = "Which platform does the train to Geneva leave from?"
STATION_LOCALIZE = "Answer: B\nBounding box: [0.68, 0.64, 0.78, 0.72]"
REFINE = "The board reads GENEVA 7.\nRechecked Answer: B\nConfidence: 0.9"
LOCALIZE = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
MB = 1024 * 1024
ROW_LIMIT = 64 * 1024
"""No checkpoint or write row of a compact trace holds an image: each is far below this."""
runner = CliRunner()


def db_size(db: Path) -> int:
    return sum(path.stat().st_size for path in db.parent.glob(db.name + "*"))


def scene(path: Path, colour: tuple[int, int, int] = (255, 0, 0)) -> Path:
    """1000×750 grey image with a coloured square at [600, 450, 700, 525]."""
    image = Image.new("RGB", (1000, 750), (128, 128, 128))
    image.paste(colour, (600, 450, 700, 525))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def bmp_context(*replies: str) -> ZoomContext:
    """A scripted model fed uncompressed BMP views, as in-process models are."""
    return ZoomContext(model=ScriptedVisionModel(replies=list(replies)), image_format="bmp")


def station_inputs() -> InputState:
    return {"image": str(STATION), "question": STATION_QUESTION, "options": ["3", "7", "12", "5"]}


def largest_rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        (checkpoint,) = conn.execute("SELECT MAX(LENGTH(checkpoint)) FROM checkpoints").fetchone()
        (write,) = conn.execute("SELECT MAX(LENGTH(value)) FROM writes").fetchone()
    return checkpoint, write


def blob_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(row[0], row[1]) for row in conn.execute("SELECT sha256, codec FROM zr_blobs")]


def image_data(messages: list[BaseMessage]) -> list[str]:
    """The base64 data of every image block in `messages`, in order."""
    return [
        block["base64"]
        for message in messages
        if isinstance(message.content, list)
        for block in message.content
        if isinstance(block, dict) and block.get("type") == "image"
    ]


def centre_colour(data: str) -> tuple[int, ...]:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        rgb = image.convert("RGB")
        pixel = rgb.getpixel((rgb.width // 2, rgb.height // 2))
    assert isinstance(pixel, tuple)
    return pixel


@pytest.mark.reliability(
    "Traces",
    "a 1-hop `ask` on examples/station.png (4K) with --trace-db, BMP views (in-process models)",
    "adds under 1 MB to the database (~46 MB before): each view stored once, no row holds an image",
)
def test_a_one_hop_ask_adds_under_1_mb(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    run = run_graph(station_inputs(), bmp_context(STATION_LOCALIZE, REFINE), db=db)
    assert run.result["answer"] == "B" and len(run.result["views"]) == 2
    assert db_size(db) <= 1 * MB
    assert max(largest_rows(db)) < ROW_LIMIT
    assert len(blob_rows(db)) == 2  # the overview and the crop, once each


def test_a_4k_photo_sample_with_both_methods_stays_under_2_mb(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    fixtures.photo_like((3840, 2160), seed=3).save(photo, "JPEG", quality=90)
    encoded = photo.read_bytes()
    context = ZoomContext(model=RuleVisionModel(), image_format="bmp")
    sizes = {}
    for kind, image in (("path", str(photo)), ("bytes", encoded)):
        db = tmp_path / f"{kind}.db"
        sample = Sample(
            id="0", image=image, question="Q?", options={"A": "a", "B": "b"}, answer="A"
        )
        with open_saver(db, create=True) as saver:  # as evals.runner: one saver, both methods
            graphs = {
                "zoom-refine": build_graph(checkpointer=saver),
                "baseline": build_baseline_graph(checkpointer=saver),
            }
            for method, graph in graphs.items():
                record = run_one(graph, "hr-bench", sample, method, context, traced=True)
                assert record["status"] == "ok", record
        sizes[kind] = db_size(db)
        assert max(largest_rows(db)) < ROW_LIMIT
    assert sizes["path"] <= 2 * MB
    # an input given as bytes (TSV, parquet) is kept once, whole: it is the run's input
    assert sizes["bytes"] <= len(encoded) + 1 * MB


def test_reading_back_gives_the_identical_state(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    image = scene(tmp_path / "scene.png")
    context = bmp_context(LOCALIZE, REFINE)
    inputs: InputState = {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}
    with open_saver(db, create=True) as saver:
        config = thread_config(context)
        states = build_graph(checkpointer=saver).stream(
            inputs, context=context, config=config, stream_mode="values"
        )
        live = list(states)[-1]  # the final state: the very objects that were checkpointed
    thread_id = str(config["configurable"]["thread_id"])
    assert len(image_data(live["messages"])) == 2

    assert max(largest_rows(db)) < ROW_LIMIT  # checkpoints and pending writes: no image inside
    stored = read_trace(db, thread_id).state
    assert stored["messages"] == live["messages"]
    assert image_data(stored["messages"]) == image_data(live["messages"])  # the base64 strings
    assert {key: stored[key] for key in live} == live
    with open_saver(db) as saver:  # every checkpoint, not just the last
        history = list(build_graph(checkpointer=saver).get_state_history(config))
    for snapshot in history:
        for data in image_data(snapshot.values.get("messages") or []):
            assert data in image_data(live["messages"])

    markers: list[Any] = image_data(read_trace(db, thread_id, images=False).state["messages"])
    assert [marker["zr_blob"] for marker in markers] == [sha for sha, _ in blob_rows(db)]


def test_the_serializer_copies_never_changes_and_round_trips_every_image_form(
    tmp_path: Path,
) -> None:
    pixels = encode_image(Image.new("RGB", (64, 64), (1, 2, 3)), "bmp")
    data = base64.b64encode(pixels).decode()
    url = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(8000)).decode()
    value = {
        "channel_values": {
            "image": bytes(range(256)) * 40,  # an input image given as bytes
            "messages": [
                HumanMessage(content=[{"type": "image", "base64": data, "mime_type": "image/bmp"}]),
                HumanMessage(content=[{"type": "image_url", "image_url": {"url": url}}]),
                HumanMessage(content=[{"type": "image", "url": url}]),
                HumanMessage(content=[{"type": "image", "source_type": "base64", "data": data}]),
                ToolMessage(content=[{"type": "text", "text": "x" * 9000}], tool_call_id="c"),
                AIMessage(content="short"),
                HumanMessage(content=[{"type": "image", "base64": data + "\n"}]),  # not canonical
            ],
        }
    }
    before = copy.deepcopy(value)
    db = tmp_path / "t.db"
    with open_saver(db, create=True) as saver:
        serde = saver.serde
        assert isinstance(serde, TraceSerializer) and serde.pickle_fallback is False
        kind, payload = serde.dumps_typed(value)
        assert value == before  # the live objects are untouched
        # inline: the text, the non-canonical base64 (kept as is); each image a ~100-byte marker
        assert kind == "msgpack" and len(payload) < 9000 + len(data) + 2000
        assert serde.loads_typed((kind, payload)) == before
        kind, payload = serde.dumps_typed(bytes(9000))  # a write of bytes alone
        assert kind == "msgpack" and serde.loads_typed((kind, payload)) == bytes(9000)
        with pytest.raises(NotImplementedError):
            serde.loads_typed(("pickle", b"\x80\x04N."))
    assert len(blob_rows(db)) == 4  # the BMP, the PNG, the input bytes, the zeros
    with open_saver(tmp_path / "plain.db", create=True, compact=False) as saver:
        assert len(saver.serde.dumps_typed(value)[1]) > 4 * len(data)  # plain: all inline


COLOURS = [(255, 0, 0), (0, 0, 255), (0, 200, 0), (250, 250, 0), (0, 250, 250), (250, 0, 250)]


@pytest.mark.reliability(
    "Traces",
    "two threads write runs into one --trace-db at once (shared saver, and a saver each)",
    "every run reads back with its own images; each distinct image is stored once",
)
def test_two_threads_write_runs_into_one_database(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    images = [scene(tmp_path / f"{k}.png", colour) for k, colour in enumerate(COLOURS)]
    runs: dict[str, tuple[int, int, int]] = {}
    errors: list[BaseException] = []

    def write(indices: list[int], shared: Any) -> None:
        try:
            for k in indices:
                inputs: InputState = {
                    "image": str(images[k]),
                    "question": "Colour?",
                    "options": ["a", "b"],
                }
                context = bmp_context(LOCALIZE, REFINE)
                if shared is None:  # a saver (connection) per run, as `ask --trace-db`
                    run = run_graph(inputs, context, db=db)
                    runs[str(run.thread_id)] = COLOURS[k]
                else:  # one saver for all threads, as `eval --trace-db`
                    config = thread_config(context)
                    build_graph(checkpointer=shared).invoke(inputs, context=context, config=config)
                    runs[str(config["configurable"]["thread_id"])] = COLOURS[k]
        except BaseException as error:  # reported below
            errors.append(error)

    for shared in (False, True):
        with open_saver(db, create=True) as saver:
            threads = [
                threading.Thread(target=write, args=(part, saver if shared else None))
                for part in ([0, 1, 2], [3, 4, 5])
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert errors == []
    assert len(runs) == 12 and {run.thread_id for run in list_runs(db)} == set(runs)
    for thread_id, colour in runs.items():
        overview, crop = image_data(read_trace(db, thread_id).state["messages"])
        assert centre_colour(overview) == (128, 128, 128) and centre_colour(crop) == colour
    assert len(blob_rows(db)) == 2 * len(COLOURS)  # per image: its overview and its crop, once


WRITER = """
import sys
from zoom_refine import ZoomContext
from zoom_refine.graphs.traces import run_graph
from zoom_refine.testing import ScriptedVisionModel
replies = ["Answer: B\\nBounding box: [0.6, 0.6, 0.7, 0.7]", "Rechecked Answer: A\\nConfidence: 0.9"]
for image in sys.argv[2:]:
    model = ScriptedVisionModel(replies=list(replies))
    inputs = {"image": image, "question": "Colour?", "options": ["a", "b"]}
    run_graph(inputs, ZoomContext(model=model, image_format="bmp"), db=sys.argv[1])
"""


def test_two_processes_write_runs_into_one_database(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    images = [str(scene(tmp_path / f"{k}.png", colour)) for k, colour in enumerate(COLOURS[:4])]
    # both processes write the same four images, in opposite orders
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), *order], stderr=subprocess.PIPE)
        for order in (images, images[::-1])
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=240)
        assert writer.returncode == 0, stderr.decode()
    runs = list_runs(db)
    assert len(runs) == 8
    for run in runs:
        overview, crop = image_data(read_trace(db, run.thread_id).state["messages"])
        assert centre_colour(overview) == (128, 128, 128) and centre_colour(crop) in COLOURS[:4]
    assert len(blob_rows(db)) == 8


@pytest.mark.reliability(
    "Traces",
    "a trace database written before compact traces (every image in every row)",
    "lists, shows and saves as before; new compact runs join it and both kinds read back",
)
def test_an_old_database_still_reads(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    image = scene(tmp_path / "scene.png")
    inputs: InputState = {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}
    with open_saver(db, create=True, compact=False) as saver:  # the format traces had
        context = bmp_context(LOCALIZE, REFINE)
        old_config = thread_config(context, "zoom-refine:7:" + "0" * 32)
        build_graph(checkpointer=saver).invoke(inputs, context=context, config=old_config)
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "zr_blobs" not in tables and max(largest_rows(db)) > 1 * MB
    old_id = str(old_config["configurable"]["thread_id"])

    new = run_graph(inputs, bmp_context(LOCALIZE, REFINE), db=db)  # a compact run joins it
    assert len(blob_rows(db)) == 2
    assert [run.thread_id for run in list_runs(db)] == [old_id, new.thread_id]
    assert sample_runs(db, "zoom-refine:7") == [old_id]
    old, fresh = read_trace(db, "zoom-refine:7"), read_trace(db, str(new.thread_id))
    assert [step.node for step in old.steps] == ["localize", "crop", "refine"]
    assert image_data(old.state["messages"]) == image_data(fresh.state["messages"])
    shown = runner.invoke(app, ["trace", str(db), old_id, "--save", str(tmp_path / "pictures")])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[-1] == "answer B  stopped: confident"
    assert (tmp_path / "pictures" / "hop-1.png").is_file()


def test_pictures_saved_from_a_trace_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedVisionModel(replies=[STATION_LOCALIZE, REFINE])
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    db, direct, replayed = tmp_path / "t.db", tmp_path / "direct", tmp_path / "replayed"
    args = ["ask", str(STATION), STATION_QUESTION, "-o", "3", "-o", "7", "-o", "12", "-o", "5"]
    asked = runner.invoke(app, [*args, "--trace-db", str(db), "--save-trace", str(direct)])
    assert asked.exit_code == 0, asked.output
    assert len(blob_rows(db)) == 2  # a compact trace
    (run,) = list_runs(db)
    shown = runner.invoke(app, ["trace", str(db), run.thread_id, "--save", str(replayed)])
    assert shown.exit_code == 0, shown.output
    names = sorted(path.name for path in direct.iterdir())
    assert names == ["hop-1.png", "overview.png", "trace.json"]
    for name in names:
        assert (replayed / name).read_bytes() == (direct / name).read_bytes(), name


def test_a_bytes_input_rebuilds_from_the_database_alone(tmp_path: Path) -> None:
    db, pictures = tmp_path / "t.db", tmp_path / "pictures"
    encoded = encode_image(fixtures.photo_like((1600, 900), seed=2), "jpeg")
    inputs: Any = {"image": encoded, "question": "Colour?", "options": ["a", "b"]}
    run = run_graph(inputs, bmp_context(LOCALIZE, REFINE), db=db)
    codecs = sorted(codec for _, codec in blob_rows(db))
    assert codecs == ["raw", "view", "view"]  # the input once; its views as recipes
    trace = read_trace(db, str(run.thread_id))
    assert trace.state["image"] == encoded
    shown_sizes = [
        Image.open(io.BytesIO(base64.b64decode(data))).size
        for data in image_data(trace.state["messages"])
    ]
    assert shown_sizes == [tuple(view["size"]) for view in run.result["views"]]
    shown = runner.invoke(app, ["trace", str(db), str(run.thread_id), "--save", str(pictures)])
    assert shown.exit_code == 0, shown.output
    assert (pictures / "overview.png").is_file() and (pictures / "hop-1.png").is_file()


def test_without_recipes_images_rebuild_without_the_input_file(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    image = scene(tmp_path / "gone.png")
    inputs: InputState = {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}
    context = bmp_context(LOCALIZE, REFINE)
    conn = sqlite3.connect(db, check_same_thread=False)
    blobs = BlobStore(db, recipes=False)
    try:
        saver = CompactSqliteSaver(conn, serde=TraceSerializer(blobs))
        config = thread_config(context)
        states = build_graph(checkpointer=saver).stream(
            inputs, context=context, config=config, stream_mode="values"
        )
        live = list(states)[-1]
    finally:
        blobs.close()
        conn.close()
    image.unlink()
    assert sorted(codec for _, codec in blob_rows(db)) == ["zlib", "zlib"]
    stored = read_trace(db, str(config["configurable"]["thread_id"])).state["messages"]
    assert image_data(stored) == image_data(live["messages"])


@pytest.mark.reliability(
    "Traces",
    "`trace DB THREAD --save DIR` after the run's input image file was deleted",
    "one line on stderr (exit 2, no traceback) naming the image; the steps are still shown",
)
def test_a_missing_input_image_is_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "t.db"
    image = scene(tmp_path / "gone.png")
    inputs: InputState = {"image": str(image), "question": "Colour?", "options": ["red", "blue"]}
    run = run_graph(inputs, bmp_context(LOCALIZE, REFINE), db=db)
    image.unlink()

    shown = runner.invoke(
        app, ["trace", str(db), str(run.thread_id), "--save", str(tmp_path / "p")]
    )
    assert shown.exit_code == 2
    (line,) = shown.stderr.strip().splitlines()
    assert f"its input image {image} is gone" in line
    assert "Traceback" not in shown.stdout + shown.stderr
    steps = [line for line in shown.stdout.splitlines() if line.startswith("step ")]
    assert [step.split()[2] for step in steps] == ["localize", "crop", "refine"]

    with caplog.at_level(logging.WARNING, logger="zoom_refine.graphs.trace_blobs"):
        trace = read_trace(db, str(run.thread_id))  # the images cannot be rebuilt: markers stay
    assert [step.node for step in trace.steps] == ["localize", "crop", "refine"]
    assert trace.state["answer"] == "B"
    markers: list[Any] = image_data(trace.state["messages"])
    assert [set(marker) for marker in markers] == [{"zr_blob", "form"}] * 2
    assert "not restored" in caplog.text and str(image) in caplog.text
