"""``manage.py prune_audit [--days N]``: delete audit events past the retention period."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from streamspace.audit.services import prune


class Command(BaseCommand):
    help = "Delete audit events older than AUDIT_RETENTION_DAYS (or --days)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="retention in days (default: AUDIT_RETENTION_DAYS)")

    def handle(self, *args: Any, days: int | None = None, **options: Any) -> None:
        days = settings.AUDIT_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("--days must be at least 1")
        deleted = prune(older_than_days=days)
        self.stdout.write(f"Deleted {deleted} audit event(s) older than {days} day(s).")
