"""Scoring rules: answer extraction and per-benchmark accuracy, from `predictions.jsonl` records.

Written after reading each benchmark's reference evaluation (paraphrased; no code copied).

**Extractors** (`extract_choice`; the rules live in `evals.extractors`):

- `strict`: our `parse_choice` (with `rechecked=True`: a refine reply's `Rechecked Answer` wins).
  In `summarize`, `strict` scores the letter the run recorded (`answer`), which the graph took
  with this same parser (falling back to its preliminary answer where a refine reply had none).
- `official`, MME-RealWorld (yfzhang114/MME-RealWorld, `evaluation/eval_your_results.py`,
  `extract_characters_regex`; the same function in ZoomEye's `eval_results_mme-realworld.py`):
  1. strip the reply; delete (case-sensitive, anywhere) "The best answer is", "The correct answer
     is", "The answer is", "The answer". Two missing commas in the official list glue the other
     four prefixes into "The best option isThe correct option is" and "Best answer:Best option:",
     so "The best option is" and "Best answer:" are **not** removed ("Best answer: C" reads `B`);
  2. more than 10 words and no capital A–E anywhere: nothing;
  3. else the **first capital A–E anywhere** ("Answer: B" reads `A`, "Based on …" reads `B`,
     "THE ANSWER IS B" reads `E`), whether or not that letter is offered;
  4. no capital A–E: the first choice `(X) text` that *contains* the lower-cased reply gives
     `X` — so an empty reply (or one that was only a prefix: "The answer is") reads `A`, and a
     lone lower-case "e" reads the first choice whose text has an "e".
- `official`, HR-Bench and V*: VLMEvalKit's exact matching (`can_infer`, in
  `vlmeval/utils/matching_util.py` as it stood from 2024-03 until 2025-08-04, the period of the
  published HR-Bench / ZoomEye / Zoom-Refine numbers). HR-Bench's own repository
  (DreamMr/HR-Bench, `hrbench/vlmeval/dataset/utils/hrbench.py`) asks an LLM judge for yes/no,
  which cannot be reproduced offline; VLMEvalKit's HRBench scores with this rule. The V* repo
  (penghao-wu/vstar, `vstar_bench_eval.py`) picks the option with the lowest loss and has no text
  rule; VLMEvalKit's VStarBench scores generations with this rule. The rule:
  1. a refusal phrase ("Cannot determine the answer", three more) reads `Z` (no answer);
  2. replace each of `.()[],:;!*#{}` by a space and split on whitespace; if exactly one offered
     letter is a token, that letter — so an article "A" counts ("A red car." reads `A`; the
     quantifier guard only runs with VERBOSE set) and lower-case letters never do;
  3. no offered letter but a token "Z": `Z` (no answer);
  4. otherwise (none, or two or more letters): the option whose text occurs in the lower-cased
     reply, if exactly one does ("dark blue" with options "blue" and "dark blue" is nothing).
  `Z` is returned as None here: VLMEvalKit scores it wrong, and so do we, as unparsed.
  Later changes (a letter must be among the last 4 tokens; a length cap on text matching; an
  "answer is X" regex, 2025-08 and 2026-06) are not reproduced.
- `official-baseline`: the Zoom-Refine repository's baseline scorer (xavier-yu114/Zoom-Refine
  fc6c1ad, `evaluation/eval_acc.py` lines 60–85), any benchmark, any method: the **first letter
  A–E in either case anywhere** in the reply (the last step's), offered or not ("The answer is B"
  reads `E`, from "The"; "Based on" reads `B`). A failed sample is scored as the official
  baseline stores it, the text "Error: …" (`evaluation/base.py`), which reads `E` and is counted.
  A reply with no such letter, and a record whose truth is not one letter A–E, are left out of
  that script's denominator: `skip_unanswered` does that.
- `official-zoomrefine`: each method by its own official script. Zoom-Refine records as
  `zoomrefine/zoomrefine_acc.py` (lines 37–77) scores them: the first answer is the official
  first-call letter of the localize reply, the rechecked answer the official refine letter of the
  first refine reply (none when there was no refine, or its call failed); the final letter is
  the rechecked one, else the first; a record without a first answer is left out of its
  denominator (`skip_unanswered`). A refine call that failed under the `official` preset keeps
  the first answer and is counted, as the official record keeps `Answer`; an error record holds
  no steps, hence no first answer, and is left out. The truth is compared as it is. Baseline
  records as `official-baseline`.

With `skip_unanswered`, `official-baseline` and `official-zoomrefine` give the official scripts'
correct / denominator on every input, failures included (`tests/test_official_golden.py` replays
their outputs; `zoom-refine official verify` re-runs them).

**Aggregates** (`summarize`): every record counts. An unparseable answer (None) is wrong and
its id is listed; a record with status "error" (a crash, a bad dataset row) is wrong and listed
separately. Nothing is dropped from a denominator, unless `skip_unanswered` is set: then, as the
official Zoom-Refine scorers do, every record without a first answer is left out of every count
and listed as skipped: a Zoom-Refine record whose localize reply gave no letter
(`initial_answer`, `zoomrefine/zoomrefine_acc.py` lines 61–63; its final answer is the rechecked
one, else that first one, as ours), a baseline record whose extracted letter is None
(`evaluation/eval_acc.py` lines 81–85), and, with the `strict` and `official` extractors, every
error record. (The official scripts count some failures: the baseline's "Error: …" text reads
`E`, and a Zoom-Refine record keeps its first answer when a later step failed; the two official
extractors above score those as the scripts do.) Off by default: skipping flatters a model that
often fails to answer.

- HR-Bench: per `category` (`single` = FSP, `cross` = FCP) and overall. The official number
  (DreamMr/HR-Bench `image_mcq.py`, VLMEvalKit `report_acc_hrbench`) is the mean over the
  `cycle_category` groups of each group's per-cycle accuracy. With equal-size cycles (the full
  benchmark) it equals plain accuracy over all rows; `summarize` reports both and whether they
  agree. Where a cycle lacks a group (partial runs only), we average over the cycles that have
  it; the official code would divide by all cycles.
- MME-RealWorld: sample-weighted accuracy per task (Perception / Reasoning), per task and subtask
  (the domain: Monitoring, OCR with Complex Context, Diagram and Table, Autonomous_Driving,
  Remote Sensing), per category, and overall, as `eval_your_results.py` prints them; plus the
  unweighted mean over subtasks (per task, and over all task/subtask pairs), the "Avg-C" of the
  paper. Categories are grouped as the official script does: lower-cased, and every
  "x/attribute/…" merged into "x/attribute". `exclude_diagram_table` leaves out every record
  whose task or subtask is "Diagram and Table" (ZoomEye's evaluation skips that domain).
- V*: per `category` (direct_attributes, relative_position) and micro overall (all rows).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from zoom_refine.agent.parsing import parse_choice
from zoom_refine.evals.extractors import (
    mme_realworld_official,
    official_baseline,
    official_step_answers,
    vlmevalkit_official,
)
from zoom_refine.evals.records import record_key
from zoom_refine.evals.samples import Benchmark

Extractor = Literal["strict", "official", "official-baseline", "official-zoomrefine"]
EXTRACTORS: tuple[Extractor, ...] = (
    "strict",
    "official",
    "official-baseline",
    "official-zoomrefine",
)
OFFICIAL_FAILURE_TEXT = "Error: "
"""How the official baseline stores a failed sample's reply: every failure text it writes
starts so (`evaluation/base.py`), and its scorer reads `E` from it."""
_TRUTH = re.compile(r"[A-E]")
METHOD_ORDER = ("baseline", "zoom-refine", "agent")
UNKNOWN = "(unknown)"
DIAGRAM_TABLE = "diagram and table"
HR_CATEGORY_NAMES = {"single": "FSP", "cross": "FCP"}
MME_TASK_ORDER = ("Perception", "Reasoning")
MME_SUBTASK_ORDER = (
    "Monitoring",
    "OCR with Complex Context",
    "Diagram and Table",
    "Autonomous_Driving",
    "Remote Sensing",
)
VSTAR_ORDER = ("direct_attributes", "relative_position")


# --- extraction ----------------------------------------------------------------------------------


def extract_choice(
    text: str | None,
    options: Mapping[str, str],
    *,
    extractor: Extractor = "strict",
    benchmark: Benchmark,
) -> str | None:
    """The option letter a reply chose, by the named rule (see the module docstring), or None."""
    if text is None:
        return None
    if extractor == "strict":
        return parse_choice(text, options.keys(), rechecked=True)
    if extractor in ("official-baseline", "official-zoomrefine"):
        return official_baseline(text)
    if benchmark == "mme-realworld":
        return mme_realworld_official(text, options)
    return vlmevalkit_official(text, options)


# --- scoring records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One record, judged."""

    id: str
    method: str
    letter: str | None
    correct: bool
    error: bool
    fields: dict[str, str] = field(default_factory=dict)
    answered: bool = True
    """Whether the record has a first answer (what `skip_unanswered` keeps; module docstring)."""

    @property
    def unparsed(self) -> bool:
        return not self.error and self.letter is None


