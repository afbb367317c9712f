"""predictions.jsonl: one JSON line per finished (sample, method), appended as the run goes.

Crash-safe: each record is one `write` of a complete line followed by `fsync`, so a run killed at
any moment (even SIGKILL mid-write) leaves at most one torn last line. Only the run's own writer
(holding the run folder's lock, `evals.run_lock`) repairs that, truncating the file back to its
last newline when it opens the store; readers (`read_only=True`: `zoom-refine report`, anything
polling a live run) skip and count it and never modify the file, since the "torn" line may be a
record a live writer is still writing. A finished sample is never lost or duplicated.

Strict: a line is JSON that strict parsers accept (`jq`, browsers, `allow_nan=False`): a
non-finite number a model wrote (`NaN`, `Infinity`, `1e999` in a box) is stored as a string
(`agent.strict_json`), and a record that still held one would fail loudly, not be written.

Lossless: a line is UTF-8 JSON, except that a record holding what UTF-8 cannot encode (a lone
surrogate such as `"\ud800"`, which a server's JSON can carry) is written with every non-ASCII
character escaped, so it reads back as the same strings instead of failing the run.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoom_refine.agent.strict_json import strict_json
from zoom_refine.evals.records import Key, PredictionRecord, record_key
from zoom_refine.tools.errors import StorageError
from zoom_refine.tools.files import replace_bytes

__all__ = [
    "FULL_DISK_REASONS",
    "Key",
    "PredictionStore",
    "encode_line",
    "record_key",
    "replace_json",
    "storage_errors",
]

FULL_DISK_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file size limit was hit",
}
"""The write failures that mean "no room": the run stops on them; it cannot go on without
recording what it finishes."""
STORAGE_FULL = (
    "cannot write {path}: {reason} ({detail}); every record written before it is kept: make room "
    "and run the same command again to resume"
)


class PredictionStore:
    """The run's predictions file: read what is done, append what finishes.

    `read_only=True` is for everything but the run's own writer: it neither creates the folder nor
    repairs a torn tail (counted in `torn_lines`, left in place), and refuses to append."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self.torn_lines = 0
        """How many torn or unreadable lines were skipped (a writer also drops a torn tail)."""
        self.records: dict[Key, dict[str, Any]] = {}
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()  # one read: a snapshot, whatever a live writer does next
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: the write was cut off, or is still going on
            self.torn_lines += 1
            if not self.read_only:
                with self.path.open("r+b") as handle:
                    handle.truncate(end)
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.torn_lines += 1
                continue
            self.records[record_key(record)] = record  # a later line wins (a retried sample)

    def done(self, key: Key) -> bool:
        """Finished, with or without an error (errors are re-run only by `drop_errors`)."""
        return key in self.records

    def append(self, record: PredictionRecord) -> dict[str, Any]:
        """Write `record` as one whole line and fsync it, or leave the file as it was and raise
        OSError (its `filename` this file, so the caller can say which file failed). Returns the
        record as the store now holds it: a plain dict, as every reader gets records back."""
        self._refuse_if_read_only()
        line = encode_line(record)
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_line(descriptor, line)
            except OSError as error:
                error.filename = error.filename or str(self.path)
                raise
            finally:
                os.close(descriptor)
            stored: dict[str, Any] = dict(record)
            self.records[record_key(stored)] = stored
        return stored

    def drop_errors(self) -> int:
        """Forget records that ended in an error (so they run again); rewrites the file
        atomically with one line per remaining key. Returns how many were dropped."""
        self._refuse_if_read_only()
        with self._lock:
            errors = [
                key for key, record in self.records.items() if record.get("status") == "error"
            ]
            for key in errors:
                del self.records[key]
            self._rewrite()
        return len(errors)

    def _refuse_if_read_only(self) -> None:
        """A reader that wrote would race the run's writer (the defect this mode exists for)."""
        if self.read_only:
            raise RuntimeError(f"{self.path} was opened read-only; only the run's writer appends")

    def _rewrite(self) -> None:
        replace_bytes(self.path, b"".join(encode_line(r) for r in self.records.values()))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.records.values()))

    def __len__(self) -> int:
        return len(self.records)


def encode_line(record: Mapping[str, Any]) -> bytes:
    """`record` as one strict JSON line in UTF-8 (non-finite numbers as strings, then
    `allow_nan=False`, so a value that slipped past raises instead of writing `NaN`), readable
    as text when UTF-8 can hold it; otherwise (a lone surrogate from a server's `"\\ud800"`)
    with non-ASCII escaped, which reads back as the very same strings, where encoding it raw
    would raise UnicodeEncodeError and stop the run."""
    strict = strict_json(record)
    text = json.dumps(strict, ensure_ascii=False, default=str, allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(strict, ensure_ascii=True, default=str, allow_nan=False)
        return (line + "\n").encode("ascii")


@contextmanager
def storage_errors(folder: Path) -> Iterator[None]:
    """Turn a write that failed for lack of room (full disk, quota, file size limit) into a
    one-line `StorageError` naming the file (else `folder`), so a run stops with a message a
    user can act on instead of a traceback. Other OSErrors pass through unchanged."""
    try:
        yield
    except OSError as error:
        reason = FULL_DISK_REASONS.get(error.errno or 0)
        if reason is None:
            raise
        path = error.filename or folder
        detail = error.strerror or str(error)
        raise StorageError(STORAGE_FULL.format(path=path, reason=reason, detail=detail)) from error


def _write_line(descriptor: int, line: bytes) -> None:
    """Append all of `line` and fsync it, or nothing: `os.write` may write only part (a full disk,
    a signal), and a fragment left mid-file would glue the next record onto it as one unreadable
    line; a failed fsync (a full disk found at flush) may have lost the line, so it goes too."""
    start = os.fstat(descriptor).st_size
    try:
        written = 0
        while written < len(line):
            written += os.write(descriptor, line[written:])
        os.fsync(descriptor)
    except OSError:
        os.ftruncate(descriptor, start)
        raise


def replace_json(path: Path, value: Any) -> None:
    """Write `value` as indented strict JSON (as `encode_line`) to `path` atomically (a temporary file, fsynced, renamed
    over it): a run stopped mid-write (a full disk, a kill) leaves the old file or the new one,
    never a torn one that readers would choke on. An OSError names `path`, not the temporary."""
    data = json.dumps(strict_json(value), indent=2, default=str, allow_nan=False).encode()
    replace_bytes(path, data)
