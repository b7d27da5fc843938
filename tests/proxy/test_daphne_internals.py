"""The daphne and Twisted internals the front relies on (``streamspace/transport/daphne_internals.py``).

The first tests fail as soon as the installed daphne or Twisted is not the version the
module was written against, or ``requirements.txt`` pins another: an upgrade starts by
re-reading that module's list. The others check each private name it uses still exists
with the shape it uses, on real daphne and Twisted objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import io
import re
import socket
from pathlib import Path

import daphne
import pytest
import twisted
from daphne.http_protocol import WebRequest
from twisted.internet import tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.web.http import HTTPChannel, HTTPFactory

from streamspace.transport import daphne_internals as internals

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = ["tcp:port=0:interface=127.0.0.1"]  # daphne refuses a server with none (never listened on here)


def pinned() -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of requirements.txt (extras ignored)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


async def _app(scope: dict, receive, send) -> None:
    return None


# -- versions --


def test_installed_daphne_is_the_version_the_module_was_written_against():
    assert daphne.__version__ == importlib.metadata.version("daphne") == internals.DAPHNE_VERSION


def test_installed_twisted_is_the_version_the_module_was_written_against():
    assert twisted.__version__ == importlib.metadata.version("twisted") == internals.TWISTED_VERSION


def test_requirements_pin_those_versions():
    pins = pinned()
    assert pins["daphne"] == internals.DAPHNE_VERSION
    assert pins["twisted"] == internals.TWISTED_VERSION


# -- Twisted: the reactor's loop --


def test_the_asyncio_reactor_keeps_its_loop_in_asyncioEventloop():
    loop = asyncio.new_event_loop()
    try:
        reactor = AsyncioSelectorReactor(loop)
        assert reactor._asyncioEventloop is loop
        assert internals.reactor_loop(reactor) is loop
    finally:
        loop.close()
    assert internals.reactor_loop(MemoryReactor()) is None  # another reactor: no loop to take


# -- Twisted: a TCP transport's buffers and socket --


@pytest.fixture
def tcp_pair():
    """A Twisted TCP server transport on one end of a socket pair, on a recording reactor; and the peer."""
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reactor = MemoryReactor()
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 50000), None, 1, reactor)
    transport.startReading()
    yield transport, peer, reactor
    peer.close()
    with contextlib.suppress(OSError):
        ours.close()


def test_a_tcp_transport_keeps_unsent_bytes_in_dataBuffer_and_tempDataBuffer(tcp_pair):
    transport, peer, _ = tcp_pair
    assert ISystemHandle.providedBy(transport) and transport.getHandle().fileno() >= 0
    assert transport.connected and not transport.disconnecting
    assert transport.dataBuffer == b"" and transport._tempDataBuffer == []
    assert internals.detachable(transport)
    transport.write(b"x" * 10)  # queued until the reactor says the socket is writable
    assert transport._tempDataBuffer == [b"x" * 10]
    assert not internals.detachable(transport)
    transport.doWrite()
    assert peer.recv(100) == b"x" * 10
    assert not transport.dataBuffer and not transport._tempDataBuffer and internals.detachable(transport)
    transport.write(b"y" * (4 * 1024 * 1024))  # more than the socket takes at once
    transport.doWrite()
    assert transport.dataBuffer and transport._tempDataBuffer == []  # the rest waits in dataBuffer
    assert not internals.detachable(transport)


def test_a_closing_or_tls_transport_is_not_detachable(tcp_pair):
    transport, _, _ = tcp_pair
    transport.loseConnection()
    assert transport.disconnecting and not internals.detachable(transport)
    assert not internals.detachable(StringTransport())  # no system handle


def test_detach_takes_the_socket_out_of_the_reactor_without_closing_the_connection(tcp_pair):
    transport, peer, reactor = tcp_pair
    assert transport in reactor.readers
    original = transport.getHandle()
    duplicate = internals.detach(transport)
    try:
        assert transport not in reactor.readers and transport not in reactor.writers
        assert original.fileno() == -1  # Twisted's descriptor is closed ...
        duplicate.sendall(b"still open")  # ... the connection is not
        assert peer.recv(100) == b"still open"
        peer.sendall(b"and back")
        assert duplicate.recv(100) == b"and back"
    finally:
        duplicate.close()


# -- Twisted: the HTTP channel as producer --


def test_http_channel_registers_as_its_transports_producer(tcp_pair):
    transport, _, _ = tcp_pair
    channel = HTTPChannel()
    channel.timeOut = None  # no timer on the global reactor
    channel.makeConnection(transport)
    assert transport.producer is channel

    class Upgraded:  # daphne's WebSocket protocol, which writes to the same transport
        pass

    upgraded = Upgraded()
    upgraded.transport = transport
    assert internals.upgraded_channel(upgraded) is channel


def test_http_channel_tracks_a_full_transport_in_waitingForTransport():
    channel = HTTPChannel()
    channel.timeOut = None
    channel.makeConnection(StringTransport())
    assert channel._waitingForTransport is False and not internals.channel_waiting(channel)
    channel.pauseProducing()  # what the transport calls when its write buffer is full
    assert channel._waitingForTransport is True and internals.channel_waiting(channel)
    channel.resumeProducing()
    assert not internals.channel_waiting(channel)


# -- daphne: the server, its factory and its ASGI callables --


async def test_daphne_passes_its_protocol_in_send_and_its_queue_in_receive():
    seen: dict = {}

    async def app(scope: dict, receive, send) -> None:
        seen.update(receive=receive, send=send)

    server = internals.server_class()(application=app, endpoints=ENDPOINTS)
    protocol = object()
    server.connections = {protocol: {}}
    queue = server.create_application(protocol, {"type": "http"})
    await server.connections[protocol]["application_instance"]
    send = seen["send"]
    assert isinstance(send, functools.partial) and send.func == server.handle_reply
    assert internals.daphne_protocol(send) is protocol
    assert isinstance(queue, asyncio.Queue) and internals.receive_queue(seen["receive"]) is queue
    assert internals.daphne_protocol(_app) is None and internals.receive_queue(_app) is None


def test_daphne_server_run_builds_its_factory_from_the_module_level_name(monkeypatch):
    import daphne.server

    assert daphne.server.HTTPFactory is internals.DaphneHTTPFactory
    monkeypatch.setattr(daphne.server, "HTTPFactory", daphne.server.HTTPFactory)  # restored after

    class Built(Exception):
        pass

    class Factory:
        def __init__(self, server: object) -> None:
            raise Built(server)

    internals.use_http_factory(Factory)
    assert daphne.server.HTTPFactory is Factory
    server = internals.server_class()(application=_app, endpoints=ENDPOINTS)
    with pytest.raises(Built) as built:
        server.run()  # the factory is the first thing it builds
    assert built.value.args == (server,)


def test_daphne_server_has_the_attributes_the_front_reads():
    logger = internals.AccessLogGenerator(io.StringIO())
    server = internals.server_class()(
        application=_app,
        endpoints=ENDPOINTS,
        root_path="/root",
        server_name="front-test",
        application_close_timeout=7,
        proxy_forwarded_address_header="X-Forwarded-For",
        proxy_forwarded_port_header="X-Forwarded-Port",
        proxy_forwarded_proto_header="X-Forwarded-Proto",
        action_logger=logger,
        verbosity=1,
        websocket_connect_timeout=9,
    )
    assert (server.application, server.root_path, server.server_name) == (_app, "/root", "front-test")
    assert server.endpoints == ENDPOINTS  # the descriptions Server.run listens on
    assert server.application_close_timeout == 7 and server.verbosity == 1
    assert internals.websocket_connect_timeout(server) == 9  # the longest a hub admission slot is held
    assert server.proxy_forwarded_address_header == "X-Forwarded-For"
    assert server.proxy_forwarded_port_header == "X-Forwarded-Port"
    assert server.proxy_forwarded_proto_header == "X-Forwarded-Proto"
    assert server.action_logger is logger and logger.stream is not None
    server.log_action("http", "complete", {"path": "/", "status": 200, "method": "GET", "client": None, "size": 5})
    assert '"GET /" 200 5' in logger.stream.getvalue()


def test_daphne_http_factory_is_twisteds_with_daphnes_channel():
    factory = internals.DaphneHTTPFactory(object())
    assert isinstance(factory, HTTPFactory)  # timeOut, reactor and log are Twisted's
    assert hasattr(factory, "timeOut") and factory.reactor is not None and callable(factory.log)
    channel = factory.buildProtocol(None)  # what the front hands connections over to
    assert channel.requestFactory is WebRequest
    assert callable(channel.makeConnection) and callable(channel.dataReceived) and callable(channel.connectionLost)


def test_daphnes_command_line_takes_a_server_class():
    cli = internals.command_line()
    assert cli.server_class is internals.server_class()


def test_daphnes_header_rules_and_forwarded_reading():
    assert internals.HEADER_NAME_RE.fullmatch(b"X-Forwarded-For") and not internals.HEADER_NAME_RE.fullmatch(b"X A")
    assert isinstance(internals.INVALID_HEADER_VALUE_BYTES, frozenset)
    assert 0x85 in internals.INVALID_HEADER_VALUE_BYTES and 0x0B in internals.INVALID_HEADER_VALUE_BYTES
    headers = {
        b"x-forwarded-for": b"203.0.113.7, 10.0.0.1",
        b"x-forwarded-port": b"4711",
        b"x-forwarded-proto": b"https",
    }
    result = internals.parse_x_forwarded_for(
        headers, "X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto", ["192.0.2.1", 1], "http"
    )
    assert result == (["203.0.113.7", 4711], "https")


def test_autobahn_formats_websocket_settings_through_its_module_level_pformat(monkeypatch):
    """The name :func:`lazy_autobahn_settings_log` replaces is the one autobahn calls for
    each new connection's settings, and the replacement formats only when written."""
    import inspect

    from autobahn.websocket import protocol

    from streamspace.transport import daphne_internals

    assert "pformat(configAttrLog)" in inspect.getsource(protocol.WebSocketProtocol._connectionMade)
    monkeypatch.setattr(protocol, "pformat", protocol.pformat)
    daphne_internals.lazy_autobahn_settings_log()
    lazy = protocol.pformat([("openHandshakeTimeout", 5, "Factory")])
    assert not isinstance(lazy, str)
    assert f"\n{lazy}" == "\n[('openHandshakeTimeout', 5, 'Factory')]"
