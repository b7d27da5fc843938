"""Running real ``streamspace-agent`` processes in tests (and benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

AGENT = str(Path(sys.executable).parent / "streamspace-agent")


class AgentProcess:
    def __init__(self, proc: asyncio.subprocess.Process, instance_id: str, log_path: Path):
        self.proc = proc
        self.instance_id = instance_id
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.returncode is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


async def spawn_agent(
    control_plane: str,
    token: str,
    *,
    instance_id: str,
    data_dir: Path,
    platform: str = "local",
    agent_id: str = "agent-1",
    env: dict[str, str] | None = None,
) -> AgentProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{instance_id}.log"
    full_env = {k: v for k, v in os.environ.items() if k not in ("ENABLE_HA", "HA_BACKEND", "LEASE_KEY")}
    full_env.update(env or {})
    with open(log_path, "ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            AGENT,
            "--platform", platform,
            "--control-plane", control_plane,
            "--token", token,
            "--agent-id", agent_id,
            "--instance-id", instance_id,
            "--data-dir", str(data_dir),
            "--drain-timeout", "10s",
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )  # fmt: skip
    return AgentProcess(proc, instance_id, log_path)