def score_records(
    benchmark: Benchmark | None,
    records: Iterable[Mapping[str, Any]],
    *,
    extractor: Extractor = "strict",
    exclude_diagram_table: bool = False,
) -> tuple[list[Scored], int]:
    """Judge each record (the last one wins per (id, method)); returns them and how many
    records `exclude_diagram_table` left out."""
    if extractor != "strict" and benchmark is None:
        raise ValueError("the official extractor needs the benchmark")
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        latest[record_key(record)] = record
    scored: list[Scored] = []
    excluded = 0
    for record in latest.values():
        fields = {str(key): str(value) for key, value in (record.get("fields") or {}).items()}
        if exclude_diagram_table and _is_diagram_table(fields):
            excluded += 1
            continue
        scored.append(_score(benchmark, record, fields, extractor))
    return scored, excluded


def _score(
    benchmark: Benchmark | None,
    record: Mapping[str, Any],
    fields: dict[str, str],
    extractor: Extractor,
) -> Scored:
    if extractor == "official-zoomrefine" and record.get("method") != "baseline":
        return _score_zoomrefine_script(record, fields)
    if extractor in ("official-baseline", "official-zoomrefine"):
        return _score_baseline_script(record, fields)
    error = record.get("status") == "error"
    letter: str | None = None
    if not error:
        if extractor != "strict":
            assert benchmark is not None
            options = {str(k): str(v) for k, v in (record.get("options") or {}).items()}
            letter = extract_choice(
                record.get("raw"), options, extractor=extractor, benchmark=benchmark
            )
        else:
            answer = record.get("answer")
            letter = str(answer).strip().upper() if answer is not None else None
            letter = letter or None
    truth = record.get("ground_truth")
    correct = letter is not None and truth is not None and letter == str(truth).strip().upper()
    first = letter if record.get("method") == "baseline" else record.get("initial_answer")
    return Scored(
        id=str(record["id"]),
        method=str(record["method"]),
        letter=letter,
        correct=correct,
        error=error,
        fields=fields,
        answered=not error and first is not None,
    )


