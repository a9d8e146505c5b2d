"""Break-glass: emergency access to a location a user is not a member of (HIPAA §164.312(a)(2)(ii)).

An admin grants it (admin or ``grant``), for a window of at most ``BreakGlassGrant.MAX_HOURS``,
with a mandatory reason. During the window the user may log in at that location
(``services.login``); the tokens carry the grant (claim ``bg``), end with the window, and stop at
once when the grant is revoked. Every audit event of an action under it carries
``{"break_glass": <grant id>}`` in its details (``services.audit_marks`` and the Principal's
``break_glass_id``).

Its start raises an alert, three ways, so that whichever a hospital watches sees it: a CRITICAL
log line with the marker ``alert=break_glass_start`` (``medai.security``), the Prometheus counter
``medai_break_glass_total{event="granted"}`` (an alert rule can fire on its increase), and the
audit event ``breakglass.grant``. The reason is in the audit only: it may name a patient, and the
log line is for paging, not for reading PHI.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter

from apps.accounts import authcache, revocation
from apps.accounts.models import BreakGlassGrant, Location, User
from apps.audit.models import AuditEvent
from apps.audit.services import record_event

logger = logging.getLogger("medai.security")

BREAK_GLASS_TOTAL = Counter("medai_break_glass", "Break-glass grants by event (granted, revoked, login)", ["event"])

MIN_REASON = 10  # characters: "emergency" alone is not a reason a reviewer can check


class BreakGlassError(ValueError):
    """A grant that cannot be made (the message says why)."""


def check_grant(user: User, location: Location, reason: str, hours: float) -> str:
    """The cleaned reason of a grant that may be made; BreakGlassError naming the field otherwise."""
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON:
        raise BreakGlassError(f"reason: state why emergency access is needed (at least {MIN_REASON} characters)")
    if not 0 < hours <= BreakGlassGrant.MAX_HOURS:
        raise BreakGlassError(f"hours: between 0 and {BreakGlassGrant.MAX_HOURS}")
    if not user.is_active:
        raise BreakGlassError(f"{user.username} is not active")
    if not location.is_active:
        raise BreakGlassError(f"location {location.code} is not active")
    if user.locations.filter(pk=location.pk).exists():
        raise BreakGlassError(f"{user.username} is already a member of {location.code}: no break-glass needed")
    return reason


def grant_break_glass(
    user: User, location: Location, *, reason: str, hours: float, granted_by: Any = None
) -> BreakGlassGrant:
    """Grant ``user`` access to ``location`` for ``hours`` from now, for ``reason``; alert."""
    reason = check_grant(user, location, reason, hours)
    now = timezone.now()
    with transaction.atomic():
        grant = BreakGlassGrant.objects.create(
            user=user,
            location=location,
            reason=reason,
            granted_by=granted_by if isinstance(granted_by, User) else None,
            starts_at=now,
            ends_at=now + timedelta(hours=hours),
        )
        record_event(
            "breakglass.grant",
            actor=granted_by,
            location=location.code,
            obj=grant,
            outcome=AuditEvent.Outcome.SUCCESS,
            details={
                "break_glass": grant.pk,
                "user": user.username,
                "reason": reason,
                "starts_at": grant.starts_at.isoformat(),
                "ends_at": grant.ends_at.isoformat(),
            },
        )
        authcache.invalidate()
        transaction.on_commit(lambda: _alert(grant, granted_by))
    return grant


def _alert(grant: BreakGlassGrant, granted_by: Any) -> None:
    BREAK_GLASS_TOTAL.labels(event="granted").inc()
    logger.critical(
        "alert=break_glass_start grant=%s user=%s location=%s granted_by=%s ends_at=%s",
        grant.pk,
        grant.user.username,
        grant.location.code,
        getattr(granted_by, "username", "-") or "-",
        grant.ends_at.isoformat(),
    )


def revoke_break_glass(grant: BreakGlassGrant, *, actor: Any = None) -> None:
    """End a grant now: its tokens answer 401 at once, its open websockets close with 4401."""
    with transaction.atomic():
        if grant.revoked_at is None:
            grant.revoked_at = timezone.now()
            grant.save(update_fields=["revoked_at"])
        record_event(
            "breakglass.revoke",
            actor=actor,
            location=grant.location.code,
            obj=grant,
            details={"break_glass": grant.pk, "user": grant.user.username},
        )
        authcache.invalidate()
        revocation.notify(grant.user_id)
        transaction.on_commit(lambda: BREAK_GLASS_TOTAL.labels(event="revoked").inc())


def note_login(grant: BreakGlassGrant) -> None:
    """A login under a grant: counted and logged at WARNING (the audit has its own event)."""
    BREAK_GLASS_TOTAL.labels(event="login").inc()
    logger.warning(
        "alert=break_glass_login grant=%s user=%s location=%s", grant.pk, grant.user.username, grant.location.code
    )
