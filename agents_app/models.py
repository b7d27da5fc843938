"""Agents (logical, one token each), their connected replicas, and durable commands."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import models


class Platform(models.TextChoices):
    """Where an agent runs sessions; a template names the platform it needs."""

    DOCKER = "docker", "Docker"
    KUBERNETES = "kubernetes", "Kubernetes"
    LOCAL = "local", "Local processes"


class ProxyMode(models.TextChoices):
    AUTO = "auto", "Auto (direct when reachable, else tunnel)"
    DIRECT = "direct", "Direct"
    TUNNEL = "tunnel", "Tunnel through the agent"


class AgentQuerySet(models.QuerySet):
    """Agents with what the agents API and the operator panel show next to each.

    ``with_replicas_and_counts()`` is two queries for any number of agents: the agents with
    their counts, then their replicas. ``active_session_count`` counts an agent's sessions in
    :attr:`session_states`. Sessions and their states belong to ``sessions_app``, above this
    app (docs/architecture.md, "Dependencies"): it sets those states in its
    ``AppConfig.ready()``, and this app reaches sessions only through the reverse relation
    ``sessions``.
    """

    session_states: ClassVar[tuple[str, ...]] = ()

    def with_replicas(self) -> AgentQuerySet:
        """Prefetch ``instances``: the leader first, then by instance id."""
        return self.prefetch_related(
            models.Prefetch("instances", queryset=AgentInstance.objects.order_by("-is_leader", "instance_id"))
        )

    def with_pending_commands(self) -> AgentQuerySet:
        """Annotate ``pending_command_count``: commands not yet acknowledged (pending or sent)."""
        pending = models.Q(commands__state__in=[CommandState.PENDING, CommandState.SENT])
        return self.annotate(pending_command_count=models.Count("commands", filter=pending, distinct=True))

    def with_session_count(self) -> AgentQuerySet:
        """Annotate ``active_session_count``: the agent's sessions in :attr:`session_states`."""
        if not self.session_states:
            raise ImproperlyConfigured("AgentQuerySet.session_states is set by sessions_app's AppConfig.ready().")
        active = models.Q(sessions__state__in=self.session_states)
        return self.annotate(active_session_count=models.Count("sessions", filter=active, distinct=True))

    def with_replicas_and_counts(self) -> AgentQuerySet:
        """The agents as the agents API and the operator panel list them."""
        return self.with_replicas().with_session_count().with_pending_commands()


class Agent(models.Model):
    """A logical agent such as ``docker-host-1``; its replicas share one token."""

    agent_id = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120, blank=True)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    token_hash = models.CharField(max_length=128, unique=True, help_text="SHA-256 of the token.")
    token_prefix = models.CharField(max_length=12, blank=True, help_text="First characters, to recognise it.")
    proxy_mode = models.CharField(max_length=8, choices=ProxyMode.choices, default=ProxyMode.AUTO)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["agent_id"]

    def __str__(self) -> str:
        return self.agent_id


class AgentInstance(models.Model):
    """One connected (or once connected) replica of an agent, mirrored from presence in Redis."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="instances")
    instance_id = models.CharField(max_length=128)
    pod = models.CharField(max_length=128, blank=True, help_text="Control-plane replica holding the socket.")
    channel_name = models.CharField(max_length=200, blank=True)
    is_leader = models.BooleanField(default=False)
    connected = models.BooleanField(default=False, db_index=True)
    hostname = models.CharField(max_length=255, blank=True)
    version = models.CharField(max_length=64, blank=True)
    capacity = models.JSONField(default=dict, blank=True)
    active_sessions = models.PositiveIntegerField(default=0)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["agent", "instance_id"]
        constraints = [models.UniqueConstraint(fields=["agent", "instance_id"], name="uniq_agent_instance")]

    def __str__(self) -> str:
        return f"{self.agent.agent_id}/{self.instance_id}"


class CommandAction(models.TextChoices):
    START = "start_session"
    STOP = "stop_session"
    HIBERNATE = "hibernate_session"
    WAKE = "wake_session"


class CommandState(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    ACKED = "acked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


class AgentCommand(models.Model):
    """A durable command: the row exists first, the frame is (re-)sent until acked."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="commands")
    session = models.ForeignKey(
        "sessions_app.Session", null=True, blank=True, on_delete=models.CASCADE, related_name="commands"
    )
    action = models.CharField(max_length=32, choices=CommandAction.choices)
    spec = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=CommandState.choices, default=CommandState.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    instance_id = models.CharField(max_length=128, blank=True, help_text="Instance it was last sent to.")
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["agent", "state"])]

    def __str__(self) -> str:
        return f"{self.action} {self.session_id} ({self.state})"
