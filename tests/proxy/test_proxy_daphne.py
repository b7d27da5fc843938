"""The session proxy end to end over a real daphne process and a real upstream process.

On the portal's prefix, as API clients use it (``Authorization`` header); the browser's way
in, the session's own origin, is ``test_proxy_session_origin.py``. Direct mode: page load, large download with the control plane's memory measured, upload,
WebSocket echo (text, binary, subprotocols, close codes both ways), redirects and cookies,
502/504, Origin checks, back-pressure against a slow reader, and hostile input on raw
sockets. Tunnel mode (``test_proxy_tunnel.py``) repeats the data-path checks through
``agent_runtime.tunnel.run_tunnel``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.proxy.conftest import (
    assert_echoes_text_and_binary,
    bearer,
    cookie_header,
    make_session,
    raw_request,
    status_of,
    ws_url,
)
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024


@pytest.fixture
def viewer(daphne, session, alice):
    """An API client's httpx client (bearer), and the session's proxy base URL."""
    client = httpx.Client(base_url=daphne.base, headers={"Authorization": bearer(alice)}, timeout=30)
    yield client, f"/api/v1/http/{session.pk}"
    client.close()


def test_page_load_and_redirect_rewrites(viewer):
    client, base = viewer
    page = client.get(f"{base}/")
    assert page.status_code == 200
    assert b"session page" in page.content
    assert page.headers["content-type"].startswith("text/html")
    relative = client.get(f"{base}/redirect")
    assert relative.status_code == 302 and relative.headers["location"] == f"{base}/target?x=1"
    absolute = client.get(f"{base}/redirect-absolute")
    assert absolute.headers["location"] == f"{base}/target"
    external = client.get(f"{base}/redirect-external")
    assert external.headers["location"] == "https://example.org/elsewhere"
    cookies = client.get(f"{base}/cookies").headers.get_list("set-cookie")
    assert f"app=1; Path={base}/; HttpOnly" in cookies
    assert f"deep=2; Path={base}/sub" in cookies
    assert not any(c.startswith(("sessionid=", "streamspace_viewer=")) for c in cookies)


def test_large_download_streams_with_flat_memory(viewer, daphne):
    client, base = viewer
    size = 256 * MIB
    before = daphne.rss_kib()
    peak = before
    received = 0
    with client.stream("GET", f"{base}/bytes", params={"size": size}) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == size
        for chunk in response.iter_raw(1 * MIB):
            received += len(chunk)
            if received % (32 * MIB) < len(chunk):
                peak = max(peak, daphne.rss_kib())
    assert received == size
    growth_mib = (peak - before) / 1024
    assert growth_mib < 64, f"daphne grew by {growth_mib:.0f} MiB while streaming {size // MIB} MiB"


def test_slow_reader_does_not_make_the_proxy_buffer(daphne, session, alice):
    """A client that stops reading: the proxy stops reading the session (back-pressure)."""
    before = daphne.rss_kib()
    sock = socket.create_connection(("127.0.0.1", daphne.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    request = (
        f"GET /api/v1/http/{session.pk}/bytes?size={400 * MIB} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {bearer(alice)}\r\n\r\n"
    )
    sock.sendall(request.encode())
    sock.recv(65536)  # the headers arrived: the response is streaming; now stop reading
    deadline = time.monotonic() + 3
    peak = before
    while time.monotonic() < deadline:
        peak = max(peak, daphne.rss_kib())
        time.sleep(0.1)
    sock.close()
    assert (peak - before) / 1024 < 48, f"daphne buffered {(peak - before) / 1024:.0f} MiB for a stalled reader"


def test_upload_streams_to_the_session(viewer):
    client, base = viewer
    payload = os.urandom(MIB) * 48

    def chunks():
        for i in range(0, len(payload), 256 * 1024):
            yield payload[i : i + 256 * 1024]

    reply = client.post(f"{base}/upload", content=chunks())
    assert reply.status_code == 200
    assert reply.json() == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    fixed = client.put(f"{base}/upload", content=b"abc")
    assert fixed.json()["length"] == 3


def test_methods_and_query_pass_through(viewer):
    client, base = viewer
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        reply = client.request(method, f"{base}/echo/a%20b/c", params={"q": "1 2"})
        assert reply.status_code == 200, method
        seen = reply.json()
        assert seen["method"] == method
        assert seen["path"] == "/echo/a%20b/c"
        assert seen["query"] == "q=1+2"
    head = client.head(f"{base}/bytes", params={"size": 1000})
    assert head.status_code == 200 and head.content == b""


def test_websocket_echo_subprotocol_and_close_codes(daphne, session, alice, upstream_port):
    headers = {"Authorization": bearer(alice)}
    with ws_connect(ws_url(daphne, session), additional_headers=headers, subprotocols=["superchat"]) as ws:
        assert ws.subprotocol == "superchat"
        assert_echoes_text_and_binary(ws)
        ws.send("!stream 50 65536")
        total = sum(len(ws.recv(timeout=5)) for _ in range(50))
        assert total == 50 * 65536
        ws.send("!close 4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4001

    with ws_connect(ws_url(daphne, session), additional_headers=headers) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        ws.close(4002)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if 4002 in httpx.get(f"http://127.0.0.1:{upstream_port}/ws-closes").json():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the session never saw close code 4002")


def test_websocket_refusals(daphne, session, alice, bob):
    url = ws_url(daphne, session)
    for headers in (
        {},  # anonymous
        {"Cookie": cookie_header(session, alice)},  # a viewer cookie is the session origin's, not the prefix's
        {"Authorization": bearer(bob)},  # no right
        {"Authorization": bearer(alice), "Origin": "http://evil.example"},  # cross-site
    ):
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(url, additional_headers=headers, open_timeout=5)
        assert refused.value.response.status_code == 403
    with ws_connect(
        url, additional_headers={"Authorization": bearer(alice), "Origin": f"http://127.0.0.1:{daphne.port}"}
    ) as ws:
        ws.send("same-site")
        assert ws.recv(timeout=5) == "same-site"


def test_upstream_down_502_and_slow_504(daphne, alice, template, docker_agent):
    dead = make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{free_port()}")
    docker_agent.proxy_mode = "direct"
    docker_agent.save(update_fields=["proxy_mode"])
    reply = httpx.get(
        f"{daphne.base}/api/v1/http/{dead.pk}/", headers={"Authorization": bearer(alice), "Accept": "text/html"}
    )
    assert reply.status_code == 502
    assert b"not answering" in reply.content


def test_slow_upstream_gets_504(viewer):
    client, base = viewer
    started = time.monotonic()
    reply = client.get(f"{base}/slow", params={"s": 10})
    assert reply.status_code == 504
    assert reply.json()["code"] == "upstream_timeout"
    assert time.monotonic() - started < 8


@pytest.mark.parametrize(
    "path",
    [
        "/../{other}/echo",
        "/%2e%2e/{other}/echo",
        "/%2E%2E%2F{other}%2Fecho",
        "/echo/..%2f..%2f{other}",
        "/echo/%252e%252e/x",
        "/echo/%5c..%5cx",
        "/echo/%00",
        "/echo/%0d%0aX-Injected:%201",
        "/./echo",
    ],
)
def test_hostile_paths_are_refused(daphne, session, alice, template, docker_agent, path):
    other = make_session(alice, template, docker_agent, endpoint="127.0.0.1:9")
    target = f"/api/v1/http/{session.pk}" + path.format(other=other.pk)
    reply = raw_request(
        daphne.port,
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer(alice)}\r\n\r\n".encode(),
    )
    assert status_of(reply) == 400, reply[:200]


def test_prefix_escapes_never_reach_another_host(daphne, session, alice):
    authorization = bearer(alice)
    # A path that looks like an authority stays a path on this session's upstream.
    reply = httpx.get(
        f"{daphne.base}/api/v1/http/{session.pk}/echo//127.0.0.1:1/x", headers={"Authorization": authorization}
    )
    assert reply.status_code == 200 and reply.json()["path"] == "/echo//127.0.0.1:1/x"
    reply = httpx.get(
        f"{daphne.base}/api/v1/http/{session.pk}/echo/@evil.example/", headers={"Authorization": authorization}
    )
    assert reply.status_code == 200 and reply.json()["path"] == "/echo/@evil.example/"
    # Absolute-form request targets are not proxy paths at all.
    absolute = raw_request(
        daphne.port,
        f"GET http://evil.example/api/v1/http/{session.pk}/echo HTTP/1.1\r\nHost: evil.example\r\nAuthorization: {authorization}\r\n\r\n".encode(),
    )
    assert 400 <= status_of(absolute) < 500
    # An encoded CRLF in the query stays encoded: no header is injected upstream.
    reply = httpx.get(
        f"{daphne.base}/api/v1/http/{session.pk}/echo?x=%0d%0aX-Injected:%201", headers={"Authorization": authorization}
    )
    assert reply.status_code == 200
    assert "x-injected" not in {k.lower() for k, _ in reply.json()["headers"]}


def test_oversized_and_malformed_headers(daphne, session, alice):
    authorization = bearer(alice)
    huge = "a" * (128 * 1024)
    reply = raw_request(
        daphne.port,
        f"GET /api/v1/http/{session.pk}/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nX-Big: {huge}\r\n\r\n".encode(),
    )
    assert not (200 <= status_of(reply) < 300)
    many = "".join(f"X-H{i}: v\r\n" for i in range(1000))
    reply = raw_request(
        daphne.port,
        f"GET /api/v1/http/{session.pk}/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n{many}\r\n".encode(),
    )
    assert not (200 <= status_of(reply) < 300)
    bare = raw_request(
        daphne.port, f"GET /api/v1/http/{session.pk}/echo HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n".encode()
    )
    assert 400 <= status_of(bare) < 500 or bare == b""


def test_slowloris_clients_do_not_starve_others(daphne, session, alice):
    """Clients dribbling headers hold a socket each, nothing more; others are served at once."""
    stop_event = threading.Event()
    sockets = []
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", daphne.port))
        sock.sendall(f"GET /api/v1/http/{session.pk}/echo HTTP/1.1\r\nHost: x\r\n".encode())
        sockets.append(sock)

    def dribble():
        while not stop_event.wait(0.5):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-a: b\r\n")

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        reply = httpx.get(f"{daphne.base}/api/v1/http/{session.pk}/small", headers={"Authorization": bearer(alice)})
        assert reply.status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        stop_event.set()
        thread.join()
        for sock in sockets:
            sock.close()


def test_status_endpoint_and_waking_page_over_http(daphne, alice, template, docker_agent, upstream_port):
    from sessions_app.models import Session, SessionState

    asleep = make_session(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    authorization = bearer(alice)
    page = httpx.get(
        f"{daphne.base}/api/v1/http/{asleep.pk}/", headers={"Authorization": authorization, "Accept": "text/html"}
    )
    assert page.status_code == 503 and b"waking up" in page.content
    assert Session.objects.get(pk=asleep.pk).state == SessionState.WAKING
    status = httpx.get(
        f"{daphne.base}/api/v1/http/{asleep.pk}/.streamspace/status", headers={"Authorization": authorization}
    )
    assert status.json()["state"] == "waking"
    assert json.loads(status.content)["ready"] is False
