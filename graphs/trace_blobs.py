"""Compact trace checkpoints: every image is stored once per database, not in every row.

The graph state's conversation holds its images as base64 content blocks, and SqliteSaver writes
the whole state at every step, so a plain trace repeats each image in each checkpoint and write
row (~5 MB per BMP view). `TraceSerializer` wraps the strict msgpack serializer: before encoding
it swaps each large base64 string in a message's image block (the `base64` field, `data` of a
`source_type: base64` block, a `data:` URL of an `image_url` block) and each large `bytes` value
(an input image given as bytes) for a small marker `{"zr_blob": <sha256>, "form": …}`, and keeps
the data once in the table `zr_blobs` of the same database, keyed by the SHA-256 of the decoded
bytes. Reading swaps the markers back: the state read back equals the state written, base64
strings included, so replay and prefix matching see what the model saw. Live objects are never
changed (changed parts are copied). Rows without markers (databases written before) load as
they always did.

How a blob is kept (`codec`): a view of the run's input image (a PNG or BMP block that
re-rendering the view from the input gives back byte for byte: checked when stored) as a recipe,
`view` (JSON: the input, the view's box and size, the format), since its pixels are already in
the input image — a photo's downscaled view compresses losslessly to little less than its raw
size; anything else as `zlib`, or `raw` when zlib would not shrink it (JPEG, PNG). Reading checks
the SHA-256 of what it rebuilds. A recipe needs its input: an image given as bytes is itself a
blob; an image file must still be there, unchanged. If it is not, that image's marker stays in
the block (a warning is logged) and the rest of the run reads as usual.

The table lives in the trace database itself, SQLite or Postgres: `BlobStore` is written once
against a `trace_sql.BlobTable`, which holds the only SQL and the connection. Concurrency: the
table has its own connection and lock (the checkpoint saver serializes inside its own lock,
which must not be taken again), an insert that finds the image already there does nothing (so
writers of the same image — threads, processes, machines — agree), and a blob is committed
before the row that refers to it. Blobs are shared by runs, so `delete_thread` leaves them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from PIL import Image

from zoom_refine.graphs.trace_sql import BlobTable
from zoom_refine.tools.boxes import Box
from zoom_refine.tools.encoding import encode_image
from zoom_refine.tools.errors import ZoomRefineError
from zoom_refine.tools.images import DEFAULT_MAX_PIXELS, load_image
from zoom_refine.tools.views import render_view

logger = logging.getLogger(__name__)

BLOB_KEY = "zr_blob"
BLOB_KEY_BYTES = BLOB_KEY.encode()
MIN_BLOB_SIZE = 4096
"""Strings and bytes shorter than this stay inline (a marker and a row cost ~200 bytes)."""
IMAGE_BLOCK_TYPES = frozenset({"image", "image_url"})
RENDERED_FORMATS = {"image/png": "png", "image/bmp": "bmp"}
"""Block formats whose bytes a re-rendered view reproduces exactly (`tools.encoding`: lossless,
deterministic)."""
COMPRESSED_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")
LOADED_CACHE_BYTES = 256 * 1024 * 1024
"""Rebuilt data kept per store: reading a run's history expands the same images at every step."""
RUNS_KEPT = 64
"""Runs whose input image and views a store remembers, to recognize their views."""


@dataclass
class _RunImages:
    """What a run's state says about its images: the input image and every view's box and size."""

    source: str | None = None
    """The input image file, as the state names it."""
    source_blob: str | None = None
    """Or the SHA-256 of the input image given as bytes (a blob of its own: not held here)."""
    views: list[tuple[tuple[int, ...], tuple[int, int]]] = field(default_factory=list)


