"""V* Bench: layout detection and samples for its folder layout (`direct_attributes/` and
`relative_position/`, each image beside a JSON with its question and options) and its
`test_questions.jsonl` (options embedded in `text`). Options are stored with the correct one
first, so they are shuffled with a seed fixed per id."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoom_refine.evals.readers import (
    LETTER,
    PREFIXED_OPTION,
    Ids,
    RowError,
    inside_root,
    refuse_nul,
)
from zoom_refine.evals.samples import BadRow, Sample
from zoom_refine.evals.sniffing import Located, starts_with
from zoom_refine.evals.text_encoding import (
    NOT_UTF8,
    check_dataset_file,
    check_utf8_head,
    decode_line,
)
from zoom_refine.tools.errors import InvalidInputError

VSTAR_CATEGORIES = ("direct_attributes", "relative_position")
"""V* Bench's two sub-folders, which are also its categories."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

_INLINE_OPTION = re.compile(r"\(([A-Z])\)\s*")


def locate(path: Path) -> Located:
    """The layout of the V* Bench data at `path` (its folder, a category folder or the jsonl)."""
    if path.is_dir():
        present = tuple(
            name
            for name in VSTAR_CATEGORIES
            if (path / name).is_dir() and any((path / name).glob("*.json"))
        )
        if present:  # the real repository ships the jsonl beside the folders: folders win
            return Located("folder", path, path, present)
        if path.name in VSTAR_CATEGORIES and any(path.glob("*.json")):
            return Located("folder", path.parent, path.parent, (path.name,))
        questions = path / "test_questions.jsonl"
        if questions.is_file():
            path = questions
        else:
            raise InvalidInputError(
                f"{path} is not a V* Bench folder: it has no direct_attributes/ or "
                "relative_position/ with question JSONs, and no test_questions.jsonl "
                "(pass the vstar_bench folder)"
            )
    check_dataset_file(path)
    if path.suffix.lower() in (".tsv", ".parquet", ".csv") or starts_with(path, b"PAR1"):
        raise InvalidInputError(
            f"{path} is not a V* Bench file; pass the vstar_bench folder or its "
            "test_questions.jsonl"
        )
    return Located("jsonl", path, path.parent)


def load(located: Located, seed: int | None) -> Iterator[Sample | BadRow]:
    """The samples of located V* Bench data (a jsonl is checked here, before anything is
    yielded); `seed` shuffles the options, `None` keeps the stored order."""
    if located.layout == "folder":
        return _vstar_folder_samples(located.root, located.categories, seed)
    _check_jsonl(located.file)
    return _vstar_jsonl_samples(located.file, located.root, seed)


def _vstar_folder_samples(
    root: Path, categories: tuple[str, ...], seed: int | None
) -> Iterator[Sample | BadRow]:
    """Each `<category>/<stem>.json` (question, options with the correct one first) beside its
    `<stem>.jpg`; id = the stem."""
    ids = Ids()
    for category in categories:
        folder = root / category
        stems: dict[str, dict[str, Path]] = {}
        for item in sorted(folder.iterdir()):
            if not item.is_file() or item.name.startswith("."):
                continue
            suffix = item.suffix.lower()
            if suffix == ".json":
                stems.setdefault(item.stem, {})["json"] = item
            elif suffix in IMAGE_SUFFIXES:
                stems.setdefault(item.stem, {})["image"] = item
        for stem, files in stems.items():
            if not ids.claim(stem):
                reason = f"duplicate id: {category}/{stem} (the first one is kept)"
                yield ids.duplicate(stem, category, reason)
                continue
            try:
                yield _vstar_folder_sample(root, category, stem, files, seed)
            except RowError as error:
                yield BadRow(stem, str(error))


