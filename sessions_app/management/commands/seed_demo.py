"""Load the demo catalog and create the demo admin (idempotent)."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from sessions_app.demo_catalog import DEMO_TEMPLATES
from sessions_app.models import Template
from streamspace.accounts.models import Role


class Command(BaseCommand):
    help = "Load the demo catalog; create the user 'admin' with a one-time password if it does not exist."

    def add_arguments(self, parser):
        parser.add_argument("--no-admin", action="store_true", help="Only load the catalog.")

    def handle(self, *args, no_admin: bool = False, **options):
        created = 0
        for entry in DEMO_TEMPLATES:
            _, was_created = Template.objects.update_or_create(slug=entry["slug"], defaults=entry)
            created += was_created
        self.stdout.write(f"Demo catalog: {len(DEMO_TEMPLATES)} templates ({created} new).")
        if no_admin:
            return
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("User 'admin' exists already; its password is unchanged.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_user("admin", email="admin@example.com", password=password, role=Role.ADMIN)
        self.stdout.write(self.style.WARNING(f"Created the admin user: admin / {password}  (shown once; change it)"))