def _score_baseline_script(record: Mapping[str, Any], fields: dict[str, str]) -> Scored:
    """`evaluation/eval_acc.py` (module docstring): a failure reads as its "Error: …" text;
    `answered` is whether the script counts the record."""
    error = record.get("status") == "error"
    raw = OFFICIAL_FAILURE_TEXT if error else record.get("raw")
    letter = official_baseline(raw) if isinstance(raw, str) else None
    truth = record.get("ground_truth")
    truth_letter = str(truth).strip().upper() if isinstance(truth, str) else ""
    valid_truth = _TRUTH.fullmatch(truth_letter) is not None
    return Scored(
        id=str(record["id"]),
        method=str(record["method"]),
        letter=letter,
        correct=valid_truth and letter == truth_letter,
        error=error,
        fields=fields,
        answered=valid_truth and letter is not None,
    )


def _score_zoomrefine_script(record: Mapping[str, Any], fields: dict[str, str]) -> Scored:
    """`zoomrefine/zoomrefine_acc.py` (module docstring), from the localize and refine replies
    in the record's steps; `answered` is whether the script counts the record."""
    first, rechecked = official_step_answers(record.get("steps") or [])
    letter = rechecked if rechecked is not None else first
    truth = record.get("ground_truth")
    return Scored(
        id=str(record["id"]),
        method=str(record["method"]),
        letter=letter,
        correct=truth is not None and letter == truth,
        error=record.get("status") == "error",
        fields=fields,
        answered=truth is not None and first is not None,
    )


