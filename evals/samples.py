"""One benchmark question as every loader yields it, and the record of a row that could not be read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Benchmark = Literal["hr-bench", "mme-realworld", "vstar"]
BENCHMARKS: tuple[Benchmark, ...] = ("hr-bench", "mme-realworld", "vstar")


@dataclass(frozen=True)
class Sample:
    """A multiple-choice question about one image."""

    id: str
    """Unique within the benchmark file (HR-Bench `index`, MME `Question_id`, V* file stem)."""
    image: str | bytes
    """A path inside the dataset's root, or the encoded image bytes (TSV / parquet cells)."""
    question: str
    options: dict[str, str]
    """Letter → option text, in order (A, B, …)."""
    answer: str
    """The correct letter."""
    fields: dict[str, str] = field(default_factory=dict)
    """Category fields for the report: HR-Bench `category` (single / cross), `cycle_category`;
    MME-RealWorld `task`, `subtask`, `category`; V* `category`."""
    source: dict[str, Any] = field(default_factory=dict)
    """The source row as read, without image data (for traces)."""


@dataclass(frozen=True)
class BadRow:
    """A row that could not become a Sample: reported with its id, never a crash of the run."""

    id: str
    """The row's own id, or, when it has none it can use or an earlier item holds it, a label
    naming where the row is (`0 @ line 5`, `line 7`): unique among the items of one load."""
    reason: str
