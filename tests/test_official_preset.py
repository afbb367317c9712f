"""The `official` preset through the whole graph (docs/fidelity.md).

The preset's functions are checked against the official code's own outputs elsewhere: golden data
recorded from xavier-yu114/Zoom-Refine fc6c1ad (`tests/test_official_golden.py`) and
`zoom-refine official verify CHECKOUT` (`tests/test_official_verify.py`). No official function is
rewritten here: these tests check that the graph, under `ZoomContext.official()`, sends and reads
what those verified functions give (`evals.official_verify.preset_crop`, `preset_crop_pixels`,
`tools.official_image.official_first_image`), and the settings the preset fixes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.models import load_chat_model
from zoom_refine.agent.parsing import parse_answer
from zoom_refine.agent.regions import read_regions
from zoom_refine.cli import app
from zoom_refine.evals.official_verify import pixels_digest, preset_crop, preset_crop_pixels
from zoom_refine.evals.prompts import official_question
from zoom_refine.evals.runner import run_one
from zoom_refine.evals.samples import Sample
from zoom_refine.evals.scoring import summarize
from zoom_refine.testing import ScriptedVisionModel, texts_in
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.official_image import official_first_image
from zoom_refine.tools.views import View

OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}

# --- helpers ---------------------------------------------------------------------------------


def run_official(
    image: Path | str, replies: list[str], **overrides: Any
) -> tuple[dict[str, Any], ScriptedVisionModel]:
    model = ScriptedVisionModel(replies=replies)
    context = ZoomContext.official(model=model, **overrides)
    inputs = {"image": str(image), "question": "What colour is the square?", "options": OPTIONS}
    result = build_graph().invoke(
        inputs, context=context, config={"recursion_limit": context.recursion_limit}
    )
    return result, model


def image_blocks(message: Any) -> list[dict[str, Any]]:
    return [b for b in message.content if isinstance(b, dict) and b.get("type") == "image"]


def block_pixels(block: dict[str, Any]) -> np.ndarray:
    import base64

    with Image.open(io.BytesIO(base64.b64decode(block["base64"]))) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """1000x750 noisy PNG (so JPEG matters), a red square at [600, 450, 700, 525]."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (750, 1000, 3), dtype=np.uint8)
    pixels[450:525, 600:700] = (255, 0, 0)
    path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(path)
    return path


# --- box parsing ----------------------------------------------------------------------------

TRICKY_BOXES = [
    "Answer: A\nBounding box: [0, 0, 500, 600]",  # 0-1000 numbers: clamped to the whole image
    "Bounding box: [0.1, 0.1, 0.2, 0.2]\nOn reflection,\nBounding box: [0.5, 0.5, 0.7, 0.8]",
    "**Bounding box:** [0.25, 0.3, 0.45, 0.6]",
    "**Bounding box**: [0.35,0.25,0.65,0.75]",
    "bbox [0.3, 0.3, 0.35, 0.4]",
    "BBOX：[0.123, 0.456, 0.789, 0.999]",
    "Bounding box: [0.5, 0.5, 1.02, 0.9]",  # overshoot: clamped
    "Bounding box: [0.1, 0.2, 0.3, 0.4]",
    "Bounding box: [0.999, 0.999, 1.5, 1.2]",  # clamps to an empty box: gets 1e-6 back? no: x1=0.999
    "Bounding box: [0.2, 0.2, 0.2000001, 0.3]",  # a sliver
    "Answer: B\n[0.1, 0.2, 0.3, 0.4]",  # unlabelled: no box
    "Bounding box: [-0.1, 0.2, 0.5, 0.6]",  # a sign: no match at all
    "Bounding box: [0.7, 0.2, 0.5, 0.6]",  # inverted: no second call
    "Bounding box: [0.5, 0.2, 0.5, 0.6]",  # not strictly ordered
    "Bounding box: [1.2, 0.1, 1.5, 0.5]",  # empty once clamped
    "Bounding box: [1.2.3, 0.1, 0.5, 0.5]",  # not a number
    "Bounding box: [0.1, 0.2, 0.3, 0.4]\nbbox: [0.9, 0.9, 0.8, 0.95]",  # last wins, inverted
    "<box>[[100, 200, 300, 400]]</box>",  # InternVL's native box: not the official label
    "Bounding box: [0.1 0.2 0.3 0.4]",  # no commas
    "Bounding  box: [0.1, 0.2, 0.3, 0.4]",  # two spaces in the label
    "bounding box = [0.1, 0.2, 0.3, 0.4]",  # '=' is not a colon
    "Bounding box: [1e-1, 0.2, 0.3, 0.4]",  # exponent
]


