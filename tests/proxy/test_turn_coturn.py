"""The control plane's TURN credentials against a real TURN server: Debian's coturn with the
TURN REST API shared secret (``use-auth-secret``), driven by aioice's TURN client.

A credential the control plane issues allocates a relay that really relays datagrams; an
expired one, one minted with another secret and one whose user part was changed are refused.
coturn comes from scripts/ensure-test-peers.sh; in CI its absence is a failure.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from sessions_app import turn
from tests.support.ci import unavailable

SECRET = "coturn-test-secret"
REALM = "streamspace.test"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stun_answers(port: int) -> bool:
    """Whether a TURN server answers a STUN binding request on ``port`` (it is up)."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(bytes(request), ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return stun.parse_message(data).transaction_id == request.transaction_id


@pytest.fixture(scope="module")
def coturn(tmp_path_factory) -> Iterator[int]:
    """A private turnserver on a free loopback port: shared secret, no TLS, no CLI, relays on
    loopback (the test's peer is there)."""
    if shutil.which("turnserver") is None:
        unavailable("Debian's coturn is not installed: run scripts/ensure-test-peers.sh")
    work: Path = tmp_path_factory.mktemp("coturn")
    port = free_udp_port()
    relay = free_udp_port()
    argv = [
        "turnserver",
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        f"--min-port={relay}",
        f"--max-port={relay + 20}",
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        f"--realm={REALM}",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--no-rfc5780",
        f"--userdb={work / 'turndb'}",
        f"--pidfile={work / 'turnserver.pid'}",
        f"--log-file={work / 'turn.log'}",
        "--simple-log",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not stun_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = work / "turn.log"
                raise RuntimeError(f"turnserver did not start: {log.read_text() if log.exists() else ''}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


class Echo(asyncio.DatagramProtocol):
    """A UDP peer that sends every datagram back."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(b"echo:" + data, addr)


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.put_nowait(data)


def turn_entry(config: dict) -> dict:
    return next(server for server in config["iceServers"] if "credential" in server)


@pytest.fixture
def turn_settings(settings, coturn):
    settings.STREAMSPACE_TURN_URLS = [f"turn:127.0.0.1:{coturn}?transport=udp", f"stun:127.0.0.1:{coturn}"]
    settings.STREAMSPACE_TURN_SECRET = SECRET
    settings.STREAMSPACE_TURN_TTL_S = 600
    return settings


async def allocate(port: int, username: str, password: str):
    return await asyncio.wait_for(
        create_turn_endpoint(Collect, ("127.0.0.1", port), username=username, password=password), 10
    )


async def test_issued_credentials_allocate_a_relay_that_relays(turn_settings, coturn):
    entry = turn_entry(turn.ice_servers(42))
    assert entry["username"].endswith(":42")
    loop = asyncio.get_running_loop()
    peer, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    transport, protocol = await allocate(coturn, entry["username"], entry["credential"])
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1" and relayed[1] != coturn
        transport.sendto(b"through the relay", peer.get_extra_info("sockname"))
        assert await asyncio.wait_for(protocol.received.get(), 10) == b"echo:through the relay"
    finally:
        transport.close()
        peer.close()


@pytest.mark.parametrize("tamper", ["expired", "other secret", "other user"])
async def test_refused_credentials_allocate_nothing(turn_settings, coturn, tamper):
    if tamper == "expired":
        entry = turn_entry(turn.ice_servers(42, now=time.time() - 3600))  # expired 50 minutes ago
        username, password = entry["username"], entry["credential"]
    elif tamper == "other secret":
        username = turn.username_for(42, expires_at=int(time.time()) + 600)
        password = turn.credential("not-the-secret", username)
    else:  # a valid credential with the user part changed: the HMAC does not match it
        entry = turn_entry(turn.ice_servers(42))
        username = entry["username"].rsplit(":", 1)[0] + ":43"
        password = entry["credential"]
    with pytest.raises(stun.TransactionFailed) as refused:
        await allocate(coturn, username, password)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401
