"""Every use of daphne, and of Twisted beyond its documented interfaces, in one place.

daphne documents a command line, not a Python API, and the proxy's speed comes from
reaching past both daphne's and Twisted's public surfaces. This module is the only one
that imports daphne and the only one that touches a private Twisted name; the rest of the
project calls its small functions. It was written against the versions below (pinned in
``requirements.txt``); ``tests/proxy/test_daphne_internals.py`` fails when the installed
versions differ, and checks every name listed here still exists with the shape used, so an
upgrade starts by reading this list.

Private Twisted names (no public API gives the same):

* ``AsyncioSelectorReactor._asyncioEventloop`` (:func:`reactor_loop`): the asyncio loop
  under the reactor. daphne makes that loop current only after its listeners are built,
  and the front's factory (built with them) needs it to schedule application tasks.
* ``FileDescriptor.dataBuffer`` and ``FileDescriptor._tempDataBuffer``
  (:func:`detachable`): a TCP transport's unsent bytes. ``ITransport`` has no "is the
  write buffer empty", and a socket may leave Twisted only when nothing is left to send.
* ``FileDescriptor.stopReading`` / ``stopWriting`` (:func:`detach`): they take the
  transport out of the reactor before its socket (``ISystemHandle.getHandle``) is
  duplicated into an asyncio transport; ``ITransport`` has no way to let go of a
  connection without closing it.
* ``HTTPChannel._waitingForTransport`` (:func:`channel_waiting`): whether Twisted's HTTP
  channel has already been told its transport's buffer is full. A producer registered
  after that moment is never paused, so the proxy starts paused instead.
* ``FileDescriptor.producer`` (:func:`upgraded_channel`): after daphne's WebSocket
  upgrade the HTTP channel is still the TCP transport's producer; back-pressure for the
  WebSocket is registered on it (the WebSocket protocol object is no consumer).

daphne's internals (daphne has no documented Python API; every name is internal):

* ``daphne.server.Server.create_application`` passes the application
  ``send=functools.partial(server.handle_reply, protocol)`` and
  ``receive=asyncio.Queue.get`` of the connection's input queue:
  :func:`daphne_protocol` digs the protocol out of the partial (to reach its Twisted
  transport for back-pressure and aborts) and :func:`receive_queue` takes the queue (to
  stop reading a browser whose messages pile up). ASGI gives no handle on either.
* ``daphne.server.HTTPFactory``, the module-level name ``Server.run`` builds its listening
  factory from (:func:`use_http_factory`): the launcher replaces it with the front's
  factory. daphne has no setting for the factory class.
* ``daphne.http_protocol.HTTPFactory`` (:data:`DaphneHTTPFactory`): the front's factory
  subclasses it, and builds daphne's own HTTP protocol for the connections it hands over
  with its ``buildProtocol``.
* ``daphne.server.Server`` and ``daphne.cli.CommandLineInterface.server_class``
  (:func:`server_class`, :func:`command_line`): the launcher runs daphne's command line
  with a subclass of its server.
* ``Server`` attributes the front reads as daphne's own protocol does: ``application``,
  ``root_path``, ``server_name``, ``application_close_timeout``, ``endpoints`` (the
  Twisted endpoint descriptions ``Server.run`` listens on; the launcher adds a backlog), the three
  ``proxy_forwarded_*_header`` settings, ``log_action``, ``action_logger``,
  ``verbosity``, ``http_factory`` and ``websocket_connect_timeout`` (how long daphne lets a
  WebSocket handshake wait for the application's accept: :func:`websocket_connect_timeout`,
  the longest a hub handshake holds an admission slot).
* ``daphne.utils.HEADER_NAME_RE``, ``INVALID_HEADER_VALUE_BYTES`` and
  ``parse_x_forwarded_for``: daphne's rules for header names and values and its reading
  of ``X-Forwarded-*``, so a request the front serves gets exactly daphne's answer.
* ``daphne.access.AccessLogGenerator`` and its ``stream``: the launcher's access log
  formats the same line.
* ``daphne.http_protocol.parse_x_forwarded_for`` and ``daphne.ws_protocol.parse_x_forwarded_for``,
  the names daphne's HTTP and WebSocket protocols call to read ``X-Forwarded-*``
  (:func:`use_forwarded_address`): the launcher puts the project's trust rule
  (:mod:`streamspace.api.client_ip`) in their place. daphne trusts the leftmost address,
  which the client writes.

autobahn (daphne's WebSocket protocol) internals:

* ``autobahn.websocket.protocol.pformat``, the module-level name autobahn's
  ``WebSocketProtocol._connectionMade`` calls to format the new connection's settings for
  a debug log line, on every connection whether or not debug logging is on
  (:func:`lazy_autobahn_settings_log`): the launcher puts a lazy formatter in its place,
  so the settings are formatted only if the line is written. A reconnect herd opens a
  thousand sockets at once.

Twisted's documented interfaces (``Protocol``, ``ISSLTransport``, ``ISystemHandle``,
``IPushProducer``, ``HTTPFactory.timeOut``, ``reactor`` and ``log``) are used directly
where they are needed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pprint
import socket
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.http_protocol import HTTPFactory as DaphneHTTPFactory
from daphne.utils import HEADER_NAME_RE, INVALID_HEADER_VALUE_BYTES, parse_x_forwarded_for
from twisted.internet.interfaces import ISSLTransport, ISystemHandle

DAPHNE_VERSION = "4.2.3"
TWISTED_VERSION = "26.10.0"

__all__ = [
    "DAPHNE_VERSION",
    "HEADER_NAME_RE",
    "INVALID_HEADER_VALUE_BYTES",
    "TWISTED_VERSION",
    "AccessLogGenerator",
    "DaphneHTTPFactory",
    "channel_waiting",
    "client_transport",
    "command_line",
    "daphne_protocol",
    "detach",
    "detachable",
    "lazy_autobahn_settings_log",
    "parse_x_forwarded_for",
    "reactor_loop",
    "receive_queue",
    "server_class",
    "upgraded_channel",
    "use_http_factory",
    "websocket_connect_timeout",
]


# -- the reactor --


def reactor_loop(reactor: Any) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop under Twisted's asyncio reactor; None under any other reactor."""
    return getattr(reactor, "_asyncioEventloop", None)


