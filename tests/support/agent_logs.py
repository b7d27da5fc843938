"""What an agent's JSON log (agent_runtime/logs.py) says it did, for tests that count executions."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

#: The messages that end a command's execution, whatever its outcome (agent_runtime/commands.py).
EXECUTED = frozenset({"command done", "command failed", "command crashed"})


def log_entries(lines: Iterable[str]) -> Iterable[dict]:
    """The JSON entries among ``lines`` (anything else an agent's output holds is skipped)."""
    for line in lines:
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def executions(lines: Iterable[str]) -> Counter:
    """command id → how many times the log says an agent executed the command."""
    return Counter(
        entry["command_id"] for entry in log_entries(lines) if entry.get("msg") in EXECUTED and entry.get("command_id")
    )
