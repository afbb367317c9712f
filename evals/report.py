"""`zoom-refine report DIR [DIR…]`: baseline vs Zoom-Refine per category, as Markdown and HTML.

Several folders (shards of one run) are merged. The HTML shows each sample's image as a thumbnail
with the boxes the model zoomed into, the question, both answers and the ground truth, and can be
filtered to the samples whose answer refinement changed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zoom_refine.evals.loaders import load_samples
from zoom_refine.evals.samples import Sample
from zoom_refine.evals.scoring import paired_changes, summarize
from zoom_refine.evals.store import PredictionStore
from zoom_refine.evals.tables import format_table
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.images import load_image
from zoom_refine.tools.overlay import draw_boxes

THUMBNAIL_SIDE = 360
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


def write_report(folders: list[Path]) -> tuple[str, Path, Path]:
    """Write report.md and report.html into the first folder; returns the table and the paths."""
    config, records = merge_runs(folders)
    benchmark = config["benchmark"]
    summary = summarize(benchmark, records, extractor=config.get("extractor", "strict"))
    changes = paired_changes(records)
    table = format_table(summary)
    out = folders[0]
    markdown = render_markdown(config, table, changes)
    _write_text(out / "report.md", markdown)
    thumbnails = dict(_thumbnails(config, records))
    _write_text(out / "report.html", render_html(config, table, changes, records, thumbnails))
    return table, out / "report.md", out / "report.html"


def _write_text(path: Path, text: str) -> None:
    """UTF-8 whatever the locale; a lone surrogate (from a model's reply, kept in the records)
    is written as `\\ud800`, where plain `write_text` would fail the whole report on it."""
    path.write_text(text, encoding="utf-8", errors="backslashreplace")


def render_markdown(config: dict[str, Any], table: str, changes: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"# {config['benchmark']}: {config.get('model')}",
            "",
            f"Data `{config.get('data')}` (sha256 `{str(config.get('dataset_sha256'))[:16]}…`), "
            f"methods {', '.join(config.get('methods', []))}.",
            "",
            "```text",
            table,
            "```",
            "",
            "Paired, per sample (baseline → Zoom-Refine): " + _changes_line(changes),
            "",
        ]
    )


def _changes_line(changes: dict[str, Any]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in changes.items())


def render_html(
    config: dict[str, Any],
    table: str,
    changes: dict[str, Any],
    records: list[dict[str, Any]],
    thumbnails: dict[str, str],
) -> str:
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["id"], {})[record["method"]] = record
    rows = "\n".join(_sample_row(sample_id, runs, thumbnails) for sample_id, runs in by_id.items())
    title = html.escape(f"{config['benchmark']}: {config.get('model')}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table.samples td {{ vertical-align: top; padding: 6px; border-top: 1px solid #ddd; }}
.right {{ color: #1a7f37; }} .wrong {{ color: #cf222e; }}
pre {{ background: #f6f8fa; padding: 1em; }}
</style></head><body>
<h1>{title}</h1>
<pre>{html.escape(table)}</pre>
<p>Paired (baseline → Zoom-Refine): {html.escape(_changes_line(changes))}</p>
<label><input type="checkbox" id="changed"
  onchange="document.querySelectorAll('tr.sample').forEach(r => r.hidden = this.checked && r.dataset.changed !== 'yes')">
  only samples whose answer refinement changed</label>
<table class="samples">
<tr><th>image</th><th>question</th><th>answers</th></tr>
{rows}
</table></body></html>
"""


def _sample_row(sample_id: str, runs: dict[str, dict[str, Any]], thumbnails: dict[str, str]) -> str:
    any_run = next(iter(runs.values()))
    zoom = runs.get("zoom-refine")
    changed = bool(zoom and zoom.get("initial_answer") != zoom.get("answer"))
    image = thumbnails.get(sample_id)
    picture = f'<img src="data:image/jpeg;base64,{image}">' if image else "(no image)"
    options = "<br>".join(
        f"{html.escape(letter)}. {html.escape(str(text))}"
        for letter, text in (any_run.get("options") or {}).items()
    )
    answers = [f"truth <b>{html.escape(str(any_run.get('ground_truth')))}</b>"]
    for method, run in runs.items():
        mark = "right" if run.get("correct") else "wrong"
        detail = f" (first {run.get('initial_answer')})" if method == "zoom-refine" else ""
        error = (
            f" error: {html.escape(str(run.get('error')))}" if run.get("status") == "error" else ""
        )
        answers.append(
            f'{method}: <span class="{mark}">{html.escape(str(run.get("answer")))}</span>'
            f"{html.escape(detail)}{error}"
        )
    return (
        f'<tr class="sample" data-changed="{"yes" if changed else "no"}"><td>{picture}</td>'
        f"<td><b>{html.escape(sample_id)}</b><br>{html.escape(str(any_run.get('question')))}"
        f"<br>{options}</td><td>{'<br>'.join(answers)}</td></tr>"
    )


def _thumbnails(config: dict[str, Any], records: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(sample id, base64 JPEG) with the zoom boxes of its Zoom-Refine run drawn."""
    boxes: dict[str, list[list[int]]] = {}
    for record in records:
        if record["method"] == "zoom-refine":
            boxes[record["id"]] = [view["box"] for view in record.get("views", [])[1:]]
        else:
            boxes.setdefault(record["id"], [])
    data = Path(config["data"])
    if not data.exists():
        return
    for row in load_samples(config["benchmark"], data):
        if isinstance(row, Sample) and row.id in boxes:
            yield row.id, thumbnail(row.image, boxes[row.id])


def thumbnail(image: str | bytes, boxes: list[list[int]]) -> str:
    """A small JPEG (base64) of the image with `boxes` (original pixels) drawn and numbered."""
    small = draw_boxes(load_image(image).image, boxes, max_side=THUMBNAIL_SIDE)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
