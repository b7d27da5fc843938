"""Sessions are shared through ``Share`` rows (a user, a group or a link, with a role) instead of
the ``Session.shared_with`` many-to-many field.

Every user a session was shared with keeps the session as a *collaborator* (without
``may_manage``): the many-to-many field let them view and send input, and never manage.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def copy_shared_with(apps, schema_editor):
    Session = apps.get_model("sessions_app", "Session")
    Share = apps.get_model("sessions_app", "Share")
    through = Session.shared_with.through
    rows = through.objects.using(schema_editor.connection.alias).values_list("session_id", "user_id")
    Share.objects.using(schema_editor.connection.alias).bulk_create(
        [Share(session_id=session_id, user_id=user_id, role="collaborator") for session_id, user_id in rows],
        batch_size=500,
    )


def copy_back(apps, schema_editor):
    Session = apps.get_model("sessions_app", "Session")
    Share = apps.get_model("sessions_app", "Share")
    through = Session.shared_with.through
    rows = Share.objects.using(schema_editor.connection.alias).filter(user__isnull=False)
    through.objects.using(schema_editor.connection.alias).bulk_create(
        [through(session_id=row.session_id, user_id=row.user_id) for row in rows], batch_size=500
    )


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("sessions_app", "0004_template_stream_fields"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Share",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "role",
                    models.CharField(
                        choices=[("viewer", "Viewer"), ("collaborator", "Collaborator")],
                        default="viewer",
                        max_length=16,
                    ),
                ),
                ("link_digest", models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True)),
                (
                    "may_manage",
                    models.BooleanField(
                        default=False, help_text="The recipient may also wake, hibernate and stop the session."
                    ),
                ),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "group",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="session_shares",
                        to="auth.group",
                    ),
                ),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="shares", to="sessions_app.session"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="session_shares",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["created_at", "id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("group__isnull", True), ("link_digest__isnull", True), ("user__isnull", False)),
                            models.Q(("group__isnull", False), ("link_digest__isnull", True), ("user__isnull", True)),
                            models.Q(("group__isnull", True), ("link_digest__isnull", False), ("user__isnull", True)),
                            _connector="OR",
                        ),
                        name="share_has_one_recipient",
                    ),
                    models.UniqueConstraint(fields=("session", "user"), name="share_once_per_user"),
                    models.UniqueConstraint(fields=("session", "group"), name="share_once_per_group"),
                ],
            },
        ),
        migrations.RunPython(copy_shared_with, copy_back),
        migrations.RemoveField(model_name="session", name="shared_with"),
    ]
