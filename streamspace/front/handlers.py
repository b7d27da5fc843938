"""The contract between the front's connection and the handlers that take its requests.

The front (:class:`~streamspace.front.protocol.FrontProtocol`) reads a request head,
:func:`~streamspace.front.head.parse` turns it into one :class:`RequestHead` naming the
handler class for it, and the connection builds and starts that handler. Four kinds
exist: :class:`~streamspace.front.exchange.Exchange` (an HTTP request run through the ASGI
application), :class:`~streamspace.front.pipe.WebSocketPipe` (a browser's WebSocket piped
to its session), ``agents_app.agent_socket.AgentSocket`` (an agent's tunnel socket) and
``agents_app.hub_socket.HubSocket`` (an agent's hub socket). The last two live in a lower
layer that does not import the front: they satisfy :class:`FrontHandler` structurally, and
``tests/proxy/front/test_front_handlers.py`` checks that all four do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request head the front serves, as :func:`~streamspace.front.head.parse` returns it.

    ``scope`` is the ASGI scope daphne would build for the request (``http``, or
    ``websocket`` for a handshake); ``raw`` is the head as received, through its blank
    line, so that a handler that gives the request up can pass it to daphne unchanged.
    """

    method: bytes
    target: bytes
    scope: dict
    body_length: int  # Content-Length (0 without one; a handshake has none)
    close: bool  # the client asked to close the connection after this request
    raw: bytes
    handler: HandlerFactory


@runtime_checkable
class FrontHandler(Protocol):
    """One request the front parsed, from its head until the connection moves on.

    The connection builds ``handler = head.handler(front, head)``, makes it its current
    handler and calls ``handler.start()``. A handler must provide:

    ``__init__(front, head)``
        Build the handler for ``head`` (a :class:`RequestHead`) on ``front`` (a
        :class:`FrontConnection`). No I/O and no task yet: only ``start`` begins the work.

    ``body_left: int``
        Request-body bytes still to come. While it is positive the connection passes every
        byte it receives to :meth:`feed` first; what ``feed`` leaves is the next request's.
        It is 0 for a WebSocket handshake, and 0 once a body is all in.

    ``start() -> None``
        Begin the work as a task on ``front.factory.loop`` and return at once.

    ``feed(data: bytes) -> bytes``
        Take this request's body bytes (at most ``body_left``) out of ``data`` and return
        the rest. Called only while ``body_left`` is positive.

    ``disconnected() -> None``
        The client's connection is gone while this handler is the current one: stop
        waiting for the client and write nothing more. Called at most once.

    In turn, a handler ends its turn on the connection with exactly one of:

    * ``front.request_done(handler, keep_alive=...)`` when its response is complete: the
      connection serves the next request, or closes once the response is out;
    * ``front.hand_over(prefix=head.raw)`` when daphne is to answer the request after all
      (only before anything was written to the client);
    * ``front.become(handler)`` when it takes the connection for good: it gets the bytes
      received meanwhile and must take the socket out of Twisted in the same step
      (``streamspace.transport.daphne_internals.detach``), so the connection sees no
      further events.
    """

    body_left: int

    def start(self) -> None: ...

    def feed(self, data: bytes) -> bytes: ...

    def disconnected(self) -> None: ...


# What a RequestHead names: the handler class (any callable building a handler).
HandlerFactory = Callable[["FrontConnection", RequestHead], FrontHandler]


class FrontConnection(Protocol):
    """What a handler may use of the front's connection (``FrontProtocol`` provides it).

    ``transport``
        The client's Twisted TCP transport (write, flow control, abort).
    ``server``
        daphne's server: ``application``, ``log_action``, ``server_name``,
        ``application_close_timeout``.
    ``factory``
        The connection's factory: ``loop`` (the asyncio loop under Twisted's reactor) and
        ``reactor`` (for timers).
    ``lost``
        The client's connection is gone.
    ``paused``
        Reading from the client is paused (an HTTP exchange pauses it while its request
        body waits for the application, and resumes it).
    ``handler``
        The connection's current handler (None between requests).
    ``abort()``
        Drop the connection now, unsent bytes and all (a response cut short must not look
        complete); no request follows on it.
    """

    transport: Any
    server: Any
    factory: Any
    lost: bool
    paused: bool
    handler: FrontHandler | None

    def request_done(self, handler: FrontHandler, *, keep_alive: bool) -> None: ...

    def abort(self) -> None: ...

    def hand_over(self, prefix: bytes = b"") -> None: ...

    def become(self, owner: FrontHandler) -> bytes: ...
