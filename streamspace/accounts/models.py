"""Users and roles.

The role is the single source of truth for privilege: ``admin`` (everything, Django
superuser), ``operator`` (runs the platform: agents, all sessions, catalog; Django admin
access) and ``user``. ``is_staff``/``is_superuser`` are derived from it on save.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from streamspace.accounts import user_cache


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
    # Viewer credentials (viewer tokens and cookies) carry the epoch they were issued in and
    # are valid only while it is current; signing out and changing the password move it on
    # (``accounts.credentials``).
    credentials_epoch = models.PositiveIntegerField(default=0)

    objects = StreamSpaceUserManager()

    class Meta:
        db_table = "accounts_user"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.is_superuser = self.role == Role.ADMIN
        self.is_staff = self.role in (Role.ADMIN, Role.OPERATOR)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "role" in update_fields:
            kwargs["update_fields"] = set(update_fields) | {"is_superuser", "is_staff"}
        adding = self._state.adding
        # set_password() since this row was loaded (Django keeps the raw password until the
        # save; a hash upgrade at sign-in clears it first): a new password revokes every
        # viewer credential issued before it, whichever form or command changed it.
        password_changed = not adding and self._password is not None
        if not adding:
            # The epoch only ever moves forward, in the database (F() + 1): a save of a copy
            # loaded before a sign-out must not write the older epoch back.
            fields = kwargs.get("update_fields")
            if fields is None:
                deferred = self.get_deferred_fields()
                fields = [f.name for f in self._meta.concrete_fields if not f.primary_key and f.attname not in deferred]
            kwargs["update_fields"] = set(fields) - {"credentials_epoch"}
        super().save(*args, **kwargs)
        if password_changed:
            self.revoke_credentials()

    def revoke_credentials(self) -> None:
        """Move the credentials epoch on: every viewer credential issued so far stops working."""
        type(self).objects.filter(pk=self.pk).update(credentials_epoch=models.F("credentials_epoch") + 1)
        self.credentials_epoch = type(self).objects.values_list("credentials_epoch", flat=True).get(pk=self.pk)
        user_cache.forget(self.pk)  # an update sends no post_save

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
    """Links a user to the subject an identity provider asserts (OIDC ``sub``, SAML NameID).

    A subject is only unique within its issuer, so SAML identities are keyed on the entity id
    of the IdP that signed the assertion too: with several IdPs in the metadata, one cannot
    sign in as another's user. ``issuer`` is empty for OIDC (one provider per deployment) and
    for SAML identities recorded before issuers were (bound to their IdP by migration 0004 or
    at their next sign-in, see ``accounts.saml``).
    """

    class Provider(models.TextChoices):
        OIDC = "oidc", "OpenID Connect"
        SAML = "saml", "SAML 2.0"

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="sso_identities")
    provider = models.CharField(max_length=8, choices=Provider.choices)
    issuer = models.CharField(max_length=512, blank=True, default="")
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "issuer", "subject"], name="sso_identity_unique_subject")
        ]

    def __str__(self) -> str:
        issuer = f"{self.issuer}:" if self.issuer else ""
        return f"{self.provider}:{issuer}{self.subject} → {self.user_id}"
