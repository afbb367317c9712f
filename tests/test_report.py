"""`report.html` without a browser: a real run (scripted model) rendered, and the page's structure
read back with the standard library's HTML parser — the summary is a table, the chart's bars are
the accuracies, the boxes are the trace's, no Python repr is anywhere a reader looks, nothing is
fetched, and any number of methods and crops per sample is laid out."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import dataset_fixtures as fixtures
import pytest

from zoom_refine import ZoomContext
from zoom_refine.evals.report import (
    CHART_BAR_AREA_PX,
    merge_runs,
    plain,
    render_html,
    sample_thumbnails,
    summary_groups,
    write_report,
)
from zoom_refine.evals.runner import EvalPlan, run_eval
from zoom_refine.evals.scoring import summarize
from zoom_refine.testing import RuleVisionModel
from zoom_refine.tools.overlay import box_colour

REPR = re.compile(r"\[\s*['\"]|\{\s*'|'\s*\]|\bNone\b|\bTrue\b|\bFalse\b|dict_\w+|<\w+ object")
"""What a Python repr leaves in text: `['0']`, `{'a': …}`, None/True/False, `dict_keys`, …"""


class Page(HTMLParser):
    """Elements (tag, attributes, own text) in document order, and the text a reader sees
    (outside script, style, and the verbatim model replies in `pre`)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self.visible: list[str] = []
        self._open: list[dict[str, Any]] = []
        self.feed(text)

    VOID: ClassVar[frozenset[str]] = frozenset({"meta", "img", "input", "br", "rect", "line"})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self._open)}
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(
            {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self._open)}
        )

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data
        if not any(e["tag"] in ("script", "style", "pre") for e in self._open):
            self.visible.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag and all(e["attrs"].get(k) == v for k, v in attrs.items())
        ]

    def inside(self, element: dict[str, Any], tag: str, **attrs: str) -> list[dict[str, Any]]:
        return [e for e in self.find(tag, **attrs) if any(p is element for p in e["parents"])]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """An HR-Bench run of both methods with a scripted model: zoom-refine answers A then B with
    a box at 0.2-0.8; row 4 is a bad row (an error for both)."""
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    plan = EvalPlan(benchmark="hr-bench", data=data, out=out, methods=("baseline", "zoom-refine"))
    run_eval(plan, ZoomContext(model=RuleVisionModel()))
    return out


