"""Redis through Sentinel: what a client pays per command, and how long a failover keeps a
writer from Redis (prints numbers; not a test).

    .venv/bin/python bench/sentinel_bench.py [--commands 5000] [--runs 5]

A real master, replica and three Sentinels (tests/support/sentinel.py, down-after 1000 ms).
"per command": SET+GET round trips of one client made from the URL of the master vs one made
by agent_runtime/redis_client.py through the Sentinels (the lookup happens once per new
connection, not per command). "unavailable": a writer SETs in a loop; from the moment of
``SENTINEL FAILOVER`` / SIGKILL of the master to its first successful SET on the new master.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from agent_runtime.redis_client import RedisTarget
from tests.support.sentinel import SentinelCluster


def per_command_us(client: redis.Redis, commands: int) -> float:
    client.set("bench:k", "v")
    began = time.perf_counter()
    for _ in range(commands // 2):
        client.set("bench:k", "v")
        client.get("bench:k")
    return (time.perf_counter() - began) / commands * 1e6


def unavailable_s(cluster: SentinelCluster, client: redis.Redis, fail: str) -> float:
    """Seconds from the failure to the writer's first SET that lands on the new master."""
    old = cluster.master_port
    state = {"failed_at": 0.0, "recovered_at": 0.0}
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            try:
                client.set("bench:w", "x")
                address = client.connection_pool.get_master_address()
                if state["failed_at"] and address[1] != old and not state["recovered_at"]:
                    state["recovered_at"] = time.monotonic()
                    return
            except redis.RedisError:
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    state["failed_at"] = time.monotonic()
    if fail == "failover":
        cluster.failover()
    else:
        cluster.kill_master()
    thread.join(30)
    stop.set()
    if fail == "kill":
        cluster.revive(old)
    return state["recovered_at"] - state["failed_at"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f}; {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.strip()}"
    )
    with SentinelCluster(sentinels=3, master_name="bench") as cluster:
        direct = redis.Redis(host="127.0.0.1", port=cluster.master_port)
        target = RedisTarget.from_env(cluster.env(db=0))
        assert target is not None
        through = target.client(socket_timeout=5)
        rounds = [(per_command_us(direct, args.commands), per_command_us(through, args.commands)) for _ in range(3)]
        print(
            f"per command (SET/GET, best of 3): direct {min(r[0] for r in rounds):.0f} µs, "
            f"through Sentinel {min(r[1] for r in rounds):.0f} µs"
        )
        for fail in ("failover", "kill"):
            times = [unavailable_s(cluster, target.client(socket_timeout=5), fail) for _ in range(args.runs)]
            print(
                f"writer unavailable after {fail}: p50 {statistics.median(times):.2f} s "
                f"(min {min(times):.2f}, max {max(times):.2f}), n={len(times)}"
            )


if __name__ == "__main__":
    main()