def _is_diagram_table(fields: Mapping[str, str]) -> bool:
    return any(
        " ".join(fields.get(key, "").lower().split()) == DIAGRAM_TABLE
        for key in ("task", "subtask")
    )


# --- groups --------------------------------------------------------------------------------------


@dataclass
class _Tally:
    level: str
    correct: int = 0
    total: int = 0
    unparsed: int = 0
    errors: int = 0

    def add(self, item: Scored) -> None:
        self.total += 1
        self.correct += int(item.correct)
        self.unparsed += int(item.unparsed)
        self.errors += int(item.error)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "unparsed": self.unparsed,
            "errors": self.errors,
        }


def group_names(benchmark: Benchmark, fields: Mapping[str, str]) -> list[tuple[str, str]]:
    """(group name, level) pairs a record belongs to, besides "overall"."""
    if benchmark == "hr-bench":
        category = fields.get("category") or UNKNOWN
        return [(HR_CATEGORY_NAMES.get(category.lower(), category), "category")]
    if benchmark == "vstar":
        return [(fields.get("category") or UNKNOWN, "category")]
    task = fields.get("task") or UNKNOWN
    subtask = fields.get("subtask") or UNKNOWN
    category = mme_category(fields.get("category") or UNKNOWN)
    return [
        (task, "task"),
        (f"{task} / {subtask}", "subtask"),
        (f"{task} / {subtask} / {category}", "category"),
    ]


def mme_category(category: str) -> str:
    """The official script's category key: lower-cased; "x/attribute/…" becomes "x/attribute"."""
    category = category.lower()
    if "attribute" in category:
        category = category.split("/")[0] + "/attribute"
    return category


def group_order(benchmark: Benchmark, name: str) -> tuple[Any, ...]:
    def rank(value: str, order: Sequence[str]) -> tuple[int, str]:
        return (order.index(value), "") if value in order else (len(order), value)

    if name == "overall":
        return ((-1, ""),)
    if benchmark == "hr-bench":
        return (rank(name, ("FSP", "FCP")),)
    if benchmark == "vstar":
        return (rank(name, VSTAR_ORDER),)
    parts = name.split(" / ")
    key: list[tuple[int, str]] = [rank(parts[0], MME_TASK_ORDER)]
    if len(parts) > 1:
        key.append(rank(parts[1], MME_SUBTASK_ORDER))
    if len(parts) > 2:
        key.append((0, parts[2]))
    return tuple(key)


def _tally(benchmark: Benchmark, items: Iterable[Scored]) -> dict[str, _Tally]:
    tallies: dict[str, _Tally] = {"overall": _Tally("overall")}
    for item in items:
        tallies["overall"].add(item)
        for name, level in group_names(benchmark, item.fields):
            tallies.setdefault(name, _Tally(level)).add(item)
    ordered = sorted(tallies, key=lambda name: group_order(benchmark, name))
    return {name: tallies[name] for name in ordered}


