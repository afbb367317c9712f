"""The report page: its summary at the top, then one card per sample (its pictures, the
question, each method's answer and steps), with inline CSS and a small filter script; nothing is
fetched. Every user- or model-supplied string is escaped and isolated for bidirectional text
(`report_html.text`), and long unbroken strings wrap instead of widening the page."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zoom_refine.evals.report_boxes import pictures
from zoom_refine.evals.report_data import (
    BASELINE,
    NO_VALUE,
    Picture,
    changed_by_refinement,
    plain,
    sha_note,
)
from zoom_refine.evals.report_html import attr, text
from zoom_refine.evals.report_summary import summary_section
from zoom_refine.evals.scoring import ordered_methods

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
.image-problem { color: var(--wrong); max-width: 360px; }
bdi { unicode-bidi: isolate; overflow-wrap: anywhere; }
table bdi, .badge bdi, .ids { white-space: normal; }
bdi.sample-id { display: inline-block; max-width: 100%; overflow: hidden; white-space: nowrap;
  text-overflow: ellipsis; vertical-align: bottom; }
"""
"""`bdi` isolates each user-supplied string (also what browsers do by default) and lets a long
unbroken one wrap anywhere, inside tables too, so no id or answer can widen the page; a card's
own id stays on one line, cut with an ellipsis when it is wider than the card."""

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
    thumbnails: Mapping[str, Picture],
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
        sample_card(sample_id, by_id[sample_id], methods, thumbnails.get(sample_id), anchors)
        for sample_id in order
    ]
    changed = sum(any(map(changed_by_refinement, by_id[i].values())) for i in order)
    title = attr(f"{config['benchmark']}: {plain(config.get('model'))}")
    heading = f"{text(config['benchmark'])}: {text(config.get('model'))}"
    data = config.get("data")
    missing = (
        f'<p class="notes">No images: {text(data)} cannot be read from here.</p>'
        if records and not (data and Path(data).exists())
        else ""
    )
    meta = (
        f"data {text(config.get('data'))}{html.escape(sha_note(config))} · "
        f"methods {text(config.get('methods') or methods)} · "
        f"extractor {text(summary.get('extractor'))} · {len(order)} samples"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{CSS}</style></head><body>
<header><h1>{heading}</h1><p class="meta">{meta}</p></header>
<section id="summary">
{summary_section(summary, anchors)}
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


def sample_card(
    sample_id: str,
    runs: Mapping[str, Mapping[str, Any]],
    methods: Sequence[str],
    picture: Picture | None,
    anchors: Mapping[str, str],
) -> str:
    ordered = [runs[m] for m in methods if m in runs]
    first = next((run for run in ordered if run.get("question") is not None), ordered[0])
    changed = [run for run in ordered if changed_by_refinement(run)]
    badges = "".join(
        f' <span class="badge">{text(run["method"])}: {text(run.get("initial_answer"))} → '
        f"{text(run.get('answer'))}</span>"
        for run in changed
    )
    fields = first.get("fields") or {}
    field_text = " · ".join(
        f"{text(key)} {text(value)}"
        for key, value in fields.items()
        if isinstance(value, (str, int, float))
    )
    options = first.get("options") or {}
    if isinstance(options, Mapping):
        option_items = "".join(
            f'<li value="{i}"><b>{text(letter)}</b> {text(option)}</li>'
            for i, (letter, option) in enumerate(options.items(), start=1)
        )
    else:
        option_items = "".join(f"<li>{text(option)}</li>" for option in options)
    truth = first.get("ground_truth")
    rows = "".join(_answer_row(run, options) for run in ordered)
    question = first.get("question")
    return (
        f'<article class="sample" id="{anchors[sample_id]}" data-id="{html.escape(sample_id)}" '
        f'data-changed="{"yes" if changed else "no"}">'
        f'<div class="pictures">{pictures(ordered, picture)}</div>'
        f'<div class="text"><h3><bdi class="sample-id">{html.escape(sample_id)}</bdi> '
        f'<span class="fields">{field_text}</span>{badges}</h3>'
        + (f'<p class="question">{text(question)}</p>' if question is not None else "")
        + (f'<ol class="options">{option_items}</ol>' if option_items else "")
        + f"<p>truth <b>{text(_with_option(truth, options))}</b></p>"
        f'<table class="answers"><thead><tr><th>method</th><th>answer</th><th>first look</th>'
        f"<th>steps</th></tr></thead><tbody>{rows}</tbody></table></div></article>"
    )


def _with_option(letter: Any, options: Any) -> str:
    if isinstance(options, Mapping) and letter in options:
        return f"{letter} ({plain(options[letter])})"
    return plain(letter)


def _answer_row(run: Mapping[str, Any], options: Any) -> str:
    method = text(run.get("method"))
    if run.get("status") == "error":
        return (
            f'<tr><td>{method}</td><td class="error" colspan="3">error: {text(run.get("error"))}'
            "</td></tr>"
        )
    mark, css = ("✓", "right") if run.get("correct") else ("✗", "wrong")
    answer = f'<span class="{css}">{mark} {text(_with_option(run.get("answer"), options))}</span>'
    first = text(run.get("initial_answer")) if run.get("method") != BASELINE else ""
    seconds = run.get("seconds")
    timing = f" · {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    steps = run.get("steps") or []
    stop = f" · stop: {text(run.get('stop_reason'))}" if run.get("stop_reason") else ""
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
    shown = f"call {text(call.get('name'))}"
    if call.get("box") is not None:
        shown += (
            f" box {text(call['box'])} ({text(call.get('box_frame'))}) on {text(call.get('image'))}"
        )
    if call.get("error"):
        return f'{shown} <span class="error">refused: {text(call["error"])}</span>'
    return f"{shown} → {text(call.get('view'))}"


def _view_cost(step: Mapping[str, Any]) -> str:
    """` (1344×768 px, 1,008 visual tokens)`: the view as the processor works on it, when the
    step records it."""
    size = step.get("view_size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(n) is int for n in size)):
        return ""
    tokens = step.get("visual_tokens")
    cost = f", {tokens:,} visual tokens" if type(tokens) is int else ""
    return f" ({size[0]}×{size[1]} px{cost})"


def _step_item(step: Mapping[str, Any]) -> str:
    """One model call (or failed crop) of a run: node, hop, view, what was read, the raw reply."""
    parts = [f"<b>{text(step.get('node'))}</b> hop {text(step.get('hop'))}"]
    if step.get("view"):
        parts.append(f"on {text(step['view'])}{_view_cost(step)}")
    if "answer" in step:
        parts.append(f"answer {text(step.get('answer'))}")
    if step.get("box") is not None:
        parts.append(f"box {text(step['box'])} ({text(step.get('box_frame'))})")
    if step.get("regions"):
        regions = " / ".join(plain(region) for region in step["regions"])
        parts.append(f"regions {text(regions)} (original px)")
    if step.get("crops"):
        parts.append(f"crops {text(step['crops'])}")
    for call in step.get("tool_calls") or []:
        parts.append(_tool_call_text(call))
    if step.get("confidence") is not None:
        parts.append(f"confidence {text(step['confidence'])}")
    if step.get("note"):
        parts.append(f"<i>{text(step['note'])}</i>")
    if isinstance(step.get("seconds"), (int, float)):
        parts.append(f"{step['seconds']:.2f} s")
    raw = step.get("raw")
    reply = f'<pre class="raw">{html.escape(str(raw))}</pre>' if raw is not None else ""
    return f"<li>{' · '.join(parts)}{reply}</li>"
