"""Request heads on the front: parsed by llhttp (``httptools``), then checked against what the front serves.

llhttp, in the strict mode httptools runs it in, decides whether a head is well-formed
HTTP/1.1: the request line, the method, the target's characters, header names and
values, CRLF line ends (no bare LF or CR, no obs-fold), Content-Length's syntax and
uniqueness, Content-Length together with Transfer-Encoding, keep-alive and upgrade. A head
it refuses is daphne's: the connection is handed over with the bytes received and daphne
(Twisted's parser) answers it, 400 for a malformed head. So a request is proxied only on a
reading of its head that llhttp and daphne share, never on an ambiguous one (request
smuggling needs two parsers that disagree about where a request ends).

On top of that, :func:`parse` keeps for the front only the requests it answers exactly as
daphne would, and raises :class:`NotServed` for the rest (daphne's too):

* HTTP/1.1, a target in origin form under ``/api/v1/http/`` (or the agents' tunnel or hub
  path, when the front has a handler for it);
* a ``Content-Length`` body or none: no ``Transfer-Encoding``, no ``Expect``;
* header values daphne accepts (``INVALID_HEADER_VALUE_BYTES``, which llhttp allows as
  obs-text) and at most ``MAX_HEADERS`` header lines;
* no upgrade, except a WebSocket handshake (``GET``, no body) that a handler takes.

The scope is the one daphne builds: header names lowercased, values without surrounding
whitespace, headers whose name has ``_`` dropped, ``Daphne-Root-Path`` taken as the root
path, and client and scheme from ``X-Forwarded-*`` when daphne is told to trust them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from agent_runtime.protocol import CONNECT_PATH, TUNNEL_PATH
from sessions_app.files.paths import TARGET_RE as FILES_TARGET
from sessions_app.proxy.origins import session_id_for_host
from sessions_app.proxy.paths import PREFIX_BYTES
from streamspace.api.client_ip import forwarded_address
from streamspace.front.exchange import Exchange
from streamspace.front.handlers import RequestHead
from streamspace.transport.daphne_internals import INVALID_HEADER_VALUE_BYTES

if TYPE_CHECKING:
    from streamspace.front.protocol import FrontProtocol

MAX_HEADERS = 100  # header lines; a head with more is daphne's (Twisted allows 500, then refuses)
TUNNEL_BYTES = TUNNEL_PATH.encode()
CONNECT_BYTES = CONNECT_PATH.encode()
_DAPHNE_REFUSES = re.compile(b"[" + re.escape(bytes(sorted(INVALID_HEADER_VALUE_BYTES))) + b"]")
_PUNTED_HEADERS = frozenset({b"transfer-encoding", b"expect"})


class NotServed(Exception):
    """The request is daphne's: the connection is handed over with the bytes received."""


class _Reader:
    """llhttp's callbacks for one head: the target, the header lines, what the head says."""

    __slots__ = ("parser", "target", "headers", "complete", "keep_alive", "upgrade")

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.keep_alive = self.upgrade = False
        self.parser: HttpRequestParser | None = HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete += 1
        parser = self.parser
        self.keep_alive = parser.should_keep_alive()  # only accurate here, before the message ends
        self.upgrade = parser.should_upgrade()


