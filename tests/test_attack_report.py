"""`zoom-refine report` under attack (issue 21): runs that are no shards of one run (item 11),
images changed, replaced by a non-image or by a 40000×40000 header since the run (item 12), and
ids that carry a right-to-left override or run to 200 kB (item 14, the page's structure; the
browser's view of it is in test_attack_report_browser.py)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from PIL import Image
from test_report import Page
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.cli import app
from zoom_refine.evals.report import RunsDifferError, merge_runs, write_report
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.testing import RuleVisionModel

RLO = "\u202e"
"""RIGHT-TO-LEFT OVERRIDE: everything after it on its line is laid out right to left, unless it
is isolated."""


def hr_run(tmp_path: Path, name: str, **context: Any) -> Path:
    """An HR-Bench run of both methods with the scripted model (fixture data, 6 rows)."""
    data = tmp_path / "data" / "hr_bench_4k.tsv"
    if not data.exists():
        fixtures.write_hr_bench_tsv(data.parent)
    out = tmp_path / name
    shard = context.pop("shard", (0, 1))
    plan = EvalPlan(
        benchmark="hr-bench", data=data, out=out, methods=("baseline", "zoom-refine"), shard=shard
    )
    run_eval(plan, ZoomContext(model=RuleVisionModel(), **context))
    return out


def one_line_refusal(folders: list[Path]) -> str:
    result = CliRunner().invoke(app, ["report", *map(str, folders)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return " ".join(result.stderr.split())


# --- item 11: only shards of one run merge ------------------------------------------------------


@pytest.mark.reliability(
    "Report",
    "`report A B` over runs at --max-hops 1 and 2",
    "refused in one line naming the setting and each folder's value (exit 2); no report written",
)
def test_runs_with_another_result_changing_setting_are_refused_in_one_line(
    tmp_path: Path,
) -> None:
    first, second = hr_run(tmp_path, "A", max_hops=1), hr_run(tmp_path, "B", max_hops=2)
    with pytest.raises(RunsDifferError) as caught:
        write_report([first, second])
    message = str(caught.value)
    assert f"runs differ in max_hops: {first} has 1, {second} has 2; " in message
    assert "report them separately (shards of one run merge" in message
    assert not (first / "report.html").exists()
    assert f"max_hops: {first} has 1, {second} has 2" in one_line_refusal([first, second])


@pytest.mark.reliability(
    "Report",
    "`report A B` over runs of another model or another benchmark",
    "refused in one line naming model / benchmark and both values (exit 2)",
)
@pytest.mark.parametrize(
    ("key", "value"), [("model", "OTHER-MODEL"), ("benchmark", "vstar")], ids=["model", "bench"]
)
def test_runs_of_another_model_or_benchmark_are_refused(
    tmp_path: Path, key: str, value: str
) -> None:
    first, second = hr_run(tmp_path, "A"), hr_run(tmp_path, "B")
    config = json.loads((second / "config.json").read_text())
    before = config[key]
    config[key] = value
    (second / "config.json").write_text(json.dumps(config))
    refusal = one_line_refusal([first, second])
    assert f"runs differ in {key}: {first} has {json.dumps(before)}, " in refusal
    assert f"{second} has {json.dumps(value)}" in refusal


def test_shards_of_one_run_still_merge(tmp_path: Path) -> None:
    shards = [hr_run(tmp_path, f"shard{index}", shard=(index, 2)) for index in range(2)]
    config, records = merge_runs(shards)
    assert config["shard"] == "0/2"
    assert sorted({record["id"] for record in records}) == ["0", "1", "2", "3", "4", "5"]
    result = CliRunner().invoke(app, ["report", *map(str, shards)])
    assert result.exit_code == 0, result.output


# --- item 12: the picture is not the run's any more ---------------------------------------------


def outlines(page: Page, card: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in page.inside(card, "rect") if r["attrs"].get("fill") == "none"]


def card_of(page: Page, sample_id: str) -> dict[str, Any]:
    (card,) = page.find("article", **{"data-id": sample_id})
    return card


@pytest.mark.reliability(
    "Report",
    "a sample's image changed (other pixels) after the run",
    "its card shows the image as it is now with a note and no boxes; other cards unchanged",
)
def test_a_changed_image_gets_a_note_and_no_boxes(tmp_path: Path) -> None:
    run = hr_run(tmp_path, "run")
    data = Path(json.loads((run / "config.json").read_text())["data"])
    rows = fixtures._hr_rows(lambda colour: fixtures.b64(fixtures.jpeg_bytes(colour)))
    rows[2][-1] = fixtures.b64(fixtures.jpeg_bytes("green"))  # row 3 refers to row 2's image
    rows[4][-1] = fixtures.b64(fixtures.NOT_AN_IMAGE)
    fixtures.write_tsv(data, fixtures.HR_HEADER, rows)
    _, _, path = write_report([run])
    page = Page(path.read_text(encoding="utf-8"))
    for sample_id in ("2", "3"):
        card = card_of(page, sample_id)
        assert not outlines(page, card) and len(page.inside(card, "img")) == 1
        assert "the image changed since the run" in card["text"]
    for sample_id in ("0", "1", "5"):
        card = card_of(page, sample_id)
        assert outlines(page, card) and "changed since the run" not in card["text"]


def png_with_declared_size(width: int, height: int) -> bytes:
    """A real 8×8 PNG whose header declares `width`×`height` (a decompression bomb's header)."""
    image = Image.new("RGB", (8, 8), "red")
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.reliability(
    "Report",
    "at report time one image is a text file, one declares 40000×40000, one is now a link to "
    "another image",
    "exit 0, a report of every card: the two unreadable ones say why, the relinked one notes the "
    "change and draws no boxes",
)
def test_unreadable_or_relinked_images_cost_their_card_only(tmp_path: Path) -> None:
    data = fixtures.write_vstar_folder(tmp_path / "vstar")
    out = tmp_path / "run"
    plan = EvalPlan(benchmark="vstar", data=data, out=out, methods=("zoom-refine",))
    run_eval(plan, ZoomContext(model=RuleVisionModel()))
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for record in records:  # what the runner records for a path image (see the report)
        if record["status"] == "ok":
            record.setdefault("image_sha256", fixtures_sha256(Path(record["image"])))
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "direct_attributes" / "sa_1001.jpg").write_bytes(fixtures.NOT_AN_IMAGE)
    (data / "direct_attributes" / "sa_1002.jpg").write_bytes(png_with_declared_size(40000, 40000))
    relinked = data / "relative_position" / "sa_2001.jpg"
    other = data / "relative_position" / "other.jpg"  # inside the dataset: loaders follow it
    other.write_bytes(fixtures.jpeg_bytes("white", (48, 32)))
    relinked.unlink()
    relinked.symlink_to(other.name)

    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert len(page.find("article", **{"class": "sample"})) == len(records)
    for sample_id in ("sa_1001", "sa_1002"):
        card = card_of(page, sample_id)
        assert not page.inside(card, "img") and "the image cannot be shown" in card["text"]
    assert "not a readable image" in card_of(page, "sa_1001")["text"]
    assert "too large" in card_of(page, "sa_1002")["text"]
    card = card_of(page, "sa_2001")
    assert not outlines(page, card) and "the image changed since the run" in card["text"]


