"""Login throttling and lockout: django-axes, for ``POST /v1/auth/login`` and the admin login.

Axes counts failed logins per (username, client IP) in the database (exact across processes)
and, after ``MEDAI_LOGIN_FAILURE_LIMIT`` failures (5), refuses that pair for
``MEDAI_LOGIN_LOCKOUT_MINUTES`` (15) whatever the password; a success resets the count. Per pair
rather than per username so that someone who knows a username cannot lock its owner out from
elsewhere; per pair rather than per IP so that one clinic behind one NAT address does not lock
itself out through one user's typos.

``services.login`` hands Django's ``authenticate`` the request (axes needs it) and answers 429
``locked_out`` with ``Retry-After``; this module gives axes' middleware the same answer for the
API and a plain 429 page for the admin, and audits the admin's lockouts (the API's are audited by
``services.login``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axes.signals import user_locked_out  # type: ignore[import-untyped]  # axes ships no type information
from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.audit.models import AuditEvent
from apps.audit.services import record_event

MESSAGE = "Too many failed logins: this account is locked for this address. Try again later."


def lockout_seconds() -> int | None:
    """How long a lockout lasts (axes' cool-off), for ``Retry-After``."""
    cooloff = getattr(settings, "AXES_COOLOFF_TIME", None)
    return int(cooloff.total_seconds()) if isinstance(cooloff, timedelta) else None


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """axes' AXES_LOCKOUT_CALLABLE (called with varying arguments across axes' sync and async
    paths: only the request is used)."""
    retry = lockout_seconds()
    if request.path.startswith("/v1/"):
        response: HttpResponse = JsonResponse(
            {"error": {"message": MESSAGE, "type": "rate_limit_error", "param": None, "code": "locked_out"}},
            status=429,
        )
    else:
        response = HttpResponse(f"<!doctype html><title>Locked out</title><p>{MESSAGE}</p>", status=429)
    if retry:
        response["Retry-After"] = str(retry)
    response["Cache-Control"] = "no-store"
    return response


@receiver(user_locked_out)
def _audit_admin_lockout(sender: Any, request: HttpRequest | None = None, username: str = "", **kwargs: Any) -> None:
    if request is None or request.path.startswith("/v1/"):
        return
    record_event(
        "auth.lockout",
        outcome=AuditEvent.Outcome.DENIED,
        ip=kwargs.get("ip_address") or request.META.get("REMOTE_ADDR"),
        details={"username": username, "where": "admin"},
    )
