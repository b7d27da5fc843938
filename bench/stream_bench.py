"""Desktop streaming benchmark: frames per second and input-to-pixel latency at 1280×720,
through StreamSpace's session proxy and straight to the Selkies server, in one run.

    .venv/bin/python bench/stream_bench.py [--seconds 10] [--samples 20]

Needs PostgreSQL, Redis and the local desktop's packages (scripts/ensure-desktop-deps.sh).
The desktop is the local backend's (``python -m agent_runtime.desktop --geometry 1280x720``)
with its stream secrets set, as the agent starts it; when the Docker desktop image
(``ghcr.io/streamspace-dev/desktop``) is on this host, its container is measured the same way.

The measuring instrument is a WebSocket client speaking Selkies' own protocol (the one its
web client speaks at ``/api/websockets``), so no browser's rendering or scheduling is in the
numbers: straight at ``ws://127.0.0.1:<selkies port>/api/websockets`` (the stream secret as
basic-auth credentials), and through the proxy at
``ws://<session id>.localhost:<daphne port>/api/websockets`` (the viewer cookie; the proxy
presents the secret upstream), daphne with its front, as production serves it. The client
asks for the ``jpeg`` encoder (full-width JPEG stripes, each ``0x03 · flags · uint16 frame id
· uint16 y`` then the JPEG), so that Pillow can read the pixels it receives; it acknowledges
every frame id (``CLIENT_FRAME_ACK``) as Selkies' client does, which keeps Selkies'
backpressure window open.

* **fps**: a program in the session repaints the root window as fast as it can (``xsetroot``
  in a loop, alternating colours); the frames received (distinct frame ids) per second over
  ``--seconds``.
* **input-to-pixel**: a terminal in the session runs a loop that paints the root window red
  on the key ``r`` and green on ``g``; ``xdotool`` gives that terminal the focus before every
  press (outside the timed span), the client sends the key (``kd,<keysym>`` / ``ku,<keysym>``)
  and times it to the first received stripe whose decoded pixel at a root-window point shows
  the new colour. The median and p90 of ``--samples`` presses; presses with no such stripe
  within 5 s are counted as missed.

Both rows share the desktop, the encoder and the client; the only difference is the path.
The load average is printed with the rows: on a shared machine it bounds what they can say.
Target: the proxy costs under 5 % of the direct fps and under 5 ms of added latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import secrets
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, ROOT, bench_env, daphne, free_port, manage_shell, reset_database

DATABASE = "streamspace_stream_bench"
GEOMETRY = "1280x720"
WIDTH, HEIGHT = 1280, 720
IMAGE = "ghcr.io/streamspace-dev/desktop"
FLIP_TITLE = "streambench-flip"
# A loop in the session's terminal: ``r`` paints the root window red, ``g`` green.
FLIP_LOOP = (
    "stty raw -echo; while c=$(dd bs=1 count=1 2>/dev/null); do case $c in "
    "r) xsetroot -solid '#ff0000';; g) xsetroot -solid '#00ff00';; q) break;; esac; done"
)
ANIMATE_LOOP = "while :; do xsetroot -solid '#2040c0'; xsetroot -solid '#c04020'; done"
# ``[t]`` keeps the pattern from matching the shell that runs pkill.
STOP_ANIMATION = "pkill -f 'while :; do xsetroo[t]'; pkill -f 'xsetroot -solid .2040c0'; true"
KEYSYMS = {"r": 114, "g": 103, "q": 113}  # X keysyms of the Latin-1 letters are their code points
PROBE_X, PROBE_Y = 1240, 680  # on the root window, away from every terminal
PRESS_TIMEOUT_S = 5.0
# What Selkies' web client sends first, plus the encoder whose stripes Pillow decodes.
CLIENT_SETTINGS = {
    "manual_resolution": False,
    "initialClientWidth": WIDTH,
    "initialClientHeight": HEIGHT,
    "scaling_dpi": 96,
    "keyboardLayout": "us",
    "useCssScaling": False,
    "displayId": "primary",
    "displayScale": 1,
    "encoder": "jpeg",
}

SETUP = """
from agents_app.models import Agent
from agents_app.tokens import hash_token
from sessions_app.models import Session, Template
from sessions_app.proxy.auth import make_viewer_cookie
from streamspace.accounts.models import User
from django.utils import timezone
import json
user = User.objects.create_user("bench", password="x")
template = Template.objects.create(slug="bench-desktop", display_name="Desktop", platform="local",
    command=["x"], stream_auth=True)
