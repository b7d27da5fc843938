from django.urls import path

from sessions_app.api import quota_views, share_views, usage_views, views

urlpatterns = [
    path("templates", views.TemplateListView.as_view(), name="template-list"),
    path("templates/<slug:slug>", views.TemplateDetailView.as_view(), name="template-detail"),
    path("sessions", views.SessionListView.as_view(), name="session-list"),
    path("sessions/<uuid:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
    path("sessions/<uuid:session_id>/hibernate", views.SessionHibernateView.as_view(), name="session-hibernate"),
    path("sessions/<uuid:session_id>/wake", views.SessionWakeView.as_view(), name="session-wake"),
    path("sessions/<uuid:session_id>/heartbeat", views.SessionHeartbeatView.as_view(), name="session-heartbeat"),
    path("sessions/<uuid:session_id>/logs", views.SessionLogsView.as_view(), name="session-logs"),
    path("sessions/<uuid:session_id>/viewer-url", views.SessionViewerUrlView.as_view(), name="session-viewer-url"),
    path("sessions/<uuid:session_id>/turn", views.SessionTurnView.as_view(), name="session-turn"),
    path("sessions/<uuid:session_id>/shares", share_views.SessionSharesView.as_view(), name="session-shares"),
    path(
        "sessions/<uuid:session_id>/shares/<int:share_id>",
        share_views.SessionShareDetailView.as_view(),
        name="session-share-detail",
    ),
    path("usage", usage_views.UsageView.as_view(), name="usage"),
    path("users/me/quota", quota_views.MyQuotaView.as_view(), name="my-quota"),
    path("users/<int:user_id>/quota", quota_views.UserQuotaView.as_view(), name="user-quota"),
]
