"""`report EXP`: one HTML page for every cell of an experiment folder, side by side.

Per cell and method: accuracy with a 95% bootstrap interval, McNemar's paired test against a
reference cell (same method, same samples), cost per sample. Per hop: answers turned right →
wrong and wrong → right, and each hop's crop against the target box (when the data has a
`target_box` column, as `data synth` writes). The confidence gate: a reliability diagram with ECE
per confidence source, and, for a cell run with `--always-zoom`, the accuracy–cost curve over
thresholds replayed from it (`evals.replay`). Across cells: an accuracy-vs-tokens frontier (SVG
in the page, `frontier.png` beside it). Every table row and chart names its settings (model,
method, max_hops, threshold, prompt set, preset). `results.csv` / `results.parquet` hold the
same records as a tidy table (`evals.tidy`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from zoom_refine.evals import analysis, charts
from zoom_refine.evals.grid import CellData, cell_labels, experiment_cells
from zoom_refine.evals.replay import replay_records
from zoom_refine.evals.synth import parse_target_box
from zoom_refine.evals.tidy import write_results
from zoom_refine.tools.errors import InvalidInputError, ZoomRefineError

REPORT_FILE = "report.html"
FRONTIER_PNG = "frontier.png"
REPLAY_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(21))
"""Thresholds the accuracy–cost curve is replayed at (0, 0.05, …, 1)."""
UNKNOWN_REFERENCE = "--reference {name!r} is not a cell of {folder}; cells: {cells}"
SETTING_KEYS = ("model", "max_hops", "confidence_threshold", "always_zoom", "prompts", "preset")


@dataclass(frozen=True)
class MethodStats:
    """One cell × method: accuracy, its interval, the paired test, costs per sample."""

    cell: CellData
    method: str
    labels: dict[str, Any]
    records: list[dict[str, Any]]
    correct: int
    accuracy: float
    interval: tuple[float, float]
    versus: analysis.McNemar | None
    calls: float
    prompt_tokens: float
    completion_tokens: float
    seconds: float

    @property
    def settings_text(self) -> str:
        """`model … · method … · max_hops … · threshold … · prompts … · preset …`."""
        return settings_text(self.labels, self.method)


@dataclass(frozen=True)
class ExperimentReport:
    page: Path
    frontier_png: Path
    results_csv: Path
    results_parquet: Path
    lines: list[str]
    """A plain-text summary for the terminal, one line per cell × method."""


def settings_text(labels: Mapping[str, Any], method: str | None = None) -> str:
    parts = [f"model {labels.get('model')}"]
    if method:
        parts.append(f"method {method}")
    parts += [
        f"max_hops {labels.get('max_hops')}",
        f"threshold {labels.get('confidence_threshold')}",
        f"prompts {labels.get('prompts')}",
        f"preset {labels.get('preset')}",
    ]
    if labels.get("always_zoom"):
        parts.append("always_zoom")
    parts += [f"{key} {value}" for key, value in labels.items() if key not in SETTING_KEYS]
    return " · ".join(parts)


def method_stats(cells: Sequence[CellData], reference: CellData) -> list[MethodStats]:
    """Every cell × method (methods in the order first recorded)."""
    reference_correct: dict[str, dict[str, bool]] = {}
    for record in reference.records:
        reference_correct.setdefault(record["method"], {})[str(record["id"])] = bool(
            record.get("correct")
        )
    stats = []
    for cell in cells:
        labels = cell_labels(cell)
        for method in dict.fromkeys(str(record["method"]) for record in cell.records):
            mine = [record for record in cell.records if record["method"] == method]
            outcomes = [bool(record.get("correct")) for record in mine]
            usage = [record.get("usage") or {} for record in mine]
            count = len(mine)
            paired = reference_correct.get(method)
            versus = None
            if cell is not reference and paired is not None:
                versus = analysis.mcnemar(
                    paired, {str(r["id"]): bool(r.get("correct")) for r in mine}
                )
            stats.append(
                MethodStats(
                    cell=cell,
                    method=method,
                    labels=labels,
                    records=mine,
                    correct=sum(outcomes),
                    accuracy=analysis.per_sample(sum(outcomes), count),
                    interval=analysis.bootstrap_interval(outcomes),
                    versus=versus,
                    calls=analysis.per_sample(sum(u.get("model_calls", 0) for u in usage), count),
                    prompt_tokens=analysis.per_sample(
                        sum(u.get("input_tokens", 0) for u in usage), count
                    ),
                    completion_tokens=analysis.per_sample(
                        sum(u.get("output_tokens", 0) for u in usage), count
                    ),
                    seconds=analysis.per_sample(
                        sum(float(r.get("seconds") or 0) for r in mine), count
                    ),
                )
            )
    return stats


def dataset_targets(config: Mapping[str, Any]) -> dict[str, tuple[float, float, float, float]]:
    """Sample id → `target_box` from the run's dataset, when it is there and has the column."""
    from zoom_refine.evals.loaders import load_samples
    from zoom_refine.evals.samples import Sample

    data = Path(str(config.get("data", "")))
    if not config.get("data") or not data.exists():
        return {}
    targets = {}
    try:
        for row in load_samples(config["benchmark"], data):
            if isinstance(row, Sample):
                box = parse_target_box(row.source.get("target_box"))
                if box is not None:
                    targets[row.id] = box
    except ZoomRefineError:
        return {}  # a dataset moved or changed since: the report goes on without IoU
    return targets


