"""The demo catalog loaded by ``manage.py seed_demo`` (and ``make run``).

Every entry stays in the catalog whatever runs here: a template no connected agent can
serve is shown as unavailable with the reason (``sessions_app.availability``).

The container templates run the session images StreamSpace ships (``deploy/images``, built
by ``make images`` with no registry): ``ghcr.io/streamspace-dev/<name>:<version>`` on Docker
or Kubernetes, selkies on port 8080, the session user's home at ``/home/user``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from agent_runtime import images


def shipped(name: str, **entry: Any) -> dict[str, Any]:
    """A template of the shipped image ``name``: its image, port and home, the per-session
    stream secret its entry point requires, a read-only root (the images write only to the
    home and /tmp) and the platform choice (empty: Docker or Kubernetes, wherever an agent
    can run it). ``shm_size_mb`` is the entry's: Firefox and LibreOffice want more than
    Docker's 64 MiB."""
    return {
        "image": images.shipped_image(name),
        "streaming_port": images.STREAMING_PORT,
        "home_path": images.HOME_PATH,
        "stream_auth": True,
        "read_only_root": True,
        "platform": "",
        "tags": [*entry.pop("tags", []), "selkies"],
        **entry,
    }


def _icon(name: str) -> str:
    """The shipped icon ``static/icons/<name>.svg``, as the path the portal serves it at."""
    return f"/{settings.STATIC_URL.strip('/')}/icons/{name}.svg"


DEMO_TEMPLATES: list[dict[str, Any]] = [
    {
        "slug": "demo-canvas",
        "display_name": "Demo canvas",
        "description": "A tiny built-in session app (HTTP page, WebSocket echo and a shared canvas). "
        "Runs on the local agent with nothing else installed.",
        "category": "Demo",
        "icon": _icon("canvas"),
        "platform": "local",
        "command": ["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"],
        "default_cpu_millicores": 250,
        "default_memory_mb": 128,
        "tags": ["demo", "builtin"],
    },
    {
        "slug": "linux-desktop-selkies",
        "display_name": "Linux desktop (Selkies)",
        "description": "An Xvfb desktop with a terminal, streamed by Selkies. Runs on the local agent; "
        "make run installs what it needs (Xvfb, openbox, xterm, selkies).",
        "category": "Desktops",
        "icon": _icon("desktop"),
        "platform": "local",
        "command": ["{python}", "-m", "agent_runtime.desktop", "--port", "{port}", "--home", "{home}"],
        # Selkies takes the session's stream secrets as its basic-auth passwords (the proxy
        # presents them): nothing on the host but the proxy can open the stream.
        "stream_auth": True,
        "default_cpu_millicores": 2000,
        "default_memory_mb": 2048,
        "tags": ["desktop", "selkies", "webrtc"],
        "requires": ["desktop"],
    },
    shipped(
        "desktop",
        slug="desktop",
        shm_size_mb=512,
        display_name="Debian desktop",
        description="A Debian desktop with a terminal in a container (openbox, xterm), streamed by Selkies. "
        "Your home folder is kept between sessions.",
        category="Desktops",
        icon=_icon("desktop"),
        default_cpu_millicores=2000,
        default_memory_mb=2048,
        tags=["desktop", "debian"],
    ),
    shipped(
        "terminal",
        slug="terminal",
        shm_size_mb=256,
        display_name="Terminal",
        description="A full-screen terminal with git, tmux, vim and curl, in a container.",
        category="Development",
        icon=_icon("terminal"),
        default_cpu_millicores=1000,
        default_memory_mb=1024,
        tags=["terminal", "development"],
    ),
    shipped(
        "firefox",
        slug="firefox",
        shm_size_mb=2048,
        display_name="Firefox",
        description="Debian's Firefox ESR in an isolated container.",
        category="Browsers",
        icon=_icon("browser"),
        default_cpu_millicores=2000,
        default_memory_mb=2048,
        tags=["browser"],
    ),
    shipped(
        "libreoffice",
        slug="libreoffice",
        shm_size_mb=1024,
        display_name="LibreOffice",
        description="LibreOffice Writer, Calc and Impress in a container; documents stay in your home folder.",
        category="Office",
        icon=_icon("office"),
        default_cpu_millicores=2000,
        default_memory_mb=2048,
        tags=["office"],
    ),
]
