"""Fixtures of the portal tests: signed-in browser clients and a small populated platform."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from sessions_app.models import Session, Template


def browser_for(user) -> Client:
    """A Django test client with a session cookie for ``user`` (as the browser has)."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_browser(alice) -> Client:
    return browser_for(alice)


@pytest.fixture
def bob_browser(bob) -> Client:
    return browser_for(bob)


@pytest.fixture
def operator_browser(operator) -> Client:
    return browser_for(operator)


@pytest.fixture
def admin_browser(admin_user) -> Client:
    return browser_for(admin_user)


@pytest.fixture
def demo_template(db) -> Template:
    return Template.objects.create(
        slug="demo-canvas",
        display_name="Demo canvas",
        description="A tiny built-in session app.",
        category="Demo",
        icon="🎨",
        platform="local",
        command=["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}"],
        default_cpu_millicores=250,
        default_memory_mb=128,
    )


@pytest.fixture
def local_agent(db) -> Agent:
    agent = Agent.objects.create(agent_id="local-1", platform="local", token_hash=hash_token("local-1-token"))
    now = timezone.now()
    AgentInstance.objects.create(
        agent=agent, instance_id="local-1-a", pod="cp-0", is_leader=True, connected=True, last_heartbeat=now
    )
    AgentInstance.objects.create(
        agent=agent, instance_id="local-1-b", pod="cp-1", is_leader=False, connected=True, last_heartbeat=now
    )
    return agent


def make_session(user, template, agent=None, state="running", **extra) -> Session:
    now = timezone.now()
    return Session.objects.create(
        name=extra.pop("name", template.display_name),
        user=user,
        template=template,
        state=state,
        platform=template.platform or "docker",
        agent=agent,
        cpu_millicores=template.default_cpu_millicores,
        memory_mb=template.default_memory_mb,
        idle_timeout_s=1800,
        last_activity=now,
        state_changed_at=now,
        **extra,
    )
