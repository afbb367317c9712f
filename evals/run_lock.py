"""One writer per run folder: `<out>/.lock`, held with `flock` for as long as a run writes there.

Two `zoom-refine eval` processes on one `--out` would both append (duplicate lines), and a
`--retry-errors` rewriting predictions.jsonl under a live run would drop what that run appends
meanwhile. So a writer takes an exclusive `flock` on the lock file before it opens the store
(which may repair a torn tail) and keeps it to the end; a second writer is refused at once with
`RunFolderBusyError` ("… is being written by pid N …", the holder writes its pid into the file).

The kernel releases a `flock` when its holder dies, even by SIGKILL, so a lock left behind by a
dead run is never stale: the file stays, unlocked, and the next run takes it. The file is never
deleted (a run that unlinked it could let two later runs lock two different files).

Where the filesystem has no `flock` (ENOLCK, EOPNOTSUPP: some network file systems), a claim file
`<out>/.lock.owner` decides, made atomically: the writer's pid goes into a temporary file of its
own, which is then hard-linked to that name (`link` fails when the name exists, so of two writers
starting together exactly one gets it, and the claim never exists without its pid). A claim whose
process is alive holds the folder; a dead one's is stale: it is moved aside under a name of the
mover's own (checked to be the very claim judged stale, else put back) and the claim made again.
The holder removes its claim when it ends.

Within one process the lock is re-entrant for the thread that holds it (the CLI takes it before
its progress bar starts, so a refusal is the only line printed, and `run_eval` takes it again);
another thread of the same process is refused like another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zoom_refine.tools.errors import RunFolderBusyError

LOCK_NAME = ".lock"
CLAIM_NAME = ".lock.owner"
"""The claim file where the filesystem has no flock (its content: the holder's pid)."""
CLAIM_ATTEMPTS = 5
"""How often a stale claim is cleared and the claim tried again before giving up as busy."""
BUSY = "run folder {folder} is being written by {owner}; wait for it or use another --out"
OWNER_WAIT_S = 0.5
"""How long to wait for a lock's new holder to write its pid (it does so right after locking)."""


@dataclass
class _Hold:
    descriptor: int
    thread: int
    claim: os.stat_result | None = None
    """The claim file this process made (no flock here), to remove when done."""
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
            descriptor, claim = _acquire(folder)
            _holds[key] = _Hold(descriptor, threading.get_ident(), claim)
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
                _release(hold.descriptor, folder if hold.claim else None, hold.claim)


def _acquire(folder: Path) -> tuple[int, os.stat_result | None]:
    """Open and lock `folder`/.lock without waiting and write this pid into it: its descriptor,
    and the claim file made instead where there is no flock."""
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _lock(descriptor)
        if locked is None:  # no flock on this filesystem
            return descriptor, _claim(folder)
        if not locked:
            raise RunFolderBusyError(BUSY.format(folder=folder, owner=_owner(descriptor)))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(descriptor)  # closing drops the flock, if it was taken
        raise
    return descriptor, None


def _lock(descriptor: int) -> bool | None:
    """Take the exclusive flock without waiting: False when another process holds it, None when
    the filesystem cannot flock (the claim file decides then)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: no flock here
        return None
    return True


def _claim(folder: Path) -> os.stat_result:
    """Make `folder`/.lock.owner atomically (a hard link to a pid file of our own), clearing a
    stale one; RunFolderBusyError when a live process holds it. The claim's stat, to release."""
    claim = folder / CLAIM_NAME
    mine = folder / f"{CLAIM_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(descriptor, f"{os.getpid()}\n".encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        for _ in range(CLAIM_ATTEMPTS):
            try:
                os.link(mine, claim)
            except FileExistsError:
                _clear_stale(folder, claim)
                continue
            return os.stat(claim)
        raise RunFolderBusyError(BUSY.format(folder=folder, owner=_claim_owner(claim)))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(mine)


def _clear_stale(folder: Path, claim: Path) -> None:
    """Remove `claim` when the process it names is gone (or it names none, or this process,
    which holds no lock on `folder`: a reused pid); RunFolderBusyError when it is alive."""
    try:
        seen = os.stat(claim)
        holder = _pid_in(claim.read_bytes())
    except FileNotFoundError:
        return  # released meanwhile: claim again
    if holder is not None and holder != os.getpid() and _alive(holder):
        raise RunFolderBusyError(BUSY.format(folder=folder, owner=f"pid {holder}"))
    aside = folder / f"{CLAIM_NAME}.stale.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.rename(claim, aside)  # atomic: of several clearers, one moves it
    except FileNotFoundError:
        return
    moved = os.stat(aside)
    if (moved.st_ino, moved.st_dev) != (seen.st_ino, seen.st_dev):
        with contextlib.suppress(FileExistsError):  # a fresh claim, not the stale one: back
            os.link(aside, claim)
    os.unlink(aside)


def _claim_owner(claim: Path) -> str:
    try:
        pid = _pid_in(claim.read_bytes())
    except OSError:
        pid = None
    return f"pid {pid}" if pid is not None else "another process"


def _owner(descriptor: int) -> str:
    """Who holds the lock, for the message: `pid N`, once the holder has written it."""
    deadline = time.monotonic() + OWNER_WAIT_S
    while (pid := _recorded_pid(descriptor)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"pid {pid}" if pid is not None else "another process"


def _recorded_pid(descriptor: int) -> int | None:
    return _pid_in(os.pread(descriptor, 64, 0))


def _pid_in(data: bytes) -> int | None:
    text = data[:64].decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _release(
    descriptor: int, folder: Path | None = None, claim: os.stat_result | None = None
) -> None:
    """Clear the pid (a leftover file then says nobody writes) and close, which drops the flock;
    remove this process's claim file, if it made one (and it is still that file)."""
    try:
        os.ftruncate(descriptor, 0)
    except OSError:
        pass  # the lock goes with the descriptor all the same
    finally:
        os.close(descriptor)
    if folder is not None and claim is not None:
        path = folder / CLAIM_NAME
        with contextlib.suppress(OSError):
            now = os.stat(path)
            if (now.st_ino, now.st_dev) == (claim.st_ino, claim.st_dev):
                os.unlink(path)
