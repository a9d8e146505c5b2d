from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.defaults import page_not_found, server_error
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.inference import ui
from apps.inference.errors import handler_json
from medai import health, metrics
from medai.ops import docs_csp, staff_protected, token_protected

v1 = [
    path("", include("apps.accounts.api.urls")),
    path("", include("apps.inference.api.urls")),
    path("", include("apps.gpu.api.urls")),
]

urlpatterns = [
    path("", ui.index, name="ui-index"),
    path("history/", ui.history, name="ui-history"),
    path("tasks/", ui.tasks, name="ui-tasks"),
    path("system/", ui.system, name="ui-system"),
    path("admin/", admin.site.urls),
    path("v1/", include(v1)),
    path("healthz", health.healthz, name="healthz"),
    # behind a token (readyz, metrics) or a staff login (schema, docs) in production: medai/ops.py
    path("readyz", token_protected(health.readyz), name="readyz"),
    path("api/schema/", staff_protected(SpectacularAPIView.as_view()), name="schema"),
    # the split view serves its start-up script as a file: the docs page needs no inline script (CSP)
    path(
        "api/docs/", staff_protected(docs_csp(SpectacularSwaggerSplitView.as_view(url_name="schema"))), name="api-docs"
    ),
    # Every process's metrics, django-prometheus's and medai's (medai/metrics.py).
    path("metrics", token_protected(metrics.metrics_view), name="prometheus-django-metrics"),
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
