"""The catalog (Template), sessions and quotas."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from agents_app.models import Platform
from sessions_app import icons


class Template(models.Model):
    """A catalog entry: what a session runs and with which defaults."""

    slug = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=64, blank=True, db_index=True)
    icon = models.CharField(
        max_length=300,
        blank=True,
        help_text="An image URL (https://… or a path on this site such as /static/icons/desktop.svg) or an "
        "emoji (the tooltip of a text badge, used only when there is no image).",
    )
    # An uploaded icon (sessions_app.icons): in the database so every replica serves it.
    # Never loaded with catalog rows (queries list their columns); icon_digest versions its URL.
    icon_file = models.BinaryField(blank=True, default=b"", editable=False)
    icon_file_type = models.CharField(max_length=32, blank=True, editable=False)
    icon_digest = models.CharField(max_length=16, blank=True, editable=False)
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
    # Scheduling on cluster platforms (the Kubernetes backend; others ignore them).
    gpu = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(16)], help_text="GPUs each session requests (nvidia.com/gpu)."
    )
    node_selector = models.JSONField(
        default=dict, blank=True, help_text='Kubernetes nodeSelector, e.g. {"streamspace.io/pool": "gpu"}.'
    )
    tolerations = models.JSONField(
        default=list,
        blank=True,
        help_text='Kubernetes tolerations, e.g. [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}].',
    )
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

    def set_icon_file(self, data: bytes, content_type: str) -> None:
        """Keep ``data`` (already checked by ``sessions_app.icon_upload.read_icon``) as the uploaded icon;
        empty ``data`` removes it."""
        self.icon_file, self.icon_file_type = data, content_type if data else ""
        self.icon_digest = icons.digest(data) if data else ""

    @property
    def icon_badge(self) -> dict[str, str]:
        """What the catalog's icon slot shows (``sessions_app.icons.badge``)."""
        return icons.badge(slug=self.slug, display_name=self.display_name, icon=self.icon, icon_digest=self.icon_digest)


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
        """The sessions ``user`` may see: all for an operator, else their own and those shared
        with them (directly or through one of their groups; ``sessions_app.access``)."""
        if getattr(user, "is_operator", False):
            return self
        return self.filter(models.Q(user=user) | models.Q(pk__in=Share.objects.for_user(user).values("session_id")))

    def managed_by(self, user: Any) -> SessionQuerySet:
        """The sessions ``user`` may change (stop, hibernate, wake): all for an operator, else their
        own and those shared with them by a share that says ``may_manage``."""
        if getattr(user, "is_operator", False):
            return self
        managing = Share.objects.for_user(user).filter(may_manage=True).values("session_id")
        return self.filter(models.Q(user=user) | models.Q(pk__in=managing))

    def shared_with(self, user: Any) -> SessionQuerySet:
        """The sessions of others shared with ``user`` (directly or through a group): "Shared with me"."""
        return self.filter(pk__in=Share.objects.for_user(user).values("session_id")).exclude(user=user)


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
    # The session's stream secrets (docs/architecture.md §19): created at launch when the
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


class ShareRole(models.TextChoices):
    """What a share lets its recipient do in the session (docs/architecture.md §22).

    A viewer sees the picture and sends no input; a collaborator sends input too. Neither
    wakes, stops or hibernates the session unless the share says ``may_manage``.
    """

    VIEWER = "viewer", "Viewer"
    COLLABORATOR = "collaborator", "Collaborator"


class ShareQuerySet(models.QuerySet):
    def for_user(self, user: Any) -> ShareQuerySet:
        """Shares to ``user`` directly or to one of their groups (links are nobody's)."""
        if not (user and getattr(user, "is_authenticated", False)):
            return self.none()
        return self.filter(models.Q(user=user) | models.Q(group__in=user.groups.all()))

    def links(self) -> ShareQuerySet:
        return self.filter(link_digest__isnull=False)


class Share(models.Model):
    """One grant of a session to a user, a group or the holders of a link (exactly one of the three).

    A link stores only the SHA-256 of its key: the key is shown once, when the link is
    created. Links expire (``expires_at``); any share ends when its owner (or an operator)
    revokes it, which deletes the row, and when its session is stopped or deleted.
    """

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="shares")
    role = models.CharField(max_length=16, choices=ShareRole.choices, default=ShareRole.VIEWER)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="session_shares"
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="session_shares")
    link_digest = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    may_manage = models.BooleanField(
        default=False, help_text="The recipient may also wake, hibernate and stop the session."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ShareQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                name="share_has_one_recipient",
                condition=(
                    models.Q(user__isnull=False, group__isnull=True, link_digest__isnull=True)
                    | models.Q(user__isnull=True, group__isnull=False, link_digest__isnull=True)
                    | models.Q(user__isnull=True, group__isnull=True, link_digest__isnull=False)
                ),
            ),
            models.UniqueConstraint(fields=["session", "user"], name="share_once_per_user"),
            models.UniqueConstraint(fields=["session", "group"], name="share_once_per_group"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} share of {self.session_id} ({self.role})"

    @property
    def kind(self) -> str:
        return "user" if self.user_id else "group" if self.group_id else "link"


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


class SessionPeriod(models.Model):
    """One stretch of a session's life in one state: the state history usage is computed from.

    ``sessions_app.history`` writes it: every state change closes the session's open period
    (``ended_at``) and opens the next in the same transaction as the change, so a session's
    periods tile its life with no gap and no overlap, and exactly one (the current state's)
    is open until the session is deleted. Owner, template and resources are copied in, so the
    history outlives a deleted session, template or user (the foreign keys become null).
    """

    session = models.ForeignKey(Session, null=True, on_delete=models.SET_NULL, related_name="periods")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    template = models.ForeignKey(Template, null=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=SessionState.choices)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Empty while the session is in this state.")
    cpu_millicores = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["started_at"]),
            models.Index(fields=["ended_at"]),
            models.Index(fields=["session", "ended_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} {self.state} from {self.started_at:%Y-%m-%d %H:%M}"


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
