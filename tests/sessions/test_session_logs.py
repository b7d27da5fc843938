"""``GET /api/v1/sessions/<id>/logs`` and the session's page: how a failed workload ended
(exit status, masked and bounded output tail) and how its launch went, for those who may
read it."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from agent_runtime import protocol
from sessions_app import launch_reports
from sessions_app.models import Session, SessionLog, SessionState
from tests.support.clients import client_for
from tests.support.factories import make_session as session_row
from tests.support.factories import make_user, share

pytestmark = pytest.mark.django_db

STEPS = [
    protocol.ProgressStep(step="image", label="Image x is present", state="done", at_s=0.0, duration_s=0.012),
    protocol.ProgressStep(step="workload", label="Process started (pid 7)", state="done", at_s=0.012, duration_s=0.4),
    protocol.ProgressStep(step="stream", label="It died waiting", state="failed", at_s=0.412, duration_s=1.5),
]
TAIL = "booting\nMARKER-logs-9 something broke\nAGENT_TOKEN=fake-agent-token-123\nconnect password=hunter2 ok"


@pytest.fixture
def failed(alice, template, docker_agent) -> Session:
    """A session its agent reported failed, with exit code, output tail and steps."""
    session = session_row(alice, template, docker_agent, state=SessionState.FAILED, status_message="It died.")
    launch_reports.record(session, failing=True, exit_code=3, log_tail=TAIL, progress=STEPS)
    return session


def logs_url(session_id) -> str:
    return f"/api/v1/sessions/{session_id}/logs"


def test_the_owner_reads_exit_code_masked_output_and_steps(alice_client, failed):
    response = alice_client.get(logs_url(failed.pk))
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == str(failed.pk) and body["state"] == "failed" and body["status_message"] == "It died."
    assert body["exit_code"] == 3 and body["log_truncated"] is False and body["captured_at"]
    assert "MARKER-logs-9 something broke" in body["log_tail"]
    assert "fake-agent-token-123" not in body["log_tail"] and "hunter2" not in body["log_tail"]
    assert "AGENT_TOKEN=[REDACTED]" in body["log_tail"] and "password=[REDACTED]" in body["log_tail"]
    assert [(s["step"], s["state"], s["duration_s"]) for s in body["progress"]] == [
        ("image", "done", 0.012),
        ("workload", "done", 0.4),
        ("stream", "failed", 1.5),
    ]


def test_who_may_read_a_sessions_logs(failed, bob, operator, admin_user, anon_client):
    assert client_for(operator).get(logs_url(failed.pk)).status_code == 200
    assert client_for(admin_user).get(logs_url(failed.pk)).status_code == 200
    assert client_for(bob).get(logs_url(failed.pk)).status_code == 404  # cannot even tell it exists
    assert anon_client.get(logs_url(failed.pk)).status_code == 401
    carol = make_user("carol")
    share(failed, carol)
    assert client_for(carol).get(f"/api/v1/sessions/{failed.pk}").status_code == 200  # she sees the session
    refused = client_for(carol).get(logs_url(failed.pk))  # but its output is for those who manage it
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"


@pytest.mark.parametrize("path", ["not-a-uuid", "12345", str(uuid.uuid4()), "%00", "../sessions"])
def test_malformed_or_unknown_ids_are_404(alice_client, failed, path):
    response = alice_client.get(f"/api/v1/sessions/{path}/logs")
    assert response.status_code == 404


def test_output_is_bounded_and_masked_whatever_was_stored(alice_client, alice, template, docker_agent):
    session = session_row(alice, template, docker_agent, state=SessionState.FAILED)
    huge = "".join(f"row {i} " + "z" * 200 + "\n" for i in range(5000))
    launch_reports.record(session, failing=True, exit_code=1, log_tail=huge + "last password=swordfish")
    body = alice_client.get(logs_url(session.pk)).json()
    assert len(body["log_tail"]) <= launch_reports.LOG_TAIL_MAX_CHARS and body["log_truncated"] is True
    assert body["log_tail"].startswith("row ") and body["log_tail"].endswith("last password=[REDACTED]")
    # a row written by other means (an older release, by hand) is masked on the way out too
    SessionLog.objects.filter(session_id=session.pk).update(text="AGENT_TOKEN=plain-secret-value")
    assert alice_client.get(logs_url(session.pk)).json()["log_tail"] == "AGENT_TOKEN=[REDACTED]"


def test_a_session_without_a_failure_has_empty_logs(alice_client, alice, template, docker_agent):
    session = session_row(alice, template, docker_agent, state=SessionState.RUNNING)
    body = alice_client.get(logs_url(session.pk)).json()
    assert body["exit_code"] is None and body["log_tail"] == "" and body["captured_at"] is None
    assert body["progress"] == []
    # only a failure stores an exit status and output
    launch_reports.record(session, failing=False, exit_code=0, log_tail="fine", progress=STEPS[:1])
    body = alice_client.get(logs_url(session.pk)).json()
    assert body["exit_code"] is None and body["log_tail"] == "" and len(body["progress"]) == 1


def test_the_schema_describes_the_logs_endpoint(alice_client):
    schema = alice_client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/sessions/{session_id}/logs"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    properties = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
    assert {"exit_code", "log_tail", "log_truncated", "progress", "captured_at"} <= set(properties)
    session = schema["components"]["schemas"]["Session"]["properties"]
    assert session["progress"]["type"] == "array" and "exit_code" in session


# --- the session's page -------------------------------------------------------------------


def page_of(user, session) -> str:
    browser = Client()
    browser.force_login(user)
    response = browser.get(f"/sessions/{session.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_of_a_failed_session_says_why(alice, failed):
    page = page_of(alice, failed)
    assert "It died." in page and "The session failed" in page
    assert "<code data-exit-code>3</code>" in page
    assert "MARKER-logs-9 something broke" in page and "fake-agent-token-123" not in page
    assert f'data-logs-url="/api/v1/sessions/{failed.pk}/logs"' in page
    # the agent's steps replace the state list, each with how long it took
    assert 'data-step-name="stream" class="is-failed"><span>It died waiting</span>' in page
    assert '<span class="step-duration">1.5 s</span>' in page


def test_a_share_recipient_sees_why_but_not_the_output(failed):
    carol = make_user("carol")
    share(failed, carol)
    page = page_of(carol, failed)
    assert "It died." in page and "<code data-exit-code>3</code>" in page
    assert "MARKER-logs-9" not in page and "data-logs-url" not in page


def test_the_page_of_a_launching_session_shows_the_agents_steps(alice, template, docker_agent):
    session = session_row(alice, template, docker_agent, state=SessionState.STARTING)
    launch_reports.record(session, failing=False, progress=STEPS[:2])
    page = page_of(alice, session)
    assert "Process started (pid 7)" in page and "0.4 s" in page
    assert 'data-failure role="alert" hidden' in page
