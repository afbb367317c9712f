"""TSV tables (VLMEvalKit's format): the record reader, the header check, the data rows with their
byte ranges, and the rereader of one row's image cell (`TsvRereader`).

A TSV line without a quote character is a whole record and is split on tabs directly; a line with
one goes through the `csv` module (quoted cells may hold tabs, quotes and line breaks, as pandas'
`to_csv(sep="\t")`, which writes VLMEvalKit's TSVs, quotes them), its base64 runs swapped for short
tokens first so the parser never walks megabytes of them. A quoted cell that never closes (a stray
`"` in a hand-edited file) would swallow the rows after it, as it does in pandas: here the cell is
caught when it reaches a line that is a whole row by itself and does not close it, the end of the
file or 1 MiB, its row
becomes a BadRow and the lines after it are read as rows again, so every physical line ends up in
exactly one Sample or BadRow (or is blank).
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from zoom_refine.evals.readers import TableRow
from zoom_refine.evals.sniffing import SNIFF_BYTES
from zoom_refine.evals.text_encoding import (
    NOT_UTF8,
    check_utf8_head,
    decode_line,
    is_text,
    shown_text,
)
from zoom_refine.tools.errors import InvalidInputError

_BULKY_CELL = 4096
_READ_BUFFER = 1 << 20


UNBALANCED_QUOTE = (
    'unbalanced quote: a cell opens with " and never closes; the lines after it are read as '
    "rows of their own"
)
"""The reason of a row whose quoted cell would swallow the rows after it."""

STRAY_QUOTE = (
    'stray quote: a cell starts with " but its closing " is not right before a tab or the line '
    'end; quote the cell and double each quote inside it ("") as pandas writes it'
)
"""The reason of a row with a cell that starts with a quote it does not close properly."""

_OPEN_QUOTE_MAX_BYTES = 1 << 20
"""How far a quoted cell may run on over line breaks before it counts as never closing (real
multi-line cells are a few lines of question or option text)."""


def raise_csv_field_limit() -> None:
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


@dataclass
class _Line:
    """One physical line of a file: its text, number (from 1) and byte range."""

    text: str
    number: int
    start: int
    end: int
    bad_byte: str | None
    """Where the line stops being UTF-8 ("byte 0xE9 at line 3"); None when it is UTF-8."""


class _LineReader:
    """A binary file's physical lines, decoded as UTF-8 (a leading byte-order mark dropped)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._offset = 0
        self._number = 0

    def next(self) -> _Line | None:
        """The next line, or None at the end of the file."""
        raw = self._handle.readline()
        if not raw:
            return None
        start = self._offset
        self._offset += len(raw)
        self._number += 1
        if start == 0 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        text, bad = decode_line(raw, self._number)
        return _Line(text, self._number, start, self._offset, bad)

    def rewind_after(self, line: _Line) -> None:
        """Read on from the end of `line` (a line already read)."""
        self._handle.seek(line.end)
        self._offset, self._number = line.end, line.number


@dataclass
class _Record:
    """One TSV record: its fields (None when they cannot be read), its first line, its end."""

    values: list[str] | None
    first: _Line
    end: int
    error: str | None = None


def _next_record(lines: _LineReader, width: int) -> _Record | None:
    """The next record. A line without a quote character is a whole record, split on tabs; a
    line with one goes through the csv module, with the lines after it while a quoted cell runs
    on. Quoting is read as pandas writes it (`_scan_quotes`): a cell whose opening quote is not
    closed right before a tab or line end holds a stray quote, and its record is a bad row; a
    cell that never closes (`_quoted_lines`) is an unbalanced quote: the record is then its
    first line alone, and reading goes on with the line after it, so no row vanishes into it."""
    first = lines.next()
    if first is None:
        return None
    if '"' not in first.text:
        error = NOT_UTF8.format(first.bad_byte) if first.bad_byte else None
        return _Record(_split_unquoted(first.text), first, first.end, error)
    shelved: dict[str, str] = {}
    taken = _quoted_lines(lines, first, width, shelved)
    if taken is None:
        lines.rewind_after(first)
        return _Record(None, first, first.end, UNBALANCED_QUOTE)
    if isinstance(taken, tuple):
        return _Record(None, first, taken[-1].end, STRAY_QUOTE)
    return _parse_record(taken, shelved)


