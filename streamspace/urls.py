from django.contrib import admin
from django.urls import include, path
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from streamspace import health
from streamspace.accounts import sso_urls

api_v1 = [
    path("", include("streamspace.accounts.api.urls")),
    path("", include("sessions_app.api.urls")),
    path("", include("agents_app.api.urls")),
    path("", include("plugins_app.api.urls")),
    path("", include("streamspace.audit.api.urls")),
]

urlpatterns = [
    path("", include("streamspace.portal.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("streamspace.accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("oidc/", include(sso_urls.oidc_urlpatterns)),
    path("saml2/", include(sso_urls.saml_urlpatterns)),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", ExportToDjangoView, name="metrics"),
]
