"""Driving a running desktop session's X display from outside, and reading its pixels.

The local desktop (agent_runtime/desktop.py) writes its display (``:N``) to
``<home>/.run/display-<session id>``; ``xsetroot`` and ``xdotool`` (installed by
scripts/ensure-desktop-deps.sh) then paint and move things on it as any program of the
session could. Pixels are compared with a tolerance: the stream is lossy-encoded.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

from PIL import Image

X_TOOLS = ("xsetroot", "xdotool")


def missing_x_tools() -> list[str]:
    return [tool for tool in X_TOOLS if shutil.which(tool) is None]


def display_file(search_root: Path, session_id: str) -> Path | None:
    """The display file the session's desktop wrote somewhere under ``search_root``."""
    return next(search_root.glob(f"**/.run/display-{session_id}"), None)


def on_display(display: str, *argv: str) -> str:
    """Run an X client (``xsetroot``, ``xdotool``) against ``display``; its stdout."""
    done = subprocess.run(argv, env={"DISPLAY": display, "PATH": "/usr/bin:/bin"}, capture_output=True, timeout=15)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} on {display}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


def paint_root(display: str, colour: str) -> None:
    """Fill the display's root window (the desktop behind every window) with ``#rrggbb``."""
    on_display(display, "xsetroot", "-solid", colour)


def rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def colour_share(png: bytes, colour: str, tolerance: int = 40) -> float:
    """The fraction of the image's pixels within ``tolerance`` of ``colour`` on every channel."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    target = rgb(colour)
    counts = image.getcolors(maxcolors=1 << 24) or []
    near = sum(count for count, pixel in counts if all(abs(pixel[i] - target[i]) <= tolerance for i in range(3)))
    return near / (image.width * image.height)
