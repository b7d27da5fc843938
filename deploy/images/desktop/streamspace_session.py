#!/usr/bin/env python3
"""Entry point of the StreamSpace session images (``/usr/local/bin/streamspace-session``).

``streamspace-session [program [args...]]`` starts, as the image's user:

- Xvfb on display ``:0`` (``STREAMSPACE_GEOMETRY``, default 1920x1080),
- openbox, then ``program`` (the image's CMD; the desktop image's is a terminal),
- selkies on ``0.0.0.0:$STREAMSPACE_STREAMING_PORT`` (default 8080), the port the agent
  reaches and the control plane's proxy forwards to.

Stream secret (docs/architecture.md, the per-session stream secret): with
``STREAMSPACE_STREAM_SECRET`` set, selkies requires HTTP basic auth as user ``streamspace``
with that password, and ``STREAMSPACE_STREAM_VIEW_SECRET`` (optional) is its view-only
password; without it selkies serves without a login (an image run by hand). The secrets are
handed to selkies only: the desktop's programs do not inherit them.

Encoder: selkies encodes on the GPU (NVENC or VA-API) when the container has one, else with
x264 in software. A GPU counts as passed through when the container sees a DRI render node
(``/dev/dri/renderD*``, VA-API; selkies is pointed at the first) or an NVIDIA device
(``/dev/nvidia0``, NVENC through the NVIDIA container runtime); with neither, hardware
encoding is switched off so selkies does not probe for one.

The session ends when selkies or Xvfb ends (its exit status is the container's); SIGTERM
stops every child. This file runs with the image's Python and imports nothing outside the
standard library.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DISPLAY = ":0"
X_SOCKET = Path("/tmp/.X11-unix/X0")
SELKIES = "/opt/selkies/bin/selkies"
STREAM_USER = "streamspace"
SECRET_VARIABLES = ("STREAMSPACE_STREAM_SECRET", "STREAMSPACE_STREAM_VIEW_SECRET")
DEFAULT_PROGRAM = ["xterm"]


def gpu_arguments(dev: Path = Path("/dev")) -> tuple[list[str], str]:
    """selkies' encoder arguments for the devices under ``dev``, and what was chosen (for the log)."""
    render_nodes = sorted(glob.glob(str(dev / "dri" / "renderD*")))
    if render_nodes:
        return [f"--encode-dri={render_nodes[0]}"], f"GPU encoding (VA-API/NVENC) on {render_nodes[0]}"
    if (dev / "nvidia0").exists():
        return [], "GPU encoding (NVENC) on /dev/nvidia0"
    return ["--gpu-id=-1"], "software encoding (x264): no GPU passed through"


def selkies_command(port: int, env: dict[str, str], dev: Path = Path("/dev")) -> tuple[list[str], dict[str, str], str]:
    """selkies' argv and environment for ``port``, and the encoder choice (for the log).

    The control plane's proxy frames the page on the portal's origin and sends the
    frame-ancestors policy itself, so selkies allows any ancestor rather than only its own
    origin (browsers apply every policy a response carries).
    """
    # The images have no sound server: selkies would retry one forever.
    argv = [SELKIES, "--addr", "0.0.0.0", "--port", str(port), "--frame-ancestors=*", "--audio-enabled=false"]
    selkies_env = {key: value for key, value in env.items() if key not in SECRET_VARIABLES}
    secret = env.get("STREAMSPACE_STREAM_SECRET", "")
    if secret:
        argv += ["--enable-basic-auth=true", f"--basic-auth-user={STREAM_USER}"]
        # Through the environment, not argv: another process of the session can read argv.
        selkies_env["SELKIES_BASIC_AUTH_PASSWORD"] = secret
        view_secret = env.get("STREAMSPACE_STREAM_VIEW_SECRET", "")
        if view_secret:
            selkies_env["SELKIES_BASIC_AUTH_VIEWONLY_PASSWORD"] = view_secret
    else:
        argv.append("--enable-basic-auth=false")
    gpu, encoder = gpu_arguments(dev)
    return argv + gpu, selkies_env, encoder


def streaming_port(env: dict[str, str]) -> int:
    raw = env.get("STREAMSPACE_STREAMING_PORT", "") or "8080"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"streamspace-session: STREAMSPACE_STREAMING_PORT={raw!r} is not a TCP port")
    return int(raw)


def wait_for_display(xvfb: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not X_SOCKET.exists():
        if xvfb.poll() is not None:
            raise SystemExit(f"streamspace-session: Xvfb exited with status {xvfb.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"streamspace-session: Xvfb did not open display {DISPLAY} in {timeout:.0f} s")
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    port = streaming_port(env)
    home = Path(env.get("HOME") or "/home/user")
    home.mkdir(parents=True, exist_ok=True)
    program = argv or DEFAULT_PROGRAM
    session_env = {key: value for key, value in env.items() if key not in SECRET_VARIABLES}
    session_env.update(DISPLAY=DISPLAY, HOME=str(home), XDG_RUNTIME_DIR=f"/tmp/runtime-{os.getuid()}")
    Path(session_env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    Path("/tmp/.X11-unix").mkdir(mode=0o1777, exist_ok=True)
    geometry = env.get("STREAMSPACE_GEOMETRY", "1920x1080")
    children: list[subprocess.Popen] = []

    def stop_all(*_args: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *_a: (stop_all(), sys.exit(0)))
    try:
        xvfb = subprocess.Popen(
            ["Xvfb", DISPLAY, "-screen", "0", f"{geometry}x24", "-nolisten", "tcp"], env=session_env, cwd=home
        )
        children.append(xvfb)
        wait_for_display(xvfb)
        children.append(subprocess.Popen(["openbox"], env=session_env, cwd=home))
        children.append(subprocess.Popen(program, env=session_env, cwd=home))
        selkies_argv, selkies_env, encoder = selkies_command(port, {**env, **session_env, **_secrets(env)})
        print(f"streamspace-session: display {DISPLAY}, selkies on port {port}, {encoder}", flush=True)
        selkies = subprocess.Popen(selkies_argv, env=selkies_env, cwd=home)
        children.append(selkies)
        watched = {selkies.pid: "selkies", xvfb.pid: "Xvfb"}
        while True:  # reaps every child; the session ends with selkies or the display
            pid, status = os.wait()
            if pid in watched:
                code = os.waitstatus_to_exitcode(status)
                print(f"streamspace-session: {watched[pid]} exited with status {code}", flush=True)
                return code or 1
    finally:
        stop_all()


def _secrets(env: dict[str, str]) -> dict[str, str]:
    return {key: env[key] for key in SECRET_VARIABLES if env.get(key)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
