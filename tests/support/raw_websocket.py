"""An agent's end of a WebSocket spoken by hand over a raw socket (RFC 6455), so that a
test can break the protocol on purpose: frames built byte by byte (masked or not, any
opcode, any length), the handshake's accept key, and reading a raw HTTP answer to its end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from typing import Any, ClassVar
from urllib.parse import urlsplit

BOUND = 10.0  # seconds within which whatever is awaited must happen
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# What agent_socket.py writes (daphne's autobahn answers "Upgrade: WebSocket", "Connection: Upgrade").
FRONT_101 = b"HTTP/1.1 101 Switching Protocols\r\nserver: daphne\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, length: int | None = None
) -> bytes:
    """One frame as a client writes it (masked unless told otherwise); ``length`` may lie."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = b"\x5a\xc3\x10\x9e"
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(payload), "big")
    return head + key + masked


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class RawAgent:
    """An agent's tunnel socket spoken by hand: the handshake, masked frames out, frames in."""

    live: ClassVar[list[RawAgent]] = []  # closed by the leader fixture when the test ends
    default_token: ClassVar[str] = ""  # the agent token ``dial`` presents unless given one

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, key: bytes) -> None:
        self.reader, self.writer, self.head, self.key = reader, writer, head, key
        self.payload = bytearray()  # binary payloads received so far (the tunnel's bytes)

    @classmethod
    async def dial(
        cls, url: str, token: str | None = None, *, pipelined: bytes = b"", read_head: bool = True
    ) -> RawAgent:
        """Open the socket and send the handshake (and ``pipelined`` right behind it); read the answer's head."""
        token = cls.default_token if token is None else token
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(hashlib.sha256(url.encode()).digest()[:16])
        writer.write(
            b"GET %s HTTP/1.1\r\nhost: %s\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: %s\r\nsec-websocket-version: 13\r\nauthorization: Bearer %s\r\n\r\n"
            % (parts.path.encode(), parts.netloc.encode(), key, token.encode())
            + pipelined
        )
        agent = cls(reader, writer, b"", key)
        cls.live.append(agent)
        if read_head:
            agent.head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        return agent

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def send(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        self.writer.write(frame(opcode, payload, **kwargs))

    async def recv(self) -> tuple[int, bytes]:
        """The next frame the control plane sent: (opcode, payload); IncompleteReadError at EOF."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), BOUND)
        assert not second & 0x80, "a server's frames are not masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), BOUND)

    async def read_request(self) -> bytes:
        """Binary payloads until a whole request head came through the tunnel."""
        while b"\r\n\r\n" not in self.payload:
            opcode, data = await self.recv()
            assert opcode in (BINARY, CONT), (opcode, data)
            self.payload += data
        return bytes(self.payload)

    async def until_eof(self) -> list[tuple[int, bytes]]:
        """Every frame until the control plane closes the TCP connection (bounded)."""
        frames = []
        while True:
            try:
                frames.append(await self.recv())
            except asyncio.IncompleteReadError as exc:
                assert not exc.partial, f"the connection ended inside a frame: {exc.partial!r}"
                return frames

    async def relay(self, host: str, port: int) -> None:
        """Behave: carry the tunnel's bytes to and from ``host:port`` until either side ends."""
        session_reader, session_writer = await asyncio.open_connection(host, port)

        async def to_session() -> None:
            while True:
                opcode, data = await self.recv()
                if opcode == CLOSE:
                    return
                if opcode in (BINARY, CONT):
                    session_writer.write(data)
                    await session_writer.drain()

        async def from_session() -> None:
            while data := await session_reader.read(65536):
                self.send(BINARY, data)
                await self.writer.drain()

        tasks = [asyncio.ensure_future(to_session()), asyncio.ensure_future(from_session())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            session_writer.close()
            self.close()

    def close(self) -> None:
        self.writer.close()


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


async def read_to_end(reader: asyncio.StreamReader, enough: int | None = None) -> bytes:
    """What comes until the connection ends, by EOF or reset (the front aborts a truncated response)."""
    data = bytearray()
    try:
        while enough is None or len(data) < enough:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def canned(body: bytes, **headers: str) -> bytes:
    head = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{head}\r\n".encode() + body
