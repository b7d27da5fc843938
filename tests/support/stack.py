"""A real StreamSpace stack for end-to-end tests: daphne serving the control plane on the
pytest-django test database, plus agent processes (``streamspace-agent``) connected to it.

Processes are started with the same PostgreSQL database and Redis db as the test, so what
the browser does is visible to the test's ORM and the other way round."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection

from agent_runtime.backends.local import process_start_time
from agents_app.models import Agent
from agents_app.tokens import hash_token, new_token
from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import AGENT_BIN, database_url, serve_command, stop


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.data_dir / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_control_plane(self) -> None:
        self.port = free_port()
        env = {**self.env, "POD_URL": f"http://127.0.0.1:{self.port}", "POD_NAME": "cp-e2e"}
        process = self._spawn("daphne", serve_command(self.port), env)
        wait_for_port(self.port, process, timeout=30)

    def start_agent(self, agent: Agent, token: str, instance_id: str, *, ha_lock: Path | None = None, **opts: str):
        env = {
            **self.env,
            "STREAMSPACE_AGENT_DATA_DIR": str(self.data_dir / f"agent-{instance_id}"),
            "LOG_LEVEL": "info",
        }
        if ha_lock is not None:
            env.update(ENABLE_HA="true", HA_BACKEND="file", FILE_LOCK_PATH=str(ha_lock), RETRY_PERIOD="1s")
        cmd = [
            AGENT_BIN,
            "--platform",
            agent.platform,
            "--control-plane",
            self.base,
            "--token",
            token,
            "--agent-id",
            agent.agent_id,
            "--instance-id",
            instance_id,
        ]
        for key, value in opts.items():
            cmd += ["--backend-option", f"{key}={value}"]
        return self._spawn(f"agent-{instance_id}", cmd, env)

    def dump_logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs if log.exists()
        )

    def stop(self) -> None:
        """Stop every process started here, then end the local sessions its agents started:
        those outlive their agent by design (an agent restart keeps them), so nothing else
        would."""
        for process in reversed(self.processes):
            if process.poll() is None:
                stop(process)
        kill_local_sessions(self.data_dir)


def kill_local_sessions(data_dir: Path) -> None:
    """End, with their process groups, the local-backend sessions recorded under
    ``data_dir`` whose process is still the one recorded (same pid and start time)."""
    for state in data_dir.glob("agent-*/local-backend/state.json"):
        for record in json.loads(state.read_text()).values():
            pid = record.get("pid")
            if pid and record.get("pid_start") and process_start_time(pid) == record["pid_start"]:
                with contextlib.suppress(ProcessLookupError):  # ended between the check and the signal
                    os.killpg(pid, signal.SIGKILL)


def make_agent(agent_id: str, platform: str) -> tuple[Agent, str]:
    token = new_token()
    agent = Agent.objects.create(
        agent_id=agent_id, platform=platform, token_hash=hash_token(token), token_prefix=token[:8]
    )
    return agent, token


def stack_env(connection: Any, data_dir: Path) -> dict[str, str]:
    """Environment for child processes: the test's database and Redis, verbose enough to debug."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(connection),
        STREAMSPACE_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="streamspace.settings",
        LOG_LEVEL="WARNING",
    )
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for Playwright in the test process only
    return env


def wait_for_other_connections_to_close(timeout: float = 10.0) -> None:
    """The children's PostgreSQL connections end a moment after they exit; the test database
    cannot be dropped before they have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)


def running_stack(request: Any, data_dir: Path, **env: str) -> Iterator[Stack]:
    """A running control plane for a fixture, its environment ``stack_env`` plus ``env``:
    ``yield from running_stack(request, tmp_path, SECRET_KEY=...)``. Afterwards it is stopped
    (with the local sessions its agents left) and its logs are printed if the test failed."""
    running = Stack(env={**stack_env(connection, data_dir), **env}, data_dir=data_dir)
    running.start_control_plane()
    yield running
    running.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(running.dump_logs())


def one_site_stack(request: Any, data_dir: Path, domain: str, **env: str) -> Iterator[Stack]:
    """``running_stack`` in `make run`'s shape: the portal at ``domain`` and each session at
    ``<id>.<domain>``."""
    yield from running_stack(
        request, data_dir, ALLOWED_HOSTS=f"{domain},127.0.0.1", STREAMSPACE_SESSION_DOMAIN=domain, **env
    )