def test_official_box_parser_on_the_issue_examples() -> None:
    context = ZoomContext.official(model="openai:x")
    size = (4000, 3000)
    view = View(id="img0", box=Box.full(size), hop=0, shown_size=size)

    def crops(text: str) -> list[list[float]]:
        return [
            list(region.box) for region in read_regions(text, view, size, "other", context).regions
        ]

    assert crops("Bounding box: [0, 0, 500, 600]") == [[0, 0, 4000, 3000]]
    # the last match wins: [0.5, 0.5, 0.6, 0.6] padded by 0.1 of the side
    assert crops(
        "Bounding box: [0.1, 0.1, 0.2, 0.2] or rather Bounding box: [0.5, 0.5, 0.6, 0.6]"
    ) == [[1600, 1200, 2800, 2100]]
    assert crops("Bounding box: [0.6, 0.5, 0.5, 0.6]") == []
    # ours (default) reads the same replies differently: 0-1000 and the first match
    ours = ZoomContext(model="openai:x")
    first = read_regions(
        "Bounding box: [0.1, 0.1, 0.2, 0.2] Bounding box: [0.5, 0.5, 0.6, 0.6]",
        view,
        size,
        "other",
        ours,
    )
    assert [round(v) for v in first.regions[0].box] == [400, 300, 800, 600]
    thousand = read_regions("Bounding box: [0, 0, 500, 600]", view, size, "other", ours)
    assert [round(v) for v in thousand.regions[0].box] == [0, 0, 2000, 1800]


def test_official_parser_requires_zero_padding_in_the_crop_planner() -> None:
    with pytest.raises(InvalidInputError, match="padded twice"):
        ZoomContext.official(model="openai:x", padding=0.1)


# --- answer parsing -------------------------------------------------------------------------


def test_official_and_our_answer_parsers_differ_where_the_issue_says() -> None:
    reply = "Answer: B\nBounding box: [0.1, 0.2, 0.3, 0.4]\nAnswer: C"
    assert parse_answer(reply, OPTIONS, mode="official") == "B"  # first match
    assert parse_answer(reply, OPTIONS) == "C"  # ours: the last
    assert parse_answer("Answer: E", OPTIONS, mode="official") == "E"  # any A-E
    assert parse_answer("Answer: E", OPTIONS) is None  # ours: offered letters only
    refine = "Rechecked Answer: because the sign is blue"
    assert parse_answer(refine, OPTIONS, rechecked=True, mode="official") == "B"
    assert parse_answer(refine, OPTIONS, rechecked=True) is None


def test_official_parsers_stay_fast_on_long_whitespace() -> None:
    import time

    hostile = (
        "Answer:" + " " * 20_000 + "x" + "Rechecked Answer:" + " " * 20_000 + "bbox" + " " * 20_000
    )
    started = time.perf_counter()
    parse_answer(hostile, OPTIONS, mode="official")
    parse_answer(hostile, OPTIONS, rechecked=True, mode="official")
    context = ZoomContext.official(model="openai:x")
    view = View(id="img0", box=Box.full((100, 100)), hop=0, shown_size=(100, 100))
    read_regions(hostile, view, (100, 100), "other", context)
    assert time.perf_counter() - started < 2.0


# --- the whole pipeline under the preset ------------------------------------------------------


