"""A throwaway PostgreSQL on 127.0.0.1 and a free port, in a temporary folder, stopped by PID.

Used by the PostgreSQL e2e test and benchmarks/task_runs.py. As root, initdb and the server
run as the `postgres` user (initdb refuses root); as anyone else, as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTGRES_USER = "postgres"  # the system account that owns the cluster when we are root
ROLE = "prefect"


def postgres_bin() -> Path:
    """Debian's newest PostgreSQL binaries (`/usr/lib/postgresql/N/bin`)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: apt-get install -y postgresql (make test does it)"
        )
    return found[-1].parent


@dataclass
class Postgres:
    port: int
    database: str
    folder: Path
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{ROLE}@127.0.0.1:{self.port}/{self.database}"

    def query(self, sql: str) -> list[list[str]]:
        """Rows of a query through psql, as text."""
        completed = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE,
             "-d", self.database, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return [line.split("\t") for line in completed.stdout.splitlines()]

    def size_bytes(self) -> int:
        return int(self.query(f"select pg_database_size('{self.database}')")[0][0])


def _as_postgres() -> list[str]:
    """Run a command as the postgres account when we are root (exec, so the PID is its own)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}", "--init-groups"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_postgres(database: str = "prefect", durable: bool = False) -> Iterator[Postgres]:
    """initdb + postgres on a free port + `createdb`; fast shutdown (SIGINT) by PID on exit.

    `durable=False` turns fsync off (tests: nothing outlives them); benchmarks pass True.
    """
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="foldflow-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(POSTGRES_USER)
        os.chown(folder, account.pw_uid, account.pw_gid)
    data = folder / "data"
    subprocess.run(
        [*_as_postgres(), str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", ROLE,
         "--no-sync", "-E", "UTF8"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    settings = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
    if not durable:
        settings += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
    with open(folder / "server.log", "ab") as log:
        server = subprocess.Popen(
            [*_as_postgres(), str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
             "-k", str(folder), *settings],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
        ).returncode:
            if server.poll() is not None or time.monotonic() > deadline:
                log_text = (folder / "server.log").read_text(errors="replace")
                raise RuntimeError(f"PostgreSQL did not start on port {port}:\n{log_text}")
            time.sleep(0.2)
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, database],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        yield Postgres(port=port, database=database, folder=folder, bin=bin_dir)
    finally:
        _stop(server)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(server: subprocess.Popen, timeout: float = 30) -> None:
    """SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients); SIGKILL if stuck."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=timeout)
