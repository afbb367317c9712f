"""`zoom-refine report DIR [DIR…]`: accuracy per method and category, as Markdown and HTML.

Several folders (shards of one run) are merged. `report.html` is one self-contained file (inline
CSS, JS, SVG and JPEG data; nothing fetched, so it works offline and can be mailed): a summary
table and a bar chart of accuracy per method and group at the top, then one card per sample with
its image as a thumbnail, every crop the model zoomed into drawn over it as a numbered box (an SVG
overlay in the original image's pixel frame, so the box sits exactly where the trace says), the
question, each method's answer and its steps. A checkbox keeps only the samples whose answer
refinement changed. Any number of methods and of crops per sample is laid out the same way.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoom_refine.evals.loaders import load_samples
from zoom_refine.evals.samples import BENCHMARKS, Sample
from zoom_refine.evals.scoring import group_order, ordered_methods, summarize
from zoom_refine.evals.store import PredictionStore
from zoom_refine.evals.tables import format_table
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.images import load_image
from zoom_refine.tools.overlay import box_colour

THUMBNAIL_SIDE = 360
"""Longest side, in pixels, of each sample's thumbnail (as embedded and as shown, at zoom 100%)."""
BOX_STROKE_PX = 3
"""Width in screen pixels of a zoom box's outline, whatever the thumbnail's scale."""
BOX_TAG_PX = 15
"""Side in screen pixels of the numbered tag in a zoom box's top-left corner."""
BASELINE = "baseline"
METHOD_COLOURS = ("#8c959f", "#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e")
"""Bar colours of the chart, one per method in `ordered_methods` order (baseline first)."""
CHART_LABEL_PX = 190
"""Most width in pixels of the chart's group labels (less when every name is short)."""
CHART_BAR_AREA_PX = 320
CHART_BAR_PX = 12
CHART_LABEL_CHARS = 28
"""Group names longer than this are shortened in the chart (the full name is its tooltip)."""
NO_VALUE = "—"

NO_CONFIG = "no config.json in {path} (it is written when `zoom-refine eval` starts)"
BAD_CONFIG = (
    "{path} cannot be read ({error}): run the same `zoom-refine eval` command again to rewrite it"
)
NO_PREDICTIONS = "no predictions.jsonl in {folder} (run `zoom-refine eval … --out {folder}` first)"


