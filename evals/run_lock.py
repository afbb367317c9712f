"""One writer per run folder: `<out>/.lock`, held with `flock` for as long as a run writes there.

Two `zoom-refine eval` processes on one `--out` would both append (duplicate lines), and a
`--retry-errors` rewriting predictions.jsonl under a live run would drop what that run appends
meanwhile. So a writer takes an exclusive `flock` on the lock file before it opens the store
(which may repair a torn tail) and keeps it to the end; a second writer is refused at once with
`RunFolderBusyError` ("… is being written by pid N …", the holder writes its pid into the file).

The kernel releases a `flock` when its holder dies, even by SIGKILL, so a lock left behind by a
dead run is never stale: the file stays, unlocked, and the next run takes it. The file is never
deleted (a run that unlinked it could let two later runs lock two different files). Where the
filesystem has no `flock`, the pid in the file decides: a live other process holds the folder, a
dead one's lock is stale and taken over.

Within one process the lock is re-entrant for the thread that holds it (the CLI takes it before
its progress bar starts, so a refusal is the only line printed, and `run_eval` takes it again);
another thread of the same process is refused like another process.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zoom_refine.tools.errors import ZoomRefineError

LOCK_NAME = ".lock"
BUSY = "run folder {folder} is being written by {owner}; wait for it or use another --out"
OWNER_WAIT_S = 0.5
"""How long to wait for a lock's new holder to write its pid (it does so right after locking)."""


class RunFolderBusyError(ZoomRefineError):
    """Another writer holds the run folder (the CLI prints the message and exits with 2)."""


@dataclass
class _Hold:
    descriptor: int
    thread: int
    depth: int = 1


_holds: dict[Path, _Hold] = {}
_guard = threading.Lock()


@contextmanager
def hold_run_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for the block (creating the folder), or raise RunFolderBusyError."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _guard:
        hold = _holds.get(key)
        if hold is None:
            _holds[key] = _Hold(_acquire(folder), threading.get_ident())
        elif hold.thread == threading.get_ident():
            hold.depth += 1
        else:
            owner = f"pid {os.getpid()} (another thread of this process)"
            raise RunFolderBusyError(BUSY.format(folder=folder, owner=owner))
    try:
        yield
    finally:
        with _guard:
            hold = _holds[key]
            hold.depth -= 1
            if hold.depth == 0:
                del _holds[key]
                _release(hold.descriptor)


def _acquire(folder: Path) -> int:
    """Open and lock `folder`/.lock without waiting and write this pid into it; its descriptor."""
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock(descriptor):
            raise RunFolderBusyError(BUSY.format(folder=folder, owner=_owner(descriptor)))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(descriptor)  # closing drops the flock, if it was taken
        raise
    return descriptor


def _lock(descriptor: int) -> bool:
    """Take the exclusive flock without waiting: False when another process holds it. Where the
    filesystem cannot flock, the recorded pid decides (a dead or absent holder is stale)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: no flock here
        holder = _recorded_pid(descriptor)
        return holder is None or holder == os.getpid() or not _alive(holder)
    return True


def _owner(descriptor: int) -> str:
    """Who holds the lock, for the message: `pid N`, once the holder has written it."""
    deadline = time.monotonic() + OWNER_WAIT_S
    while (pid := _recorded_pid(descriptor)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"pid {pid}" if pid is not None else "another process"


def _recorded_pid(descriptor: int) -> int | None:
    text = os.pread(descriptor, 64, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _release(descriptor: int) -> None:
    """Clear the pid (a leftover file then says nobody writes) and close, which drops the flock."""
    try:
        os.ftruncate(descriptor, 0)
    except OSError:
        pass  # the lock goes with the descriptor all the same
    finally:
        os.close(descriptor)