# --- summary -------------------------------------------------------------------------------------


def summarize(
    benchmark: Benchmark,
    records: Iterable[Mapping[str, Any]],
    *,
    extractor: Extractor = "strict",
    exclude_diagram_table: bool = False,
    skip_unanswered: bool = False,
) -> dict[str, Any]:
    """Per method: accuracy per group (with counts), unparsed and error ids, the benchmark's
    headline means; and the paired baseline / zoom-refine changes. JSON-safe.
    `skip_unanswered`: records without a first answer leave every count (module docstring);
    each method lists them as `skipped_ids`. Each method's `costs` are `method_costs`; and
    `paired_methods` holds the fixed / broken counts of every pair of methods run."""
    records = list(records)
    scored, excluded = score_records(
        benchmark, records, extractor=extractor, exclude_diagram_table=exclude_diagram_table
    )
    skipped: dict[str, list[str]] = defaultdict(list)
    if skip_unanswered:
        for item in scored:
            if not item.answered:
                skipped[item.method].append(item.id)
        scored = [item for item in scored if item.answered]
    by_method: dict[str, list[Scored]] = defaultdict(list)
    for item in scored:
        by_method[item.method].append(item)
    methods = {
        method: _method_summary(benchmark, by_method[method])
        for method in ordered_methods([*by_method, *skipped])
    }
    if skip_unanswered:
        for method, summary in methods.items():
            summary["skipped_ids"] = sorted(skipped.get(method, []))
    for method, costs in method_costs(records).items():
        if method in methods:
            methods[method]["costs"] = costs
    names = list(methods)
    return {
        "benchmark": benchmark,
        "extractor": extractor,
        "exclude_diagram_table": exclude_diagram_table,
        "skip_unanswered": skip_unanswered,
        "excluded": excluded,
        "methods": methods,
        "paired": _paired(scored),
        "paired_methods": {
            f"{before} → {after}": _paired(scored, before, after)
            for i, before in enumerate(names)
            for after in names[i + 1 :]
        },
    }