def _quoted_lines(
    lines: _LineReader, first: _Line, width: int, shelved: dict[str, str]
) -> list[_Line] | tuple[_Line, ...] | None:
    """The lines of the record that `first` (a line with a quote) starts, their bulky cells
    swapped into `shelved`: a list, or a tuple when a cell in them holds a stray quote; None
    when a quoted cell never closes (the file ends, it runs past `_OPEN_QUOTE_MAX_BYTES`, or a
    line it would take is a whole row of `width` fields by itself or closes it wrongly)."""
    taken: list[_Line] = []
    line: _Line | None = first
    inside, stray, open_bytes = False, False, 0
    while line is not None:
        line.text, tokens = _shelve_bulky_cells(line.text, len(taken))
        shelved.update(tokens)
        if inside and _is_whole_row(line.text, width) and not _closes_cleanly(line.text):
            return None
        taken.append(line)
        inside, _, fault = _scan_quotes(line.text, inside)
        if fault == "broken":
            return None
        stray = stray or fault == "stray"
        if not inside:
            return tuple(taken) if stray else taken
        open_bytes += line.end - line.start
        if open_bytes > _OPEN_QUOTE_MAX_BYTES:
            return None
        line = lines.next()
    return None


def _parse_record(taken: list[_Line], shelved: dict[str, str]) -> _Record:
    """The fields of a record's (shortened) lines, through the csv module."""
    first, end = taken[0], taken[-1].end
    bad = next((line.bad_byte for line in taken if line.bad_byte), None)
    try:
        parsed = list(_csv_reader([line.text for line in taken]))
    except csv.Error as error:
        return _Record(None, first, end, f"unreadable row: {error}")
    if len(parsed) != 1:
        return _Record(None, first, end, "unreadable row: a line break outside quotes")
    values = _unshelve(parsed[0], shelved)
    return _Record(values, first, end, NOT_UTF8.format(bad) if bad else None)


def _scan_quotes(text: str, inside: bool) -> tuple[bool, int, str | None]:
    """Follow the quoting of a line that starts inside a quoted cell (`inside`) or at the start
    of a record, as pandas writes it: a cell is quoted when it starts with `"`, holds `""` for
    each quote, and its closing quote comes right before a tab or the line end. Returns whether
    a quoted cell is open at the line end, how many fields the line starts or continues, and a
    fault: "stray" when a cell that opens on this line closes elsewhere (its opening quote is
    then read as a plain character), "broken" when the cell open at the start does (the scan
    stops there)."""
    fields, position, fault = 1, 0, None
    carried = inside
    if not inside and text.startswith('"'):
        inside, position = True, 1
    while True:
        if inside:
            opened, position = position, _after_closing_quote(text, position)
            if position < 0:
                return True, fields, fault
            inside = False
            if position < len(text) and text[position] not in "\t\r\n":
                if carried:
                    return False, fields, "broken"
                fault, position = "stray", opened
        carried = False
        tab = text.find("\t", position)
        if tab < 0:
            return False, fields, fault
        fields, position = fields + 1, tab + 1
        if text.startswith('"', position):
            inside, position = True, position + 1


def _after_closing_quote(text: str, position: int) -> int:
    """Where the quoted cell running from `position` ends (just after its closing quote), or -1
    when it runs past the end of the line; `""` is a quote inside the cell."""
    while True:
        found = text.find('"', position)
        if found < 0:
            return -1
        if not text.startswith('"', found + 1):
            return found + 1
        position = found + 2


def _closes_cleanly(text: str) -> bool:
    """Whether a line read as the rest of an open quoted cell closes it as pandas writes it
    (right before a tab or the line end) and opens no cell it leaves open: then it is that
    cell's continuation, as pandas reads it, even if it also looks like a whole row (a cell
    holding a line break then a tab: `"line one\nline two\there"`)."""
    inside, _, fault = _scan_quotes(text, True)
    return not inside and fault is None


def _is_whole_row(text: str, width: int) -> bool:
    """Whether a line read by itself is a complete row of `width` fields (a line inside a
    quoted cell never is, in a file written with quoting: such a line is a row the cell would
    swallow)."""
    inside, fields, _ = _scan_quotes(text, False)
    return width > 1 and not inside and fields == width


def _shelve_bulky_cells(text: str, tag: int = 0) -> tuple[str, dict[str, str]]:
    """`text` with each long run between tabs that holds no quote or line break (a base64 cell)
    swapped for a short token, and the token → run map. The swapped runs hold no character the csv
    parser reacts to, nor do the tokens, so parsing the shortened text gives the same fields with
    tokens in place of the runs: the csv module then never walks through megabytes of base64.
    Tokens hold a lone surrogate that no decoded text holds (undecodable bytes are escaped as
    U+DC80–U+DCFF), and `tag` (the line's place in its record) keeps them apart across lines."""
    if len(text) <= _BULKY_CELL:
        return text, {}
    body = text.rstrip("\r\n")
    ending = text[len(body) :]
    segments = body.split("\t")
    shelved: dict[str, str] = {}
    for position, segment in enumerate(segments):
        if len(segment) > _BULKY_CELL and not any(mark in segment for mark in '"\r\n'):
            token = f"\ud800{tag}.{position}\ud801"
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
        elif "\ud800" in value:
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


