"""Shared readers behind the benchmark loaders: dataset file sniffing, text encodings, TSV and
parquet tables with embedded images, image-cell decoding, option/answer cells, ids and image paths.

Embedded images (TSV / parquet) are streamed: a row is read, its image decoded, the sample yielded
and dropped. A TSV line without a quote character is a whole record and is split on tabs directly;
a line with one goes through the `csv` module (quoted cells may hold tabs, quotes and line breaks,
as pandas' `to_csv(sep="\t")`, which writes VLMEvalKit's TSVs, quotes them), its base64 runs
swapped for short tokens first so the parser never walks megabytes of them. A quoted cell that
never closes (a stray `"` in a hand-edited file) would swallow the rows after it, as it does in
pandas: here the cell is caught when it reaches a line that is a whole row by itself, the end of
the file or 1 MiB, its row becomes a BadRow and the lines after it are read as rows again, so
every physical line ends up in exactly one Sample or BadRow (or is blank).
VLMEvalKit-style files store an image once and let other rows name that row's `index` in their
image cell (a cell of at most 64 characters); to resolve those, the loader keeps only the byte
range (TSV) or row position (parquet) of each image row, plus a small cache of recently decoded
images, and re-reads a row from disk on a cache miss. A row that names an image further down the
file waits (without image data) until that row arrives, so such rows come after it. Peak memory is
a few rows' worth of images plus the cache, whatever the file size (parquet: plus one row group).

Text is UTF-8, with or without a byte-order mark. A file in UTF-16 / UTF-32, or whose first 64 KiB
are not UTF-8, is refused in one line naming the encoding or the first bad byte and its line; a
row further on holding bytes that are not UTF-8 is a BadRow saying the same. No byte is ever
replaced. A NUL character refuses its row: in an id (the BadRow is then labelled by where the
row is) or in question or option text; other cells are kept as read.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import io
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from zoom_refine.evals.samples import BadRow, Sample
from zoom_refine.tools.errors import InvalidInputError

REFERENCE_MAX_CHARS = 64
"""An image cell this short names another row's `index` (VLMEvalKit's rule) instead of holding
base64 data: no real image encodes to 64 base64 characters or fewer."""

_IMAGE_CACHE_BYTES = 64 * 1024 * 1024
"""Budget of the cache of decoded embedded images kept to resolve image references without
re-reading the file (the last image always stays, whatever its size)."""

_PARQUET_BATCH_ROWS = 8
_BULKY_CELL = 4096
_READ_BUFFER = 1 << 20
_SNIFF_BYTES = 1 << 16

_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?[.:]?$")
_PREFIXED_OPTION = re.compile(r"^\s*\(([A-Z])\)\s?(.*)$", re.DOTALL)

_LETTER_COLUMNS = tuple(chr(code) for code in range(ord("A"), ord("Z") + 1))


# --- layout sniffing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    layout: str
    file: Path
    """The annotation file (for `folder`: the root)."""
    root: Path
    """The folder image paths resolve in, and must stay inside."""
    categories: tuple[str, ...] = ()
    """V* folder layout: the category sub-folders present."""


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
    ids = _Ids()
    waiting: dict[str, list[_Draft]] = {}
    for row in rows:
        refused = _claim_row(row, ids)
        if refused is not None:
            yield refused
            continue
        if row.error is not None:
            yield BadRow(row.id, row.error)
            yield from _fail_waiting(waiting, row.id, f"a malformed row ({row.error})")
            continue
        draft = _draft_of(row, build, layout)
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
        elif reference in ids:
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


def _claim_row(row: _TableRow, ids: _Ids) -> BadRow | None:
    """None when the row goes on under its index (now taken); else its BadRow, under a label
    when it has no usable index or an earlier item holds it."""
    if not row.id:
        return BadRow(ids.label("", row.where), row.error or "row has no index")
    if "\0" in row.id:
        return BadRow(ids.label("", row.where), "index holds a NUL character")
    if not ids.claim(row.id):
        reason = f"duplicate index {row.id!r} ({row.where}); the first one is kept"
        return ids.duplicate(row.id, row.where, reason)
    return None


def _draft_of(row: _TableRow, build: Callable[[_TableRow], _Draft], layout: str) -> _Draft | BadRow:
    """The row's draft sample, or its BadRow when its cells cannot make one."""
    try:
        draft = build(row)
        _refuse_nul(draft.question, draft.options)
    except _RowError as error:
        return BadRow(row.id, str(error))
    draft.source["layout"] = layout
    draft.source["location"] = row.where
    return draft


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


