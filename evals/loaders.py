"""Streaming loaders for HR-Bench, MME-RealWorld and V* Bench.

`load_samples(benchmark, path)` detects the layout from `path` and yields one `Sample` per question,
or a `BadRow` for a row that cannot become one (missing column, unreadable image cell, unknown
answer letter, missing image file, duplicate id, an image path outside the dataset root); a bad row
never stops the run. A file of the wrong format, or an empty one, raises `InvalidInputError` when
`load_samples` is called, before anything is yielded.

Layouts (`detect_layout` names them):

- `hr-bench`: `tsv` (the official `hr_bench_4k.tsv` / `hr_bench_8k.tsv`; VLMEvalKit format) or
  `parquet` (the same columns; the image column may hold bytes, base64 text or `{"bytes": …}`).
- `mme-realworld`: `json` (the official annotation file; images under the file's folder), `tsv`
  (VLMEvalKit's MME-RealWorld / MME-RealWorld-CN: option columns `A`–`E`) or `tsv-lite`
  (MME-RealWorld-Lite: the options only as one `multi-choice options` cell holding a list literal).
- `vstar`: `folder` (`direct_attributes/` and `relative_position/`, each image beside a JSON with
  its question and options) or `jsonl` (`test_questions.jsonl`, options embedded in `text`).

Embedded images (TSV / parquet) are streamed: a row is read, its image decoded, the sample yielded
and dropped. A TSV line without a quote character is a whole record and is split on tabs directly;
a line with one goes through the `csv` module (quoted cells may hold tabs, quotes and line breaks),
its base64 runs swapped for short tokens first so the parser never walks megabytes of them.
VLMEvalKit-style files store an image once and let other rows name that row's `index` in their
image cell (a cell of at most 64 characters); to resolve those, the loader keeps only the byte
range (TSV) or row position (parquet) of each image row, plus a small cache of recently decoded
images, and re-reads a row from disk on a cache miss. A row that names an image further down the
file waits (without image data) until that row arrives, so such rows come after it. Peak memory is
a few rows' worth of images plus the cache, whatever the file size (parquet: plus one row group).
The MME-RealWorld annotation JSON (~10–30 MB of text, no images) is read whole with `json`.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import hashlib
import io
import json
import random
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from zoom_refine.evals.samples import BENCHMARKS, BadRow, Benchmark, Sample
from zoom_refine.tools.errors import InvalidInputError

LAYOUTS: dict[Benchmark, tuple[str, ...]] = {
    "hr-bench": ("tsv", "parquet"),
    "mme-realworld": ("json", "tsv", "tsv-lite"),
    "vstar": ("folder", "jsonl"),
}
"""The layouts each benchmark's loader reads, as `detect_layout` names them."""

VSTAR_CATEGORIES = ("direct_attributes", "relative_position")
"""V* Bench's two sub-folders, which are also its categories."""

REFERENCE_MAX_CHARS = 64
"""An image cell this short names another row's `index` (VLMEvalKit's rule) instead of holding
base64 data: no real image encodes to 64 base64 characters or fewer."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
ANNOTATION_SUFFIXES = frozenset({".json", ".jsonl", ".tsv", ".parquet", ".csv"})

_IMAGE_CACHE_BYTES = 64 * 1024 * 1024
"""Budget of the cache of decoded embedded images kept to resolve image references without
re-reading the file (the last image always stays, whatever its size)."""

_PARQUET_BATCH_ROWS = 8
_BULKY_CELL = 4096
_READ_BUFFER = 1 << 20
_FINGERPRINT_CHUNK = 1 << 20
_LITERAL_MAX_CHARS = 100_000
_SNIFF_BYTES = 1 << 16

_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?[.:]?$")
_PREFIXED_OPTION = re.compile(r"^\s*\(([A-Z])\)\s?(.*)$", re.DOTALL)
_INLINE_OPTION = re.compile(r"\(([A-Z])\)\s*")

_HR_REQUIRED = ("index", "question", "answer", "A", "B", "image", "category", "cycle_category")
_MME_TSV_REQUIRED = ("index", "question", "answer", "image", "category", "l2-category")
_MME_JSON_REQUIRED = ("Question_id", "Image", "Text", "Answer choices", "Ground truth")
_MME_OPTIONS_COLUMN = "multi-choice options"
_LETTER_COLUMNS = tuple(chr(code) for code in range(ord("A"), ord("Z") + 1))


# --- public API ----------------------------------------------------------------------------------


def detect_layout(benchmark: Benchmark, path: Path | str) -> str:
    """The layout of the dataset at `path` (one of `LAYOUTS[benchmark]`); InvalidInputError when
    `path` is missing, empty or not a layout this benchmark's loader reads."""
    return _locate(benchmark, Path(path)).layout


