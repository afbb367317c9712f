"""Files written over safely: a temporary file in the same folder, fsynced, renamed over the target.

A write that fails part-way (a value that cannot be encoded, a full disk, a kill) leaves the old
file as it was, never a torn or empty one. Each write has its own temporary name (the pid and a
random part), so two processes writing the same file never share, truncate or remove each
other's temporary: the last rename wins, whole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside `path` for this process and this write: `.NAME.PID.HEX.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def replace_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically. An OSError names `path` (not the temporary); the
    temporary is removed on any failure."""
    temporary = temporary_path(path)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from error
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def replace_text(path: Path, text: str, *, encoding: str = "utf-8", errors: str = "strict") -> None:
    """Write `text` to `path` atomically. The text is encoded first (`errors` as for
    `str.encode`): with "strict", a character the encoding cannot hold (a lone surrogate) raises
    UnicodeEncodeError before anything is touched; "backslashreplace" writes it as `\\ud800`."""
    replace_bytes(path, text.encode(encoding, errors))
