"""MME-RealWorld: layout detection and samples for its official annotation JSON (images under the
file's folder) and VLMEvalKit's TSVs: MME-RealWorld / MME-RealWorld-CN (option columns `A`–`E`)
and MME-RealWorld-Lite (the options only as one `multi-choice options` cell holding a list
literal). The annotation JSON (~10–30 MB of text, no images) is read whole with `json`."""

from __future__ import annotations

import ast
import codecs
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zoom_refine.evals.embedded_images import embedded_samples
from zoom_refine.evals.readers import (
    PREFIXED_OPTION,
    Draft,
    Ids,
    RowError,
    TableRow,
    answer_letter,
    inside_root,
    letter_columns,
    refuse_nul,
    required_text,
)
from zoom_refine.evals.samples import BadRow, Sample
from zoom_refine.evals.sniffing import Located, file_head, looks_like_json, single_file, starts_with
from zoom_refine.evals.text_encoding import check_dataset_file, not_utf8_error
from zoom_refine.evals.tsv import TsvRereader, raise_csv_field_limit, read_tsv_header, tsv_rows
from zoom_refine.tools.errors import InvalidInputError

_LITERAL_MAX_CHARS = 100_000
_MME_TSV_REQUIRED = ("index", "question", "answer", "image", "category", "l2-category")
_MME_JSON_REQUIRED = ("Question_id", "Image", "Text", "Answer choices", "Ground truth")
_MME_OPTIONS_COLUMN = "multi-choice options"
_MME_TSV = "a VLMEvalKit MME-RealWorld TSV"


def locate(path: Path) -> Located:
    """The layout of the MME-RealWorld file at `path` (a file, or a folder holding one)."""
    if path.is_dir():
        path = single_file(path, (".json", ".tsv"), "MME-RealWorld", "MME_RealWorld.json")
    check_dataset_file(path)
    if path.suffix.lower() == ".json" or looks_like_json(path):
        return Located("json", path, path.parent)
    if path.suffix.lower() == ".parquet" or starts_with(path, b"PAR1"):
        raise InvalidInputError(
            f"{path} is parquet; MME-RealWorld is read from its official JSON (with the images "
            "beside it) or a VLMEvalKit TSV"
        )
    raise_csv_field_limit()
    header = _read_header(path)
    has_letters = "A" in header and "B" in header
    return Located("tsv" if has_letters else "tsv-lite", path, path.parent)


def load(located: Located) -> Iterator[Sample | BadRow]:
    """The samples of a located MME-RealWorld file; the file is checked here, before anything is
    yielded."""
    if located.layout in ("tsv", "tsv-lite"):
        raise_csv_field_limit()
        header = _read_header(located.file)
        rows = tsv_rows(located.file, header)
        reread: Callable[[Any], Any] = TsvRereader(located.file, header)
        return embedded_samples(rows, _mme_tsv_draft, reread, layout=located.layout)
    items = _read_mme_json(located.file)
    return _mme_json_samples(items, located.root)


def _read_header(path: Path) -> list[str]:
    return read_tsv_header(path, _MME_TSV_REQUIRED, _MME_TSV, _MME_OPTIONS_COLUMN)


# --- VLMEvalKit TSV -------------------------------------------------------------------------------


def _mme_tsv_draft(row: TableRow) -> Draft:
    """VLMEvalKit MME-RealWorld: options from `A`–`E`, else the `multi-choice options` cell (a list
    literal in the Lite file; "The choices are listed below:\\n(A) …" text in the others);
    `category` is "Task/Subtask" and `l2-category` the fine category."""
    cells = row.cells
    question = required_text(cells, "question")
    options = letter_columns(cells)
    if not options:
        raw = cells.get(_MME_OPTIONS_COLUMN, "")
        if not raw.strip():
            raise RowError("row has no options (empty A…E and multi-choice options cells)")
        options = _prefixed_options(_option_list(raw))
    answer = answer_letter(cells.get("answer", ""), options)
    fields: dict[str, str] = {}
    task, _, subtask = cells.get("category", "").strip().partition("/")
    if task:
        fields["task"] = task
    if subtask:
        fields["subtask"] = subtask
    if cells.get("l2-category", "").strip():
        fields["category"] = cells["l2-category"].strip()
    return Draft(row.id, question, options, answer, fields, dict(cells))


def _option_list(raw: str) -> list[str]:
    """Options from a `multi-choice options` cell: a list literal ("['(A) x', '(B) y']", JSON or
    Python syntax, read with json / ast.literal_eval, never eval) or lines of "(A) x" text."""
    text = raw.strip()
    if not text.startswith("["):
        lines = [line.strip() for line in text.splitlines()]
        found = [line for line in lines if PREFIXED_OPTION.match(line)]
        if not found:
            raise RowError("options cell is neither a list literal nor '(A) …' lines")
        return found
    if len(text) > _LITERAL_MAX_CHARS:
        raise RowError(f"options list is {len(text):,} characters long; refusing to parse it")
    try:
        value: Any = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
            raise RowError(
                f"options cell is not a list literal ({type(error).__name__})"
            ) from error
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise RowError("options cell is not a list of strings")
    return list(value)


