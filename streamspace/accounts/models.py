"""Users and roles.

The role is the single source of truth for privilege: ``admin`` (everything, Django
superuser), ``operator`` (runs the platform: agents, all sessions, catalog; Django admin
access) and ``user``. ``is_staff``/``is_superuser`` are derived from it on save.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    USER = "user", "User"


class StreamSpaceUserManager(UserManager):
    def create_superuser(self, username: str, email: str | None = None, password: str | None = None, **extra: Any):
        extra.setdefault("role", Role.ADMIN)
        return super().create_superuser(username, email, password, **extra)


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER, db_index=True)

    objects = StreamSpaceUserManager()

    class Meta:
        db_table = "accounts_user"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.is_superuser = self.role == Role.ADMIN
        self.is_staff = self.role in (Role.ADMIN, Role.OPERATOR)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "role" in update_fields:
            kwargs["update_fields"] = set(update_fields) | {"is_superuser", "is_staff"}
        super().save(*args, **kwargs)

    # Set per request by API-token authentication: a token without the ``admin`` scope acts
    # with user privileges only, whatever the owner's role (never persisted).
    api_token_scope: str | None = None

    @property
    def _privileged_scope(self) -> bool:
        return self.api_token_scope in (None, TokenScope.ADMIN)

    @property
    def is_admin_role(self) -> bool:
        return self.role == Role.ADMIN and self._privileged_scope

    @property
    def is_operator(self) -> bool:
        return self.role in (Role.ADMIN, Role.OPERATOR) and self._privileged_scope


class TokenScope(models.TextChoices):
    READ = "read", "Read (safe methods only)"
    WRITE = "write", "Read and write"
    ADMIN = "admin", "Read, write and the owner's operator/admin rights"


class ApiToken(models.Model):
    """A personal API token for scripts and the CLI (``Authorization: Token <key>``).

    The key is shown once at creation; only its prefix (for lookup and display) and a
    SHA-256 digest are stored. Keys carry 256 bits of entropy, so a plain digest is enough.
    """

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=TokenScope.choices, default=TokenScope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class SSOIdentity(models.Model):
    """Links a user to the subject an identity provider asserts (OIDC ``sub``, SAML NameID)."""

    class Provider(models.TextChoices):
        OIDC = "oidc", "OpenID Connect"
        SAML = "saml", "SAML 2.0"

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="sso_identities")
    provider = models.CharField(max_length=8, choices=Provider.choices)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "subject"], name="sso_identity_unique_subject")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.subject} → {self.user_id}"
