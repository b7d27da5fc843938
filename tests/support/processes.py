"""Child processes of tests (and benchmarks): daphne started the way deployments start it
(``python -m streamspace.serve``), and real ``streamspace-agent`` processes.

Children that use the database get the pytest-django test database's URL
(:func:`database_url`), so what they write is visible to the test's ORM and the other way
round."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection

from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port

AGENT_BIN = str(Path(sys.executable).parent / "streamspace-agent")
ASGI_APP = "streamspace.asgi:application"


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; returns once the process has exited."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def serve_command(port: int, *options: str, app: str = ASGI_APP) -> list[str]:
    """The command line of daphne on 127.0.0.1:``port`` as deployments start it (uvloop,
    frozen heap); ``options`` go before the bind address (``-v 2``)."""
    return [sys.executable, "-m", "streamspace.serve", *options, "-b", "127.0.0.1", "-p", str(port), app]


def database_url(db: Any = connection) -> str:
    """``DATABASE_URL`` of the PostgreSQL database ``db`` (the test database under pytest-django)."""
    settings = db.settings_dict
    host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    return f"postgres://{settings['USER']}@{host}:{port}/{settings['NAME']}"


def start_replica(name: str, port: int, *options: str, **env: str) -> subprocess.Popen:
    """A control-plane replica (``POD_NAME`` = ``name``) on the test's database and Redis, its
    output on the test's own (shown when the test fails); ``options`` are daphne's
    (``--ping-interval 1``), ``env`` adds or overrides variables."""
    from django.conf import settings

    child = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "POD_NAME": name,
        "LOG_LEVEL": "WARNING",
        **env,
    }
    return subprocess.Popen(serve_command(port, *options), cwd=ROOT, env=child, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def running_replica(name: str, *options: str, **env: str) -> Iterator[int]:
    """:func:`start_replica` on a free port, listening before the body runs and stopped after
    it; yields the port."""
    port = free_port()
    process = start_replica(name, port, *options, **env)
    try:
        wait_for_port(port, process, timeout=60)
        yield port
    finally:
        stop(process)


@dataclass
class Daphne:
    port: int
    process: subprocess.Popen

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def start_daphne(extra_env: dict[str, str] | None = None) -> Daphne:
    """daphne serving streamspace.asgi on the pytest-django test database; the caller stops it
    with ``stop(server.process)``."""
    port = free_port()
    env = dict(os.environ)
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = database_url()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "streamspace.settings",
            "POD_URL": f"http://127.0.0.1:{port}",
            "STREAMSPACE_PROXY_AUTH_CACHE_S": "0",
            "LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
    )
    process = subprocess.Popen(serve_command(port), cwd=ROOT, env=env)
    wait_for_port(port, process, timeout=30)
    return Daphne(port, process)


class AgentProcess:
    def __init__(self, proc: asyncio.subprocess.Process, instance_id: str, log_path: Path):
        self.proc = proc
        self.instance_id = instance_id
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.returncode is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


async def spawn_agent(
    control_plane: str,
    token: str,
    *,
    instance_id: str,
    data_dir: Path,
    platform: str = "local",
    agent_id: str = "agent-1",
    env: dict[str, str] | None = None,
) -> AgentProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{instance_id}.log"
    full_env = {k: v for k, v in os.environ.items() if k not in ("ENABLE_HA", "HA_BACKEND", "LEASE_KEY")}
    full_env.update(env or {})
    with open(log_path, "ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            AGENT_BIN,
            "--platform", platform,
            "--control-plane", control_plane,
            "--token", token,
            "--agent-id", agent_id,
            "--instance-id", instance_id,
            "--data-dir", str(data_dir),
            "--drain-timeout", "10s",
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )  # fmt: skip
    return AgentProcess(proc, instance_id, log_path)
