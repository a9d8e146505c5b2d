from __future__ import annotations

from rest_framework.permissions import BasePermission

from apps.accounts.models import SCOPE_INFERENCE, SCOPE_READ


class _ScopePermission(BasePermission):
    scope = ""
    message = "This credential lacks the required scope."

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        principal = request.auth
        if principal is None or not hasattr(principal, "has_scope"):
            return False
        self.message = f"This credential lacks the '{self.scope}' scope."
        return principal.has_scope(self.scope)


class CanInfer(_ScopePermission):
    scope = SCOPE_INFERENCE


class CanRead(_ScopePermission):
    scope = SCOPE_READ
