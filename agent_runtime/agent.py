"""Wiring: backend + leader election + connection, and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import logging
import signal

from agent_runtime.backends import BackendError, load_backend_class
from agent_runtime.config import AgentConfig, ConfigError
from agent_runtime.connection import AgentConnection
from agent_runtime.leader import make_elector

log = logging.getLogger(__name__)


async def run_agent(config: AgentConfig) -> None:
    """Run until SIGTERM/SIGINT; then drain commands, release the lease and exit."""
    backend_class = load_backend_class(config.platform)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        backend = backend_class(agent_id=config.agent_id, data_dir=config.data_dir, options=config.backend_options)
    except BackendError as exc:
        raise ConfigError(str(exc)) from None
    try:
        lease = await backend.prepare(config.lease)
    except BackendError as exc:  # the platform refuses this agent: say why and exit
        await backend.close()
        raise ConfigError(str(exc)) from None
    elector = make_elector(lease, identity=config.instance_id)
    connection = AgentConnection(config, backend, elector)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "agent starting",
        extra={
            "control_plane": config.control_plane,
            "ha": config.lease.enabled,
            "ha_backend": config.lease.backend if config.lease.enabled else None,
        },
    )
    elector_task = loop.create_task(elector.run(), name="elector")
    connection_task = loop.create_task(connection.run(), name="connection")
    stop_task = loop.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait({elector_task, connection_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stop_task and task.exception():
            log.error("agent task crashed", exc_info=task.exception())
    log.info("agent stopping")
    await connection.shutdown(config.drain_timeout)
    elector_task.cancel()
    connection_task.cancel()
    stop_task.cancel()
    await asyncio.gather(elector_task, connection_task, stop_task, return_exceptions=True)
    await backend.close()
    log.info("agent stopped")
