"""A query string with a NUL character is refused on the API (400), before any view runs.

PostgreSQL's text type cannot hold NUL, so a filter such as ``?action=%00`` would fail in the
database as a 500; no parameter of the API can meaningfully contain one. (The portal's pages
strip NUL from their filters instead: ``streamspace.portal.queries.text_param``.)
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

API_PREFIX = "/api/"


class RejectNulQueryMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if query and ("%00" in query or "\x00" in query) and request.path.startswith(API_PREFIX):
            return JsonResponse(
                {"code": "malformed_request", "detail": "Query parameters may not contain NUL characters."},
                status=400,
            )
        return self.get_response(request)