def _on_session_host(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's ``Host`` is a session's own origin (``<session-id>.<domain>``):
    every path there is the session's, as the ASGI routing decides it too."""
    for name, value in headers:
        if name.lower() == b"host":
            return session_id_for_host(value.strip(b" \t")) is not None
    return False


def parse(raw: bytes, front: FrontProtocol) -> RequestHead:
    """The head ``raw`` (through its blank line) as the front serves it; :class:`NotServed` if daphne's."""
    if _DAPHNE_REFUSES.search(raw) is not None:
        raise NotServed("a header value daphne refuses")
    reader = _Reader()
    parser = reader.parser
    try:
        parser.feed_data(raw)
    except HttpParserUpgrade:
        pass  # the head is complete; what follows is not HTTP (decided below)
    except HttpParserError as exc:
        raise NotServed(f"llhttp: {exc}") from None
    finally:
        reader.parser = None  # no reference cycle per request
    if reader.complete != 1:
        raise NotServed("llhttp does not end the head at its blank line")
    if parser.get_http_version() != "1.1":
        raise NotServed("not HTTP/1.1")
    if len(reader.headers) > MAX_HEADERS:
        raise NotServed("too many header lines")
    target = reader.target
    factory = front.factory
    tunnel = target.startswith(TUNNEL_BYTES)
    hub = target.partition(b"?")[0] == CONNECT_BYTES and factory.hub_socket is not None
    files = FILES_TARGET.match(target) is not None  # session files stream both ways (§23)
    if not (
        target.startswith(PREFIX_BYTES)
        or files
        or (tunnel and factory.tunnel_socket is not None)
        or hub
        or (target.startswith(b"/") and _on_session_host(reader.headers))
    ):
        raise NotServed("not a path or host the front serves")
    method = parser.get_method()
    server = front.server
    headers = []
    length = 0
    websocket = connection_upgrade = False
    root_path = server.root_path
    for name, value in reader.headers:
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            length = int(value)  # llhttp: digits only, one Content-Length, no Transfer-Encoding
        elif name in _PUNTED_HEADERS:
            raise NotServed(f"{name.decode()} is daphne's")
        elif name == b"upgrade":
            if websocket or value.lower() != b"websocket":
                raise NotServed("an upgrade other than one WebSocket")
            websocket = True
        elif name == b"connection" and b"upgrade" in value.lower():
            connection_upgrade = True
        if b"_" in name:  # daphne drops these (CVE-2015-0219)
            continue
        if name == b"daphne-root-path":
            try:
                root_path = unquote(value.decode("ascii"))
            except UnicodeDecodeError:
                raise NotServed("a root path daphne cannot read") from None
            continue
        headers.append((name, value))
    client, scheme = front.client, front.scheme
    if server.proxy_forwarded_address_header:
        try:  # every X-Forwarded-For line counts: the trusted proxy's is the last one
            client, scheme = forwarded_address(
                headers,
                server.proxy_forwarded_address_header,
                server.proxy_forwarded_port_header,
                server.proxy_forwarded_proto_header,
                client,
                scheme,
            )
        except UnicodeDecodeError:
            raise NotServed("X-Forwarded-* daphne cannot read") from None
    if files and (websocket or connection_upgrade or reader.upgrade):
        raise NotServed("the files endpoint takes no upgrade")
    if websocket or connection_upgrade or reader.upgrade or tunnel or hub:
        # A WebSocket handshake (GET, no body) may go to its handler; any other upgrade is
        # daphne's, and so is anything but a WebSocket handshake on the tunnel and hub paths.
        handler = factory.tunnel_socket if tunnel else factory.hub_socket if hub else factory.websocket_pipe
        if not (websocket and reader.upgrade) or method != b"GET" or length or handler is None:
            raise NotServed("not a WebSocket handshake the front takes")
    else:
        handler = Exchange
    raw_path, _, query = target.partition(b"?")
    try:
        path = unquote(raw_path.decode("ascii"))
    except UnicodeDecodeError:  # llhttp refuses non-ASCII targets; daphne answers 400
        raise NotServed("a target daphne cannot read") from None
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.decode("ascii"),
        "path": path,
        "raw_path": raw_path,
        "root_path": root_path,
        "scheme": scheme,
        "query_string": query,
        "headers": headers,
        "client": client,
        "server": front.server_addr,
    }
    if handler is not Exchange:  # daphne's WebSocket scope: no method, ws/wss, the offered subprotocols
        del scope["method"]
        scope["type"], scope["scheme"] = "websocket", "wss" if scheme == "https" else "ws"
        scope["subprotocols"] = [
            part.strip().decode("latin-1")
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for part in value.split(b",")
            if part.strip()
        ]
    return RequestHead(method, target, scope, length, not reader.keep_alive, raw, handler)
