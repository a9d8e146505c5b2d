from __future__ import annotations

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.accounts.models import SCOPE_INFERENCE, SCOPE_READ


class _ScopePermission(BasePermission):
    scope = ""
    message = "This credential lacks the required scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = request.auth
        if principal is None or not hasattr(principal, "has_scope"):
            return False
        self.message = f"This credential lacks the '{self.scope}' scope."
        return principal.has_scope(self.scope)


class CanInfer(_ScopePermission):
    scope = SCOPE_INFERENCE


class CanRead(_ScopePermission):
    scope = SCOPE_READ