def read_tsv_header(
    path: Path, required: tuple[str, ...], expected: str, options_column: str | None = None
) -> list[str]:
    """The header's column names, checked against `required` (`expected` names the file kind in
    errors); with `options_column`, options may be that column instead of `A`–`E`. The file's
    first 64 KiB must be UTF-8 (`check_utf8_head`)."""
    with path.open("rb") as handle:
        record = _next_record(_LineReader(handle), 0)
        has_rows = bool(handle.read(SNIFF_BYTES).strip())
    if record is not None and record.values is None:
        reason = (record.error or "").removeprefix("unreadable row: ")
        raise InvalidInputError(f"{path} is not a readable TSV file ({reason})")
    header = None if record is None else record.values
    if not header or not any(cell.strip() for cell in header):
        raise InvalidInputError(f"{path} has no header row; is it a TSV file?")
    names = [cell.strip() for cell in header]
    _check_header_names(path, names, required, expected, options_column)
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{path} has duplicate column names in its header; fix the file")
    if not has_rows:
        raise InvalidInputError(f"{path} has a header but no rows (re-download it)")
    check_utf8_head(path)
    return names


def _check_header_names(
    path: Path,
    names: list[str],
    required: tuple[str, ...],
    expected: str,
    options_column: str | None,
) -> None:
    """Refuse a header that lacks a `required` column, saying when it is not tab-separated."""
    missing = [name for name in required if name not in names]
    if options_column is not None and "A" not in names and options_column not in names:
        missing.append(f"A…E or {options_column!r}")
    if missing and len(names) == 1:
        delimiter = next((mark for mark in (",", ";", "|") if mark in names[0]), None)
        if delimiter is not None:
            raise InvalidInputError(
                f"{path} is not tab-separated: its header has no tab but {delimiter!r} between "
                f"names ({shown_text(names[0][:80])!r}); {expected} separates columns with tabs: pass "
                "the file as downloaded, or re-export it with tabs"
            )
    if missing:
        shown = shown_text(", ".join(names[:8]) + (", …" if len(names) > 8 else ""))
        raise InvalidInputError(
            f"{path} is not {expected}: its header lacks {', '.join(missing)} "
            f"(found: {shown[:200]}); pass the right file or the right benchmark"
        )


def tsv_rows(path: Path, header: list[str]) -> Iterator[TableRow]:
    """The data rows with their byte ranges. Every physical line after the header is part of
    exactly one row (`_next_record`), or blank."""
    width = len(header)
    with path.open("rb", buffering=_READ_BUFFER) as handle:
        lines = _LineReader(handle)
        if _next_record(lines, 0) is None:  # the header, checked by read_tsv_header
            return
        while (record := _next_record(lines, width)) is not None:
            row = _table_row(record, header)
            if row is not None:
                yield row


def _table_row(record: _Record, header: list[str]) -> TableRow | None:
    """The row a record holds, or None for a blank line; a row that cannot be read carries
    its reason (and its index when the line shows one)."""
    where = f"line {record.first.number}"
    index_column = header.index("index")
    if record.values is None:
        quoting = record.error in (UNBALANCED_QUOTE, STRAY_QUOTE)
        guess = _split_unquoted(record.first.text) if quoting else []
        row_id = _index_cell(guess, index_column)
        return TableRow("" if '"' in row_id else row_id, where, {}, None, None, record.error)
    values = record.values
    if not values or (len(values) == 1 and not values[0].strip()):
        return None
    row_id = _index_cell(values, index_column)
    if record.error is not None:
        return TableRow(row_id, where, {}, None, None, record.error)
    if len(values) != len(header):
        error_text = (
            f"row has {len(values)} fields, the header has {len(header)} (missing or extra cells)"
        )
        return TableRow(row_id, where, {}, None, None, error_text)
    image_column = header.index("image")
    cells = {
        name: value
        for column, (name, value) in enumerate(zip(header, values, strict=True))
        if column != image_column
    }
    location = (record.first.start, record.end)
    return TableRow(row_id, where, cells, values[image_column], location)


def _index_cell(values: list[str], column: int) -> str:
    """A row's index cell, stripped; "" when it has none or it holds bytes that are not UTF-8."""
    value = values[column].strip() if len(values) > column else ""
    return value if is_text(value) else ""


class TsvRereader:
    """Reads one row's image cell back from its byte range (for references to evicted images)."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self._path = path
        self._column = header.index("image")

    def __call__(self, location: tuple[int, int]) -> str:
        start, end = location
        with self._path.open("rb") as handle:
            handle.seek(start)
            text = handle.read(end - start).decode("utf-8", "surrogateescape")
        if '"' in text:
            shortened, shelved = _shelve_bulky_cells(text)
            values = _unshelve(next(_csv_reader(io.StringIO(shortened, newline=""))), shelved)
        else:
            values = _split_unquoted(text)
        return str(values[self._column])


__all__ = [
    "STRAY_QUOTE",
    "UNBALANCED_QUOTE",
    "TsvRereader",
    "raise_csv_field_limit",
    "read_tsv_header",
    "tsv_rows",
]
