"""The `scoring` part of `zoom-refine official verify`: the official baseline scorer
(`evaluation/eval_acc.py`) and Zoom-Refine scorer (`zoomrefine/zoomrefine_acc.py`), run on
prediction sets written as the official pipelines write them, against `evals.scoring.summarize`
with the official extractors and `skip_unanswered`, on the records our runner writes for the same
outcomes. Failures are included: a baseline failure is stored officially as "Error: …"; a
Zoom-Refine refine call that fails keeps the first answer in both."""

from __future__ import annotations

import json
import random
import re
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from zoom_refine.evals import official_inputs as inputs
from zoom_refine.evals.official_checks import PartResult, Scale
from zoom_refine.evals.official_extract import OfficialCode
from zoom_refine.evals.scoring import summarize
from zoom_refine.tools.errors import OfficialCheckoutError

_COUNTED = re.compile(r"Entries successfully extracted and compared:\s*(\d+)")
_CORRECT = re.compile(r"Number of correct answers:\s*(\d+)")


def official_baseline_counts(
    code: OfficialCode, folder: Path, cases: list[tuple[str, str | None]]
) -> tuple[int, int]:
    """(correct, denominator) that `evaluate_predictions` prints for a baseline prediction set
    (None replies are failures, stored as the official baseline stores them)."""
    entries = [
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": truth}],
            "images": ["image.png"],
            "predicted_answer": reply if reply is not None else inputs.FAILURE_TEXTS[i % 3],
        }
        for i, (truth, reply) in enumerate(cases)
    ]
    path = folder / "baseline.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    code.recorder.lines.clear()
    code.evaluate_predictions(str(path), 1, len(entries), verbose=False)
    printed = "\n".join(code.recorder.lines)
    counted, correct = _COUNTED.search(printed), _CORRECT.search(printed)
    if counted is None:
        raise OfficialCheckoutError("evaluate_predictions printed no count of compared entries")
    return (int(correct.group(1)) if correct else 0), int(counted.group(1))


def baseline_records(cases: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """Our runner's records of the same outcomes (a failure is an error record)."""
    return [
        {
            "id": str(i),
            "method": "baseline",
            "ground_truth": truth,
            "fields": {},
            "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
            "status": "ok" if reply is not None else "error",
            "raw": reply,
            "answer": None,
            "initial_answer": None,
        }
        for i, (truth, reply) in enumerate(cases)
    ]


def official_zoom_counts(
    code: OfficialCode, folder: Path, cases: list[inputs.ZoomCase]
) -> tuple[int, int]:
    """(correct, denominator) of `calculate_accuracies`' combined accuracy for the records the
    official pipeline writes for `cases` (its parsers fill `Answer` / `Rechecked Answer`)."""
    base = code.base
    entries = []
    for case in cases:
        answer = None if case.kind == "first_failed" else base["extract_letter_choice"](case.first)
        rechecked = base["parse_rechecked_answer"](case.second) if case.kind == "ok" else None
        entries.append(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": case.truth},
                ],
                "images": ["image.png"],
                "Answer": answer,
                "Rechecked Answer": rechecked,
                "Error": {"refine_failed": "CUDA Out of Memory"}.get(case.kind),
            }
        )
    path = folder / "zoomrefine.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    code.recorder.lines.clear()
    found = code.calculate_accuracies(str(path))
    counts = found.get("counts", {}) if isinstance(found, dict) else {}
    return int(counts.get("correct_combined", 0)), int(counts.get("total", 0))


def zoom_records(cases: list[inputs.ZoomCase]) -> list[dict[str, Any]]:
    """Our runner's records for the same outcomes, as the `official` preset's graph ends them."""
    records: list[dict[str, Any]] = []
    for i, case in enumerate(cases):
        localize = {"node": "localize", "hop": 0, "raw": case.first}
        steps: list[dict[str, Any]] = [localize]
        if case.kind == "ok":
            steps.append({"node": "refine", "hop": 1, "raw": case.second})
        elif case.kind == "refine_failed":
            steps.append({"node": "refine", "hop": 1, "raw": None, "note": "refine call failed"})
        status = "error" if case.kind == "first_failed" else "ok"
        records.append(
            {
                "id": str(i),
                "method": "zoom-refine",
                "ground_truth": case.truth,
                "fields": {},
                "options": {},
                "status": status,
                "raw": None,
                "steps": steps if status == "ok" else [],
            }
        )
    return records


def ours(records: list[dict[str, Any]], method: str, extractor: Any) -> tuple[int, int]:
    summary = summarize("hr-bench", records, extractor=extractor, skip_unanswered=True)
    overall = summary["methods"].get(method, {}).get("groups", {}).get("overall", {})
    return int(overall.get("correct", 0)), int(overall.get("total", 0))


def verify_scoring(code: OfficialCode, rng: random.Random, scale: Scale) -> PartResult:
    result = PartResult("scoring")
    with tempfile.TemporaryDirectory(prefix="zoom-refine-verify-") as name:
        folder = Path(name)
        for cases in inputs.baseline_sets(rng, scale.sets):
            result.compare(
                partial("baseline set (truth, reply; None = failed) {!r}".format, cases),
                partial(official_baseline_counts, code, folder, cases),
                partial(ours, baseline_records(cases), "baseline", "official-baseline"),
            )
        for zoom in inputs.zoom_sets(rng, scale.sets):
            result.compare(
                partial("zoom-refine set {!r}".format, zoom),
                partial(official_zoom_counts, code, folder, zoom),
                partial(ours, zoom_records(zoom), "zoom-refine", "official-zoomrefine"),
            )
    return result
