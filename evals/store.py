"""predictions.jsonl: one JSON line per finished (sample, method), appended as the run goes.

Crash-safe: each record is one `write` of a complete line followed by `fsync`, so a run killed at
any moment (even SIGKILL mid-write) leaves at most one torn last line; opening the store drops it
(truncating the file back to its last newline). A finished sample is never lost or duplicated.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Key = tuple[str, str]
"""(sample id, method)."""


def record_key(record: dict[str, Any]) -> Key:
    return (str(record["id"]), str(record["method"]))


class PredictionStore:
    """The run's predictions file: read what is done, append what finishes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.torn_lines = 0
        """How many torn or unreadable lines were dropped when the store was opened."""
        self.records: dict[Key, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: the write was cut off
            self.torn_lines += 1
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

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_line(descriptor, line)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self.records[record_key(record)] = record

    def drop_errors(self) -> int:
        """Forget records that ended in an error (so they run again); rewrites the file
        atomically with one line per remaining key. Returns how many were dropped."""
        with self._lock:
            errors = [
                key for key, record in self.records.items() if record.get("status") == "error"
            ]
            for key in errors:
                del self.records[key]
            self._rewrite()
        return len(errors)

    def _rewrite(self) -> None:
        temporary = self.path.with_suffix(".jsonl.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for record in self.records.values():
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.records.values()))

    def __len__(self) -> int:
        return len(self.records)


def _write_line(descriptor: int, line: bytes) -> None:
    """Append all of `line`, or nothing: `os.write` may write only part (a full disk, a signal),
    and a fragment left mid-file would glue the next record onto it as one unreadable line."""
    start = os.fstat(descriptor).st_size
    try:
        written = 0
        while written < len(line):
            written += os.write(descriptor, line[written:])
    except OSError:
        os.ftruncate(descriptor, start)
        raise