def load_samples(
    benchmark: Benchmark, path: Path | str, *, seed: int | None = 0
) -> Iterator[Sample | BadRow]:
    """Stream the questions of the `benchmark` dataset at `path` (a file, or its folder).

    Yields a `Sample` per question and a `BadRow(id, reason)` per row that cannot become one.
    The layout is checked here, eagerly: a wrong-format or empty file raises InvalidInputError
    before the first item. `seed` shuffles V* options (stored with the correct one first) with
    `random.Random(f"{seed}:{id}")`; `None` keeps the stored order. Other benchmarks ignore it.
    """
    located = _locate(benchmark, Path(path))
    if located.layout in ("tsv", "tsv-lite"):
        _raise_csv_field_limit()
        header = _read_tsv_header(located.file, benchmark)
        rows = _tsv_rows(located.file, header)
        reread: Callable[[Any], Any] = _TsvRereader(located.file, header)
        builder = _hr_draft if benchmark == "hr-bench" else _mme_tsv_draft
        return _embedded_samples(rows, builder, reread, layout=located.layout)
    if located.layout == "parquet":
        _check_parquet(located.file)
        return _embedded_samples(
            _parquet_rows(located.file),
            _hr_draft,
            _ParquetRereader(located.file),
            layout="parquet",
        )
    if located.layout == "json":
        items = _read_mme_json(located.file)
        return _mme_json_samples(items, located.root)
    if located.layout == "folder":
        return _vstar_folder_samples(located.root, located.categories, seed)
    _check_jsonl(located.file)
    return _vstar_jsonl_samples(located.file, located.root, seed)


def dataset_fingerprint(path: Path | str) -> str:
    """SHA-256 (hex) identifying a dataset's content, streamed in 1 MiB chunks.

    A file: the SHA-256 of its bytes (what `sha256sum` prints). A folder: the SHA-256 over its
    annotation files (`.json`, `.jsonl`, `.tsv`, `.parquet`, `.csv`, at any depth, hidden folders
    skipped), each as its relative path, a NUL, its size, a NUL, then its bytes, in path order.
    Images in a folder are not hashed (they are named by the annotations; hashing gigabytes of
    JPEGs for an id would cost more than it tells).
    """
    target = Path(path)
    if target.is_file():
        digest = hashlib.sha256()
        with target.open("rb") as handle:
            _hash_into(digest, handle)
        return digest.hexdigest()
    if not target.is_dir():
        raise InvalidInputError(f"dataset not found: {target} (check the path)")
    digest = hashlib.sha256()
    files = sorted(
        item
        for item in target.rglob("*")
        if item.is_file()
        and item.suffix.lower() in ANNOTATION_SUFFIXES
        and not any(part.startswith(".") for part in item.relative_to(target).parts)
    )
    for item in files:
        relative = item.relative_to(target).as_posix()
        digest.update(f"{relative}\0{item.stat().st_size}\0".encode())
        with item.open("rb") as handle:
            _hash_into(digest, handle)
    return digest.hexdigest()


# --- layout detection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    layout: str
    file: Path
    """The annotation file (for `folder`: the root)."""
    root: Path
    """The folder image paths resolve in, and must stay inside."""
    categories: tuple[str, ...] = VSTAR_CATEGORIES


def _locate(benchmark: Benchmark, path: Path) -> _Located:
    if benchmark not in BENCHMARKS:
        raise InvalidInputError(
            f"unknown benchmark {benchmark!r}; use one of: {', '.join(BENCHMARKS)}"
        )
    if not path.exists():
        raise InvalidInputError(f"dataset not found: {path} (check the path)")
    if benchmark == "hr-bench":
        return _locate_hr_bench(path)
    if benchmark == "mme-realworld":
        return _locate_mme(path)
    return _locate_vstar(path)


def _locate_hr_bench(path: Path) -> _Located:
    if path.is_dir():
        path = _single_file(path, (".tsv", ".parquet"), "HR-Bench", "hr_bench_4k.tsv")
    _check_not_empty(path)
    if path.suffix.lower() == ".parquet" or _starts_with(path, b"PAR1"):
        return _Located("parquet", path, path.parent)
    if path.suffix.lower() in (".json", ".jsonl") or _looks_like_json(path):
        raise InvalidInputError(
            f"{path} is JSON, not an HR-Bench file; pass hr_bench_4k.tsv, hr_bench_8k.tsv "
            "or a parquet export of them"
        )
    return _Located("tsv", path, path.parent)


def _locate_mme(path: Path) -> _Located:
    if path.is_dir():
        path = _single_file(path, (".json", ".tsv"), "MME-RealWorld", "MME_RealWorld.json")
    _check_not_empty(path)
    if path.suffix.lower() == ".json" or _looks_like_json(path):
        return _Located("json", path, path.parent)
    if path.suffix.lower() == ".parquet" or _starts_with(path, b"PAR1"):
        raise InvalidInputError(
            f"{path} is parquet; MME-RealWorld is read from its official JSON (with the images "
            "beside it) or a VLMEvalKit TSV"
        )
    _raise_csv_field_limit()
    header = _read_tsv_header(path, "mme-realworld")
    has_letters = "A" in header and "B" in header
    return _Located("tsv" if has_letters else "tsv-lite", path, path.parent)


