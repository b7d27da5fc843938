"""Who may read or change a session's files (docs/architecture.md §23).

The caller is authenticated exactly as by the REST API: the API's own authentication classes
(``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``: Bearer JWT, ``Token`` API tokens with
their scopes, the portal's session cookie with its CSRF check on unsafe methods, the MFA
enrolment gate) run on a Django request built from the ASGI scope without its body, so an
upload is decided before a byte of it is read. Then :mod:`sessions_app.access` decides:
reading needs :func:`~sessions_app.access.may_view`, writing
:func:`~sessions_app.access.may_write_files`; a session the caller may not view is a 404,
so ids cannot be probed.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.asgi import ASGIRequest
from django.utils.functional import SimpleLazyObject
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings

from sessions_app.access import may_view, may_write_files
from sessions_app.models import Session, SessionState
from streamspace.api.errors import ServiceError

WRITE_METHODS = frozenset({"PUT", "DELETE"})

_HINTS = {
    SessionState.HIBERNATED: "The session is hibernated: wake it (POST /api/v1/sessions/{id}/wake) and try again.",
    SessionState.HIBERNATING: "The session is hibernating: wake it once it has (POST /api/v1/sessions/{id}/wake).",
    SessionState.WAKING: "The session is waking up: try again in a few seconds.",
    SessionState.PENDING: "The session is starting: try again in a few seconds.",
    SessionState.STARTING: "The session is starting: try again in a few seconds.",
}


@dataclass
class Decision:
    """``status`` 0: allowed (``user``, ``session``); else the error to answer."""

    status: int = 0
    code: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    user: Any = None
    session: Session | None = None
    request: Any = None


def _authenticate(scope: dict) -> tuple[Any, Any]:
    """The API's user for this request (``AnonymousUser`` when no credential came)."""
    django_request = ASGIRequest(scope, io.BytesIO())
    SessionMiddleware(lambda request: None).process_request(django_request)
    django_request.user = SimpleLazyObject(lambda: get_user(django_request))
    request = Request(django_request, authenticators=[cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES])
    return request.user, django_request


def decide(scope: dict, session_id: uuid.UUID, method: str) -> Decision:
    """Authenticate and authorize one files request (runs in a thread: it queries)."""
    try:
        user, django_request = _authenticate(scope)
    except ServiceError as exc:  # MFA enrolment due
        return Decision(exc.status_code, exc.code, exc.detail)
    except exceptions.AuthenticationFailed as exc:
        return Decision(401, "authentication_failed", str(exc.detail))
    except exceptions.PermissionDenied as exc:  # CSRF, a read-only token
        return Decision(403, "permission_denied", str(exc.detail))
    except exceptions.APIException as exc:
        return Decision(exc.status_code, "error", str(exc.detail))
    if not (user and user.is_authenticated):
        return Decision(401, "not_authenticated", "Authentication credentials were not provided.")
    session = Session.objects.only("id", "user_id", "state", "agent_id", "name").filter(pk=session_id).first()
    if session is None or not may_view(user, session):
        return Decision(404, "not_found", "No such session.")
    if method in WRITE_METHODS and not may_write_files(user, session):
        return Decision(403, "permission_denied", "You may look at this session's files but not change them.")
    if session.state != SessionState.RUNNING:
        hint = _HINTS.get(session.state, "The session has ended: launch it again to reach its files.")
        return Decision(409, "session_not_running", hint.format(id=session.pk), extra={"state": session.state})
    if session.agent_id is None:
        return Decision(409, "session_not_running", "The session has no agent.", extra={"state": session.state})
    return Decision(user=user, session=session, request=django_request)
