"""Rows and cells shared by the benchmark loaders: a table row (`TableRow`) and the sample it
drafts (`Draft`), `RowError` (a row that cannot become a Sample), option and answer cells, the id
registry (`Ids`), the NUL refusal (`refuse_nul`) and image paths kept inside the dataset root
(`inside_root`).

A NUL character refuses its row: in an id (the BadRow is then labelled by where the row is) or in
question or option text; other cells are kept as read.

The files themselves are read by `sniffing` (finding and sniffing them), `text_encoding`, `tsv`,
`parquet_rows` and `embedded_images` (table rows into samples).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoom_refine.evals.samples import BadRow, Sample

LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?[.:]?$")
PREFIXED_OPTION = re.compile(r"^\s*\(([A-Z])\)\s?(.*)$", re.DOTALL)

_LETTER_COLUMNS = tuple(chr(code) for code in range(ord("A"), ord("Z") + 1))


@dataclass
class TableRow:
    """One row of a TSV or parquet file, image cell apart."""

    id: str
    where: str
    """"line 12" (TSV) or "row 12" (parquet): where a bad row is, for its BadRow."""
    cells: dict[str, Any]
    image: Any
    location: Any
    error: str | None = None
    typed: dict[str, Any] | None = None
    """The cells as the file typed them (parquet: `3.0` stays a float), image apart; None for
    text-only formats (TSV). The official option text is built from these."""


@dataclass
class Draft:
    """A sample waiting for its image."""

    id: str
    question: str
    options: dict[str, str]
    answer: str
    fields: dict[str, str]
    source: dict[str, Any]

    def finish(self, image: str | bytes) -> Sample:
        return Sample(
            id=self.id,
            image=image,
            question=self.question,
            options=self.options,
            answer=self.answer,
            fields=self.fields,
            source=self.source,
        )


class RowError(Exception):
    """A row cannot become a Sample; the message is the BadRow's reason."""


# --- option and answer cells ----------------------------------------------------------------------


def required_text(cells: dict[str, Any], name: str) -> str:
    value = str(cells.get(name, "")).strip()
    if not value:
        raise RowError(f"empty {name!r} cell")
    return value


def letter_columns(cells: dict[str, Any]) -> dict[str, str]:
    return {
        letter: str(cells[letter]).strip()
        for letter in _LETTER_COLUMNS
        if letter in cells and str(cells[letter]).strip() and str(cells[letter]).strip() != "nan"
    }


def answer_letter(raw: Any, options: dict[str, str]) -> str:
    if len(options) < 2:
        raise RowError(f"needs at least two options, found {len(options)}")
    text = str(raw).strip()
    match = LETTER.match(text)
    letter = match.group(1).upper() if match else None
    if letter is None or letter not in options:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise RowError(
            f"answer {shown!r} is not one of the option letters {', '.join(options) or '(none)'}"
        )
    return letter


# --- ids, NUL characters, image paths ------------------------------------------------------------


class Ids:
    """The ids a loader has handed out, so that every item it yields has one of its own. A row
    whose id an earlier item holds, or that has no usable id, gets a label naming where it is:
    `<id> @ <where>`, or `<where>` alone (`0 @ line 5`, `line 7`, `item 4`), with ` #2`, ` #3`…
    added should that be taken too. A label is never an earlier id; a real id that comes after
    a label spelling it is taken like a duplicate, and labelled in turn. (Under an id already
    used, the runner would take a bad row for that item, done or in flight, and drop it.)"""

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._labels: dict[str, str] = {}
        """label → where the bad row it was given to is."""

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._taken

    def claim(self, sample_id: str) -> bool:
        """Take `sample_id` for a row; False when an earlier item holds it."""
        if sample_id in self._taken:
            return False
        self._taken.add(sample_id)
        return True

    def label(self, sample_id: str, where: str) -> str:
        """A fresh id for the bad row at `where`, whose own id is `sample_id` ("" for none)."""
        base = f"{sample_id} @ {where}" if sample_id else where
        label, number = base, 1
        while label in self._taken:
            number += 1
            label = f"{base} #{number}"
        self._taken.add(label)
        self._labels[label] = where
        return label

    def duplicate(self, sample_id: str, where: str, reason: str) -> BadRow:
        """The BadRow of the row at `where`, whose id an earlier item holds: under a label, with
        `reason`, or one saying so when that item is a bad row labelled `sample_id`."""
        origin = self._labels.get(sample_id)
        if origin is not None:
            reason = f"id {sample_id!r} ({where}) is already the label of the bad row at {origin}"
        return BadRow(self.label(sample_id, where), reason)


def refuse_nul(question: str, options: dict[str, str]) -> None:
    """Refuse question or option text holding a NUL character: no real question has one (it
    marks a corrupt or mis-encoded file), and models and tokenizers treat it unpredictably.
    (A NUL in an id refuses the row too, under a label; other cells are kept as read.)"""
    if "\0" in question:
        raise RowError("question holds a NUL character")
    for letter, text in options.items():
        if "\0" in text:
            raise RowError(f"option {letter} holds a NUL character")


def inside_root(root: Path, cell: Any) -> Path:
    """The file an image cell names, resolved (symlinks too) and required to lie inside `root`;
    never opened here. Absolute paths are accepted only when they land inside the root."""
    if not isinstance(cell, str) or not cell.strip():
        raise RowError("empty image path")
    text = cell.strip()
    if "\0" in text:
        raise RowError("image path contains a NUL character")
    real_root = root.resolve()
    candidate = Path(text.replace("\\", "/"))
    target = candidate if candidate.is_absolute() else real_root / candidate
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError) as error:
        raise RowError(f"image path {text!r} cannot be resolved ({error})") from error
    if not resolved.is_relative_to(real_root):
        raise RowError(f"image path {text!r} points outside the dataset root {real_root}")
    if not resolved.is_file():
        raise RowError(f"image file not found: {text} (under {real_root})")
    return resolved


__all__ = [
    "LETTER",
    "PREFIXED_OPTION",
    "Draft",
    "Ids",
    "RowError",
    "TableRow",
    "answer_letter",
    "inside_root",
    "letter_columns",
    "refuse_nul",
    "required_text",
]
