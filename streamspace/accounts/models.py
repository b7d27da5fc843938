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

    @property
    def is_admin_role(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_operator(self) -> bool:
        return self.role in (Role.ADMIN, Role.OPERATOR)
