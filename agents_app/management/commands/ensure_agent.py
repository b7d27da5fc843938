"""``manage.py ensure_agent AGENT_ID --platform P --token-env VAR``: declare an agent and its token.

For declarative deployments (the compose ``migrate`` service, the Helm chart's migrate Job):
the operator generates the token once (``ssa_`` + 32 random bytes, url-safe), stores it where
both the control plane's job and the agents read it (``.env``, a Kubernetes Secret), and this
command makes the database agree. Idempotent: creates the agent if it is missing, otherwise
re-enables it and replaces the stored hash when the token changed (rotation). The token is
read from an environment variable, never from the command line (visible in ``ps``).
``--proxy-mode`` sets how the control plane reaches the agent's sessions (``tunnel`` where
the control plane shares no network with them, as in the compose deployment).
"""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents_app.models import Agent, Platform, ProxyMode
from agents_app.tokens import TOKEN_PREFIX, hash_token
from streamspace.audit.services import record

MIN_TOKEN_LENGTH = len(TOKEN_PREFIX) + 32


class Command(BaseCommand):
    help = "Create or update an agent so that the token in --token-env authenticates it (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("agent_id")
        parser.add_argument("--platform", choices=Platform.values, required=True)
        parser.add_argument("--token-env", default="AGENT_TOKEN", help="environment variable holding the token")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--proxy-mode", choices=ProxyMode.values, default=None, help="how the proxy reaches its sessions"
        )

    def handle(
        self, *args, agent_id: str, platform: str, token_env: str, name: str, proxy_mode: str | None = None, **options
    ):
        token = os.environ.get(token_env, "").strip()
        if not token.startswith(TOKEN_PREFIX) or len(token) < MIN_TOKEN_LENGTH:
            raise CommandError(
                f"${token_env} must hold a token like {TOKEN_PREFIX}<43 url-safe characters>; generate one with: "
                f"python3 -c 'import secrets; print(\"{TOKEN_PREFIX}\" + secrets.token_urlsafe(32))'"
            )
        digest = hash_token(token)
        with transaction.atomic():
            agent, created = Agent.objects.select_for_update().get_or_create(
                agent_id=agent_id,
                defaults={
                    "platform": platform,
                    "name": name or agent_id,
                    "token_hash": digest,
                    "token_prefix": token[:8],
                    "proxy_mode": proxy_mode or ProxyMode.AUTO,
                },
            )
            if agent.platform != platform:
                raise CommandError(f"agent {agent_id} exists with platform {agent.platform}, not {platform}")
            changed = not created and (agent.token_hash != digest or not agent.enabled)
            if changed:
                agent.token_hash, agent.token_prefix, agent.enabled = digest, token[:8], True
                agent.save(update_fields=["token_hash", "token_prefix", "enabled"])
            if not created and proxy_mode and agent.proxy_mode != proxy_mode:
                agent.proxy_mode = proxy_mode
                agent.save(update_fields=["proxy_mode"])
                record("agent.update", target=agent, details={"proxy_mode": proxy_mode, "source": "ensure_agent"})
                changed = True
            if created or changed:
                action = "agent.create" if created else "agent.token_reissued"
                record(action, target=agent, details={"platform": platform, "source": "ensure_agent"})
        state = "created" if created else ("updated" if changed else "unchanged")
        self.stdout.write(f"agent {agent_id} ({platform}): {state}")
