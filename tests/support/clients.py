"""API clients authenticated the way real callers are."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from streamspace.accounts.models import User


def client_for(user: User | None) -> APIClient:
    """An API client authenticated with a real JWT (or anonymous for None)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


def launch(client: APIClient, slug: str = "xfce", **body: Any) -> Any:
    """``POST /api/v1/sessions`` for template ``slug`` with ``body``'s extra fields."""
    return client.post("/api/v1/sessions", {"template": slug, **body}, format="json")
