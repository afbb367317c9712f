"""HR-Bench: layout detection and samples for its TSV (VLMEvalKit format: `hr_bench_4k.tsv` /
`hr_bench_8k.tsv`) and parquet (the same columns; the image column may hold bytes, base64 text or
`{"bytes": …}`) files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zoom_refine.evals.embedded_images import embedded_samples
from zoom_refine.evals.parquet_rows import ParquetRereader, parquet_rows
from zoom_refine.evals.prompts import TYPED_CELLS
from zoom_refine.evals.readers import Draft, TableRow, answer_letter, letter_columns, required_text
from zoom_refine.evals.samples import BadRow, Sample
from zoom_refine.evals.sniffing import Located, looks_like_json, single_file, starts_with
from zoom_refine.evals.text_encoding import check_dataset_file
from zoom_refine.evals.tsv import TsvRereader, raise_csv_field_limit, read_tsv_header, tsv_rows
from zoom_refine.tools.errors import InvalidInputError

_HR_REQUIRED = ("index", "question", "answer", "A", "B", "image", "category", "cycle_category")
_HR_TSV = "an HR-Bench TSV (hr_bench_4k.tsv / hr_bench_8k.tsv)"


def locate(path: Path) -> Located:
    """The layout of the HR-Bench file at `path` (a file, or a folder holding one)."""
    if path.is_dir():
        path = single_file(path, (".tsv", ".parquet"), "HR-Bench", "hr_bench_4k.tsv")
    check_dataset_file(path)
    if path.suffix.lower() == ".parquet" or starts_with(path, b"PAR1"):
        return Located("parquet", path, path.parent)
    if path.suffix.lower() in (".json", ".jsonl") or looks_like_json(path):
        raise InvalidInputError(
            f"{path} is JSON, not an HR-Bench file; pass hr_bench_4k.tsv, hr_bench_8k.tsv "
            "or a parquet export of them"
        )
    return Located("tsv", path, path.parent)


def load(located: Located) -> Iterator[Sample | BadRow]:
    """The samples of a located HR-Bench file; the file is checked here, before anything is
    yielded."""
    if located.layout == "tsv":
        raise_csv_field_limit()
        header = read_tsv_header(located.file, _HR_REQUIRED, _HR_TSV)
        rows = tsv_rows(located.file, header)
        reread: Callable[[Any], Any] = TsvRereader(located.file, header)
        return embedded_samples(rows, _hr_draft, reread, layout=located.layout)
    _check_parquet(located.file)
    return embedded_samples(
        parquet_rows(located.file),
        _hr_draft,
        ParquetRereader(located.file),
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


def _hr_draft(row: TableRow) -> Draft:
    """HR-Bench: `question`, options `A`–`D`, `answer` letter, `category`, `cycle_category`."""
    cells = row.cells
    question = required_text(cells, "question")
    options = letter_columns(cells)
    answer = answer_letter(cells.get("answer", ""), options)
    fields = {
        name: cells[name].strip() for name in ("category", "cycle_category") if cells.get(name)
    }
    source: dict[str, Any] = dict(cells)
    if row.typed is not None:  # the official option text reads typed cells (`3.0`, not `3`)
        source[TYPED_CELLS] = row.typed
    return Draft(row.id, question, options, answer, fields, source)
