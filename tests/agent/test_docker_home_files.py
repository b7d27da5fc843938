"""Files in a Docker session's home (agent_runtime/backends/docker_files.py) against the real
engine and the test image (busybox only: the script's tools come from its applets)."""

from __future__ import annotations

import hashlib

import pytest

from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.backends.docker_files import parse_listing
from agent_runtime.backends.homefiles import (
    HomeNotAvailable,
    HomePathConflict,
    HomePathEscape,
    HomePathInvalid,
    HomePathNotFound,
    HomeUploadIncomplete,
)
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker

MIB = 1024 * 1024


@pytest.fixture
async def backend(docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"stop_timeout": "2", "pull": "never"})
    yield backend
    await backend.close()


@pytest.fixture
async def session(backend, docker_client, docker_agent_id):
    spec = SessionSpec.parse(
        {"image": TEST_IMAGE, "user": docker_agent_id, "template": "test", "persistent_home": True, "memory_mb": 128}
    )
    await backend.start("f1", spec)
    container = docker_client.containers.get("streamspace-f1")
    code, output = container.exec_run(
        [
            "sh",
            "-c",
            "mkdir -p /home/user/docs /outside && echo secret > /outside/secret.txt && echo alpha > "
            "/home/user/docs/a.txt && busybox ln -s /outside /home/user/dir-out && busybox ln -s /outside/secret.txt "
            "/home/user/link-out && busybox ln -s docs/a.txt /home/user/link-in",
        ]  # fmt: skip
    )
    assert code == 0, output
    return container


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"docker files").digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


async def chunks_of(data: bytes, piece: int = 300_000):
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def read_all(opened) -> bytes:
    try:
        return b"".join([c async for c in opened.chunks()])
    finally:
        await opened.aclose()


async def test_list_read_write_delete(backend, session):
    names = {e.name: e.type for e in await backend.home_list("f1", ())}
    assert names == {"docs": "directory", "dir-out": "link", "link-out": "link", "link-in": "link"}
    assert (await backend.home_stat("f1", ("docs", "a.txt"))).size == 6
    assert await read_all(await backend.home_read("f1", ("link-in",))) == b"alpha\n"

    payload = pattern(50 * MIB + 123)
    entry = await backend.home_write("f1", ("docs", "big.bin"), len(payload), chunks_of(payload))
    assert (entry.name, entry.size) == ("big.bin", len(payload))
    back = await read_all(await backend.home_read("f1", ("docs", "big.bin")))
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
    code, owner = session.exec_run(["sh", "-c", "stat -c %u /home/user/docs/big.bin"])
    assert owner.strip() == b"0"  # the directory's owner (root in the test image)

    await backend.home_write("f1", ("docs", "big.bin"), 3, chunks_of(b"new"))
    assert await read_all(await backend.home_read("f1", ("docs", "big.bin"))) == b"new"
    with pytest.raises(HomePathConflict):
        await backend.home_write("f1", ("docs",), 1, chunks_of(b"x"))
    with pytest.raises(HomePathConflict):
        await backend.home_read("f1", ("docs",))
    with pytest.raises(HomePathNotFound):
        await backend.home_write("f1", ("nowhere", "x"), 1, chunks_of(b"x"))
    with pytest.raises(HomeUploadIncomplete):
        await backend.home_write("f1", ("docs", "part.bin"), 10, chunks_of(b"12345"))
    assert {e.name for e in await backend.home_list("f1", ("docs",))} == {"a.txt", "big.bin"}  # no leftovers

    await backend.home_delete("f1", ("docs",))
    with pytest.raises(HomePathNotFound):
        await backend.home_stat("f1", ("docs",))
    with pytest.raises(HomePathInvalid):
        await backend.home_delete("f1", ())


async def test_links_out_of_the_home_are_refused(backend, session):
    with pytest.raises(HomePathEscape):
        await backend.home_read("f1", ("link-out",))
    with pytest.raises(HomePathEscape):
        await backend.home_list("f1", ("dir-out",))
    with pytest.raises(HomePathEscape):
        await backend.home_read("f1", ("dir-out", "secret.txt"))
    with pytest.raises(HomePathEscape):
        await backend.home_write("f1", ("dir-out", "planted"), 1, chunks_of(b"x"))
    with pytest.raises(HomePathEscape):
        await backend.home_delete("f1", ("dir-out", "secret.txt"))
    code, _ = session.exec_run(["sh", "-c", "test -f /outside/secret.txt && test ! -e /outside/planted"])
    assert code == 0
    await backend.home_delete("f1", ("link-out",))  # the link goes, its target stays
    code, _ = session.exec_run(["sh", "-c", "test -f /outside/secret.txt && test ! -L /home/user/link-out"])
    assert code == 0


async def test_a_session_that_is_not_running(backend, session):
    await backend.hibernate("f1")
    with pytest.raises(HomeNotAvailable):
        await backend.home_list("f1", ())
    with pytest.raises(HomePathNotFound):
        await backend.home_list("nope", ())


def test_listing_parser():
    out = b"directory|4096|1700000000|/h/docs\n\0regular file|5|1700000001|/h/a|b.txt\n\0"
    entries = parse_listing(out, "/h")
    assert [(e.name, e.type, e.size) for e in entries] == [("docs", "directory", 4096), ("a|b.txt", "file", 5)]
