"""Plain-text tables of a scoring summary (`summarize`'s output): a row per group, a column per
method, and footers for the benchmark's extra means, unparsed answers, errors and paired changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zoom_refine.evals.scoring import group_order, ordered_methods


def format_table(summary: Mapping[str, Any], *, detail: bool = False) -> str:
    """Plain-text table: a row per group; columns baseline, zoom-refine, difference (points).

    MME-RealWorld's per-category rows appear only with `detail`."""
    methods: dict[str, Any] = summary.get("methods", {})
    benchmark = summary.get("benchmark")
    show = ordered_methods(methods)
    hide_categories = benchmark == "mme-realworld" and not detail
    names: list[str] = []
    for method in show:
        for name, group in methods[method]["groups"].items():
            if name not in names and not (hide_categories and group["level"] == "category"):
                names.append(name)
    if benchmark in ("hr-bench", "vstar", "mme-realworld"):
        names.sort(key=lambda name: group_order(benchmark, name))
    diff = "baseline" in methods and "zoom-refine" in methods
    header = ["group", *show, *(["diff"] if diff else [])]
    rows = [header]
    for name in names:
        cells = [name]
        values: dict[str, float | None] = {}
        for method in show:
            group = methods[method]["groups"].get(name)
            values[method] = group["accuracy"] if group else None
            cells.append(_cell(group))
        if diff:
            cells.append(_points(values["baseline"], values["zoom-refine"]))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"{benchmark} (extractor: {summary.get('extractor')}"
        + (", without Diagram and Table" if summary.get("exclude_diagram_table") else "")
        + ")"
    ]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    lines.extend(_footer(summary, show))
    return "\n".join(lines)


def _cell(group: Mapping[str, Any] | None) -> str:
    if not group or group["accuracy"] is None:
        return "—"
    return f"{100 * group['accuracy']:.2f} ({group['correct']}/{group['total']})"


def _points(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "—"
    return f"{100 * (after - before):+.2f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _footer(summary: Mapping[str, Any], show: Sequence[str]) -> list[str]:
    methods: dict[str, Any] = summary.get("methods", {})
    lines: list[str] = []
    if summary.get("benchmark") == "mme-realworld":
        for method in show:
            means = methods[method].get("subtask_mean", {})
            parts = ", ".join(f"{name} {_percent(value)}" for name, value in means.items())
            lines.append(f"unweighted mean over subtasks, {method}: {parts}")
    if summary.get("benchmark") == "hr-bench":
        for method in show:
            info = methods[method]
            means = info.get("cycle_mean", {})
            parts = ", ".join(f"{name} {_percent(value)}" for name, value in means.items())
            differs = info.get("cycle_mean_differs") or []
            agree = (
                f"differs from plain accuracy in {', '.join(differs)}"
                if differs
                else "equal to plain accuracy"
            )
            lines.append(f"mean over cycles, {method}: {parts} ({agree})")
    for method in show:
        info = methods[method]
        lines.append(
            f"{method}: {len(info['unparsed_ids'])} unparsed, {len(info['error_ids'])} errors "
            "(counted wrong)"
        )
    if summary.get("excluded"):
        lines.append(f"left out (Diagram and Table): {summary['excluded']} records")
    for method in show:
        if costs := methods[method].get("costs"):
            lines.append(
                f"{method} per sample: {costs['tool_calls_per_sample']:.2f} tool calls, "
                f"{costs['images_per_sample']:.2f} images, {costs['model_calls_per_sample']:.2f} "
                f"model calls, {costs['tokens_per_sample']:.0f} tokens"
            )
    pairs = summary.get("paired_methods") or {"baseline → zoom-refine": summary.get("paired")}
    for name, paired in pairs.items():
        if paired and paired.get("pairs"):
            label = "paired" if name == "baseline → zoom-refine" else f"paired {name}"
            lines.append(
                f"{label} ({paired['pairs']} samples): fixed {paired['fixed']}, broken "
                f"{paired['broken']}, both right {paired['both_right']}, both wrong "
                f"{paired['both_wrong']}, McNemar p = {paired['mcnemar_p']:.3g}"
            )
    return lines
