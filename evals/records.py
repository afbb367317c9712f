"""The prediction record: one line of predictions.jsonl per finished (sample, method).

A `TypedDict`, not a class: the records are JSON lines on disk, and every reader (scoring, replay,
reports, the CLI) takes them as the plain dicts `json.loads` gives back, while mypy checks the
three writers here. One record type in three shapes, told apart by `status` and `error`:

- a finished run (`result_record`): `status` "ok", the answers, views, steps, usage and seconds;
- a run that raised (`error_record`): `status` "error", `error` the exception in one line;
- a row the loader could not read (`bad_row_record`): `status` "error", `error` "bad row: …",
  without the sample's question, options and image (there is no sample).

The keys and values are those the first version wrote (tests/golden/records holds its lines;
since then only `thread_id` and the `agent` method were added), so old run folders load, resume
and score unchanged.
"""

# No `from __future__ import annotations` here: string annotations would hide `NotRequired` from
# the runtime, and `PredictionRecord.__required_keys__` would list every key.
import hashlib
import traceback
from collections.abc import Mapping
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

from zoom_refine.agent.state import StepRecord, StopReason, ViewRecord
from zoom_refine.evals.samples import BadRow, Sample

Method = Literal["zoom-refine", "baseline", "agent"]
"""The graphs an eval runs (`evals.runner.METHODS` names them for `--method`)."""
RecordStatus = Literal["ok", "error"]
"""`ok`: the graph finished (its answer may still be unparsed); `error`: it raised, or the row was
bad. `--retry-errors` reruns the `error` records."""
Key = tuple[str, str]
"""(sample id, method): what a record is stored under; a later line with the same key wins."""


class PredictionRecord(TypedDict):
    """One (sample, method) as predictions.jsonl holds it."""

    id: str
    """The sample's id (a bad row's label, e.g. `4 @ line 6`)."""
    method: Method
    """Which graph ran."""
    status: RecordStatus
    """`ok` or `error` (see `RecordStatus`)."""
    error: str | None
    """`<ExceptionType>: <message> at <file>:<line>`, `bad row: <reason>`, or None when ok."""
    answer: str | None
    """The final answer (a letter for multiple choice); None when unparsed or an error."""
    correct: bool
    """`answer == ground_truth` (the strict rule; `evals.scoring` rescores with others)."""
    ground_truth: str | None
    """The benchmark's answer; None for a bad row."""
    fields: dict[str, str]
    """The sample's category fields for the report (empty for a bad row)."""
    raw: str | None
    """The last model reply verbatim; None for an error or a run without steps."""
    question: NotRequired[str]
    """The question as the loader read it (absent for a bad row)."""
    options: NotRequired[dict[str, str]]
    """Letter → option text (absent for a bad row)."""
    image: NotRequired[str]
    """The image's path as given, or `sha256:<hex>` of its bytes (absent for a bad row)."""
    initial_answer: NotRequired[str | None]
    """The first look's answer (ok records only)."""
    confidence: NotRequired[float | None]
    """The confidence (0–1) in the final answer when stated (ok records only)."""
    stop_reason: NotRequired[StopReason | None]
    """Why the run ended (ok records only; None when the graph set none)."""
    views: NotRequired[list[ViewRecord]]
    """Every view shown, the full image first (ok records only)."""
    steps: NotRequired[list[StepRecord]]
    """One record per model call or failed crop (ok records only)."""
    usage: NotRequired[dict[str, int]]
    """Summed counters: model calls, tokens, tiles (ok records only)."""
    seconds: NotRequired[float]
    """Wall time of the run in seconds, to the millisecond (absent for a bad row)."""
    thread_id: NotRequired[str]
    """The run's trace thread (`evals.runner.run_thread_id`), with `--trace-db` only."""


def record_key(record: Mapping[str, object]) -> Key:
    """(id, method) as text: the one key a record is stored, resumed and compared under."""
    return (str(record["id"]), str(record["method"]))


def result_record(
    sample: Sample, method: Method, result: Mapping[str, Any], seconds: float
) -> PredictionRecord:
    """A finished run: the graph's output `result`, which took `seconds` of wall time."""
    steps = result.get("steps", [])
    return {
        "id": sample.id,
        "method": method,
        "ground_truth": sample.answer,
        "fields": sample.fields,
        "question": sample.question,
        "options": sample.options,
        "image": image_reference(sample.image),
        "status": "ok",
        "error": None,
        "answer": result.get("answer"),
        "correct": result.get("answer") == sample.answer,
        "initial_answer": result.get("initial_answer"),
        "confidence": result.get("confidence"),
        "stop_reason": result.get("stop_reason"),
        "raw": steps[-1].get("raw") if steps else None,
        "views": result.get("views", []),
        "steps": steps,
        "usage": result.get("usage", {}),
        "seconds": round(seconds, 3),
    }


def error_record(
    sample: Sample, method: Method, error: BaseException, seconds: float
) -> PredictionRecord:
    """A run that raised `error` after `seconds`: its type, message and innermost place."""
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    place = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
    return {
        "id": sample.id,
        "method": method,
        "ground_truth": sample.answer,
        "fields": sample.fields,
        "question": sample.question,
        "options": sample.options,
        "image": image_reference(sample.image),
        "status": "error",
        "error": f"{type(error).__name__}: {error}{place}",
        "answer": None,
        "correct": False,
        "raw": None,
        "seconds": round(seconds, 3),
    }


def bad_row_record(row: BadRow, method: Method) -> PredictionRecord:
    """A row the loader could not read, counted wrong (`--bad-rows wrong`)."""
    return {
        "id": row.id,
        "method": method,
        "status": "error",
        "error": f"bad row: {row.reason}",
        "answer": None,
        "correct": False,
        "ground_truth": None,
        "fields": {},
        "raw": None,
    }


def image_reference(image: str | bytes) -> str:
    """A path as given, or `sha256:<hex>` for image bytes (never the bytes themselves)."""
    if isinstance(image, bytes):
        return "sha256:" + hashlib.sha256(image).hexdigest()
    return str(image)
