"""The per-session stream secrets on the control plane's side: made at launch for a template
that takes them, carried in the start and wake specs with the template's home path, shm size
and read-only flag, and never shown by the API, the portal, the admin or the logs."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from agents_app.models import AgentCommand
from sessions_app.models import Session, SessionState
from sessions_app.state import transition
from tests.support.clients import launch

pytestmark = pytest.mark.django_db


@pytest.fixture
def streamed(template):
    template.stream_auth = True
    template.home_path = "/config"
    template.shm_size_mb = 1024
    template.read_only_root = True
    template.save()
    return template


def test_launch_makes_two_secrets_and_the_specs_carry_them(alice_client, streamed, docker_agent):
    first = Session.objects.get(pk=launch(alice_client).json()["id"])
    second = Session.objects.get(pk=launch(alice_client).json()["id"])
    secrets = {first.stream_secret, first.stream_view_secret, second.stream_secret, second.stream_view_secret}
    assert len(secrets) == 4 and all(len(secret) >= 40 for secret in secrets)
    spec = AgentCommand.objects.get(session=first, action="start_session").spec
    assert spec["stream_secret"] == first.stream_secret
    assert spec["stream_view_secret"] == first.stream_view_secret
    assert spec["home_mount_path"] == "/config" and spec["shm_size_mb"] == 1024 and spec["read_only_root"] is True

    transition(first, SessionState.RUNNING, streaming_ready=True)
    assert alice_client.post(f"/api/v1/sessions/{first.pk}/hibernate").status_code == 202
    transition(Session.objects.get(pk=first.pk), SessionState.HIBERNATED)
    assert alice_client.post(f"/api/v1/sessions/{first.pk}/wake").status_code == 202
    wake = AgentCommand.objects.get(session=first, action="wake_session").spec
    assert (wake["stream_secret"], wake["stream_view_secret"]) == (first.stream_secret, first.stream_view_secret)


def test_a_template_without_stream_auth_makes_no_secrets(alice_client, template, docker_agent):
    session = Session.objects.get(pk=launch(alice_client).json()["id"])
    assert session.stream_secret == "" and session.stream_view_secret == ""
    spec = AgentCommand.objects.get(session=session, action="start_session").spec
    assert spec["stream_secret"] == "" and spec["home_mount_path"] == "" and spec["shm_size_mb"] == 0


def test_the_secrets_are_never_shown(alice, alice_client, admin_user, streamed, docker_agent, caplog):
    caplog.set_level(logging.DEBUG)
    created = launch(alice_client)
    session = Session.objects.get(pk=created.json()["id"])
    hidden = (session.stream_secret, session.stream_view_secret)
    command = AgentCommand.objects.get(session=session)
    pages = [created.content]
    pages += [alice_client.get(url).content for url in ("/api/v1/sessions", f"/api/v1/sessions/{session.pk}")]
    portal = Client()
    portal.force_login(alice)
    for url in ("/sessions/", f"/sessions/{session.pk}/"):
        page = portal.get(url)
        assert page.status_code == 200
        pages.append(page.content)
    admin = Client()
    admin.force_login(admin_user)
    for url in (
        f"/admin/sessions_app/session/{session.pk}/change/",
        f"/admin/agents_app/agentcommand/{command.pk}/change/",
    ):
        page = admin.get(url)
        assert page.status_code == 200
        pages.append(page.content)
    assert b"[REDACTED]" in pages[-1]  # the command's spec, masked
    pages.append("\n".join(record.getMessage() for record in caplog.records).encode())
    for secret in hidden:
        for page in pages:
            assert secret.encode() not in page


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("home_path", "relative/home"),
        ("home_path", "/"),
        ("shm_size_mb", 0),
        ("shm_size_mb", 100_000),
        ("stream_auth", "maybe"),
        ("read_only_root", [1]),
    ],  # fmt: skip
)
def test_bad_template_stream_fields_get_400(operator_client, field, value):
    body = {"slug": "bad", "display_name": "Bad", "image": "x/y:1", field: value}
    response = operator_client.post("/api/v1/templates", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_template_stream_fields_round_trip(operator_client):
    body = {"slug": "desk", "display_name": "Desk", "image": "ghcr.io/streamspace-dev/desktop:1", "home_path": "/home/user",
            "shm_size_mb": 512, "stream_auth": True, "read_only_root": False, "streaming_port": 8080}  # fmt: skip
    response = operator_client.post("/api/v1/templates", body, format="json")
    assert response.status_code == 201, response.content
    assert {k: response.json()[k] for k in body} == body
