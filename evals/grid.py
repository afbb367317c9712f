"""Grids of runs: `eval --grid NAME=V1,V2 …` runs one folder per cell of settings, side by side.

A grid axis is a result-changing `ZoomContext` field (or `model`, or `prompts`: a prompt-set
file) with the values to try. Every combination is a cell; a cell runs as an ordinary eval run
(`evals.runner.run_eval`: resumable, guarded by its config.json, sharded by the plan's `--shard`,
its methods paired on the same samples) into `OUT/<cell name>`, its name made from its settings
(`max_hops=2,confidence_threshold=0.95`). `OUT/experiment.json` lists the cells, so that
`report OUT` finds them all. One `--trace-db` holds every cell's runs (each run its own thread).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoom_refine.agent.context import ZoomContext
from zoom_refine.evals.run_config import RESULT_NEUTRAL_SETTINGS, UNRECORDED_SETTINGS
from zoom_refine.evals.runner import EvalPlan, check_resume, run_eval
from zoom_refine.evals.store import replace_json
from zoom_refine.tools.errors import GridTooLargeError, InvalidInputError

EXPERIMENT_FILE = "experiment.json"
MAX_CELLS = 64
"""More cells than this is asked for with `--yes` (each cell is a whole benchmark run)."""
EXTRA_FIELDS = ("model", "prompts")
"""Grid fields besides the ordinary context fields (both are context fields too, with their own
value syntax: a model spec; a prompt-set file, or `default`)."""
NEUTRAL_OPTIONS = frozenset(UNRECORDED_SETTINGS) | {"shard", "limit"}
"""Run options that choose which samples run or how, never what a prediction is."""

BAD_SYNTAX = "--grid takes NAME=V1,V2[,…] (e.g. max_hops=1,2,3), got {value!r}"
UNKNOWN_FIELD = "--grid {name}: unknown field; grid fields are {known}"
NEUTRAL_FIELD = (
    "--grid {name}: this setting does not change results (it only says where or how long to "
    "reach the model), so a grid over it would run the same cell twice"
)
EMPTY_VALUES = "--grid {name}: no values (give NAME=V1,V2[,…])"
BAD_VALUE = "--grid {name}: {value!r} is not {expected}"
REPEATED_FIELD = "--grid {name}: given twice; put every value in one NAME=V1,V2 list"
REPEATED_VALUE = "--grid {name}: {value!r} is listed twice"
TOO_MANY_CELLS = (
    "--grid makes {count} cells (more than {most}), each a whole run; pass --yes to run them all"
)
BAD_CELL = "--grid cell {cell}: {reason}"


@dataclass(frozen=True)
class GridAxis:
    """One `--grid NAME=V1,V2` option: the field and its typed values, in the order given."""

    name: str
    values: tuple[Any, ...]
    texts: tuple[str, ...]
    """The values as written (for names and experiment.json)."""


@dataclass(frozen=True)
class GridCell:
    """One combination of grid values: its folder name and its settings (field → value)."""

    name: str
    settings: dict[str, Any]
    texts: dict[str, str]


def grid_fields() -> dict[str, Any]:
    """Every field a grid may vary, with its type: ZoomContext's result-changing fields
    (all but `RESULT_NEUTRAL_SETTINGS`: the server URL, the request timeout)."""
    hints = typing.get_type_hints(ZoomContext)
    return {
        field.name: hints[field.name]
        for field in dataclasses.fields(ZoomContext)
        if field.name not in RESULT_NEUTRAL_SETTINGS
    }


def neutral_fields() -> frozenset[str]:
    """Names a grid refuses as not changing results: neutral context fields and run options."""
    names = {field.name for field in dataclasses.fields(ZoomContext)}
    return frozenset(names & RESULT_NEUTRAL_SETTINGS) | NEUTRAL_OPTIONS


def parse_grid(options: Sequence[str]) -> list[GridAxis]:
    """`["max_hops=1,2", "confidence_threshold=0.5,0.9"]` → typed axes. One InvalidInputError
    line naming the field for an unknown or result-neutral field, an empty list, a value of the
    wrong type, or a field or value given twice."""
    fields = grid_fields()
    axes: list[GridAxis] = []
    for option in options:
        name, separator, listed = option.partition("=")
        name = name.strip().replace("-", "_")
        if not separator or not name:
            raise InvalidInputError(BAD_SYNTAX.format(value=option))
        if name not in fields:
            if name in neutral_fields():
                raise InvalidInputError(NEUTRAL_FIELD.format(name=name))
            raise InvalidInputError(
                UNKNOWN_FIELD.format(name=name, known=", ".join(sorted(fields)))
            )
        if any(axis.name == name for axis in axes):
            raise InvalidInputError(REPEATED_FIELD.format(name=name))
        texts = tuple(part.strip() for part in listed.split(","))
        if not listed.strip() or any(not text for text in texts):
            raise InvalidInputError(EMPTY_VALUES.format(name=name))
        values = tuple(parse_value(name, fields[name], text) for text in texts)
        for index, text in enumerate(texts):
            if values[index] in values[:index]:
                raise InvalidInputError(REPEATED_VALUE.format(name=name, value=text))
        axes.append(GridAxis(name=name, values=values, texts=texts))
    return axes


def parse_value(name: str, kind: Any, text: str) -> Any:
    """One grid value of field `name` (declared type `kind`), read from its text."""
    if name == "model":
        return text
    if name == "prompts":
        return None if text.lower() in ("default", "none") else Path(text)
    options = _literal_values(kind)
    if options:
        if text not in options:
            expected = "one of " + ", ".join(map(str, options))
            raise InvalidInputError(BAD_VALUE.format(name=name, value=text, expected=expected))
        return text
    allowed = set(typing.get_args(kind)) if _is_union(kind) else {kind}
    if type(None) in allowed and text.lower() == "none":
        return None
    if bool in allowed:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise InvalidInputError(BAD_VALUE.format(name=name, value=text, expected="true or false"))
    for target, expected in ((int, "a whole number"), (float, "a number")):
        if target in allowed:
            try:
                number = target(text)
            except ValueError as error:
                raise InvalidInputError(
                    BAD_VALUE.format(name=name, value=text, expected=expected)
                ) from error
            if number != number or number in (float("inf"), float("-inf")):  # NaN, infinities
                raise InvalidInputError(BAD_VALUE.format(name=name, value=text, expected=expected))
            return number
    if str in allowed:
        return text
    raise InvalidInputError(
        BAD_VALUE.format(name=name, value=text, expected="settable on the command line")
    )


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _literal_values(kind: Any) -> tuple[Any, ...]:
    """The values of a Literal, or of a union of Literals; empty for any other type."""
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)
    if _is_union(kind):
        parts = typing.get_args(kind)
        if all(typing.get_origin(part) is typing.Literal for part in parts):
            return tuple(value for part in parts for value in typing.get_args(part))
    return ()


def grid_cells(axes: Sequence[GridAxis]) -> list[GridCell]:
    """Every combination of the axes' values, the first axis slowest; names are unique."""
    cells: list[GridCell] = []
    used: set[str] = set()
    value_lists = [list(zip(axis.values, axis.texts, strict=True)) for axis in axes]
    for combination in itertools.product(*value_lists):
        settings = {axis.name: value for axis, (value, _) in zip(axes, combination, strict=True)}
        texts = {axis.name: text for axis, (_, text) in zip(axes, combination, strict=True)}
        name = cell_name(texts)
        if name in used:  # two values that read alike once made safe for a folder name
            name = f"{name}#{len(cells)}"
        used.add(name)
        cells.append(GridCell(name=name, settings=settings, texts=texts))
    return cells


