"""Verbs of the audit trail: append events, the hooks other apps call, verify the chain.

Two ways to append:

* ``record_event`` / ``record_events``: now, in the caller's transaction (a verb that changes
  something writes its event with the change: a key created, a task cancelled, a result read);
* ``record_event_later``: queued for this process's background writer (apps/audit/buffer.py),
  for events on paths that must not wait for a database write (a 401 on the chat path, a
  rate-limit refusal, an API key's use, a status poll). It never does I/O in the caller.

Every event names who (``actor``: a user, or a Principal, whose API key is recorded too), where
(location), from where (IP, user agent) and why (purpose of use): IP, user agent and purpose
default to the current request's (apps/audit/context.py, set by the middleware), the correlation
id to the current one. Details pass through PHI redaction.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from apps.audit import actions, chain
from apps.audit.append import record_events
from apps.audit.buffer import buffer
from apps.audit.chain import GENESIS, Mark, Report
from apps.audit.context import get_correlation_id, get_origin
from apps.audit.models import AuditEvent
from apps.audit.redaction import redact, redact_value

__all__ = ["GENESIS", "Report", "new_event", "record_event", "record_event_later", "record_events", "verify_chain"]


def _ip(value: str | None) -> str | None:
    """The canonical text of an IP (as PostgreSQL's inet gives it back, so the hash still matches
    after a round trip), None if it is not one."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class _Who:
    user_id: int | None = None
    username: str = ""
    api_key_id: int | None = None
    location: str = ""
    organization_id: int | None = None
    break_glass_id: Any = None


def _actor(actor: Any) -> _Who:
    """Who ``actor`` is: a Principal (``user_id``, ``username``, ``api_key_id``, ``location_code``,
    ``organization_id``), a user, or anything with ``pk`` and ``username``."""
    if actor is None:
        return _Who()
    if hasattr(actor, "user_id") and hasattr(actor, "scopes"):
        return _Who(
            actor.user_id or None,
            actor.username or "",
            getattr(actor, "api_key_id", None),
            getattr(actor, "location_code", "") or "",
            getattr(actor, "organization_id", None),
            getattr(actor, "break_glass_id", None),
        )
    return _Who(
        getattr(actor, "pk", None),
        getattr(actor, "username", "") or "",
        None,
        "",
        getattr(actor, "organization_id", None),
    )


def new_event(
    action: str,
    *,
    actor: Any = None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    location: str = "",
    ip: str | None = None,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    details: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    api_key_id: int | None = None,
    user_agent: str | None = None,
    purpose_of_use: str | None = None,
    organization_id: int | None = None,
    created_at: datetime | None = None,
) -> AuditEvent:
    """An unsaved event for ``record_events`` (same arguments as ``record_event``). ``actor`` is a
    user, a Principal or anything with ``pk`` and ``username``. ``ip``, ``user_agent`` and
    ``purpose_of_use`` default to the current request's, ``correlation_id`` to the current one,
    ``location`` to the Principal's, and ``created_at`` to now (a writer appending later passes
    the time the event happened). An action under a break-glass grant is marked in its details."""
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
    who = _actor(actor)
    origin = get_origin()
    details = dict(details or {})
    if who.break_glass_id is not None:
        details.setdefault("break_glass_id", who.break_glass_id)
    if outcome in (AuditEvent.Outcome.FAILURE, AuditEvent.Outcome.DENIED):
        origin.flags.add("refusal")  # the middleware then writes no second event for the 401/403
    purpose = origin.purpose_of_use if purpose_of_use is None else purpose_of_use
    return AuditEvent(
        created_at=created_at or timezone.now(),
        action=action,
        outcome=outcome,
        actor_id=who.user_id,
        actor=who.username[:150],
        api_key_id=api_key_id if api_key_id is not None else who.api_key_id,
        location=(location or who.location or "")[:32],
        organization_id=organization_id if organization_id is not None else who.organization_id,
        correlation_id=get_correlation_id() if correlation_id is None else correlation_id,
        ip=_ip(origin.ip if ip is None else ip),
        user_agent=redact(origin.user_agent if user_agent is None else user_agent)[:256],
        purpose_of_use=redact(purpose)[:64] if purpose else "",
        object_type=object_type[:64],
        object_id=str(object_id)[:64],
        details=redact_value(details),
    )


