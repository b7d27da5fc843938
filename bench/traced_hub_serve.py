"""``python -m streamspace.serve`` recording when each agent hub connection passes each stage.

    python bench/traced_hub_serve.py OUT.json <daphne's arguments>

Used by ``bench/hub_bench.py --herd --trace``; not a server to deploy. The product code is
unchanged: the stages are timed by wrapping its methods in this process only. For every
hub connection whose token is ``sim-token-<i>`` it records, on ``time.monotonic()`` (one
clock for the whole machine, so the bench's own timestamps line up), under key ``i``:

* ``tcp``: the front's protocol made for the connection (TCP accepted by the reactor);
* ``head``: the front has the complete request head (the handshake asks for admission);
* ``admitted``: the admission lets it through (handed to daphne);
* ``ws_connect``: the hub's consumer runs ``connect`` (daphne and Channels are done with it);
* ``authed``: its token is looked up (the consumer accepts);
* ``register_in``: the consumer has the ``register`` frame;
* ``db_start`` / ``db_end``: the registration batch holding it runs on the database thread;
* ``redis_end``: the registry write of its batch is done;
* ``registered_sent``: ``registered`` handed to the server.

The file is written on SIGUSR1 (and at exit).
"""

from __future__ import annotations

import atexit
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamspace import serve  # installs nothing of daphne's server yet

OUT = Path(sys.argv.pop(1))
stages: dict[int, dict[str, float]] = {}
_TOKEN = re.compile(rb"Bearer sim-token-(\d+)")


def mark(index: int | None, stage: str) -> None:
    if index is not None:
        stages.setdefault(index, {})[stage] = time.monotonic()


def _index_of_agent(agent_id: str) -> int | None:
    return int(agent_id[4:]) if agent_id.startswith("sim-") else None


def _index_of_scope(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            found = _TOKEN.search(value)
            return int(found.group(1)) if found else None
    return None


def install() -> None:
    """Wrap the front's and the hub's methods (the application is loaded by now)."""
    from agent_runtime import protocol
    from agents_app.hub import consumer, presence, rows
    from streamspace.front import protocol as front

    made, wait, admitted = (
        front.FrontProtocol.connectionMade,
        front.FrontProtocol._wait_for_admission,
        front.FrontProtocol._admitted,
    )

    def connection_made(self: Any) -> None:
        self._bench_tcp = time.monotonic()
        made(self)

    def wait_for_admission(self: Any) -> None:
        found = _TOKEN.search(self.buffer)
        self._bench_index = int(found.group(1)) if found else None
        if self._bench_index is not None:
            stages.setdefault(self._bench_index, {})["tcp"] = self._bench_tcp
        mark(self._bench_index, "head")
        wait(self)

    def on_admitted(self: Any, ticket: Any) -> None:
        mark(getattr(self, "_bench_index", None), "admitted")
        admitted(self, ticket)

    front.FrontProtocol.connectionMade = connection_made
    front.FrontProtocol._wait_for_admission = wait_for_admission
    front.FrontProtocol._admitted = on_admitted

    Consumer = consumer.AgentConsumer
    connect, accept, on_register, send_frame = (
        Consumer.connect,
        Consumer.accept,
        Consumer.on_register,
        Consumer.send_frame,
    )

    async def traced_connect(self: Any) -> None:
        mark(_index_of_scope(self.scope), "ws_connect")
        await connect(self)

    async def traced_accept(self: Any, *args: Any, **kwargs: Any) -> None:
        mark(_index_of_scope(self.scope), "authed")
        await accept(self, *args, **kwargs)

    async def traced_on_register(self: Any, frame: Any) -> None:
        mark(_index_of_scope(self.scope), "register_in")
        await on_register(self, frame)

    async def traced_send_frame(self: Any, payload: Any) -> None:
        if isinstance(payload, protocol.Registered):
            mark(_index_of_scope(self.scope), "registered_sent")
        await send_frame(self, payload)

    Consumer.connect, Consumer.accept = traced_connect, traced_accept
    Consumer.on_register, Consumer.send_frame = traced_on_register, traced_send_frame

    register_many, register_instances = rows.register_many, presence.register_instances

    def traced_register_many(items: list) -> list:
        begun = time.monotonic()
        try:
            return register_many(items)
        finally:
            ended = time.monotonic()
            for item in items:
                index = _index_of_agent(item.agent.agent_id)
                if index is not None:
                    stages.setdefault(index, {}).update(db_start=begun, db_end=ended)

    async def traced_register_instances(arrivals: list) -> list:
        try:
            return await register_instances(arrivals)
        finally:
            for arrival in arrivals:
                mark(_index_of_agent(arrival.agent_id), "redis_end")

    # The consumer looks both up on their modules at each call (``batcher(rows.register_many)``).
    rows.register_many = traced_register_many
    presence.register_instances = traced_register_instances


def dump(*_: Any) -> None:
    OUT.write_text(json.dumps(stages))


_front_enabled = serve.front_enabled


def front_enabled() -> bool:
    """Called by the server's ``run`` once the application is loaded: the place to wrap."""
    install()
    return _front_enabled()


serve.front_enabled = front_enabled
signal.signal(signal.SIGUSR1, dump)
atexit.register(dump)

if __name__ == "__main__":
    serve.main()