def test_official_preset_request_and_crop_match_the_official_pipeline(scene: Path) -> None:
    reply = "Answer: A\nBounding box: [0.55, 0.55, 0.75, 0.75]"
    result, model = run_official(scene, [reply, "Rechecked Answer: because it is blue"])

    first, second = model.requests
    assert len(first) == 1  # no system prompt: the model's default, as in B
    (first_block,) = image_blocks(first[0])
    assert first_block["mime_type"] == "image/png"  # within limits: the file's own bytes
    import base64

    assert base64.b64decode(first_block["base64"]) == scene.read_bytes()
    assert "What colour is the square?" in texts_in(first[0])

    # refine: the whole first turn again, then the crop as JPEG 95 of the official box
    crop_blocks = [b for m in second[len(first) :] for b in image_blocks(m)]
    assert [b["mime_type"] for b in crop_blocks] == ["image/jpeg"]
    box = preset_crop(reply, (1000, 750))  # = the official crop (golden data, verify)
    assert box == (450, 337, 850, 638)
    sent = base64.b64decode(crop_blocks[0]["base64"])
    assert pixels_digest(sent) == preset_crop_pixels(scene, [0.55, 0.55, 0.75, 0.75])
    assert result["views"][-1]["box"] == list(box)
    # answers: first match, and "because" reads B under the official refine parser
    assert result["initial_answer"] == "A" and result["answer"] == "B"


def test_official_preset_inverted_box_means_no_second_call(scene: Path) -> None:
    result, model = run_official(scene, ["Answer: C\nBounding box: [0.7, 0.2, 0.5, 0.6]"])
    assert len(model.requests) == 1
    assert result["stop_reason"] == "no_box" and result["answer"] == "C"


def test_official_preset_has_no_minimum_crop(scene: Path) -> None:
    reply = "Answer: A\nBounding box: [0.5, 0.5, 0.5001, 0.5001]"
    result, _ = run_official(scene, [reply, "Rechecked Answer: A"])
    box = preset_crop(reply, (1000, 750))
    assert box is not None and result["views"][-1]["box"] == list(box)
    assert box[2] - box[0] < 448  # our default would grow it to one InternVL tile
    ours = ZoomContext(model="openai:x")
    assert ours.min_crop_side == 448 and ZoomContext.official(model="openai:x").min_crop_side == 0


