"""The demo catalog loaded by ``manage.py seed_demo`` (and ``make run``).

Every entry stays in the catalog whatever runs here: a template no connected agent can
serve is shown as unavailable with the reason (``sessions_app.availability``).
"""

from __future__ import annotations

from typing import Any

DEMO_TEMPLATES: list[dict[str, Any]] = [
    {
        "slug": "demo-canvas",
        "display_name": "Demo canvas",
        "description": "A tiny built-in session app (HTTP page, WebSocket echo and a shared canvas). "
        "Runs on the local agent with nothing else installed.",
        "category": "Demo",
        "icon": "🎨",
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
        "icon": "🖥️",
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
    {
        "slug": "webtop-xfce",
        "display_name": "Ubuntu XFCE desktop",
        "description": "A full XFCE desktop in a container, streamed by Selkies.",
        "category": "Desktops",
        "icon": "🐧",
        "image": "ghcr.io/linuxserver/webtop:ubuntu-xfce",
        "default_cpu_millicores": 2000,
        "default_memory_mb": 4096,
        "tags": ["desktop", "xfce"],
    },
    {
        "slug": "firefox",
        "display_name": "Firefox",
        "description": "The Firefox browser in an isolated container.",
        "category": "Browsers",
        "icon": "🦊",
        "image": "ghcr.io/linuxserver/firefox:latest",
        "default_cpu_millicores": 1000,
        "default_memory_mb": 2048,
        "tags": ["browser"],
    },
    {
        "slug": "vscode",
        "display_name": "VS Code",
        "description": "Visual Studio Code in the browser with a persistent home.",
        "category": "Development",
        "icon": "🧑‍💻",
        "image": "ghcr.io/linuxserver/code-server:latest",
        "default_cpu_millicores": 1000,
        "default_memory_mb": 2048,
        "tags": ["ide", "development"],
    },
]
