"""A Linux desktop session for the local backend: Xvfb + the Selkies streaming server.

``python -m agent_runtime.desktop --port 8080 --home /path/to/home``

Starts a virtual X display (Xvfb), a window manager, a terminal and ``selkies`` (PyPI
package) serving the desktop over HTTP/WebSocket on ``--port``. Every child runs in this
process's group; SIGTERM stops them all. ``scripts/ensure-desktop-deps.sh`` (run by
``make run``) installs what it needs; the local agent reports the ``desktop`` feature only
when :func:`missing_dependencies` is empty, so the catalog never offers a desktop that
cannot start.

Selkies sits behind the control plane's session proxy only (docs/architecture.md §19,
§24): when the agent hands the session ``STREAMSPACE_STREAM_SECRET`` (and
``STREAMSPACE_STREAM_VIEW_SECRET``), selkies requires HTTP basic auth as user
``streamspace`` with that password (the view secret is its view-only password), which the
proxy presents upstream; the secrets reach selkies through its environment, never its argv
(visible to every user of the host), and no other program of the session sees them.
Without them selkies serves without a login.

The session's X display is written to ``<home>/.run/display-<session id>`` (``:N``) so that
tests and automation (``xdotool``, ``xsetroot``) can drive the desktop.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

WINDOW_MANAGERS = ("openbox", "xfwm4", "fluxbox", "twm")
TERMINALS = ("xfce4-terminal", "xterm")
# xterm's default window (80x24 of a 6x13 font) is a small island on a desktop-sized display.
PROGRAM_ARGS = {"xterm": ("-geometry", "120x40")}
STOP_GRACE_S = 3.0
STREAM_SECRET_ENV = "STREAMSPACE_STREAM_SECRET"
STREAM_VIEW_SECRET_ENV = "STREAMSPACE_STREAM_VIEW_SECRET"
BASIC_AUTH_USER = "streamspace"
# Variables selkies reads a basic-auth password from besides its own flags: never inherited.
_SELKIES_PASSWORD_ENV = (
    "SELKIES_BASIC_AUTH_PASSWORD",
    "SELKIES_BASIC_AUTH_VIEWONLY_PASSWORD",
    "PASSWORD",
    "PASSWD",
    "VIEWONLY_PASSWORD",
)


def selkies_command() -> list[str] | None:
    """How to run selkies: its console script next to this interpreter, on PATH, or ``-m``."""
    beside = Path(sys.executable).parent / "selkies"
    if beside.exists():
        return [str(beside)]
    if shutil.which("selkies"):
        return ["selkies"]
    try:
        if importlib.util.find_spec("selkies") is not None:
            return [sys.executable, "-m", "selkies"]
    except (ImportError, ValueError):
        pass
    return None


def missing_dependencies() -> list[str]:
    """What this host lacks to run a desktop session, as short install hints (empty: nothing)."""
    missing = []
    if not shutil.which("Xvfb"):
        missing.append("Xvfb (Debian package 'xvfb')")
    if not any(shutil.which(program) for program in WINDOW_MANAGERS):
        missing.append("a window manager (Debian package 'openbox')")
    if not any(shutil.which(program) for program in TERMINALS):
        missing.append("a terminal (Debian package 'xterm')")
    if selkies_command() is None:
        missing.append("selkies (pip install selkies)")
    return missing


def selkies_auth(environ: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The selkies flags and environment for the session's stream secrets (pure).

    With ``STREAMSPACE_STREAM_SECRET`` set: basic auth on, user ``streamspace``, the secret
    as password and ``STREAMSPACE_STREAM_VIEW_SECRET`` (if set) as the view-only password,
    passed in the environment. Without it: basic auth off. Either way no inherited password
    variable reaches selkies.
    """
    env = {key: value for key, value in environ.items() if key not in _SELKIES_PASSWORD_ENV}
    secret = environ.get(STREAM_SECRET_ENV, "")
    if not secret:
        return ["--enable-basic-auth=false"], env
    env["SELKIES_BASIC_AUTH_PASSWORD"] = secret
    view_secret = environ.get(STREAM_VIEW_SECRET_ENV, "")
    if view_secret:
        env["SELKIES_BASIC_AUTH_VIEWONLY_PASSWORD"] = view_secret
    return ["--enable-basic-auth=true", f"--basic-auth-user={BASIC_AUTH_USER}"], env


