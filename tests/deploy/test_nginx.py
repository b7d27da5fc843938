"""deploy/nginx/streamspace.conf: accepted by nginx, and, run for real in front of two
upstream replicas, sticky per Django session, WebSocket-capable and failing over."""

from __future__ import annotations

import asyncio
import subprocess

import aiohttp
import pytest
from aiohttp import web

from tests.deploy.conftest import require_tool
from tests.support.nginx import write_config
from tests.support.ports import free_port


def test_nginx_accepts_the_config(tmp_path):
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    main = write_config(tmp_path, free_port(), (free_port(), free_port()))
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def replica(name: str) -> web.Application:
    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "replica": name,
                "host": request.headers.get("Host"),
                "proto": request.headers.get("X-Forwarded-Proto"),
                "forwarded_for": request.headers.get("X-Forwarded-For"),
            }
        )

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket_ = web.WebSocketResponse()
        await socket_.prepare(request)
        await socket_.send_str(name)
        async for message in socket_:
            await socket_.send_str(f"{name}:{message.data}")
        return socket_

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=f"# metrics of {name}\n")

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ws", ws)
    return app


@pytest.mark.slow
async def test_sticky_websocket_load_balancing_and_failover(tmp_path):
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    ports = (free_port(), free_port())
    runners = []
    for name, port in zip(("cp-1", "cp-2"), ports, strict=True):
        runner = web.AppRunner(replica(name))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    listen = free_port()
    main = write_config(tmp_path, listen, ports)
    process = await asyncio.create_subprocess_exec(nginx, "-p", str(tmp_path), "-c", str(main))
    base = f"http://127.0.0.1:{listen}"
    try:
        async with aiohttp.ClientSession() as client:
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # wait until nginx listens
                try:
                    async with client.get(base + "/nginx-health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, (tmp_path / "error.log").read_text()
                await asyncio.sleep(0.05)

            async def who(session_cookie: str) -> dict:
                async with client.get(base + "/whoami", headers={"Cookie": f"sessionid={session_cookie}"}) as r:
                    assert r.status == 200
                    return await r.json()

            # One browser session always lands on one replica; sessions spread over both.
            first = await who("alice-session")
            assert {(await who("alice-session"))["replica"] for _ in range(10)} == {first["replica"]}
            spread = {(await who(f"session-{n}"))["replica"] for n in range(24)}
            assert spread == {"cp-1", "cp-2"}
            assert first["host"] == f"127.0.0.1:{listen}" and first["proto"] == "http"
            assert first["forwarded_for"] == "127.0.0.1"
            # nginx is the edge: a client's own X-Forwarded-For never reaches the control plane
            headers = {"Cookie": "sessionid=alice-session", "X-Forwarded-For": "6.6.6.6, 10.0.0.1"}
            async with client.get(base + "/whoami", headers=headers) as r:
                assert (await r.json())["forwarded_for"] == "127.0.0.1"

            # A session's own origin reaches the control plane with its Host unchanged (the
            # control plane routes by it), sticky by the viewer cookie there.
            session_host = "0b5a1c3e-7f00-4d6a-9e55-2f1d0c8b9a77.localhost:8080"
            viewer = {"Host": session_host, "Cookie": "streamspace_viewer=v1"}
            async with client.get(base + "/whoami", headers=viewer) as r:
                on_session = await r.json()
            assert on_session["host"] == session_host
            for _ in range(5):
                async with client.get(base + "/whoami", headers=viewer) as r:
                    assert (await r.json())["replica"] == on_session["replica"]
            viewers = set()
            for n in range(24):  # keyed by the cookie, not the (one) client address
                headers = {"Host": session_host, "Cookie": f"streamspace_viewer=v{n}"}
                async with client.get(base + "/whoami", headers=headers) as r:
                    viewers.add((await r.json())["replica"])
            assert viewers == {"cp-1", "cp-2"}

            # The replicas' metrics are not served at the edge (Prometheus scrapes replicas).
            for target in ("/metrics", "/metrics?name[]=streamspace_sessions"):
                async with client.get(base + target, headers={"Cookie": "sessionid=alice-session"}) as r:
                    assert r.status == 404 and "metrics of" not in await r.text()

            # WebSockets pass through, to the same replica as the session's HTTP requests.
            async with client.ws_connect(base + "/ws", headers={"Cookie": "sessionid=alice-session"}) as ws:
                assert await ws.receive_str(timeout=5) == first["replica"]
                await ws.send_str("ping")
                assert await ws.receive_str(timeout=5) == f"{first['replica']}:ping"

            # The replica goes away: the session moves to the other one.
            await runners[0 if first["replica"] == "cp-1" else 1].cleanup()
            moved = await who("alice-session")
            assert moved["replica"] != first["replica"]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
        for runner in runners:
            await runner.cleanup()
