"""What the `zoom-refine` commands show: answers, steps, streamed events, trace steps, and the
pictures of a run (`save_pictures`).

`out` is stdout (results), `err` stderr (progress, status, errors). Every line that holds text
from outside (a file name, a model's reply) goes through `printable` and is printed without
markup, so neither a lone surrogate nor a `[tag]` can break or restyle it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from zoom_refine.agent.state import StepRecord, ViewRecord, normalize_options
from zoom_refine.tools.errors import ZoomRefineError

if TYPE_CHECKING:
    from zoom_refine.graphs.traces import TraceStep

out = Console()
err = Console(stderr=True)
PICTURES_FAILED = "cannot write the pictures to {folder}: {reason}"


def printable(text: str) -> str:
    """`text` as a terminal can take it: a lone surrogate (a file name's non-UTF-8 byte, an odd
    value) shown escaped (`\\udcff`) instead of failing the write with UnicodeEncodeError."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def print_lines(lines: list[str]) -> None:
    for line in lines:
        out.print(printable(line), markup=False, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """One status line on stderr (what is happening, not a result)."""
    err.print(printable(message), markup=False, highlight=False, soft_wrap=True)


def print_event(console: Console, mode: str, data: Any) -> None:
    """`ask --stream`: one line per node update, one per crop event."""
    if mode == "custom":
        if isinstance(data, dict) and data.get("event") == "crop":
            view = data.get("view") or {}
            console.print(
                f"event    crop {view.get('id')} box {view.get('box')} from {data.get('source_id')}"
                f" (asked {data.get('requested_box')})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return
    for node, update in (data or {}).items():
        console.print(
            update_line(node, update or {}), markup=False, highlight=False, soft_wrap=True
        )


def update_line(node: str, update: dict[str, Any]) -> str:
    """One node's state update in words: its step records, else its crops, else its keys."""
    from langchain_core.messages import ToolMessage

    views = {view["id"]: view for view in update.get("views") or []}
    records = update.get("steps") or []
    if records:
        return "update   " + "; ".join(step_line(step, views) for step in records)
    crops = []
    for message in update.get("messages") or []:
        if isinstance(message, ToolMessage):
            artifact = message.artifact if isinstance(message.artifact, dict) else {}
            view = artifact.get("view")
            crops.append(
                f"{view['id']} {view['box']} shown at {view['size']}"
                if view
                else f"— {message.content}"
            )
    if crops:
        return f"update   {node:<8}  " + "; ".join(crops)
    return f"update   {node:<8}  {', '.join(sorted(update))}"


def print_summary(result: dict[str, Any], options: list[str] | None = None) -> None:
    """The answer (`A (3)`: the letter and its option's text), one line per step, why it stopped."""
    lettered = normalize_options(options) if options else None
    answer = answer_text(result.get("answer"), lettered)
    out.print(f"[bold]Answer:[/bold] {escape(answer)}", soft_wrap=True)
    views = {view["id"]: view for view in result.get("views", [])}
    for step in result.get("steps", []):
        out.print(escape(step_line(step, views, lettered)), soft_wrap=True)
    out.print(f"[dim]stopped: {escape(str(result.get('stop_reason')))}[/dim]")


def answer_text(answer: Any, options: dict[str, str] | None) -> str:
    """`A (3)` for an option letter, else the answer as it is."""
    if options and isinstance(answer, str) and answer in options:
        return f"{answer} ({options[answer]})"
    return str(answer)


def step_line(
    step: StepRecord, views: dict[str, ViewRecord], options: dict[str, str] | None = None
) -> str:
    """`localize  hop 0  img0 [0, 0, 3840, 2160]  answer B (7)  box …`."""
    parts = [f"{step['node']:<8}", f"hop {step.get('hop', 0)}"]
    view = views.get(step.get("view") or "")
    if view:
        parts.append(f"{view['id']} {view['box']}")
    return "  ".join(parts + record_parts(step, usage=False, options=options))


def record_parts(
    step: StepRecord, *, usage: bool, options: dict[str, str] | None = None
) -> list[str]:
    """What a step record says, in words (answer, box, confidence, usage, time, note)."""
    parts = []
    if step.get("answer") is not None:
        parts.append(f"answer {answer_text(step.get('answer'), options)}")
    if step.get("box") is not None:
        parts.append(f"box {step.get('box')} ({step.get('box_frame')})")
    if (confidence := step.get("confidence")) is not None:
        parts.append(f"confidence {confidence:.2f}")
    if usage and step.get("usage"):
        counters = step.get("usage") or {}
        parts.append("usage " + " ".join(f"{key}={value}" for key, value in counters.items()))
    if (seconds := step.get("seconds")) is not None:
        parts.append(f"{seconds:.2f} s")
    if step.get("note"):
        parts.append(f"— {step.get('note')}")
    return parts


def trace_step_text(step: TraceStep) -> str:
    """`zoom-refine trace DB THREAD`: one checkpointed step, its raw reply indented below."""
    parts = [f"step {step.step}", f"{step.node:<8}", step.time]
    record = step.record or StepRecord(node=step.node, hop=0, raw=None)
    if record.get("view"):
        parts.append(f"view {record.get('view')} {step.view_box}")
    parts += record_parts(record, usage=True)
    lines = ["  ".join(parts)]
    if (raw := record.get("raw")) is not None:
        lines.extend("    | " + line for line in raw.splitlines() or [""])
    return "\n".join(lines)


def save_pictures(
    result: dict[str, Any], image: Any, folder: Path, *, also: tuple[Path, ...] = ()
) -> None:
    """overview.png, hop-N.png and trace.json into `folder`, each written over whole or not at
    all: drawn into a hidden folder inside it, then renamed over the old files (a drawing or
    write that fails leaves the pictures of an earlier run as they were)."""
    import shutil
    import tempfile

    from zoom_refine.tools.overlay import save_trace

    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pictures-", dir=folder))
        try:
            made = save_trace(result, image, staging)
            for path in made:
                os.replace(path, folder / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ZoomRefineError(PICTURES_FAILED.format(folder=folder, reason=reason)) from error
    names = [path.name for path in made] + [path.name for path in also]  # `also`: written before
    say(f"wrote {len(names)} files to {folder}: {', '.join(names)}")
