"""Kubernetes session files benchmark: the backend's upload and download through the pod's exec.

    .venv/bin/python bench/kube_files_bench.py [--mib 100] [--runs 3]

The API emulator (tests/support/kube_api.py) in a process of its own, playing the API server and
the kubelet (its exec runs the commands as real processes over the home PVC's directory); the
Kubernetes backend in this process, as the agent runs it, with a session whose pod is running.
Measured over ``--runs``: ``home_write`` and ``home_read`` of a ``--mib`` MiB file (the best
MB/s and the least CPU seconds of this process per transfer) and the largest peak RSS growth
over the RSS at rest (sampled every 20 ms). The anchor, same run: the same commands with plain pipes and no WebSocket
(``head -c`` into a file, ``tar -c`` out of it, in the PVC's directory), the floor the
container's side pays.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.kubernetes import KubernetesBackend
from agent_runtime.backends.kubernetes_objects import home_claim_name
from bench.common import PYTHON, ROOT

MIB = 1024 * 1024
NS = "bench"
EMULATOR = """
import sys, threading
from pathlib import Path
from tests.support.kube_api import KubeAPI
api = KubeAPI(auto_ready=True, storage=Path(sys.argv[1])).start()
api.write_kubeconfig(Path(sys.argv[2]))
print("ready", flush=True)
sys.stdin.read()
api.stop()
"""


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Peak:
    """The peak RSS of this process while a block runs (a sampling thread)."""

    def __enter__(self) -> Peak:
        self.peak, self._stop = rss_kib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def chunks(data: bytes, piece: int = 256 * 1024):
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def measure(backend: KubernetesBackend, sid: str, payload: bytes) -> dict[str, float]:
    rest = rss_kib()
    cpu, start = time.process_time(), time.perf_counter()
    with Peak() as up:
        await backend.home_write(sid, ("bench.bin",), len(payload), chunks(payload))
    up_s, up_cpu = time.perf_counter() - start, time.process_time() - cpu
    digest = hashlib.sha256()
    cpu, start = time.process_time(), time.perf_counter()
    with Peak() as down:
        opened = await backend.home_read(sid, ("bench.bin",))
        try:
            async for piece in opened.chunks():
                digest.update(piece)
        finally:
            await opened.aclose()
    down_s, down_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert digest.digest() == hashlib.sha256(payload).digest()
    return {"up": len(payload) / up_s / 1e6, "up_cpu": up_cpu, "up_rss": (up.peak - rest) / 1024,
            "down": len(payload) / down_s / 1e6, "down_cpu": down_cpu, "down_rss": (down.peak - rest) / 1024}  # fmt: skip


def anchor(home: Path, payload: bytes) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run(["sh", "-c", f'head -c {len(payload)} > "$1"', "sh", str(home / "anchor.bin")], input=payload,
                   check=True)  # fmt: skip
    up = len(payload) / (time.perf_counter() - start) / 1e6
    start = time.perf_counter()
    with subprocess.Popen(["tar", "-cf", "-", "-C", str(home), "./anchor.bin"], stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        while tar.stdout.read(256 * 1024):
            pass
    down = len(payload) / (time.perf_counter() - start) / 1e6
    (home / "anchor.bin").unlink()
    return up, down


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    payload = os.urandom(args.mib * MIB)
    scratch = Path(tempfile.mkdtemp(prefix="kube-files-bench-"))
    emulator = subprocess.Popen([PYTHON, "-c", EMULATOR, str(scratch / "volumes"), str(scratch / "kubeconfig")],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert emulator.stdout is not None and emulator.stdout.readline().strip() == "ready"
    backend = KubernetesBackend(agent_id="bench", data_dir=scratch,
                                options={"kubeconfig": str(scratch / "kubeconfig"), "namespace": NS,
                                         "endpoint": "cluster-ip"})  # fmt: skip
    sid = str(uuid.uuid4())
    try:
        await backend.start(sid, SessionSpec.parse({"image": "bench:1", "user": "bench", "persistent_home": True}))
        while not (await backend.status(sid)).streaming_ready:
            await asyncio.sleep(0.05)
        results = [await measure(backend, sid, payload) for _ in range(args.runs)]
        floors = [
            anchor(scratch / "volumes" / "claims" / NS / home_claim_name("bench"), payload) for _ in range(args.runs)
        ]
        best = {key: max(r[key] for r in results) if key in ("up", "down", "up_rss", "down_rss")
                else min(r[key] for r in results) for key in results[0]}  # fmt: skip
        print(f"{args.mib} MiB, best of {args.runs}, load average {os.getloadavg()[0]:.1f}")
        print(f"upload   {best['up']:7.1f} MB/s  cpu {best['up_cpu']:.2f} s  peak RSS +{best['up_rss']:.1f} MiB"
              f"   anchor (head -c over a pipe) {max(f[0] for f in floors):7.1f} MB/s")  # fmt: skip
        print(f"download {best['down']:7.1f} MB/s  cpu {best['down_cpu']:.2f} s  peak RSS +{best['down_rss']:.1f} MiB"
              f"   anchor (tar -c over a pipe)  {max(f[1] for f in floors):7.1f} MB/s")  # fmt: skip
    finally:
        await backend.stop(sid, SessionSpec.parse({"user": "bench", "delete_home": True}))
        await backend.close()
        emulator.communicate("")
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


if __name__ == "__main__":
    asyncio.run(main())
