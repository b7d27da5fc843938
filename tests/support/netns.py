"""A host that can vanish without a word: a network namespace reached from this machine over a
veth pair, for tests of what clients do when their peer dies the way a ``docker kill``ed
container does (its network is gone: no RST, no FIN, packets to it are dropped).

API::

    from tests.support.netns import Netns

    with Netns() as host:            # needs root and iproute2, else tests.support.ci.unavailable
        host.address                 # "10.x.y.2": the namespace's address (this side is 10.x.y.1)
        process = host.popen([...])  # a process inside the namespace
        host.vanish()                # its link goes down, then its processes are SIGKILLed:
                                     # connections to it go silent; new ones fail after ARP
                                     # (EHOSTUNREACH), as towards a killed container's address
        host.stop()                  # processes killed, namespace and veth pair deleted

The link is set down inside the namespace rather than deleting this side's end: this side's
route to the /30 then stays, so the address is unreachable instead of being routed elsewhere
(a default route could lead to a proxy that answers). Killing the processes after the link is
down keeps their kernel's RST and FIN from leaving.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from types import TracebackType

from tests.support.ci import unavailable


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Netns:
    """One namespace with a veth pair to this host; see the module doc."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.name = f"ss-vanish-{token}"
        self.outside, self.inside = f"ssv{token}h", f"ssv{token}n"  # interface names: <= 15 chars
        # A /30 in 10.200.0.0–10.255.255.252, unlikely to meet another test's.
        second, third, fourth = 200 + secrets.randbelow(56), secrets.randbelow(256), secrets.randbelow(64) * 4
        self.host_address = f"10.{second}.{third}.{fourth + 1}"
        self.address = f"10.{second}.{third}.{fourth + 2}"
        self.processes: list[subprocess.Popen] = []
        self._created = False

    def __enter__(self) -> Netns:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Netns:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            unavailable("network namespaces need root and iproute2 (the ip command)")
        _ip("netns", "add", self.name)
        self._created = True
        try:
            _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
            _ip("link", "set", self.inside, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.outside)
            _ip("link", "set", self.outside, "up")
            self._exec("ip", "addr", "add", f"{self.address}/30", "dev", self.inside)
            self._exec("ip", "link", "set", self.inside, "up")
            self._exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.stop()
            raise
        return self

    def popen(self, command: list[str], **kwargs: object) -> subprocess.Popen:
        """Start ``command`` inside the namespace (killed by :meth:`vanish` and :meth:`stop`)."""
        process = subprocess.Popen(["ip", "netns", "exec", self.name, *command], **kwargs)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def vanish(self) -> None:
        """The host is gone: its link down, then its processes killed (no RST or FIN gets out)."""
        self._exec("ip", "link", "set", self.inside, "down")
        self._kill()

    def stop(self) -> None:
        self._kill()
        if self._created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
            subprocess.run(["ip", "link", "del", self.outside], capture_output=True, timeout=30)
            self._created = False

    def _exec(self, *command: str) -> None:
        _ip("netns", "exec", self.name, *command)

    def _kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
        self.processes.clear()
