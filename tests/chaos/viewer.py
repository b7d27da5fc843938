"""A viewer's WebSocket through the load balancer and the session proxy
(``/api/v1/http/<id>/``) to a session that echoes: it sends a numbered message every 0.2 s,
reconnects whenever the socket drops or an echo is late, and records every outage (from the
first failure to the next echo)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import websockets


@dataclass
class Viewer:
    url: str
    headers: dict[str, str]
    echo_timeout: float = 3.0
    outages: list[tuple[float, float]] = field(default_factory=list)  # (began, seconds)
    echoes: int = 0
    connects: int = 0
    _down_since: float | None = None

    def _up(self) -> None:
        if self._down_since is not None:
            self.outages.append((self._down_since, time.monotonic() - self._down_since))
            self._down_since = None

    def _down(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()

    async def run(self, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            try:
                async with websockets.connect(self.url, additional_headers=self.headers, open_timeout=5) as ws:
                    self.connects += 1
                    while time.monotonic() < until:
                        n += 1
                        await ws.send(f"frame {n}")
                        reply = await asyncio.wait_for(ws.recv(), self.echo_timeout)
                        if str(reply).strip() != f"frame {n}":
                            raise AssertionError(f"echo {reply!r} for frame {n}")
                        self.echoes += 1
                        self._up()
                        await asyncio.sleep(0.2)
            except (OSError, TimeoutError, websockets.WebSocketException):
                self._down()
                await asyncio.sleep(0.2)
        if self._down_since is not None:  # still down at the end: an outage that never ended
            self.outages.append((self._down_since, float("inf")))

    @property
    def longest(self) -> float:
        return max((seconds for _, seconds in self.outages), default=0.0)
