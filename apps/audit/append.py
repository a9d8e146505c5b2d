"""Append events to the audit chain (the one writer every other path goes through)."""

from __future__ import annotations

import time
from typing import Any

from django.db import OperationalError, transaction

from apps.audit import chain, keys, rows
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
    connection = transaction.get_connection()
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        return _append(events)
    # SQLite: BEGIN IMMEDIATE may meet another writer. A file database waits for it (busy_timeout),
    # but a shared-cache database (the tests' in-memory one) answers SQLITE_LOCKED ("database table
    # is locked") at once, which no busy timeout covers: wait for the writer here, bounded.
    deadline = time.monotonic() + 10.0
    pause = 0.005
    while True:
        try:
            return _append(events)
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            for event in events:
                event.pk, event._state.adding = None, True
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _append(events: list[AuditEvent]) -> list[AuditEvent]:
    kid, key = keys.current()
    with transaction.atomic():
        connection = transaction.get_connection()
        head = _locked_head(connection)
        # A head written before it counted (the legacy segment): counted once, here, under the lock.
        count = head[1] if head[1] is not None else AuditEvent.objects.count()
        prev = head[0]
        for event in events:
            prev = chain.seal(event, prev, kid, key)
        if len(events) == 1:
            if not rows.insert_returning_pk(AuditEvent, events[0], connection.alias):  # one statement
                events[0].save(force_insert=True)
        elif connection.vendor == "sqlite" and rows.insert(AuditEvent, events, connection.alias, with_pk=False):
            _number(events, connection)
        else:
            AuditEvent.objects.bulk_create(events)
        count += len(events)
        last_seq = events[-1].seq
        _update_head(connection, prev, last_seq, count, chain.head_mac(last_seq, prev, count))
    return events


def _head_sql(connection: Any) -> tuple[str, str]:
    q = connection.ops.quote_name
    meta = AuditChainHead._meta
    table, pk = q(meta.db_table), q(meta.pk.column)
    col = {f.name: q(f.column) for f in meta.concrete_fields}
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    select = f"SELECT {col['last_hash']}, {col['count']} FROM {table} WHERE {pk} = 1{lock}"
    update = (
        f"UPDATE {table} SET {col['last_hash']} = %s, {col['last_seq']} = %s, {col['count']} = %s, "
        f"{col['mac']} = %s WHERE {pk} = 1"
    )
    return select, update


def _locked_head(connection: Any) -> tuple[str, int | None]:
    """The head row's (last hash, count), locked until the transaction ends (created at the first
    event ever). One plain statement: the ORM's compiler cost more than the read."""
    with connection.cursor() as cursor:
        cursor.execute(_head_sql(connection)[0])
        found = cursor.fetchone()
    if found is not None:
        return found[0], found[1]
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1, defaults={"last_hash": GENESIS})
    return head.last_hash, head.count


def _update_head(connection: Any, last_hash: str, last_seq: int | None, count: int, mac: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_head_sql(connection)[1], [last_hash, last_seq, count, mac])


def _number(events: list[AuditEvent], connection: Any) -> None:
    """The ``seq`` SQLite gave the rows just inserted: consecutive up to the table's largest (the
    write lock is held since the transaction began, and ``seq`` is AUTOINCREMENT)."""
    meta = AuditEvent._meta
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX({q(meta.pk.column)}) FROM {q(meta.db_table)}")
        (last,) = cursor.fetchone()
    for i, event in enumerate(events):
        event.seq = last - len(events) + 1 + i