def merge_runs(folders: Iterable[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first folder's config and the records of every folder (shards), one per key."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    config: dict[str, Any] = {}
    for folder in folders:
        path = folder / "predictions.jsonl"
        if not path.exists():
            raise InvalidInputError(NO_PREDICTIONS.format(folder=folder))
        config = config or _read_config(folder)
        for record in PredictionStore(path, read_only=True):  # the run may still be going
            records[(record["id"], record["method"])] = record
    return config, list(records.values())


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InvalidInputError(NO_CONFIG.format(path=path)) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(BAD_CONFIG.format(path=path, error=error)) from error
    if not isinstance(config, dict) or "benchmark" not in config:
        raise InvalidInputError(BAD_CONFIG.format(path=path, error="no benchmark named"))
    return config


def write_report(
    folders: list[Path], *, skip_unanswered: bool | None = None
) -> tuple[str, Path, Path]:
    """Write report.md and report.html into the first folder; returns the table and the paths.
    `skip_unanswered` (`evals.scoring.summarize`): None = as the run's config.json says."""
    config, records = merge_runs(folders)
    skip = config.get("skip_unanswered", False) if skip_unanswered is None else skip_unanswered
    summary = summarize(
        config["benchmark"],
        records,
        extractor=config.get("extractor", "strict"),
        skip_unanswered=bool(skip),
    )
    table = format_table(summary)
    out = folders[0]
    _write_text(out / "report.md", render_markdown(config, table, summary.get("paired") or {}))
    thumbnails = dict(sample_thumbnails(config, records))
    _write_text(out / "report.html", render_html(config, summary, records, thumbnails))
    return table, out / "report.md", out / "report.html"


def _write_text(path: Path, text: str) -> None:
    """UTF-8 whatever the locale; a lone surrogate (from a model's reply, kept in the records)
    is written as `\\ud800`, where plain `write_text` would fail the whole report on it."""
    path.write_text(text, encoding="utf-8", errors="backslashreplace")


def render_markdown(config: dict[str, Any], table: str, paired: Mapping[str, Any]) -> str:
    """The run's settings, the plain-text table and the paired changes, in words."""
    return "\n".join(
        [
            f"# {config['benchmark']}: {config.get('model')}",
            "",
            f"Data `{config.get('data')}`{_sha_note(config, '`')}, "
            f"methods {', '.join(config.get('methods', []))}.",
            "",
            "```text",
            table,
            "```",
            "",
            paired_sentence(paired),
            "",
        ]
    )


def _sha_note(config: Mapping[str, Any], quote: str = "") -> str:
    """` (sha256 0123…)`: the start of the dataset's hash, when the run recorded it."""
    digest = config.get("dataset_sha256")
    return f" (sha256 {quote}{str(digest)[:16]}…{quote})" if digest else ""


def paired_sentence(paired: Mapping[str, Any]) -> str:
    """The paired baseline → Zoom-Refine counts (`scoring.paired_changes`) as one sentence."""
    if not paired.get("pairs"):
        return "Paired (baseline → zoom-refine): no sample was run by both methods."
    fixed, broken = paired.get("fixed_ids") or [], paired.get("broken_ids") or []
    return (
        f"Paired over {paired['pairs']} samples run by both (baseline → zoom-refine): "
        f"fixed {paired['fixed']}{_ids_in_brackets(fixed)}, "
        f"broken {paired['broken']}{_ids_in_brackets(broken)}, "
        f"both right {paired['both_right']}, both wrong {paired['both_wrong']}; "
        f"net {paired['net']:+d}, exact McNemar p = {paired['mcnemar_p']:.3g}."
    )


def _ids_in_brackets(ids: Sequence[str]) -> str:
    return f" (ids {', '.join(map(str, ids))})" if ids else ""


# --- thumbnails ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    """A sample's image, downscaled for the page; boxes are drawn over it by the browser."""

    jpeg_base64: str
    size: tuple[int, int]
    """(width, height) of the thumbnail in pixels."""
    original_size: tuple[int, int]
    """(width, height) of the original image in pixels: the frame of the trace's boxes."""


def sample_thumbnails(
    config: dict[str, Any], records: list[dict[str, Any]]
) -> Iterator[tuple[str, Thumbnail]]:
    """(sample id, thumbnail), in dataset order, for the samples in `records` whose data is still
    where the run read it."""
    wanted = {record["id"] for record in records}
    data = Path(config["data"])
    if not data.exists():
        return
    for row in load_samples(config["benchmark"], data):
        if isinstance(row, Sample) and row.id in wanted:
            yield row.id, thumbnail(row.image)


def thumbnail(image: str | bytes) -> Thumbnail:
    """The image (a path or encoded bytes) downscaled to `THUMBNAIL_SIDE` (never enlarged), as a
    base64 JPEG."""
    original = load_image(image).image
    scale = min(1.0, THUMBNAIL_SIDE / max(original.size))
    size = (max(1, round(original.width * scale)), max(1, round(original.height * scale)))
    small = original.resize(size) if scale < 1 else original
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=80)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumbnail(encoded, size, (original.width, original.height))


# --- plain text of values (never a Python repr on the page) --------------------------------------


def plain(value: Any) -> str:
    """`value` as a reader wants it: None → "—", numbers short, lists comma-separated, mappings
    as `key value; …` — never a Python repr such as `['0']` or `None`."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{plain(key)} {plain(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(item) for item in value)
    return str(value)


def _e(value: Any) -> str:
    """HTML-escaped `plain(value)`."""
    return html.escape(plain(value))


def _percent(value: float | None, digits: int = 2) -> str:
    return NO_VALUE if value is None else f"{100 * value:.{digits}f}%"


# --- the page ------------------------------------------------------------------------------------

CSS = """
:root { --line: #d0d7de; --muted: #57606a; --right: #1a7f37; --wrong: #cf222e; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 1.5em 2em;
  color: #1f2328; }
header h1 { font-size: 1.35em; margin: .6em 0 .1em; }
.meta { color: var(--muted); margin: 0 0 .6em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.overview { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
table { border-collapse: collapse; }
table.summary th, table.summary td, table.means th, table.means td { padding: 3px 10px;
  border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
table.summary th:first-child, table.summary td:first-child,
table.means th:first-child, table.means td:first-child { text-align: left; }
table.summary thead th, table.means thead th { border-bottom: 2px solid var(--line); }
table.summary tr.overall td { font-weight: 600; }
.count { color: var(--muted); font-size: .85em; }
.up { color: var(--right); } .down { color: var(--wrong); }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 4px; }
.chart text { font: 10px system-ui, sans-serif; fill: #1f2328; }
.chart .axis { stroke: var(--line); }
.notes { color: var(--muted); margin: .4em 0; }
.toolbar { position: sticky; top: 0; background: #fff; padding: 6px 0; z-index: 2;
  border-bottom: 1px solid var(--line); display: flex; gap: 1.5em; align-items: center; }
.sample { display: flex; flex-wrap: wrap; gap: 1.2em; padding: 12px 0;
  border-bottom: 1px solid var(--line); }
.pictures { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: .85em; }
.frame { position: relative; line-height: 0; }
.frame img { display: block; }
.frame svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; overflow: visible; }
.frame svg text { font-family: system-ui, sans-serif; font-weight: bold; fill: #000; }
.text { flex: 1 1 420px; min-width: 320px; }
.text h3 { font-size: 1em; margin: 0 0 .2em; }
.fields { color: var(--muted); font-weight: normal; }
.question { white-space: pre-wrap; margin: .2em 0; }
ol.options { margin: .2em 0 .4em; padding-left: .2em; list-style: none; }
table.answers td, table.answers th { padding: 2px 8px 2px 0; text-align: left;
  vertical-align: top; }
table.answers td:first-child, table.answers td:nth-child(2) { white-space: nowrap; }
.right { color: var(--right); } .wrong { color: var(--wrong); }
.badge { font-size: .8em; padding: 0 6px; border-radius: 8px; background: #fff8c5;
  white-space: nowrap;
  border: 1px solid #d4a72c; }
ol.steps { margin: .2em 0; padding-left: 1.4em; }
pre.raw { white-space: pre-wrap; background: #f6f8fa; padding: 4px 6px; margin: 2px 0;
  max-height: 12em; overflow: auto; }
.error { color: var(--wrong); }
"""

SCRIPT = """
(function () {
  const box = document.getElementById('changed');
  const samples = Array.from(document.querySelectorAll('.sample'));
  const shown = document.getElementById('shown');
  function apply() {
    let count = 0;
    for (const sample of samples) {
      sample.hidden = box.checked && sample.dataset.changed !== 'yes';
      if (!sample.hidden) count += 1;
    }
    shown.textContent = 'showing ' + count + ' of ' + samples.length + ' samples';
  }
  box.addEventListener('change', apply);
  apply();
})();
"""
"""The "changed by refinement" filter: hides every sample whose `data-changed` is not `yes`."""


def render_html(
    config: dict[str, Any],
    summary: Mapping[str, Any],
    records: list[dict[str, Any]],
    thumbnails: Mapping[str, Thumbnail],
) -> str:
    """The whole page: summary (table, chart, notes), then a card per sample (thumbnails first in
    dataset order, then samples without an image)."""
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["id"], {})[record["method"]] = record
    order = [sample_id for sample_id in thumbnails if sample_id in by_id]
    order += [sample_id for sample_id in by_id if sample_id not in thumbnails]
    anchors = {sample_id: f"s{number}" for number, sample_id in enumerate(order, start=1)}
    methods = ordered_methods({record["method"] for record in records})
    cards = [
        _sample_card(sample_id, by_id[sample_id], methods, thumbnails.get(sample_id), anchors)
        for sample_id in order
    ]
    changed = sum(any(map(changed_by_refinement, by_id[i].values())) for i in order)
    title = html.escape(f"{config['benchmark']}: {config.get('model')}")
    data = config.get("data")
    missing = (
        f'<p class="notes">No images: {_e(data)} cannot be read from here.</p>'
        if records and not (data and Path(data).exists())
        else ""
    )
    meta = (
        f"data {_e(config.get('data'))}{html.escape(_sha_note(config))} · "
        f"methods {_e(config.get('methods') or methods)} · "
        f"extractor {_e(summary.get('extractor'))} · {len(order)} samples"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{CSS}</style></head><body>
<header><h1>{title}</h1><p class="meta">{meta}</p></header>
<section id="summary">
{_summary_section(summary, anchors)}
</section>
<section id="samples">
<h2>Samples</h2>
{missing}<div class="toolbar"><label><input type="checkbox" id="changed">
 changed by refinement only ({changed})</label> <span id="shown"></span></div>
{chr(10).join(cards)}
</section>
<script>{SCRIPT}</script>
</body></html>
"""


# --- summary -------------------------------------------------------------------------------------


def summary_groups(summary: Mapping[str, Any], *, detail: bool = False) -> list[str]:
    """The groups shown, in the benchmark's order (as `tables.format_table`: MME-RealWorld's
    per-category rows only with `detail`)."""
    methods: Mapping[str, Any] = summary.get("methods", {})
    benchmark = summary.get("benchmark")
    hide_categories = benchmark == "mme-realworld" and not detail
    names: list[str] = []
    for method in ordered_methods(methods):
        for name, group in methods[method]["groups"].items():
            if name not in names and not (hide_categories and group["level"] == "category"):
                names.append(name)
    if benchmark in BENCHMARKS:
        names.sort(key=lambda name: group_order(benchmark, name))
    return names


def _summary_section(summary: Mapping[str, Any], anchors: Mapping[str, str]) -> str:
    methods: Mapping[str, Any] = summary.get("methods", {})
    shown = ordered_methods(methods)
    if not shown:
        return "<p>No predictions yet.</p>"
    names = summary_groups(summary)
    parts = [
        '<div class="overview">',
        _accuracy_table(summary, names, "summary", table_id="summary-table"),
        _accuracy_chart(summary, names),
        "</div>",
    ]
    pairs = summary.get("paired_methods") or {}
    if len(pairs) > 1:  # more than baseline → zoom-refine: every pair in a table
        parts.append(_pairs_table(pairs, anchors))
    else:
        paired = _paired_html(summary.get("paired") or {}, anchors)
        parts.append(f'<p class="notes paired">{paired}</p>')
    if summary.get("excluded"):
        parts.append(
            f'<p class="notes">Left out (Diagram and Table): {_e(summary["excluded"])} records.</p>'
        )
    more = [_problems_table(methods, shown, anchors), _costs_table(methods, shown)]
    for key, caption in (
        ("cycle_mean", "Mean over the option cycles (HR-Bench's own score)"),
        ("subtask_mean", "Unweighted mean over subtasks"),
    ):
        more.append(_means_table(methods, shown, key, caption))
    if summary.get("benchmark") == "mme-realworld":
        detail = summary_groups(summary, detail=True)
        more.append(
            "<details><summary>Every category</summary>"
            + _accuracy_table(summary, detail, "summary detail")
            + "</details>"
        )
    parts.append(f'<div class="overview">{"".join(more)}</div>')
    return "\n".join(parts)


def _accuracy_table(
    summary: Mapping[str, Any], names: Sequence[str], css_class: str, *, table_id: str = ""
) -> str:
    """A row per group, a column per method (accuracy, correct/total), and each other method's
    difference to the baseline in points."""
    methods: Mapping[str, Any] = summary.get("methods", {})
    shown = ordered_methods(methods)
    compared = [m for m in shown if m != BASELINE] if BASELINE in shown else []
    head = "".join(f"<th>{_e(m)}</th>" for m in shown)
    head += "".join(f"<th>Δ {_e(m)}</th>" for m in compared)
    rows = []
    for name in names:
        groups = {m: methods[m]["groups"].get(name) for m in shown}
        cells = "".join(f"<td>{_accuracy_cell(groups[m])}</td>" for m in shown)
        for method in compared:
            cells += f"<td>{_difference(groups[BASELINE], groups[method])}</td>"
        level = next((g["level"] for g in groups.values() if g), "")
        rows.append(f'<tr class="{_e(level)}"><td>{_e(name)}</td>{cells}</tr>')
    id_attribute = f' id="{table_id}"' if table_id else ""
    caption = (
        f"Accuracy per group ({_e(summary.get('benchmark'))}, "
        f"extractor {_e(summary.get('extractor'))})"
    )
    return (
        f'<table class="{css_class}"{id_attribute}>'
        f"<caption>{caption}</caption>"
        f"<thead><tr><th>group</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _accuracy_cell(group: Mapping[str, Any] | None) -> str:
    if not group or group.get("accuracy") is None:
        return NO_VALUE
    return (
        f"{_percent(group['accuracy'])} "
        f'<span class="count">{group["correct"]}/{group["total"]}</span>'
    )


def _difference(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    if not before or not after or before.get("accuracy") is None or after.get("accuracy") is None:
        return NO_VALUE
    points = 100 * (after["accuracy"] - before["accuracy"])
    css = "up" if points > 0 else "down" if points < 0 else ""
    return f'<span class="{css}">{points:+.2f}</span>'


def _accuracy_chart(summary: Mapping[str, Any], names: Sequence[str]) -> str:
    """Horizontal bars, a cluster per group and a bar per method, 0–100 %; drawn as inline SVG
    (user units = CSS pixels)."""
    methods: Mapping[str, Any] = summary.get("methods", {})
    shown = ordered_methods(methods)
    colours = {m: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, m in enumerate(shown)}
    legend_height, axis_height, gap = 22, 18, 10
    cluster = CHART_BAR_PX * len(shown) + gap
    longest = max((min(len(name), CHART_LABEL_CHARS) for name in names), default=0)
    left = min(CHART_LABEL_PX, 16 + 7 * longest)  # about 7 px per character at 11 px
    width = left + CHART_BAR_AREA_PX + 60
    height = legend_height + cluster * len(names) + axis_height
    parts: list[str] = []
    x = 0
    for method in shown:  # legend
        parts.append(
            f'<rect x="{x}" y="4" width="12" height="12" fill="{colours[method]}"/>'
            f'<text x="{x + 16}" y="14">{_e(method)}</text>'
        )
        x += 24 + 7 * len(method)
    bottom = legend_height + cluster * len(names)
    for tick in range(0, 101, 25):  # grid and axis labels
        tx = left + CHART_BAR_AREA_PX * tick / 100
        parts.append(
            f'<line class="axis" x1="{tx:.1f}" y1="{legend_height}" x2="{tx:.1f}" y2="{bottom}"/>'
            f'<text x="{tx:.1f}" y="{bottom + 13}" text-anchor="middle">{tick}%</text>'
        )
    for index, name in enumerate(names):
        top = legend_height + index * cluster
        label = name if len(name) <= CHART_LABEL_CHARS else name[: CHART_LABEL_CHARS - 1] + "…"
        parts.append(
            f'<text x="{left - 6}" y="{top + cluster / 2 + 2:.1f}" text-anchor="end">'
            f"<title>{_e(name)}</title>{_e(label)}</text>"
        )
        for position, method in enumerate(shown):
            group = methods[method]["groups"].get(name)
            y = top + position * CHART_BAR_PX
            accuracy = group.get("accuracy") if group else None
            if accuracy is None:
                parts.append(f'<text x="{left + 4}" y="{y + CHART_BAR_PX - 2}">{NO_VALUE}</text>')
                continue
            bar = CHART_BAR_AREA_PX * accuracy
            tip = f"{name}, {method}: {_percent(accuracy)} ({group['correct']}/{group['total']})"
            parts.append(
                f'<rect class="bar" data-group="{_e(name)}" data-method="{_e(method)}" '
                f'x="{left}" y="{y + 1}" width="{bar:.2f}" height="{CHART_BAR_PX - 2}" '
                f'fill="{colours[method]}"><title>{_e(tip)}</title></rect>'
                f'<text x="{left + bar + 4:.1f}" y="{y + CHART_BAR_PX - 2}">'
                f"{_percent(accuracy, 1)}</text>"
            )
    return (
        f'<figure><svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>Accuracy per method and group</title>{''.join(parts)}</svg></figure>"
    )


def _paired_html(paired: Mapping[str, Any], anchors: Mapping[str, str]) -> str:
    if not paired.get("pairs"):
        return html.escape(paired_sentence(paired))
    return (
        f"Paired over {paired['pairs']} samples run by both (baseline → zoom-refine): "
        f"fixed {paired['fixed']}{_id_links(paired.get('fixed_ids') or [], anchors)}, "
        f"broken {paired['broken']}{_id_links(paired.get('broken_ids') or [], anchors)}, "
        f"both right {paired['both_right']}, both wrong {paired['both_wrong']}; "
        f"net {paired['net']:+d}, exact McNemar p = {paired['mcnemar_p']:.3g}."
    )


def _id_links(ids: Sequence[str], anchors: Mapping[str, str], limit: int = 30) -> str:
    """` (ids 1, 2, …)` with each id a link to its sample's card."""
    if not ids:
        return ""
    links = [f'<a href="#{anchors[i]}">{_e(i)}</a>' if i in anchors else _e(i) for i in ids[:limit]]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f" (ids {', '.join(links)}{more})"


def _pairs_table(pairs: Mapping[str, Mapping[str, Any]], anchors: Mapping[str, str]) -> str:
    """A row per pair of methods (`first → second`, `scoring.summarize`'s `paired_methods`):
    samples both ran, fixed / broken by the second (linked), both right / wrong, net, McNemar."""
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(pair.get('pairs'))}</td>"
        f"<td>{_e(pair.get('fixed'))}"
        f"{_id_links(pair.get('fixed_ids') or [], anchors, limit=10)}</td>"
        f"<td>{_e(pair.get('broken'))}"
        f"{_id_links(pair.get('broken_ids') or [], anchors, limit=10)}</td>"
        f"<td>{_e(pair.get('both_right'))}</td><td>{_e(pair.get('both_wrong'))}</td>"
        f"<td>{pair.get('net', 0):+d}</td><td>{pair.get('mcnemar_p', 1.0):.3g}</td></tr>"
        for name, pair in pairs.items()
    )
    return (
        '<table class="means pairs"><caption>Paired, per sample (first → second)</caption>'
        "<thead><tr><th>methods</th><th>samples</th><th>fixed</th><th>broken</th>"
        "<th>both right</th><th>both wrong</th><th>net</th><th>McNemar p</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _problems_table(
    methods: Mapping[str, Any], shown: Sequence[str], anchors: Mapping[str, str]
) -> str:
    """Per method: replies with no answer read and errors (both counted wrong), and, when the
    run left unanswered records out of the accuracy (`skip_unanswered`), those."""
    columns = [("unparsed_ids", "no answer read"), ("error_ids", "errors")]
    if any("skipped_ids" in methods[m] for m in shown):
        columns.append(("skipped_ids", "left out (no first answer)"))
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    rows = "".join(
        f"<tr><td>{_e(m)}</td>"
        + "".join(
            f"<td>{len(methods[m].get(key) or [])}"
            f"{_id_links(methods[m].get(key) or [], anchors, limit=10)}</td>"
            for key, _ in columns
        )
        + "</tr>"
        for m in shown
    )
    return (
        '<table class="means problems"><caption>Not answered</caption>'
        f"<thead><tr><th>method</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


COST_COLUMNS = (
    ("samples", "samples"),
    ("tool_calls_per_sample", "crops or zoom calls"),
    ("images_per_sample", "images"),
    ("model_calls_per_sample", "model calls"),
    ("tokens_per_sample", "tokens"),
)
"""`scoring.method_costs` keys and their column titles (means per finished sample)."""


def _costs_table(methods: Mapping[str, Any], shown: Sequence[str]) -> str:
    """What each method spent per finished sample (empty when no method has costs)."""
    have = [m for m in shown if methods[m].get("costs")]
    if not have:
        return ""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COST_COLUMNS)
    rows = "".join(
        f"<tr><td>{_e(m)}</td>"
        + "".join(f"<td>{_e(methods[m]['costs'].get(key))}</td>" for key, _ in COST_COLUMNS)
        + "</tr>"
        for m in have
    )
    return (
        '<table class="means costs"><caption>Mean per finished sample</caption>'
        f"<thead><tr><th>method</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def _means_table(methods: Mapping[str, Any], shown: Sequence[str], key: str, caption: str) -> str:
    """A table of a per-method {name: fraction} summary entry (empty when no method has it)."""
    have = [m for m in shown if methods[m].get(key)]
    if not have:
        return ""
    names: list[str] = []
    for method in have:
        names += [name for name in methods[method][key] if name not in names]
    head = "".join(f"<th>{_e(m)}</th>" for m in have)
    rows = "".join(
        f"<tr><td>{_e(name)}</td>"
        + "".join(f"<td>{_percent(methods[m][key].get(name))}</td>" for m in have)
        + "</tr>"
        for name in names
    )
    return (
        f'<table class="means"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr><th>group</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


# --- samples -------------------------------------------------------------------------------------


def changed_by_refinement(record: Mapping[str, Any]) -> bool:
    """A run that looked again (not the baseline) and ended on another answer than its first."""
    return (
        record.get("method") != BASELINE
        and record.get("status") == "ok"
        and record.get("initial_answer") != record.get("answer")
    )


def crop_views(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The views after the first (`img0`, the whole image): every crop shown, in order made."""
    return list((record.get("views") or [])[1:])


def _sample_card(
    sample_id: str,
    runs: Mapping[str, Mapping[str, Any]],
    methods: Sequence[str],
    picture: Thumbnail | None,
    anchors: Mapping[str, str],
) -> str:
    ordered = [runs[m] for m in methods if m in runs]
    first = next((run for run in ordered if run.get("question") is not None), ordered[0])
    changed = [run for run in ordered if changed_by_refinement(run)]
    badges = "".join(
        f' <span class="badge">{_e(run["method"])}: {_e(run.get("initial_answer"))} → '
        f"{_e(run.get('answer'))}</span>"
        for run in changed
    )
    fields = first.get("fields") or {}
    field_text = " · ".join(
        f"{_e(key)} {_e(value)}"
        for key, value in fields.items()
        if isinstance(value, (str, int, float))
    )
    options = first.get("options") or {}
    if isinstance(options, Mapping):
        option_items = "".join(
            f'<li value="{i}"><b>{_e(letter)}</b> {_e(text)}</li>'
            for i, (letter, text) in enumerate(options.items(), start=1)
        )
    else:
        option_items = "".join(f"<li>{_e(text)}</li>" for text in options)
    truth = first.get("ground_truth")
    rows = "".join(_answer_row(run, options) for run in ordered)
    question = first.get("question")
    return (
        f'<article class="sample" id="{anchors[sample_id]}" data-id="{html.escape(sample_id)}" '
        f'data-changed="{"yes" if changed else "no"}">'
        f'<div class="pictures">{_pictures(ordered, picture)}</div>'
        f'<div class="text"><h3>{_e(sample_id)} '
        f'<span class="fields">{field_text}</span>{badges}</h3>'
        + (f'<p class="question">{_e(question)}</p>' if question is not None else "")
        + (f'<ol class="options">{option_items}</ol>' if option_items else "")
        + f"<p>truth <b>{_e(_with_option(truth, options))}</b></p>"
        f'<table class="answers"><thead><tr><th>method</th><th>answer</th><th>first look</th>'
        f"<th>steps</th></tr></thead><tbody>{rows}</tbody></table></div></article>"
    )


def _with_option(letter: Any, options: Any) -> str:
    if isinstance(options, Mapping) and letter in options:
        return f"{letter} ({plain(options[letter])})"
    return plain(letter)


def _pictures(runs: Sequence[Mapping[str, Any]], picture: Thumbnail | None) -> str:
    """A thumbnail per method that zoomed, its crops drawn over it; one plain thumbnail when
    none did."""
    if picture is None:
        return '<p class="notes no-image">(no image)</p>'
    zooming = [run for run in runs if crop_views(run)]
    if not zooming:
        return _figure(picture, [], "", "no zoom")
    return "".join(
        _figure(
            picture,
            crop_views(run),
            str(run["method"]),
            f"{plain(run['method'])}: {len(crop_views(run))} crop"
            + ("s" if len(crop_views(run)) != 1 else ""),
        )
        for run in zooming
    )


def _figure(
    picture: Thumbnail, views: Sequence[Mapping[str, Any]], method: str, caption: str
) -> str:
    width, height = picture.size
    return (
        f'<figure class="thumb" data-method="{html.escape(method)}">'
        f'<div class="frame" style="width:{width}px;height:{height}px">'
        f'<img src="data:image/jpeg;base64,{picture.jpeg_base64}" width="{width}" '
        f'height="{height}" alt="the sample\'s image">'
        f"{_box_overlay(picture, views)}</div>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _box_overlay(picture: Thumbnail, views: Sequence[Mapping[str, Any]]) -> str:
    """An SVG over the thumbnail whose user units are the original image's pixels, so each
    view's `box` ([x1, y1, x2, y2], original pixels, x2/y2 exclusive) is drawn as is; outlines
    keep `BOX_STROKE_PX` screen pixels at any scale, numbered 1… in the order the crops were made
    (`tools.overlay.box_colour`, the same colours as the PNG overview)."""
    if not views:
        return ""
    original_width, original_height = picture.original_size
    per_pixel = original_width / picture.size[0]  # original pixels per screen pixel
    tag = BOX_TAG_PX * per_pixel
    shapes = []
    for number, view in enumerate(views, start=1):
        x1, y1, x2, y2 = (float(v) for v in view["box"])
        colour = box_colour(number)
        tip = (
            f"crop {number} ({plain(view.get('id'))}, hop {plain(view.get('hop'))}): "
            f"x {x1:g}–{x2:g}, y {y1:g}–{y2:g} of {original_width}×{original_height} px"
        )
        shapes.append(
            f'<g class="box" data-number="{number}"><title>{html.escape(tip)}</title>'
            f'<rect x="{x1:g}" y="{y1:g}" width="{x2 - x1:g}" height="{y2 - y1:g}" fill="none" '
            f'stroke="{colour}" stroke-width="{BOX_STROKE_PX}" vector-effect="non-scaling-stroke"/>'
            f'<rect x="{x1:g}" y="{y1:g}" width="{tag:.2f}" height="{tag:.2f}" fill="{colour}"/>'
            f'<text x="{x1 + tag / 2:.2f}" y="{y1 + tag / 2:.2f}" text-anchor="middle" '
            f'dominant-baseline="central" font-size="{11 * per_pixel:.2f}">{number}</text></g>'
        )
    return (
        f'<svg viewBox="0 0 {original_width} {original_height}" preserveAspectRatio="none" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="zoom boxes">{"".join(shapes)}</svg>'
    )


def _answer_row(run: Mapping[str, Any], options: Any) -> str:
    method = _e(run.get("method"))
    if run.get("status") == "error":
        return (
            f'<tr><td>{method}</td><td class="error" colspan="3">error: {_e(run.get("error"))}'
            "</td></tr>"
        )
    mark, css = ("✓", "right") if run.get("correct") else ("✗", "wrong")
    answer = f'<span class="{css}">{mark} {_e(_with_option(run.get("answer"), options))}</span>'
    first = _e(run.get("initial_answer")) if run.get("method") != BASELINE else ""
    seconds = run.get("seconds")
    timing = f" · {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    steps = run.get("steps") or []
    stop = f" · stop: {_e(run.get('stop_reason'))}" if run.get("stop_reason") else ""
    listing = "".join(_step_item(step) for step in steps)
    detail = (
        f"<details><summary>{len(steps)} step{'s' if len(steps) != 1 else ''}{timing}{stop}"
        f'</summary><ol class="steps">{listing}</ol></details>'
        if steps
        else NO_VALUE
    )
    return f"<tr><td>{method}</td><td>{answer}</td><td>{first}</td><td>{detail}</td></tr>"


def _tool_call_text(call: Mapping[str, Any]) -> str:
    """An agent's zoom call: the tool, the box as written on which view, and the crop it made or
    why it was refused."""
    text = f"call {_e(call.get('name'))}"
    if call.get("box") is not None:
        text += f" box {_e(call['box'])} ({_e(call.get('box_frame'))}) on {_e(call.get('image'))}"
    if call.get("error"):
        return f'{text} <span class="error">refused: {_e(call["error"])}</span>'
    return f"{text} → {_e(call.get('view'))}"


def _step_item(step: Mapping[str, Any]) -> str:
    """One model call (or failed crop) of a run: node, hop, view, what was read, the raw reply."""
    parts = [f"<b>{_e(step.get('node'))}</b> hop {_e(step.get('hop'))}"]
    if step.get("view"):
        parts.append(f"on {_e(step['view'])}")
    if "answer" in step:
        parts.append(f"answer {_e(step.get('answer'))}")
    if step.get("box") is not None:
        parts.append(f"box {_e(step['box'])} ({_e(step.get('box_frame'))})")
    if step.get("regions"):
        regions = " / ".join(plain(region) for region in step["regions"])
        parts.append(f"regions {html.escape(regions)} (original px)")
    if step.get("crops"):
        parts.append(f"crops {_e(step['crops'])}")
    for call in step.get("tool_calls") or []:
        parts.append(_tool_call_text(call))
    if step.get("confidence") is not None:
        parts.append(f"confidence {_e(step['confidence'])}")
    if step.get("note"):
        parts.append(f"<i>{_e(step['note'])}</i>")
    if isinstance(step.get("seconds"), (int, float)):
        parts.append(f"{step['seconds']:.2f} s")
    raw = step.get("raw")
    reply = f'<pre class="raw">{html.escape(str(raw))}</pre>' if raw is not None else ""
    return f"<li>{' · '.join(parts)}{reply}</li>"