def _locate_vstar(path: Path) -> _Located:
    if path.is_dir():
        present = tuple(
            name
            for name in VSTAR_CATEGORIES
            if (path / name).is_dir() and any((path / name).glob("*.json"))
        )
        if present:  # the real repository ships the jsonl beside the folders: folders win
            return _Located("folder", path, path, present)
        if path.name in VSTAR_CATEGORIES and any(path.glob("*.json")):
            return _Located("folder", path.parent, path.parent, (path.name,))
        questions = path / "test_questions.jsonl"
        if questions.is_file():
            path = questions
        else:
            raise InvalidInputError(
                f"{path} is not a V* Bench folder: it has no direct_attributes/ or "
                "relative_position/ with question JSONs, and no test_questions.jsonl "
                "(pass the vstar_bench folder)"
            )
    _check_not_empty(path)
    if path.suffix.lower() in (".tsv", ".parquet", ".csv") or _starts_with(path, b"PAR1"):
        raise InvalidInputError(
            f"{path} is not a V* Bench file; pass the vstar_bench folder or its "
            "test_questions.jsonl"
        )
    return _Located("jsonl", path, path.parent)


def _single_file(folder: Path, suffixes: tuple[str, ...], name: str, example: str) -> Path:
    found = sorted(
        item
        for item in folder.iterdir()
        if item.is_file() and item.suffix.lower() in suffixes and not item.name.startswith(".")
    )
    if len(found) == 1:
        return found[0]
    kinds = " / ".join(suffixes)
    if not found:
        raise InvalidInputError(
            f"{folder} holds no {kinds} file; pass the {name} annotation file (e.g. {example})"
        )
    names = ", ".join(item.name for item in found)
    raise InvalidInputError(f"{folder} holds several {kinds} files ({names}); pass one of them")


def _check_not_empty(path: Path) -> None:
    if not path.is_file():
        raise InvalidInputError(f"not a file: {path} (pass the dataset file or its folder)")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"dataset file is empty (0 bytes): {path} (re-download it)")


def _head(path: Path, size: int = _SNIFF_BYTES) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _starts_with(path: Path, magic: bytes) -> bool:
    return _head(path, len(magic)) == magic


