"""Audit, events and the per-account backoff count for authentication, whichever way it happened.

Django sends ``user_logged_in``/``user_login_failed``/``user_logged_out`` from every login
path (allauth forms, the admin, OIDC, SAML and our JSON login), so recording here is the one
place that cannot be bypassed by a new login path. Events go out after commit. A failure
with an account name counts towards that name's backoff (``accounts.throttle``) unless the
attempt was refused unchecked; a sign-in clears it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from streamspace.accounts import credentials, throttle, user_cache
from streamspace.accounts.models import ApiToken, User
from streamspace.accounts.security import refusal, username_from
from streamspace.audit.services import record
from streamspace.events import emit

_BACKEND_METHODS = {
    "OIDCBackend": "oidc",
    "SAMLBackend": "saml",
}


def login_method(user: Any, request: Any) -> str:
    explicit = getattr(request, "streamspace_login_method", None)
    if explicit:
        return explicit
    backend = getattr(user, "backend", "") or ""
    return _BACKEND_METHODS.get(backend.rsplit(".", 1)[-1], "password")


def _emit(event: str, user: User, data: dict[str, Any]) -> None:
    transaction.on_commit(lambda: emit(event, actor=user, data=data))


@receiver(user_logged_in, dispatch_uid="streamspace.accounts.audit_login")
def _on_login(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
    throttle.reset(user.get_username(), user.email)
    method = login_method(user, request)
    details = {"method": method, "mfa": bool(getattr(request, "streamspace_mfa_method", None))}
    record("user.login", actor=user, target=user, request=request, details=details)
    _emit("user.login", user, {"user_id": user.pk, "username": user.username, "method": method})


@receiver(user_login_failed, dispatch_uid="streamspace.accounts.audit_login_failed")
def _on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    refused = refusal(request)
    reason = (
        refused or kwargs.get("reason") or getattr(request, "streamspace_login_error", None) or "invalid_credentials"
    )
    name = username_from(request, credentials) or ""
    if not refused:  # a refused attempt checked nothing: it does not lengthen the backoff
        throttle.record_failure(name)
    record(
        "user.login_failed",
        actor_repr=name[:150] or "anonymous",
        target_type="user",
        request=request,
        details={"reason": reason, "method": getattr(request, "streamspace_login_method", None) or "password"},
    )


@receiver(user_logged_out, dispatch_uid="streamspace.accounts.audit_logout")
def _on_logout(sender: Any, request: Any, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        credentials.revoke(user)  # viewer tokens and cookies do not outlive the sign-out
        record("user.logout", actor=user, target=user, request=request)


@receiver(post_save, sender=User, dispatch_uid="streamspace.accounts.user_created")
def _on_user_created(sender: Any, instance: User, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        _emit("user.created", instance, {"user_id": instance.pk, "username": instance.username, "role": instance.role})


@receiver(post_save, sender=User, dispatch_uid="accounts.user_cache.saved")
@receiver(post_delete, sender=User, dispatch_uid="accounts.user_cache.deleted")
def forget_cached_user(sender: Any, instance: User, **kwargs: Any) -> None:
    """A saved or deleted user is read afresh by the next request (``accounts.user_cache``)."""
    user_cache.forget(instance.pk)


@receiver(post_save, sender=ApiToken, dispatch_uid="accounts.user_cache.token_saved")
@receiver(post_delete, sender=ApiToken, dispatch_uid="accounts.user_cache.token_deleted")
def forget_cached_token(sender: Any, instance: ApiToken, **kwargs: Any) -> None:
    """A token saved or deleted (the admin) is read afresh with its user by the next request."""
    user_cache.forget(instance.user_id)
