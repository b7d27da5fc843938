"""StreamSpace's REST API beside JupyterHub 6.1's, measured in one run on the same machine.

    .venv/bin/python bench/jupyterhub_bench.py [--rounds 3] [--seconds 10] [--profile DIR]
        [--only launch] [--database NAME] [--redis-db N]

The JupyterHub side is the anchor benchmark of ``../shared/bench/jupyterhub`` (copied to
``--jupyterhub``, default ``../jhbench``, on first use; its ``run.sh`` installs JupyterHub
6.1.1, configurable-http-proxy and wrk). Each round runs it (1,000 users, ``GET
/hub/api/users/{id}`` and ``?limit=100`` at 50 connections, 20 concurrent spawns), then
the StreamSpace rows with the same load tool (``load.py``: wrk, 50 connections, closed loop):

* ``python -m streamspace.serve`` pinned to CPU 1 with ``taskset`` (JupyterHub's hub, CHP
  and its servers are pinned there too); wrk and this script on CPU 0;
* PostgreSQL + Redis, DEBUG off, 1,000 sessions owned by the reading user;
* ``GET /api/v1/sessions/{id}`` cycling over the 1,000 ids with a JWT, a personal API token
  and the portal's session cookie, and ``GET /api/v1/sessions?page_size=100`` (JWT);
* ``POST /api/v1/sessions`` (quota lock, audit, durable command; the agent's leader is
  connected on no channel, so commands stay pending), by a second user;
* 20 concurrent launches on the local backend: a real ``streamspace-agent`` (pinned with
  the server) runs a stdlib HTTP server per session; the wall time runs from the first
  POST until every session is ``running`` with ``streaming_ready`` (polled every 0.1 s,
  as JupyterHub's spawn row polls ``servers[""].ready``).

CPU per request is the server process's CPU time (``/proc``) over the row divided by the
requests; ``pg ms/req`` adds the PostgreSQL backends serving the benchmark database
(JupyterHub's SQLite runs inside the hub, so its figure includes its database). Each round
prints its rows; the last table holds the medians over the rounds. ``--profile DIR`` runs
the StreamSpace read rows once more under ``py-spy record`` (raw collapsed stacks per row,
summarised by ``bench/profile_summary.py``). ``--only launch`` runs just the launch
rows (StreamSpace's ``POST`` row and both sides' 20 concurrent launches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import streamspace_side as side
from common import PYTHON, ROOT, bench_env, daphne, free_port, manage_shell, reset_database

DATABASE = "ss_apiperf_bench"
REDIS_DB = 6
SHARED_ANCHOR = ROOT.parent / "shared" / "bench" / "jupyterhub"
CONNECTIONS = 50

SETUP = """
import json
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from sessions_app.models import Session, Template, UserQuota
from streamspace.accounts.tokens import create_token

User = get_user_model()
big = dict(max_sessions=10**6, max_cpu_millicores=10**9, max_memory_mb=10**9)
reader = User.objects.create_user('bench', password='bench-password', role='user')
launcher = User.objects.create_user('launcher', password='bench-password', role='user')
for u in (reader, launcher):
    UserQuota.objects.create(user=u, **big)
