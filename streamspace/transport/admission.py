"""Bounded work in progress for the agent hub's handshakes (docs/architecture.md §13.2).

When a control-plane replica dies, every agent on it connects to a survivor at once. Each
hub connection costs the survivor's one event loop an HTTP upgrade, a WebSocket handshake
and a consumer's setup before its registration; served all at once, the loop does every
handshake before the first registration's results come back, so every agent of the herd
waits for the last. :class:`Admission` lets at most ``limit`` hub connections be in that
stretch at a time: the rest wait in order, each with its request head received and nothing
else done for it, and go on as earlier ones finish. Early agents register early; the
work done for the whole herd is the same.

A connection holds its slot from its admission until the first of:

* the hub says it is registered, or its consumer ends (:func:`release_for`, with the
  ASGI ``send`` of the connection);
* the connection is lost before it became a WebSocket (:meth:`Ticket.release`);
* ``hold_s`` seconds pass (the handshake deadline): a client that never finishes its
  handshake or registration cannot keep a slot, so the queue always moves.

A connection waits at most half of ``hold_s``, then goes on even above the limit: the
agent's own handshake timeout (as long as the handshake deadline) counts the waiting, and a
replica too busy to work through the queue in time must not turn the wait into timeouts
and retries, which would cost it every handshake twice.

Only hub handshakes take part: browsers, the API and the proxy are never queued. A
connection still waiting that goes away leaves the queue (:meth:`Ticket.release`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge

from streamspace.transport.daphne_internals import client_transport, daphne_protocol

IN_FLIGHT = Gauge(
    "streamspace_hub_handshakes_in_flight",
    "Agent hub connections admitted and not yet registered on this replica (STREAMSPACE_HUB_ADMISSION).",
)
WAITING = Gauge(
    "streamspace_hub_handshakes_waiting",
    "Agent hub handshakes received and waiting for admission on this replica.",
)

# A slot's holders, by the connection's Twisted transport: how the hub's consumer, which
# only has its ASGI ``send``, finds the slot it holds.
_holders: dict[Any, Ticket] = {}


class Ticket:
    """One hub connection's place: waiting, then holding a slot, then done."""

    __slots__ = ("admission", "key", "start", "state", "timer")

    def __init__(self, admission: Admission, key: Any, start: Callable[[Ticket], None]) -> None:
        self.admission = admission
        self.key = key  # the connection's transport
        self.start = start  # called once with this ticket, when the connection is admitted
        self.state = "waiting"
        self.timer: Any = None

    @property
    def holding(self) -> bool:
        return self.state == "holding"

    def release(self) -> None:
        """Give back the connection's slot, or its place in the queue; a second call does nothing."""
        self.admission._release(self)


class Admission:
    """At most ``limit`` hub connections between admission and registration; FIFO for the rest.

    Waiting connections go on in groups: once the connections in flight fall to the low-water
    mark (half the limit), as many as the limit allows go on together. Their database work
    is batched (``agents_app.hub.batch``) only as far as it is asked for at the same time;
    admitted one by one, each would make its own small batches.

    ``call_later(seconds, f, *args)`` schedules a call and returns something with ``active()``
    and ``cancel()`` (Twisted's ``reactor.callLater``).
    """

    def __init__(self, limit: int, hold_s: float, call_later: Callable[..., Any]) -> None:
        if limit < 1:
            raise ValueError("the admission limit must be at least 1")
        self.limit = limit
        self.low_water = limit // 2
        self.hold_s = hold_s
        self.call_later = call_later
        self.in_flight = 0
        self.waiting = 0  # tickets in the queue still waiting
        self.queue: deque[Ticket] = deque()

    def _count(self, in_flight: int = 0, waiting: int = 0) -> None:
        self.in_flight += in_flight
        self.waiting += waiting
        IN_FLIGHT.set(self.in_flight)
        WAITING.set(self.waiting)

    def enter(self, key: Any, start: Callable[[Ticket], None]) -> Ticket:
        """A hub connection (``key``: its transport) asks to go on: ``start(ticket)`` runs at
        once (before this returns) when a slot is free, otherwise when its turn comes."""
        ticket = Ticket(self, key, start)
        self._drop_finished()
        if self.in_flight < self.limit and not self.queue:
            self._admit(ticket)
        else:
            self.queue.append(ticket)
            self._count(waiting=1)
            if self.hold_s:
                ticket.timer = self.call_later(self.hold_s / 2, self._overdue, ticket)
        return ticket

    def _overdue(self, ticket: Ticket) -> None:
        """``ticket`` waited as long as a connection may: it goes on above the limit."""
        ticket.timer = None
        if ticket.state == "waiting":
            self._count(waiting=-1)
            self._admit(ticket)
            self._drop_finished()

    def _admit(self, ticket: Ticket, *, later: bool = False) -> None:
        self._cancel_timer(ticket)
        ticket.state = "holding"
        self._count(in_flight=1)
        _holders[ticket.key] = ticket
        if self.hold_s:
            ticket.timer = self.call_later(self.hold_s, ticket.release)
        if later:  # from a release: the releasing caller's work is not the admitted one's
            self.call_later(0, ticket.start, ticket)
        else:
            ticket.start(ticket)

    def _release(self, ticket: Ticket) -> None:
        state, ticket.state = ticket.state, "done"
        if state == "holding":
            self._count(in_flight=-1)
            if _holders.get(ticket.key) is ticket:
                del _holders[ticket.key]
            self._cancel_timer(ticket)
            self._admit_waiting()
        elif state == "waiting":
            self._cancel_timer(ticket)
            self._count(waiting=-1)
            self._drop_finished()

    @staticmethod
    def _cancel_timer(ticket: Ticket) -> None:
        timer, ticket.timer = ticket.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _drop_finished(self) -> None:
        queue = self.queue
        while queue and queue[0].state != "waiting":
            queue.popleft()

    def _admit_waiting(self) -> None:
        if self.in_flight > self.low_water:
            return
        queue = self.queue
        while self.in_flight < self.limit and queue:
            ticket = queue.popleft()
            if ticket.state == "waiting":
                self._count(waiting=-1)
                self._admit(ticket, later=True)


def release_for(send: Any) -> None:
    """The hub connection whose ASGI ``send`` this is is registered (or ended): its slot is
    free. Nothing happens for a connection that holds none (another server, a test's
    communicator, a slot already given back).

    The connection is found by its Twisted transport: through daphne's protocol for a
    socket daphne serves, or as the ``admission_key`` of the object whose bound method
    ``send`` is (the front's own hub sockets, ``agents_app.hub_socket``)."""
    transport = client_transport(daphne_protocol(send)) or getattr(
        getattr(send, "__self__", None), "admission_key", None
    )
    if transport is not None:
        ticket = _holders.get(transport)
        if ticket is not None:
            ticket.release()
