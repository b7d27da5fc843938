"""Start the control plane's daphne, tuned: ``python -m streamspace.serve <daphne's arguments>``.

The arguments are daphne's own (``daphne --help``); what this adds needs no configuration
and is measured in bench/RESULTS.md ("Proxy"):

* **uvloop.** daphne runs Twisted's asyncio reactor on a loop it creates when
  ``daphne.server`` is first imported (``asyncio.new_event_loop()``), so the event-loop
  policy in force at that moment decides which loop serves every request. uvloop's policy
  is installed before that import. Without uvloop (not installed, or a platform it does
  not support) daphne runs on asyncio's default loop and says so on stderr.
* **A frozen heap, a larger young generation.** Once the application is loaded,
  everything allocated so far (Django, DRF, the URL resolvers) is moved out of the cyclic
  garbage collector's reach with ``gc.freeze()``, and the young generation may hold
  100,000 objects before it is collected (CPython: 700). With the defaults, the objects
  daphne keeps for each finished request until its once-a-second sweep are promoted again
  and again and push repeated full collections of the whole heap under load, which find
  nothing. Cycles are still collected (startup's leftovers before the freeze).
* **The access log's timestamp formatted once a second** rather than for every line
  (``strftime`` per line is a visible share of daphne's CPU under load); the lines are daphne's, except that
  secrets in a query string (the viewer's ``?token=``, anything ``streamspace.logredact``
  masks) are written as ``[REDACTED]``. daphne writes its access log straight to a stream,
  past the logging filters of ``settings.LOGGING``, so the masking happens here, for the
  lines of daphne's own protocols and of the proxy's front alike.
* **The proxy's HTTP front** (``streamspace.front``): every connection starts with a lean
  HTTP/1.1 reader that serves well-formed ``/api/v1/http/`` requests itself (same ASGI
  application, without daphne's per-request Twisted ``Request``, queue and partials),
  pipes WebSockets the session accepts as bytes and closes connections that do not send
  a request head within ``STREAMSPACE_PROXY_HEAD_TIMEOUT_S``; anything else is handed to
  daphne's own HTTP protocol with the bytes received so far. Agents' hub handshakes are
  let through at most ``STREAMSPACE_HUB_ADMISSION`` at a time until they are registered
  (:mod:`streamspace.transport.admission`), so a reconnect herd's first agents register first,
  and their WebSockets are served by the front (``agents_app.hub_socket``), not by autobahn.
  ``STREAMSPACE_PROXY_FRONT=0`` leaves every request to daphne.
* **One client-address rule.** daphne's ``--proxy-headers`` believes the leftmost
  ``X-Forwarded-For`` entry from anyone, which the client writes. Under this launcher
  daphne's HTTP and WebSocket protocols (and the front) resolve the client with
  :mod:`streamspace.api.client_ip` instead: forwarded headers count only when the peer is
  in ``STREAMSPACE_TRUSTED_PROXIES``, and the rightmost untrusted address wins, with or
  without ``--proxy-headers``. The scope's ``client`` and the access log carry that address.
* **WebSocket handshakes wait as long as agents do.** daphne closes a handshake the
  application has not accepted within ``--websocket_connect_timeout`` (its default: 5 s);
  an agent waits 10 s for its handshake (``agent_runtime/connection.py``). Unless the
  option is given, it is set to :data:`WEBSOCKET_CONNECT_TIMEOUT_S`, so a handshake queued
  behind a reconnect herd is answered rather than dropped, retried and done twice.
* **A listen backlog for a herd.** Twisted listens with a backlog of 50: when a replica
  dies and its agents connect here at once, connections beyond it wait in SYN retransmits
  (1 s, then 3 s). Every TCP endpoint (``-b``/``-p``, ``-e tcp:...``) without a
  ``backlog=`` gets :data:`LISTEN_BACKLOG` (the kernel caps it at ``net.core.somaxconn``).
* **No WebSocket settings formatted for nothing.** autobahn formats every new
  WebSocket's settings for a debug line; they are formatted only if the line is written.
* **No discarded log line.** At verbosity 0 and 1 daphne sends Twisted's log nowhere,
  but Twisted's HTTP factory still formats a combined-log line for every request to
  write there. That write is skipped (daphne's own access log is unchanged; at ``-v 2``
  and up Twisted's line is written).

Every daphne name this uses comes from :mod:`streamspace.transport.daphne_internals`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from typing import Any

from streamspace.api.client_ip import forwarded_address
from streamspace.env import envbool
from streamspace.logredact import redact
from streamspace.transport.daphne_internals import (  # imports nothing of daphne's server
    AccessLogGenerator,
    command_line,
    lazy_autobahn_settings_log,
    server_class,
    use_forwarded_address,
    use_http_factory,
)

logger = logging.getLogger("streamspace.serve")

# The young generation's collection threshold once the heap is frozen (CPython's default
# is 700). daphne keeps every finished request's objects (request, task, scope) until its
# once-a-second sweep (``Server.application_checker``), so a second's worth of requests is
# alive at any time; a young generation smaller than that promotes all of them and then
# collects them again as old. 100,000 holds a few thousand requests a second, so young
# collections stay rare under load; each still frees whatever cycles there are. An HTTP
# request leaves none (``transport.django_asgi.release``): a pass over 100,000 objects
# holds the GIL long enough to show in the latency of every request in flight.
YOUNG_GC_THRESHOLD = 100_000

# The listen backlog of daphne's TCP endpoints: a reconnect herd's connections queue in the
# kernel instead of being dropped at the SYN.
LISTEN_BACKLOG = 2048

# How long daphne lets a WebSocket handshake wait for the application's accept: the
# agent's own handshake timeout (agent_runtime/connection.py, ``open_timeout``).
WEBSOCKET_CONNECT_TIMEOUT_S = 10


def install_uvloop() -> bool:
    """Make uvloop the event-loop policy for the loop daphne creates; False if unavailable.

    Must run before ``daphne.server`` is imported: the loop is made at import time.
    """
    if "daphne.server" in sys.modules:
        raise RuntimeError("install_uvloop() must run before daphne.server is imported")
    try:
        import uvloop  # noqa: PLC0415 optional: daphne runs without it
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def freeze_heap() -> None:
    """Move every object alive now out of the collector's sight; collect the young more rarely."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


