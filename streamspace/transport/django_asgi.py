"""Django's HTTP handler under ASGI, with each request's Django work in one worker-thread call.

Every Django view and middleware of the control plane is synchronous. Django's stock
``ASGIHandler`` builds the middleware chain in async mode and adapts each piece: a
``MiddlewareMixin`` middleware then runs every ``process_request``/``process_response``
hook through ``sync_to_async``, a sync-only middleware (WhiteNoise's, the MFA gate) hops
back to the event loop with ``async_to_sync``, ``process_view`` hooks and the view hop once
more, and the ``request_started`` signal and ``response.close()`` hop on their own. Each
hop is a handoff between the event loop and a thread; and the handler starts a new thread
for every request (asgiref's ``ThreadSensitiveContext``). Under load that bookkeeping cost
more CPU than the API's own work (bench/RESULTS.md, "API beside JupyterHub").

:class:`SyncRequestHandler` is Django's ASGI handler with the chain built in sync mode, as
Django builds it under WSGI, and the whole request — ``request_started``, the request
object, middleware, URL resolution, the view, and (for a response that is not streamed)
``response.close()`` with ``request_finished`` — run in one call on a worker thread of a
fixed pool (``STREAMSPACE_REQUEST_THREADS`` threads). Every piece of a request runs on the same thread, so the
thread's database connection is the request's and goes back to the pool at
``request_finished``, as under Django's own handler. The event loop only reads the body
and writes the response, with Django's own ``read_body`` and ``send_response``. A streamed
response (static files) is iterated and closed by Django's code after it is sent. Once a
response that is not streamed is closed, :func:`release` unties the request's objects so
that reference counting frees them (no request leaves work for the cyclic collector).

What Django's handler does that this one does not: it cancels an *async* view when the
client disconnects mid-request; no view of this application is async (a sync view runs to
its end under either handler).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.urls import set_script_prefix


class SyncRequestHandler(ASGIHandler):
    """Django's ``ASGIHandler`` for an application whose views and middleware are all sync.

    ``threads`` (default ``settings.STREAMSPACE_REQUEST_THREADS``) is the size of the pool
    that runs requests; requests beyond it wait their turn in arrival order.
    """

    def __init__(self, threads: int | None = None) -> None:
        base.BaseHandler.__init__(self)  # not ASGIHandler's: that builds the chain in async mode
        self.load_middleware(is_async=False)
        self.threads = threads or settings.STREAMSPACE_REQUEST_THREADS
        self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="django-request")
        self._respond = sync_to_async(self.respond, thread_sensitive=False, executor=self.executor)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            response = await self._respond(scope, body_file)
            await self.send_response(response, send)
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=False, executor=self.executor)()
        finally:
            body_file.close()

    def respond(self, scope: dict, body_file: Any) -> HttpResponseBase:
        """Everything Django does for one request, on the calling (worker) thread."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # as Django's ASGI handler: the server chunks
        if not response.streaming:
            response.close()  # request_finished: this thread's database connection goes back now
            if request is not None:
                release(request, response)
        return response


def release(request: HttpRequest, response: HttpResponseBase) -> None:
    """Untie a finished request's objects from one another, so reference counting frees them.

    Django and DRF tie each request's objects in reference cycles: the messages storage
    and the lazy ``request.user``/``auser`` hold the request that holds them; DRF's view,
    its ``Request`` and the ``Response`` hold one another (``view.response``,
    ``response.renderer_context``, ``parser_context["request"]``). Objects in a cycle are
    freed only by the cyclic garbage collector: about a hundred per request pile up until
    it runs, and it frees them in one pass that holds the GIL, stopping every request in
    the process for as long (bench/RESULTS.md, issue 18, "the latency tail").

    Called once Django is done with the request (the response closed, ``request_finished``
    sent): what goes to the client (status, headers, cookies, content) stays on the
    response; the request's attributes, the renderer's context and the DRF view's and
    request's attributes are dropped.
    """
    context = response.__dict__.pop("renderer_context", None)  # DRF's Response only
    if context:
        for part in (context.get("view"), context.get("request")):
            if part is not None and hasattr(part, "__dict__"):
                part.__dict__.clear()
    request.__dict__.clear()


def get_asgi_application() -> SyncRequestHandler:
    """Set Django up and return the handler (``django.core.asgi.get_asgi_application``'s counterpart)."""
    django.setup(set_prefix=False)
    return SyncRequestHandler()
