"""DRF permissions: each asks ``services.authorize``, the one scope check (also the pipeline's
authorize step and the websocket consumers'), once per request."""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.accounts import services
from apps.accounts.models import SCOPE_AUDIT_READ, SCOPE_CHAT, SCOPE_GPU_READ, SCOPE_READ, SCOPE_SUBMIT
from apps.accounts.services import Forbidden, Principal


def _principal(request: Request) -> Principal | None:
    return request.auth if isinstance(request.auth, Principal) else None


class Authenticated(BasePermission):
    """A caller with a credential, for views whose scope the pipeline's authorize step checks
    (the async submit views): checking it here too would check it twice."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _principal(request) is not None


class _ScopePermission(BasePermission):
    scopes: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = _principal(request)
        if principal is None:
            return False
        try:
            services.authorize(principal, *self.scopes)
        except Forbidden as exc:
            raise PermissionDenied(exc.message, code=exc.code) from None
        return True


class CanSubmit(_ScopePermission):
    """Async work: cancel (submit's own check is the pipeline's authorize step)."""

    scopes = (SCOPE_SUBMIT,)


class CanRate(_ScopePermission):
    """Feedback on an answer: whoever may ask a model (sync or async) may rate its answers."""

    scopes = (SCOPE_CHAT, SCOPE_SUBMIT)


class CanRead(_ScopePermission):
    scopes = (SCOPE_READ,)


class CanReadGpu(_ScopePermission):
    scopes = (SCOPE_GPU_READ,)


class CanListModels(_ScopePermission):
    """The models list serves readers and callers that may only infer (a chat- or submit-only key)."""

    scopes = (SCOPE_READ, SCOPE_CHAT, SCOPE_SUBMIT)


class CanReadAudit(_ScopePermission):
    """The audit trail: the auditor's (and the admin's) scope."""

    scopes = (SCOPE_AUDIT_READ,)


class CanExportFeedback(_ScopePermission):
    """Clinicians' feedback exported for training: auditors and admins (``audit:read`` is theirs alone)."""

    scopes = (SCOPE_AUDIT_READ,)
