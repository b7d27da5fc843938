"""System checks for the identity settings (``manage.py check --deploy``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def encryption_key_check(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if getattr(settings, "STREAMSPACE_ENCRYPTION_KEY", ""):
        return []
    return [
        Warning(
            "STREAMSPACE_ENCRYPTION_KEY is not set: secrets at rest are encrypted with a key "
            "derived from SECRET_KEY, so rotating SECRET_KEY makes them unreadable.",
            hint="Set STREAMSPACE_ENCRYPTION_KEY to a Fernet key (python -c 'from cryptography.fernet "
            "import Fernet; print(Fernet.generate_key().decode())').",
            id="streamspace.W001",
        )
    ]