def _looks_like_json(path: Path) -> bool:
    return _head(path, 4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{")


# --- embedded-image tables (TSV, parquet) --------------------------------------------------------


@dataclass
class _TableRow:
    """One row of a TSV or parquet file, image cell apart."""

    id: str
    where: str
    """"line 12" (TSV) or "row 12" (parquet): where a bad row is, for its BadRow."""
    cells: dict[str, Any]
    image: Any
    location: Any
    error: str | None = None


@dataclass
class _Draft:
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


class _RowError(Exception):
    """A row cannot become a Sample; the message is the BadRow's reason."""


def _embedded_samples(
    rows: Iterator[_TableRow],
    build: Callable[[_TableRow], _Draft],
    reread: Callable[[Any], Any],
    *,
    layout: str,
) -> Iterator[Sample | BadRow]:
    """Turn table rows into samples, resolving image cells that name another row's index."""
    images = _ImageStore(reread)
    seen: set[str] = set()
    waiting: dict[str, list[_Draft]] = {}
    for row in rows:
        if not row.id:
            yield BadRow(row.where, row.error or "row has no index")
            continue
        if row.id in seen:
            reason = f"duplicate index {row.id!r} ({row.where}); the first one is kept"
            yield BadRow(_duplicate_id(row.id, row.where), reason)
            continue
        seen.add(row.id)
        if row.error is not None:
            yield BadRow(row.id, row.error)
            yield from _fail_waiting(waiting, row.id, f"a malformed row ({row.error})")
            continue
        draft: _Draft | BadRow
        try:
            draft = build(row)
            draft.source["layout"] = layout
            draft.source["location"] = row.where
        except _RowError as error:
            draft = BadRow(row.id, str(error))
        reference = _reference_of(row.image)
        if reference is None:
            try:
                data = images.add(row.id, row.image, row.location)
            except _RowError as error:
                yield draft if isinstance(draft, BadRow) else BadRow(row.id, str(error))
                yield from _fail_waiting(waiting, row.id, f"an unreadable image ({error})")
                continue
            if isinstance(draft, _Draft):
                yield draft.finish(data)
            else:
                yield draft
            for waiter in waiting.pop(row.id, []):
                yield waiter.finish(data)
            continue
        if isinstance(draft, BadRow):
            yield draft
        elif reference == row.id:
            yield BadRow(row.id, "image cell refers to its own index")
        elif images.has(reference):
            draft.source["image_ref"] = reference
            try:
                shared = images.get(reference)
            except _RowError as error:
                yield BadRow(row.id, f"image cell refers to index {reference}: {error}")
            else:
                yield draft.finish(shared)
        elif reference in images.failed:
            reason = images.failed[reference]
            yield BadRow(row.id, f"image cell refers to index {reference}, whose image is {reason}")
        elif reference in seen:
            yield BadRow(row.id, _no_own_image(reference))
        else:
            draft.source["image_ref"] = reference
            waiting.setdefault(reference, []).append(draft)
        yield from _fail_waiting(waiting, row.id, "a row that refers to another row")
    for reference, drafts in waiting.items():
        for draft in drafts:
            yield BadRow(
                draft.id, f"image cell refers to index {reference}, which has no image in the file"
            )


def _no_own_image(reference: str) -> str:
    return (
        f"image cell refers to index {reference}, which holds no image of its own "
        "(chained or broken reference)"
    )


def _fail_waiting(waiting: dict[str, list[_Draft]], index: str, what: str) -> Iterator[BadRow]:
    for draft in waiting.pop(index, []):
        yield BadRow(draft.id, f"image cell refers to index {index}, {what}")


def _reference_of(cell: Any) -> str | None:
    """The index an image cell names, or None when the cell holds image data."""
    if isinstance(cell, str) and 0 < len(cell.strip()) <= REFERENCE_MAX_CHARS:
        return cell.strip()
    return None


class _ImageStore:
    """Where each decoded embedded image is, plus a small cache of the latest ones."""

    def __init__(self, reread: Callable[[Any], Any]) -> None:
        self._reread = reread
        self._locations: dict[str, Any] = {}
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self.failed: dict[str, str] = {}

    def add(self, index: str, cell: Any, location: Any) -> bytes:
        try:
            data = _decode_image_cell(cell)
        except _RowError as error:
            self.failed[index] = "unreadable"
            raise error
        self._locations[index] = location
        self._remember(index, data)
        return data

    def has(self, index: str) -> bool:
        return index in self._locations

    def get(self, index: str) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        data = _decode_image_cell(self._reread(self._locations[index]))
        self._remember(index, data)
        return data

    def _remember(self, index: str, data: bytes) -> None:
        self._cache[index] = data
        self._cached_bytes += len(data)
        while len(self._cache) > 1 and self._cached_bytes > _IMAGE_CACHE_BYTES:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)


def _decode_image_cell(cell: Any) -> bytes:
    """The encoded image bytes of a cell: raw bytes, base64 text, or `{"bytes": …}` (HF Image)."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        data = bytes(cell)
    elif isinstance(cell, str):
        try:
            data = base64.b64decode(cell.strip(), validate=True)
        except (binascii.Error, ValueError) as error:
            raise _RowError(f"image cell is not valid base64 ({error})") from error
    elif cell is None:
        raise _RowError("image cell is empty")
    else:
        raise _RowError(f"image cell holds {type(cell).__name__}, not image data")
    _check_image_bytes(data)
    return data


def _check_image_bytes(data: bytes) -> None:
    """Refuse bytes that are not an image, reading only the header (no pixel decoding)."""
    if not data:
        raise _RowError("image cell is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)):
                pass  # open parses the header (format, size); pixels are left undecoded
    except Image.DecompressionBombError:
        return  # an image, just a huge one: the runner's pixel limit decides what to do with it
    except UnidentifiedImageError as error:
        raise _RowError("image cell does not decode to an image (unknown format)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _RowError(f"image cell does not decode to an image ({error})") from error


# --- TSV ------------------------------------------------------------------------------------------


def _raise_csv_field_limit() -> None:
    """Base64 cells of 8K JPEGs are tens of MB: lift the csv module's 128 KiB field limit
    (process-wide; the limit guards against runaway quoting, which the row checks catch)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _csv_reader(lines: Iterable[str]) -> Any:
    return csv.reader(lines, delimiter="\t", quotechar='"', doublequote=True, strict=False)


class _OffsetLines:
    """A binary file's lines decoded as UTF-8, counting the bytes and lines read so far. The csv
    reader reads no line ahead, so after it returns a row `offset` is where that row ends; a line
    read directly can be handed back (`push_back`) for the csv reader to take next."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._pushed: str | None = None
        self.offset = 0
        self.count = 0

    def __iter__(self) -> _OffsetLines:
        return self

    def __next__(self) -> str:
        if self._pushed is not None:
            line, self._pushed = self._pushed, None
            return line
        raw = self._handle.readline()
        if not raw:
            raise StopIteration
        encoding = "utf-8-sig" if self.offset == 0 else "utf-8"
        self.offset += len(raw)
        self.count += 1
        return raw.decode(encoding, errors="replace")

    def push_back(self, line: str) -> None:
        self._pushed = line


def _shelve_bulky_cells(text: str) -> tuple[str, dict[str, str]]:
    """`text` with each long run between tabs that holds no quote or line break (a base64 cell)
    swapped for a short token, and the token → run map. The swapped runs hold no character the csv
    parser reacts to, nor do the tokens, so parsing the shortened text gives the same fields with
    tokens in place of the runs: the csv module then never walks through megabytes of base64."""
    if len(text) <= _BULKY_CELL:
        return text, {}
    body = text.rstrip("\r\n")
    ending = text[len(body) :]
    segments = body.split("\t")
    shelved: dict[str, str] = {}
    for position, segment in enumerate(segments):
        if len(segment) > _BULKY_CELL and not any(mark in segment for mark in '"\r\n'):
            token = f"\ue000{position}\ue001"
            if token in text:
                return text, {}
            shelved[token] = segment
            segments[position] = token
    if not shelved:
        return text, {}
    return "\t".join(segments) + ending, shelved


def _unshelve(values: list[str], shelved: dict[str, str]) -> list[str]:
    if not shelved:
        return values
    restored = []
    for value in values:
        if value in shelved:
            value = shelved[value]
        elif "\ue000" in value:
            for token, segment in shelved.items():
                value = value.replace(token, segment)
        restored.append(value)
    return restored


def _split_unquoted(line: str) -> list[str]:
    """The fields of a one-line record without quote characters: exactly what the csv module
    returns for it, without its 4-bytes-per-character field buffer (base64 cells are huge)."""
    if line.endswith("\r\n"):
        line = line[:-2]
    elif line.endswith(("\n", "\r")):
        line = line[:-1]
    return line.split("\t")


def _read_tsv_header(path: Path, benchmark: str) -> list[str]:
    with path.open("rb") as handle:
        lines = _OffsetLines(handle)
        try:
            header = next(_csv_reader(lines), None)
        except csv.Error as error:
            raise InvalidInputError(f"{path} is not a readable TSV file ({error})") from error
        has_rows = bool(handle.read(_SNIFF_BYTES).strip())
    if not header or not any(cell.strip() for cell in header):
        raise InvalidInputError(f"{path} has no header row; is it a TSV file?")
    names = [cell.strip() for cell in header]
    if benchmark == "hr-bench":
        required: tuple[str, ...] = _HR_REQUIRED
        expected = "an HR-Bench TSV (hr_bench_4k.tsv / hr_bench_8k.tsv)"
    else:
        required = _MME_TSV_REQUIRED
        expected = "a VLMEvalKit MME-RealWorld TSV"
    missing = [name for name in required if name not in names]
    if benchmark == "mme-realworld" and "A" not in names and _MME_OPTIONS_COLUMN not in names:
        missing.append(f"A…E or {_MME_OPTIONS_COLUMN!r}")
    if missing and len(names) == 1:
        delimiter = next((mark for mark in (",", ";", "|") if mark in names[0]), None)
        if delimiter is not None:
            raise InvalidInputError(
                f"{path} is not tab-separated: its header has no tab but {delimiter!r} between "
                f"names ({names[0][:80]!r}); {expected} separates columns with tabs: pass the "
                "file as downloaded, or re-export it with tabs"
            )
    if missing:
        shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
        raise InvalidInputError(
            f"{path} is not {expected}: its header lacks {', '.join(missing)} "
            f"(found: {shown[:200]}); pass the right file or the right benchmark"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{path} has duplicate column names in its header; fix the file")
    if not has_rows:
        raise InvalidInputError(f"{path} has a header but no rows (re-download it)")
    return names


def _tsv_rows(path: Path, header: list[str]) -> Iterator[_TableRow]:
    """Rows with their byte ranges. A line without a quote character is a whole record and is
    split directly (fast, and light on memory for base64 cells); a line with one goes through the
    csv module, which reads on across lines while a quoted cell continues."""
    image_column = header.index("image")
    index_column = header.index("index")
    with path.open("rb", buffering=_READ_BUFFER) as handle:
        lines = _OffsetLines(handle)
        reader = _csv_reader(lines)
        try:
            next(reader)  # the header, checked by _read_tsv_header
        except (csv.Error, StopIteration):
            return
        while True:
            start = lines.offset
            line = next(lines, None)
            if line is None:
                return
            where = f"line {lines.count}"
            if '"' in line:
                shortened, shelved = _shelve_bulky_cells(line)
                lines.push_back(shortened)
                del line, shortened
                try:
                    values = _unshelve(next(reader), shelved)
                except StopIteration:
                    return
                except csv.Error as error:
                    yield _TableRow("", where, {}, None, None, f"unreadable row: {error}")
                    continue
            else:
                values = _split_unquoted(line)
                del line
            end = lines.offset
            if not values or (len(values) == 1 and not values[0].strip()):
                continue
            row_id = values[index_column].strip() if len(values) > index_column else ""
            if len(values) != len(header):
                error_text = (
                    f"row has {len(values)} fields, the header has {len(header)} "
                    "(missing or extra cells)"
                )
                yield _TableRow(row_id, where, {}, None, None, error_text)
                continue
            cells = {
                name: value
                for column, (name, value) in enumerate(zip(header, values, strict=True))
                if column != image_column
            }
            image = values[image_column]
            del values
            yield _TableRow(row_id, where, cells, image, (start, end))


class _TsvRereader:
    """Reads one row's image cell back from its byte range (for references to evicted images)."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self._path = path
        self._column = header.index("image")

    def __call__(self, location: tuple[int, int]) -> str:
        start, end = location
        with self._path.open("rb") as handle:
            handle.seek(start)
            text = handle.read(end - start).decode("utf-8", errors="replace")
        if '"' in text:
            shortened, shelved = _shelve_bulky_cells(text)
            values = _unshelve(next(_csv_reader(io.StringIO(shortened, newline=""))), shelved)
        else:
            values = _split_unquoted(text)
        return str(values[self._column])


# --- parquet -------------------------------------------------------------------------------------


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        schema = pq.ParquetFile(path).schema_arrow
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise InvalidInputError(f"{path} is not a readable parquet file ({error})") from error
    names = list(schema.names)
    missing = [name for name in _HR_REQUIRED if name not in names]
    if missing:
        raise InvalidInputError(
            f"{path} is not an HR-Bench parquet file: it lacks columns {', '.join(missing)}"
        )
    if pq.ParquetFile(path).metadata.num_rows == 0:
        raise InvalidInputError(f"{path} has no rows (re-download or re-export it)")


def _parquet_rows(path: Path) -> Iterator[_TableRow]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    number = 0
    for group in range(parquet.num_row_groups):
        position = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[group]):
            for record in batch.to_pylist():
                number += 1
                index = record.get("index")
                row_id = "" if index is None else _text(index)
                cells = {name: _text(value) for name, value in record.items() if name != "image"}
                yield _TableRow(
                    row_id, f"row {number}", cells, record.get("image"), (group, position)
                )
                position += 1