def test_the_page_is_a_table_a_chart_and_a_card_per_sample(run: Path) -> None:
    table, markdown_path, page_path = write_report([run])
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)
    summary = json.loads((run / "summary.json").read_text())
    methods = summary["methods"]

    # The summary is a real table: a column per method and a Δ column, a row per group.
    summary_table = page.find("table", id="summary-table")[0]
    heads = [e["text"] for e in page.inside(summary_table, "th")]
    assert heads == ["group", "baseline", "zoom-refine", "Δ zoom-refine"]
    rows = page.inside(summary_table, "tr")[1:]
    assert [page.inside(r, "td")[0]["text"] for r in rows] == ["overall", "FSP", "FCP", "(unknown)"]
    overall = [e["text"] for e in page.inside(rows[0], "td")]
    zoom, base = (
        methods["zoom-refine"]["groups"]["overall"],
        methods["baseline"]["groups"]["overall"],
    )
    assert (base["correct"], zoom["correct"], zoom["total"]) == (1, 2, 6)
    assert overall == ["overall", "16.67% 1/6", "33.33% 2/6", "+16.67"]
    assert "<pre>" not in text  # no monospace text dump of the table any more

    # The chart: a bar per method and group, its length the accuracy on a 0-100 % axis.
    bars = page.find("rect", **{"class": "bar"})
    assert len(bars) == 2 * 4
    for bar in bars:
        group = methods[bar["attrs"]["data-method"]]["groups"][bar["attrs"]["data-group"]]
        assert float(bar["attrs"]["width"]) == pytest.approx(
            CHART_BAR_AREA_PX * group["accuracy"], abs=0.01
        )

    # A card per sample; the boxes drawn are the trace's views, in original pixels.
    records = {(r["id"], r["method"]): r for r in merge_runs([run])[1]}
    cards = page.find("article", **{"class": "sample"})
    assert sorted(card["attrs"]["data-id"] for card in cards) == ["0", "1", "2", "3", "4", "5"]
    for card in cards:
        sample_id = card["attrs"]["data-id"]
        record = records[(sample_id, "zoom-refine")]
        changed = record["status"] == "ok" and record["initial_answer"] != record["answer"]
        assert card["attrs"]["data-changed"] == ("yes" if changed else "no")
        outlines = [r for r in page.inside(card, "rect") if r["attrs"].get("fill") == "none"]
        views = record.get("views", [])[1:]
        assert [
            [float(o["attrs"][k]) for k in ("x", "y", "width", "height")] for o in outlines
        ] == [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in (v["box"] for v in views)]
        assert all(o["attrs"]["stroke"] == box_colour(1) for o in outlines)
        for image in page.inside(card, "img"):
            assert image["attrs"]["src"].startswith("data:image/jpeg;base64,")
    assert sum(card["attrs"]["data-changed"] == "yes" for card in cards) == 5
    assert page.find("input", id="changed", type="checkbox")
    assert "changed by refinement only (5)" in " ".join(page.find("label")[0]["text"].split())

    # No Python repr where a reader looks, in the page or the Markdown.
    seen = " ".join(page.visible)
    assert not REPR.search(seen), REPR.search(seen)
    markdown = markdown_path.read_text()
    assert not REPR.search(markdown.replace(table, "")), markdown
    assert "fixed 2 (ids 3, 5)" in markdown

    # One self-contained file: nothing to fetch.
    assert not page.find("link") and not [e for e in page.find("script") if "src" in e["attrs"]]
    sources = [e["attrs"].get("src") or e["attrs"].get("href") or "" for e in page.elements]
    assert not [s for s in sources if s and not s.startswith(("data:", "#"))]
    assert "url(" not in text and "@import" not in text


def test_any_number_of_methods_and_crops_per_sample(run: Path) -> None:
    """A third method that zoomed three times on sample 0 (as the agent graph may): its own
    column, Δ column and bars, and its own thumbnail with three numbered boxes."""
    config, records = merge_runs([run])
    crops = [[0, 0, 16, 12], [8, 6, 24, 18], [16, 12, 32, 24]]
    agent = []
    for record in records:
        if record["method"] == "zoom-refine":
            extra = copy.deepcopy(record)
            extra["method"] = "agent"
            if record["id"] == "0":
                whole = record["views"][0]
                extra["views"] = [whole] + [
                    {"id": f"img{n}", "box": box, "hop": n, "size": [448, 448]}
                    for n, box in enumerate(crops, start=1)
                ]
                extra["steps"] = [
                    {"node": "crop", "hop": n, "raw": None, "note": f"crop {n} made"}
                    for n in range(1, 4)
                ] + [
                    {
                        "node": "agent",
                        "hop": 3,
                        "raw": "zoom",
                        "tool_calls": [
                            {
                                "id": "call-4-1",
                                "name": "zoom_in",
                                "args": {"box": [0.1, 0.1, 0.2, 0.2]},
                                "image": "img0",
                                "box": [0.1, 0.1, 0.2, 0.2],
                                "box_frame": "norm1",
                                "view": None,
                                "error": "over budget",
                            }
                        ],
                    }
                ]
            agent.append(extra)
    everything = records + agent
    summary = summarize("hr-bench", everything)
    thumbnails = dict(sample_thumbnails(config, everything))
    page = Page(render_html(config, summary, everything, thumbnails))

    heads = [e["text"] for e in page.inside(page.find("table", id="summary-table")[0], "th")]
    assert heads == [
        "group",
        "baseline",
        "zoom-refine",
        "agent",
        "Δ zoom-refine",
        "Δ agent",
    ]
    assert len(page.find("rect", **{"class": "bar"})) == 3 * 4
    card = next(c for c in page.find("article") if c["attrs"].get("data-id") == "0")
    figures = page.inside(card, "figure")
    assert [f["attrs"]["data-method"] for f in figures] == ["zoom-refine", "agent"]
    boxes = page.inside(figures[1], "g", **{"class": "box"})
    assert [b["attrs"]["data-number"] for b in boxes] == ["1", "2", "3"]
    outlines = [r for r in page.inside(figures[1], "rect") if r["attrs"].get("fill") == "none"]
    assert [o["attrs"]["stroke"] for o in outlines] == [box_colour(n) for n in (1, 2, 3)]
    assert [int(o["attrs"]["x"]) for o in outlines] == [0, 8, 16]
    assert "crop 3 made" in card["text"]
    assert "call zoom_in box 0.1, 0.1, 0.2, 0.2 (norm1) on img0 refused: over budget" in " ".join(
        card["text"].split()
    )
    # Every pair of methods gets its paired row; each method its costs.
    pairs = page.find("table", **{"class": "means pairs"})[0]
    rows = [page.inside(row, "td")[0]["text"] for row in page.inside(pairs, "tr")[1:]]
    assert rows == list(summary["paired_methods"]) and len(rows) == 3
    costs = page.find("table", **{"class": "means costs"})[0]
    assert [page.inside(row, "td")[0]["text"] for row in page.inside(costs, "tr")[1:]] == [
        "baseline",
        "zoom-refine",
        "agent",
    ]
    assert not REPR.search(" ".join(page.visible))


