"""Files in a local home (agent_runtime/backends/local_files.py) and the agent's file service
(agent_runtime/files_service.py) driven by the control plane's own HTTP client over a socketpair."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket

import pytest

from agent_runtime.backends.homefiles import (
    HomePathConflict,
    HomePathEscape,
    HomePathInvalid,
    HomePathNotFound,
    HomeUploadIncomplete,
    parse_home_path,
)
from agent_runtime.backends.local_files import LocalHome
from agent_runtime.files_service import serve_files
from sessions_app.proxy.client import Pool


@pytest.mark.parametrize(
    ("path", "parts"),
    [("", ()), ("a", ("a",)), ("a/b.txt", ("a", "b.txt")), ("dir/", ("dir",)), ("é 1/x", ("é 1", "x"))],
)
def test_home_paths(path, parts):
    assert parse_home_path(path) == parts


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "..", "a/../b", "a/./b", "a//b", "./a", "a\x00b", "a\nb", "x" * 256, "a/" * 2100, "\udcff"],
)
def test_bad_home_paths_are_refused(path):
    with pytest.raises(HomePathInvalid):
        parse_home_path(path)


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", root / "link-out")
    os.symlink(outside, root / "dir-out")
    os.symlink("docs/a.txt", root / "link-in")
    return LocalHome(root)


async def body(*chunks: bytes):
    for chunk in chunks:
        yield chunk


async def read_all(opened) -> bytes:
    try:
        return b"".join([chunk async for chunk in opened.chunks()])
    finally:
        await opened.aclose()


async def test_list_stat_read(home):
    names = {e.name: e.type for e in await home.list(())}
    assert names == {"docs": "directory", "link-out": "link", "dir-out": "link", "link-in": "link"}
    entry = await home.stat(("docs", "a.txt"))
    assert (entry.type, entry.size) == ("file", 5)
    assert await read_all(await home.read(("docs", "a.txt"))) == b"alpha"
    assert await read_all(await home.read(("link-in",))) == b"alpha"  # a link inside the home is followed
    with pytest.raises(HomePathConflict):
        await home.read(("docs",))
    with pytest.raises(HomePathConflict):
        await home.list(("docs", "a.txt"))
    with pytest.raises(HomePathNotFound):
        await home.stat(("missing",))


async def test_symlinks_out_of_the_home_are_refused(home, tmp_path):
    with pytest.raises(HomePathEscape):
        await home.read(("link-out",))
    with pytest.raises(HomePathEscape):
        await home.stat(("link-out",))
    with pytest.raises(HomePathEscape):
        await home.list(("dir-out",))
    with pytest.raises(HomePathEscape):
        await home.read(("dir-out", "secret.txt"))
    with pytest.raises(HomePathEscape):
        await home.write(("dir-out", "planted.txt"), 1, body(b"x"))
    with pytest.raises(HomePathEscape):
        await home.write(("link-out",), 1, body(b"x"))
    with pytest.raises(HomePathEscape):
        await home.delete(("dir-out", "secret.txt"))
    assert not (tmp_path / "outside" / "planted.txt").exists()
    assert (tmp_path / "outside" / "secret.txt").read_text() == "secret"
    await home.delete(("link-out",))  # removes the link, never its target
    assert not (home.home / "link-out").is_symlink()
    assert (tmp_path / "outside" / "secret.txt").read_text() == "secret"


async def test_write_replace_and_delete(home):
    entry = await home.write(("docs", "new.bin"), 6, body(b"abc", b"def"))
    assert (entry.name, entry.type, entry.size) == ("new.bin", "file", 6)
    assert (home.home / "docs" / "new.bin").read_bytes() == b"abcdef"
    await home.write(("docs", "new.bin"), 2, body(b"xy"))
    assert (home.home / "docs" / "new.bin").read_bytes() == b"xy"
    await home.write(("link-in",), 3, body(b"via"))  # through a link inside the home
    assert (home.home / "docs" / "a.txt").read_bytes() == b"via"
    with pytest.raises(HomePathConflict):
        await home.write(("docs",), 1, body(b"x"))
    with pytest.raises(HomePathNotFound):
        await home.write(("nowhere", "x"), 1, body(b"x"))
    await home.delete(("docs",))
    assert not (home.home / "docs").exists()
    with pytest.raises(HomePathNotFound):
        await home.delete(("docs",))
    with pytest.raises(HomePathInvalid):
        await home.delete(())


async def test_an_incomplete_upload_leaves_nothing(home):
    with pytest.raises(HomeUploadIncomplete):
        await home.write(("part.bin",), 10, body(b"12345"))
    with pytest.raises(HomeUploadIncomplete):
        await home.write(("long.bin",), 2, body(b"12345"))
    (home.home / "keep.txt").write_text("old")
    with pytest.raises(HomeUploadIncomplete):
        await home.write(("keep.txt",), 10, body(b"new"))
    assert sorted(p.name for p in home.home.iterdir()) == ["dir-out", "docs", "keep.txt", "link-in", "link-out"]
    assert (home.home / "keep.txt").read_text() == "old"


class HomeBackend:
    """The backend methods the file service calls, on one LocalHome (session id ignored)."""

    def __init__(self, home: LocalHome):
        self.home = home

    async def home_stat(self, session_id, parts):
        return await self.home.stat(parts)

    async def home_list(self, session_id, parts):
        return await self.home.list(parts)

    async def home_read(self, session_id, parts):
        return await self.home.read(parts)

    async def home_write(self, session_id, parts, size, chunks):
        return await self.home.write(parts, size, chunks)

    async def home_delete(self, session_id, parts):
        await self.home.delete(parts)


@pytest.fixture
async def service(home):
    """Requests to the file service through the proxy's client (each connection a socketpair)."""
    pool = Pool()
    servers = []

    async def opener(factory):
        ours, theirs = socket.socketpair()
        servers.append(asyncio.create_task(serve_files(theirs, HomeBackend(home), "s1")))
        return await asyncio.get_running_loop().create_connection(factory, sock=ours)

    async def request(method: bytes, target: bytes, body=None, headers=()):
        response = await pool.request(("t",), opener, method, target, [(b"host", b"x"), *headers], body, read_timeout=5)
        try:
            return response.status, dict(response.headers), await response.read_all()
        finally:
            response.release()

    yield request
    pool.close()
    for task in servers:
        task.cancel()
    await asyncio.gather(*servers, return_exceptions=True)


