"""``manage.py ensure_local_agent``: the token ``make run`` hands to the local agent."""

from __future__ import annotations

import stat

import pytest
from django.core.management import CommandError, call_command

from agents_app.models import Agent
from agents_app.services import agent_for_token
from agents_app.tokens import hash_token

pytestmark = pytest.mark.django_db


def test_creates_the_agent_and_writes_the_token_0600(tmp_path):
    token_file = tmp_path / "sub" / "local-agent.token"
    call_command("ensure_local_agent", "--token-file", str(token_file))
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    agent = Agent.objects.get(agent_id="local")
    assert agent.platform == "local" and agent.token_hash == hash_token(token) and token not in agent.token_hash
    assert agent_for_token(token) == agent


def test_reissues_the_token_and_revokes_the_old_one(tmp_path):
    token_file = tmp_path / "t"
    call_command("ensure_local_agent", "--token-file", str(token_file))
    old = token_file.read_text().strip()
    Agent.objects.filter(agent_id="local").update(enabled=False)
    call_command("ensure_local_agent", "--token-file", str(token_file))
    new = token_file.read_text().strip()
    assert new != old and agent_for_token(old) is None and agent_for_token(new).agent_id == "local"
    assert Agent.objects.filter(agent_id="local").count() == 1


def test_refuses_an_agent_of_another_platform(tmp_path):
    Agent.objects.create(agent_id="local", platform="docker", token_hash=hash_token("x"))
    with pytest.raises(CommandError, match="platform docker"):
        call_command("ensure_local_agent", "--token-file", str(tmp_path / "t"))


def test_the_docker_agent_make_run_starts(tmp_path):
    token_file = tmp_path / "docker.token"
    call_command(
        "ensure_local_agent", "--platform", "docker", "--agent-id", "local-docker", "--token-file", str(token_file)
    )
    agent = agent_for_token(token_file.read_text().strip())
    assert (agent.agent_id, agent.platform, agent.name) == ("local-docker", "docker", "Local Docker engine")
    with pytest.raises(CommandError, match="platform docker, not local"):
        call_command("ensure_local_agent", "--agent-id", "local-docker", "--token-file", str(token_file))