# --- text encodings -------------------------------------------------------------------------------


_WIDE_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

NOT_UTF8 = "not UTF-8 ({}); save the file as UTF-8"
"""The reason of a row holding bytes that are not UTF-8 (`{}`: "byte 0xE9 at line 3")."""


def _check_dataset_file(path: Path) -> None:
    """Refuse a path that is not a file, an empty file, or text in UTF-16 / UTF-32: dataset text
    files are read as UTF-8 (with or without a byte-order mark), whatever their suffix."""
    _check_not_empty(path)
    head = _head(path, 64)
    for mark, name in _WIDE_MARKS:
        if head.startswith(mark):
            raise InvalidInputError(
                f"{path} is {name} text (it starts with a {name} byte-order mark); save it as UTF-8"
            )
    if _looks_like_utf16(head):
        raise InvalidInputError(
            f"{path} looks like UTF-16 text (every other byte is NUL); save it as UTF-8"
        )


def _looks_like_utf16(head: bytes) -> bool:
    """UTF-16 without a byte-order mark: over the first 16 bytes, ASCII text with a NUL after
    (little-endian) or before (big-endian) each character."""
    if len(head) < 16:
        return False
    even, odd = head[0:16:2], head[1:16:2]
    return (all(even) and not any(odd)) or (all(odd) and not any(even))


def _bad_byte(data: bytes, position: int, first_line: int = 1) -> str:
    """ "byte 0xE9 at line 3": the byte at `position` of `data`, whose first line is
    `first_line`."""
    line = first_line + data.count(b"\n", 0, position)
    return f"byte 0x{data[position]:02X} at line {line}"


def _not_utf8_error(path: Path, data: bytes, position: int) -> InvalidInputError:
    return InvalidInputError(f"{path} is not UTF-8 ({_bad_byte(data, position)}); save it as UTF-8")


def _check_utf8_head(path: Path) -> None:
    """Refuse a file whose first 64 KiB are not UTF-8, naming the first bad byte and its line.
    Further on, lines are checked as they are read: a row holding bytes that are not UTF-8
    becomes a BadRow (`NOT_UTF8`); no byte is ever replaced."""
    head = _head(path)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise _not_utf8_error(path, head, error.start) from error


