"""`zoom-refine report DIR [DIR…]`: accuracy per method and category, as Markdown and HTML.

Several folders (shards of one run) are merged; runs made with other result-changing settings,
another model or another benchmark are refused in one line (`report_data.merge_runs`).
`report.html` is one self-contained file (inline CSS, JS, SVG and JPEG data; nothing fetched, so
it works offline and can be mailed): a summary table and a bar chart of accuracy per method and
group at the top (`report_summary`), then one card per sample (`report_page`) with its image as a
thumbnail, every crop the model zoomed into drawn over it as a numbered box (`report_boxes`), the
question, each method's answer and its steps. A checkbox keeps only the samples whose answer
refinement changed. Any number of methods and of crops per sample is laid out the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoom_refine.evals.report_boxes import BOX_STROKE_PX, BOX_TAG_PX
from zoom_refine.evals.report_data import (
    BASELINE,
    NO_VALUE,
    THUMBNAIL_SIDE,
    NoThumbnail,
    Picture,
    Thumbnail,
    changed_by_refinement,
    crop_views,
    merge_runs,
    plain,
    sample_thumbnails,
    sha_note,
    thumbnail,
)
from zoom_refine.evals.report_page import render_html
from zoom_refine.evals.report_summary import (
    CHART_BAR_AREA_PX,
    CHART_BAR_PX,
    CHART_LABEL_CHARS,
    CHART_LABEL_PX,
    METHOD_COLOURS,
    paired_sentence,
    summary_groups,
)
from zoom_refine.evals.scoring import summarize
from zoom_refine.evals.tables import format_table
from zoom_refine.tools.errors import RunsDifferError
from zoom_refine.tools.files import replace_text

__all__ = [
    "BASELINE",
    "BOX_STROKE_PX",
    "BOX_TAG_PX",
    "CHART_BAR_AREA_PX",
    "CHART_BAR_PX",
    "CHART_LABEL_CHARS",
    "CHART_LABEL_PX",
    "METHOD_COLOURS",
    "NO_VALUE",
    "THUMBNAIL_SIDE",
    "NoThumbnail",
    "Picture",
    "RunsDifferError",
    "Thumbnail",
    "changed_by_refinement",
    "crop_views",
    "merge_runs",
    "paired_sentence",
    "plain",
    "render_html",
    "render_markdown",
    "sample_thumbnails",
    "summary_groups",
    "thumbnail",
    "write_report",
]


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
    replace_text(path, text, errors="backslashreplace")  # a failed write leaves the old one


def render_markdown(config: dict[str, Any], table: str, paired: Mapping[str, Any]) -> str:
    """The run's settings, the plain-text table and the paired changes, in words."""
    return "\n".join(
        [
            f"# {config['benchmark']}: {config.get('model')}",
            "",
            f"Data `{config.get('data')}`{sha_note(config, '`')}, "
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
