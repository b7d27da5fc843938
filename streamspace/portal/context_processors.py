"""Template context for every page: the theme and the navigation links that exist."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from plugins_app.theme import current_theme

# (label, url name) of account pages; a link is shown only when its URL is installed, so the
# layout works before and after the identity pages (allauth, MFA, API tokens) land.
ACCOUNT_LINKS = (
    ("Account", "account_email"),
    ("Password", "account_change_password"),
    ("Two-factor authentication", "mfa_index"),
    ("API tokens", "account_api_tokens"),
)
# (key, label, url name, who): the main navigation; "operator" links only for operators/admins.
NAV_LINKS = (
    ("catalog", "Catalog", "portal:catalog", "user"),
    ("sessions", "My sessions", "portal:sessions", "user"),
    ("usage", "My usage", "portal:usage", "user"),
    ("ops", "Operations", "portal:ops", "operator"),
)
LOGOUT_URL_NAMES = ("account_logout", "admin:logout")
LOGIN_URL_NAMES = ("account_login", "admin:login")


def _first_url(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


def _account_links() -> list[tuple[str, str]]:
    links = []
    for label, name in ACCOUNT_LINKS:
        try:
            links.append((label, reverse(name)))
        except NoReverseMatch:
            continue
    return links


def _nav(is_operator: bool) -> list[tuple[str, str, str]]:
    links = []
    for key, label, name, who in NAV_LINKS:
        if who == "operator" and not is_operator:
            continue
        try:
            links.append((key, label, reverse(name)))
        except NoReverseMatch:
            continue
    return links


def portal(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    signed_in = bool(user is not None and user.is_authenticated)
    is_operator = signed_in and bool(getattr(user, "is_operator", False))
    return {
        "theme": current_theme(),
        "portal_nav": _nav(is_operator) if signed_in else [],
        "portal_account_links": _account_links() if signed_in else [],
        "portal_logout_url": _first_url(LOGOUT_URL_NAMES),
        "portal_login_url": _first_url(LOGIN_URL_NAMES),
        "portal_is_operator": is_operator,
        "portal_is_admin": signed_in and bool(getattr(user, "is_admin_role", False)),
    }