def write_experiment_report(folder: Path, *, reference: str | None = None) -> ExperimentReport:
    """Write report.html, frontier.png, results.csv and results.parquet into `folder`."""
    cells = experiment_cells(folder)
    chosen = _reference(cells, reference, folder)
    stats = method_stats(cells, chosen)
    targets_by_data: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    for cell in cells:
        key = f"{cell.config.get('benchmark')}|{cell.config.get('data')}"
        if key not in targets_by_data:
            targets_by_data[key] = dataset_targets(cell.config)
    frontier = _frontier_chart(stats)
    png = folder / FRONTIER_PNG
    png.write_bytes(charts.to_png(frontier))
    sections = [
        _cells_section(stats, chosen),
        _hops_section(cells, targets_by_data),
        _calibration_section(cells),
        _replay_section(cells),
        f"<h2>Accuracy vs tokens, across cells</h2>{charts.to_svg(frontier)}"
        f"<p class=note>Also as {FRONTIER_PNG}. Frontier: "
        + escape(", ".join(point.label for point in analysis.pareto_frontier(_cost_points(stats))))
        + "</p>",
    ]
    page = folder / REPORT_FILE
    page.write_text(_page(folder, cells, sections), encoding="utf-8", errors="replace")
    csv_path, parquet_path = write_results(folder, cells)
    lines = [
        f"{s.cell.name}  {s.method}: {s.accuracy:.1%} [{s.interval[0]:.1%}, {s.interval[1]:.1%}] "
        f"of {len(s.records)}, {s.prompt_tokens + s.completion_tokens:.0f} tokens/sample"
        for s in stats
    ]
    return ExperimentReport(page, png, csv_path, parquet_path, lines)


def _reference(cells: Sequence[CellData], name: str | None, folder: Path) -> CellData:
    if name is None:
        return cells[0]
    for cell in cells:
        if name in (cell.name, cell.folder.name):
            return cell
    names = ", ".join(cell.name for cell in cells)
    raise InvalidInputError(UNKNOWN_REFERENCE.format(name=name, folder=folder, cells=names))


def _cost_points(stats: Sequence[MethodStats]) -> list[analysis.CostPoint]:
    return [
        analysis.CostPoint(
            label=f"{s.cell.name} · {s.method}",
            accuracy=s.accuracy,
            tokens_per_sample=s.prompt_tokens + s.completion_tokens,
            calls_per_sample=s.calls,
            seconds_per_sample=s.seconds,
        )
        for s in stats
    ]


