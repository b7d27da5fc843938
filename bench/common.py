"""Helpers shared by the benchmarks: a daphne control plane on PostgreSQL + Redis."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(database: str = "streamspace_bench", redis_db: int = 14) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        REDIS_URL=f"redis://127.0.0.1:6379/{redis_db}",
        STREAMSPACE_DATA_DIR=str(ROOT / ".streamspace" / "bench"),
        DEBUG="false",
        SECRET_KEY="bench-secret-key-not-for-production-0123456789",
        LOG_LEVEL="WARNING",
    )
    return env


def reset_database(env: dict[str, str], database: str = "streamspace_bench") -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {database}"], check=True
    )
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {database}"], check=True)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def django_in_process(database: str, redis_db: int) -> None:
    """Reset ``database`` and set Django up in this process on it and on Redis db
    ``redis_db``, with the cache cleared: the in-process benches' common start."""
    env = bench_env(database, redis_db)
    reset_database(env, database)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "streamspace.settings"
    import django  # after the environment is set

    django.setup()
    from django.core.cache import cache

    cache.clear()


def manage_shell(env: dict[str, str], code: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout


@contextlib.contextmanager
def daphne(
    env: dict[str, str],
    port: int | None = None,
    *,
    cpu: int | None = None,
    start_timeout: float = 120,
    launcher: list[str] | None = None,
):
    """A daphne process serving the control plane; pinned to one core with ``cpu``.

    ``launcher``: what runs it instead of ``-m streamspace.serve`` (a traced server:
    ``["bench/traced_hub_serve.py", "out.json"]``), followed by daphne's arguments."""
    port = port or free_port()
    launcher = launcher or ["-m", "streamspace.serve"]
    cmd = [PYTHON, *launcher, "-b", "127.0.0.1", "-p", str(port), "streamspace.asgi:application"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    # stderr goes to a file: an unread pipe fills up and blocks daphne's logging (and daphne).
    log_path = ROOT / ".streamspace" / f"bench-daphne-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "wb")  # noqa: SIM115  (closed when the process is stopped)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("daphne did not start: " + log_path.read_text()[-2000:])
    try:
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # closing thousands of sockets can take longer
            proc.kill()
            proc.wait(timeout=10)
        log_file.close()


def summarize(name: str, latencies: list[float], elapsed: float) -> str:
    latencies = sorted(latencies)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return f"{name:<28} {len(latencies) / elapsed:8.1f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   (n={len(latencies)})"
