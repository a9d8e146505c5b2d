"""Who may read the operational endpoints: ``/metrics`` and ``/readyz`` (a bearer token) and the
API schema and docs (a staff login), in production; everyone in development and test.

``/metrics`` names every model, backend and location with its load, ``/readyz`` the database and
Redis with their errors, the schema every endpoint: nothing for the open internet. Prometheus and
a readiness probe can send a header (``authorization`` in a scrape config, ``httpHeaders`` in a
Kubernetes probe), so they take ``Authorization: Bearer $MEDAI_METRICS_TOKEN``; people read the
docs, so those take the admin's staff session (sign in at /admin/). Where these endpoints are
served on a separate, private listener instead, ``MEDAI_OPS_OPEN=1`` opens them. ``/healthz``
(liveness: "the process answers") stays open everywhere: it says nothing else.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse

View = Callable[..., Any]


def _token_ok(request: HttpRequest) -> bool:
    expected = settings.MEDAI_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), expected)


def _refused(request: HttpRequest) -> HttpResponse:
    if not settings.MEDAI_METRICS_TOKEN:
        message = "This endpoint is closed: set MEDAI_METRICS_TOKEN and send it as a bearer token."
    else:
        message = "Send Authorization: Bearer <MEDAI_METRICS_TOKEN>."
    response = JsonResponse({"error": {"code": "unauthorized", "message": message}}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="medai-ops"'
    return response


def token_protected(view: View) -> View:
    """``view`` answers only a request with the metrics token (or a staff session) unless ops are open."""
    if iscoroutinefunction(view):

        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if settings.MEDAI_OPS_OPEN or _token_ok(request):
                return await view(request, *args, **kwargs)
            user = await request.auser()
            if user.is_active and user.is_staff:
                return await view(request, *args, **kwargs)
            return _refused(request)

        return async_wrapper

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if settings.MEDAI_OPS_OPEN or _token_ok(request) or (request.user.is_active and request.user.is_staff):
            return view(request, *args, **kwargs)
        return _refused(request)

    return wrapper


def staff_protected(view: View) -> View:
    """``view`` answers only a staff session (or the metrics token) unless ops are open; a person
    without one is sent to the admin's sign-in page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if settings.MEDAI_OPS_OPEN or _token_ok(request) or (request.user.is_active and request.user.is_staff):
            return view(request, *args, **kwargs)
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)

    return wrapper


def docs_csp(view: View) -> View:
    """The API docs' CSP: the site's, except that Swagger UI adds ``<style>`` elements as it renders
    (its scripts still come from files only). Styles cannot run code; scripts stay 'self'."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = settings.MEDAI_CSP.replace(
            "style-src 'self'", "style-src 'self' 'unsafe-inline'"
        )
        return response

    return wrapper
