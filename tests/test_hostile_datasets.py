"""Hostile dataset files through `zoom-refine eval`: one clear line each, never a traceback.

A file the loader cannot use at all (missing columns, a wrong delimiter, an empty file) stops the
command with one line on stderr saying what is wrong and what to do, exit status 2. A file with
one bad row (a base64 cell that is not an image, a duplicate id) runs to the end: the row is
recorded in predictions.jsonl with a one-line reason, under an id of its own. Loader-level
checks of the same cases are in test_loaders.py; these go through the command a user runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from dataset_fixtures import HR_HEADER, NOT_AN_IMAGE, b64, jpeg_bytes, write_tsv
from typer.testing import CliRunner

from zoom_refine.cli import app
from zoom_refine.testing import RuleVisionModel

runner = CliRunner()
RED = b64(jpeg_bytes("red"))


def hr_row(index: int, image: str = RED, answer: str = "A") -> list[Any]:
    return [index, f"Question {index}?", answer, "single", "w", "x", "y", "z", "cycle1", image]


@pytest.fixture
def scripted_model(monkeypatch: pytest.MonkeyPatch) -> RuleVisionModel:
    """Every model spec resolves to a scripted model (patched where the spec is resolved)."""
    model = RuleVisionModel()
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    return model


def run_eval_cli(benchmark: str, data: Path, out: Path) -> Any:
    args = ["eval", benchmark, "--data", str(data), "--out", str(out), "--model", "openai:fake"]
    return runner.invoke(app, args)


def records(out: Path) -> list[dict[str, Any]]:
    text = (out / "predictions.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


# --- the whole file is unusable: one line on stderr, exit 2 --------------------------------------


def hr_missing_columns(folder: Path) -> Path:
    header = [name for name in HR_HEADER if name not in ("image", "answer")]
    rows = [[cell for name, cell in zip(HR_HEADER, hr_row(0), strict=True) if name in header]]
    return write_tsv(folder / "hr_bench_4k.tsv", header, rows)


def hr_comma_separated(folder: Path) -> Path:
    path = folder / "hr_bench_4k.tsv"
    lines = [",".join(HR_HEADER), ",".join(str(cell) for cell in hr_row(0))]
    path.write_text("\n".join(lines) + "\n")
    return path


def mme_missing_columns(folder: Path) -> Path:
    header = [name for name in fixtures.MME_TSV_HEADER if name != "l2-category"]
    return write_tsv(folder / "MME-RealWorld.tsv", header, [[0, RED, "Q?"]])


def empty_file(name: str) -> Any:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(b"")
        return path

    return write


def mme_json_not_a_list(folder: Path) -> Path:
    path = folder / "MME_RealWorld.json"
    path.write_text(json.dumps({"Question_id": "x"}))
    return path


def hr_latin1(folder: Path) -> Path:
    path = write_tsv(folder / "hr_bench_4k.tsv", HR_HEADER, [hr_row(0), hr_row(1)])
    text = path.read_text().replace("Question 1?", "Café crème?")
    path.write_text(text, encoding="latin-1")
    return path


def mme_json_utf16(folder: Path) -> Path:
    path = fixtures.write_mme_json(folder)
    path.write_text(path.read_text(), encoding="utf-16")
    return path


UNUSABLE = [
    pytest.param(
        "hr-bench",
        hr_missing_columns,
        r"is not an HR-Bench TSV .*: its header lacks answer, image \(found: .*\); pass the right "
        "file or the right benchmark",
        id="hr-missing-columns",
        marks=pytest.mark.reliability(
            "Datasets",
            "HR-Bench TSV missing columns (image, answer)",
            "one line: 'its header lacks answer, image (found: …); pass the right file'; exit 2",
        ),
    ),
    pytest.param(
        "mme-realworld",
        mme_missing_columns,
        r"is not a VLMEvalKit MME-RealWorld TSV: its header lacks l2-category",
        id="mme-missing-columns",
        marks=pytest.mark.reliability(
            "Datasets",
            "MME-RealWorld TSV missing a column (l2-category)",
            "one line: 'its header lacks l2-category (found: …)'; exit 2",
        ),
    ),
    pytest.param(
        "hr-bench",
        hr_comma_separated,
        r"is not tab-separated: its header has no tab but ',' between names .*; an HR-Bench TSV "
        r".* separates columns with tabs: pass the file as downloaded, or re-export it with tabs",
        id="hr-comma-delimiter",
        marks=pytest.mark.reliability(
            "Datasets",
            "wrong delimiter: a comma-separated file given as HR-Bench TSV",
            "one line: 'is not tab-separated: its header has no tab but ','…; re-export it with "
            "tabs'; exit 2",
        ),
    ),
    pytest.param(
        "hr-bench",
        empty_file("hr_bench_4k.tsv"),
        r"dataset file is empty \(0 bytes\): .*hr_bench_4k\.tsv \(re-download it\)",
        id="hr-empty",
        marks=pytest.mark.reliability(
            "Datasets",
            "empty HR-Bench TSV (0 bytes)",
            "one line: 'dataset file is empty (0 bytes): … (re-download it)'; exit 2",
        ),
    ),
    pytest.param(
        "mme-realworld",
        empty_file("MME_RealWorld.json"),
        r"dataset file is empty \(0 bytes\)",
        id="mme-empty",
        marks=pytest.mark.reliability(
            "Datasets",
            "empty MME-RealWorld JSON (0 bytes)",
            "one line: 'dataset file is empty (0 bytes): …'; exit 2",
        ),
    ),
    pytest.param(
        "vstar",
        empty_file("test_questions.jsonl"),
        r"dataset file is empty \(0 bytes\)",
        id="vstar-empty",
        marks=pytest.mark.reliability(
            "Datasets",
            "empty V* test_questions.jsonl (0 bytes)",
            "one line: 'dataset file is empty (0 bytes): …'; exit 2",
        ),
    ),
    pytest.param(
        "mme-realworld",
        mme_json_not_a_list,
        r"is not the MME-RealWorld annotation JSON \(expected a JSON list of questions",
        id="mme-json-object",
        marks=pytest.mark.reliability(
            "Datasets",
            "MME-RealWorld JSON that is an object, not the list of questions",
            "one line: 'is not the MME-RealWorld annotation JSON (expected a JSON list …)'; exit 2",
        ),
    ),
    pytest.param(
        "hr-bench",
        hr_latin1,
        r"hr_bench_4k\.tsv is not UTF-8 \(byte 0xE9 at line 3\); save it as UTF-8$",
        id="hr-latin-1",
        marks=pytest.mark.reliability(
            "Datasets",
            "HR-Bench TSV saved in Latin-1 ('Café crème?')",
            "one line: '… is not UTF-8 (byte 0xE9 at line 3); save it as UTF-8'; exit 2; no "
            "'Caf\ufffd'",
        ),
    ),
    pytest.param(
        "mme-realworld",
        mme_json_utf16,
        r"MME_RealWorld\.json is UTF-16 text \(it starts with a UTF-16 byte-order mark\); save "
        "it as UTF-8$",
        id="mme-utf-16",
        marks=pytest.mark.reliability(
            "Datasets",
            "MME-RealWorld JSON saved in UTF-16",
            "one line: '… is UTF-16 text (…); save it as UTF-8'; exit 2",
        ),
    ),
]


@pytest.mark.parametrize(("benchmark", "write", "message"), UNUSABLE)
def test_an_unusable_file_stops_with_one_line(
    benchmark: str, write: Any, message: str, tmp_path: Path, scripted_model: RuleVisionModel
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    result = run_eval_cli(benchmark, write(folder), tmp_path / "out")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


# --- one bad row: recorded with a one-line reason, the run goes on -------------------------------


def hr_not_an_image(folder: Path) -> Path:
    rows = [hr_row(0), hr_row(1, b64(NOT_AN_IMAGE)), hr_row(2)]
    return write_tsv(folder / "hr_bench_4k.tsv", HR_HEADER, rows)


def hr_duplicate_ids(folder: Path) -> Path:
    return write_tsv(folder / "hr_bench_4k.tsv", HR_HEADER, [hr_row(0), hr_row(1), hr_row(0)])


def mme_duplicate_ids(folder: Path) -> Path:
    path = fixtures.write_mme_json(folder)
    items = json.loads(path.read_text())
    items.append(dict(items[0]))
    path.write_text(json.dumps(items))
    return path


def vstar_duplicate_ids(folder: Path) -> Path:
    path = fixtures.write_vstar_jsonl(folder)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[0]]) + "\n")
    return path


def hr_stray_quote(folder: Path) -> Path:
    """Six rows written by hand; row 2's question opens a quote that never closes."""
    path = folder / "hr_bench_4k.tsv"
    rows = [hr_row(index) for index in range(6)]
    rows[2][1] = '"' + rows[2][1]
    lines = ["\t".join(HR_HEADER)] + ["\t".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def hr_nul_index(folder: Path) -> Path:
    return write_tsv(folder / "hr_bench_4k.tsv", HR_HEADER, [hr_row(0), ["1\0", *hr_row(1)[1:]]])


BAD_ROWS = [
    pytest.param(
        "hr-bench",
        hr_not_an_image,
        "1",
        "bad row: image cell does not decode to an image (unknown format)",
        id="hr-base64-not-an-image",
        marks=pytest.mark.reliability(
            "Datasets",
            "HR-Bench base64 image cell that is not an image",
            "row recorded: 'bad row: image cell does not decode to an image (unknown format)'; "
            "other rows run; exit 0",
        ),
    ),
    pytest.param(
        "hr-bench",
        hr_duplicate_ids,
        "0 @ line 4",
        "bad row: duplicate index '0' (line 4); the first one is kept",
        id="hr-duplicate-index",
        marks=pytest.mark.reliability(
            "Datasets",
            "HR-Bench duplicate index",
            "row recorded as '0 @ line 4': 'duplicate index '0' (line 4); the first one is "
            "kept'; the first row runs; exit 0",
        ),
    ),
    pytest.param(
        "mme-realworld",
        mme_duplicate_ids,
        "Perception/Autonomous_Driving/Objects_Identify/0000 @ item 5",
        "bad row: duplicate Question_id (item 5); the first is kept",
        id="mme-duplicate-question-id",
        marks=pytest.mark.reliability(
            "Datasets",
            "MME-RealWorld duplicate Question_id",
            "row recorded as '<id> @ item 5': 'duplicate Question_id (item 5); the first is "
            "kept'; exit 0",
        ),
    ),
    pytest.param(
        "vstar",
        vstar_duplicate_ids,
        "sa_1001 @ line 5",
        "bad row: duplicate image 'direct_attributes/sa_1001.jpg' (line 5)",
        id="vstar-duplicate-image",
        marks=pytest.mark.reliability(
            "Datasets",
            "V* duplicate question (same image twice)",
            "row recorded as 'sa_1001 @ line 5': 'duplicate image …'; exit 0",
        ),
    ),
    pytest.param(
        "hr-bench",
        hr_stray_quote,
        "2",
        'bad row: unbalanced quote: a cell opens with " and never closes; the lines after it '
        "are read as rows of their own",
        id="hr-stray-quote",
        marks=pytest.mark.reliability(
            "Datasets",
            "HR-Bench TSV cell that opens with a stray quote (hand-edited file)",
            "row recorded: 'bad row: unbalanced quote: …'; the rows after it run; exit 0",
        ),
    ),
    pytest.param(
        "hr-bench",
        hr_nul_index,
        "line 3",
        "bad row: index holds a NUL character",
        id="hr-nul-index",
        marks=pytest.mark.reliability(
            "Datasets",
            "HR-Bench index cell holding a NUL character",
            "row recorded as 'line 3': 'bad row: index holds a NUL character'; exit 0",
        ),
    ),
]


@pytest.mark.parametrize(("benchmark", "write", "bad_id", "error"), BAD_ROWS)
def test_a_bad_row_is_recorded_and_the_run_goes_on(
    benchmark: str,
    write: Any,
    bad_id: str,
    error: str,
    tmp_path: Path,
    scripted_model: RuleVisionModel,
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    out = tmp_path / "out"
    result = run_eval_cli(benchmark, write(folder), out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    found = {record["id"]: record for record in records(out)}
    assert found[bad_id]["status"] == "error" and found[bad_id]["error"] == error
    assert "\n" not in found[bad_id]["error"]
    assert any(record["status"] == "ok" for record in found.values())
    summary = json.loads((out / "summary.json").read_text())
    assert bad_id in summary["methods"]["zoom-refine"]["error_ids"]
    if "@" in bad_id:  # the first row with that id ran normally
        first = found[bad_id.split(" @ ")[0]]
        assert first["status"] == "ok" and first["answer"] is not None


# --- every data row is recorded exactly once -----------------------------------------------------


def hr_label_lookalikes(folder: Path) -> Path:
    """Six rows: 0, 1, a duplicate 1 (labelled '1 @ line 4'), then real ids spelling labels."""
    rows = [hr_row(0), hr_row(1), hr_row(1), hr_row(0), hr_row(0), hr_row(5)]
    rows[3][0], rows[4][0] = "1 @ line 4", "1 @ line 4"
    return write_tsv(folder / "hr_bench_4k.tsv", HR_HEADER, rows)


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            hr_stray_quote,
            id="stray-quote",
            marks=pytest.mark.reliability(
                "Datasets",
                "HR-Bench TSV of 6 rows, one with a stray quote",
                "6 records in predictions.jsonl, one per data row; exit 0",
            ),
        ),
        pytest.param(
            hr_label_lookalikes,
            id="label-lookalikes",
            marks=pytest.mark.reliability(
                "Datasets",
                "HR-Bench TSV whose real ids spell a duplicate's label ('1 @ line 4')",
                "6 records in predictions.jsonl, each under its own id; exit 0",
            ),
        ),
    ],
)
def test_every_data_row_is_recorded_once(
    write: Any, tmp_path: Path, scripted_model: RuleVisionModel
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    out = tmp_path / "out"
    result = run_eval_cli("hr-bench", write(folder), out)
    assert result.exit_code == 0, result.output
    ids = [record["id"] for record in records(out)]
    assert len(ids) == 6 and len(set(ids)) == 6, ids
