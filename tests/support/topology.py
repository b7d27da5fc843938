"""The production topology as real processes on one host, for fault-injection tests: a
PostgreSQL cluster and Redis of the test's own (given as the control plane's Redis settings:
``REDIS_URL``, or ``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTER`` for a Sentinel set), control-plane replicas
(``python -m streamspace.serve``) behind nginx with the compose config, a Celery worker with
beat, and ``streamspace-agent`` replicas that connect through nginx and elect a leader with the
lease the test names (the chaos suite: the Redis lease through the Sentinels).

Everything the test needs of the database is read with plain SQL (:meth:`Topology.query`), so
the test process never shares pytest-django's database with the topology: the cluster is
the topology's alone, and the test may stop or crash it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.postgres_cluster import PostgresCluster
from tests.support.processes import AgentProcess, serve_command, spawn_agent, stop

CELERY = str(Path(sys.executable).parent / "celery")
#: The test process's own Redis settings, blanked for agents: an agent's lease lives where the
#: topology says, never in the Redis the test suite runs against.
AGENT_ENV_CLEARED = {"REDIS_URL": "", "REDIS_SENTINELS": "", "REDIS_SENTINEL_MASTER": ""}

SEED = """
import json, sys
from rest_framework_simplejwt.tokens import RefreshToken
from agents_app.services import create_agent
from sessions_app.models import Template, UserQuota
from streamspace.accounts.models import User
spec = json.loads(sys.stdin.read())
out = {"users": {}, "agents": {}}
for name, max_sessions in spec["users"].items():
    user = User.objects.create_user(name, email=f"{name}@example.com", password="pw-" + name)
    if max_sessions is not None:
        UserQuota.objects.create(user=user, max_sessions=max_sessions)
    out["users"][name] = {"id": user.pk, "access": str(RefreshToken.for_user(user).access_token)}
for agent_id, platform in spec["agents"].items():
    out["agents"][agent_id] = create_agent(agent_id, platform)[1]
for template in spec["templates"]:
    Template.objects.create(**template)
print("SEED=" + json.dumps(out))
"""


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Topology:
    root: Path
    redis_env: dict[str, str]
    pg: PostgresCluster = field(default_factory=PostgresCluster)
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    nginx: subprocess.Popen | None = None
    nginx_port: int = 0
    celery: subprocess.Popen | None = None
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    database_url: str = ""

    @property
    def base(self) -> str:
        """The load balancer: what users and the test's API clients talk to."""
        return f"http://127.0.0.1:{self.nginx_port}"

    # --- the database -------------------------------------------------------------------------
    def start_database(self, settings: dict[str, str]) -> None:
        """initdb + start the cluster, migrate it; ``settings`` are the control plane's extra env."""
        self.pg.init()
        self.pg.start()
        self.database_url = self.pg.create_database("streamspace")
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "PYTEST_CURRENT_TEST")
        }
        self.env.update(
            DATABASE_URL=self.database_url,
            **self.redis_env,
            STREAMSPACE_DATA_DIR=str(self.root / "control-plane"),
            DJANGO_SETTINGS_MODULE="streamspace.settings",
            SECRET_KEY="chaos-" + secrets.token_hex(24),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
            **settings,
        )
        self.manage("migrate", "--noinput", "-v0")

    def manage(self, *argv: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, input=stdin,
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def seed(self, users: dict[str, int | None], agents: dict[str, str], templates: list[dict[str, Any]]) -> dict:
        """Users (name → max_sessions override) with access tokens, agents with their tokens, templates."""
        spec = json.dumps({"users": users, "agents": agents, "templates": templates})
        out = self.manage("shell", "-c", SEED, stdin=spec)
        line = next(line for line in out.splitlines() if line.startswith("SEED="))
        return json.loads(line[len("SEED=") :])

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Rows of ``sql`` on the topology's database (a connection of its own each time, so a
        restarted server is no concern)."""
        with psycopg.connect(self.database_url, connect_timeout=3, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    # --- control plane ------------------------------------------------------------------------
    def start_replicas(self, count: int) -> None:
        self.replicas = [Replica(f"cp-{n}", free_port()) for n in range(1, count + 1)]
        for replica in self.replicas:
            self.start_replica(replica)
        for replica in self.replicas:
            wait_for_port(replica.port, replica.process, timeout=60)

    def start_replica(self, replica: Replica) -> None:
        """(Re)start ``replica`` on its port; returns without waiting for it to listen."""
        env = {**self.env, "POD_NAME": replica.name, "POD_URL": replica.base}
        with open(self.root / f"{replica.name}.log", "ab") as log:
            replica.process = subprocess.Popen(serve_command(replica.port), cwd=ROOT, env=env, stdout=log, stderr=log)

    def kill_replica(self, replica: Replica) -> None:
        if replica.process is not None and replica.process.poll() is None:
            replica.process.send_signal(signal.SIGKILL)
            replica.process.wait(10)

    def start_nginx(self) -> None:
        from tests.support.nginx import start_nginx

        self.nginx, self.nginx_port = start_nginx(self.root / "nginx", [r.port for r in self.replicas])

    def start_celery(self) -> None:
        """One worker with beat embedded (the compose ``celery`` service)."""
        cmd = [CELERY, "--app=streamspace", "worker", "--beat", f"--schedule={self.root / 'celerybeat-schedule'}",
               "--concurrency=1", "--loglevel=INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
        with open(self.root / "celery.log", "ab") as log:
            self.celery = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)

    # --- agents -------------------------------------------------------------------------------
    async def start_agent(
        self,
        agent_id: str,
        platform: str,
        token: str,
        instance_id: str,
        data_dir: Path,
        env: dict[str, str],
        lease: dict[str, str],
    ) -> AgentProcess:
        """An agent replica that reaches the control plane the way a deployed agent on another
        host does: through the load balancer (:attr:`base`, the URL users use), with HA on the
        lease ``lease`` names (``HA_BACKEND`` and where it lives, e.g. the Redis lease through
        the Sentinels). The control plane's own Redis settings are not passed on: the agent
        knows only what ``lease`` tells it."""
        process = await spawn_agent(
            self.base, token, instance_id=instance_id, data_dir=data_dir, platform=platform, agent_id=agent_id,
            env={**AGENT_ENV_CLEARED, "ENABLE_HA": "true", "LOG_LEVEL": "info", **lease, **env},
        )  # fmt: skip
        self.agents[instance_id] = process
        return process

    def leader(self, agent_id: str) -> str | None:
        rows = self.query(
            "SELECT i.instance_id FROM agents_app_agentinstance i JOIN agents_app_agent a ON a.id = i.agent_id "
            "WHERE a.agent_id = %s AND i.connected AND i.is_leader",
            agent_id,
        )
        return rows[0][0] if len(rows) == 1 else None

    # --- teardown -----------------------------------------------------------------------------
    async def stop(self) -> None:
        for agent in self.agents.values():
            await agent.stop()
        for process in [r.process for r in self.replicas] + [self.celery, self.nginx]:
            if process is not None and process.poll() is None:
                stop(process)
        self.pg.destroy()

    def logs(self) -> list[Path]:
        nginx = self.root / "nginx" / "error.log"
        return sorted(self.root.glob("*.log")) + [nginx] + [a.log_path for a in self.agents.values()]
