"""Parquet tables: the rows of a parquet file, read a few at a time within one row group (cells
as text, the image cell apart), each with its row group and position, and the rereader of one
row's image cell by that position (`ParquetRereader`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoom_refine.evals.readers import RowError, TableRow

_PARQUET_BATCH_ROWS = 8


def parquet_rows(path: Path) -> Iterator[TableRow]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    number = 0
    for group in range(parquet.num_row_groups):
        position = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[group]):
            for record in batch.to_pylist():
                number += 1
                yield _parquet_row(record, f"row {number}", (group, position))
                position += 1


def _parquet_row(record: dict[str, Any], where: str, location: tuple[int, int]) -> TableRow:
    """One parquet row as a table row; a row with a binary cell that is not UTF-8 carries the
    reason."""
    cells: dict[str, str] = {}
    for name, value in record.items():
        if name == "image":
            continue
        try:
            cells[name] = _text(value)
        except UnicodeDecodeError as error:
            bad = f"byte 0x{error.object[error.start]:02X}"
            reason = f"column {name!r} is not UTF-8 text ({bad})"
            return TableRow(cells.get("index", ""), where, {}, None, None, reason)
    typed = {name: value for name, value in record.items() if name != "image"}
    return TableRow(
        cells.get("index", ""), where, cells, record.get("image"), location, typed=typed
    )


class ParquetRereader:
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
        raise RowError("image row vanished from the parquet file")


def _text(value: Any) -> str:
    """A cell as text: None → "", 3.0 → "3", bytes → UTF-8 (UnicodeDecodeError when not)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


__all__ = [
    "ParquetRereader",
    "parquet_rows",
]