agent = Agent.objects.create(agent_id="bench-local", platform="local", token_hash=hash_token("t"), proxy_mode="direct")
out = []
for port, secret, view in %(targets)s:
    now = timezone.now()
    s = Session.objects.create(name="bench", user=user, template=template, agent=agent, platform="local",
        state="running", streaming_ready=True, endpoint=f"127.0.0.1:{port}", cpu_millicores=1000, memory_mb=1024,
        idle_timeout_s=0, last_activity=now, state_changed_at=now, stream_secret=secret, stream_view_secret=view)
    out.append({"id": str(s.pk), "cookie": make_viewer_cookie(s.pk, user.pk)})
print(json.dumps(out))
"""


def is_colour(rgb: tuple[int, int, int], key: str) -> bool:
    red, green, _blue = rgb[:3]
    return red > 200 and green < 80 if key == "r" else green > 200 and red < 80


@dataclass
class Desktop:
    name: str
    port: int
    secret: str
    view_secret: str
    run_in_session: list[str]  # argv prefix that runs a shell command on the session's display

    def sh(self, command: str) -> subprocess.Popen:
        return subprocess.Popen([*self.run_in_session, command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run(self, command: str) -> str:
        return subprocess.run([*self.run_in_session, command], capture_output=True, text=True, timeout=20).stdout


@contextlib.contextmanager
def local_desktop(home: Path) -> Iterator[Desktop]:
    port = free_port()
    secret, view = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session_id = "bench-" + secrets.token_hex(4)
    env = {
        **os.environ,
        "STREAMSPACE_STREAM_SECRET": secret,
        "STREAMSPACE_STREAM_VIEW_SECRET": view,
        "STREAMSPACE_SESSION_ID": session_id,
    }
    log = open(home.parent / "desktop.log", "wb")  # noqa: SIM115 closed below
    argv = [PYTHON, "-m", "agent_runtime.desktop", "--port", str(port), "--home", str(home), "--geometry", GEOMETRY]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    display_file = home / ".run" / f"display-{session_id}"
    try:
        wait(lambda: display_file.exists() and port_open(port), 60, "the local desktop")
        display = display_file.read_text().strip()
        yield Desktop("local", port, secret, view, ["env", f"DISPLAY={display}", "sh", "-c"])
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@contextlib.contextmanager
def docker_desktop(image: str) -> Iterator[Desktop]:
    port = free_port()
    secret, view = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    name = f"streamspace-desk-bench-{secrets.token_hex(3)}"
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True).stdout)
    exposed = list((inspect[0]["Config"].get("ExposedPorts") or {"8080/tcp": {}}).keys())[0].split("/")[0]
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--label", "streamspace.bench=desk", "--shm-size=512m",
         "-p", f"127.0.0.1:{port}:{exposed}", "-e", f"STREAMSPACE_STREAM_SECRET={secret}",
         "-e", f"STREAMSPACE_STREAM_VIEW_SECRET={view}", image],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        wait(lambda: port_open(port), 60, f"the {image} container")
        yield Desktop("docker", port, secret, view, ["docker", "exec", "-e", "DISPLAY=:0", name, "sh", "-c"])
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def port_open(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    return False


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Target:
    """Where a client connects: the URL (its host is the one the server sees) and the socket's
    address (``*.localhost`` names need no resolver)."""

    url: str
    connect_host: str
    connect_port: int
    headers: dict[str, str]
    origin: str


@dataclass
class Stream:
    """What the reader has seen: frames (distinct frame ids) and the watched colour change."""

    frames: int = 0
    last_id: int = -1
    stripe_width: int = 0
    encoders: set[str] = field(default_factory=set)
    watch: tuple[str, asyncio.Future] | None = None


def probe_pixel(message: bytes) -> tuple[int, int, int] | None:
    """The colour at the probe point if this JPEG stripe (``0x03`` chunk) covers it."""
    y = struct.unpack(">H", message[4:6])[0]
    if y > PROBE_Y:
        return None
    image = Image.open(io.BytesIO(message[6:]))
    if y + image.height <= PROBE_Y or image.width <= PROBE_X:
        return None
    return image.convert("RGB").getpixel((PROBE_X, PROBE_Y - y))


async def read_stream(ws, stream: Stream) -> None:
    async for message in ws:
        if isinstance(message, str):
            if message.startswith("{") and '"stream_info"' in message:
                info = json.loads(message).get("info", {})
                stream.encoders.add(str(info.get("encoder")))
            continue
        if len(message) < 6 or message[0] not in (3, 4):
            continue
        frame_id = struct.unpack(">H", message[2:4])[0]
        if frame_id != stream.last_id:
            stream.last_id = frame_id
            stream.frames += 1
            await ws.send(f"CLIENT_FRAME_ACK {frame_id} 0")
        if message[0] == 3 and stream.watch and not stream.watch[1].done():
            rgb = probe_pixel(message)
            if rgb is not None and is_colour(rgb, stream.watch[0]):
                stream.watch[1].set_result(time.perf_counter())


async def press(ws, key: str) -> None:
    await ws.send(f"kd,{KEYSYMS[key]}")
    await ws.send(f"ku,{KEYSYMS[key]}")


async def measure(target: Target, desktop: Desktop, seconds: int, samples: int) -> dict[str, float]:
    async with websockets.connect(
        target.url,
        host=target.connect_host,
        port=target.connect_port,
        additional_headers=target.headers,
        origin=target.origin,
        max_size=None,
        compression=None,
        open_timeout=60,
    ) as ws:
        await ws.send("SETTINGS," + json.dumps(CLIENT_SETTINGS))
        await ws.send(f"r,{GEOMETRY},primary")
        stream = Stream()
        reader = asyncio.create_task(read_stream(ws, stream))
        try:
            return await measure_stream(ws, stream, desktop, seconds, samples)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader


async def measure_stream(ws, stream: Stream, desktop: Desktop, seconds: int, samples: int) -> dict[str, float]:
    deadline = time.monotonic() + 60
    while stream.frames == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no video frame within 60 s")
        await asyncio.sleep(0.1)
    # fps while the session repaints continuously.
    animation = desktop.sh(ANIMATE_LOOP)
    try:
        await asyncio.sleep(3)  # the encoder and the client settle
        frames, started = stream.frames, time.perf_counter()
        await asyncio.sleep(seconds)
        fps = (stream.frames - frames) / (time.perf_counter() - started)
    finally:
        animation.kill()  # in a container this ends ``docker exec``, not the loop: kill it by name
        await asyncio.to_thread(desktop.run, STOP_ANIMATION)
    # input-to-pixel through a terminal that flips the root colour.
    await asyncio.to_thread(desktop.run, "pkill -f 'dd bs=1 count=1' || true")
    desktop.sh(f"xterm -T {FLIP_TITLE} -geometry 20x4+0+0 -e sh -c {shlex.quote(FLIP_LOOP)}")
    find = f"xdotool search --name {FLIP_TITLE}"
    deadline = time.monotonic() + 20
    while not (windows := (await asyncio.to_thread(desktop.run, find)).split()):
        if time.monotonic() > deadline:
            raise TimeoutError("the key terminal did not appear")
        await asyncio.sleep(0.2)
    focus = f"xdotool windowactivate --sync {windows[-1]} 2>/dev/null; xdotool windowfocus --sync {windows[-1]}"
    latencies, missed = [], 0
    loop = asyncio.get_running_loop()
    for index in range(samples + 2):  # the first two warm the path up
        key = "r" if index % 2 == 0 else "g"
        await asyncio.to_thread(desktop.run, focus)
        await asyncio.sleep(0.3)  # focus events and the stream settle (paint-over stripes)
        seen: asyncio.Future = loop.create_future()
        stream.watch = (key, seen)
        started = time.perf_counter()
        await press(ws, key)
        try:
            elapsed = await asyncio.wait_for(seen, PRESS_TIMEOUT_S) - started
        except TimeoutError:
            elapsed = None
        stream.watch = None
        if index >= 2:
            if elapsed is None:
                missed += 1
            else:
                latencies.append(elapsed * 1000)
    await press(ws, "q")
    latencies.sort()
    return {
        "encoder": ",".join(sorted(stream.encoders)) or "?",
        "fps": fps,
        "latency_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "latency_p90_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.9))] if latencies else float("nan"),
        "latency_n": len(latencies),
        "missed": missed,
    }


def targets(desktop: Desktop, proxy_base: str, session: dict) -> dict[str, Target]:
    basic = base64.b64encode(f"streamspace:{desktop.secret}".encode()).decode()
    direct_origin = f"http://127.0.0.1:{desktop.port}"
    proxy_port = int(proxy_base.rsplit(":", 1)[1])
    host = f"{session['id']}.localhost:{proxy_port}"
    return {
        "direct": Target(
            f"ws://127.0.0.1:{desktop.port}/api/websockets",
            "127.0.0.1",
            desktop.port,
            {"Authorization": f"Basic {basic}"},
            direct_origin,
        ),
        "proxy": Target(
            f"ws://{host}/api/websockets",
            "127.0.0.1",
            proxy_port,
            {"Cookie": f"streamspace_viewer={session['cookie']}"},
            f"http://{host}",
        ),
    }


def docker_image() -> str | None:
    if not shutil.which("docker"):
        return None
    listed = subprocess.run(
        ["docker", "image", "ls", IMAGE, "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    return next((tag for tag in listed if not tag.endswith(":<none>")), None)


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def print_rows(name: str, rows: dict[str, dict]) -> None:
    for target, row in rows.items():
        print(
            f"{name + ' ' + target:<16} {row['encoder']:<6} {row['fps']:6.1f} fps   "
            f"input-to-pixel p50 {row['latency_p50_ms']:6.1f} ms  p90 {row['latency_p90_ms']:6.1f} ms  "
            f"(n={row['latency_n']}, missed {row['missed']})",
            flush=True,
        )
    direct, proxy = rows["direct"], rows["proxy"]
    cost = (1 - proxy["fps"] / direct["fps"]) * 100 if direct["fps"] else float("nan")
    added = proxy["latency_p50_ms"] - direct["latency_p50_ms"]
    added_p90 = proxy["latency_p90_ms"] - direct["latency_p90_ms"]
    verdict = "latency not measured:" if added != added else "within" if cost < 5 and added < 5 else "OUTSIDE"
    print(
        f"{name + ' overhead':<16} fps cost {cost:5.1f} %   added latency p50 {added:5.1f} ms  "
        f"p90 {added_p90:5.1f} ms   {verdict} target   ({load()})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    env = bench_env(DATABASE, redis_db=3)
    env["ALLOWED_HOSTS"] = "localhost,127.0.0.1,.localhost"
    reset_database(env, DATABASE)
    tmp = Path(tempfile.mkdtemp(prefix="streambench-"))
    image = docker_image()
    print(f"({load()} at the start, {os.cpu_count()} cores)", flush=True)
    with contextlib.ExitStack() as stack:
        desktops = [stack.enter_context(local_desktop(tmp / "home"))]
        if image:
            desktops.append(stack.enter_context(docker_desktop(image)))
        else:
            print(f"(no {IMAGE} image on this host: the Docker desktop is not measured)")
        pairs = [(d.port, d.secret, d.view_secret) for d in desktops]
        sessions = json.loads(manage_shell(env, SETUP % {"targets": pairs}).strip().splitlines()[-1])
        base, _proc = stack.enter_context(daphne(env, start_timeout=120))
        for desktop, session in zip(desktops, sessions, strict=True):
            label = desktop.name if desktop.name == "local" else f"docker ({image})"
            print(f"-- {label}: {GEOMETRY}, Selkies' WebSocket protocol, JPEG stripes", flush=True)
            rows = {
                name: asyncio.run(measure(target, desktop, args.seconds, args.samples))
                for name, target in targets(desktop, base, session).items()
            }
            print_rows(desktop.name, rows)


if __name__ == "__main__":
    main()
