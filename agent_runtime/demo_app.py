"""A tiny session app for the demo catalog: an HTTP page with a canvas and a WebSocket echo.

``python -m agent_runtime.demo_app --port 8080 --home /tmp/home``

* ``GET /`` — a drawing canvas. Strokes go over the WebSocket and are drawn when they come
  back (so you see the round trip through the control plane's proxy); they are kept in
  ``<home>/canvas.json``, which survives hibernation when the home is persistent.
* ``GET /healthz`` — ``ok``.
* ``/ws`` — echoes every text and binary frame. A text frame ``!close <code> [reason]``
  makes the server close the socket with that code (to test close-code propagation).
  Stroke frames (JSON ``{"stroke": ...}``) are also saved to the home.

Only the standard library and ``websockets`` are used so that it runs anywhere the agent runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MAX_STROKES = 5000

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>StreamSpace demo canvas</title>
<style>
 :root{color-scheme:light dark;--bg:#0f172a;--panel:#1e293b;--fg:#e2e8f0;--muted:#94a3b8;--accent:#38bdf8}
 *{box-sizing:border-box} body{margin:0;font:15px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg);
 display:flex;flex-direction:column;height:100vh}
 header{display:flex;gap:1rem;align-items:center;padding:.6rem 1rem;background:var(--panel)}
 h1{font-size:1rem;margin:0;font-weight:600} .muted{color:var(--muted)} .grow{flex:1}
 #dot{width:.6rem;height:.6rem;border-radius:50%;background:#ef4444;display:inline-block}
 #dot.on{background:#22c55e} button,input{font:inherit}
 button{background:var(--accent);color:#0f172a;border:0;border-radius:.4rem;padding:.3rem .8rem;cursor:pointer}
 main{flex:1;padding:1rem} canvas{width:100%;height:100%;background:#fff;border-radius:.6rem;cursor:crosshair;
 touch-action:none;box-shadow:0 10px 30px #0006}
</style></head>
<body><header><h1>🎨 Demo canvas</h1><span><span id="dot"></span> <span id="state" class="muted">connecting…</span></span>
<span class="muted">round trip <b id="rtt">–</b> ms</span><span class="grow"></span>
<input id="color" type="color" value="#0ea5e9" aria-label="colour"><button id="clear">Clear</button></header>
<main><canvas id="c"></canvas></main>
<script>
const c=document.getElementById('c'),g=c.getContext('2d'),dot=document.getElementById('dot'),
 st=document.getElementById('state'),rtt=document.getElementById('rtt'),color=document.getElementById('color');
let ws,last=null,strokes=[];
function fit(){c.width=c.clientWidth*devicePixelRatio;c.height=c.clientHeight*devicePixelRatio;redraw()}
function line(s){g.strokeStyle=s.color;g.lineWidth=3*devicePixelRatio;g.lineCap='round';g.beginPath();
 g.moveTo(s.x0*c.width,s.y0*c.height);g.lineTo(s.x1*c.width,s.y1*c.height);g.stroke()}
function redraw(){g.clearRect(0,0,c.width,c.height);strokes.forEach(line)}
function connect(){const u=new URL('ws',location.href);u.protocol=u.protocol==='https:'?'wss:':'ws:';u.search='';
 ws=new WebSocket(u);ws.onopen=()=>{dot.className='on';st.textContent='connected'};
 ws.onclose=e=>{dot.className='';st.textContent='closed ('+e.code+'), retrying';setTimeout(connect,1000)};
 ws.onmessage=e=>{const m=JSON.parse(e.data);if(m.stroke){strokes.push(m.stroke);line(m.stroke);
  rtt.textContent=(performance.now()-m.sent).toFixed(1)}else if(m.clear){strokes=[];redraw()}}}
function pos(e){const r=c.getBoundingClientRect();return[(e.clientX-r.left)/r.width,(e.clientY-r.top)/r.height]}
c.onpointerdown=e=>{last=pos(e);c.setPointerCapture(e.pointerId)};c.onpointerup=()=>last=null;
c.onpointermove=e=>{if(!last||!ws||ws.readyState!==1)return;const p=pos(e);
 ws.send(JSON.stringify({sent:performance.now(),stroke:{x0:last[0],y0:last[1],x1:p[0],y1:p[1],color:color.value}}));last=p};
document.getElementById('clear').onclick=()=>ws&&ws.send(JSON.stringify({clear:true}));
fetch('strokes').then(r=>r.json()).then(s=>{strokes=s;redraw()});addEventListener('resize',fit);fit();connect();
</script></body></html>
"""


class Canvas:
    """The strokes drawn so far, persisted in the session's home."""

    def __init__(self, home: Path):
        self.path = home / "canvas.json"
        try:
            self.strokes: list[dict] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.strokes = []

    def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if isinstance(message.get("stroke"), dict):
            self.strokes = [*self.strokes, message["stroke"]][-MAX_STROKES:]
        elif message.get("clear"):
            self.strokes = []
        else:
            return
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.strokes), encoding="utf-8")
        tmp.replace(self.path)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return Response(status.value, status.phrase, headers, body)


def make_handlers(canvas: Canvas):
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path.endswith("/ws") or path == "/ws":
            return None  # WebSocket handshake proceeds
        if path in ("/", "/index.html"):
            return _response(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/strokes":
            return _response(HTTPStatus.OK, json.dumps(canvas.strokes).encode(), "application/json")
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    async def echo(websocket: ServerConnection) -> None:
        try:
            async for message in websocket:
                if isinstance(message, str) and message.startswith("!close"):
                    parts = message.split(maxsplit=2)
                    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 1000
                    await websocket.close(code, parts[2] if len(parts) > 2 else "")
                    return
                await websocket.send(message)
                if isinstance(message, str):
                    canvas.handle(message)
        except ConnectionClosed:
            pass

    return process_request, echo


async def serve_forever(port: int, home: Path, host: str = "127.0.0.1") -> None:
    home.mkdir(parents=True, exist_ok=True)
    canvas = Canvas(home)
    process_request, echo = make_handlers(canvas)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(echo, host, port, process_request=process_request, max_size=1 << 20):
        print(json.dumps({"msg": "demo app serving", "port": port, "home": str(home)}), flush=True)
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="StreamSpace demo session app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(serve_forever(args.port, args.home, args.host))


if __name__ == "__main__":
    main()