def test_records_left_out_as_unanswered_are_listed(run: Path) -> None:
    config, records = merge_runs([run])
    summary = summarize("hr-bench", records, skip_unanswered=True)
    page = Page(render_html(config, summary, records, {}))
    problems = page.find("table", **{"class": "means problems"})[0]
    heads = [e["text"] for e in page.inside(problems, "th")]
    assert heads[-1] == "left out (no first answer)"
    skipped = summary["methods"]["baseline"]["skipped_ids"]
    assert skipped  # the bad row at least
    baseline_row = page.inside(problems, "tr")[1]
    assert page.inside(baseline_row, "td")[-1]["text"].startswith(str(len(skipped)))


def test_a_run_whose_data_has_moved_still_renders(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    Path(config["data"]).unlink()
    _, _, page_path = write_report([run])
    page = Page(page_path.read_text())
    assert not page.find("img") and len(page.find("article", **{"class": "sample"})) == 6
    assert "cannot be read from here" in " ".join(page.visible)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (["0", "12"], "0, 12"),
        ({"fixed": 2, "ids": ["a"]}, "fixed 2; ids a"),
        (True, "yes"),
        (0.123456, "0.1235"),
        ([0.6, 0.6, 0.7, 0.7], "0.6, 0.6, 0.7, 0.7"),
    ],
)
def test_values_read_as_words_never_as_reprs(value: Any, text: str) -> None:
    assert plain(value) == text


@pytest.mark.parametrize(
    ("benchmark", "write"),
    [("mme-realworld", fixtures.write_mme_json), ("vstar", fixtures.write_vstar_folder)],
)
def test_every_benchmark_renders_its_groups_without_reprs(
    benchmark: Any, write: Any, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    plan = EvalPlan(
        benchmark=benchmark,
        data=write(tmp_path / "data"),
        out=out,
        methods=("baseline", "zoom-refine"),
    )
    run_eval(plan, ZoomContext(model=RuleVisionModel()))
    _, _, page_path = write_report([out])
    page = Page(page_path.read_text())
    summary = json.loads((out / "summary.json").read_text())
    rows = page.inside(page.find("table", id="summary-table")[0], "tr")[1:]
    names = [page.inside(row, "td")[0]["text"] for row in rows]
    assert names == summary_groups(summary) and names[0] == "overall"
    ids = {record["id"] for record in merge_runs([out])[1]}
    assert {c["attrs"]["data-id"] for c in page.find("article", **{"class": "sample"})} == ids
    assert len(page.find("img")) == len(ids) - 1  # the bad row has no image
    assert not REPR.search(" ".join(page.visible)), REPR.search(" ".join(page.visible))
