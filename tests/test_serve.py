"""``python -m streamspace.serve``: daphne on uvloop with a frozen heap, and the fallback."""

from __future__ import annotations

import datetime
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streamspace import serve
from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import serve_command, start_daphne, stop


def run_probe(tmp_path, *args: str, env: dict[str, str] | None = None) -> tuple[dict, str, int]:
    """Start the launcher on the probe app; its report, its stderr and its exit status."""
    port = free_port()
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            serve_command(port, *args, app="tests.serve_probe_app:application"),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_for_port(port, process, timeout=30)
            report = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()
        finally:
            stop(process)
    return report, stderr.read_text(), process.returncode


def test_daphne_runs_on_uvloop_with_a_frozen_heap(tmp_path):
    report, _, status = run_probe(tmp_path)
    assert report["loop"] == "uvloop.Loop"
    assert report["reactor_loop_is_running_loop"]  # Twisted's reactor runs on that same loop
    assert report["frozen"] > 10_000  # Django and daphne, frozen once loaded
    assert report["young_threshold"] == serve.YOUNG_GC_THRESHOLD
    assert report["twisted_log_skipped"]
    assert status == 0  # SIGTERM still stops it cleanly


def test_the_proxy_front_listens_unless_turned_off(tmp_path):
    report, _, _ = run_probe(tmp_path)
    assert report["factory"] == ["streamspace.front.protocol.FrontFactory"]
    report, _, _ = run_probe(tmp_path, env={"STREAMSPACE_PROXY_FRONT": "0"})
    assert report["factory"] == ["daphne.http_protocol.HTTPFactory"]


def test_connections_without_a_complete_head_in_time_are_closed():
    """STREAMSPACE_PROXY_HEAD_TIMEOUT_S set low: silent, proxy-bound and daphne-bound slow heads all end."""
    server = start_daphne({"STREAMSPACE_PROXY_HEAD_TIMEOUT_S": "1"})
    starts = [b"", b"GET /api/v1/http/x/ HTTP/1.1\r\nHost: a\r\n", b"GET /api/v1/sessions HTTP/1.1\r\nHost: a\r\n"]
    socks = []
    try:
        started = time.monotonic()
        for data in starts:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            socks.append(sock)
            sock.sendall(data)
        for sock in socks:
            assert sock.recv(1024) == b""  # closed, nothing answered
        assert 0.9 <= time.monotonic() - started < 5
    finally:
        for sock in socks:
            sock.close()
        stop(server.process)


def test_twisted_log_line_kept_at_verbosity_2(tmp_path):
    report, _, _ = run_probe(tmp_path, "-v", "2")
    assert report["loop"] == "uvloop.Loop" and not report["twisted_log_skipped"]


def test_without_uvloop_daphne_runs_on_asyncio_and_says_so(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    report, stderr, status = run_probe(tmp_path, env={"PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"})
    assert report["loop"].startswith("asyncio.") and report["reactor_loop_is_running_loop"]
    assert "uvloop is not installed: daphne runs on asyncio's default event loop" in stderr
    assert report["frozen"] > 10_000 and status == 0


def test_install_uvloop_refuses_after_daphne_server(monkeypatch):
    monkeypatch.setitem(sys.modules, "daphne.server", object())
    with pytest.raises(RuntimeError):
        serve.install_uvloop()


@pytest.mark.parametrize(
    "details",
    [
        {"client": "10.0.0.1:5000", "method": "GET", "path": "/api/v1/http/x/a?b=1", "status": 200, "size": 13},
        {"client": None, "method": "POST", "path": "/", "status": 0, "size": 0},
    ],
)
def test_access_log_lines_are_daphnes(monkeypatch, details):
    """The same line as daphne's AccessLogGenerator, for HTTP requests and everything else."""
    from daphne import access

    moment = datetime.datetime(2026, 12, 6, 23, 59, 58, 123456)
    monkeypatch.setattr(access, "datetime", type("D", (), {"datetime": type("N", (), {"now": lambda: moment})}))
    monkeypatch.setattr(serve.time, "time", lambda: moment.timestamp())
    theirs, ours = io.StringIO(), io.StringIO()
    for protocol, action in (("http", "complete"), ("websocket", "connected"), ("websocket", "disconnected")):
        access.AccessLogGenerator(theirs)(protocol, action, details)
        serve.AccessLog(ours)(protocol, action, details)
    assert ours.getvalue() == theirs.getvalue()
    assert ours.getvalue().count("\n") == 3


@pytest.mark.parametrize("front", ["1", "0"])
def test_access_log_masks_viewer_tokens(tmp_path, front):
    """daphne writes its access log past the logging filters: the launcher masks query secrets,
    on the proxy's front and on daphne's own HTTP protocol."""
    access_log = tmp_path / "access.log"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamspace.serve", "--access-log", str(access_log), "-b", "127.0.0.1", "-p", str(port)]
        + ["tests.serve_probe_app:application"],
        cwd=ROOT,
        env={**os.environ, "STREAMSPACE_PROXY_FRONT": front},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    secret = "eyJzIjoiYWJjIiwidSI6MX0:1tSeCrEt:viewer-signature-value"
    paths = [
        f"/api/v1/http/2b7e1516-28ae-4d2a-a6d2-abf715880c4f/?token={secret}",
        f"/api/v1/http/2b7e1516-28ae-4d2a-a6d2-abf715880c4f/app.js?a=1&token={secret}&b=2",
        f"/portal/?next=/x&api_key={secret}",
    ]
    try:
        wait_for_port(port, process, timeout=30)
        for path in paths:
            assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code == 200
    finally:
        stop(process)
    text = access_log.read_text()
    assert text.count("\n") == len(paths), text
    assert "1tSeCrEt" not in text
    assert '"GET /api/v1/http/2b7e1516-28ae-4d2a-a6d2-abf715880c4f/?token=[REDACTED]" 200' in text
    assert "/app.js?a=1&token=[REDACTED]&b=2" in text
    assert "/portal/?next=/x&api_key=[REDACTED]" in text


def test_tcp_endpoints_get_a_listen_backlog_unless_they_name_one():
    from streamspace.serve import LISTEN_BACKLOG, with_backlog

    assert (
        with_backlog("tcp:port=8000:interface=127.0.0.1")
        == f"tcp:port=8000:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
    )
    assert with_backlog("tcp6:port=8000:interface=\\:\\:1").endswith(f":backlog={LISTEN_BACKLOG}")
    assert with_backlog("tcp:port=8000:backlog=64") == "tcp:port=8000:backlog=64"
    assert with_backlog("unix:/run/streamspace.sock") == "unix:/run/streamspace.sock"


def test_daphne_listens_with_the_backlog():
    """The running server's listening socket has the backlog (``ss`` shows it as Send-Q)."""
    from streamspace.serve import LISTEN_BACKLOG
    from tests.support.processes import start_daphne, stop

    server = start_daphne()
    try:
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listening[2]) == min(LISTEN_BACKLOG, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    finally:
        stop(server.process)
