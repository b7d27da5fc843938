"""Plugin admin routes, plus each available extension's own routes under ``plugins/<name>/``."""

from __future__ import annotations

from django.urls import path

from plugins_app.api import views
from plugins_app.api.extension_urls import extension_patterns

urlpatterns = [
    path("plugins", views.PluginListView.as_view(), name="plugin-list"),
    path("plugins/available", views.AvailableExtensionsView.as_view(), name="plugin-available"),
    path("plugins/<int:pk>", views.PluginDetailView.as_view(), name="plugin-detail"),
    path("plugins/<int:pk>/deliveries", views.DeliveryListView.as_view(), name="plugin-deliveries"),
    path(
        "plugins/<int:pk>/deliveries/<uuid:delivery_id>/redeliver",
        views.RedeliverView.as_view(),
        name="plugin-redeliver",
    ),
    *extension_patterns(),
]
