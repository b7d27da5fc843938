"""Debian's nginx run as a test's own process with the compose config
(``deploy/nginx/streamspace.conf``): the same affinity, WebSocket and failover rules, with the
compose replicas' names replaced by local ports (one ``server`` line per replica)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port

CONF = ROOT / "deploy" / "nginx" / "streamspace.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_SERVER = re.compile(r"^(\s*)server control-plane-1:8000( [^;]*);\n", re.MULTILINE)


def write_config(tmp: Path, listen: int, upstreams: Sequence[int]) -> Path:
    """The compose config with its upstream block listing ``upstreams`` (ports on 127.0.0.1,
    each with the compose replicas' ``server`` parameters), listening on ``listen``, inside a
    minimal http {}; returns the main config file."""
    conf = CONF.read_text()
    match = _SERVER.search(conf)
    assert match, "deploy/nginx/streamspace.conf has no `server control-plane-1:8000 ...;` line"
    indent, params = match.groups()
    conf = re.sub(r"^\s*server control-plane-\d+:8000[^;]*;\n", "", conf, flags=re.MULTILINE)
    servers = "".join(f"{indent}server 127.0.0.1:{port}{params};\n" for port in upstreams)
    conf = conf[: match.start()] + servers + conf[match.start() :]
    assert "listen 80;" in conf
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (tmp / "streamspace.conf").write_text(conf)
    temp_paths = "\n".join(
        f"  {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
        f"events {{}}\nhttp {{\n  access_log off;\n{temp_paths}\n  include {tmp}/streamspace.conf;\n}}\n"
    )
    return main


def start_nginx(tmp: Path, upstreams: Sequence[int]) -> tuple[subprocess.Popen, int]:
    """nginx in front of ``upstreams``; returns the process and the port it listens on."""
    tmp.mkdir(parents=True, exist_ok=True)
    listen = free_port()
    main = write_config(tmp, listen, upstreams)
    process = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(main)], stderr=subprocess.DEVNULL)
    wait_for_port(listen, process, timeout=10)
    return process, listen