def cell_name(texts: dict[str, str]) -> str:
    """`max_hops=2,confidence_threshold=0.95`: a folder name (no `/`, `:` or spaces; a prompt
    file by its stem)."""
    parts = []
    for name, text in texts.items():
        shown = (
            Path(text).stem
            if name == "prompts" and text.lower() not in ("default", "none")
            else text
        )
        parts.append(f"{name}={_safe(shown)}")
    return ",".join(parts)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)[:80] or "_"


def cell_context(base: ZoomContext, settings: dict[str, Any]) -> ZoomContext:
    """The base context with a cell's settings (checked as any context is: a bad value is one
    InvalidInputError line naming the cell). A cell that sets `model` lets `image_format` be
    chosen for that model again (`auto`), unless the grid sets it too."""
    values = dict(settings)
    if "model" in values and "image_format" not in values:
        values["image_format"] = "auto"
    try:
        return dataclasses.replace(base, **values)
    except InvalidInputError as error:
        raise InvalidInputError(
            BAD_CELL.format(cell=cell_name({k: str(v) for k, v in settings.items()}), reason=error)
        ) from error


def check_size(cells: Sequence[GridCell], *, yes: bool) -> None:
    """Ask for `--yes` before running more than `MAX_CELLS` cells."""
    if len(cells) > MAX_CELLS and not yes:
        raise GridTooLargeError(TOO_MANY_CELLS.format(count=len(cells), most=MAX_CELLS))


