from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.defaults import page_not_found, server_error
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.inference import ui
from apps.inference.errors import handler_json
from medai import health, metrics

v1 = [
    path("", include("apps.accounts.api.urls")),
    path("", include("apps.inference.api.urls")),
    path("", include("apps.gpu.api.urls")),
]

urlpatterns = [
    path("", ui.index, name="ui-index"),
    path("admin/", admin.site.urls),
    path("v1/", include(v1)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Every process's metrics, django-prometheus's and medai's (medai/metrics.py).
    path("metrics", metrics.metrics_view, name="prometheus-django-metrics"),
]


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return handler_json(404, "not_found", f"No such endpoint: {request.method} {request.path}.")
    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return handler_json(500, "internal_error", "Internal error; it has been logged with the request id.")
    return server_error(request)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return handler_json(400, "bad_request", "Bad request.")
