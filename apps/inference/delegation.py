"""Work that goes on after its request ended, in its caller's name: a file batch's later parts
(apps.inference.filebatch), a workflow run's later stages (apps.inference.workflows).

The caller is authenticated once, when the work is created; what later steps need of them is kept
on the work's row (``snapshot``: role, scopes, key, break-glass grant, token generation; no
secret), and each later submit goes through the queue's pipeline as that principal
(``principal_from``), after checking that its user may still act there (``refusal``): what ends
their credential (deactivation, a password change, removal from the location, the end of a
break-glass grant, a revoked or expired API key) ends the work's later steps too. The trade-off:
one row read per step instead of a token kept (a kept token would outlive its revocation).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from apps.accounts.models import ApiKey, BreakGlassGrant, User
from apps.accounts.services import Principal
from apps.audit.services import record_event


def snapshot(principal: Principal) -> dict[str, Any]:
    """What a later step needs of the caller, to submit as them and to check they still may."""
    generation = User.objects.filter(pk=principal.user_id).values_list("token_generation", flat=True).first()
    return {
        "username": principal.username,
        "role": principal.role,
        "location_code": principal.location_code,
        "organization_id": principal.organization_id,
        "scopes": sorted(principal.scopes),
        "method": principal.method,
        "api_key_id": principal.api_key_id,
        "break_glass_id": principal.break_glass_id,
        "token_generation": generation,
    }


def principal_from(snap: dict[str, Any] | None, user_id: int | None, location_id: int) -> Principal:
    """The principal a snapshot was taken of (at ``location_id``), to submit later steps as."""
    snap = snap or {}
    return Principal(
        user_id=user_id or 0,
        username=snap.get("username", ""),
        role=snap.get("role", ""),
        location_pk=location_id,
        location_code=snap.get("location_code", ""),
        organization_id=snap.get("organization_id"),
        scopes=frozenset(snap.get("scopes") or ()),
        method=snap.get("method", "jwt"),
        api_key_id=snap.get("api_key_id"),
        break_glass_id=snap.get("break_glass_id"),
    )


def refusal(snap: dict[str, Any] | None, user_id: int | None, location_id: int, what: str) -> tuple[str, str] | None:
    """Why the owner of ``what`` (a batch, a workflow run) may no longer queue its later steps, as
    ``(code, message)``, or None."""
    snap = snap or {}
    user = User.objects.filter(pk=user_id, is_active=True).first() if user_id else None
    if user is None:
        return "user_inactive", f"The {what}'s owner is no longer active: the rest of the {what} is not run."
    if snap.get("token_generation") is not None and user.token_generation != snap["token_generation"]:
        return "credential_revoked", f"The {what} owner's credentials were revoked: the rest of the {what} is not run."
    if snap.get("break_glass_id"):
        allowed = BreakGlassGrant.objects.in_force().filter(pk=snap["break_glass_id"], user=user).exists()
    else:
        allowed = user.locations.filter(pk=location_id, is_active=True).exists()
    if not allowed:
        return "location_denied", f"The {what}'s owner may no longer act at its location: the rest is not run."
    if snap.get("api_key_id"):
        key = ApiKey.objects.select_related("user", "location").filter(pk=snap["api_key_id"]).first()
        if key is None or not key.is_usable:
            return "invalid_api_key", f"The API key the {what} was created with is revoked or expired."
    return None


def record_as_owner(action: str, work: Any, details: dict[str, Any]) -> None:
    """The audit event of something the work (a file batch, a workflow run: a row with ``user_id``,
    ``principal``, ``correlation_id``) did after its request ended, in its owner's name: no IP or
    user agent, since no request is behind it."""
    snap = work.principal or {}
    record_event(
        action,
        actor=SimpleNamespace(pk=work.user_id, username=snap.get("username", "")),
        location=snap.get("location_code", ""),
        organization_id=snap.get("organization_id"),
        obj=work,
        correlation_id=work.correlation_id,
        ip="",
        user_agent="",
        details=details,
    )
