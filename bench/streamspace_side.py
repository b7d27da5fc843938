"""The StreamSpace side of ``bench/jupyterhub_bench.py``: sign-in, PostgreSQL CPU, profiles and
20 concurrent launches on the local backend."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from common import PYTHON, ROOT

HZ = os.sysconf("SC_CLK_TCK")
AGENT_BIN = str(Path(PYTHON).parent / "streamspace-agent")
PY_SPY = str(Path(PYTHON).parent / "py-spy")
POLL_S = 0.1  # as JupyterHub's spawn row polls servers[""].ready


def login(base: str, username: str) -> str:
    """An access JWT for ``username`` (password ``bench-password``)."""
    body = {"username": username, "password": "bench-password"}
    response = httpx.post(base + "/api/v1/auth/login", json=body, timeout=60)
    response.raise_for_status()
    return response.json()["access"]


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def postgres_cpu(database_url: str, since: dict[int, int] | None = None) -> Any:
    """CPU ticks of the PostgreSQL backends connected to the database now, by pid; with
    ``since`` (an earlier result), the CPU seconds they used in between."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    now = {pid: _ticks(pid) for pid in pids}
    if since is None:
        return now
    return sum(ticks - since.get(pid, 0) for pid, ticks in now.items()) / HZ


def profile_rows(load: Any, pid: int, out: Path, jwt: str, facts: dict, ids: Path, seconds: float) -> None:
    """Each read row once more under ``py-spy record`` (raw collapsed stacks in ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    one = "/api/v1/sessions/{id}"
    rows = [
        ("one-jwt", one, {"auth": f"Authorization: Bearer {jwt}", "ids": ids}),
        ("one-token", one, {"auth": f"Authorization: Token {facts['api_token']}", "ids": ids}),
        ("one-portal", one, {"cookie": f"Cookie: sessionid={facts['portal_session']}", "ids": ids}),
        ("page-jwt", "/api/v1/sessions?page_size=100", {"auth": f"Authorization: Bearer {jwt}"}),
    ]
    for name, path, options in rows:
        spy = subprocess.Popen(
            [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
            + ["--format", "raw", "--output", str(out / f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = load.row(f"profile {name}", path, **options)
        spy.wait(timeout=120)
        print(f"  profiled {name}: {result['rps']:.0f} req/s under py-spy -> {out / (name + '.txt')}")


def concurrent_local_launches(
    base: str,
    jwt: str,
    agent_token: str,
    server_pid: int,
    data_dir: Path,
    *,
    count: int,
    trace: Path | None = None,
    database_url: str = "",
) -> dict[str, Any]:
    """``count`` launches of the local template at once; wall time until all are ready.
    With ``trace`` (a file), also each launch's timeline (:func:`launch_timeline`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "agent.log", "ab")  # noqa: SIM115  (closed with the agent below)
    agent = subprocess.Popen(
        ["taskset", "-c", "1", AGENT_BIN, "--platform", "local", "--control-plane", base, "--token", agent_token]
        + ["--agent-id", "bench-local", "--instance-id", "bench-local-0", "--data-dir", str(data_dir)]
        # As root, like JupyterHub's SimpleLocalProcessSpawner here (the venv's Python is under /root).
        + ["--session-user", "root"],
        env={**os.environ, "LOG_LEVEL": "debug" if trace else "warning"},
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    headers = {"Authorization": f"Bearer {jwt}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            _wait_available(client, "tiny")
            results: list[dict[str, Any]] = [{} for _ in range(count)]
            # Clients and threads are ready before the clock starts: the wall time runs from
            # the moment the 20 POSTs are released together (JupyterHub's row opens no client).
            own = [httpx.Client(base_url=base, headers=headers, timeout=60) for _ in range(count)]
            gate = threading.Barrier(count + 1)

            def launch(index: int) -> None:
                gate.wait()
                results[index] = _launch_until_ready(own[index])

            threads = [threading.Thread(target=launch, args=(i,)) for i in range(count)]
            for thread in threads:
                thread.start()
            cpu_before = _ticks(server_pid)
            agent_cpu_before = _ticks(agent.pid)
            started, started_at = time.perf_counter(), time.time()
            gate.wait()
            for thread in threads:
                thread.join(timeout=180)
            wall = time.perf_counter() - started
            for one in own:
                one.close()
            server_cpu = (_ticks(server_pid) - cpu_before) / HZ
            agent_cpu = (_ticks(agent.pid) - agent_cpu_before) / HZ
            sessions_cpu = sum(_ticks(child) for child in _children(agent.pid)) / HZ
            failed = [r for r in results if not r.get("ok")]
            if failed:
                # Sessions outlive their agent: stop the ones that started before giving up.
                for r in results:
                    if r.get("id"):
                        client.delete(f"/api/v1/sessions/{r['id']}")
                with contextlib.suppress(RuntimeError):  # the launches' failure is the one to report
                    _wait_states(client, [r["id"] for r in results if r.get("id")], {"stopped", "failed"})
                raise RuntimeError(f"{len(failed)} of {count} local launches failed: {failed[:3]}")
            if trace is not None:
                timeline = launch_timeline(results, started_at, database_url, data_dir / "agent.log")
                trace.write_text(json.dumps(timeline, indent=1))
                shutil.copyfile(data_dir / "agent.log", trace.with_suffix(".agent.log"))
                print(timeline_table(timeline))
            for r in results:
                client.delete(f"/api/v1/sessions/{r['id']}")
            _wait_states(client, [r["id"] for r in results], {"stopped"})
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        log.close()
    ready = [r["ready_s"] for r in results]
    return {
        "n": count,
        "wall_s": round(wall, 3),
        "p50_s": round(statistics.median(ready), 3),
        "max_s": round(max(ready), 3),
        "server_cpu_s": round(server_cpu, 2),
        "agent_cpu_s": round(agent_cpu, 2),
        "sessions_cpu_s": round(sessions_cpu, 2),
        "polls": sum(r["polls"] for r in results),
    }


def _wait_available(client: httpx.Client, slug: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/templates/{slug}")
        if response.status_code == 200 and response.json()["availability"]["available"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the local agent never made {slug!r} available: {response.text}")


def _launch_until_ready(client: httpx.Client, timeout: float = 120) -> dict[str, Any]:
    started = time.perf_counter()
    polls = 0
    response = client.post("/api/v1/sessions", json={"template": "tiny"})
    answered = time.time()
    if response.status_code != 202:
        return {"ok": False, "status": response.status_code, "body": response.text[:200]}
    session_id = response.json()["id"]
    while time.perf_counter() - started < timeout:
        body = client.get(f"/api/v1/sessions/{session_id}").json()
        polls += 1
        if body["state"] == "running" and body["streaming_ready"]:
            ready_s = time.perf_counter() - started
            seen = time.time()
            return {
                "ok": True,
                "id": session_id,
                "ready_s": ready_s,
                "polls": polls,
                "answered": answered,
                "seen": seen,
            }
        if body["state"] == "failed":
            return {"ok": False, "id": session_id, "state": body["state"], "message": body["status_message"]}
        time.sleep(POLL_S)
    return {"ok": False, "id": session_id, "error": "timeout"}


# Each launch's events, in order along its critical path: (name, where it comes from).
TIMELINE = [
    ("post_answered", "client: the POST's 202 arrived"),
    ("created", "db: session row created (the POST's transaction)"),
    ("command_sent", "db: command sent_at (claimed for the leader)"),
    ("agent_received", "agent log: command received"),
    ("acked", "db: command acked_at (the hub applied the ack)"),
    ("spawned", "agent log: session process started"),
    ("result_applied", "db: command completed_at (the hub applied the result)"),
    ("probe_ok", "agent log: session ready (its port answered; the status is sent next)"),
    ("db_running", "db: state running (state_changed_at: the result, or a status before it)"),
    ("db_ready", "db: streaming_ready written (updated_at: the launch's last write)"),
    ("client_seen", "client: a poll saw running + streaming_ready"),
]


def launch_timeline(results: list[dict[str, Any]], started_at: float, database_url: str, agent_log: Path) -> dict:
    """Per launch, the seconds from the burst's start to each event of :data:`TIMELINE`
    (client clocks, the database's rows and the agent's JSON log: one host, one clock)."""
    ids = [r["id"] for r in results]
    with psycopg.connect(database_url, autocommit=True) as conn:
        sessions = {
            str(row[0]): row[1:]
            for row in conn.execute(
                "SELECT id, created_at, state_changed_at, updated_at FROM sessions_app_session WHERE id = ANY(%s::uuid[])",
                [ids],
            )
        }
        commands = {
            str(row[0]): row[1:]
            for row in conn.execute(
                "SELECT session_id, sent_at, acked_at, completed_at FROM agents_app_agentcommand "
                "WHERE session_id = ANY(%s::uuid[]) AND action = 'start_session'",
                [ids],
            )
        }
    logged: dict[str, dict[str, float]] = {i: {} for i in ids}
    names = {"command received": "agent_received", "session process started": "spawned", "session ready": "probe_ok"}
    for line in agent_log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        name = names.get(entry.get("msg"))
        if name and entry.get("session_id") in logged and entry["ts"] >= started_at:
            logged[entry["session_id"]].setdefault(name, entry["ts"])
    launches = []
    for r in results:
        created, changed, updated = sessions[r["id"]]
        sent, acked, completed = commands[r["id"]]
        at = {
            "post_answered": r["answered"],
            "created": created.timestamp(),
            "command_sent": sent and sent.timestamp(),
            "acked": acked and acked.timestamp(),
            "result_applied": completed and completed.timestamp(),
            "db_running": changed.timestamp(),
            "db_ready": updated.timestamp(),
            "client_seen": r["seen"],
            **logged[r["id"]],
        }
        launches.append({name: round(at[name] - started_at, 3) if at.get(name) else None for name, _ in TIMELINE})
    launches.sort(key=lambda one: one["client_seen"])
    return {"started_at": started_at, "events": dict(TIMELINE), "launches": launches}


def timeline_table(timeline: dict) -> str:
    """The timeline as text: per event, the first, median and last launch's offset (s)."""
    lines = [f"  {'event':<16} {'first':>6} {'median':>6} {'last':>6}  source"]
    for name, source in timeline["events"].items():
        values = sorted(one[name] for one in timeline["launches"] if one[name] is not None)
        if values:
            lines.append(f"  {name:<16} {values[0]:6.3f} {statistics.median(values):6.3f} {values[-1]:6.3f}  {source}")
    return "\n".join(lines)


def _wait_states(client: httpx.Client, ids: list[str], states: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending if client.get(f"/api/v1/sessions/{i}").json()["state"] not in states]
        time.sleep(POLL_S)
    if pending:
        raise RuntimeError(f"{len(pending)} sessions did not reach {states}")