class AccessLog(AccessLogGenerator):
    """daphne's access log, line for line, with secrets in query strings masked; the timestamp
    is formatted once a second."""

    _second = -1
    _stamp = ""

    def __call__(self, protocol: str, action: str, details: dict) -> None:
        path = details.get("path")
        if path and "?" in path:  # only a query string carries secrets in the URLs we issue
            details = {**details, "path": redact(path)}
        if protocol != "http" or action != "complete":
            return super().__call__(protocol, action, details)
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(now))
        status, size = details["status"] or "-", details["size"] or "-"
        self.stream.write(
            f'{details["client"]} - - [{self._stamp}] "{details["method"]} {details["path"]}" {status} {size}\n'
        )
        return None


def _server_class() -> type:
    Server = server_class()
    from twisted.internet import reactor  # noqa: PLC0415 daphne.server (just imported) installs it

    class TunedServer(Server):
        """daphne's server, tuned once the reactor runs (the application is loaded by then)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.endpoints = [with_backlog(description) for description in self.endpoints]
            install_client_address(self)
            if type(self.action_logger) is AccessLogGenerator:
                self.action_logger = AccessLog(self.action_logger.stream)

        def run(self) -> None:
            reactor.callWhenRunning(self.before_serving)
            if front_enabled():
                from streamspace.front.protocol import FrontFactory  # noqa: PLC0415 needs the application loaded

                use_http_factory(FrontFactory)
            super().run()

        def before_serving(self) -> None:
            lazy_autobahn_settings_log()
            if self.verbosity <= 1:
                # daphne discards Twisted's log at this verbosity (Server.run): do not format
                # a line per request for it. Shadows Twisted's HTTPFactory.log on this instance.
                self.http_factory.log = _discard
            freeze_heap()

    return TunedServer


def install_client_address(server: Any) -> None:
    """Make daphne resolve every connection's client with :mod:`streamspace.api.client_ip`.

    daphne's protocols call the module-level name ``parse_x_forwarded_for`` they imported
    whenever the server has a forwarded-address header name; both are set here, so the
    trust rule applies whether or not ``--proxy-headers`` was given (without trusted
    proxies it returns the peer unchanged).
    """
    use_forwarded_address(forwarded_address)
    server.proxy_forwarded_address_header = "X-Forwarded-For"
    server.proxy_forwarded_port_header = None  # the client's port is not known behind a proxy
    server.proxy_forwarded_proto_header = "X-Forwarded-Proto"


def front_enabled() -> bool:
    """``STREAMSPACE_PROXY_FRONT`` (default on): serve proxy requests through the lean front."""
    return envbool("STREAMSPACE_PROXY_FRONT", True)


def _discard(request: object) -> None:
    return None


def main(argv: list[str] | None = None) -> None:
    """Install uvloop when available, then run daphne's command line with ``argv``."""
    if not install_uvloop():
        # Logging is not configured yet (daphne does that from its -v option): logging's
        # last-resort handler prints warnings to stderr, which is where this belongs.
        logger.warning("uvloop is not installed: daphne runs on asyncio's default event loop")
    cli = command_line()
    cli.server_class = _server_class()
    cli.run(with_defaults(sys.argv[1:] if argv is None else argv))


def with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """A Twisted endpoint description with ``backlog`` when it is TCP and names none."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6") or ":backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def with_defaults(argv: list[str]) -> list[str]:
    """daphne's arguments with this launcher's defaults for options ``argv`` does not give."""
    if any(arg.startswith("--websocket_connect_timeout") for arg in argv):
        return argv
    return ["--websocket_connect_timeout", str(WEBSOCKET_CONNECT_TIMEOUT_S), *argv]


if __name__ == "__main__":
    main()
