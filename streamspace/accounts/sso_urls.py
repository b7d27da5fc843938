"""Routes of the identity providers: ``/oidc/…`` and ``/saml2/…`` (404 while not configured)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import Http404
from django.urls import path
from django.utils.module_loading import import_string
from djangosaml2 import views as saml_views
from mozilla_django_oidc.utils import import_from_settings

from streamspace.accounts.saml import AssertionConsumerServiceView


def _when(flag: str, view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not getattr(settings, flag, False):
            raise Http404(f"{flag} is off")
        return view(request, *args, **kwargs)

    return wrapped  # functools.wraps keeps csrf_exempt of the wrapped view


def _oidc_view(setting: str) -> Callable[..., Any]:
    return _when("OIDC_ENABLED", import_string(import_from_settings(setting)).as_view())


oidc_urlpatterns = [
    path("authenticate/", _oidc_view("OIDC_AUTHENTICATE_CLASS"), name="oidc_authentication_init"),
    path("callback/", _oidc_view("OIDC_CALLBACK_CLASS"), name="oidc_authentication_callback"),
]

saml_urlpatterns = [
    path("login/", _when("SAML_ENABLED", saml_views.LoginView.as_view()), name="saml2_login"),
    path("acs/", _when("SAML_ENABLED", AssertionConsumerServiceView.as_view()), name="saml2_acs"),
    path("logout/", _when("SAML_ENABLED", saml_views.LogoutInitView.as_view()), name="saml2_logout"),
    path("ls/", _when("SAML_ENABLED", saml_views.LogoutView.as_view()), name="saml2_ls"),
    path("ls/post/", _when("SAML_ENABLED", saml_views.LogoutView.as_view()), name="saml2_ls_post"),
    path("metadata/", _when("SAML_ENABLED", saml_views.MetadataView.as_view()), name="saml2_metadata"),
]
