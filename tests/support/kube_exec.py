"""The ``pods/exec`` subresource of the API emulator (tests/support/kube_api.py), spoken as the
API server speaks it to the ``kubernetes`` client: a WebSocket upgrade of
``GET .../pods/<name>/exec?command=...&stdin=...&stdout=...&stderr=...&container=...``.

* The handshake answers 404 for a missing pod, 400 for a pod that is not Running, a container
  the pod does not have or a request that is not an upgrade, and negotiates the subprotocol
  ``v4.channel.k8s.io`` (the client offers v5 first; this API server, as those before
  Kubernetes 1.30, speaks v4, which has no way to close stdin but by closing the connection).
* Frames are binary, the first byte the channel: 0 stdin (from the client), 1 stdout,
  2 stderr, 3 the final ``Status`` (``Success``, or ``Failure``/``NonZeroExitCode`` with the
  exit code in ``details.causes[0].message``, 128 + N for a signal), then a close frame.

The command runs as a real process, so files behave as files do. Its view of the container:
the host's file system (the emulated image), in a private mount namespace
(``unshare --mount``, we run as root) where each of the container's ``volumeMounts`` of a
``persistentVolumeClaim`` or ``emptyDir`` is a bind mount of a directory the emulator owns
(per claim: the data outlives pods, as a PersistentVolume's does, until the claim is deleted;
per pod for an ``emptyDir``). A missing mount point is created on the host (an empty
directory: the image's). The process runs as the pod's ``runAsUser``/``runAsGroup`` with the
``fsGroup`` as a supplementary group (``setpriv``), and a volume's root belongs to the
``fsGroup`` (setgid, group-writable), as the kubelet arranges it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
READ_SIZE = 32 * 1024


class ExecRefused(Exception):
    """The upgrade is refused with ``code`` (a Status body), as the API server does."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


def read_frame(rfile: Any) -> tuple[int, bytes] | None:
    """One whole message (continuations joined): ``(opcode, payload)``; None at EOF."""
    opcode, payload = None, b""
    while True:
        head = rfile.read(2)
        if len(head) < 2:
            return None
        fin, op = head[0] & 0x80, head[0] & 0x0F
        masked, length = head[1] & 0x80, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", rfile.read(8))[0]
        mask = rfile.read(4) if masked else b""
        data = rfile.read(length)
        if len(data) < length:
            return None
        if masked:
            data = _unmask(data, mask)
        if op >= 0x8:  # control frames may come between fragments
            return op, data
        opcode = op if opcode is None else opcode
        payload += data
        if fin:
            return opcode, payload


def frame(opcode: int, payload: bytes) -> bytes:
    """A server frame (unmasked, unfragmented)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def exit_status(returncode: int, command: list[str]) -> dict:
    """The Status the API server sends on channel 3 when the command ends."""
    code = 128 - returncode if returncode < 0 else returncode
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {command}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def check_pod(pod: dict, container: str) -> dict:
    """The container spec to exec into; :class:`ExecRefused` as the API server answers."""
    name = pod["metadata"]["name"]
    phase = (pod.get("status") or {}).get("phase")
    containers = (pod.get("spec") or {}).get("containers") or []
    chosen = next((c for c in containers if c["name"] == container), None) if container else containers[0]
    if chosen is None:
        raise ExecRefused(400, "BadRequest", f"container {container} is not valid for pod {name}")
    if phase in ("Succeeded", "Failed"):
        raise ExecRefused(
            400, "BadRequest", f"cannot exec into a container in a completed pod; current phase is {phase}"
        )
    running = any(
        s.get("name") == chosen["name"] and "running" in (s.get("state") or {})
        for s in (pod.get("status") or {}).get("containerStatuses") or []
    )
    if phase != "Running" or not running:
        raise ExecRefused(400, "BadRequest", f'unable to upgrade connection: container not found ("{chosen["name"]}")')
    return chosen


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class Volumes:
    """The emulator's storage: a directory per claim and per pod ``emptyDir``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def claim_dir(self, ns: str, claim: str) -> Path:
        return self.root / "claims" / ns / claim

    def delete_claim(self, ns: str, claim: str) -> None:
        subprocess.run(["rm", "-rf", "--", str(self.claim_dir(ns, claim))], check=False)

    def delete_pod(self, ns: str, pod: str) -> None:
        subprocess.run(["rm", "-rf", "--", str(self.root / "pods" / ns / pod)], check=False)

    def mounts(self, ns: str, pod: dict, container: dict) -> list[tuple[Path, str]]:
        """``(host directory, mountPath)`` for each claim or emptyDir the container mounts."""
        security = (pod.get("spec") or {}).get("securityContext") or {}
        fs_group = security.get("fsGroup")
        by_name = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
        found = []
        for mount in container.get("volumeMounts") or []:
            volume = by_name.get(mount["name"]) or {}
            if "persistentVolumeClaim" in volume:
                source = self.claim_dir(ns, volume["persistentVolumeClaim"]["claimName"])
            elif "emptyDir" in volume:
                source = self.root / "pods" / ns / pod["metadata"]["name"] / mount["name"]
            else:
                continue
            source.mkdir(parents=True, exist_ok=True)
            if fs_group is not None and source.stat().st_gid != int(fs_group):  # the kubelet's OnRootMismatch
                os.chown(source, -1, int(fs_group))
                source.chmod(0o2775)
            Path(mount["mountPath"]).mkdir(parents=True, exist_ok=True)  # the image's mount point
            found.append((source, mount["mountPath"]))
        return found