def experiment_entry(cell: GridCell) -> dict[str, Any]:
    """A cell as experiment.json lists it: name, folder (relative), settings as JSON values."""
    return {
        "name": cell.name,
        "folder": cell.name,
        "settings": json.loads(json.dumps(cell.settings, default=str)),
    }


def write_experiment(
    out: Path, plan: EvalPlan, axes: Sequence[GridAxis], cells: Sequence[GridCell]
) -> Path:
    """Write (or extend) `out`/experiment.json: the grid, the plan's benchmark, data and methods,
    and every cell ever run into `out` (a later grid into the same folder adds its cells)."""
    path = out / EXPERIMENT_FILE
    old = read_experiment(out) if path.is_file() else {}
    listed = {entry["name"]: entry for entry in old.get("cells", []) if isinstance(entry, dict)}
    for cell in cells:
        listed[cell.name] = experiment_entry(cell)
    grid = dict(old.get("grid", {}))
    for axis in axes:
        known = list(grid.get(axis.name, []))
        grid[axis.name] = known + [text for text in axis.texts if text not in known]
    experiment = {
        "benchmark": plan.benchmark,
        "data": str(plan.data),
        "methods": list(plan.methods),
        "grid": grid,
        "cells": list(listed.values()),
    }
    out.mkdir(parents=True, exist_ok=True)
    replace_json(path, experiment)
    return path


BAD_EXPERIMENT = "{path} is not a readable experiment.json ({reason}); remove it or use a new --out"


def read_experiment(folder: Path) -> dict[str, Any]:
    """`folder`/experiment.json as a dict with a `cells` list (InvalidInputError if unreadable)."""
    path = folder / EXPERIMENT_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidInputError(BAD_EXPERIMENT.format(path=path, reason=error)) from error
    if not isinstance(value, dict) or not isinstance(value.get("cells"), list):
        raise InvalidInputError(BAD_EXPERIMENT.format(path=path, reason="no list of cells"))
    return value


@dataclass(frozen=True)
class CellRun:
    """A finished cell: its settings, folder and the summary its run wrote."""

    cell: GridCell
    folder: Path
    summary: dict[str, Any]


RunCell = Callable[[EvalPlan, ZoomContext], dict[str, Any]]


def plan_grid(
    plan: EvalPlan, context: ZoomContext, options: Sequence[str], *, yes: bool = False
) -> list[tuple[GridCell, EvalPlan, ZoomContext]]:
    """Parse and check the whole grid before anything runs: every cell's plan (its folder under
    `plan.out`) and context. Raises one line for any bad axis, value or size, or for a cell
    folder that already holds predictions made with other settings (`evals.run_config`); then
    writes experiment.json."""
    axes = parse_grid(options)
    if not axes:
        raise InvalidInputError(BAD_SYNTAX.format(value=""))
    cells = grid_cells(axes)
    check_size(cells, yes=yes)
    planned = []
    for cell in cells:
        cell_plan = dataclasses.replace(plan, out=plan.out / cell.name)
        cell_plan._fingerprint = plan._fingerprint  # the same data: hash it once, not per cell
        cell_ctx = cell_context(context, cell.settings)
        check_resume(cell_plan, cell_ctx)  # a cell folder made otherwise: refused before any runs
        plan._fingerprint = cell_plan._fingerprint
        planned.append((cell, cell_plan, cell_ctx))
    write_experiment(plan.out, plan, axes, cells)
    return planned