# -- a TCP transport's socket --


def detachable(transport: Any) -> bool:
    """Whether the transport's socket can leave Twisted: plain TCP with nothing left to send."""
    if ISSLTransport.providedBy(transport) or not ISystemHandle.providedBy(transport):
        return False
    if not transport.connected or transport.disconnecting:
        return False
    return not transport.dataBuffer and not transport._tempDataBuffer


def detach(transport: Any) -> socket.socket:
    """The transport's connection as a new socket object; Twisted forgets it without closing it.

    Only for a :func:`detachable` transport. The duplicate keeps the connection open; Twisted's
    descriptor is closed, so no FIN is sent and Twisted never reads or writes it again.
    """
    transport.stopReading()
    transport.stopWriting()
    sock = transport.getHandle()
    duplicate = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    sock.close()
    return duplicate


# -- daphne's ASGI callables and the Twisted objects behind them --


def daphne_protocol(send: Any) -> Any | None:
    """daphne's protocol for the connection whose ASGI ``send`` this is; None for another server."""
    if isinstance(send, functools.partial) and send.args:
        return send.args[0]
    return None


def client_transport(protocol: Any) -> Any | None:
    """The client's Twisted transport behind daphne's protocol (an HTTP request's is its channel's)."""
    return getattr(protocol, "transport", None) or getattr(getattr(protocol, "channel", None), "transport", None)


def receive_queue(receive: Any) -> asyncio.Queue | None:
    """The input queue daphne's ``receive`` reads from; None for another server."""
    queue = getattr(receive, "__self__", None)
    return queue if isinstance(queue, asyncio.Queue) else None


def upgraded_channel(protocol: Any) -> Any | None:
    """The HTTP channel still producing for an upgraded (WebSocket) connection's transport."""
    channel = getattr(getattr(protocol, "transport", None), "producer", None)
    return channel if channel is not None and hasattr(channel, "registerProducer") else None


def channel_waiting(channel: Any) -> bool:
    """Whether Twisted's HTTP channel has been told its transport's write buffer is full."""
    return bool(getattr(channel, "_waitingForTransport", False))


# -- daphne's server and command line --


def websocket_connect_timeout(server: Any, default: float = 20.0) -> float:
    """daphne's WebSocket handshake deadline on ``server`` (seconds; daphne's own default without one)."""
    return float(getattr(server, "websocket_connect_timeout", default))


def use_forwarded_address(parser: Any) -> None:
    """Make daphne's HTTP and WebSocket protocols read ``X-Forwarded-*`` with ``parser``
    (same signature as daphne's ``parse_x_forwarded_for``)."""
    import daphne.http_protocol  # noqa: PLC0415 bound as a module here, the names below are replaced in it
    import daphne.ws_protocol  # noqa: PLC0415 it loads autobahn, which only the launcher needs

    daphne.http_protocol.parse_x_forwarded_for = parser
    daphne.ws_protocol.parse_x_forwarded_for = parser


def use_http_factory(factory_class: type) -> None:
    """Make ``daphne.server.Server.run`` listen with ``factory_class`` (a ``DaphneHTTPFactory``)."""
    import daphne.server  # noqa: PLC0415 importing it creates daphne's loop, after the launcher's policy

    daphne.server.HTTPFactory = factory_class


def server_class() -> type:
    """``daphne.server.Server`` (importing it creates daphne's event loop and reactor)."""
    from daphne.server import Server  # noqa: PLC0415 importing it creates daphne's loop

    return Server


def command_line() -> Any:
    """A new ``daphne.cli.CommandLineInterface`` (whose ``server_class`` the launcher sets)."""
    from daphne.cli import CommandLineInterface  # noqa: PLC0415 it imports daphne.server

    return CommandLineInterface()


# -- autobahn --


class _LazyFormat:
    """``pprint.pformat(value)`` once the log line is written (``str``), never before."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def lazy_autobahn_settings_log() -> None:
    """Make autobahn format each WebSocket's settings only for a log line that is written."""
    from autobahn.websocket import protocol  # noqa: PLC0415 daphne's dependency, loaded with it

    protocol.pformat = _LazyFormat
