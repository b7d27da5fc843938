"""A throw-away PostgreSQL cluster of a test's own (``initdb`` into a temporary directory,
``pg_ctl`` on a free loopback port), for tests that stop, kill or restart the database and so
must never touch the shared server.

Trust authentication on 127.0.0.1 only; no Unix socket. As root, the server runs as the
``postgres`` system user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port, wait_for_port


def _server_binaries() -> Path:
    """``STREAMSPACE_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout)."""
    if os.environ.get("STREAMSPACE_PG_BIN"):
        return Path(os.environ["STREAMSPACE_PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _server_binaries()


def available() -> bool:
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


@dataclass
class PostgresCluster:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chaos-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, check=check, timeout=timeout)

    def init(self) -> None:
        """``initdb`` (superuser ``postgres``, trust on loopback, settings for a short-lived test).

        ``fsync`` is off (only an operating-system crash could lose data then, never a killed
        or restarted server); ``synchronous_commit`` stays on: off, a server stopped with
        ``-m immediate`` forgets transactions it reported committed, which no test of a
        restart may allow."""
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                "max_connections = 200\nfsync = off\nfull_page_writes = off\n"
            )

    def start(self, timeout: float = 30) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "start"
        )
        wait_for_port(self.port, timeout=timeout)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``: the crash a killed postmaster leaves)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
