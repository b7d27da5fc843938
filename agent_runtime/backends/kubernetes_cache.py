"""A list-then-watch cache of one kind of object (client-go's informer, reduced).

:class:`Informer` lists the objects matching a label selector, then watches from the list's
``resourceVersion``; every event updates the cache and is handed to ``on_event``. When the
watch ends (the server's ``timeoutSeconds``), fails, or says the version is too old (410
Gone), it lists again, so the cache converges on the API's truth after any outage. The
backend reads session state from here: a status check costs no API request, and a pod
turning Ready or failing is known as soon as the API server says so.

The official client is blocking, so each informer runs in its own daemon thread; ``on_event``
is called on that thread and must hand over to the event loop itself.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException

WATCH_TIMEOUT_S = 60  # the server ends each watch after this; the informer re-lists
RETRY_MAX_S = 10.0

log = logging.getLogger(__name__)

EventHandler = Callable[[str, dict[str, Any] | None], None]


class Informer:
    """Cache of the objects ``list_fn(namespace, label_selector=...)`` returns, kept by watching."""

    def __init__(
        self, kind: str, list_fn: Callable[..., Any], namespace: str, label_selector: str, on_event: EventHandler
    ):
        self.kind = kind
        self.list_fn = list_fn
        self.namespace = namespace
        self.label_selector = label_selector
        self.on_event = on_event
        self.items: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.lists = 0  # how many times the informer listed (tests and logs)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"k8s-{self.kind}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.items.values())

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.items.get(name)

    def _run(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            try:
                version = self._list()
                delay = 0.5
                self._watch_from(version)
            except ApiException as exc:
                if self._stopped.is_set():
                    return
                if exc.status != 410:
                    log.warning("kubernetes watch of %s failed: %s %s", self.kind, exc.status, exc.reason)
                    self._stopped.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
            except Exception as exc:  # an unreachable API server: retry with backoff, never die
                if self._stopped.is_set():
                    return  # close() cut the connection
                log.warning("kubernetes watch of %s failed: %r", self.kind, exc)
                self._stopped.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _list(self) -> str:
        response = self.list_fn(self.namespace, label_selector=self.label_selector, _preload_content=False)
        body = json.loads(response.data)
        items = {item["metadata"]["name"]: item for item in body.get("items") or []}
        with self._lock:
            self.items = items
            self.lists += 1
        self.synced.set()
        self.on_event("SYNC", None)
        return (body.get("metadata") or {}).get("resourceVersion") or ""

    def _watch_from(self, version: str) -> None:
        self._watch = watch.Watch()
        stream = self._watch.stream(
            self.list_fn,
            self.namespace,
            label_selector=self.label_selector,
            resource_version=version,
            timeout_seconds=WATCH_TIMEOUT_S,
            _request_timeout=WATCH_TIMEOUT_S + 10,
            # Plain dicts: the cache never needs the client's models, and a model that fails
            # the client's validation must not stop the watch.
            deserialize=False,
        )
        for event in stream:
            if self._stopped.is_set():
                return
            kind = event.get("type")
            raw = event.get("object") or {}
            if kind == "ERROR":  # e.g. 410 Gone as an event: list again
                return
            name = (raw.get("metadata") or {}).get("name")
            if not name or kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self.items.pop(name, None)
                else:
                    self.items[name] = raw
            self.on_event(kind, raw)
