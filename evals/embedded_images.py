"""Embedded-image tables (TSV, parquet): their rows turned into samples, each image cell decoded
(raw bytes, base64 text or `{"bytes": …}`) and checked by its header alone (no pixel decoding).

Embedded images are streamed: a row is read, its image decoded, the sample yielded and dropped.
VLMEvalKit-style files store an image once and let other rows name that row's `index` in their
image cell (a cell of at most 64 characters); to resolve those, the loader keeps only the byte
range (TSV) or row position (parquet) of each image row, plus a small cache of recently decoded
images, and re-reads a row from disk on a cache miss. A row that names an image further down the
file waits (without image data) until that row arrives, so such rows come after it. Peak memory is
a few rows' worth of images plus the cache, whatever the file size (parquet: plus one row group).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image, UnidentifiedImageError

from zoom_refine.evals.readers import Draft, Ids, RowError, TableRow, refuse_nul
from zoom_refine.evals.samples import BadRow, Sample

REFERENCE_MAX_CHARS = 64
"""An image cell this short names another row's `index` (VLMEvalKit's rule) instead of holding
base64 data: no real image encodes to 64 base64 characters or fewer."""

_IMAGE_CACHE_BYTES = 64 * 1024 * 1024
"""Budget of the cache of decoded embedded images kept to resolve image references without
re-reading the file (the last image always stays, whatever its size)."""


def embedded_samples(
    rows: Iterator[TableRow],
    build: Callable[[TableRow], Draft],
    reread: Callable[[Any], Any],
    *,
    layout: str,
) -> Iterator[Sample | BadRow]:
    """Turn table rows into samples, resolving image cells that name another row's index."""
    images = _ImageStore(reread)
    ids = Ids()
    waiting: dict[str, list[Draft]] = {}
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
            except RowError as error:
                yield draft if isinstance(draft, BadRow) else BadRow(row.id, str(error))
                yield from _fail_waiting(waiting, row.id, f"an unreadable image ({error})")
                continue
            if isinstance(draft, Draft):
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
            except RowError as error:
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


def _claim_row(row: TableRow, ids: Ids) -> BadRow | None:
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


def _draft_of(row: TableRow, build: Callable[[TableRow], Draft], layout: str) -> Draft | BadRow:
    """The row's draft sample, or its BadRow when its cells cannot make one."""
    try:
        draft = build(row)
        refuse_nul(draft.question, draft.options)
    except RowError as error:
        return BadRow(row.id, str(error))
    draft.source["layout"] = layout
    draft.source["location"] = row.where
    return draft


def _no_own_image(reference: str) -> str:
    return (
        f"image cell refers to index {reference}, which holds no image of its own "
        "(chained or broken reference)"
    )


def _fail_waiting(waiting: dict[str, list[Draft]], index: str, what: str) -> Iterator[BadRow]:
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
        except RowError as error:
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
            raise RowError(f"image cell is not valid base64 ({error})") from error
    elif cell is None:
        raise RowError("image cell is empty")
    else:
        raise RowError(f"image cell holds {type(cell).__name__}, not image data")
    _check_image_bytes(data)
    return data


def _check_image_bytes(data: bytes) -> None:
    """Refuse bytes that are not an image, reading only the header (no pixel decoding)."""
    if not data:
        raise RowError("image cell is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)):
                pass  # open parses the header (format, size); pixels are left undecoded
    except Image.DecompressionBombError:
        return  # an image, just a huge one: the runner's pixel limit decides what to do with it
    except UnidentifiedImageError as error:
        raise RowError("image cell does not decode to an image (unknown format)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise RowError(f"image cell does not decode to an image ({error})") from error


__all__ = [
    "REFERENCE_MAX_CHARS",
    "embedded_samples",
]
