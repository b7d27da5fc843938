from django.urls import path

from agents_app.api import views

urlpatterns = [
    path("agents", views.AgentListView.as_view(), name="agent-list"),
    path("agents/<slug:agent_id>", views.AgentDetailView.as_view(), name="agent-detail"),
]
