"""An experiment as one tidy table: one row per cell × method × sample, settings as columns.

`results.csv` and `results.parquet` (the same rows) are written beside the report, for pandas:
`pd.read_parquet("exp/results.parquet").groupby(["max_hops", "method"]).correct.mean()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from zoom_refine.evals.grid import CellData, cell_labels

SAMPLE_COLUMNS = (
    "id",
    "status",
    "answer",
    "ground_truth",
    "correct",
    "initial_answer",
    "confidence",
    "stop_reason",
    "hops",
    "model_calls",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
)
"""Per-sample columns, after the cell's settings (`grid.cell_labels`) and `method`."""


def record_row(cell: CellData, record: Mapping[str, Any]) -> dict[str, Any]:
    """One record as a row: the cell, its settings, the method, then the sample's figures
    (`hops`: crops made; tokens and calls: the sample's totals; seconds: its wall time)."""
    usage = record.get("usage") or {}
    row: dict[str, Any] = {"cell": cell.name, **cell_labels(cell), "method": record.get("method")}
    row |= {
        "id": str(record.get("id")),
        "status": record.get("status"),
        "answer": record.get("answer"),
        "ground_truth": record.get("ground_truth"),
        "correct": bool(record.get("correct")),
        "initial_answer": record.get("initial_answer"),
        "confidence": record.get("confidence"),
        "stop_reason": record.get("stop_reason"),
        "hops": max(0, len(record.get("views") or []) - 1),
        "model_calls": int(usage.get("model_calls", 0)),
        "prompt_tokens": int(usage.get("input_tokens", 0)),
        "completion_tokens": int(usage.get("output_tokens", 0)),
        "seconds": float(record.get("seconds") or 0.0),
    }
    for name, value in (record.get("fields") or {}).items():
        row.setdefault(str(name), value)
    return row


def results_frame(cells: Sequence[CellData]) -> pd.DataFrame:
    """Every cell's records as one DataFrame (columns in a fixed order; missing settings NA)."""
    rows = [record_row(cell, record) for cell in cells for record in cell.records]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # mixed types in a settings column (a grid over max_patches with `none`) stay readable
    for column in frame.columns:
        if frame[column].dtype == object and column not in SAMPLE_COLUMNS:
            values = {type(value) for value in frame[column].dropna()}
            if len(values) > 1:
                frame[column] = frame[column].map(
                    lambda value: None if value is None else str(value)
                )
    return frame


def write_results(folder: Path, cells: Sequence[CellData]) -> tuple[Path, Path]:
    """Write `folder`/results.csv and results.parquet; returns both paths."""
    frame = results_frame(cells)
    csv_path, parquet_path = folder / "results.csv", folder / "results.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(parquet_path, index=False)
    return csv_path, parquet_path
