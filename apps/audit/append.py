"""Append events to the audit chain (the one writer every other path goes through)."""

from __future__ import annotations

from django.db import transaction

from apps.audit import chain, keys
from apps.audit.chain import GENESIS
from apps.audit.models import AuditChainHead, AuditEvent


def record_events(events: list[AuditEvent]) -> list[AuditEvent]:
    """Append several events (from ``new_event``) to the chain in one write, in list order.

    The chain head is locked once; each event's ``prev_hash`` is the previous one's hash and its
    hash the HMAC under the current audit key (apps/audit/chain.py), so the result is exactly the
    chain that as many ``record_event`` calls would have written. The rows go in with one
    multi-row INSERT while the head is locked, so their ``seq`` follows list order and no other
    writer can interleave; the head row then names the last one, the count and its own MAC.

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
    kid, key = keys.current()
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1, defaults={"last_hash": GENESIS})
        # A head written before it counted (the legacy segment): counted once, here, under the lock.
        count = head.count if head.count is not None else AuditEvent.objects.count()
        prev = head.last_hash
        for event in events:
            prev = chain.seal(event, prev, kid, key)
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events)
        count += len(events)
        last_seq = events[-1].seq
        AuditChainHead.objects.filter(id=1).update(
            last_hash=prev, last_seq=last_seq, count=count, mac=chain.head_mac(last_seq, prev, count)
        )
    return events
