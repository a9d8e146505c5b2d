"""Verbs of the audit trail: append an event, verify the chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.context import get_correlation_id
from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.redaction import redact_value

GENESIS = "0" * 64


def _digest(prev_hash: str, event: AuditEvent) -> str:
    fields: dict[str, Any] = {
        "created_at": event.created_at.isoformat(),
        "action": event.action,
        "outcome": event.outcome,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "location": event.location,
        "correlation_id": event.correlation_id,
        "ip": event.ip,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "details": event.details,
    }
    # Fields added later are hashed only when set, so events written before them still verify.
    if event.api_key_id is not None:
        fields["api_key_id"] = event.api_key_id
    if event.user_agent:
        fields["user_agent"] = event.user_agent
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def record_event(
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
    api_key_id: int | None = None,
    user_agent: str = "",
) -> AuditEvent:
    """Append one event to the chain. Details pass through PHI redaction first."""
    event = new_event(
        action,
        actor=actor,
        outcome=outcome,
        location=location,
        ip=ip,
        obj=obj,
        object_type=object_type,
        object_id=object_id,
        details=details,
        api_key_id=api_key_id,
        user_agent=user_agent,
    )
    return record_events([event])[0]


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
    user_agent: str = "",
    created_at: datetime | None = None,
) -> AuditEvent:
    """An unsaved event for ``record_events`` (same arguments as ``record_event``; ``actor`` is
    anything with ``pk`` and ``username``). ``correlation_id`` defaults to the current one, and
    ``created_at`` to now (a writer appending later passes the time the event happened)."""
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
    return AuditEvent(
        created_at=created_at or timezone.now(),
        action=action,
        outcome=outcome,
        actor_id=getattr(actor, "pk", None),
        actor=getattr(actor, "username", "") or "",
        api_key_id=api_key_id,
        location=location or "",
        correlation_id=get_correlation_id() if correlation_id is None else correlation_id,
        ip=ip or None,
        user_agent=(user_agent or "")[:256],
        object_type=object_type,
        object_id=object_id,
        details=redact_value(details or {}),
    )


def record_events(events: list[AuditEvent]) -> list[AuditEvent]:
    """Append several events (from ``new_event``) to the chain in one write, in list order.

    The chain head is locked once; each event's ``prev_hash`` is the previous one's hash, so the
    result is exactly the chain that as many ``record_event`` calls would have written. The rows
    go in with one multi-row INSERT while the head is locked, so their ``seq`` follows list order
    and no other writer can interleave.

    Concurrent writers (web processes, workers, the monitor) cannot fork the chain: the head is
    read under a lock held until the caller's transaction commits. On PostgreSQL that is the head
    row's ``SELECT ... FOR UPDATE`` (a second writer waits, then reads the head the first one
    committed; two first writers racing to create the row: the loser's INSERT fails and
    ``get_or_create`` reads the winner's row, locked). On SQLite, ``FOR UPDATE`` does not exist;
    every transaction there starts ``BEGIN IMMEDIATE`` (``transaction_mode`` in settings), so the
    whole database's write lock is taken before the head is read. Called inside a longer
    transaction, the head stays locked until that one commits: append last.
    (tests/audit/test_audit_concurrent_writers.py runs several processes at once on both.)
    """
    if not events:
        return []
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1, defaults={"last_hash": GENESIS})
        prev = head.last_hash
        for event in events:
            event.prev_hash = prev
            event.hash = prev = _digest(prev, event)
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events)
        AuditChainHead.objects.filter(id=1).update(last_hash=prev)
    return events


@dataclass
class ChainReport:
    checked: int
    ok: bool
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(batch_size: int = 2000) -> ChainReport:
    """Recompute every hash in order; report the first event that does not match.

    The chain head is read first, and must be one of the events verified: writers may append
    while this runs (those later events are verified too), but a head that no event carries
    means events were removed from the end."""
    head = AuditChainHead.objects.filter(id=1).values_list("last_hash", flat=True).first()
    head_seen = False
    prev = GENESIS
    checked = 0
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=batch_size):
        if event.prev_hash != prev:
            return ChainReport(checked, False, event.seq, "prev_hash does not match the previous event")
        if _digest(prev, event) != event.hash:
            return ChainReport(checked, False, event.seq, "hash does not match the event's content")
        prev = event.hash
        checked += 1
        head_seen = head_seen or event.hash == head
    if checked and head is None:  # the very first events were written meanwhile, or the head was deleted
        head = AuditChainHead.objects.filter(id=1).values_list("last_hash", flat=True).first()
        if head is None:
            return ChainReport(checked, False, None, "the chain head is missing")
        head_seen = head == prev
    if checked and not head_seen:
        return ChainReport(
            checked, False, None, "no event carries the chain head's hash (events removed from the end?)"
        )
    if not checked and head not in (None, GENESIS):
        return ChainReport(checked, False, None, "the chain head names events that are gone (all removed?)")
    return ChainReport(checked, True)