class BlobStore:
    """The `zr_blobs` table of one trace database: images stored once, read back checked. `db`
    is a SQLite file, or the table of another backend (`trace_postgres.postgres_blobs`).
    `recipes=False` stores views' bytes too (zlib), never a recipe: a trace that needs no input
    image to rebuild its conversation, at the size of the views (a 4K photo's: ~3 MB each)."""

    def __init__(self, db: str | Path | BlobTable, *, recipes: bool = True) -> None:
        self.table = db if isinstance(db, BlobTable) else BlobTable.sqlite(db)
        self.recipes = recipes
        self._lock = threading.RLock()
        self._stored: set[str] = set()
        """SHA-256s known to be in the table."""
        self._text_digests: OrderedDict[str, str] = OrderedDict()
        """SHA-256 of a base64 string → SHA-256 of its bytes (skips decoding a known image)."""
        self._loaded: OrderedDict[tuple[str, bool], str | bytes] = OrderedDict()
        self._loaded_bytes = 0
        self._unavailable: dict[str, str] = {}
        self._runs: OrderedDict[str, _RunImages] = OrderedDict()
        self._local = threading.local()

    def close(self) -> None:
        self.table.close()

    # --- runs: which input image and views a checkpoint or write belongs to -------------------

    @contextlib.contextmanager
    def run(self, thread_id: str, channels: Sequence[tuple[str, Any]]) -> Iterator[None]:
        """Serialize within run `thread_id`, after noting what `channels` (channel, value) say
        about its input image and views."""
        with self._lock:
            images = self._runs.pop(thread_id, None) or _RunImages()
            self._runs[thread_id] = images
            while len(self._runs) > RUNS_KEPT:
                self._runs.popitem(last=False)
            for channel, value in channels:
                _note(images, channel, value)
        previous = getattr(self._local, "run", None)
        self._local.run = images
        try:
            yield
        finally:
            self._local.run = previous

    # --- writing ------------------------------------------------------------------------------

    def compact(self, value: Any) -> Any:
        """`value` with every large image string or bytes replaced by a marker (stored here);
        the parts that change are copies, `value` itself is untouched."""
        if isinstance(value, bytes | bytearray) and len(value) >= MIN_BLOB_SIZE:
            return {BLOB_KEY: self.put_bytes(bytes(value)), "form": "bytes"}
        if isinstance(value, BaseMessage):
            return self._compact_message(value)
        if type(value) is dict:
            if value.get("type") in IMAGE_BLOCK_TYPES:
                return self._compact_block(value)
            return _replace_items(value, {key: self.compact(item) for key, item in value.items()})
        if isinstance(value, list | tuple) and type(value) in (list, tuple):
            items = [self.compact(item) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return type(value)(items)
        return value

    def _compact_message(self, message: BaseMessage) -> BaseMessage:
        update: dict[str, Any] = {}
        content = self.compact(message.content)
        if content is not message.content:
            update["content"] = content
        if isinstance(message, ToolMessage) and message.artifact is not None:
            artifact = self.compact(message.artifact)
            if artifact is not message.artifact:
                update["artifact"] = artifact
        return message.model_copy(update=update) if update else message

    def _compact_block(self, block: dict[str, Any]) -> dict[str, Any]:
        new = dict(block)
        mime = str(block.get("mime_type") or "")
        for key in ("base64", "data"):
            text = block.get(key)
            if key == "data" and block.get("source_type") != "base64":
                continue
            if isinstance(text, str) and len(text) >= MIN_BLOB_SIZE:
                new[key] = self._marker_for_text(text, mime) or text
        for key in ("url", "image_url"):
            url = block.get(key)
            if isinstance(url, str):
                new[key] = self._marker_for_url(url) or url
            elif isinstance(url, dict) and isinstance(url.get("url"), str):
                marker = self._marker_for_url(url["url"])
                new[key] = {**url, "url": marker} if marker else url
        changed = any(new[key] is not block[key] for key in block)
        return new if changed else block

    def _marker_for_url(self, url: str) -> dict[str, str] | None:
        header, comma, payload = url.partition(",")
        if not (comma and header.startswith("data:") and header.endswith(";base64")):
            return None
        if len(payload) < MIN_BLOB_SIZE:
            return None
        marker = self._marker_for_text(payload, header[5:].split(";")[0])
        return {**marker, "form": "data_url", "prefix": header + comma} if marker else None

    def _marker_for_text(self, text: str, mime: str) -> dict[str, str] | None:
        """The marker for base64 `text` (its bytes stored), or None when it is not canonical
        base64 (decoding and encoding again would not give back the same string)."""
        try:
            encoded = text.encode("ascii")
        except UnicodeEncodeError:
            return None
        text_digest = hashlib.sha256(encoded).hexdigest()
        with self._lock:
            digest = self._text_digests.get(text_digest)
        if digest is None:
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                return None
            if base64.b64encode(data) != encoded:
                return None
            digest = self.put_bytes(data, mime)
            with self._lock:
                self._text_digests[text_digest] = digest
                while len(self._text_digests) > 4 * RUNS_KEPT:
                    self._text_digests.popitem(last=False)
        return {BLOB_KEY: digest, "form": "base64"}

    def put_bytes(self, data: bytes, mime: str = "") -> str:
        """Store `data` (once per database) and return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._stored:
                return digest
        if not self.table.contains(digest):
            codec, stored = self._encode(data, mime)
            self.table.insert(digest, mime, codec, len(data), stored)
        with self._lock:
            self._stored.add(digest)
        return digest

    def _encode(self, data: bytes, mime: str) -> tuple[str, bytes]:
        recipe = self._view_recipe(data, mime)
        if recipe is not None:
            return "view", json.dumps(recipe, sort_keys=True).encode()
        if data.startswith(COMPRESSED_MAGIC):
            return "raw", data
        packed = zlib.compress(data, 6)
        return ("zlib", packed) if len(packed) < len(data) else ("raw", data)

    def _view_recipe(self, data: bytes, mime: str) -> dict[str, Any] | None:
        """How to re-render `data` from the current run's input image, when one of the run's
        views (or the whole image) rendered and encoded as `mime` gives exactly `data`."""
        image_format = RENDERED_FORMATS.get(mime)
        images: _RunImages | None = getattr(self._local, "run", None)
        if image_format is None or images is None or not self.recipes:
            return None
        source: str | bytes | None = images.source
        if images.source_blob is not None:  # stored when the run's input was checkpointed
            source = self._fetch(images.source_blob)[0]
        if source is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as header:
                size = header.size
            original = load_image(source, max_pixels=DEFAULT_MAX_PIXELS).image
        except (ZoomRefineError, OSError, ValueError, Image.DecompressionBombError):
            return None
        full = (0, 0, *original.size)
        with self._lock:
            candidates = [box for box, shown in images.views if shown == size]
        for box in dict.fromkeys([*candidates, full]):
            try:
                if len(box) != 4 or _render(original, box, size, image_format) != data:
                    continue
            except Exception:  # a recipe only saves room: never fail a run over one
                logger.debug("view %s not re-rendered", box, exc_info=True)
                continue
            if images.source_blob is not None:
                where = {"blob": images.source_blob}
            else:
                where = {"path": os.path.abspath(str(source))}
            return {
                "source": where,
                "source_size": list(original.size),
                "box": list(box),
                "size": list(size),
                "format": image_format,
            }
        return None

    # --- reading ------------------------------------------------------------------------------

    def expand(self, value: Any) -> Any:
        """`value` (freshly decoded, so changed in place) with every marker replaced by its data;
        a marker whose data cannot be rebuilt stays."""
        if isinstance(value, dict):
            if _is_marker(value):
                return self._rebuild(value)
            for key, item in value.items():
                value[key] = self.expand(item)
            return value
        if isinstance(value, list):
            value[:] = [self.expand(item) for item in value]
            return value
        if isinstance(value, tuple):
            return tuple(self.expand(item) for item in value)
        if isinstance(value, BaseMessage):
            value.content = self.expand(value.content)
            if isinstance(value, ToolMessage) and value.artifact is not None:
                value.artifact = self.expand(value.artifact)
        return value

    def _rebuild(self, marker: dict[str, Any]) -> Any:
        digest, form = str(marker[BLOB_KEY]), marker.get("form", "base64")
        key = (digest, form == "bytes")
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
        if cached is None:
            data = self.get_bytes(digest)
            if data is None:
                return marker
            cached = data if form == "bytes" else base64.b64encode(data).decode("ascii")
            with self._lock:
                self._loaded[key] = cached
                self._loaded_bytes += len(cached)
                while self._loaded_bytes > LOADED_CACHE_BYTES and len(self._loaded) > 1:
                    _, dropped = self._loaded.popitem(last=False)
                    self._loaded_bytes -= len(dropped)
        if form == "data_url":
            return str(marker.get("prefix", "")) + str(cached)
        return cached

    def get_bytes(self, digest: str) -> bytes | None:
        """The data stored under `digest`, checked against it; None (and a warning, once) when
        it is missing or cannot be rebuilt."""
        with self._lock:
            if digest in self._unavailable:
                return None
        data, reason = self._fetch(digest)
        if data is None:
            with self._lock:
                self._unavailable[digest] = reason
            logger.warning("trace image %s… not restored: %s", digest[:12], reason)
        return data

    def _fetch(self, digest: str) -> tuple[bytes | None, str]:
        """The data stored under `digest` and checked against it, or None and why not."""
        row = self.table.row(digest)
        data, reason = self._decode(row)
        if data is not None and hashlib.sha256(data).hexdigest() != digest:
            changed = row is not None and row[0] == "view"
            return None, "the input image changed since the run" if changed else "corrupt data"
        return data, reason

    def _decode(self, row: tuple[str, bytes] | None) -> tuple[bytes | None, str]:
        if row is None:
            return None, "it is not in the database"
        codec, stored = row
        if codec == "raw":
            return stored, ""
        if codec == "zlib":
            try:
                return zlib.decompress(stored), ""
            except zlib.error as error:
                return None, f"corrupt data ({error})"
        if codec == "view":
            try:
                recipe = json.loads(stored)
            except ValueError as error:
                return None, f"corrupt recipe ({error})"
            return self._render_recipe(recipe)
        return None, f"unknown codec {codec!r}"

    def _render_recipe(self, recipe: dict[str, Any]) -> tuple[bytes | None, str]:
        where = recipe.get("source") or {}
        width, height = recipe["source_size"]
        if "blob" in where:
            source: str | bytes | None = self.get_bytes(str(where["blob"]))
            if source is None:
                return None, "its input image is not in the database"
        else:
            source = str(where.get("path"))
        try:
            cap = min(int(width) * int(height), DEFAULT_MAX_PIXELS)  # as when it was stored
            original = load_image(source, max_pixels=cap).image
        except (ZoomRefineError, OSError, ValueError) as error:
            return None, f"the run's input image is needed to rebuild it: {error}"
        try:
            box, size = tuple(recipe["box"]), tuple(recipe["size"])
            data = _render(original, box, size, str(recipe["format"]))
        except Exception as error:  # a broken recipe costs that image, not the trace
            return None, f"it could not be re-rendered ({error})"
        return (data, "") if data else (None, "the input image changed since the run")


def _render(original: Image.Image, box: tuple[int, ...], size: tuple[int, ...], fmt: str) -> bytes:
    """The bytes of a view of `original` as the graph encodes it (`tools.views`, `tools.encoding`)."""
    width, height = size
    if original.size[0] < box[2] or original.size[1] < box[3]:
        return b""
    _, shown = render_view(
        original, Box.from_list(list(box)), view_id="", hop=0, size=(width, height)
    )
    return encode_image(shown, "bmp" if fmt == "bmp" else "png")


def _note(images: _RunImages, channel: str, value: Any) -> None:
    """Record the input image and views that `value`, written to `channel`, holds."""
    if channel == "__start__" and isinstance(value, Mapping):
        for key, item in value.items():
            _note(images, str(key), item)
    elif channel == "image" and isinstance(value, str):
        images.source, images.source_blob = value, None
    elif channel == "image" and isinstance(value, bytes) and images.source_blob is None:
        images.source, images.source_blob = None, hashlib.sha256(value).hexdigest()
    elif channel == "views" and isinstance(value, list):
        for view in value:
            _note_view(images, view)
    elif channel == "messages" and isinstance(value, list):
        for message in value:
            if isinstance(message, ToolMessage) and isinstance(message.artifact, Mapping):
                _note_view(images, message.artifact.get("view"))


def _note_view(images: _RunImages, view: Any) -> None:
    if not isinstance(view, Mapping):
        return
    try:
        box = tuple(int(value) for value in view["box"])
        width, height = (int(value) for value in view["size"])
    except (KeyError, TypeError, ValueError):
        return
    entry = (box, (width, height))
    if entry not in images.views:
        images.views.append(entry)


def _replace_items(original: dict[str, Any], items: dict[str, Any]) -> dict[str, Any]:
    changed = any(items[key] is not original[key] for key in original)
    return items if changed else original


def _is_marker(value: dict[str, Any]) -> bool:
    return (
        isinstance(value.get(BLOB_KEY), str)
        and len(value[BLOB_KEY]) == 64
        and value.get("form", "base64") in ("base64", "data_url", "bytes")
        and set(value) <= {BLOB_KEY, "form", "prefix"}
    )


class TraceSerializer(JsonPlusSerializer):
    """The strict msgpack serializer (no pickle; on reading, only LangGraph's allowlist of
    safe types is revived) with each image kept once in `blobs` (see the module docstring).
    `expand=False` reads markers back as they are: for listings that never look at images."""

    def __init__(self, blobs: BlobStore, *, expand: bool = True) -> None:
        super().__init__(pickle_fallback=False, allowed_msgpack_modules=None)
        self.blobs = blobs
        self.expand = expand

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return super().dumps_typed(self.blobs.compact(obj))

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        value = super().loads_typed(data)
        kind, payload = data
        if self.expand and kind == "msgpack" and BLOB_KEY_BYTES in payload:
            value = self.blobs.expand(value)
        return value


class BlobRunSaver(BaseCheckpointSaver[Any]):
    """Mixin for a checkpoint saver: tells its `TraceSerializer` which run each row belongs to,
    so the views of the run's input image are recognized and stored as recipes. Put it before
    the concrete saver (`class S(BlobRunSaver, SqliteSaver)`)."""

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        channels = list((checkpoint.get("channel_values") or {}).items())
        with self._blob_run(config, channels):
            return super().put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        with self._blob_run(config, writes):
            super().put_writes(config, writes, task_id, task_path)

    def _blob_run(
        self, config: RunnableConfig, channels: Sequence[tuple[str, Any]]
    ) -> contextlib.AbstractContextManager[None]:
        blobs = getattr(self.serde, "blobs", None)
        thread_id = (config.get("configurable") or {}).get("thread_id")
        if not isinstance(blobs, BlobStore) or thread_id is None:
            return contextlib.nullcontext()
        return blobs.run(str(thread_id), channels)


class CompactSqliteSaver(BlobRunSaver, SqliteSaver):
    """SqliteSaver whose rows are compacted per run (`BlobRunSaver`)."""