def fixtures_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- item 14: isolated, wrapped user strings ----------------------------------------------------


def hostile_ids_run(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A real run whose records are then given hostile ids: `rlo` (a right-to-left override in
    the middle) and `long` (200 kB without a space), both among the ids refinement fixed."""
    run = hr_run(tmp_path, "run")
    ids = {"3": f"sample{RLO}-evil", "5": "x" * 200_000}
    path = run / "predictions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record["id"] = ids.get(record["id"], record["id"])
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return run, ids


class TextStacks(Page):
    """The page, plus the open elements around every piece of text that holds an RLO."""

    def __init__(self, text: str) -> None:
        self.stacks: list[list[str]] = []
        super().__init__(text)

    def handle_data(self, data: str) -> None:
        if RLO in data:
            self.stacks.append([element["tag"] for element in self._open])
        super().handle_data(data)


def test_every_user_string_is_isolated_for_bidi(tmp_path: Path) -> None:
    run, ids = hostile_ids_run(tmp_path)
    _, _, path = write_report([run])
    page = TextStacks(path.read_text(encoding="utf-8"))
    assert len(page.stacks) >= 2  # the card's heading, the paired sentence's ids
    for stack in page.stacks:  # isolated, or a block / SVG text of its own
        assert stack[-1] in ("bdi", "pre", "title", "text"), stack
    card = card_of(page, ids["3"])
    (badge,) = [b for b in page.inside(card, "span") if b["attrs"].get("class") == "badge"]
    assert len(page.inside(badge, "bdi")) == 3  # method, first answer, answer: each isolated
