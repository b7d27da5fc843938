"""A local webhook receiver for tests: fails the first N requests, de-duplicates by delivery id."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    fail_first: int = 0
    hang_first: int = 0  # requests that block until ``release`` is set (then get a 500)
    requests: list[Received] = field(default_factory=list)
    processed: dict[str, bytes] = field(default_factory=dict)  # delivery id -> body, once
    duplicates: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    index = len(receiver.requests)
                    hang = index < receiver.hang_first
                    status = 500 if index < receiver.fail_first + receiver.hang_first else 200
                    receiver.requests.append(Received(dict(self.headers), body, status))
                    receiver.arrived.notify_all()
                if hang:
                    receiver.release.wait(60)
                if status == 200:
                    delivery = self.headers.get("X-StreamSpace-Delivery", "")
                    with receiver.arrived:
                        if delivery in receiver.processed:
                            receiver.duplicates += 1
                        else:
                            receiver.processed[delivery] = body
                        receiver.arrived.notify_all()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: predicate(self), timeout)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
