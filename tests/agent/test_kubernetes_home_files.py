"""Files in a Kubernetes session's home (agent_runtime/backends/kubernetes_files.py): the real
``kubernetes`` client execs into pods of the API emulator (tests/support/kube_api.py), whose
``pods/exec`` runs the command as a real process, as the pod's user, with the home PVC's
directory bind-mounted at the home mount in a private mount namespace."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
import tracemalloc
import uuid
from pathlib import Path

import pytest

from agent_runtime.backends import homescript, kubernetes_files
from agent_runtime.backends import kubernetes_client as kc
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.homefiles import (
    HomeFileError,
    HomeNotAvailable,
    HomePathConflict,
    HomePathEscape,
    HomePathInvalid,
    HomePathNotFound,
    HomeUploadIncomplete,
)
from agent_runtime.backends.kubernetes import KubernetesBackend
from agent_runtime.backends.kubernetes_objects import home_claim_name
from tests.support.kube_api import running_kube
from tests.support.waits import until

NS = "ss-files"
MIB = 1024 * 1024
UID = 1000


@pytest.fixture
def kube():
    yield from running_kube(auto_ready=True)


@pytest.fixture
async def backend(kube, tmp_path):
    options = {"kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig")), "namespace": NS,
               "endpoint": "cluster-ip"}  # fmt: skip
    backend = KubernetesBackend(agent_id="k8s-files", data_dir=tmp_path, options=options)
    yield backend
    await backend.close()


@pytest.fixture
def outside():
    """A directory outside every home that the pod's user could write to if a path led there."""
    path = Path(tempfile.mkdtemp(prefix="k8s-files-outside-", dir="/tmp"))
    path.chmod(0o777)
    (path / "secret.txt").write_text("secret\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def spec(**overrides) -> SessionSpec:
    return SessionSpec.parse({"image": "streamspace/firefox:1", "user": "alice", "template": "firefox",
                              "persistent_home": True, **overrides})  # fmt: skip


async def running(backend, kube) -> str:
    sid = str(uuid.uuid4())
    await backend.start(sid, spec())

    async def pod_running():
        return (await backend.status(sid)).streaming_ready

    await until(pod_running, timeout=10)
    return sid


@pytest.fixture
async def session(backend, kube, outside):
    sid = await running(backend, kube)
    home = kube.volumes.claim_dir(NS, home_claim_name("alice"))  # the PVC's data, as the emulator keeps it
    (home / "docs").mkdir()
    (home / "docs" / "a.txt").write_text("alpha\n")
    (home / "dir-out").symlink_to(outside)
    (home / "link-out").symlink_to(outside / "secret.txt")
    (home / "link-in").symlink_to("docs/a.txt")
    (home / "up").symlink_to("..")
    for entry in ("docs", "docs/a.txt", "dir-out", "link-out", "link-in", "up"):  # the user's own files
        os.lchown(home / entry, UID, UID)
    return sid


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"kubernetes files").digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


async def chunks_of(data: bytes, piece: int = 256 * 1024):
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def read_all(opened) -> bytes:
    try:
        return b"".join([c async for c in opened.chunks()])
    finally:
        await opened.aclose()


async def test_list_stat_upload_download_delete(backend, kube, session):
    home = kube.volumes.claim_dir(NS, home_claim_name("alice"))
    names = {e.name: e.type for e in await backend.home_list(session, ())}
    assert names == {"docs": "directory", "dir-out": "link", "link-out": "link", "link-in": "link", "up": "link"}
    entry = await backend.home_stat(session, ("docs", "a.txt"))
    assert (entry.type, entry.size) == ("file", 6)
    assert await read_all(await backend.home_read(session, ("link-in",))) == b"alpha\n"  # a link inside is followed

    payload = pattern(12 * MIB + 123)
    entry = await backend.home_write(session, ("docs", "big.bin"), len(payload), chunks_of(payload))
    assert (entry.name, entry.type, entry.size) == ("big.bin", "file", len(payload))
    back = await read_all(await backend.home_read(session, ("docs", "big.bin")))
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest()
    stored = (home / "docs" / "big.bin").stat()
    assert (stored.st_size, stored.st_uid, stored.st_gid) == (len(payload), UID, UID)  # the pod's user and fsGroup
    assert (await backend.home_stat(session, ("docs", "big.bin"))).size == len(payload)

    await backend.home_write(session, ("docs", "big.bin"), 3, chunks_of(b"new"))  # replaces
    assert await read_all(await backend.home_read(session, ("docs", "big.bin"))) == b"new"
    await backend.home_write(session, ("empty",), 0, chunks_of(b""))
    assert (home / "empty").read_bytes() == b""

    with pytest.raises(HomePathConflict):
        await backend.home_write(session, ("docs",), 1, chunks_of(b"x"))
    with pytest.raises(HomePathConflict):
        await backend.home_read(session, ("docs",))
    with pytest.raises(HomePathConflict):
        await backend.home_list(session, ("docs", "a.txt"))
    with pytest.raises(HomePathNotFound):
        await backend.home_write(session, ("nowhere", "x"), 1, chunks_of(b"x"))
    with pytest.raises(HomePathNotFound):
        await backend.home_stat(session, ("missing",))

    await backend.home_delete(session, ("docs",))
    assert not (home / "docs").exists()
    with pytest.raises(HomePathNotFound):
        await backend.home_stat(session, ("docs",))
    with pytest.raises(HomePathInvalid):
        await backend.home_delete(session, ())


