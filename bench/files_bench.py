"""Session files benchmark: upload and download through the control plane and a local agent.

    .venv/bin/python bench/files_bench.py [--mib 200] [--runs 3]

A scratch PostgreSQL database, Redis db 8, one ``python -m streamspace.serve`` (the front
serves the files endpoint) and one ``streamspace-agent --platform local``; a demo session
with a persistent home. Measured, best of ``--runs``: ``PUT`` and ``GET`` of a ``--mib`` MiB
file through ``/api/v1/sessions/<id>/files/`` (MB/s), and the peak RSS of the control plane
and of the agent while the bytes pass (sampled every 20 ms; the first run's, downloads before
uploads), beside their RSS at rest. The
uploads run twice: on a new connection (the front serves it) and on the API client's kept-alive
connection, which carried other API requests first (daphne serves it, §23). The
anchor, same run: copying the same file on the same disk (``shutil.copyfile``), the floor any
transfer into the home pays.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent_runtime.backends.homes import home_key
from bench.common import PYTHON, ROOT, bench_env, daphne, free_port, manage_shell, reset_database

DATABASE = "streamspace_filesbench"
MIB = 1024 * 1024
SETUP = """
from agents_app.models import Agent
from agents_app.tokens import hash_token
from sessions_app.models import Template
from streamspace.accounts.models import TokenScope, User
from streamspace.accounts.tokens import create_token
user = User.objects.create_user("bench", password="x")
Agent.objects.create(agent_id="files-bench", platform="local", token_hash=hash_token("files-bench-token"))
Template.objects.create(slug="demo", display_name="Demo", platform="local",
    command=["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"])
print(create_token(user, name="bench", scope=TokenScope.WRITE)[1])
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Peak:
    """The highest RSS of some processes while the block runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_kib(pid))
            time.sleep(0.02)

    def __enter__(self) -> Peak:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MIB
    env = bench_env(DATABASE, redis_db=8)
    env["STREAMSPACE_UPLOAD_MAX_BYTES"] = str(size + MIB)
    env.setdefault("STREAMSPACE_LOCAL_SESSION_USER", pwd.getpwuid(os.geteuid()).pw_name)  # as the test suite
    reset_database(env, DATABASE)
    key = manage_shell(env, SETUP).strip().splitlines()[-1]
    port = free_port()
    env["POD_URL"] = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="files-bench-"))
    work.chmod(0o755)  # the local sessions run as another user, who must reach their home
    source = work / "source.bin"
    with open(source, "wb") as out:
        for _ in range(args.mib):
            out.write(os.urandom(MIB))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with daphne(env, port, start_timeout=120) as (base, server):
        agent_log = open(work / "agent.log", "wb")  # noqa: SIM115 closed below
        agent = subprocess.Popen(
            [str(Path(PYTHON).parent / "streamspace-agent"), "--platform", "local", "--control-plane", base,
             "--token", "files-bench-token", "--agent-id", "files-bench", "--data-dir", str(work / "agent")],
            cwd=ROOT, env=env, stdout=agent_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            api = httpx.Client(base_url=base, timeout=300, headers={"Authorization": f"Token {key}"})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                launched = api.post("/api/v1/sessions", json={"template": "demo", "persistent_home": True})
                if launched.status_code == 202:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"launch refused: {launched.status_code} {launched.text}")
            session = launched.json()["id"]
            deadline = time.monotonic() + 120
            while (state := api.get(f"/api/v1/sessions/{session}").json()["state"]) != "running":
                if state == "failed" or time.monotonic() > deadline:
                    raise SystemExit(f"the session did not run ({state}): " + (work / "agent.log").read_text()[-2000:])
                time.sleep(0.2)
            print("session running; measuring", file=sys.stderr)
            url = f"/api/v1/sessions/{session}/files/bench.bin"
            home = work / "agent" / "homes" / home_key("bench")
            rest = {"control plane": rss_kib(server.pid), "agent": rss_kib(agent.pid)}
            results: dict[str, list[tuple[float, dict[int, int]]]] = {
                "copy": [],
                "GET": [],
                "PUT": [],
                "PUT kept-alive": [],
            }
            for _ in range(args.runs):
                started = time.perf_counter()
                shutil.copyfile(source, work / "copy.bin")
                results["copy"].append((time.perf_counter() - started, {}))

                shutil.copyfile(source, home / "bench.bin")  # downloads first: their peak is their own
                got = hashlib.sha256()
                with Peak([server.pid, agent.pid]) as peak:
                    started = time.perf_counter()
                    with api.stream("GET", url) as response:
                        for chunk in response.iter_raw():
                            got.update(chunk)
                    elapsed = time.perf_counter() - started
                assert got.hexdigest() == digest
                results["GET"].append((elapsed, peak.peak))

                def body():
                    with open(source, "rb") as fh:
                        while chunk := fh.read(MIB):
                            yield chunk

                # A new connection (the front serves it), then the API client's kept-alive one
                # (it carried non-front requests first, so daphne serves it, §23).
                fresh = httpx.Client(base_url=base, timeout=300, headers={"Authorization": f"Token {key}"})
                for name, client in (("PUT", fresh), ("PUT kept-alive", api)):
                    with Peak([server.pid, agent.pid]) as peak:
                        started = time.perf_counter()
                        put = client.put(url, content=body(), headers={"Content-Length": str(size)})
                        elapsed = time.perf_counter() - started
                    assert put.status_code in (200, 201), put.text
                    results[name].append((elapsed, peak.peak))
                fresh.close()
                assert hashlib.sha256((home / "bench.bin").read_bytes()).hexdigest() == digest
                print("run:", {k: [p // 1024 for p in v[-1][1].values()] for k, v in results.items() if k != "copy"},
                      file=sys.stderr)  # fmt: skip
            print(f"{args.mib} MiB, best of {args.runs}; RSS at rest: control plane {rest['control plane'] // 1024} MiB, "
                  f"agent {rest['agent'] // 1024} MiB")  # fmt: skip
            print("| what | MB/s | control plane peak RSS | agent peak RSS |")
            print("|---|---|---|---|")
            for name, runs in results.items():
                best = min(runs, key=lambda r: r[0])
                rate = size / best[0] / 1e6
                peaks = [runs[0][1].get(pid, 0) // 1024 for pid in (server.pid, agent.pid)]  # the first run's
                label = {
                    "copy": "anchor: shutil.copyfile on the same disk",
                    "PUT": "upload (PUT), a new connection: the front",
                    "PUT kept-alive": "upload (PUT), a kept-alive connection daphne serves",
                    "GET": "download (GET)",
                }
                cells = ["—", "—"] if name == "copy" else [f"{p} MiB" for p in peaks]
                print(f"| {label[name]} | {rate:.0f} | {cells[0]} | {cells[1]} |")
            api.delete(f"/api/v1/sessions/{session}")  # the session's process outlives the agent otherwise
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and api.get(f"/api/v1/sessions/{session}").json()["state"] != "stopped":
                time.sleep(0.2)
        finally:
            agent.terminate()
            agent.wait(timeout=20)
            agent_log.close()
            print((work / "agent.log").read_text()[-1500:] if "session" not in locals() else "", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
