"""Per request: the correlation id, the origin every audit event of the request names (IP, user
agent, ``X-Purpose-Of-Use``), and the audit events of refusals (401, 403, 429) and of admin actions.

Native sync *and* async, so async views do not pay a thread hop for it. What it costs a request
that is answered normally: one header read and two contextvar sets. A refusal's event goes to the
background writer (apps/audit/buffer.py): anyone can send 401s as fast as they like, and none of
them may wait for the chain's lock (nor query on the chat path's event loop).
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.functional import empty

from apps.audit import actions
from apps.audit.admin_trail import admin_request, admin_root
from apps.audit.context import (
    PURPOSE_RE,
    Origin,
    get_correlation_id,
    new_correlation_id,
    reset_correlation_id,
    reset_origin,
    set_correlation_id,
    set_origin,
)
from apps.audit.models import AuditEvent
from apps.audit.services import record_event_later

HEADER = "X-Request-ID"
PURPOSE_HEADER = "X-Purpose-Of-Use"
REFUSALS = {401: actions.UNAUTHENTICATED, 403: actions.FORBIDDEN, 429: actions.LIMIT_REJECTED}


def _bad_purpose(request: HttpRequest) -> HttpResponse:
    message = (
        f"{PURPOSE_HEADER} must be a short code (letters, digits, '.', '_', ':', '/', '-' or spaces; "
        "at most 64 characters), e.g. TREAT or ETREAT."
    )
    if request.path.startswith("/v1/"):
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": PURPOSE_HEADER,
                "code": "invalid_purpose_of_use",
            }
        }
        return JsonResponse(body, status=400)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def _origin(request: HttpRequest) -> Origin | None:
    """The request's origin; None when its purpose of use is malformed."""
    purpose = request.headers.get(PURPOSE_HEADER, "").strip()
    if purpose and not PURPOSE_RE.match(purpose):
        return None
    return Origin(request.META.get("REMOTE_ADDR") or None, request.headers.get("User-Agent", ""), purpose)


def _error_code(response: HttpResponseBase) -> str:
    if getattr(response, "streaming", False) or "json" not in response.get("Content-Type", ""):
        return ""
    try:
        error = json.loads(response.content).get("error")  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return ""
    return str(error.get("code") or "")[:64] if isinstance(error, dict) else ""


def _loaded_user(request: HttpRequest) -> Any:
    """The session's user if something already loaded it; never loads it (a query, which the event
    loop of an async view must not run)."""
    user = request.__dict__.get("user")
    wrapped = getattr(user, "_wrapped", user) if user is not None else None
    if wrapped is None or wrapped is empty:
        return None
    return wrapped if getattr(wrapped, "is_authenticated", False) else None


def _actor(request: HttpRequest) -> Any:
    """Who was refused, when authentication got that far: the Principal (DRF's ``request.auth``,
    or the chat view's), else the session's user (admin)."""
    principal = request.__dict__.get("auth")
    if principal is not None and hasattr(principal, "scopes"):
        return principal
    return _loaded_user(request)


def audit_refusal(request: HttpRequest, response: HttpResponseBase) -> None:
    action = REFUSALS.get(response.status_code)
    if action is None:
        return
    details: dict[str, Any] = {
        "method": request.method,
        "path": request.path[:200],
        "http_status": response.status_code,
        "code": _error_code(response),
    }
    if response.status_code == 429 and response.get("Retry-After"):
        details["retry_after"] = response["Retry-After"]
    record_event_later(action, actor=_actor(request), outcome=AuditEvent.Outcome.DENIED, details=details)


def audit_admin_action(request: HttpRequest, response: HttpResponseBase) -> None:
    """An admin action run from a change list (``action`` + ``_selected_action``): Django writes no
    LogEntry for actions (a deletion by ``delete_selected`` still writes one per object, audited
    as ``admin.delete``)."""
    if request.method != "POST" or not request.path.startswith(admin_root()):
        return
    post = getattr(request, "_post", None)  # only what the admin view itself parsed: never read a body here
    if post is None or "action" not in post or "_selected_action" not in post:
        return
    parts = request.path[len(admin_root()) :].strip("/").split("/")
    record_event_later(
        actions.ADMIN_ACTION,
        actor=_loaded_user(request),
        outcome=AuditEvent.Outcome.SUCCESS if response.status_code < 400 else AuditEvent.Outcome.FAILURE,
        object_type=".".join(parts[:2])[:64],
        details={
            "action": str(post.get("action"))[:100],
            "selected": len(post.getlist("_selected_action")),
            "confirmed": "post" in post,
            "http_status": response.status_code,
        },
    )


def after(request: HttpRequest, response: HttpResponseBase, origin: Origin) -> None:
    if response.status_code in REFUSALS:
        if response.status_code == 429 or "refusal" not in origin.flags:  # a verb (a failed login) said why
            audit_refusal(request, response)
    elif request.method == "POST":
        audit_admin_action(request, response)


class CorrelationIdMiddleware:
    """Give every request a correlation id (the caller's ``X-Request-ID`` or a new one) and an
    origin (IP, user agent, purpose of use) for its audit events; audit its refusals."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        cid = get_correlation_id() or new_correlation_id(request.headers.get(HEADER))  # CorrelationScope's
        request.correlation_id = cid
        token = set_correlation_id(cid)
        try:
            origin = _origin(request)
            if origin is None:
                response = _bad_purpose(request)
            else:
                origin_token = set_origin(origin)
                try:
                    if request.method == "POST" and request.path.startswith(admin_root()):
                        with admin_request():  # old values for the change events (admin_trail)
                            response = self.get_response(request)
                    else:
                        response = self.get_response(request)
                    after(request, response, origin)
                finally:
                    reset_origin(origin_token)
        finally:
            reset_correlation_id(token)
        response[HEADER] = cid
        return response

    async def __acall__(self, request: Any) -> HttpResponseBase:
        cid = get_correlation_id() or new_correlation_id(request.headers.get(HEADER))  # CorrelationScope's
        request.correlation_id = cid
        token = set_correlation_id(cid)
        try:
            origin = _origin(request)
            if origin is None:
                response: HttpResponseBase = _bad_purpose(request)
            else:
                origin_token = set_origin(origin)
                try:
                    if request.method == "POST" and request.path.startswith(admin_root()):
                        with admin_request():  # old values for the change events (admin_trail)
                            response = await self.get_response(request)
                    else:
                        response = await self.get_response(request)
                    after(request, response, origin)
                finally:
                    reset_origin(origin_token)
        finally:
            reset_correlation_id(token)
        response[HEADER] = cid
        return response
