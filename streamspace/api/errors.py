"""One error shape for the whole API: ``{"code": ..., "detail": ...}`` with the right status.

Domain services raise :class:`ServiceError` subclasses; the DRF exception handler below turns
them, and DRF's own exceptions, into that shape. A lost PostgreSQL or Redis connection (a
restart, a failover) is the client's cue to retry, not a bug: 503 ``dependency_unavailable``
with ``Retry-After``, still counted as a dependency error (``got_request_exception``, which
``streamspace.metrics`` listens to). Anything else is a bug and stays a 500.
"""

from __future__ import annotations

from typing import Any

import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ServiceError(Exception):
    """A domain error the caller can act on."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "error"

    def __init__(self, detail: str, *, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.extra = extra or {}


class Conflict(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Forbidden(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class Unavailable(ServiceError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


#: Errors of a dependency that is away for a moment: the connection, not the request, failed.
_UNAVAILABLE = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)
RETRY_AFTER_S = 2


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: every error leaves as ``{"code", "detail"}``."""
    if isinstance(exc, _UNAVAILABLE):
        # Called inside DRF's ``except``: receivers can still read the error from sys.exc_info().
        got_request_exception.send(sender=None, request=context.get("request"))
        dependency = "Redis" if isinstance(exc, redis.RedisError) else "the database"
        return Response(
            {"code": "dependency_unavailable", "detail": f"{dependency} is unavailable for a moment; retry"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(exc, ServiceError):
        return Response({"code": exc.code, "detail": exc.detail, **exc.extra}, status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
    body: dict[str, Any] = {"code": code}
    if isinstance(exc, exceptions.ValidationError):
        body["detail"] = _flatten(exc.detail)
        body["errors"] = exc.detail
    else:
        body["detail"] = str(getattr(exc, "detail", exc))
    response.data = body
    return response
