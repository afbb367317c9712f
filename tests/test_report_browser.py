"""`report.html` as a reader sees it: a real `zoom-refine eval` with the protocol-trained tiny
InternVL3 (real local backend), `zoom-refine report`, then the page opened in headless Chromium
(Debian's `chromium`, driven by playwright) started with no network at all
(`browser.offline_page`: a dead proxy, no background requests, a fresh profile).

Checked on screenshots and the live page: the summary table sits in the first viewport; each
sample's thumbnail shows its zoom box where the trace (predictions.jsonl) puts it, read back as
pixel colours at the box's edges; the "changed by refinement" checkbox hides the other samples;
nothing is requested but the page itself (Playwright's request events); no Python repr is on
the page.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from browser import NO_CHROMIUM, VIEWPORT, OfflinePage, chromium_executable, offline_page
from PIL import Image
from typer.testing import CliRunner

from zoom_refine.cli import app
from zoom_refine.testing.tiny_models import LOCALIZE_BOX, PROTOCOL_ANSWER, PROTOCOL_INITIAL_ANSWER
from zoom_refine.tools.overlay import box_colour

pytestmark = pytest.mark.slow

IMAGE_SIZE = (1200, 800)
"""Fixture images (original pixels): the 360-px thumbnail shows a ~130-px zoom box."""
REPR_MARKERS = ("['", '["', "{'", "None", "True", "False", "dict_", "<object")
COLOUR_TOLERANCE = 40
"""Largest per-channel difference from the box colour that still counts as the box (the
screenshot is lossless; this absorbs colour management only)."""
INSIDE_PX = 10
"""How far inside (or outside) an edge, in screen pixels, a pixel must no longer be the box."""


# Skipped before any fixture runs (training the tiny model takes a while).
CHROMIUM = chromium_executable()
if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is needed: pip install playwright"
)


def grey_photo_tsv(folder: Path) -> Path:
    """HR-Bench TSV: three 1200×800 grey photo-like images (no colour can pass for a box
    outline) and one malformed row (text, not an image) that both methods record as an error,
    so refinement changes its answer on ids 0-2 and not on 3."""
    rows: list[list[Any]] = []
    for index in range(3):
        grey = fixtures.photo_like(IMAGE_SIZE, seed=index).convert("L").convert("RGB")
        buffer = io.BytesIO()
        grey.save(buffer, format="JPEG", quality=90)
        answer, category = ("A", "single") if index < 2 else ("B", "cross")
        cycle = f"cycle{index % 2 + 1}"
        cell = fixtures.b64(buffer.getvalue())
        rows.append(
            [index, f"What colour is sign {index}?", answer, category, "red", "blue", "green",
             "white", cycle, cell]
        )  # fmt: skip
    bad = fixtures.b64(fixtures.NOT_AN_IMAGE)
    rows.append([3, "Which shop?", "A", "cross", "a", "b", "c", "d", "cycle2", bad])
    return fixtures.write_tsv(folder / "hr_bench_grey.tsv", fixtures.HR_HEADER, rows)


@dataclass
class Opened:
    page: Any
    """The playwright page showing report.html (scrolled to the top)."""
    records: dict[tuple[str, str], dict[str, Any]]
    """predictions.jsonl by (id, method): the trace the page must agree with."""
    summary: dict[str, Any]
    shots: Path
    browser: OfflinePage
    """The offline browser's page and everything it requested (`browser.offline_page`)."""
    own: str
    """report.html's own URL."""

    @property
    def requests(self) -> list[str]:
        """Requests other than the page itself and `data:` URLs, so far."""
        return self.browser.fetched_elsewhere(self.own)

    @property
    def errors(self) -> list[str]:
        """Uncaught script errors, so far."""
        return self.browser.errors


