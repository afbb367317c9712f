"""Benchmark loaders: every layout, back-references, V* shuffling, malformed rows, bad files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from dataset_fixtures import (
    HR_HEADER,
    HR_QUESTION_0,
    MME_LITE_HEADER,
    NOT_AN_IMAGE,
    VSTAR_QUESTIONS,
    b64,
    dominant_color,
    jpeg_bytes,
    write_hr_bench_parquet,
    write_hr_bench_tsv,
    write_mme_json,
    write_mme_lite_tsv,
    write_mme_tsv,
    write_tsv,
    write_vstar_folder,
    write_vstar_jsonl,
)
from PIL import Image

from zoom_refine.evals import embedded_images, tsv
from zoom_refine.evals.loaders import dataset_fingerprint, detect_layout, load_samples
from zoom_refine.evals.samples import BadRow, Benchmark, Sample
from zoom_refine.tools.errors import InvalidInputError


def split(items: Any) -> tuple[list[Sample], list[BadRow]]:
    samples: list[Sample] = []
    bad: list[BadRow] = []
    for item in items:
        (samples if isinstance(item, Sample) else bad).append(item)
    return samples, bad


def by_id(samples: list[Sample]) -> dict[str, Sample]:
    return {sample.id: sample for sample in samples}


def color_of(image: str | bytes) -> str:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        opened.verify()  # a real, complete image
    return dominant_color(data)


def hr_row(index: int | str, image: str, answer: str = "A") -> list[Any]:
    return [index, f"Question {index}?", answer, "single", "w", "x", "y", "z", "cycle1", image]


# --- HR-Bench ------------------------------------------------------------------------------------


def test_hr_bench_tsv_yields_samples_and_resolves_back_references(tmp_path: Path) -> None:
    path = write_hr_bench_tsv(tmp_path)
    assert detect_layout("hr-bench", path) == "tsv"
    items = list(load_samples("hr-bench", path))
    samples, bad = split(items)

    assert [sample.id for sample in samples] == ["0", "1", "2", "3", "5"]
    found = by_id(samples)
    assert [found[i].answer for i in ("0", "1", "2", "3", "5")] == ["A", "D", "C", "B", "B"]
    assert found["0"].question == HR_QUESTION_0  # quoted cell with a tab, a quote and a newline
    assert found["1"].options == {"A": "blue", "B": "green", "C": "white", "D": "red"}
    assert found["2"].fields == {"category": "cross", "cycle_category": "cycle1"}
    colors = {sample.id: color_of(sample.image) for sample in samples}
    assert colors == {"0": "red", "1": "red", "2": "blue", "3": "blue", "5": "red"}
    assert found["1"].image == found["0"].image
    assert found["1"].source["image_ref"] == "0"
    assert "image" not in found["0"].source
    assert found["0"].source["cycle_category"] == "cycle1"

    assert bad == [BadRow("4", "image cell does not decode to an image (unknown format)")]


def test_hr_bench_back_reference_rereads_evicted_image_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_images, "_IMAGE_CACHE_BYTES", 0)  # keep only the latest image
    reads: list[Any] = []
    original = tsv.TsvRereader.__call__

    def counting(self: Any, location: tuple[int, int]) -> str:
        reads.append(location)
        return original(self, location)

    monkeypatch.setattr(tsv.TsvRereader, "__call__", counting)
    samples, _ = split(load_samples("hr-bench", write_hr_bench_tsv(tmp_path)))
    found = by_id(samples)
    assert color_of(found["5"].image) == "red"  # row 0 re-read past the blue image
    assert found["5"].image == jpeg_bytes("red")
    assert len(reads) == 1


def test_hr_bench_forward_reference_waits_for_its_image(tmp_path: Path) -> None:
    path = write_tsv(
        tmp_path / "hr.tsv",
        HR_HEADER,
        [hr_row(0, "1"), hr_row(1, b64(jpeg_bytes("green"))), hr_row(2, "1")],
    )
    samples, bad = split(load_samples("hr-bench", path))
    assert bad == []
    assert sorted(sample.id for sample in samples) == ["0", "1", "2"]
    assert {color_of(sample.image) for sample in samples} == {"green"}


def test_hr_bench_broken_references_are_bad_rows(tmp_path: Path) -> None:
    path = write_tsv(
        tmp_path / "hr.tsv",
        HR_HEADER,
        [
            hr_row(0, b64(NOT_AN_IMAGE)),
            hr_row(1, "0"),  # refers to an unreadable image
            hr_row(2, "99"),  # refers to an index that never comes
            hr_row(3, b64(jpeg_bytes("red"))),
            hr_row(4, "3"),
            hr_row(5, "4"),  # chained: 4 holds no image of its own
            hr_row(6, "6"),  # itself
        ],
    )
    samples, bad = split(load_samples("hr-bench", path))
    assert [sample.id for sample in samples] == ["3", "4"]
    reasons = {row.id: row.reason for row in bad}
    assert set(reasons) == {"0", "1", "2", "5", "6"}
    assert "does not decode to an image" in reasons["0"]
    assert "refers to index 0" in reasons["1"] and "unreadable" in reasons["1"]
    assert reasons["2"] == "image cell refers to index 99, which has no image in the file"
    assert "index 4" in reasons["5"] and "no image of its own" in reasons["5"]
    assert reasons["6"] == "image cell refers to its own index"


@pytest.mark.reliability(
    "Datasets",
    "HR-Bench rows: unknown letter, missing cells, duplicate id, bad base64, empty question",
    "one BadRow each with a one-line reason; the valid rows load",
)
def test_hr_bench_malformed_rows_do_not_stop_the_run(tmp_path: Path) -> None:
    red = b64(jpeg_bytes("red"))
    path = write_tsv(
        tmp_path / "hr.tsv",
        HR_HEADER,
        [
            hr_row(0, red),
            hr_row(1, red, answer="F"),  # unknown letter
            hr_row(2, red)[:5],  # missing cells
            hr_row(0, red),  # duplicate id
            hr_row(3, "!!" + "not base64 at all " * 10),
            [4, "", "A", "single", "w", "x", "y", "z", "cycle1", red],  # empty question
            hr_row(5, red),
        ],
    )
    samples, bad = split(load_samples("hr-bench", path))
    assert [sample.id for sample in samples] == ["0", "5"]
    reasons = {row.id: row.reason for row in bad}
    assert reasons["1"] == "answer 'F' is not one of the option letters A, B, C, D"
    assert reasons["2"] == "row has 5 fields, the header has 10 (missing or extra cells)"
    assert reasons["0 @ line 5"].startswith("duplicate index '0' (line 5)")  # its own id
    assert reasons["3"].startswith("image cell is not valid base64")
    assert reasons["4"] == "empty 'question' cell"
    assert len(bad) == 5


def test_hr_bench_parquet_text_images_with_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_images, "_IMAGE_CACHE_BYTES", 0)  # references re-read by row group
    path = write_hr_bench_parquet(tmp_path)
    assert detect_layout("hr-bench", path) == "parquet"
    samples, bad = split(load_samples("hr-bench", path))
    found = by_id(samples)
    assert list(found) == ["0", "1", "2", "3", "5"]
    assert {i: color_of(s.image) for i, s in found.items()} == {
        "0": "red",
        "1": "red",
        "2": "blue",
        "3": "blue",
        "5": "red",
    }
    assert [found[i].answer for i in found] == ["A", "D", "C", "B", "B"]
    assert found["0"].question == HR_QUESTION_0
    assert found["3"].fields == {"category": "cross", "cycle_category": "cycle2"}
    assert [row.id for row in bad] == ["4"]


def test_hr_bench_parquet_binary_images(tmp_path: Path) -> None:
    path = write_hr_bench_parquet(tmp_path, image_bytes=True)
    samples, bad = split(load_samples("hr-bench", path))
    assert [sample.id for sample in samples] == ["0", "1", "2", "3", "5"]
    assert color_of(by_id(samples)["2"].image) == "blue"
    assert bad == [BadRow("4", "image cell does not decode to an image (unknown format)")]


def test_hr_bench_folder_with_one_file(tmp_path: Path) -> None:
    write_hr_bench_tsv(tmp_path)
    assert detect_layout("hr-bench", tmp_path) == "tsv"
    write_hr_bench_tsv(tmp_path, name="hr_bench_8k.tsv")
    with pytest.raises(InvalidInputError, match=r"several .* files .*hr_bench_4k\.tsv"):
        detect_layout("hr-bench", tmp_path)


# --- wrong, empty and missing files --------------------------------------------------------------


@pytest.mark.reliability(
    "Datasets",
    "wrong file for the benchmark (JSON, Lite TSV, fake parquet, JPEG named .tsv)",
    "InvalidInputError with one line, raised before the first row",
)
def test_wrong_format_raises_one_clear_line_before_iteration(tmp_path: Path) -> None:
    mme_json = write_mme_json(tmp_path / "mme")
    with pytest.raises(InvalidInputError) as caught:
        load_samples("hr-bench", mme_json)  # raised at the call, not at the first next()
    assert "is JSON, not an HR-Bench file" in str(caught.value)
    assert "\n" not in str(caught.value)

    lite = write_mme_lite_tsv(tmp_path / "lite")
    with pytest.raises(
        InvalidInputError, match=r"not an HR-Bench TSV .*lacks A, B, cycle_category"
    ):
        load_samples("hr-bench", lite)

    fake_parquet = tmp_path / "broken.parquet"
    fake_parquet.write_bytes(b"PAR1 but not really")
    with pytest.raises(InvalidInputError, match="not a readable parquet file"):
        load_samples("hr-bench", fake_parquet)

    hr = write_hr_bench_tsv(tmp_path / "hr")
    with pytest.raises(InvalidInputError, match="not a VLMEvalKit MME-RealWorld TSV"):
        load_samples("mme-realworld", hr)
    with pytest.raises(InvalidInputError, match="not a V\\* Bench file"):
        load_samples("vstar", hr)

    jpeg = tmp_path / "photo.tsv"
    jpeg.write_bytes(jpeg_bytes("red"))
    with pytest.raises(InvalidInputError, match=r"photo\.tsv is not an HR-Bench TSV"):
        load_samples("hr-bench", jpeg)

    with pytest.raises(InvalidInputError, match="unknown benchmark 'mmbench'"):
        load_samples("mmbench", hr)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("benchmark", "name"),
    [
        ("hr-bench", "hr_bench_4k.tsv"),
        ("hr-bench", "hr_bench_4k.parquet"),
        ("mme-realworld", "MME_RealWorld.json"),
        ("mme-realworld", "MME-RealWorld.tsv"),
        ("vstar", "test_questions.jsonl"),
    ],
)
def test_empty_file_is_an_input_error(tmp_path: Path, benchmark: Benchmark, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"empty \(0 bytes\)"):
        load_samples(benchmark, path)


def test_header_only_and_missing_files(tmp_path: Path) -> None:
    header_only = write_tsv(tmp_path / "hr.tsv", HR_HEADER, [])
    with pytest.raises(InvalidInputError, match="has a header but no rows"):
        load_samples("hr-bench", header_only)
    with pytest.raises(InvalidInputError, match="dataset not found"):
        load_samples("vstar", tmp_path / "nowhere")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    with pytest.raises(InvalidInputError, match="no questions"):
        load_samples("vstar", blank)
    empty_list = tmp_path / "empty.json"
    empty_list.write_text("[]")
    with pytest.raises(InvalidInputError, match="empty list"):
        load_samples("mme-realworld", empty_list)


# --- MME-RealWorld -------------------------------------------------------------------------------


def test_mme_json_samples(tmp_path: Path) -> None:
    path = write_mme_json(tmp_path)
    assert detect_layout("mme-realworld", path) == "json"
    assert detect_layout("mme-realworld", tmp_path) == "json"  # folder with one annotation file
    samples, bad = split(load_samples("mme-realworld", tmp_path))
    found = by_id(samples)
    driving = found["Perception/Autonomous_Driving/Objects_Identify/0000"]
    assert driving.answer == "D"
    assert driving.options["D"] == "Many cars and one truck."
    assert list(driving.options) == ["A", "B", "C", "D", "E"]
    assert driving.fields == {
        "task": "Perception",
        "subtask": "Autonomous_Driving",
        "category": "Objects_Identify",
    }
    counting = found["perception/monitoring/Vehicle/counting/0310"]
    assert counting.answer == "E"
    assert counting.options["E"] == "The image does not feature the buses"
    attribute = found["perception/monitoring/person/attribute/color/0007"]
    assert attribute.fields["category"] == "person/attribute/color"
    assert isinstance(attribute.image, str)
    assert Path(attribute.image).is_relative_to(tmp_path.resolve())
    assert color_of(attribute.image) == "blue"
    assert color_of(driving.image) == "red"
    assert attribute.source["Ground truth"] == "B"
    assert bad == [
        BadRow(
            "reasoning/diagram_and_table/diagram/0020",
            "answer 'F' is not one of the option letters A, B, C, D, E",
        )
    ]


def write_mme_items(folder: Path, images: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "Question_id": f"q{number}",
            "Image": image,
            "Text": "Which?",
            "Answer choices": ["(A) x", "(B) y"],
            "Ground truth": "A",
        }
        for number, image in enumerate(images)
    ]
    path = folder / "MME_RealWorld.json"
    path.write_text(json.dumps(items))
    return path


@pytest.mark.reliability(
    "Security",
    "MME image paths: ../../etc/passwd, ../, absolute outside, symlink out",
    "BadRow 'points outside the dataset root' each; inside paths load",
)
def test_mme_image_paths_must_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "ok.jpg").write_bytes(jpeg_bytes("green"))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes("red"))
    (root / "imgs" / "link.jpg").symlink_to(secret)
    path = write_mme_items(
        root,
        [
            "imgs/ok.jpg",
            "../../etc/passwd",
            "imgs/../../secret.jpg",
            str(secret),  # absolute, outside
            str(root / "imgs" / "ok.jpg"),  # absolute, inside: fine
            "imgs/link.jpg",  # a symlink inside the root pointing outside
            "imgs/missing.jpg",
            "",
        ],
    )
    samples, bad = split(load_samples("mme-realworld", path))
    assert [sample.id for sample in samples] == ["q0", "q4"]
    reasons = {row.id: row.reason for row in bad}
    for key in ("q1", "q2", "q3", "q5"):
        assert "points outside the dataset root" in reasons[key], key
    assert reasons["q6"].startswith("image file not found: imgs/missing.jpg")
    assert reasons["q7"] == "empty image path"


def test_mme_json_malformed_items(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes("red"))
    items: list[Any] = [
        {
            "Question_id": "ok",
            "Image": "a.jpg",
            "Text": "Q?",
            "Answer choices": ["(A) x", "(B) y"],
            "Ground truth": "b",
        },
        {
            "Question_id": "no-truth",
            "Image": "a.jpg",
            "Text": "Q?",
            "Answer choices": ["(A) x", "(B) y"],
        },
        {
            "Question_id": "no-prefix",
            "Image": "a.jpg",
            "Text": "Q?",
            "Answer choices": ["x", "y"],
            "Ground truth": "A",
        },
        {
            "Question_id": "ok",
            "Image": "a.jpg",
            "Text": "Q?",
            "Answer choices": ["(A) x", "(B) y"],
            "Ground truth": "A",
        },
        "not an object",
    ]
    path = tmp_path / "MME_RealWorld.json"
    path.write_text(json.dumps(items))
    samples, bad = split(load_samples("mme-realworld", path))
    assert [(sample.id, sample.answer) for sample in samples] == [("ok", "B")]
    reasons = {row.id: row.reason for row in bad}
    assert reasons["no-truth"] == "missing field(s): Ground truth"
    assert reasons["no-prefix"] == "option 1 ('x') lacks an '(A) ' prefix"
    assert reasons["ok @ item 4"].startswith("duplicate Question_id")
    assert reasons["item 5"] == "not a JSON object"


def test_mme_json_wrong_files(tmp_path: Path) -> None:
    base64_json = tmp_path / "MME-RealWorld-Base64.json"
    base64_json.write_text(json.dumps([{"index": 0, "image": "AAAA", "multi-choice options": []}]))
    with pytest.raises(InvalidInputError, match="MME-RealWorld-Base64 JSON"):
        load_samples("mme-realworld", base64_json)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"questions": []}))
    with pytest.raises(InvalidInputError, match="not the MME-RealWorld annotation JSON"):
        load_samples("mme-realworld", other)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"Question_id": "x", ')
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_samples("mme-realworld", broken)
    with pytest.raises(InvalidInputError, match=r"several \.json / \.tsv files"):
        load_samples("mme-realworld", tmp_path)


def test_mme_tsv_samples(tmp_path: Path) -> None:
    path = write_mme_tsv(tmp_path)
    assert detect_layout("mme-realworld", path) == "tsv"
    samples, bad = split(load_samples("mme-realworld", path))
    found = by_id(samples)
    assert list(found) == ["0", "1", "2"]
    assert found["0"].answer == "E"
    assert found["0"].options["E"] == "The image does not feature the buses"
    assert found["0"].fields == {
        "task": "Perception",
        "subtask": "Monitoring",
        "category": "Vehicle/counting",
    }
    assert found["1"].fields["category"] == "person/attribute/color"
    assert found["1"].options == {
        "A": "Red",
        "B": "Blue",
        "C": "Black",
        "D": "White",
        "E": "No person",
    }
    assert color_of(found["1"].image) == "green"  # back-reference to row 0
    assert found["2"].fields["task"] == "Reasoning" and color_of(found["2"].image) == "red"
    assert bad == [BadRow("3", "row has 5 fields, the header has 12 (missing or extra cells)")]


@pytest.mark.reliability(
    "Security",
    "MME-Lite options cell holding code, not a list literal",
    "json / ast.literal_eval only: code never runs (no PWNED file); BadRow 'not a list literal'",
)
def test_mme_lite_parses_list_literals_and_never_runs_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_mme_lite_tsv(tmp_path)
    assert detect_layout("mme-realworld", path) == "tsv-lite"
    samples, bad = split(load_samples("mme-realworld", path))
    found = by_id(samples)
    assert found["10"].options == {
        "A": "red",
        "B": "blue",
        "C": "green",
        "D": "black",
        "E": "The image does not feature the umbrella",
    }
    assert found["10"].answer == "E"
    assert found["11"].options["C"] == "3" and found["11"].answer == "C"  # JSON-style list
    assert color_of(found["11"].image) == "yellow"
    assert bad == [BadRow("12", "options cell is not a list literal (ValueError)")]
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("__import__('os')", "options cell is neither a list literal nor '(A) …' lines"),
        ("[__import__('os').getcwd()]", "options cell is not a list literal (ValueError)"),
        ("[1, 2]", "options cell is not a list of strings"),
        ("['(A) x', '(A) y']", "option letter A appears twice"),
        ("[" * 50_001 + "]" * 50_001, "options list is 100,002 characters long"),
        ("[" * 30_000 + "]" * 30_000, "options cell is not a list literal"),
    ],
)
def test_mme_lite_rejects_bad_option_cells(tmp_path: Path, cell: str, reason: str) -> None:
    image = b64(jpeg_bytes("red"))
    row = [1, "Q?", cell, "A", "Perception/Monitoring", "x", image]
    path = write_tsv(tmp_path / "lite.tsv", MME_LITE_HEADER, [row])
    samples, bad = split(load_samples("mme-realworld", path))
    assert samples == []
    assert len(bad) == 1 and bad[0].id == "1"
    assert bad[0].reason.startswith(reason)


# --- V* Bench ------------------------------------------------------------------------------------


def expected_shuffle(sample_id: str, seed: int) -> list[int]:
    order = list(range(len(VSTAR_QUESTIONS[sample_id]["options"])))
    random.Random(f"{seed}:{sample_id}").shuffle(order)
    return order


def test_vstar_folder_shuffles_deterministically_and_remaps_the_answer(tmp_path: Path) -> None:
    root = write_vstar_folder(tmp_path)
    assert detect_layout("vstar", root) == "folder"
    samples, bad = split(load_samples("vstar", root))
    assert [sample.id for sample in samples] == ["sa_1001", "sa_1002", "sa_2001"]
    for sample in samples:
        spec = VSTAR_QUESTIONS[sample.id]
        assert sample.options[sample.answer] == spec["options"][0]  # correct = stored first
        order = expected_shuffle(sample.id, 0)
        assert list(sample.options.values()) == [spec["options"][i] for i in order]
        assert list(sample.options) == ["A", "B", "C", "D"][: len(order)]
        assert sample.question == spec["question"]
        assert sample.fields == {"category": spec["category"]}
        assert sample.source["shuffle_seed"] == 0
        assert sample.source["original_answer"] == "A"
        assert color_of(sample.image) == spec["color"]
    assert by_id(samples)["sa_1002"].answer == "D"  # moved away from A by the seed-0 shuffle
    assert bad == [
        BadRow(
            "sa_1003",
            "direct_attributes/sa_1003.json has no image beside it (image file not found)",
        )
    ]

    again, _ = split(load_samples("vstar", root))
    assert again == samples
    other_seeds = [split(load_samples("vstar", root, seed=seed))[0] for seed in range(1, 6)]
    assert any(
        by_id(run)["sa_1001"].options != by_id(samples)["sa_1001"].options for run in other_seeds
    )
    for run in other_seeds:
        for sample in run:
            assert sample.options[sample.answer] == VSTAR_QUESTIONS[sample.id]["options"][0]
    unshuffled, _ = split(load_samples("vstar", root, seed=None))
    assert all(sample.answer == "A" for sample in unshuffled)
    assert unshuffled[0].source["shuffle_seed"] is None


def test_vstar_jsonl_matches_the_folder_layout(tmp_path: Path) -> None:
    path = write_vstar_jsonl(tmp_path / "jsonl")
    assert detect_layout("vstar", path) == "jsonl"
    assert detect_layout("vstar", path.parent) == "jsonl"  # no category folders with JSONs
    samples, bad = split(load_samples("vstar", path))
    folder_samples, _ = split(load_samples("vstar", write_vstar_folder(tmp_path / "folder")))
    assert [s.id for s in samples] == [s.id for s in folder_samples]
    for sample, twin in zip(samples, folder_samples, strict=True):
        assert (sample.question, sample.options, sample.answer, sample.fields) == (
            twin.question,
            twin.options,
            twin.answer,
            twin.fields,
        )
        assert "Answer with" not in sample.question
        assert sample.source["question_id"] == list(VSTAR_QUESTIONS).index(sample.id)
    assert len(bad) == 1 and bad[0].id == "passwd"
    assert "points outside the dataset root" in bad[0].reason


def test_vstar_jsonl_label_and_list_variants(tmp_path: Path) -> None:
    write_vstar_jsonl(tmp_path)
    lines = [
        {  # label B: the correct option is the second one in the text
            "image": "direct_attributes/sa_1001.jpg",
            "text": "What is on the table? (A) a cup (B) a plate (C) a fork",
            "label": "B",
        },
        {  # list of choices, correct first, category from the path
            "image": "relative_position/sa_2001.jpg",
            "question": "Left or right?",
            "choices": ["right", "left"],
        },
        {"image": "direct_attributes/sa_1002.jpg", "text": "No options here"},
        "not json {",
    ]
    path = tmp_path / "custom.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    samples, bad = split(load_samples("vstar", path, seed=3))
    found = by_id(samples)
    assert found["sa_1001"].question == "What is on the table?"
    assert found["sa_1001"].options[found["sa_1001"].answer] == "a plate"
    assert found["sa_1001"].source["original_answer"] == "B"
    assert found["sa_2001"].options[found["sa_2001"].answer] == "right"
    assert found["sa_2001"].fields == {"category": "relative_position"}
    reasons = {row.id: row.reason for row in bad}
    assert reasons["sa_1002"] == "text holds fewer than two '(A) …' options"
    assert reasons["line 4"].startswith("not valid JSON")


def test_vstar_category_folder_and_both_layouts(tmp_path: Path) -> None:
    root = write_vstar_folder(tmp_path)
    write_vstar_jsonl(tmp_path)  # the real repository ships both side by side
    assert detect_layout("vstar", root) == "folder"
    samples, _ = split(load_samples("vstar", root / "relative_position"))
    assert [sample.id for sample in samples] == ["sa_2001"]
    with pytest.raises(InvalidInputError, match="not a V\\* Bench folder"):
        load_samples("vstar", _empty_dir(tmp_path / "nothing"))


def _empty_dir(path: Path) -> Path:
    path.mkdir()
    return path


def test_vstar_symlinked_image_outside_root_is_refused(tmp_path: Path) -> None:
    root = write_vstar_folder(tmp_path / "vstar")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg_bytes("white"))
    target = root / "direct_attributes" / "sa_1002.jpg"
    target.unlink()
    os.symlink(outside, target)
    samples, bad = split(load_samples("vstar", root))
    assert "sa_1002" not in by_id(samples)
    assert any(row.id == "sa_1002" and "outside the dataset root" in row.reason for row in bad)


# --- fingerprints --------------------------------------------------------------------------------


def test_dataset_fingerprint(tmp_path: Path) -> None:
    path = write_hr_bench_tsv(tmp_path / "hr")
    assert dataset_fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()

    root = write_vstar_folder(tmp_path / "vstar")
    first = dataset_fingerprint(root)
    assert first == dataset_fingerprint(root) and len(first) == 64
    (root / "direct_attributes" / "sa_1001.jpg").write_bytes(jpeg_bytes("white"))
    assert dataset_fingerprint(root) == first  # images are not part of it
    annotation = root / "direct_attributes" / "sa_1001.json"
    annotation.write_text(annotation.read_text().replace("cup", "mug"))
    assert dataset_fingerprint(root) != first
    with pytest.raises(InvalidInputError, match="dataset not found"):
        dataset_fingerprint(tmp_path / "missing")


# --- parity with pandas (VLMEvalKit writes and reads its TSVs with pandas) ------------------------


def noise_jpeg(seed: int, side: int = 160) -> bytes:
    """A JPEG whose base64 is longer than the loader's bulky-cell threshold (4 KiB)."""
    rng = random.Random(seed)
    image = Image.frombytes(
        "RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


TRICKY_TEXTS = [
    'He said "stop"\tthen left',
    "line one\nline two\r\nline three",
    '"quoted at both ends"',
    "  leading and trailing spaces  ",
    "ünïcödé 中文 — “curly”",
    "plain",
    'ends with a quote"',
]


@pytest.mark.parametrize("image_first", [False, True])
def test_tsv_cells_match_pandas(tmp_path: Path, image_first: bool) -> None:
    pandas = pytest.importorskip("pandas")
    images = [noise_jpeg(seed) for seed in range(3)]
    assert all(len(b64(image)) > 4096 for image in images)
    records = []
    for index, text in enumerate(TRICKY_TEXTS):
        cell = b64(images[index % 3]) if index < 3 else str(index % 3)
        records.append(
            {
                "index": index,
                "image": cell,
                "question": f"{text} #{index}",
                "answer": "B",
                "category": "single",
                "A": TRICKY_TEXTS[(index + 1) % len(TRICKY_TEXTS)],
                "B": f"option {index}",
                "C": "x",
                "D": "y",
                "cycle_category": "cycle1",
            }
        )
    frame = pandas.DataFrame.from_records(records)
    if not image_first:
        frame = frame[[name for name in frame.columns if name != "image"] + ["image"]]
    path = tmp_path / "hr_bench_4k.tsv"
    frame.to_csv(path, sep="\t", index=False)

    samples, bad = split(load_samples("hr-bench", path))
    assert bad == []
    expected = pandas.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    assert [sample.id for sample in samples] == list(expected["index"])
    for sample, (_, row) in zip(samples, expected.iterrows(), strict=True):
        assert sample.question == row["question"].strip()
        assert sample.options == {letter: row[letter].strip() for letter in "ABCD"}
        assert sample.image == images[int(sample.id) % 3]


# --- hostile text: stray quotes, colliding ids, encodings, NUL characters ------------------------


def hr_line(index: Any, question: str, image: str) -> str:
    """One HR-Bench TSV data line as a person might type it: cells joined by tabs, no quoting."""
    return "\t".join([str(index), question, "A", "single", "w", "x", "y", "z", "c1", image]) + "\n"


def write_hr_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_text("\t".join(HR_HEADER) + "\n" + "".join(lines), encoding=encoding)
    return path


def all_ids(items: list[Sample | BadRow]) -> list[str]:
    return [item.id for item in items]


@pytest.mark.reliability(
    "Datasets",
    "TSV cell that opens with a stray quote and never closes (rows after it would be joined "
    "into that cell)",
    "that row is a BadRow 'unbalanced quote: …'; every later row still loads (samples + bad rows "
    "= data lines)",
)
@pytest.mark.parametrize(
    ("stray", "quoted"),
    [(2, None), (2, 4), (2, 3), (5, None), (0, 1)],
    ids=["rest-unquoted", "quoted-cell-later", "quoted-cell-next", "last-row", "first-row"],
)
def test_tsv_stray_quote_loses_no_rows(tmp_path: Path, stray: int, quoted: int | None) -> None:
    lines = []
    for index in range(6):
        question = f"Question {index}?"
        if index == stray:
            question = '"' + question  # opens a quoted cell that nothing closes
        elif index == quoted:
            question = '"He said ""stop"" twice"'  # a legitimate quoted cell, as pandas writes it
        image = b64(noise_jpeg(index)) if index % 2 else b64(jpeg_bytes("red"))  # bulky and small
        lines.append(hr_line(index, question, image))
    items = list(load_samples("hr-bench", write_hr_lines(tmp_path / "hr.tsv", lines)))
    samples, bad = split(items)
    assert sorted(all_ids(items)) == ["0", "1", "2", "3", "4", "5"]  # one item per data line
    assert [row.id for row in bad] == [str(stray)]
    assert bad[0].reason.startswith('unbalanced quote: a cell opens with " and never closes')
    if quoted is not None:
        assert by_id(samples)[str(quoted)].question == 'He said "stop" twice'
    for sample in samples:
        assert sample.image == (
            noise_jpeg(int(sample.id)) if int(sample.id) % 2 else jpeg_bytes("red")
        )


@pytest.mark.reliability(
    "Datasets",
    "TSV cell that starts with a quote it does not close before a tab (a stray quote ahead of a "
    "quoted multi-line cell, or '\"abc\"def')",
    "that row is one BadRow 'stray quote: …', its lines with it; the other rows load",
)
def test_tsv_stray_quote_before_a_quoted_cell(tmp_path: Path) -> None:
    path = write_mme_tsv(tmp_path)  # row 1's options cell is quoted over six lines
    path.write_text(path.read_text().replace("Question 1?", '"Question 1?'))
    items = list(load_samples("mme-realworld", path))
    assert all_ids(items) == ["0", "1", "2", "3"]
    assert [row.id for row in split(items)[1]] == ["1", "3"]
    assert split(items)[1][0].reason.startswith('stray quote: a cell starts with " but its')
    red = b64(jpeg_bytes("red"))
    lines = [hr_line(0, '"abc"def', red), hr_line(1, "Question?", red)]
    items = list(load_samples("hr-bench", write_hr_lines(tmp_path / "hr.tsv", lines)))
    assert [type(item).__name__ for item in items] == ["BadRow", "Sample"]
    assert items[0].id == "0" and items[0].reason.startswith("stray quote")


@pytest.mark.reliability(
    "Datasets",
    "TSV cells quoted as pandas writes them, holding tabs, quotes and line breaks",
    "read as pandas reads them: no row is taken for an unbalanced quote",
)
def test_tsv_quoted_cells_over_several_lines_still_load(tmp_path: Path) -> None:
    red = b64(jpeg_bytes("red"))
    rows = [hr_row(0, red), hr_row(1, red), hr_row(2, red)]
    rows[0][1] = 'First line\n"second" line\n\nfourth line'
    rows[1][4] = "one\ttwo\nthree"  # option A: a tab and a line break
    items = list(load_samples("hr-bench", write_tsv(tmp_path / "hr.tsv", HR_HEADER, rows)))
    samples, bad = split(items)
    assert bad == [] and all_ids(items) == ["0", "1", "2"]
    assert samples[0].question == 'First line\n"second" line\n\nfourth line'
    assert samples[1].options["A"] == "one\ttwo\nthree"


@pytest.mark.reliability(
    "Datasets",
    "a real id that spells the label of a duplicate or id-less row ('2 @ line 3', 'line 4')",
    "every data row becomes exactly one Sample or BadRow, each with an id of its own",
)
def test_tsv_labels_never_collide_with_real_ids(tmp_path: Path) -> None:
    red = b64(jpeg_bytes("red"))
    rows = [
        hr_row(2, red),  # line 2
        hr_row(2, red),  # line 3: duplicate → labelled
        hr_row("2 @ line 3", red),  # line 4: spells that label
        ["", "No index?", "A", "single", "w", "x", "y", "z", "c1", red],  # line 5: no index
        hr_row("line 5", red),  # line 6: spells that label
        hr_row("2 @ line 3", red),  # line 7: a duplicate of line 4
    ]
    items = list(load_samples("hr-bench", write_tsv(tmp_path / "hr.tsv", HR_HEADER, rows)))
    ids = all_ids(items)
    assert len(ids) == 6 and len(set(ids)) == 6, ids
    samples, bad = split(items)
    assert [sample.id for sample in samples] == ["2"]
    reasons = {row.id: row.reason for row in bad}
    assert reasons["2 @ line 3"] == "duplicate index '2' (line 3); the first one is kept"
    assert reasons["line 5"] == "row has no index"
    assert "already the label of the bad row at line 3" in reasons["2 @ line 3 @ line 4"]
    assert "already the label of the bad row at line 5" in reasons["line 5 @ line 6"]


@pytest.mark.reliability(
    "Datasets",
    "MME JSON / V* JSONL ids that spell the label of a duplicate or unreadable item",
    "every item becomes exactly one Sample or BadRow, each with an id of its own",
)
def test_mme_json_and_vstar_labels_never_collide(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes("red"))
    item = {"Image": "a.jpg", "Text": "Q?", "Answer choices": ["(A) x", "(B) y"]}
    items = [
        {**item, "Question_id": "q", "Ground truth": "A"},
        {**item, "Question_id": "q", "Ground truth": "A"},  # item 2: labelled 'q @ item 2'
        {**item, "Question_id": "q @ item 2", "Ground truth": "A"},
        "not an object",  # item 4: labelled 'item 4'
        {**item, "Question_id": "item 4", "Ground truth": "A"},
    ]
    path = tmp_path / "MME_RealWorld.json"
    path.write_text(json.dumps(items))
    ids = all_ids(list(load_samples("mme-realworld", path)))
    assert len(ids) == 5 and len(set(ids)) == 5, ids

    jsonl = write_vstar_jsonl(tmp_path / "vstar")
    lines = jsonl.read_text().splitlines()
    lines += [lines[0], "not json {"]  # line 5: 'sa_1001 @ line 5'; line 6: 'line 6'
    lines += [
        json.dumps({"image": f"direct_attributes/{stem}.jpg"})
        for stem in ("line 6", "sa_1001 @ line 5")
    ]
    jsonl.write_text("\n".join(lines) + "\n")
    ids = all_ids(list(load_samples("vstar", jsonl)))
    assert len(ids) == 8 and len(set(ids)) == 8, ids


def encoding_case(benchmark: str, encoding: str, message: str, case: str, outcome: str) -> Any:
    return pytest.param(
        benchmark,
        encoding,
        message,
        id=f"{benchmark}-{encoding}",
        marks=pytest.mark.reliability("Datasets", case, outcome),
    )


@pytest.mark.parametrize(
    ("benchmark", "encoding", "message"),
    [
        encoding_case(
            "hr-bench",
            "latin-1",
            r"hr\.tsv is not UTF-8 \(byte 0xE9 at line 3\); save it as UTF-8",
            "HR-Bench TSV in Latin-1 ('Café' written as byte 0xE9)",
            "InvalidInputError, one line: '… is not UTF-8 (byte 0xE9 at line 3); save it as "
            "UTF-8'; never 'Caf\ufffd'",
        ),
        encoding_case(
            "hr-bench",
            "utf-16",
            r"hr\.tsv is UTF-16 text \(it starts with a UTF-16 byte-order mark\); save it as UTF-8",
            "HR-Bench TSV in UTF-16 with a byte-order mark",
            "InvalidInputError, one line: '… is UTF-16 text (…); save it as UTF-8'",
        ),
        encoding_case(
            "hr-bench",
            "utf-16-le",
            r"hr\.tsv looks like UTF-16 text \(every other byte is NUL\); save it as UTF-8",
            "HR-Bench TSV in UTF-16 without a byte-order mark",
            "InvalidInputError, one line: '… looks like UTF-16 text (…); save it as UTF-8'",
        ),
        encoding_case(
            "mme-realworld",
            "latin-1",
            r"is not UTF-8 \(byte 0xE9 at line 8\); save it as UTF-8",
            "MME-RealWorld TSV in Latin-1",
            "InvalidInputError, one line naming the byte and its line",
        ),
        encoding_case(
            "mme-realworld",
            "utf-16",
            r"is UTF-16 text .*; save it as UTF-8",
            "MME-RealWorld TSV in UTF-16",
            "InvalidInputError, one line: '… is UTF-16 text (…); save it as UTF-8'",
        ),
    ],
)
def test_tsv_not_in_utf8_is_refused_in_one_line(
    tmp_path: Path, benchmark: Benchmark, encoding: str, message: str
) -> None:
    red = b64(jpeg_bytes("red"))
    if benchmark == "hr-bench":
        lines = [hr_line(0, "Question?", red), hr_line(1, "Café crème?", red)]
        path = write_hr_lines(tmp_path / "hr.tsv", lines, encoding)
    else:
        path = write_mme_tsv(tmp_path)
        text = path.read_text(encoding="utf-8").replace("Question 1?", "Café crème?")
        path.write_text(text, encoding=encoding)
    with pytest.raises(InvalidInputError, match=message) as caught:
        load_samples(benchmark, path)
    assert "\n" not in str(caught.value) and "\ufffd" not in str(caught.value)


@pytest.mark.reliability(
    "Datasets",
    "MME-RealWorld JSON or V* JSONL in Latin-1 or UTF-16",
    "InvalidInputError, one line: '… is not UTF-8 (byte 0xE9 at line 6)' / '… is UTF-16 text'",
)
@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_mme_json_and_vstar_jsonl_not_in_utf8(tmp_path: Path, encoding: str) -> None:
    mme = write_mme_json(tmp_path / "mme")
    mme.write_text(mme.read_text().replace("ego car", "égo car"), encoding=encoding)
    expected = "is not UTF-8 \\(byte 0xE9 at line 6\\)" if encoding == "latin-1" else "is UTF-16"
    with pytest.raises(InvalidInputError, match=expected):
        list(load_samples("mme-realworld", mme))
    jsonl = write_vstar_jsonl(tmp_path / "vstar")
    jsonl.write_text(jsonl.read_text().replace("cup", "tasse à café"), encoding=encoding)
    expected = "is not UTF-8 \\(byte 0xE0 at line 1\\)" if encoding == "latin-1" else "is UTF-16"
    with pytest.raises(InvalidInputError, match=expected):
        list(load_samples("vstar", jsonl))


@pytest.mark.reliability(
    "Datasets",
    "HR-Bench TSV and V* JSONL saved as UTF-8 with a byte-order mark",
    "read as UTF-8: the mark is dropped, every row loads",
)
def test_utf8_with_a_bom_loads(tmp_path: Path) -> None:
    path = write_hr_bench_tsv(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    samples, _ = split(load_samples("hr-bench", path))
    assert [sample.id for sample in samples] == ["0", "1", "2", "3", "5"]
    jsonl = write_vstar_jsonl(tmp_path / "vstar")
    jsonl.write_bytes(b"\xef\xbb\xbf" + jsonl.read_bytes())
    assert len(split(load_samples("vstar", jsonl))[0]) == 3


@pytest.mark.reliability(
    "Datasets",
    "a row with bytes that are not UTF-8 past the first 64 KiB (TSV, JSONL)",
    "that row is a BadRow 'not UTF-8 (byte 0xE9 at line 6); save the file as UTF-8'; the "
    "others load",
)
def test_invalid_utf8_past_the_first_block_is_a_bad_row(tmp_path: Path) -> None:
    lines = [hr_line(index, f"Question {index}?", b64(noise_jpeg(index))) for index in range(4)]
    lines.append(hr_line(4, "Caf\udce9 cr\udce8me?", b64(jpeg_bytes("red"))))
    lines.append(hr_line(5, "Question 5?", b64(jpeg_bytes("red"))))
    path = tmp_path / "hr.tsv"
    path.write_bytes(
        ("\t".join(HR_HEADER) + "\n" + "".join(lines)).encode("utf-8", "surrogateescape")
    )
    assert path.read_bytes().index(b"\xe9") > 65536  # past the first block
    items = list(load_samples("hr-bench", path))
    assert all_ids(items) == ["0", "1", "2", "3", "4", "5"]
    assert split(items)[1] == [
        BadRow("4", "not UTF-8 (byte 0xE9 at line 6); save the file as UTF-8")
    ]
    jsonl = write_vstar_jsonl(tmp_path / "vstar")
    padding = json.dumps({"image": "direct_attributes/sa_1001.jpg", "pad": "x" * 70_000})
    text = jsonl.read_text() + padding + "\n" + '{"image": "direct_attributes/caf\udce9.jpg"}\n'
    jsonl.write_bytes(text.encode("utf-8", "surrogateescape"))
    bad = split(load_samples("vstar", jsonl))[1]
    assert BadRow("line 6", "not UTF-8 (byte 0xE9 at line 6); save the file as UTF-8") in bad


@pytest.mark.reliability(
    "Datasets",
    "NUL characters in ids or question text (TSV, parquet, MME JSON, V* JSONL)",
    "refused: the row is a BadRow ('index holds a NUL character', under 'line N' / 'item N'; "
    "'question holds a NUL character' under its id)",
)
def test_nul_characters_are_refused(tmp_path: Path) -> None:
    red = b64(jpeg_bytes("red"))
    lines = [
        hr_line(0, "Question?", red),
        hr_line("1\0", "Question?", red),  # line 3
        hr_line(2, "Ques\0tion?", red),
        hr_line(3, "Question?", red),
    ]
    items = list(load_samples("hr-bench", write_hr_lines(tmp_path / "hr.tsv", lines)))
    assert [item.id for item in items if isinstance(item, Sample)] == ["0", "3"]
    assert split(items)[1] == [
        BadRow("line 3", "index holds a NUL character"),
        BadRow("2", "question holds a NUL character"),
    ]
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    rows = [hr_row(0, red), hr_row("1\0", red), hr_row(2, red)]
    rows[2][1] = "Ques\0tion?"
    columns = {name: [str(row[i]) for row in rows] for i, name in enumerate(HR_HEADER)}
    pq.write_table(pa.table(columns), tmp_path / "hr.parquet")
    assert split(load_samples("hr-bench", tmp_path / "hr.parquet"))[1] == [
        BadRow("row 2", "index holds a NUL character"),
        BadRow("2", "question holds a NUL character"),
    ]
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes("red"))
    item = {"Image": "a.jpg", "Text": "Q?", "Answer choices": ["(A) x", "(B) y"]}
    mme = tmp_path / "MME_RealWorld.json"
    mme.write_text(
        json.dumps(
            [
                {**item, "Question_id": "q\0", "Ground truth": "A"},
                {
                    **item,
                    "Question_id": "q1",
                    "Answer choices": ["(A) x\0", "(B) y"],
                    "Ground truth": "A",
                },
            ]
        )
    )
    mme_bad = split(load_samples("mme-realworld", mme))[1]
    assert mme_bad == [
        BadRow("item 1", "Question_id holds a NUL character"),
        BadRow("q1", "option A holds a NUL character"),
    ]
    jsonl = write_vstar_jsonl(tmp_path / "vstar")
    record = {"image": "direct_attributes/sa_1\u0000.jpg", "text": "Q?\n(A) x\n(B) y"}
    jsonl.write_text(jsonl.read_text() + json.dumps(record) + "\n")
    vstar_bad = split(load_samples("vstar", jsonl))[1]
    assert BadRow("line 5", "image path contains a NUL character") in vstar_bad


# Cells whose line after a break has the tabs of a whole row (issue 20): in the question column
# one tab does it, in option A four; doubled quotes and further breaks around them.
NEWLINE_TAB_CELLS = [
    ("question", "line one\nline two?tab\there"),
    ("question", 'He said ""no""\nthen?\t"quoted" "" end'),
    ("question", "a\n\tb\n\tc"),
    ("A", "first\nw\tx\ty\tz\tc1"),
    ("A", '"\nq""\t1\t2\t3\t4'),
    ("B", "one\ttwo\nthree\tfour\tfive"),
]


@pytest.mark.reliability(
    "Datasets",
    "a quoted TSV cell holding a line break then a tab, so that its second line looks like a "
    "whole row by itself (newlines, tabs and doubled quotes inside cells)",
    "read as pandas reads it: one cell, no refused row and no invented sample",
)
def test_tsv_cell_with_a_line_break_then_a_tab_reads_as_pandas(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    red = b64(jpeg_bytes("red"))
    records = []
    for index in range(len(NEWLINE_TAB_CELLS) + 2):  # plain rows around the tricky ones
        row = dict(zip(HR_HEADER, hr_row(index, red), strict=True))
        if 0 < index <= len(NEWLINE_TAB_CELLS):
            column, text = NEWLINE_TAB_CELLS[index - 1]
            row[column] = text.replace('""', '"')  # pandas doubles each quote when writing
        records.append(row)
    path = tmp_path / "hr_bench_4k.tsv"
    pandas.DataFrame.from_records(records).to_csv(path, sep="\t", index=False)
    lines = path.read_text().splitlines()
    assert 'line two?tab\there"\t' in "\n".join(lines)  # the line is in the file
    samples, bad = split(load_samples("hr-bench", path))
    expected = pandas.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    assert bad == [] and [s.id for s in samples] == list(expected["index"])
    for sample, (_, row) in zip(samples, expected.iterrows(), strict=True):
        assert sample.question == row["question"].strip()
        assert sample.options == {letter: row[letter].strip() for letter in "ABCD"}
    assert samples[1].question == "line one\nline two?tab\there"
