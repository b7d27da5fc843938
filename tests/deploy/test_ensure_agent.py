"""``manage.py ensure_agent``: the declarative agent token the compose file and Helm chart use."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from agents_app.models import Agent
from agents_app.services import agent_for_token
from agents_app.tokens import new_token
from streamspace.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def run(agent_id: str = "docker-compose", platform: str = "docker") -> str:
    out = io.StringIO()
    call_command("ensure_agent", agent_id, "--platform", platform, stdout=out)
    return out.getvalue().strip()


def test_creates_then_is_idempotent_then_rotates(monkeypatch):
    first = new_token()
    monkeypatch.setenv("AGENT_TOKEN", first)
    assert run() == "agent docker-compose (docker): created"
    assert agent_for_token(first).agent_id == "docker-compose"
    assert run() == "agent docker-compose (docker): unchanged"
    assert AuditEvent.objects.filter(action="agent.create").count() == 1

    second = new_token()
    monkeypatch.setenv("AGENT_TOKEN", second)
    assert run() == "agent docker-compose (docker): updated"
    assert agent_for_token(first) is None and agent_for_token(second).agent_id == "docker-compose"
    assert Agent.objects.filter(agent_id="docker-compose").count() == 1


def test_re_enables_a_disabled_agent(monkeypatch):
    token = new_token()
    monkeypatch.setenv("AGENT_TOKEN", token)
    run()
    Agent.objects.filter(agent_id="docker-compose").update(enabled=False)
    assert run().endswith("updated")
    assert agent_for_token(token) is not None


def test_reads_the_named_variable(monkeypatch):
    token = new_token()
    monkeypatch.setenv("K8S_AGENT_TOKEN", token)
    call_command(
        "ensure_agent", "k8s-prod", "--platform", "kubernetes", "--token-env", "K8S_AGENT_TOKEN", stdout=io.StringIO()
    )
    assert agent_for_token(token).platform == "kubernetes"


@pytest.mark.parametrize("value", [None, "", "ssa_short", "x" * 60, "ssa_" + " " * 40])
def test_refuses_missing_or_weak_tokens(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("AGENT_TOKEN", raising=False)
    else:
        monkeypatch.setenv("AGENT_TOKEN", value)
    with pytest.raises(CommandError, match="must hold a token"):
        run()
    assert not Agent.objects.exists()


def test_refuses_an_agent_of_another_platform(monkeypatch):
    monkeypatch.setenv("AGENT_TOKEN", new_token())
    run(platform="docker")
    with pytest.raises(CommandError, match="platform docker"):
        run(platform="kubernetes")


def test_sets_the_proxy_mode_when_given(monkeypatch):
    monkeypatch.setenv("AGENT_TOKEN", new_token())
    out = io.StringIO()
    call_command("ensure_agent", "docker-compose", "--platform", "docker", "--proxy-mode", "tunnel", stdout=out)
    assert Agent.objects.get(agent_id="docker-compose").proxy_mode == "tunnel"
    assert run() == "agent docker-compose (docker): unchanged"  # not given: left as it is
    assert Agent.objects.get(agent_id="docker-compose").proxy_mode == "tunnel"
    out = io.StringIO()
    call_command("ensure_agent", "docker-compose", "--platform", "docker", "--proxy-mode", "auto", stdout=out)
    assert out.getvalue().strip() == "agent docker-compose (docker): updated"
    assert Agent.objects.get(agent_id="docker-compose").proxy_mode == "auto"
    with pytest.raises(CommandError):
        call_command("ensure_agent", "docker-compose", "--platform", "docker", "--proxy-mode", "sideways")