def without_stream_secrets(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` for the session's other programs: no stream secret, no selkies password."""
    hidden = {STREAM_SECRET_ENV, STREAM_VIEW_SECRET_ENV, *_SELKIES_PASSWORD_ENV}
    return {key: value for key, value in environ.items() if key not in hidden}


def display_file(home: Path, environ: dict[str, str], port: int) -> Path:
    """Where the session's display name is written: one file per session (a persistent home
    may hold several of its user's sessions)."""
    name = environ.get("STREAMSPACE_SESSION_ID") or f"port-{port}"
    return home / ".run" / f"display-{name}"


def free_display() -> int:
    for number in range(50, 200):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number between :50 and :199")


def wait_for_display(number: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    socket_path = Path(f"/tmp/.X11-unix/X{number}")
    while time.monotonic() < deadline:
        if socket_path.exists():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"Xvfb exited with status {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"Xvfb did not create display :{number} within {timeout:.0f} s")


def run(port: int, home: Path, geometry: str) -> int:
    missing = missing_dependencies()
    if missing:
        print(
            "streamspace desktop: cannot start, missing " + " and ".join(missing) + ". "
            "Run scripts/ensure-desktop-deps.sh (or `make desktop-deps`) on the agent's host, "
            "or use a container template.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    home.mkdir(parents=True, exist_ok=True)
    display = free_display()
    session_env = {**os.environ, "DISPLAY": f":{display}", "HOME": str(home), "XDG_RUNTIME_DIR": str(home / ".run")}
    Path(session_env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    env = without_stream_secrets(session_env)
    auth_flags, selkies_env = selkies_auth(session_env)
    display_path = display_file(home, session_env, port)
    children: list[subprocess.Popen] = []

    def stop_all(*_args: object) -> None:
        # The display is gone from the moment the session stops; its children get one shared
        # grace period, inside the agent's own before it kills the whole process group.
        display_path.unlink(missing_ok=True)
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(0)))
    try:
        xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", f"{geometry}x24", "-nolisten", "tcp"], env=env)
        children.append(xvfb)
        wait_for_display(display, xvfb)
        for candidates in (WINDOW_MANAGERS, TERMINALS):
            program = next((p for p in candidates if shutil.which(p)), None)
            if program:
                children.append(subprocess.Popen([program, *PROGRAM_ARGS.get(program, ())], env=env, cwd=home))
        # The control plane's proxy authenticates viewers and presents the stream secret
        # upstream, so the user never sees selkies's own login. The page is framed by the
        # portal, on another origin than the session's: selkies may not narrow framing
        # itself ('self' by default), because the proxy sends the
        # frame-ancestors policy naming the one portal origin that opened the session, and
        # browsers enforce every frame-ancestors policy a response carries.
        argv = [
            *selkies_command(),
            "--addr",
            "127.0.0.1",
            "--port",
            str(port),
            *auth_flags,
            "--frame-ancestors=*",
        ]
        selkies = subprocess.Popen(argv, env=selkies_env, cwd=home)
        children.append(selkies)
        display_path.write_text(f":{display}\n")
        login = "basic auth" if auth_flags[0].endswith("true") else "no login"
        print(f"streamspace desktop: display :{display}, selkies on 127.0.0.1:{port} ({login})", flush=True)
        return selkies.wait()
    finally:
        stop_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Xvfb + Selkies desktop session")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--geometry", default="1600x900")
    args = parser.parse_args(argv)
    sys.exit(run(args.port, args.home, args.geometry))


if __name__ == "__main__":
    main()
