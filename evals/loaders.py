"""Streaming loaders for HR-Bench, MME-RealWorld and V* Bench: the public entry points, which pick
the benchmark's module (`hr_bench`, `mme_realworld`, `vstar`; they share `sniffing`,
`text_encoding`, `tsv`, `parquet_rows`, `embedded_images` and `readers`, rows and cells).

`load_samples(benchmark, path)` detects the layout from `path` and yields one `Sample` per question,
or a `BadRow` for a row that cannot become one (missing column, unreadable image cell, unknown
answer letter, missing image file, duplicate id, an image path outside the dataset root, a cell
opening a quote that never closes, bytes that are not UTF-8, a NUL character in the id or the
question or option text); a bad row never stops the run. Every row yields exactly one item, and
no two items share an id: a row whose id is missing, unusable or already taken is labelled by
where it is (`0 @ line 5`, `line 7`, `item 4`; see `readers.Ids`). A file of the wrong format, an
empty one, one in UTF-16 / UTF-32, or one whose first 64 KiB are not UTF-8 raises
`InvalidInputError` when `load_samples` is called, before anything is yielded.

Layouts (`detect_layout` names them):

- `hr-bench`: `tsv` (the official `hr_bench_4k.tsv` / `hr_bench_8k.tsv`; VLMEvalKit format) or
  `parquet` (the same columns; the image column may hold bytes, base64 text or `{"bytes": …}`).
- `mme-realworld`: `json` (the official annotation file; images under the file's folder), `tsv`
  (VLMEvalKit's MME-RealWorld / MME-RealWorld-CN: option columns `A`–`E`) or `tsv-lite`
  (MME-RealWorld-Lite: the options only as one `multi-choice options` cell holding a list literal).
- `vstar`: `folder` (`direct_attributes/` and `relative_position/`, each image beside a JSON with
  its question and options) or `jsonl` (`test_questions.jsonl`, options embedded in `text`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from zoom_refine.evals import hr_bench, mme_realworld, vstar
from zoom_refine.evals.samples import BENCHMARKS, BadRow, Benchmark, Sample
from zoom_refine.evals.sniffing import Located
from zoom_refine.tools.errors import InvalidInputError

LAYOUTS: dict[Benchmark, tuple[str, ...]] = {
    "hr-bench": ("tsv", "parquet"),
    "mme-realworld": ("json", "tsv", "tsv-lite"),
    "vstar": ("folder", "jsonl"),
}
"""The layouts each benchmark's loader reads, as `detect_layout` names them."""

ANNOTATION_SUFFIXES = frozenset({".json", ".jsonl", ".tsv", ".parquet", ".csv"})

_FINGERPRINT_CHUNK = 1 << 20


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
    if benchmark == "hr-bench":
        return hr_bench.load(located)
    if benchmark == "mme-realworld":
        return mme_realworld.load(located)
    return vstar.load(located, seed)


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


def _locate(benchmark: Benchmark, path: Path) -> Located:
    if benchmark not in BENCHMARKS:
        raise InvalidInputError(
            f"unknown benchmark {benchmark!r}; use one of: {', '.join(BENCHMARKS)}"
        )
    if not path.exists():
        raise InvalidInputError(f"dataset not found: {path} (check the path)")
    if benchmark == "hr-bench":
        return hr_bench.locate(path)
    if benchmark == "mme-realworld":
        return mme_realworld.locate(path)
    return vstar.locate(path)


def _hash_into(digest: Any, handle: BinaryIO) -> None:
    while chunk := handle.read(_FINGERPRINT_CHUNK):
        digest.update(chunk)


__all__ = [
    "LAYOUTS",
    "dataset_fingerprint",
    "detect_layout",
    "load_samples",
]