def process_argv(command: list[str], mounts: list[tuple[Path, str]], pod: dict, container: dict) -> list[str]:
    """``unshare --mount`` running a shell that bind-mounts the volumes, then becomes the pod's
    user and runs ``command``."""
    security = {**((pod.get("spec") or {}).get("securityContext") or {}), **(container.get("securityContext") or {})}
    binds = " && ".join(f'mount --bind "${{{i * 2 + 1}}}" "${{{i * 2 + 2}}}"' for i in range(len(mounts))) or "true"
    args = [str(part) for pair in mounts for part in pair]
    become: list[str] = []
    uid = security.get("runAsUser")
    if uid is not None:
        gid = security.get("runAsGroup", uid)
        groups = str(security["fsGroup"]) if security.get("fsGroup") is not None else ""
        become = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        become += [f"--groups={groups}"] if groups else ["--clear-groups"]
        become += ["--"]
    script = f'{binds} && shift {len(args)} && cd / && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "exec", *args,
            *become, *command]  # fmt: skip


def serve(handler: Any, command: list[str], argv: list[str], want: dict[str, bool]) -> None:
    """Answer the upgrade on ``handler`` (a BaseHTTPRequestHandler) and run ``argv``."""
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(handler.headers["Sec-WebSocket-Key"]))
    handler.send_header("Sec-WebSocket-Protocol", SUBPROTOCOL)
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    sock = handler.connection
    lock = threading.Lock()
    broken = threading.Event()
    closed = threading.Event()  # our close frame is sent

    def send(opcode: int, payload: bytes) -> None:
        if broken.is_set():
            raise BrokenPipeError
        try:
            with lock:
                sock.sendall(frame(opcode, payload))
        except OSError:
            broken.set()
            raise

    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if want["stdin"] else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )

    def pump(stream: Any, channel: int, enabled: bool) -> None:
        fd = stream.fileno()
        try:
            while data := os.read(fd, READ_SIZE):
                if enabled:
                    send(OP_BINARY, bytes([channel]) + data)
        except OSError:  # the client is gone: the process meets a closed pipe, as under kubelet
            pass
        finally:
            stream.close()

    def receive() -> None:
        stdin = process.stdin
        try:
            while (message := read_frame(handler.rfile)) is not None:
                opcode, payload = message
                if opcode == OP_CLOSE:  # answered (unless ours came first), as RFC 6455 asks
                    if not closed.is_set():
                        with contextlib.suppress(OSError):
                            send(OP_CLOSE, payload[:2])
                    broken.set()  # nothing is sent after a close
                    break
                if opcode == OP_PING:
                    send(OP_PONG, payload)
                elif opcode in (OP_BINARY, OP_TEXT) and payload[:1] == bytes([STDIN]) and stdin is not None:
                    try:
                        stdin.write(payload[1:])
                    except OSError:  # the command stopped reading: what follows is dropped
                        with contextlib.suppress(OSError):
                            stdin.close()
                        stdin = None
        except (OSError, ValueError):  # the connection is gone
            pass
        finally:  # the connection's end is the end of stdin (v4 has no other)
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()

    readers = [
        threading.Thread(target=pump, args=(process.stdout, STDOUT, want["stdout"]), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, STDERR, want["stderr"]), daemon=True),
    ]
    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    returncode = process.wait()
    try:
        send(OP_BINARY, bytes([ERROR]) + json.dumps(exit_status(returncode, command)).encode())
        closed.set()
        send(OP_CLOSE, struct.pack("!H", 1000))
    except OSError:
        pass
    receiver.join(timeout=5)  # the client's close frame, then the connection is closed