@pytest.fixture(scope="module")
def opened(
    tmp_path_factory: pytest.TempPathFactory, trained_internvl_path: Path
) -> Iterator[Opened]:
    root = tmp_path_factory.mktemp("report-browser")
    data, out = grey_photo_tsv(root / "data"), root / "run"
    runner = CliRunner()
    model = f"hf:{trained_internvl_path}"
    args = ["eval", "hr-bench", "--data", str(data), "--model", model, "--method", "both"]
    result = runner.invoke(app, [*args, "--out", str(out), "--max-patches", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    lines = (out / "predictions.jsonl").read_text().splitlines()
    records = {(r["id"], r["method"]): r for r in map(json.loads, lines)}
    summary = json.loads((out / "summary.json").read_text())
    shots = root / "screenshots"
    shots.mkdir()
    assert CHROMIUM is not None
    with offline_page(sync_api, CHROMIUM, VIEWPORT) as shown:
        own = (out / "report.html").as_uri()
        shown.page.goto(own)
        shown.page.wait_for_load_state("load")
        yield Opened(shown.page, records, summary, shots, shown, own)


def save_screenshot(opened: Opened, name: str, **options: Any) -> Image.Image:
    path = opened.shots / name
    opened.page.screenshot(path=str(path), **options)
    image = Image.open(path)
    image.load()
    print(f"screenshot {name}: {image.width}×{image.height} px, {path.stat().st_size} bytes")
    return image.convert("RGB")


def is_colour(pixel: tuple[int, ...], hex_colour: str) -> bool:
    wanted = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= COLOUR_TOLERANCE for a, b in zip(pixel, wanted, strict=False))


def test_the_summary_table_is_visible_at_the_top(opened: Opened) -> None:
    page = opened.page
    top = save_screenshot(opened, "first-viewport.png")
    assert top.size == (VIEWPORT["width"], VIEWPORT["height"])
    table = page.locator("#summary-table")
    assert table.is_visible()
    box = table.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"]
    # Its cells are the run's numbers (summary.json), as percentages with counts.
    overall = table.locator("tr.overall td")
    texts = [overall.nth(i).inner_text() for i in range(overall.count())]
    zoom = opened.summary["methods"]["zoom-refine"]["groups"]["overall"]
    base = opened.summary["methods"]["baseline"]["groups"]["overall"]
    assert texts[0] == "overall"
    assert texts[1] == f"{100 * base['accuracy']:.2f}% {base['correct']}/{base['total']}"
    assert texts[2] == f"{100 * zoom['accuracy']:.2f}% {zoom['correct']}/{zoom['total']}"
    # The chart is in the first viewport too, a bar per method and group.
    chart = page.locator("svg.chart")
    chart_box = chart.bounding_box()
    assert chart_box is not None and chart_box["y"] + chart_box["height"] <= VIEWPORT["height"]
    groups = {m: info["groups"] for m, info in opened.summary["methods"].items()}
    assert set(groups["zoom-refine"]) == {"overall", "FSP", "FCP", "(unknown)"}  # the bad row's
    assert table.locator("tbody tr").count() == len(groups["zoom-refine"])
    bars = [(m, name) for m, by_name in groups.items() for name in by_name]
    assert page.locator("svg.chart rect.bar").count() == len(bars)
    # The page is whole: nothing fetched, no script error, no Python repr in what a reader sees.
    assert opened.own in opened.browser.requests  # the request log sees the page itself…
    assert opened.requests == [] and opened.errors == []  # …and nothing else
    text = page.inner_text("body")
    assert not [marker for marker in REPR_MARKERS if marker in text], text


def test_each_thumbnail_shows_its_zoom_box_where_the_trace_says(opened: Opened) -> None:
    page = opened.page
    page.evaluate("window.scrollTo(0, 0)")
    full = save_screenshot(opened, "full-page.png", full_page=True)
    zooms = [r for (_, method), r in opened.records.items() if method == "zoom-refine"]
    drawn = [r for r in zooms if r["status"] == "ok"]
    assert len(drawn) == 3
    for record in drawn:
        # The trace: the whole image first, then the crop the model asked for.
        whole, crop = record["views"]
        assert whole["box"] == [0, 0, *IMAGE_SIZE]
        x1, y1, x2, y2 = crop["box"]
        width, height = IMAGE_SIZE
        asked = [LOCALIZE_BOX[0] * width, LOCALIZE_BOX[1] * height]
        asked += [LOCALIZE_BOX[2] * width, LOCALIZE_BOX[3] * height]
        assert x1 <= asked[0] and y1 <= asked[1] and asked[2] <= x2 and asked[3] <= y2
        image = page.locator(
            f'.sample[data-id="{record["id"]}"] figure[data-method="zoom-refine"] img'
        )
        rect = image.evaluate(
            "e => { const r = e.getBoundingClientRect();"
            " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; }"
        )
        left, top, shown_width, shown_height = rect
        scale_x, scale_y = shown_width / width, shown_height / height
        edge_left, edge_right = left + x1 * scale_x, left + x2 * scale_x
        edge_top, edge_bottom = top + y1 * scale_y, top + y2 * scale_y
        middle_x, middle_y = (edge_left + edge_right) / 2, (edge_top + edge_bottom) / 2
        colour = box_colour(1)

        def pixel(x: float, y: float) -> tuple[int, ...]:
            value = full.getpixel((int(x), int(y)))
            assert isinstance(value, tuple)
            return value

        on_edges = {
            "left": pixel(edge_left, middle_y),
            "right": pixel(edge_right, middle_y),
            "top": pixel(middle_x, edge_top),
            "bottom": pixel(middle_x, edge_bottom),
        }
        for name, value in on_edges.items():
            assert is_colour(value, colour), (record["id"], name, value, colour)
        off_edges = {
            "inside left": pixel(edge_left + INSIDE_PX, middle_y),
            "inside right": pixel(edge_right - INSIDE_PX, middle_y),
            "inside top": pixel(middle_x, edge_top + INSIDE_PX),
            "inside bottom": pixel(middle_x, edge_bottom - INSIDE_PX),
            "centre": pixel(middle_x, middle_y),
            "outside left": pixel(edge_left - INSIDE_PX, middle_y),
            "outside bottom": pixel(middle_x, edge_bottom + INSIDE_PX),
        }
        for name, value in off_edges.items():
            assert not is_colour(value, colour), (record["id"], name, value)
    # The malformed row has no image to show, and says so.
    bad = page.locator('.sample[data-id="3"]')
    assert bad.locator("img").count() == 0 and "error" in bad.inner_text()


def test_the_changed_filter_hides_the_other_samples(opened: Opened) -> None:
    page = opened.page
    samples = page.locator("article.sample")
    ids = [samples.nth(i).get_attribute("data-id") for i in range(samples.count())]
    assert sorted(ids) == ["0", "1", "2", "3"]
    changed = {
        sample_id
        for (sample_id, method), r in opened.records.items()
        if method == "zoom-refine" and r["status"] == "ok" and r["initial_answer"] != r["answer"]
    }
    zoom_ok = [r for r in opened.records.values() if r["method"] == "zoom-refine" and r["answer"]]
    assert all(
        (r["initial_answer"], r["answer"]) == (PROTOCOL_INITIAL_ANSWER, PROTOCOL_ANSWER)
        for r in zoom_ok
    )
    assert changed == {"0", "1", "2"}
    assert all(page.locator(f'.sample[data-id="{i}"]').is_visible() for i in ids)
    page.get_by_label("changed by refinement only").check()
    for sample_id in ids:
        visible = page.locator(f'.sample[data-id="{sample_id}"]').is_visible()
        assert visible == (sample_id in changed), sample_id
    assert page.locator("#shown").inner_text() == "showing 3 of 4 samples"
    filtered = save_screenshot(opened, "changed-only.png", full_page=True)
    assert filtered.size[0] == VIEWPORT["width"]
    page.get_by_label("changed by refinement only").uncheck()
    assert all(page.locator(f'.sample[data-id="{i}"]').is_visible() for i in ids)
