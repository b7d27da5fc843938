"""What the agents' JSON logs say: how often each command ran, and how long each agent
replica was away between a dropped socket and its next registration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tests.support import agent_logs


def log_entries(path: Path) -> Iterable[dict]:
    return agent_logs.log_entries(path.read_text(errors="replace").splitlines())


def executions(paths: Iterable[Path]) -> Counter:
    """command id -> times an agent replica executed it (across all the logs given)."""
    counts: Counter = Counter()
    for path in paths:
        counts.update(agent_logs.executions(path.read_text(errors="replace").splitlines()))
    return counts


def reconnects(path: Path) -> list[float]:
    """Seconds from each ``disconnected`` (or failed connection) to the next ``registered``."""
    gaps, down_since = [], None
    for entry in log_entries(path):
        if entry.get("msg") in ("disconnected", "connection failed") and down_since is None:
            down_since = entry["ts"]
        elif entry.get("msg") == "registered" and down_since is not None:
            gaps.append(entry["ts"] - down_since)
            down_since = None
    return gaps


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def leaderless(paths: Iterable[Path], since: float, until: float) -> float | None:
    """Seconds one agent (the replicas whose logs ``paths`` are) had no leader, by their own
    logs, in the first gap that begins between ``since`` and ``until`` (wall-clock times):
    from the last leader's ``lost leadership`` to the next ``became leader``. None when no
    gap began then. A paused leader logs nothing, so SIGSTOPs show no gap here."""
    events = sorted(
        (entry["ts"], entry["msg"], path)
        for path in paths
        for entry in log_entries(path)
        if entry.get("msg") in ("became leader", "lost leadership")
    )
    leaders: set[Path] = set()
    down_since = None
    for ts, msg, path in events:
        if msg == "became leader":
            leaders.add(path)
            if down_since is not None:
                return ts - down_since
        else:
            leaders.discard(path)
            if not leaders and since <= ts <= until and down_since is None:
                down_since = ts
    return None