async def test_a_failed_upload_leaves_nothing_and_keeps_the_old_file(backend, kube, session):
    home = kube.volumes.claim_dir(NS, home_claim_name("alice"))
    with pytest.raises(HomeUploadIncomplete):
        await backend.home_write(session, ("docs", "part.bin"), 10 * MIB, chunks_of(pattern(3 * MIB)))
    with pytest.raises(HomeUploadIncomplete):  # more bytes than announced: refused too
        await backend.home_write(session, ("docs", "a.txt"), 4, chunks_of(b"too many bytes"))

    async def broken_body():
        yield b"half of it"
        raise ConnectionError("the browser went away")

    with pytest.raises(ConnectionError):
        await backend.home_write(session, ("docs", "a.txt"), 100, broken_body())

    async def only_the_old_files():
        return sorted(os.listdir(home / "docs")) == ["a.txt"]

    await until(only_the_old_files, timeout=5)  # the temporary files are gone
    assert (home / "docs" / "a.txt").read_text() == "alpha\n"


async def test_paths_out_of_the_home_are_refused(backend, session, outside):
    with pytest.raises(HomePathEscape):
        await backend.home_read(session, ("link-out",))
    with pytest.raises(HomePathEscape):
        await backend.home_stat(session, ("link-out",))
    with pytest.raises(HomePathEscape):
        await backend.home_list(session, ("dir-out",))
    with pytest.raises(HomePathEscape):
        await backend.home_list(session, ("up",))
    with pytest.raises(HomePathEscape):
        await backend.home_read(session, ("dir-out", "secret.txt"))
    with pytest.raises(HomePathEscape):
        await backend.home_write(session, ("dir-out", "planted"), 1, chunks_of(b"x"))
    with pytest.raises(HomePathEscape):
        await backend.home_write(session, ("link-out",), 1, chunks_of(b"x"))
    with pytest.raises(HomePathEscape):
        await backend.home_delete(session, ("dir-out", "secret.txt"))
    # the control plane refuses ".." before asking; the script refuses it as well
    with pytest.raises(HomePathEscape):
        await backend.home_read(session, ("..", "..", "etc", "hostname"))
    with pytest.raises(HomePathEscape):
        await backend.home_write(session, ("..", "planted"), 1, chunks_of(b"x"))
    assert sorted(os.listdir(outside)) == ["secret.txt"] and (outside / "secret.txt").read_text() == "secret\n"
    await backend.home_delete(session, ("link-out",))  # the link goes, its target stays
    assert (outside / "secret.txt").exists()
    assert "link-out" not in {e.name for e in await backend.home_list(session, ())}


async def test_not_running_hibernated_and_unknown_sessions(backend, kube, session):
    await backend.home_write(session, ("kept.txt",), 5, chunks_of(b"kept\n"))
    await backend.hibernate(session)

    async def no_pod():
        return kube.pods_of(NS, session) == [] and (await backend.status(session)).state == "hibernated"

    await until(no_pod, timeout=10)
    with pytest.raises(HomeNotAvailable):
        await backend.home_list(session, ())
    with pytest.raises(HomeNotAvailable):
        await backend.home_write(session, ("x",), 1, chunks_of(b"x"))
    with pytest.raises(HomePathNotFound):
        await backend.home_list(str(uuid.uuid4()), ())

    kube.auto_ready = False
    await backend.wake(session, spec())
    pod = kube.pods_of(NS, session)[0]["metadata"]["name"]
    kube.set_pod(NS, pod, "waiting", reason="ContainerCreating")

    async def pod_seen():
        return bool(backend._pods_of(session))

    await until(pod_seen, timeout=10)
    with pytest.raises(HomeNotAvailable):  # a pod whose container does not run yet
        await backend.home_list(session, ())
    kube.set_pod(NS, pod, "ready")

    async def ready():
        return (await backend.status(session)).streaming_ready

    await until(ready, timeout=10)
    # the PVC outlived the pod: the file written before hibernation is in the new pod's home
    assert await read_all(await backend.home_read(session, ("kept.txt",))) == b"kept\n"


async def test_a_pod_gone_between_the_cache_and_the_exec(backend, kube, session):
    """The exec's own 404 (a pod deleted before the watch said so) is "not running", not a crash."""
    with kube.cond:
        pod = kube.list("pods", NS, f"streamspace.io/session-id={session}")[0]
        del kube.objects[("pods", NS, pod["metadata"]["name"])]  # gone without an event yet
    with pytest.raises(HomeNotAvailable):
        await backend.home_list(session, ())