docker_template = Template.objects.create(slug='bench', display_name='Bench', image='registry.local/bench:1')
Template.objects.create(
    slug='tiny', display_name='Tiny', platform='local', default_cpu_millicores=50, default_memory_mb=64,
    command=['{python}', '-m', 'http.server', '{port}', '--bind', '127.0.0.1', '--directory', '{home}'],
)
agent = Agent.objects.create(agent_id='bench-docker', platform='docker', token_hash=hash_token('bench'))
# A leader connected on no channel: launches are placed, their commands stay pending.
AgentInstance.objects.create(agent=agent, instance_id='bench-0', is_leader=True, connected=True)
Agent.objects.create(agent_id='bench-local', platform='local', token_hash=hash_token(LOCAL_TOKEN))
now = timezone.now()
rows = [
    Session(name=f'bench {i}', user=reader, template=docker_template, agent=agent, state='running',
            platform='docker', cpu_millicores=100, memory_mb=128, idle_timeout_s=10**6,
            streaming_ready=True, streaming_port=8080, last_activity=now, state_changed_at=now)
    for i in range(SESSIONS)
]
Session.objects.bulk_create(rows, batch_size=500)
portal = SessionStore()
portal['_auth_user_id'] = str(reader.pk)
portal['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'
portal['_auth_user_hash'] = reader.get_session_auth_hash()
portal.create()
# Planner statistics, as autovacuum gathers them a minute after a load like this one: without
# them PostgreSQL joins a page of 100 row by row over all 1,000 sessions (~10 ms a page).
from django.db import connection
connection.cursor().execute('ANALYZE')
print(json.dumps({
    'ids': [str(r.pk) for r in rows],
    'api_token': create_token(reader, name='bench', scope='read')[1],
    'portal_session': portal.session_key,
}))
"""

CLEAR_LAUNCHES = """
from sessions_app.models import Session
Session.objects.filter(user__username='launcher').delete()
"""


# --------------------------------------------------------------------- JupyterHub side --
def jupyterhub_dir(path: Path) -> Path:
    """The writable copy of the anchor benchmark (made from ``../shared`` when missing)."""
    if not (path / "run.sh").exists():
        shutil.copytree(SHARED_ANCHOR, path, dirs_exist_ok=True)
        for item in [path, *path.rglob("*")]:
            item.chmod(item.stat().st_mode | 0o200)
    return path


def jupyterhub_round(
    path: Path, out: Path, seconds: float, warmup: float, quiet_wait: float, only: str | None = None
) -> dict:
    if only == "launch":  # the anchor's report needs a load row: one short read row, not used
        seconds, warmup = 2, 1
    env = dict(
        os.environ,
        N_USERS="1000",
        DURATION=str(int(seconds)),
        WARMUP=str(int(warmup)),
        READ_CONNS=str(CONNECTIONS),
        LIST_CONNS="" if only == "launch" else str(CONNECTIONS),
        PROXY_CONNS="",
        SPAWN_CONCURRENT="20",
        SPAWN_SEQUENTIAL="1",
        QUIET_WAIT=str(quiet_wait),
        SUT_CPUS="1",
        LOAD_CPUS="0",
        PORT_PUBLIC=str(free_port()),
        PORT_PROXY_API=str(free_port()),
        PORT_HUB=str(free_port()),
        RESULTS_DIR=str(out),
    )
    done = subprocess.run(["./run.sh"], cwd=path, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("JupyterHub's run.sh failed:\n" + done.stderr[-3000:])
    loads = {r["label"]: r for r in tagged(out / "load.jsonl", "LOADJSON")}
    result = {}
    if only != "launch":
        result.update(one=loads["GET /hub/api/users/{id}"], page=loads["GET /hub/api/users?limit=100"])
    spawn = tagged(out / "spawn.txt", "SPAWNJSON")[-1]
    result["launch20"] = {"wall_s": spawn["concurrent"]["wall_s"], "ok": spawn["concurrent"]["ok"]}
    return result


def tagged(path: Path, tag: str) -> list[dict]:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [json.loads(line[len(tag) + 1 :]) for line in lines if line.startswith(tag + " ")]


# --------------------------------------------------------------------- StreamSpace side --
class Load:
    """Runs the anchor's ``load.py`` against one server, adding its PostgreSQL backends' CPU."""

    def __init__(self, anchor: Path, base: str, server_pid: int, env: dict[str, str], args: argparse.Namespace):
        self.anchor, self.base, self.server_pid, self.env, self.args = anchor, base, server_pid, env, args

    def row(self, label: str, path: str, *, auth: str = "", cookie: str = "", ids: Path | None = None, body=None):
        env = dict(
            os.environ,
            BASE_URL=self.base,
            AUTH_HEADER=auth,
            EXTRA_HEADERS=cookie,
            PATH_TEMPLATE=path,
            IDS_FILE=str(ids or ""),
            CONCURRENCY=str(CONNECTIONS),
            DURATION=str(int(self.args.seconds)),
            WARMUP=str(int(self.args.warmup)),
            LOAD_CPUS="0",
            SERVER_PIDS=str(self.server_pid),
            QUIET_WAIT=str(self.args.quiet_wait),
            LABEL=label,
        )
        if body is not None:
            env.update(METHOD="POST", BODY=json.dumps(body))
        before = side.postgres_cpu(self.env["DATABASE_URL"])
        done = subprocess.run(
            [PYTHON, str(self.anchor / "load.py")], env=env, capture_output=True, text=True, cwd=self.anchor
        )
        pg_s = side.postgres_cpu(self.env["DATABASE_URL"], since=before)
        results = [json.loads(line[9:]) for line in done.stdout.splitlines() if line.startswith("LOADJSON ")]
        if not results or "error" in results[-1]:
            raise RuntimeError(f"load.py failed for {label}:\n{done.stderr[-2000:]}")
        result = results[-1]
        if result["errors"]:
            raise RuntimeError(f"{label}: {result['errors']} errors\n{done.stderr[-2000:]}")
        result["pg_cpu_ms_per_req"] = round(1000 * pg_s / max(1, result["requests"]), 3)
        return result


def streamspace_round(anchor: Path, work: Path, args: argparse.Namespace, *, profile: Path | None = None) -> dict:
    env = bench_env(args.database, redis_db=args.redis_db)
    env.update(JWT_ACCESS_MINUTES="600", LOGIN_FAILURE_LIMIT="1000000")
    local_token = "bench-local-token"
    setup = SETUP.replace("LOCAL_TOKEN", repr(local_token)).replace("SESSIONS", str(args.sessions))
    facts = json.loads(manage_shell(env, setup).strip().splitlines()[-1])
    ids = work / "session-ids.txt"
    ids.write_text("\n".join(facts["ids"]) + "\n")
    with daphne(env, cpu=1) as (base, proc):
        jwt = side.login(base, "bench")
        launcher_jwt = side.login(base, "launcher")
        load = Load(anchor, base, proc.pid, env, args)
        one = "/api/v1/sessions/{id}"
        rows = (
            {}
            if args.only == "launch"
            else {
                "one": load.row("GET /api/v1/sessions/{id} (JWT)", one, auth=f"Authorization: Bearer {jwt}", ids=ids),
                "one_token": load.row(
                    "GET /api/v1/sessions/{id} (API token)",
                    one,
                    auth=f"Authorization: Token {facts['api_token']}",
                    ids=ids,
                ),
                "one_portal": load.row(
                    "GET /api/v1/sessions/{id} (portal cookie)",
                    one,
                    cookie=f"Cookie: sessionid={facts['portal_session']}",
                    ids=ids,
                ),
                "page": load.row(
                    "GET /api/v1/sessions?page_size=100 (JWT)",
                    "/api/v1/sessions?page_size=100",
                    auth=f"Authorization: Bearer {jwt}",
                ),
            }
        )
        if profile is not None and args.only != "launch":
            side.profile_rows(load, proc.pid, profile, jwt, facts, ids, args.seconds + args.warmup)
        if args.only == "reads":
            return rows
        rows["launch"] = load.row(
            "POST /api/v1/sessions (JWT)",
            "/api/v1/sessions",
            auth=f"Authorization: Bearer {launcher_jwt}",
            body={"template": "bench"},
        )
        manage_shell(env, CLEAR_LAUNCHES)
        try:
            rows["launch20"] = side.concurrent_local_launches(
                base,
                launcher_jwt,
                local_token,
                proc.pid,
                work / "agent",
                count=20,
                trace=args.trace_dir / f"launch20-{time.strftime('%H%M%S')}.json" if args.trace_dir else None,
                database_url=env["DATABASE_URL"],
            )
        except RuntimeError as exc:  # the other rows still count
            print(f"  20 concurrent local launches failed: {exc}")
            rows["launch20"] = {"wall_s": float("nan"), "error": str(exc)[:500]}
    return rows


# --------------------------------------------------------------------------------- report --
ROWS = [
    ("one", "GET one object (users/{id} · sessions/{id}), JWT"),
    ("one_token", "  same, API token"),
    ("one_portal", "  same, portal session cookie"),
    ("page", "GET a page of 100 (?limit=100 · ?page_size=100)"),
    ("launch", "POST /api/v1/sessions (launch, pending)"),
]


def median(values: list) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def report(rounds: list[dict]) -> str:
    lines = [
        "| request | JupyterHub req/s | StreamSpace req/s | ratio | JH CPU ms/req | SS CPU ms/req (+ pg) "
        "| JH p99 ms | SS p99 ms | others %core (JH / SS) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in ROWS:
        if key not in rounds[0]["ss"]:  # --only
            continue
        ss = [r["ss"][key] for r in rounds]
        jh_key = {"one_token": "one", "one_portal": "one"}.get(key, key)
        jh = [r["jh"][jh_key] for r in rounds] if jh_key in ("one", "page") else []
        jh_rps, ss_rps = median([x["rps"] for x in jh]), median([x["rps"] for x in ss])
        lines.append(
            f"| {name} | {jh_rps:.0f} | {ss_rps:.0f} | {ss_rps / jh_rps if jh else float('nan'):.2f}× "
            f"| {median([x['server_cpu_ms_per_req'] for x in jh]):.2f} "
            f"| {median([x['server_cpu_ms_per_req'] for x in ss]):.2f} "
            f"(+ {median([x['pg_cpu_ms_per_req'] for x in ss]):.2f}) "
            f"| {median([x['p99_ms'] for x in jh]):.1f} | {median([x['p99_ms'] for x in ss]):.1f} "
            f"| {median([x['foreign_pct'] for x in jh]):.0f} / {median([x['foreign_pct'] for x in ss]):.0f} |"
        )
    if "launch20" not in rounds[0]["ss"]:
        return "\n".join(lines)
    jh20 = median([r["jh"]["launch20"]["wall_s"] for r in rounds])
    ss20 = median([r["ss"]["launch20"]["wall_s"] for r in rounds])
    lines.append(
        f"| 20 concurrent launches, wall s (spawn · local backend) | {jh20:.2f} s | {ss20:.2f} s | | | | | | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--quiet-wait", type=float, default=5, help="load.py's wait for a quieter machine (s)")
    parser.add_argument("--jupyterhub", type=Path, default=ROOT.parent / "jhbench")
    parser.add_argument("--skip-jupyterhub", action="store_true", help="StreamSpace rows only")
    parser.add_argument("--profile", type=Path, help="also record py-spy profiles of the read rows here")
    parser.add_argument(
        "--only",
        choices=["reads", "launch"],
        help="only the GET rows (reads) or only the launch rows (POST and the 20 launches)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also record each of the 20 local launches' timeline (agent logging at debug)",
    )
    parser.add_argument("--database", default=DATABASE, help="the benchmark's PostgreSQL database (dropped first)")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    args = parser.parse_args()
    anchor = jupyterhub_dir(args.jupyterhub.resolve())
    every_cpu = os.sched_getaffinity(0)
    out_root = ROOT / ".streamspace" / "bench-jupyterhub" / time.strftime("%Y%m%d-%H%M%S")
    out_root.mkdir(parents=True)
    args.trace_dir = out_root if args.trace else None
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: load average {os.getloadavg()[0]:.1f}", flush=True)
        jh = None
        os.sched_setaffinity(0, every_cpu)  # run.sh pins its own processes (and pins none on one CPU)
        if not args.skip_jupyterhub:
            jh = jupyterhub_round(
                anchor, out_root / f"jh-{number}", args.seconds, args.warmup, args.quiet_wait, args.only
            )
        os.sched_setaffinity(0, {0})  # this script's clients share CPU 0 with wrk, as JupyterHub's do
        reset_database(bench_env(args.database, args.redis_db), args.database)
        with tempfile.TemporaryDirectory(prefix="ss-bench-") as work:
            profile = args.profile if number == 1 else None
            ss = streamspace_round(anchor, Path(work), args, profile=profile)
        rounds.append({"jh": jh, "ss": ss, "loadavg": os.getloadavg()[0]})
        (out_root / "rounds.json").write_text(json.dumps(rounds, indent=1))
        for key, name in [*ROWS, ("launch20", "20 concurrent local launches")]:
            if key not in ss:  # --only
                continue
            r = ss[key]
            if key == "launch20":
                print(
                    f"  SS {name}: wall {r['wall_s']:.2f} s, server CPU {r.get('server_cpu_s', float('nan')):.2f} s, "
                    f"agent CPU {r.get('agent_cpu_s', float('nan')):.2f} s, "
                    f"session processes' CPU {r.get('sessions_cpu_s', float('nan')):.2f} s, "
                    f"{r.get('polls', 0)} polls" + (f" (JH {jh['launch20']['wall_s']:.2f} s)" if jh else "")
                )
                continue
            cpu = r["server_cpu_ms_per_req"] or float("nan")  # None when no request completed
            print(
                f"  SS {name}: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, "
                f"{cpu:.2f} ms CPU (+ pg {r['pg_cpu_ms_per_req']:.2f}), "
                f"others {r['foreign_pct']:.0f}% of a core"
            )
        if jh:
            for key in ("one", "page") if "one" in jh else ():
                r = jh[key]
                cpu = r["server_cpu_ms_per_req"] or float("nan")  # None when no request completed
                print(f"  JH {key}: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, {cpu:.2f} ms CPU")
    if not args.skip_jupyterhub:
        print(
            f"\nMedians over {len(rounds)} round(s), load average at the end of each: "
            + ", ".join(f"{r['loadavg']:.1f}" for r in rounds)
        )
        print(report(rounds))
    print(f"raw results: {out_root}")


if __name__ == "__main__":
    sys.exit(main())
