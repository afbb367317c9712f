"""HR-Bench: layout detection and samples for its TSV (VLMEvalKit format: `hr_bench_4k.tsv` /
`hr_bench_8k.tsv`) and parquet (the same columns; the image column may hold bytes, base64 text or
`{"bytes": …}`) files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zoom_refine.evals.readers import (
    _answer_letter,
    _check_dataset_file,
    _Draft,
    _embedded_samples,
    _letter_columns,
    _Located,
    _looks_like_json,
    _parquet_rows,
    _ParquetRereader,
    _raise_csv_field_limit,
    _read_tsv_header,
    _required_text,
    _single_file,
    _starts_with,
    _TableRow,
    _tsv_rows,
    _TsvRereader,
)
from zoom_refine.evals.samples import BadRow, Sample
from zoom_refine.tools.errors import InvalidInputError

_HR_REQUIRED = ("index", "question", "answer", "A", "B", "image", "category", "cycle_category")
_HR_TSV = "an HR-Bench TSV (hr_bench_4k.tsv / hr_bench_8k.tsv)"


def locate(path: Path) -> _Located:
    """The layout of the HR-Bench file at `path` (a file, or a folder holding one)."""
    if path.is_dir():
        path = _single_file(path, (".tsv", ".parquet"), "HR-Bench", "hr_bench_4k.tsv")
    _check_dataset_file(path)
    if path.suffix.lower() == ".parquet" or _starts_with(path, b"PAR1"):
        return _Located("parquet", path, path.parent)
    if path.suffix.lower() in (".json", ".jsonl") or _looks_like_json(path):
        raise InvalidInputError(
            f"{path} is JSON, not an HR-Bench file; pass hr_bench_4k.tsv, hr_bench_8k.tsv "
            "or a parquet export of them"
        )
    return _Located("tsv", path, path.parent)


def load(located: _Located) -> Iterator[Sample | BadRow]:
    """The samples of a located HR-Bench file; the file is checked here, before anything is
    yielded."""
    if located.layout == "tsv":
        _raise_csv_field_limit()
        header = _read_tsv_header(located.file, _HR_REQUIRED, _HR_TSV)
        rows = _tsv_rows(located.file, header)
        reread: Callable[[Any], Any] = _TsvRereader(located.file, header)
        return _embedded_samples(rows, _hr_draft, reread, layout=located.layout)
    _check_parquet(located.file)
    return _embedded_samples(
        _parquet_rows(located.file),
        _hr_draft,
        _ParquetRereader(located.file),
        layout="parquet",
    )


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
