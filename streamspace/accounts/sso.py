"""Provisioning of users who sign in through an identity provider (OIDC or SAML).

A user is found by the provider's stable subject (``SSOIdentity``), never by e-mail alone, so
an IdP account cannot take over a local account that happens to share an address. Groups
sent by the IdP become Django groups (kept in sync at every login) and, through the role
map (``OIDC_ROLE_MAP``/``SAML_ROLE_MAP``), the StreamSpace role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from streamspace.accounts import throttle
from streamspace.accounts.models import Role, SSOIdentity, User
from streamspace.accounts.services import set_role
from streamspace.api.client_ip import request_ip
from streamspace.audit.services import record

_ROLE_RANK = {Role.USER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
_USERNAME_SAFE = re.compile(r"[^\w.@+-]")


@dataclass
class ExternalUser:
    """What an identity provider told us about the person signing in.

    ``issuer`` names the provider that vouches for ``subject`` (a SAML IdP's entity id); a
    subject is matched only together with it. Empty for OIDC (one provider per deployment).
    """

    provider: str
    subject: str
    issuer: str = ""
    username: str = ""
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    groups: list[str] = field(default_factory=list)


def role_for_groups(groups: Iterable[str], role_map: dict[str, str]) -> str:
    """The highest role any of ``groups`` maps to (``user`` when none does)."""
    roles = [role_map[g] for g in groups if g in role_map]
    return max(roles, key=lambda r: _ROLE_RANK[r], default=Role.USER)


def _unique_username(wanted: str) -> str:
    base = _USERNAME_SAFE.sub("", wanted)[:140] or "user"
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def provision(external: ExternalUser, *, role_map: dict[str, str], request: Any = None) -> User:
    """Find or create the user for ``external``; sync profile, groups and role."""
    if not external.subject:
        raise ValueError("identity provider sent no subject")
    with transaction.atomic():
        identity = (
            SSOIdentity.objects.select_for_update()
            .select_related("user")
            .filter(provider=external.provider, issuer=external.issuer, subject=external.subject)
            .first()
        )
        if identity is None:
            user = User(
                username=_unique_username(external.username or external.email.split("@")[0] or external.subject),
                email=external.email,
                first_name=external.first_name[:150],
                last_name=external.last_name[:150],
                role=role_for_groups(external.groups, role_map) if role_map else Role.USER,
            )
            user.set_unusable_password()
            user.save()
            try:
                with transaction.atomic():
                    identity = SSOIdentity.objects.create(
                        user=user, provider=external.provider, issuer=external.issuer, subject=external.subject
                    )
            except IntegrityError:  # a parallel first login won the race
                user.delete()
                identity = SSOIdentity.objects.select_related("user").get(
                    provider=external.provider, issuer=external.issuer, subject=external.subject
                )
                user = identity.user
            else:
                record(
                    "user.created",
                    actor=user,
                    target=user,
                    request=request,
                    details={
                        "via": external.provider,
                        "issuer": external.issuer,
                        "subject": external.subject,
                        "role": user.role,
                    },
                )
        else:
            user = identity.user
            changed = []
            for attr in ("email", "first_name", "last_name"):
                value = getattr(external, attr)[: 150 if attr != "email" else 254]
                if value and getattr(user, attr) != value:
                    setattr(user, attr, value)
                    changed.append(attr)
            if changed:
                user.save(update_fields=changed)
        _sync_groups(user, external.groups)
        if role_map:
            set_role(
                user, role_for_groups(external.groups, role_map), actor=None, request=request, via=external.provider
            )
        SSOIdentity.objects.filter(pk=identity.pk).update(last_login_at=timezone.now())
    return user


def _sync_groups(user: User, names: Iterable[str]) -> None:
    wanted = {name[:150] for name in names if name}
    groups = []
    for name in sorted(wanted):
        group, _ = Group.objects.get_or_create(name=name)
        groups.append(group)
    user.groups.set(groups)


def too_many_sso_failures(request: HttpRequest, provider: str) -> HttpResponse | None:
    """Count a refused SSO sign-in from this address; the 429 page once past the limit, else None.

    The per-address SSO failure limit (``accounts.throttle``) only ever changes the answer to
    a refusal: a valid assertion or code signs in whatever came before it from the address.
    """
    wait = throttle.sso_failure(request_ip(request))
    if not wait:
        return None
    response = render(request, "account/sso_error.html", {"provider": provider, "too_many": True}, status=429)
    response["Retry-After"] = str(wait)
    return response
