"""A real PostgreSQL server for tests: `initdb` into a temp folder, `postgres` on 127.0.0.1.

The server binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/<v>/bin`,
not on PATH; `.ci/run` installs it), or from PATH. PostgreSQL refuses to run as root: when the
tests run as root (these machines, CI), `initdb` and `postgres` run as the unprivileged user
`nobody` through util-linux's `setpriv` (it execs, so the process we start IS the postmaster
and its pid is the one we stop), in a folder of their own under the system temp dir (pytest's
`tmp_path` is private to root). Trust authentication, no fsync: a throwaway server.

Stopped at the end with SIGINT (PostgreSQL's "fast" shutdown: clients are disconnected), then
SIGKILL to its whole process group after a grace period; the folder is removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from servers import HOST, PORT_ATTEMPTS, exit_status, free_port, log_tail, signal_group

USER = "zoom_refine"
"""The database superuser `initdb` creates (trust authentication: no password)."""
STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
UNPRIVILEGED = "nobody"
INSTALL_HINT = "apt-get install postgresql (Debian's server binaries: initdb, postgres)"


class PostgresStartError(RuntimeError):
    """initdb or postgres failed; the message holds its output."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def server_binaries() -> tuple[Path, Path] | None:
    """(initdb, postgres) of the newest PostgreSQL installed, or None."""

    def version(folder: str) -> int:
        found = re.search(r"/postgresql/(\d+)/", folder)
        return int(found.group(1)) if found else 0

    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for folder in folders:
        initdb, postgres = Path(folder, "initdb"), Path(folder, "postgres")
        if initdb.is_file() and postgres.is_file():
            return initdb, postgres
    initdb_path, postgres_path = shutil.which("initdb"), shutil.which("postgres")
    if initdb_path and postgres_path:
        return Path(initdb_path), Path(postgres_path)
    return None


def _as_server_user(command: list[str]) -> tuple[list[str], int | None]:
    """`command` run as `nobody` when we are root (PostgreSQL refuses root), and that uid."""
    if os.geteuid() != 0:
        return command, None
    user = pwd.getpwnam(UNPRIVILEGED)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise PostgresStartError("running as root needs util-linux's setpriv to drop to nobody")
    prefix = [
        setpriv,
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--reset-env",
    ]
    return [*prefix, *command], user.pw_uid


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server on 127.0.0.1 and a free port; stopped and deleted on exit."""
    binaries = server_binaries()
    if binaries is None:
        raise PostgresStartError(f"no PostgreSQL server binaries: {INSTALL_HINT}")
    initdb, postgres = binaries
    folder = Path(tempfile.mkdtemp(prefix="zoom-refine-postgres-"))
    try:
        data = folder / "data"
        command, uid = _as_server_user(
            [str(initdb), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        if uid is not None:
            os.chown(folder, uid, -1)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PostgresStartError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        with tempfile.TemporaryFile(prefix="postgres-", suffix=".log") as log:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                port = free_port()
                command, _ = _as_server_user(
                    [
                        str(postgres),
                        "-D",
                        str(data),
                        "-h",
                        HOST,
                        "-p",
                        str(port),
                        "-k",
                        str(folder),  # its Unix socket: beside the data, not /var/run
                        "-F",  # no fsync: a throwaway server
                        "-c",
                        "max_connections=60",
                    ]
                )
                log.seek(0)
                log.truncate()
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
                try:
                    try:
                        _wait_until_ready(process, port, log)
                    except PostgresStartError:
                        if attempt < PORT_ATTEMPTS and "in use" in log_tail(log):
                            continue
                        raise
                    yield PostgresServer(HOST, port, process)
                    return
                finally:
                    _stop(process)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = f"postgresql://{USER}@{HOST}:{port}/postgres"
    while True:
        code = exit_status(process)
        if code is not None:
            raise PostgresStartError(f"postgres exited with {code}:\n{log_tail(log)}")
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise PostgresStartError(f"postgres not ready after {STARTUP_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT), then SIGKILL the group after a grace period; reap the server."""
    if exit_status(process) is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while exit_status(process) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    signal_group(process, signal.SIGKILL)  # nothing of its group outlives the tests
    process.wait()
