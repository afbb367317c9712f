"""The report page's summary: accuracy per method and group as a table and a bar chart, the
paired per-sample changes, what was not answered, costs and the benchmark's own means."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from zoom_refine.evals.report_data import BASELINE, NO_VALUE, plain
from zoom_refine.evals.report_html import attr, id_links, percent, text
from zoom_refine.evals.samples import BENCHMARKS
from zoom_refine.evals.scoring import group_order, ordered_methods

METHOD_COLOURS = ("#8c959f", "#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e")
"""Bar colours of the chart, one per method in `ordered_methods` order (baseline first)."""
CHART_LABEL_PX = 190
"""Most width in pixels of the chart's group labels (less when every name is short)."""
CHART_BAR_AREA_PX = 320
CHART_BAR_PX = 12
CHART_LABEL_CHARS = 28
"""Group names longer than this are shortened in the chart (the full name is its tooltip)."""


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
    return f" (ids {', '.join(map(plain, ids))})" if ids else ""


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


def summary_section(summary: Mapping[str, Any], anchors: Mapping[str, str]) -> str:
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
            f'<p class="notes">Left out (Diagram and Table): {text(summary["excluded"])} records.</p>'
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
    head = "".join(f"<th>{text(m)}</th>" for m in shown)
    head += "".join(f"<th>Δ {text(m)}</th>" for m in compared)
    rows = []
    for name in names:
        groups = {m: methods[m]["groups"].get(name) for m in shown}
        cells = "".join(f"<td>{_accuracy_cell(groups[m])}</td>" for m in shown)
        for method in compared:
            cells += f"<td>{_difference(groups[BASELINE], groups[method])}</td>"
        level = next((g["level"] for g in groups.values() if g), "")
        rows.append(f'<tr class="{attr(level)}"><td>{text(name)}</td>{cells}</tr>')
    id_attribute = f' id="{table_id}"' if table_id else ""
    caption = (
        f"Accuracy per group ({text(summary.get('benchmark'))}, "
        f"extractor {text(summary.get('extractor'))})"
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
        f"{percent(group['accuracy'])} "
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
            f'<text x="{x + 16}" y="14">{attr(method)}</text>'
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
            f"<title>{attr(name)}</title>{attr(label)}</text>"
        )
        for position, method in enumerate(shown):
            group = methods[method]["groups"].get(name)
            y = top + position * CHART_BAR_PX
            accuracy = group.get("accuracy") if group else None
            if accuracy is None:
                parts.append(f'<text x="{left + 4}" y="{y + CHART_BAR_PX - 2}">{NO_VALUE}</text>')
                continue
            bar = CHART_BAR_AREA_PX * accuracy
            tip = f"{name}, {method}: {percent(accuracy)} ({group['correct']}/{group['total']})"
            parts.append(
                f'<rect class="bar" data-group="{attr(name)}" data-method="{attr(method)}" '
                f'x="{left}" y="{y + 1}" width="{bar:.2f}" height="{CHART_BAR_PX - 2}" '
                f'fill="{colours[method]}"><title>{attr(tip)}</title></rect>'
                f'<text x="{left + bar + 4:.1f}" y="{y + CHART_BAR_PX - 2}">'
                f"{percent(accuracy, 1)}</text>"
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
        f"fixed {paired['fixed']}{id_links(paired.get('fixed_ids') or [], anchors)}, "
        f"broken {paired['broken']}{id_links(paired.get('broken_ids') or [], anchors)}, "
        f"both right {paired['both_right']}, both wrong {paired['both_wrong']}; "
        f"net {paired['net']:+d}, exact McNemar p = {paired['mcnemar_p']:.3g}."
    )


def _pairs_table(pairs: Mapping[str, Mapping[str, Any]], anchors: Mapping[str, str]) -> str:
    """A row per pair of methods (`first → second`, `scoring.summarize`'s `paired_methods`):
    samples both ran, fixed / broken by the second (linked), both right / wrong, net, McNemar."""
    rows = "".join(
        f"<tr><td>{text(name)}</td><td>{text(pair.get('pairs'))}</td>"
        f"<td>{text(pair.get('fixed'))}"
        f"{id_links(pair.get('fixed_ids') or [], anchors, limit=10)}</td>"
        f"<td>{text(pair.get('broken'))}"
        f"{id_links(pair.get('broken_ids') or [], anchors, limit=10)}</td>"
        f"<td>{text(pair.get('both_right'))}</td><td>{text(pair.get('both_wrong'))}</td>"
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
        f"<tr><td>{text(m)}</td>"
        + "".join(
            f"<td>{len(methods[m].get(key) or [])}"
            f"{id_links(methods[m].get(key) or [], anchors, limit=10)}</td>"
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
        f"<tr><td>{text(m)}</td>"
        + "".join(f"<td>{text(methods[m]['costs'].get(key))}</td>" for key, _ in COST_COLUMNS)
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
    head = "".join(f"<th>{text(m)}</th>" for m in have)
    rows = "".join(
        f"<tr><td>{text(name)}</td>"
        + "".join(f"<td>{percent(methods[m][key].get(name))}</td>" for m in have)
        + "</tr>"
        for name in names
    )
    return (
        f'<table class="means"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr><th>group</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )
