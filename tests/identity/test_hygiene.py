"""Security hygiene: CORS closed by default, CSRF on the portal, production cookie/HSTS settings,
secrets redacted from logs, sign-up switch, password reset by e-mail, admin login via the portal."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.test import Client

from streamspace.accounts.models import User
from streamspace.logredact import RedactSecretsFilter, redact

pytestmark = pytest.mark.django_db


def preflight(client: Client, origin: str):
    return client.options("/api/v1/templates", HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")


def test_cors_is_closed_by_default(client):
    assert "access-control-allow-origin" not in preflight(client, "https://evil.example")


def test_cors_allows_listed_origins_only(settings, client):
    settings.CORS_ALLOWED_ORIGINS = ["https://portal.example"]
    assert preflight(client, "https://portal.example")["access-control-allow-origin"] == "https://portal.example"
    assert "access-control-allow-origin" not in preflight(client, "https://evil.example")


def test_portal_forms_need_csrf(alice):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/accounts/login/", {"login": "alice", "password": "pw-alice"}).status_code == 403


def _production_settings(extra: dict[str, str]) -> dict[str, str]:
    code = (
        "import django, json, os; os.environ['DJANGO_SETTINGS_MODULE']='streamspace.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(json.dumps({k: getattr(s, k, None) for k in ('SESSION_COOKIE_SECURE','CSRF_COOKIE_SECURE',"
        "'SECURE_HSTS_SECONDS','SECURE_CONTENT_TYPE_NOSNIFF','CORS_ALLOWED_ORIGINS')}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DEBUG": "false", "SECRET_KEY": "x" * 50, **extra})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_production_cookies_and_hsts():
    values = _production_settings({})
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["CORS_ALLOWED_ORIGINS"] == []


def test_deploy_check_warns_without_encryption_key():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STREAMSPACE_ENCRYPTION_KEY")}
    env.update({"DEBUG": "false", "SECRET_KEY": "y" * 50})
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--tag", "security"],
        env=env,
        capture_output=True,
        text=True,
        cwd=django_settings.BASE_DIR,
    )
    assert "streamspace.W001" in out.stdout + out.stderr


@pytest.mark.parametrize(
    "message,secret",
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz", "eyJhbGciOiJIUzI1NiJ9"),
        ("using Token ssp_0a1b2c3d_s3cr3tS3cr3tS3cr3tS3cr3t", "s3cr3tS3cr3t"),
        ('body {"username": "bob", "password": "hunter2!"}', "hunter2!"),
        ("GET /oidc/callback/?code=abcdef123&state=xyz", "abcdef123"),
        ("plugin config client_secret=topsecretvalue url=https://x", "topsecretvalue"),
    ],
)
def test_secrets_are_redacted_from_logs(message, secret, caplog):
    assert secret not in redact(message)
    logger = logging.getLogger("streamspace.test.redaction")
    handler = logging.StreamHandler()
    handler.addFilter(RedactSecretsFilter())
    records: list[str] = []
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    handler.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 1, "%s", (message,), None))
    assert records and secret not in records[0]


def test_logging_config_installs_the_filter():
    handlers = django_settings.LOGGING["handlers"]
    assert all("redact_secrets" in h.get("filters", []) for h in handlers.values())


def test_sign_up_is_off_by_default(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "mallory", "email": "m@example.com", "password1": "A-long-pass-99", "password2": "A-long-pass-99"},
    )
    assert not User.objects.filter(username="mallory").exists()
    assert response.status_code in (200, 403)
    assert "/accounts/signup/" not in client.get("/accounts/login/").content.decode()


def test_sign_up_switch(settings, client):
    settings.STREAMSPACE_SIGNUP_ENABLED = True
    response = client.post(
        "/accounts/signup/",
        {"username": "dave", "email": "d@example.com", "password1": "A-long-pass-99", "password2": "A-long-pass-99"},
    )
    assert response.status_code == 302
    assert User.objects.get(username="dave").role == "user"


def test_password_reset_by_email(alice, client):
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302 and len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    done = client.post(
        form_page.redirect_chain[-1][0] if form_page.redirect_chain else link,
        {"password1": "Brand-new-pass-42", "password2": "Brand-new-pass-42"},
    )
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("Brand-new-pass-42")


def test_password_reset_does_not_reveal_accounts(client):
    response = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert response.status_code == 302  # same answer as for a known address


def test_admin_login_goes_through_the_portal(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_password_change(alice, client):
    client.force_login(alice)
    page = client.get("/accounts/password/change/")
    assert page.status_code == 200 and b'<link rel="stylesheet"' in page.content
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": "pw-alice", "password1": "Another-pass-77", "password2": "Another-pass-77"},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("Another-pass-77")


def test_identity_pages_render_inside_the_portal_layout(alice, client):
    for url in ("/accounts/login/", "/accounts/password/reset/"):
        body = client.get(url).content.decode()
        assert 'class="skip-link"' in body and "<label" in body, url
    client.force_login(alice)
    for url in ("/accounts/security/two-factor/", "/accounts/security/tokens/", "/accounts/logout/"):
        response = client.get(url)
        assert response.status_code == 200 and 'class="skip-link"' in response.content.decode(), url