async def test_transfers_run_side_by_side(backend, session):
    payloads = {f"f{i}.bin": pattern(MIB + i) for i in range(4)}
    await asyncio.gather(
        *(backend.home_write(session, (name,), len(data), chunks_of(data)) for name, data in payloads.items())
    )

    async def download(name: str) -> bytes:
        return await read_all(await backend.home_read(session, (name,)))

    got = await asyncio.gather(*(download(name) for name in payloads))
    assert got == list(payloads.values())


def _exec(backend, pod: str, script: str):
    """The real client's exec, as the backend opens it, run to its end."""
    execution = backend._open_exec(pod, ["sh", "-c", script], False)
    execution.run_forever(timeout=10)
    return execution


async def test_the_emulator_speaks_the_exec_protocol(backend, kube, session):
    pod = kube.pods_of(NS, session)[0]["metadata"]["name"]
    done = await asyncio.to_thread(
        _exec, backend, pod, "echo out; echo err >&2; id -u; cat /home/user/docs/a.txt; exit 3"
    )
    assert done.subprotocol == "v4.channel.k8s.io"
    assert done.read_channel(1) == b"out\n1000\nalpha\n" and done.read_channel(2) == b"err\n"
    assert done.returncode == 3  # the client's reading of the Status on channel 3
    assert (await asyncio.to_thread(_exec, backend, pod, "true")).returncode == 0

    with pytest.raises(kc.ApiException, match="Handshake status 404"):
        await asyncio.to_thread(_exec, backend, "no-such-pod", "true")
    kube.set_pod(NS, pod, "waiting", reason="CrashLoopBackOff")
    with pytest.raises(kc.ApiException, match="Handshake status 400"):
        await asyncio.to_thread(_exec, backend, pod, "true")


async def test_a_50_mib_upload_and_download_stream_with_bounded_memory(backend, session):
    """What the process holds (agent and emulator both: they share it here) stays a few chunks,
    never the file: tracemalloc's peak over a 50 MiB upload and its download."""
    size = 50 * MIB
    block = pattern(MIB)

    async def body():
        for _ in range(size // MIB):
            for i in range(0, MIB, 256 * 1024):
                yield block[i : i + 256 * 1024]

    tracemalloc.start()
    try:
        await backend.home_write(session, ("big.bin",), size, body())
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        opened = await backend.home_read(session, ("big.bin",))
        digest, received = hashlib.sha256(), 0
        try:
            async for chunk in opened.chunks():
                digest.update(chunk)
                received += len(chunk)
        finally:
            await opened.aclose()
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size and digest.hexdigest() == hashlib.sha256(block * (size // MIB)).hexdigest()
    assert upload_peak < 8 * MIB and download_peak < 8 * MIB, (upload_peak, download_peak)


async def test_a_listing_stops_at_the_bound(backend, kube, session, monkeypatch):
    home = kube.volumes.claim_dir(NS, home_claim_name("alice"))
    for index in range(8):
        (home / "docs" / f"n{index}").write_text("x")
    monkeypatch.setattr(kubernetes_files, "MAX_LIST_ENTRIES", 4)
    monkeypatch.setattr(homescript, "MAX_LIST_ENTRIES", 4)
    assert len(await backend.home_list(session, ("docs",))) == 4


@pytest.fixture
def small_volume(kube):
    """The home PVC as a 1 MiB volume (a tmpfs over the claim's directory)."""
    home = kube.volumes.claim_dir(NS, home_claim_name("alice"))
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=2775,gid=1000", "ss-kfiles-small", str(home)],
                   check=True)  # fmt: skip
    yield home
    subprocess.run(["umount", "-l", str(home)], check=False)


async def test_a_full_volume_fails_the_upload_with_the_reason_and_leaves_nothing(backend, kube, small_volume):
    sid = await running(backend, kube)
    (small_volume / "kept.txt").write_text("kept\n")
    with pytest.raises(HomeFileError, match="volume full") as refused:
        await backend.home_write(sid, ("kept.txt",), 4 * MIB, chunks_of(pattern(4 * MIB)))
    assert refused.type is HomeFileError  # not "incomplete": the client sent every byte it had to

    async def only_the_old_file():
        return os.listdir(small_volume) == ["kept.txt"]

    await until(only_the_old_file, timeout=5)
    assert (small_volume / "kept.txt").read_text() == "kept\n"


def _commands_naming(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(text.encode() in arg for arg in argv):
            found.append(entry.name)
    return found


async def test_an_abandoned_download_ends_the_command_in_the_pod(backend, session):
    name = f"abandoned-{uuid.uuid4().hex}.bin"
    await backend.home_write(session, (name,), 16 * MIB, chunks_of(pattern(16 * MIB)))
    opened = await backend.home_read(session, (name,))
    assert len(await opened.chunks().__anext__()) > 0
    assert _commands_naming(f"./{name}")  # tar is still sending
    await opened.aclose()
    await until(lambda: not _commands_naming(f"./{name}"), timeout=10, what="tar gone")