def _vstar_folder_sample(
    root: Path, category: str, stem: str, files: dict[str, Path], seed: int | None
) -> Sample:
    if "json" not in files:
        raise RowError(f"image {category}/{files['image'].name} has no {stem}.json beside it")
    if "image" not in files:
        raise RowError(f"{category}/{stem}.json has no image beside it (image file not found)")
    image = inside_root(root, f"{category}/{files['image'].name}")
    try:
        annotation = json.loads(files["json"].read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RowError(f"{category}/{stem}.json is not valid JSON ({error})") from error
    if not isinstance(annotation, dict):
        raise RowError(f"{category}/{stem}.json is not a JSON object")
    question = str(annotation.get("question", "")).strip()
    if not question:
        raise RowError(f"{category}/{stem}.json has no question")
    choices = _string_list(annotation.get("options"), "options")
    source = {key: value for key, value in annotation.items()}
    source.update(layout="folder", location=f"{category}/{stem}.json")
    return _vstar_sample(stem, str(image), question, choices, 0, category, source, seed)


def _check_jsonl(path: Path) -> dict[str, Any]:
    """The first record of a V* jsonl, checked; the file's first 64 KiB must be UTF-8."""
    check_utf8_head(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text, bad = decode_line(raw, number)
            if bad is not None:
                raise InvalidInputError(f"{path} is not UTF-8 ({bad}); save it as UTF-8")
            line = text.lstrip("\ufeff").strip()
            if not line:
                continue
            try:
                first = json.loads(line)
            except ValueError as error:
                raise InvalidInputError(
                    f"{path} is not JSON Lines (its first line is not JSON: {error}); pass "
                    "test_questions.jsonl or the vstar_bench folder"
                ) from error
            if not isinstance(first, dict) or "image" not in first:
                raise InvalidInputError(
                    f"{path} is not V* Bench's test_questions.jsonl: its first line is not an "
                    "object with an 'image' field"
                )
            return first
    raise InvalidInputError(f"{path} has no questions (only blank lines); re-download it")


def _vstar_jsonl_samples(path: Path, root: Path, seed: int | None) -> Iterator[Sample | BadRow]:
    """`test_questions.jsonl`: {"image": "direct_attributes/x.jpg", "text": "Q?\\n(A) …\\n(B) …
    \\nAnswer with …", "category", "question_id", "label": "A"}; `question` with `options` or
    `choices` (correct first) is read too. id = the image's stem, as in the folder layout."""
    ids = Ids()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            item = _vstar_jsonl_item(raw, number, root, seed, ids)
            if item is not None:
                yield item


def _vstar_jsonl_item(
    raw: bytes, number: int, root: Path, seed: int | None, ids: Ids
) -> Sample | BadRow | None:
    """The sample of jsonl line `number`, its BadRow, or None for a blank line."""
    where = f"line {number}"
    text, bad = decode_line(raw, number)
    if bad is not None:
        return BadRow(ids.label("", where), NOT_UTF8.format(bad))
    line = text.lstrip("\ufeff").strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except ValueError as error:
        return BadRow(ids.label("", where), f"not valid JSON ({error})")
    if not isinstance(record, dict):
        return BadRow(ids.label("", where), "not a JSON object")
    image_cell = record.get("image")
    if not isinstance(image_cell, str) or not image_cell.strip():
        fallback = record.get("question_id")
        fallback_id = "" if fallback is None else str(fallback)
        if fallback_id and "\0" not in fallback_id and ids.claim(fallback_id):
            return BadRow(fallback_id, "no 'image' field")
        return BadRow(ids.label("", where), "no 'image' field")
    if "\0" in image_cell:
        return BadRow(ids.label("", where), "image path contains a NUL character")
    sample_id = Path(image_cell.strip().replace("\\", "/")).stem or where
    if not ids.claim(sample_id):
        return ids.duplicate(sample_id, where, f"duplicate image {image_cell!r} ({where})")
    try:
        return _vstar_jsonl_sample(sample_id, record, root, seed, where)
    except RowError as error:
        return BadRow(sample_id, str(error))


def _vstar_jsonl_sample(
    sample_id: str, record: dict[str, Any], root: Path, seed: int | None, where: str
) -> Sample:
    image = inside_root(root, record["image"])
    listed = record.get("options", record.get("choices"))
    if listed is not None:
        choices = _string_list(listed, "options")
        question = str(record.get("question", record.get("text", ""))).strip()
        letters = [chr(ord("A") + position) for position in range(len(choices))]
    else:
        text = str(record.get("text", record.get("question", "")))
        question, letters, choices = _split_embedded_options(text)
    if not question:
        raise RowError("no question text")
    label = record.get("label", record.get("answer"))
    correct = 0
    if label is not None:
        match = LETTER.match(str(label).strip())
        if match is None or match.group(1).upper() not in letters:
            raise RowError(f"label {label!r} is not one of the option letters {letters}")
        correct = letters.index(match.group(1).upper())
    category = str(record.get("category") or "").strip()
    if not category:
        category = Path(str(record["image"])).parts[0] if "/" in str(record["image"]) else ""
    source = dict(record)
    source.update(layout="jsonl", location=where)
    return _vstar_sample(sample_id, str(image), question, choices, correct, category, source, seed)


def _split_embedded_options(text: str) -> tuple[str, list[str], list[str]]:
    """ "Q?\\n(A) red\\n(B) blue\\nAnswer with …" → ("Q?", ["A", "B"], ["red", "blue"]); options
    on one line ("Q? (A) red (B) blue") are split too. Lines after the options are dropped."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if PREFIXED_OPTION.match(line)]
    letters: list[str] = []
    choices: list[str] = []
    if starts:
        question = "\n".join(lines[: starts[0]]).strip()
        for line in lines[starts[0] :]:
            match = PREFIXED_OPTION.match(line)
            if match is None:
                break
            letters.append(match.group(1))
            choices.append(match.group(2).strip())
    else:
        parts = _INLINE_OPTION.split(text)
        question = parts[0].strip()
        for position in range(1, len(parts) - 1, 2):
            letters.append(parts[position])
            choices.append(parts[position + 1].strip())
    if len(choices) < 2:
        raise RowError("text holds fewer than two '(A) …' options")
    if len(set(letters)) != len(letters):
        raise RowError("an option letter appears twice in the text")
    return question, letters, choices


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2:
        raise RowError(f"{name!r} is not a list of at least two options")
    if not all(isinstance(item, (str, int, float)) for item in value):
        raise RowError(f"{name!r} holds something other than text")
    return [str(item).strip() for item in value]


def _vstar_sample(
    sample_id: str,
    image: str,
    question: str,
    choices: list[str],
    correct: int,
    category: str,
    source: dict[str, Any],
    seed: int | None,
) -> Sample:
    """Shuffle the options (V* stores the correct one first) with a seed fixed per id."""
    order = list(range(len(choices)))
    if seed is not None:
        random.Random(f"{seed}:{sample_id}").shuffle(order)
    letters = [chr(ord("A") + position) for position in range(len(choices))]
    options = {letter: choices[original] for letter, original in zip(letters, order, strict=True)}
    refuse_nul(question, options)
    answer = letters[order.index(correct)]
    source.update(
        shuffle_seed=seed, original_options=list(choices), original_answer=letters[correct]
    )
    fields = {"category": category} if category else {}
    return Sample(sample_id, image, question, options, answer, fields, source)


__all__ = ["VSTAR_CATEGORIES"]