def test_official_preset_generation_and_prefix_settings(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    context = ZoomContext.official(model=f"hf:{folder}")
    from zoom_refine.agent.local.model import LocalVisionChatModel

    model = load_chat_model(f"hf:{folder}", **context.model_settings())  # loads no weights
    assert isinstance(model, LocalVisionChatModel)
    assert model.max_new_tokens == 1024  # B line 326
    assert model.reuse_prefix is False  # B re-encodes the first image in refine
    ours = ZoomContext(model=f"hf:{folder}").model_settings()
    default = load_chat_model(f"hf:{folder}", **ours)
    assert isinstance(default, LocalVisionChatModel)
    assert default.max_new_tokens == 512 and default.reuse_prefix is True
    assert context.max_patches == 12 and context.max_hops == 1  # B line 327; two calls
    assert context.exact_preprocessing  # full-resolution crops go to the processor, as in B


def test_official_overrides_replace_preset_fields() -> None:
    context = ZoomContext.official(model="openai:x", max_new_tokens=4096)  # the API variant's
    assert context.max_new_tokens == 4096 and context.box_parser == "official"


# --- first-call image -----------------------------------------------------------------------


def _noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth noise: compresses like a photo, so the 7 MiB loop is reachable with small limits
    small = rng.integers(0, 256, (size[1] // 16 + 1, size[0] // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    return image.convert(mode)


def test_official_first_image_refuses_what_the_official_code_cannot_save(tmp_path: Path) -> None:
    """LA cannot be saved as JPEG: the official `compress_image_to_memory` returns None (the
    golden `LA.png-4097x12` row), and the preset raises ImageLoadError (an error record)."""
    path = tmp_path / "la.png"
    Image.new("LA", (4200, 100)).save(path)
    from zoom_refine.tools.errors import ImageLoadError

    with pytest.raises(ImageLoadError, match="cannot re-save"):
        official_first_image(path.read_bytes())


def test_official_preset_sends_the_shrunk_jpeg_first(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    _noise((4400, 500), 3).save(path)
    _, model = run_official(path, ["Answer: A"])
    import base64

    (block,) = image_blocks(model.requests[0][0])
    assert block["mime_type"] == "image/jpeg"
    assert base64.b64decode(block["base64"]) == official_first_image(path.read_bytes()).data


# --- question text --------------------------------------------------------------------------


def test_eval_passes_the_official_question_under_the_preset(tmp_path: Path, scene: Path) -> None:
    source = {"question": "Which colour?", "A": "red", "B": "blue", "C": "green", "D": "grey"}
    sample = Sample(
        "7", str(scene), "Which colour?", {k: source[k] for k in "ABCD"}, "A", source=source
    )
    model = ScriptedVisionModel(replies=["Answer: A"])
    context = ZoomContext.official(model=model)
    record = run_one(build_graph(), "hr-bench", sample, "zoom-refine", context)
    assert record["status"] == "ok", record["error"]
    text = texts_in(model.requests[0][0])
    assert official_question("hr-bench", sample) in text
    plain = ScriptedVisionModel(replies=["Answer: A"])
    run_one(build_graph(), "hr-bench", sample, "zoom-refine", ZoomContext(model=plain))
    assert "The choices are listed below" not in texts_in(plain.requests[0][0])


# --- scoring denominator ----------------------------------------------------------------------


# --- the command line -----------------------------------------------------------------------


def test_cli_preset_official_keeps_given_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scene: Path
) -> None:
    model = ScriptedVisionModel(replies=["Answer: A"])
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    data = tmp_path / "data"
    data.mkdir()
    from dataset_fixtures import write_hr_bench_tsv

    tsv = write_hr_bench_tsv(data)
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(tsv), "--out", str(out), "--limit", "1"]
    args += ["--model", "openai:served", "--base-url", "http://127.0.0.1:9/v1"]
    args += ["--preset", "official", "--max-patches", "6", "--skip-unanswered"]
    args += ["--extractor", "official-baseline"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    settings = config["context"]
    assert settings["box_parser"] == "official" and settings["first_image"] == "official"
    assert settings["max_new_tokens"] == 1024 and settings["jpeg_quality"] == 95
    assert settings["max_patches"] == 6  # given on the command line: it wins over the preset
    assert config["skip_unanswered"] is True and config["extractor"] == "official-baseline"


# --- a refine call that raises ----------------------------------------------------------------


class FailsOnRefine(ScriptedVisionModel):
    """Answers the localize call, then raises as an out-of-memory two-image call would."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        if self.requests:
            self.requests.append(list(messages))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._generate(messages, stop, run_manager, **kw)


def _sample(scene: Path) -> Sample:
    return Sample("7", str(scene), "Which colour?", dict(OPTIONS), "B")


def test_official_preset_keeps_the_first_answer_when_refine_raises(scene: Path) -> None:
    """Issue item 5: first answer B, refine fails, truth B: 1/1 officially (Base 526–528 keeps
    `Answer`; zoomrefine_acc.py counts it), and so under the preset and its scorer."""
    model = FailsOnRefine(replies=["Answer: B\nBounding box: [0.55, 0.55, 0.75, 0.75]"])
    context = ZoomContext.official(model=model)
    record = run_one(build_graph(), "vstar", _sample(scene), "zoom-refine", context)
    assert len(model.requests) == 2 and record["status"] == "ok", record.get("error")
    assert record["answer"] == "B" and record["stop_reason"] == "refine_failed"
    refine = record["steps"][-1]
    assert refine["node"] == "refine" and refine["raw"] is None
    assert "CUDA out of memory" in refine["note"]
    summary = summarize("vstar", [record], extractor="official-zoomrefine", skip_unanswered=True)
    overall = summary["methods"]["zoom-refine"]["groups"]["overall"]
    assert (overall["correct"], overall["total"]) == (1, 1)


def test_our_default_records_a_refine_failure_as_an_error(scene: Path) -> None:
    model = FailsOnRefine(replies=["Answer: B\nBounding box: [0.55, 0.55, 0.75, 0.75]"])
    graph = build_graph(retry_policy=None)
    record = run_one(graph, "vstar", _sample(scene), "zoom-refine", ZoomContext(model=model))
    assert record["status"] == "error" and "CUDA out of memory" in record["error"]
    assert ZoomContext.official(model="openai:x").keep_answer_on_refine_failure
    assert not ZoomContext(model="openai:x").keep_answer_on_refine_failure


# --- images the official code decodes its own way (issue items 1-3) --------------------------


def test_official_preset_crops_an_rgba_image_as_the_official_code(tmp_path: Path) -> None:
    """Alpha dropped (plain `convert("RGB")`), not composited on white as our default does."""
    path = tmp_path / "alpha.png"
    rgba = _noise((400, 300), 5).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((400, 300)))
    rgba.save(path)
    reply = "Answer: B\nBounding box: [0.2, 0.2, 0.6, 0.6]"
    _, model = run_official(path, [reply, "Rechecked Answer: B"])
    crop = next(b for m in model.requests[1][1:] for b in image_blocks(m))
    import base64

    sent = pixels_digest(base64.b64decode(crop["base64"]))
    assert sent == preset_crop_pixels(path, [0.2, 0.2, 0.6, 0.6])


def test_official_preset_runs_a_truncated_jpeg(tmp_path: Path) -> None:
    """The official code sets LOAD_TRUNCATED_IMAGES and sends truncated files; so does the
    preset (our default refuses them: an error record)."""
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    _noise((400, 300), 6).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 3 // 5])
    result, model = run_official(
        path, ["Answer: B\nBounding box: [0.2, 0.2, 0.6, 0.6]", "Rechecked Answer: C"]
    )
    assert len(model.requests) == 2 and result["answer"] == "C"


# --- option text from a parquet's typed cells (issue item 7) ---------------------------------


def test_official_prompt_formats_the_typed_cells_a_loader_keeps() -> None:
    """HR-Bench's official conversion reads the parquet: a float option is `3.0` and a null
    `None` in its f-string (golden `questions` pins `pandas_text` on such values); the text
    cells give `3` and an empty line."""
    from zoom_refine.evals.prompts import TYPED_CELLS, official_prompt

    text = {"question": "How many?", "A": "3", "B": "4", "C": "", "D": "x"}
    typed = {"question": "How many?", "A": 3.0, "B": 4, "C": None, "D": "x"}
    plain = Sample("1", "i.png", "How many?", {"A": "3", "B": "4", "D": "x"}, "A", source=text)
    with_types = Sample(
        "1", "i.png", "How many?", {"A": "3", "B": "4", "D": "x"}, "A",
        source={**text, TYPED_CELLS: typed},
    )  # fmt: skip
    assert "(A) 3\n(B) 4\n(C) \n(D) x\n" in official_prompt("hr-bench", plain)
    assert "(A) 3.0\n(B) 4\n(C) None\n(D) x\n" in official_prompt("hr-bench", with_types)


def test_official_option_text_from_a_parquet_file_keeps_its_types(tmp_path: Path) -> None:
    """Through the project's own parquet loader: a float option cell reads `3.0` and a null
    `None`, as HR-Bench's official conversion (pandas) prints them."""
    import pandas as pd

    from zoom_refine.evals.loaders import load_samples
    from zoom_refine.evals.prompts import official_prompt

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    row = {"index": 1, "question": "How many?", "A": 3.0, "B": 4.0, "C": None, "D": 5.5}
    row |= {"answer": "A", "category": "FSP", "cycle_category": "c1", "image": buffer.getvalue()}
    path = tmp_path / "hr_bench_4k.parquet"
    pd.DataFrame([row]).to_parquet(path)
    (sample,) = [s for s in load_samples("hr-bench", path) if isinstance(s, Sample)]
    assert "(A) 3.0\n(B) 4.0\n(C) None\n(D) 5.5\n" in official_prompt("hr-bench", sample)
