"""Noticing that a loopback port begins to listen, within ``LISTEN_POLL_S`` and cheaply.

A starting workload gives no signal when its server socket listens. On loopback the kernel
settles a non-blocking ``connect`` within the call (established, or refused with nothing
listening), so a port is checked in a few microseconds and without waiting. One task per
:class:`ListenWatch` checks every awaited port together each ``LISTEN_POLL_S`` and runs only
while something waits; a port that accepts is connected to once and closed in order (FIN),
which a server sees as a client that sent nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket

LISTEN_POLL_S = 0.02


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to ``host:port`` is established at once (something listens).
    A connect still in progress (possible off loopback) counts as not yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect_ex((host, port))
        except OSError:
            return False
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            return False
        return bool(select.select([], [sock], [], 0)[1])


class ListenWatch:
    """Waits for loopback ports to begin listening, all of them checked by one task."""

    def __init__(self, *, interval: float = LISTEN_POLL_S, host: str = "127.0.0.1") -> None:
        self.interval, self.host = interval, host
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def wait(self, port: int, timeout: float) -> bool:
        """True once ``port`` accepts connections (at most ``interval`` after it begins to),
        False when ``timeout`` seconds pass first."""
        if accepts(port, self.host):
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(port, set()).add(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._check())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return waiter.done()
        finally:
            waiting = self._waiters.get(port)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[port]

    async def _check(self) -> None:
        while self._waiters:
            await asyncio.sleep(self.interval)
            for port in [p for p in self._waiters if accepts(p, self.host)]:
                for waiter in self._waiters.pop(port):
                    if not waiter.done():
                        waiter.set_result(None)