def run_grid(
    plan: EvalPlan,
    context: ZoomContext,
    options: Sequence[str],
    *,
    yes: bool = False,
    run: RunCell = run_eval,
    on_cell: Callable[[GridCell, int, int], None] | None = None,
) -> list[CellRun]:
    """Run every cell of the grid `options` (`NAME=V1,V2` strings) in turn, each with `run`
    (default `run_eval`; the CLI passes its progress-bar runner). `on_cell(cell, number, count)`
    is told before each cell starts. Cells already done are resumed (skipped sample by sample)."""
    planned = plan_grid(plan, context, options, yes=yes)
    finished = []
    for number, (cell, cell_plan, cell_ctx) in enumerate(planned, start=1):
        if on_cell:
            on_cell(cell, number, len(planned))
        finished.append(CellRun(cell=cell, folder=cell_plan.out, summary=run(cell_plan, cell_ctx)))
    return finished


@dataclass(frozen=True)
class CellData:
    """A cell of an experiment folder as read back: its name, folder, config.json and records."""

    name: str
    folder: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    grid_settings: dict[str, Any]
    """The settings experiment.json lists for it (empty for a folder not made by the grid)."""


NO_CELLS = (
    "{folder} holds no runs: neither an experiment.json nor sub-folders with a config.json "
    "(make one with `zoom-refine eval … --grid NAME=V1,V2 --out {folder}`)"
)


def is_experiment(folder: Path) -> bool:
    """Whether `folder` is an experiment (an experiment.json, or run sub-folders and no
    predictions of its own) rather than one run folder."""
    if (folder / EXPERIMENT_FILE).is_file():
        return True
    if (folder / "predictions.jsonl").is_file():
        return False
    return any((child / "config.json").is_file() for child in _children(folder))


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return []


def experiment_cells(folder: Path) -> list[CellData]:
    """The cells of an experiment folder: those experiment.json lists, in its order, then any
    other run sub-folder (e.g. an `--always-zoom` run put beside them), by name. Cells with no
    predictions yet are left out."""
    from zoom_refine.evals.report import merge_runs

    listed = read_experiment(folder)["cells"] if (folder / EXPERIMENT_FILE).is_file() else []
    entries: dict[str, dict[str, Any]] = {}
    for entry in listed:
        if isinstance(entry, dict) and isinstance(entry.get("folder"), str):
            entries[entry["folder"]] = entry
    for child in _children(folder):
        if child.name not in entries and (child / "config.json").is_file():
            entries[child.name] = {"name": child.name, "folder": child.name, "settings": {}}
    if not entries and (folder / "predictions.jsonl").is_file():
        entries["."] = {"name": folder.name, "folder": ".", "settings": {}}
    cells = []
    for name, entry in entries.items():
        path = folder / name
        if not (path / "predictions.jsonl").is_file():
            continue
        config, records = merge_runs([path])
        settings = entry.get("settings")
        cells.append(
            CellData(
                name=str(entry.get("name", name)),
                folder=path,
                config=config,
                records=records,
                grid_settings=dict(settings) if isinstance(settings, dict) else {},
            )
        )
    if not cells:
        raise InvalidInputError(NO_CELLS.format(folder=folder))
    return cells


def cell_labels(cell: CellData) -> dict[str, Any]:
    """What names a cell's settings in every table and chart: model, max_hops, threshold,
    always_zoom, prompt set, preset, then any other grid field."""
    from zoom_refine.agent.context import OFFICIAL_SETTINGS

    context = cell.config.get("context") if isinstance(cell.config.get("context"), dict) else {}
    assert isinstance(context, dict)
    prompts_file = str(context.get("prompts_file", "default"))
    prompts = "default" if prompts_file == "default" else Path(prompts_file).stem
    digest = str(context.get("prompts", "")).removeprefix("sha256:")[:8]
    official = all(
        context.get(key) == value for key, value in OFFICIAL_SETTINGS.items() if key != "max_hops"
    )
    labels: dict[str, Any] = {
        "model": cell.config.get("model"),
        "max_hops": context.get("max_hops"),
        "confidence_threshold": context.get("confidence_threshold"),
        "always_zoom": bool(context.get("always_zoom", False)),
        "prompts": f"{prompts} ({digest})" if digest else prompts,
        "preset": "official" if official else "default",
    }
    for key, value in cell.grid_settings.items():
        if key not in labels and key != "model":
            labels[key] = context.get(key, value)
    return labels