def record_event(action: str, **kwargs: Any) -> AuditEvent:
    """Append one event to the chain now (arguments: ``new_event``'s)."""
    return record_events([new_event(action, **kwargs)])[0]


def record_event_later(action: str, **kwargs: Any) -> AuditEvent:
    """Queue one event for this process's background writer (arguments: ``new_event``'s, resolved
    now, in the caller's context); never blocks, never queries. In the database within about
    ``MEDAI_RECORD_LINGER_MS``; lost only if the process is killed outright before that.

    Off an event loop, two cases write now instead, in the caller's thread: inside a transaction
    (the event joins it, committed or rolled back with the work it records: a writer thread could
    not see that work), and on SQLite (one writer at a time for the whole database: a second
    writing thread would only contend for the lock the caller's next write needs)."""
    event = new_event(action, **kwargs)
    if not _on_event_loop():
        connection = transaction.get_connection()
        if connection.in_atomic_block:
            return record_events([event])[0]
        if connection.vendor == "sqlite":
            try:
                return record_events([event])[0]
            except DatabaseError:  # locked or down: the writer retries it; the caller's work goes on
                event.pk, event._state.adding = None, True
    buffer.submit(event)
    return event


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# --- hooks other apps call -----------------------------------------------------------------------


def record_limit_rejection(
    principal: Any,
    *,
    code: str,
    message: str = "",
    limit: str = "",
    retry_after: int | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """A request refused by a rate limit or a quota (429): for apps/accounts/governance*, at the
    point it refuses. Off the request path (``record_event_later``): it may run on the event loop.
    ``limit`` names what refused it (``key``, ``user``, ``ip``, ``location:day:tokens``...)."""
    details: dict[str, Any] = {"code": code, "limit": limit, "http_status": 429}
    if message:
        details["message"] = message[:200]
    if retry_after is not None:
        details["retry_after"] = retry_after
    return record_event_later(
        actions.LIMIT_REJECTED, actor=principal, outcome=AuditEvent.Outcome.DENIED, ip=ip, details=details
    )


def record_break_glass(
    actor: Any,
    *,
    step: str,
    grant: Any = None,
    grant_id: Any = None,
    user: Any = None,
    location: str = "",
    reason: str = "",
    expires_at: datetime | None = None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
) -> AuditEvent:
    """A step of a break-glass grant (HIPAA 164.312(a)(2)(ii)): ``step`` is ``grant`` (an admin
    grants ``user`` emergency access to ``location``, with its mandatory ``reason``), ``use`` (an
    action under it), ``revoke`` or ``expire``. Written now, in the caller's transaction. The
    reason is kept (redacted: it is free text); an action under a grant is also marked on its own
    event (``break_glass_id`` in its details) when its Principal carries ``break_glass_id``."""
    if step not in actions.BREAK_GLASS_STEPS:
        raise ValueError(f"break-glass step must be one of {', '.join(actions.BREAK_GLASS_STEPS)}, not {step!r}")
    details: dict[str, Any] = {"step": step, "break_glass_id": str(grant_id or getattr(grant, "pk", "") or "")}
    if user is not None:
        details["user_id"], details["username"] = getattr(user, "pk", None), getattr(user, "username", "")
    if reason:
        details["reason"] = reason[:500]
    if expires_at is not None:
        details["expires_at"] = expires_at.isoformat()
    return record_event(
        f"{actions.BREAK_GLASS}.{step}", actor=actor, outcome=outcome, location=location, obj=grant, details=details
    )


# --- verification --------------------------------------------------------------------------------


def verify_chain(*, marks: list[Mark] | None = None, since: Mark | None = None, batch_size: int = 2000) -> Report:
    """Verify the chain (apps/audit/chain.py ``verify``) against the head row and ``marks``
    (checkpoints; apps/audit/checkpoints.py reads them)."""
    return chain.verify(marks=marks or (), since=since, batch_size=batch_size)