class _ParquetRereader:
    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self, location: tuple[int, int]) -> Any:
        import pyarrow.parquet as pq

        group, position = location
        parquet = pq.ParquetFile(self._path)
        for batch in parquet.iter_batches(
            batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], columns=["image"]
        ):
            if position < batch.num_rows:
                return batch.column(0)[position].as_py()
            position -= batch.num_rows
        raise _RowError("image row vanished from the parquet file")


def _text(value: Any) -> str:
    """A cell as text: None → "", 3.0 → "3", bytes → UTF-8."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# --- row builders: HR-Bench and MME-RealWorld TSV ------------------------------------------------


def _hr_draft(row: _TableRow) -> _Draft:
    """HR-Bench: `question`, options `A`–`D`, `answer` letter, `category`, `cycle_category`."""
    cells = row.cells
    question = _required_text(cells, "question")
    options = _letter_columns(cells)
    answer = _answer_letter(cells.get("answer", ""), options)
    fields = {
        name: cells[name].strip() for name in ("category", "cycle_category") if cells.get(name)
    }
    return _Draft(row.id, question, options, answer, fields, dict(cells))


def _mme_tsv_draft(row: _TableRow) -> _Draft:
    """VLMEvalKit MME-RealWorld: options from `A`–`E`, else the `multi-choice options` cell (a list
    literal in the Lite file; "The choices are listed below:\\n(A) …" text in the others);
    `category` is "Task/Subtask" and `l2-category` the fine category."""
    cells = row.cells
    question = _required_text(cells, "question")
    options = _letter_columns(cells)
    if not options:
        raw = cells.get(_MME_OPTIONS_COLUMN, "")
        if not raw.strip():
            raise _RowError("row has no options (empty A…E and multi-choice options cells)")
        options = _prefixed_options(_option_list(raw))
    answer = _answer_letter(cells.get("answer", ""), options)
    fields: dict[str, str] = {}
    task, _, subtask = cells.get("category", "").strip().partition("/")
    if task:
        fields["task"] = task
    if subtask:
        fields["subtask"] = subtask
    if cells.get("l2-category", "").strip():
        fields["category"] = cells["l2-category"].strip()
    return _Draft(row.id, question, options, answer, fields, dict(cells))


def _required_text(cells: dict[str, Any], name: str) -> str:
    value = str(cells.get(name, "")).strip()
    if not value:
        raise _RowError(f"empty {name!r} cell")
    return value


def _letter_columns(cells: dict[str, Any]) -> dict[str, str]:
    return {
        letter: str(cells[letter]).strip()
        for letter in _LETTER_COLUMNS
        if letter in cells and str(cells[letter]).strip() and str(cells[letter]).strip() != "nan"
    }


def _answer_letter(raw: Any, options: dict[str, str]) -> str:
    if len(options) < 2:
        raise _RowError(f"needs at least two options, found {len(options)}")
    text = str(raw).strip()
    match = _LETTER.match(text)
    letter = match.group(1).upper() if match else None
    if letter is None or letter not in options:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise _RowError(
            f"answer {shown!r} is not one of the option letters {', '.join(options) or '(none)'}"
        )
    return letter


def _option_list(raw: str) -> list[str]:
    """Options from a `multi-choice options` cell: a list literal ("['(A) x', '(B) y']", JSON or
    Python syntax, read with json / ast.literal_eval, never eval) or lines of "(A) x" text."""
    text = raw.strip()
    if not text.startswith("["):
        lines = [line.strip() for line in text.splitlines()]
        found = [line for line in lines if _PREFIXED_OPTION.match(line)]
        if not found:
            raise _RowError("options cell is neither a list literal nor '(A) …' lines")
        return found
    if len(text) > _LITERAL_MAX_CHARS:
        raise _RowError(f"options list is {len(text):,} characters long; refusing to parse it")
    try:
        value: Any = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
            raise _RowError(
                f"options cell is not a list literal ({type(error).__name__})"
            ) from error
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise _RowError("options cell is not a list of strings")
    return list(value)


def _prefixed_options(items: list[Any]) -> dict[str, str]:
    """`["(A) red", "(B) blue"]` → {"A": "red", "B": "blue"}: letters kept as given."""
    if not isinstance(items, list) or not items:
        raise _RowError("options are missing or not a list")
    options: dict[str, str] = {}
    for position, item in enumerate(items, start=1):
        match = _PREFIXED_OPTION.match(item) if isinstance(item, str) else None
        if match is None:
            raise _RowError(f"option {position} ({str(item)[:40]!r}) lacks an '(A) ' prefix")
        letter, text = match.group(1), match.group(2).strip()
        if letter in options:
            raise _RowError(f"option letter {letter} appears twice")
        options[letter] = text
    return options


# --- MME-RealWorld official JSON -----------------------------------------------------------------


def _read_mme_json(path: Path) -> list[Any]:
    """The whole annotation list. The official file is ~10–30 MB of text (no images), so it is
    read with `json.load` at once; a sniff of its head first refuses files that are not it (e.g.
    the MME-RealWorld-Base64 JSON, gigabytes of embedded images) before anything big is parsed."""
    head = _head(path).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
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
    try:
        with path.open("r", encoding="utf-8-sig") as handle:
            items = json.load(handle)
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}); re-download it"
        ) from error
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{path} is not UTF-8 text ({error.reason})") from error
    if not isinstance(items, list):
        raise InvalidInputError(f"{path} holds a JSON {type(items).__name__}, not a list")
    if not items:
        raise InvalidInputError(f"{path} holds an empty list of questions (re-download it)")
    return items


def _mme_json_samples(items: list[Any], root: Path) -> Iterator[Sample | BadRow]:
    seen: set[str] = set()
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            yield BadRow(f"item {number}", "not a JSON object")
            continue
        raw_id = item.get("Question_id")
        sample_id = str(raw_id).strip() if raw_id is not None else ""
        if not sample_id:
            yield BadRow(f"item {number}", "no Question_id")
            continue
        if sample_id in seen:
            reason = f"duplicate Question_id (item {number}); the first is kept"
            yield BadRow(_duplicate_id(sample_id, f"item {number}"), reason)
            continue
        seen.add(sample_id)
        try:
            yield _mme_json_sample(sample_id, item, root, number)
        except _RowError as error:
            yield BadRow(sample_id, str(error))


def _mme_json_sample(sample_id: str, item: dict[str, Any], root: Path, number: int) -> Sample:
    missing = [key for key in _MME_JSON_REQUIRED if key not in item]
    if missing:
        raise _RowError(f"missing field(s): {', '.join(missing)}")
    question = str(item["Text"]).strip()
    if not question:
        raise _RowError("empty Text")
    options = _prefixed_options(item["Answer choices"])
    answer = _answer_letter(item["Ground truth"], options)
    image = _inside_root(root, item["Image"])
    fields = {
        name: str(item[key]).strip()
        for name, key in (("task", "Task"), ("subtask", "Subtask"), ("category", "Category"))
        if item.get(key) not in (None, "")
    }
    source = dict(item)
    source.update(layout="json", location=f"item {number}")
    return Sample(sample_id, str(image), question, options, answer, fields, source)


# --- V* Bench ------------------------------------------------------------------------------------


def _vstar_folder_samples(
    root: Path, categories: tuple[str, ...], seed: int | None
) -> Iterator[Sample | BadRow]:
    """Each `<category>/<stem>.json` (question, options with the correct one first) beside its
    `<stem>.jpg`; id = the stem."""
    seen: set[str] = set()
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
            if stem in seen:
                reason = f"duplicate id: {category}/{stem} (the first one is kept)"
                yield BadRow(_duplicate_id(stem, category), reason)
                continue
            seen.add(stem)
            try:
                yield _vstar_folder_sample(root, category, stem, files, seed)
            except _RowError as error:
                yield BadRow(stem, str(error))


def _vstar_folder_sample(
    root: Path, category: str, stem: str, files: dict[str, Path], seed: int | None
) -> Sample:
    if "json" not in files:
        raise _RowError(f"image {category}/{files['image'].name} has no {stem}.json beside it")
    if "image" not in files:
        raise _RowError(f"{category}/{stem}.json has no image beside it (image file not found)")
    image = _inside_root(root, f"{category}/{files['image'].name}")
    try:
        annotation = json.loads(files["json"].read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as error:
        raise _RowError(f"{category}/{stem}.json is not valid JSON ({error})") from error
    if not isinstance(annotation, dict):
        raise _RowError(f"{category}/{stem}.json is not a JSON object")
    question = str(annotation.get("question", "")).strip()
    if not question:
        raise _RowError(f"{category}/{stem}.json has no question")
    choices = _string_list(annotation.get("options"), "options")
    source = {key: value for key, value in annotation.items()}
    source.update(layout="folder", location=f"{category}/{stem}.json")
    return _vstar_sample(stem, str(image), question, choices, 0, category, source, seed)


def _check_jsonl(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
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
    seen: set[str] = set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
            if not line:
                continue
            where = f"line {number}"
            try:
                record = json.loads(line)
            except ValueError as error:
                yield BadRow(where, f"not valid JSON ({error})")
                continue
            if not isinstance(record, dict):
                yield BadRow(where, "not a JSON object")
                continue
            image_cell = record.get("image")
            if not isinstance(image_cell, str) or not image_cell.strip():
                fallback = record.get("question_id")
                yield BadRow(where if fallback is None else str(fallback), "no 'image' field")
                continue
            sample_id = Path(image_cell.strip().replace("\\", "/")).stem or where
            if sample_id in seen:
                reason = f"duplicate image {image_cell!r} ({where})"
                yield BadRow(_duplicate_id(sample_id, where), reason)
                continue
            seen.add(sample_id)
            try:
                yield _vstar_jsonl_sample(sample_id, record, root, seed, where)
            except _RowError as error:
                yield BadRow(sample_id, str(error))


def _vstar_jsonl_sample(
    sample_id: str, record: dict[str, Any], root: Path, seed: int | None, where: str
) -> Sample:
    image = _inside_root(root, record["image"])
    listed = record.get("options", record.get("choices"))
    if listed is not None:
        choices = _string_list(listed, "options")
        question = str(record.get("question", record.get("text", ""))).strip()
        letters = [chr(ord("A") + position) for position in range(len(choices))]
    else:
        text = str(record.get("text", record.get("question", "")))
        question, letters, choices = _split_embedded_options(text)
    if not question:
        raise _RowError("no question text")
    label = record.get("label", record.get("answer"))
    correct = 0
    if label is not None:
        match = _LETTER.match(str(label).strip())
        if match is None or match.group(1).upper() not in letters:
            raise _RowError(f"label {label!r} is not one of the option letters {letters}")
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
    starts = [i for i, line in enumerate(lines) if _PREFIXED_OPTION.match(line)]
    letters: list[str] = []
    choices: list[str] = []
    if starts:
        question = "\n".join(lines[: starts[0]]).strip()
        for line in lines[starts[0] :]:
            match = _PREFIXED_OPTION.match(line)
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
        raise _RowError("text holds fewer than two '(A) …' options")
    if len(set(letters)) != len(letters):
        raise _RowError("an option letter appears twice in the text")
    return question, letters, choices


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2:
        raise _RowError(f"{name!r} is not a list of at least two options")
    if not all(isinstance(item, (str, int, float)) for item in value):
        raise _RowError(f"{name!r} holds something other than text")
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
    answer = letters[order.index(correct)]
    source.update(
        shuffle_seed=seed, original_options=list(choices), original_answer=letters[correct]
    )
    fields = {"category": category} if category else {}
    return Sample(sample_id, image, question, options, answer, fields, source)


# --- shared helpers ------------------------------------------------------------------------------


def _duplicate_id(sample_id: str, where: str) -> str:
    """The id of a duplicate row's BadRow: the id plus where the duplicate is (`0 @ line 5`).
    Its own id, so the runner records it (under the first row's id it would be taken for that
    row, already done or in flight, and silently dropped)."""
    return f"{sample_id} @ {where}"


def _inside_root(root: Path, cell: Any) -> Path:
    """The file an image cell names, resolved (symlinks too) and required to lie inside `root`;
    never opened here. Absolute paths are accepted only when they land inside the root."""
    if not isinstance(cell, str) or not cell.strip():
        raise _RowError("empty image path")
    text = cell.strip()
    if "\0" in text:
        raise _RowError("image path contains a NUL character")
    real_root = root.resolve()
    candidate = Path(text.replace("\\", "/"))
    target = candidate if candidate.is_absolute() else real_root / candidate
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError) as error:
        raise _RowError(f"image path {text!r} cannot be resolved ({error})") from error
    if not resolved.is_relative_to(real_root):
        raise _RowError(f"image path {text!r} points outside the dataset root {real_root}")
    if not resolved.is_file():
        raise _RowError(f"image file not found: {text} (under {real_root})")
    return resolved


def _hash_into(digest: Any, handle: BinaryIO) -> None:
    while chunk := handle.read(_FINGERPRINT_CHUNK):
        digest.update(chunk)


__all__ = [
    "LAYOUTS",
    "REFERENCE_MAX_CHARS",
    "VSTAR_CATEGORIES",
    "dataset_fingerprint",
    "detect_layout",
    "load_samples",
]
