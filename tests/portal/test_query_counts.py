"""Every page issues a fixed number of queries, however many rows it shows (no N+1)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from plugins_app import registry
from plugins_app.models import Plugin, WebhookDelivery
from plugins_app.theme import current_theme
from sessions_app.models import GroupQuota, Session, SessionState, Template
from streamspace.audit.models import AuditEvent
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db

# Page -> the most queries it may issue, including the session and user lookups (2) of the
# authentication middleware; the catalog and session pages add the quota meters (3), the
# catalog the agents its availability is judged against (1), "My sessions" its "Shared with me"
# list (1, and 1 for the roles when anything is shared). These are exact today; a new N+1
# pushes a page far above.
BUDGETS = {
    "/": 8,
    "/sessions/": 7,
    "/sessions/?history=1": 7,
    "/ops/": 7,
    "/ops/agents/": 4,
    "/ops/sessions/": 6,
    "/ops/sessions/?state=active&user=user3": 6,
    "/ops/users/": 7,
    "/ops/templates/": 3,
    "/ops/templates/new": 2,
    "/ops/plugins/": 5,
    "/ops/audit/": 4,
}


@pytest.fixture
def populated(admin_user, local_agent):
    """40 templates, 30 users in 3 groups, 120 sessions, 60 audit events, 3 plugins."""
    templates = Template.objects.bulk_create(
        Template(slug=f"t{i}", display_name=f"Template {i}", category=f"C{i % 5}", image="registry.local/x:1")
        for i in range(40)
    )
    groups = [Group.objects.create(name=f"g{i}") for i in range(3)]
    for group in groups:
        GroupQuota.objects.create(group=group, max_sessions=5)
    users = [make_user(f"user{i}") for i in range(30)]
    for i, user in enumerate(users):
        user.groups.add(groups[i % 3])
    now = timezone.now()
    states = list(SessionState.values)
    Session.objects.bulk_create(
        Session(
            name=f"s{i}",
            user=users[i % 30] if i % 4 else admin_user,
            template=templates[i % 40],
            state=states[i % len(states)],
            platform="local",
            agent=local_agent,
            cpu_millicores=250,
            memory_mb=128,
            idle_timeout_s=600,
            last_activity=now,
            state_changed_at=now,
        )
        for i in range(120)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(action=f"test.{i}", actor=admin_user, actor_repr="admin") for i in range(60)
    )
    for i in range(3):
        plugin = Plugin.objects.create(name=f"p{i}", type="webhook")
        WebhookDelivery.objects.bulk_create(WebhookDelivery(plugin=plugin, event="session.created") for _ in range(20))
    current_theme()  # the theme is cached between requests; warm it as a running server has
    registry.active()  # and so are the active extensions


@pytest.mark.parametrize(("path", "budget"), BUDGETS.items())
def test_page_query_budget(admin_browser, populated, django_assert_max_num_queries, path, budget):
    with django_assert_max_num_queries(budget):
        response = admin_browser.get(path)
    assert response.status_code == 200


def test_session_pages_query_budget(admin_browser, admin_user, populated, django_assert_max_num_queries):
    session = Session.objects.filter(user=admin_user, state=SessionState.RUNNING).first()
    with django_assert_max_num_queries(4):
        assert admin_browser.get(f"/sessions/{session.pk}/").status_code == 200
    with django_assert_max_num_queries(4):
        assert admin_browser.get(f"/sessions/{session.pk}/view").status_code == 200