def _frontier_chart(stats: Sequence[MethodStats]) -> charts.Chart:
    """One series per method, each point a cell (labelled by its grid values), and the frontier."""
    points = _cost_points(stats)
    series = []
    for method in dict.fromkeys(s.method for s in stats):
        mine = [(s, point) for s, point in zip(stats, points, strict=True) if s.method == method]
        series.append(
            charts.Series(
                label=method,
                points=[(point.tokens_per_sample, point.accuracy) for _, point in mine],
                line=False,
                labels=[short_name(s.cell.name) for s, _ in mine],
            )
        )
    frontier = analysis.pareto_frontier(points)
    series.append(
        charts.Series(
            label="frontier",
            points=[(point.tokens_per_sample, point.accuracy) for point in frontier],
        )
    )
    return charts.Chart(
        title="Accuracy vs tokens per sample (each cell and method)",
        x_label="tokens per sample (prompt + completion)",
        y_label="accuracy",
        series=series,
    )


def short_name(name: str) -> str:
    """A cell's grid values without the field names (`2,0.95`), for point labels."""
    values = [part.partition("=")[2] for part in name.split(",") if "=" in part]
    return ",".join(values) if values else name


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _cells_section(stats: Sequence[MethodStats], reference: CellData) -> str:
    head = (
        "<tr><th>cell</th><th>model</th><th>method</th><th>max_hops</th><th>threshold</th>"
        "<th>prompt set</th><th>preset</th><th>other settings</th><th>accuracy [95% CI]</th>"
        "<th>n</th><th>vs reference (McNemar)</th><th>calls / sample</th>"
        "<th>prompt tokens / sample</th><th>completion tokens / sample</th><th>s / sample</th></tr>"
    )
    rows = []
    for s in stats:
        labels = s.labels
        other = ", ".join(
            f"{key}={value}" for key, value in labels.items() if key not in SETTING_KEYS
        )
        if labels.get("always_zoom"):
            other = ", ".join(filter(None, ["always_zoom", other]))
        if s.versus is None:
            versus = "reference" if s.cell is reference else "—"
        else:
            versus = (
                f"{s.versus.only_reference} only ref right / {s.versus.only_other} only this "
                f"right of {s.versus.samples}; p = {s.versus.p_value:.3g}"
            )
        cells = [
            s.cell.name,
            labels.get("model"),
            s.method,
            labels.get("max_hops"),
            labels.get("confidence_threshold"),
            labels.get("prompts"),
            labels.get("preset"),
            other or "—",
            f"{_pct(s.accuracy)} [{_pct(s.interval[0])}, {_pct(s.interval[1])}]",
            len(s.records),
            versus,
            f"{s.calls:.2f}",
            f"{s.prompt_tokens:.0f}",
            f"{s.completion_tokens:.0f}",
            f"{s.seconds:.2f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in cells) + "</tr>")
    return (
        f"<h2>Cells</h2><p class=note>Reference cell for McNemar's paired test: "
        f"{escape(reference.name)} (same method, samples both ran).</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )


def _hops_section(
    cells: Sequence[CellData], targets_by_data: Mapping[str, Mapping[str, Sequence[float]]]
) -> str:
    head = (
        "<tr><th>cell</th><th>settings</th><th>hop</th><th>samples</th><th>right → wrong</th>"
        "<th>wrong → right</th><th>crops</th><th>mean IoU with target</th>"
        "<th>crops holding the target</th></tr>"
    )
    rows = []
    for cell in cells:
        records = [r for r in cell.records if r["method"] == "zoom-refine"]
        if not records:
            continue
        targets = targets_by_data.get(
            f"{cell.config.get('benchmark')}|{cell.config.get('data')}", {}
        )
        boxes = {item.hop: item for item in analysis.hop_box_scores(records, targets)}
        label = settings_text(cell_labels(cell), "zoom-refine")
        for change in analysis.hop_changes(records):
            box = boxes.get(change.hop)
            values = [
                cell.name,
                label,
                change.hop,
                change.samples,
                change.right_to_wrong,
                change.wrong_to_right,
                box.crops if box else "—",
                f"{box.mean_iou:.3f}" if box else "— (no target_box)",
                _pct(box.holds_target) if box else "—",
            ]
            rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in values) + "</tr>")
    if not rows:
        return "<h2>Per hop</h2><p class=note>No Zoom-Refine records with a refine step.</p>"
    return f"<h2>Per hop</h2><table>{head}{''.join(rows)}</table>"