def method_costs(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, over its finished samples (the last record per sample, errors left out):
    mean tool calls (agent zoom calls, or Zoom-Refine's crops), images shown (`views`), model
    calls and tokens (input + output, where the backend reported them) per sample."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        latest[record_key(record)] = record
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (_, method), record in latest.items():
        if record.get("status") != "ok":
            continue
        usage = record.get("usage") or {}
        steps = record.get("steps") or []
        views = record.get("views") or []
        calls = sum(len(step.get("tool_calls") or []) for step in steps)
        total = sums[method]
        total["samples"] += 1
        total["tool_calls"] += calls if method == "agent" else max(len(views) - 1, 0)
        total["images"] += len(views)
        total["model_calls"] += usage.get("model_calls", 0)
        total["tokens"] += usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
    return {
        method: {"samples": int(total["samples"])}
        | {
            f"{key}_per_sample": round(total[key] / total["samples"], 3)
            for key in ("tool_calls", "images", "model_calls", "tokens")
        }
        for method, total in sums.items()
    }


def ordered_methods(methods: Iterable[str]) -> list[str]:
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _method_summary(benchmark: Benchmark, items: list[Scored]) -> dict[str, Any]:
    tallies = _tally(benchmark, items)
    summary: dict[str, Any] = {
        "groups": {name: tally.as_dict() for name, tally in tallies.items()},
        "unparsed_ids": sorted(item.id for item in items if item.unparsed),
        "error_ids": sorted(item.id for item in items if item.error),
    }
    if benchmark == "hr-bench":
        summary.update(_cycle_means(benchmark, items, tallies))
    elif benchmark == "mme-realworld":
        summary["subtask_mean"] = _subtask_means(tallies)
    return summary


def _cycle_means(
    benchmark: Benchmark, items: list[Scored], tallies: dict[str, _Tally]
) -> dict[str, Any]:
    by_cycle: dict[str, list[Scored]] = defaultdict(list)
    for item in items:
        cycle = item.fields.get("cycle_category")
        if cycle:  # a row without a cycle (a bad row) counts in plain accuracy only
            by_cycle[cycle].append(item)
    cycles = {
        cycle: {name: tally.accuracy for name, tally in _tally(benchmark, rows).items()}
        for cycle, rows in sorted(by_cycle.items())
    }
    means: dict[str, float] = {}
    for name in tallies:  # a group with no cycled row (only bad rows) has no cycle mean
        values = [acc[name] for acc in cycles.values() if acc.get(name) is not None]
        if values:
            means[name] = math.fsum(v for v in values if v is not None) / len(values)
    differs = [
        name
        for name, mean in means.items()
        if tallies[name].accuracy is None
        or not math.isclose(mean, tallies[name].accuracy or 0.0, abs_tol=1e-12)
    ]
    return {
        "cycle_mean": means,
        "cycles": cycles,
        "cycle_mean_equals_plain": not differs,
        "cycle_mean_differs": differs,
    }


def _subtask_means(tallies: dict[str, _Tally]) -> dict[str, float | None]:
    per_task: dict[str, list[float]] = defaultdict(list)
    for name, tally in tallies.items():
        if tally.level == "subtask" and tally.accuracy is not None:
            per_task[name.split(" / ")[0]].append(tally.accuracy)
    means: dict[str, float | None] = {
        "overall": _mean([acc for values in per_task.values() for acc in values])
    }
    for name, tally in tallies.items():
        if tally.level == "task":
            means[name] = _mean(per_task.get(name, []))
    return means


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


# --- paired changes ------------------------------------------------------------------------------


def paired_changes(
    records: Iterable[Mapping[str, Any]],
    *,
    benchmark: Benchmark | None = None,
    extractor: Extractor = "strict",
    exclude_diagram_table: bool = False,
) -> dict[str, Any]:
    """For each sample run by both methods: fixed (baseline wrong, zoom-refine right), broken
    (right, then wrong), both right, both wrong; with the exact McNemar p-value on fixed/broken.
    `benchmark` is needed for the official extractor and for `exclude_diagram_table` only."""
    scored, _ = score_records(
        benchmark, records, extractor=extractor, exclude_diagram_table=exclude_diagram_table
    )
    return _paired(scored)


def _paired(
    scored: Iterable[Scored], first: str = "baseline", second: str = "zoom-refine"
) -> dict[str, Any]:
    """Fixed (`first` wrong, `second` right) and broken counts over the samples both ran."""
    by_id: dict[str, dict[str, bool]] = defaultdict(dict)
    for item in scored:
        by_id[item.id][item.method] = item.correct
    fixed: list[str] = []
    broken: list[str] = []
    both_right = both_wrong = 0
    only: dict[str, int] = {first: 0, second: 0}
    for sample_id, results in sorted(by_id.items()):
        if first not in results or second not in results:
            for method in only:
                only[method] += int(method in results)
            continue
        before, after = results[first], results[second]
        if after and not before:
            fixed.append(sample_id)
        elif before and not after:
            broken.append(sample_id)
        elif before:
            both_right += 1
        else:
            both_wrong += 1
    return {
        "pairs": len(fixed) + len(broken) + both_right + both_wrong,
        "fixed": len(fixed),
        "broken": len(broken),
        "both_right": both_right,
        "both_wrong": both_wrong,
        "net": len(fixed) - len(broken),
        "mcnemar_p": mcnemar_exact(len(fixed), len(broken)),
        "fixed_ids": fixed,
        "broken_ids": broken,
        f"only_{first.replace('-', '_')}": only[first],
        f"only_{second.replace('-', '_')}": only[second],
    }


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value (binomial on the discordant pairs, p = 1/2)."""
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(fixed, broken) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))
