"""The role matrix of the Django admin: every registered model × admin / operator / user."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from streamspace.accounts.admin_roles import OPERATOR_ADMIN_RIGHTS
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db

MODELS = sorted(admin.site._registry, key=lambda m: m._meta.label_lower)


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def add_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label_lower)
def test_admin_sees_every_model(model, admin_user, client):
    client.force_login(admin_user)
    assert client.get(changelist(model)).status_code == 200


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label_lower)
def test_operator_sees_platform_models_only(model, operator, client):
    client.force_login(operator)
    rights = OPERATOR_ADMIN_RIGHTS.get(model._meta.label_lower, frozenset())
    assert client.get(changelist(model)).status_code == (200 if "view" in rights else 403)
    if "add" not in rights:
        assert client.get(add_url(model)).status_code == 403


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label_lower)
def test_plain_user_never_reaches_the_admin(model, client):
    client.force_login(make_user("plain"))
    response = client.get(changelist(model), follow=True)
    assert response.status_code == 403


def test_operator_index_lists_only_allowed_models(operator, client):
    client.force_login(operator)
    page = client.get("/admin/").content.decode()
    assert "/admin/sessions_app/template/" in page
    assert "/admin/accounts/user/" not in page and "/admin/plugins_app/plugin/" not in page