def _decode_line(raw: bytes, number: int) -> tuple[str, str | None]:
    """Line `number` as text, and where it stops being UTF-8 (None when it does not): bytes that
    are not UTF-8 are kept as surrogate escapes, never replaced, and the row refused."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return raw.decode("utf-8", "surrogateescape"), _bad_byte(raw, error.start, number)


def _is_text(value: str) -> bool:
    """False when `value` holds bytes that were not UTF-8 (kept as surrogate escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str) -> str:
    """`text` fit for an error message: bytes that were not UTF-8 shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- TSV ------------------------------------------------------------------------------------------

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
        text, bad = _decode_line(raw, self._number)
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
        if inside and _is_whole_row(line.text, width):
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


def _read_tsv_header(
    path: Path, required: tuple[str, ...], expected: str, options_column: str | None = None
) -> list[str]:
    """The header's column names, checked against `required` (`expected` names the file kind in
    errors); with `options_column`, options may be that column instead of `A`–`E`. The file's
    first 64 KiB must be UTF-8 (`_check_utf8_head`)."""
    with path.open("rb") as handle:
        record = _next_record(_LineReader(handle), 0)
        has_rows = bool(handle.read(_SNIFF_BYTES).strip())
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
    _check_utf8_head(path)
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
                f"names ({_shown(names[0][:80])!r}); {expected} separates columns with tabs: pass "
                "the file as downloaded, or re-export it with tabs"
            )
    if missing:
        shown = _shown(", ".join(names[:8]) + (", …" if len(names) > 8 else ""))
        raise InvalidInputError(
            f"{path} is not {expected}: its header lacks {', '.join(missing)} "
            f"(found: {shown[:200]}); pass the right file or the right benchmark"
        )


def _tsv_rows(path: Path, header: list[str]) -> Iterator[_TableRow]:
    """The data rows with their byte ranges. Every physical line after the header is part of
    exactly one row (`_next_record`), or blank."""
    width = len(header)
    with path.open("rb", buffering=_READ_BUFFER) as handle:
        lines = _LineReader(handle)
        if _next_record(lines, 0) is None:  # the header, checked by _read_tsv_header
            return
        while (record := _next_record(lines, width)) is not None:
            row = _table_row(record, header)
            if row is not None:
                yield row


def _table_row(record: _Record, header: list[str]) -> _TableRow | None:
    """The row a record holds, or None for a blank line; a row that cannot be read carries
    its reason (and its index when the line shows one)."""
    where = f"line {record.first.number}"
    index_column = header.index("index")
    if record.values is None:
        quoting = record.error in (UNBALANCED_QUOTE, STRAY_QUOTE)
        guess = _split_unquoted(record.first.text) if quoting else []
        row_id = _index_cell(guess, index_column)
        return _TableRow("" if '"' in row_id else row_id, where, {}, None, None, record.error)
    values = record.values
    if not values or (len(values) == 1 and not values[0].strip()):
        return None
    row_id = _index_cell(values, index_column)
    if record.error is not None:
        return _TableRow(row_id, where, {}, None, None, record.error)
    if len(values) != len(header):
        error_text = (
            f"row has {len(values)} fields, the header has {len(header)} (missing or extra cells)"
        )
        return _TableRow(row_id, where, {}, None, None, error_text)
    image_column = header.index("image")
    cells = {
        name: value
        for column, (name, value) in enumerate(zip(header, values, strict=True))
        if column != image_column
    }
    location = (record.first.start, record.end)
    return _TableRow(row_id, where, cells, values[image_column], location)


def _index_cell(values: list[str], column: int) -> str:
    """A row's index cell, stripped; "" when it has none or it holds bytes that are not UTF-8."""
    value = values[column].strip() if len(values) > column else ""
    return value if _is_text(value) else ""


class _TsvRereader:
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


# --- parquet -------------------------------------------------------------------------------------


def _parquet_rows(path: Path) -> Iterator[_TableRow]:
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


def _parquet_row(record: dict[str, Any], where: str, location: tuple[int, int]) -> _TableRow:
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
            return _TableRow(cells.get("index", ""), where, {}, None, None, reason)
    return _TableRow(cells.get("index", ""), where, cells, record.get("image"), location)


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
    """A cell as text: None → "", 3.0 → "3", bytes → UTF-8 (UnicodeDecodeError when not)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


# --- option and answer cells ----------------------------------------------------------------------


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


# --- shared helpers ------------------------------------------------------------------------------


class _Ids:
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


def _refuse_nul(question: str, options: dict[str, str]) -> None:
    """Refuse question or option text holding a NUL character: no real question has one (it
    marks a corrupt or mis-encoded file), and models and tokenizers treat it unpredictably.
    (A NUL in an id refuses the row too, under a label; other cells are kept as read.)"""
    if "\0" in question:
        raise _RowError("question holds a NUL character")
    for letter, text in options.items():
        if "\0" in text:
            raise _RowError(f"option {letter} holds a NUL character")


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


__all__ = ["NOT_UTF8", "REFERENCE_MAX_CHARS", "STRAY_QUOTE", "UNBALANCED_QUOTE"]