async def test_service_list_download_upload_delete(service, home):
    status, headers, data = await service(b"GET", b"/")
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert {e["name"] for e in json.loads(data)["entries"]} == {"docs", "link-out", "dir-out", "link-in"}
    status, headers, data = await service(b"GET", b"/docs/a.txt")
    assert (status, data, headers[b"content-length"]) == (200, b"alpha", b"5")

    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def stream():
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    status, _, data = await service(
        b"PUT", b"/docs/%C3%A9t%C3%A9.bin", stream(), [(b"content-length", b"%d" % len(payload))]
    )
    assert status == 201 and json.loads(data)["size"] == len(payload)
    status, _, data = await service(b"GET", b"/docs/%C3%A9t%C3%A9.bin")
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    status, _, _ = await service(b"PUT", b"/docs/%C3%A9t%C3%A9.bin", b"short")
    assert status == 200  # replaced
    status, _, _ = await service(b"DELETE", b"/docs/%C3%A9t%C3%A9.bin")
    assert status == 204
    assert not (home.home / "docs" / "été.bin").exists()


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        (b"GET", b"/missing", 404, "not_found"),
        (b"GET", b"/link-out", 403, "path_outside_home"),
        (b"GET", b"/dir-out/secret.txt", 403, "path_outside_home"),
        (b"GET", b"/../etc/passwd", 400, "invalid_path"),
        (b"GET", b"/%2e%2e/x", 400, "invalid_path"),
        (b"GET", b"//etc/passwd", 400, "invalid_path"),
        (b"GET", b"/%ff%fe", 400, "invalid_path"),
        (b"GET", b"/a%00b", 400, "invalid_path"),
        (b"PUT", b"/docs", 409, "conflict"),
        (b"PUT", b"/dir-out/x", 403, "path_outside_home"),
        (b"DELETE", b"/", 400, "invalid_path"),
        (b"POST", b"/docs", 405, "method_not_allowed"),
    ],
)
async def test_service_refusals(service, method, target, status, code):
    body = b"x" if method == b"PUT" else None
    got, _, data = await service(method, target, body)
    assert (got, json.loads(data)["code"]) == (status, code)


async def test_service_put_needs_a_length(service):
    async def stream():
        yield b"abc"

    status, _, data = await service(b"PUT", b"/chunked.txt", stream())  # chunked: no Content-Length
    assert (status, json.loads(data)["code"]) == (411, "length_required")
