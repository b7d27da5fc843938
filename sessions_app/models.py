"""The catalog (Template), sessions and quotas."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from agents_app.models import Platform


class Template(models.Model):
    """A catalog entry: what a session runs and with which defaults."""

    slug = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=64, blank=True, db_index=True)
    icon = models.CharField(max_length=300, blank=True, help_text="Image URL or a short emoji.")
    image = models.CharField(
        max_length=300,
        blank=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9._/:@-]*$", "Not a container image reference.")],
    )
    command = models.JSONField(
        default=list,
        blank=True,
        help_text="Local backend only: argv list; {port} and {home} are substituted.",
    )
    default_cpu_millicores = models.PositiveIntegerField(default=1000, validators=[MinValueValidator(50)])
    default_memory_mb = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(64)])
    streaming_port = models.PositiveIntegerField(
        default=8080, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    env = models.JSONField(default=dict, blank=True)
    home_path = models.CharField(
        max_length=255,
        blank=True,
        validators=[RegexValidator(r"^/[^\x00]*[^/\x00]$", "An absolute path below /, e.g. /home/user.")],
        help_text="Container images: where the user's home is mounted; empty: the agent's default (/home/user).",
    )
    shm_size_mb = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65536)],
        help_text="Container images: the size of /dev/shm in MiB (browsers and desktops need 512 or more); "
        "empty: the engine's default (64).",
    )
    stream_auth = models.BooleanField(
        default=False,
        help_text="The workload takes per-session stream secrets (STREAMSPACE_STREAM_SECRET, "
        "STREAMSPACE_STREAM_VIEW_SECRET) and requires them as HTTP basic auth; the proxy presents them.",
    )
    read_only_root = models.BooleanField(
        default=False,
        help_text="Docker: the container's root file system is read-only (the home, /tmp and /run stay writable).",
    )
    volume_mounts = models.JSONField(default=list, blank=True, help_text='[{"name", "mount_path", "read_only"}]')
    tags = models.JSONField(default=list, blank=True)
    requires = models.JSONField(
        default=list,
        blank=True,
        help_text='Features the agent\'s host must offer, e.g. ["desktop"] (agents report theirs).',
    )
    idle_timeout_s = models.PositiveIntegerField(null=True, blank=True, help_text="Overrides the site default.")
    enabled = models.BooleanField(default=True, db_index=True)
    platform = models.CharField(
        max_length=16,
        choices=Platform.choices,
        blank=True,
        help_text="Empty: any platform that can run the image (docker or kubernetes).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["category", "display_name"]

    def __str__(self) -> str:
        return self.display_name


class SessionState(models.TextChoices):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    WAKING = "waking"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# States in which a session exists on an agent (counts toward max_sessions).
ACTIVE_STATES = (
    SessionState.PENDING,
    SessionState.STARTING,
    SessionState.RUNNING,
    SessionState.HIBERNATING,
    SessionState.HIBERNATED,
    SessionState.WAKING,
    SessionState.STOPPING,
)
# States in which a session holds CPU and memory (a hibernated session is scaled to zero).
RESOURCE_STATES = tuple(s for s in ACTIVE_STATES if s != SessionState.HIBERNATED)


def _usage_totals() -> dict[str, models.Aggregate]:
    holding = models.Q(state__in=RESOURCE_STATES)
    return {
        "sessions": models.Count("id"),
        "cpu_millicores": models.Sum("cpu_millicores", filter=holding, default=0),
        "memory_mb": models.Sum("memory_mb", filter=holding, default=0),
    }


class SessionQuerySet(models.QuerySet):
    """Who may see and who may change a session, and what sessions hold against a quota.

    Usage is the quota rule of ``sessions_app.quotas``: every session in ``ACTIVE_STATES``
    counts toward ``sessions``; CPU and memory count while it is in ``RESOURCE_STATES``
    (a hibernated session holds none).
    """

    def usage(self) -> dict[str, int]:
        """``{"sessions", "cpu_millicores", "memory_mb"}`` of these sessions (one query)."""
        return self.filter(state__in=ACTIVE_STATES).aggregate(**_usage_totals())

    def usage_by_user(self, *fields: str) -> models.QuerySet:
        """:meth:`usage` per user: rows of ``user_id``, ``fields`` and the three totals (one query)."""
        return self.filter(state__in=ACTIVE_STATES).values("user_id", *fields).annotate(**_usage_totals()).order_by()

    def visible_to(self, user: Any) -> SessionQuerySet:
        """The sessions ``user`` may see: all for an operator, else their own and those shared with them."""
        if getattr(user, "is_operator", False):
            return self
        return self.filter(models.Q(user=user) | models.Q(shared_with=user)).distinct()

    def managed_by(self, user: Any) -> SessionQuerySet:
        """The sessions ``user`` may change (stop, hibernate, wake): all for an operator, else their own."""
        if getattr(user, "is_operator", False):
            return self
        return self.filter(user=user)


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_sessions")
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="sessions")
    state = models.CharField(max_length=16, choices=SessionState.choices, default=SessionState.PENDING, db_index=True)
    platform = models.CharField(max_length=16, choices=Platform.choices, blank=True)
    agent = models.ForeignKey(
        "agents_app.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    cpu_millicores = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    persistent_home = models.BooleanField(default=True)
    idle_timeout_s = models.PositiveIntegerField()
    streaming_ready = models.BooleanField(default=False)
    streaming_port = models.PositiveIntegerField(null=True, blank=True)
    endpoint = models.CharField(max_length=300, blank=True, help_text="host:port the control plane can reach.")
    status_message = models.CharField(max_length=500, blank=True)
    exit_code = models.IntegerField(
        null=True, blank=True, help_text="A failed session: its workload's exit status, as its agent reported it."
    )
    launch_progress = models.JSONField(
        default=list,
        blank=True,
        help_text="The steps of the latest launch or wake as the agent reported them (sessions_app/launch_reports.py).",
    )
    last_activity = models.DateTimeField()
    state_changed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_sessions")
    # The session's stream secrets (docs/architecture.md §17): created at launch when the
    # template takes them, sent to the agent in the start and wake specs, presented upstream
    # by the proxy (sessions_app/proxy/stream_auth.py). Never in the API, the portal or logs.
    stream_secret = models.CharField(max_length=64, blank=True, editable=False)
    stream_view_secret = models.CharField(max_length=64, blank=True, editable=False)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "state"]),
            models.Index(fields=["state", "last_activity"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def viewer_path(self) -> str:
        return viewer_path(self.id)


class SessionLog(models.Model):
    """The end of a session's workload output, as its agent reported it with a failure.

    Its own table, not a column of ``Session``: the session row is read on every API call,
    list and portal broadcast, and a few KiB of text per row would travel with each of
    those; the tail is read only by the logs endpoint and the session's page. One row per
    session (the latest failure's), bounded by ``launch_reports.LOG_TAIL_MAX_CHARS`` and
    masked (``streamspace.logredact``) before it is stored.
    """

    session = models.OneToOneField(Session, primary_key=True, on_delete=models.CASCADE, related_name="log")
    text = models.TextField(blank=True)
    truncated = models.BooleanField(default=False, help_text="The agent's tail was cut to the stored bound.")
    captured_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"log of {self.session_id}"


def viewer_path(session_id: Any) -> str:
    """The proxy path that shows session ``session_id`` (its viewer, through the proxy)."""
    return f"/api/v1/http/{session_id}/"


class QuotaLimits(models.Model):
    """Limits shared by user and group quotas; ``None`` means "not set here"."""

    max_sessions = models.PositiveIntegerField(null=True, blank=True)
    max_cpu_millicores = models.PositiveIntegerField(null=True, blank=True)
    max_memory_mb = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        abstract = True


class UserQuota(QuotaLimits):
    """A user's overrides, and the row locked while the user launches a session."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")

    def __str__(self) -> str:
        return f"quota of {self.user}"


class GroupQuota(QuotaLimits):
    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="quota")
    idle_timeout_s = models.PositiveIntegerField(null=True, blank=True, help_text="Overrides the template's.")

    def __str__(self) -> str:
        return f"quota of group {self.group}"
