from django.core.management.base import BaseCommand, CommandError

from agents_app import services
from agents_app.models import Platform
from streamspace.api.errors import ServiceError


class Command(BaseCommand):
    help = "Register an agent and print its token (shown this once; it is stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("agent_id")
        parser.add_argument("--platform", choices=Platform.values, required=True)
        parser.add_argument("--name", default="")

    def handle(self, *args, agent_id: str, platform: str, name: str, **options):
        try:
            agent, token = services.create_agent(agent_id, platform, name=name)
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(token)
