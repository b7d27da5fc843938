"""``manage.py ensure_local_agent --token-file PATH``: the agent ``make run`` starts.

Creates the Agent ``local`` (platform local) if it is missing, issues it a fresh token
(tokens are stored hashed, so the old one cannot be shown again) and writes the token to
PATH with mode 0600 for ``scripts/run-dev.sh`` to hand to ``streamspace-agent``.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents_app.models import Agent, Platform
from agents_app.tokens import hash_token, new_token
from streamspace.audit.services import record


class Command(BaseCommand):
    help = "Create the local agent if missing, re-issue its token and write it (0600) to --token-file."

    def add_arguments(self, parser):
        parser.add_argument("--token-file", required=True, type=Path)
        parser.add_argument("--agent-id", default="local")

    def handle(self, *args, token_file: Path, agent_id: str, **options):
        token = new_token()
        with transaction.atomic():
            agent, created = Agent.objects.select_for_update().get_or_create(
                agent_id=agent_id,
                defaults={
                    "platform": Platform.LOCAL,
                    "name": "Local processes",
                    "token_hash": hash_token(token),
                    "token_prefix": token[:8],
                },
            )
            if agent.platform != Platform.LOCAL:
                raise CommandError(f"agent {agent_id} exists with platform {agent.platform}, not local")
            if not created:
                agent.token_hash, agent.token_prefix, agent.enabled = hash_token(token), token[:8], True
                agent.save(update_fields=["token_hash", "token_prefix", "enabled"])
            record("agent.create" if created else "agent.token_reissued", target=agent, details={"platform": "local"})
        token_file.parent.mkdir(parents=True, exist_ok=True)
        # Create with 0600 from the start: the token is never readable by others, not even briefly.
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        os.chmod(token_file, 0o600)
        self.stdout.write(f"{'created' if created else 'updated'} agent {agent_id}; token written to {token_file}")
