"""The proxy's front: a lean HTTP/1.1 server ahead of daphne's own, for the session proxy.

Under ``python -m streamspace.serve`` every connection daphne accepts starts with the
front, which serves the proxy's common requests without daphne's per-request machinery and
hands everything else to daphne with the bytes received so far:

* :mod:`.protocol` — the Twisted protocol and factory: frames request heads, enforces the
  head deadline and the idle timeout, hands connections over to daphne;
* :mod:`.head` — parses a head with llhttp (``httptools``) into one
  :class:`~.handlers.RequestHead`, or says the request is daphne's;
* :mod:`.handlers` — the contract between the connection and its handlers;
* :mod:`.exchange` — the handler for an HTTP request: the ASGI ``receive`` / ``send`` of
  the application, the response written as daphne would;
* :mod:`.pipe` — the handler for a browser's WebSocket handshake: piped to the session as
  bytes once it answers 101.

The third handler, for agents' tunnel sockets, is ``agents_app.agent_socket.AgentSocket``
(a lower layer: it satisfies :class:`~.handlers.FrontHandler` without importing this
package).

What the front expects of the proxy's ASGI path (``sessions_app.proxy``): the ASGI
application (daphne's ``server.application``) serves the requests the front parsed with
the scope daphne would build; the pipe reuses that package's authorization, path parsing,
header rewriting, upstream routing and activity tracking, so a piped WebSocket gets the
decisions the ASGI WebSocket app would make; and ``paths.PREFIX_BYTES`` says which
requests are the proxy's. Every use of daphne and of Twisted's private names goes through
``streamspace.transport.daphne_internals``.
"""