def _prefixed_options(items: list[Any]) -> dict[str, str]:
    """`["(A) red", "(B) blue"]` → {"A": "red", "B": "blue"}: letters kept as given."""
    if not isinstance(items, list) or not items:
        raise RowError("options are missing or not a list")
    options: dict[str, str] = {}
    for position, item in enumerate(items, start=1):
        match = PREFIXED_OPTION.match(item) if isinstance(item, str) else None
        if match is None:
            raise RowError(f"option {position} ({str(item)[:40]!r}) lacks an '(A) ' prefix")
        letter, text = match.group(1), match.group(2).strip()
        if letter in options:
            raise RowError(f"option letter {letter} appears twice")
        options[letter] = text
    return options


# --- MME-RealWorld official JSON -----------------------------------------------------------------


def _read_mme_json(path: Path) -> list[Any]:
    """The whole annotation list. The official file is ~10–30 MB of text (no images), so it is
    read with `json.load` at once; a sniff of its head first refuses files that are not it (e.g.
    the MME-RealWorld-Base64 JSON, gigabytes of embedded images) before anything big is parsed."""
    head = file_head(path).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not head.startswith("["):
        raise InvalidInputError(
            f"{path} is not the MME-RealWorld annotation JSON (expected a JSON list of "
            "questions with Question_id, Image, Text, Answer choices, Ground truth)"
        )
    if '"Question_id"' not in head and head.strip() not in ("[", "[]"):
        if f'"{_MME_OPTIONS_COLUMN}"' in head:
            raise InvalidInputError(
                f"{path} looks like an MME-RealWorld-Base64 JSON (images embedded); use the "
                "official MME_RealWorld.json with its images, or VLMEvalKit's MME-RealWorld TSV"
            )
        raise InvalidInputError(
            f"{path} is not the MME-RealWorld annotation JSON: its first question has no "
            "Question_id (expected Question_id, Image, Text, Answer choices, Ground truth)"
        )
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        items = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise not_utf8_error(path, data, error.start) from error
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}); re-download it"
        ) from error
    if not isinstance(items, list):
        raise InvalidInputError(f"{path} holds a JSON {type(items).__name__}, not a list")
    if not items:
        raise InvalidInputError(f"{path} holds an empty list of questions (re-download it)")
    return items


def _mme_json_samples(items: list[Any], root: Path) -> Iterator[Sample | BadRow]:
    ids = Ids()
    for number, item in enumerate(items, start=1):
        claimed = _claim_item(item, f"item {number}", ids)
        if isinstance(claimed, BadRow):
            yield claimed
            continue
        try:
            yield _mme_json_sample(claimed, item, root, number)
        except RowError as error:
            yield BadRow(claimed, str(error))


def _claim_item(item: Any, where: str, ids: Ids) -> str | BadRow:
    """The item's Question_id, now taken; or its BadRow, under a label when it has no usable
    Question_id or an earlier item holds it."""
    if not isinstance(item, dict):
        return BadRow(ids.label("", where), "not a JSON object")
    raw_id = item.get("Question_id")
    sample_id = str(raw_id).strip() if raw_id is not None else ""
    if not sample_id:
        return BadRow(ids.label("", where), "no Question_id")
    if "\0" in sample_id:
        return BadRow(ids.label("", where), "Question_id holds a NUL character")
    if not ids.claim(sample_id):
        return ids.duplicate(
            sample_id, where, f"duplicate Question_id ({where}); the first is kept"
        )
    return sample_id


def _mme_json_sample(sample_id: str, item: dict[str, Any], root: Path, number: int) -> Sample:
    missing = [key for key in _MME_JSON_REQUIRED if key not in item]
    if missing:
        raise RowError(f"missing field(s): {', '.join(missing)}")
    question = str(item["Text"]).strip()
    if not question:
        raise RowError("empty Text")
    options = _prefixed_options(item["Answer choices"])
    refuse_nul(question, options)
    answer = answer_letter(item["Ground truth"], options)
    image = inside_root(root, item["Image"])
    fields = {
        name: str(item[key]).strip()
        for name, key in (("task", "Task"), ("subtask", "Subtask"), ("category", "Category"))
        if item.get(key) not in (None, "")
    }
    source = dict(item)
    source.update(layout="json", location=f"item {number}")
    return Sample(sample_id, str(image), question, options, answer, fields, source)