def _calibration_section(cells: Sequence[CellData]) -> str:
    parts = ["<h2>Confidence calibration</h2>"]
    for cell in cells:
        records = [r for r in cell.records if r["method"] == "zoom-refine"]
        label = settings_text(cell_labels(cell), "zoom-refine")
        for source, pairs in analysis.confidence_pairs(records).items():
            result = analysis.calibration(source, pairs)
            chart = charts.Chart(
                title=f"Reliability: {cell.name} ({source}, ECE {result.ece:.3f})",
                x_label="stated confidence (bin mean)",
                y_label="accuracy",
                series=[
                    charts.Series(
                        label=f"{source} ({result.count} refines)",
                        points=[(b.mean_confidence, b.accuracy) for b in result.bins],
                        labels=[str(b.count) for b in result.bins],
                    )
                ],
                x_range=(0.0, 1.0),
                diagonal=True,
            )
            parts.append(
                f"<figure>{charts.to_svg(chart)}<figcaption>{escape(label)} — confidence source "
                f"{escape(source)}: ECE {result.ece:.3f} over {result.count} refine steps "
                "(numbers: refines per bin)</figcaption></figure>"
            )
    if len(parts) == 1:
        parts.append("<p class=note>No refine step stated a confidence.</p>")
    return "".join(parts)


def _replay_section(cells: Sequence[CellData]) -> str:
    parts = ["<h2>The confidence gate, replayed</h2>"]
    for cell in cells:
        labels = cell_labels(cell)
        if not labels.get("always_zoom"):
            continue
        hops = list(range(1, int(labels.get("max_hops") or 1) + 1))
        replay = replay_records(cell.config, cell.records, hops, REPLAY_THRESHOLDS, run=cell.folder)
        series = []
        for hop in hops:
            rows = [r for r in replay.rows if r.method == "zoom-refine" and r.max_hops == hop]
            points = [
                ((r.prompt_tokens + r.completion_tokens) / max(r.total, 1), r.accuracy)
                for r in rows
            ]
            series.append(
                charts.Series(
                    label=f"max_hops {hop}",
                    points=points,
                    labels=[f"{r.confidence_threshold:g}" for r in rows][:: max(1, len(rows) // 5)],
                )
            )
        chart = charts.Chart(
            title=f"Accuracy vs tokens over thresholds: {cell.name}",
            x_label="tokens per sample",
            y_label="accuracy",
            series=series,
        )
        notes = "".join(f"<li>{escape(note)}</li>" for note in replay.notes)
        parts.append(
            f"<figure>{charts.to_svg(chart)}<figcaption>Replayed from {escape(cell.name)} "
            f"({escape(settings_text(labels, 'zoom-refine'))}), no model call: each line one "
            "max_hops, each point a threshold 0–1 in steps of 0.05.</figcaption></figure>"
            + (f"<ul>{notes}</ul>" if notes else "")
        )
    if len(parts) == 1:
        parts.append(
            "<p class=note>No cell was run with --always-zoom: run one (`zoom-refine eval … "
            "--max-hops H --always-zoom --out EXP/always`) to see every threshold.</p>"
        )
    return "".join(parts)


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2328}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #d0d7de;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f6f8fa}.note{color:#57606a}
figure{display:inline-block;margin:8px 12px 16px 0}figcaption{max-width:560px;color:#57606a}"""


def _page(folder: Path, cells: Sequence[CellData], sections: Sequence[str]) -> str:
    first = cells[0].config
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sha = str(first.get("dataset_sha256", ""))[:12]
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>Experiment {escape(folder.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>Experiment {escape(folder.name)}</h1><p class=note>{len(cells)} cells · benchmark "
        f"{escape(str(first.get('benchmark')))} · data {escape(str(first.get('data')))} "
        f"(sha256 {escape(sha)}…) · written {when}</p>" + "".join(sections) + "</body></html>"
    )
