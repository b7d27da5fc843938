from __future__ import annotations

from django.urls import path

from streamspace.portal import ops_views, usage_views, views

app_name = "portal"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("launch/<slug:slug>", views.launch, name="launch"),
    path("catalog/icons/<slug:slug>", views.template_icon, name="template-icon"),
    path("sessions/", views.my_sessions, name="sessions"),
    path("sessions/<uuid:session_id>/", views.session_progress, name="session"),
    path("sessions/<uuid:session_id>/view", views.session_viewer, name="viewer"),
    path("sessions/<uuid:session_id>/<str:action>", views.session_action, name="session-action"),
    path("usage/", usage_views.my_usage, name="usage"),
    path("ops/", ops_views.overview, name="ops"),
    path("ops/agents/", ops_views.agents, name="ops-agents"),
    path("ops/sessions/", ops_views.sessions, name="ops-sessions"),
    path("ops/users/", ops_views.users, name="ops-users"),
    path("ops/users/<int:user_id>/quota", ops_views.user_quota, name="ops-user-quota"),
    path("ops/templates/", ops_views.templates, name="ops-templates"),
    path("ops/templates/new", ops_views.template_edit, name="ops-template-new"),
    path("ops/templates/<slug:slug>", ops_views.template_edit, name="ops-template-edit"),
    path("ops/usage/", usage_views.ops_usage, name="ops-usage"),
    path("ops/plugins/", ops_views.plugins, name="ops-plugins"),
    path("ops/audit/", ops_views.audit, name="ops-audit"),
]
