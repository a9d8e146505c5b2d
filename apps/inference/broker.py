"""medai's django-q2 broker: a durable priority queue in the database, woken through Redis.

Set as ``Q_CLUSTER['broker_class']``. Entries live in ``QueueEntry`` (same database as the
tasks, so an InferenceTask row and its queue entry are written in one transaction).

Order: ``rank = enqueued_epoch - priority * MEDAI_QUEUE_AGING_SECONDS``, smallest first, from one
index on ``(key, rank)``. That is strict CRITICAL > HIGH > NORMAL > LOW between tasks enqueued
within one aging period of each other, FIFO within a level, and the anti-starvation rule: every
``MEDAI_QUEUE_AGING_SECONDS`` (default 60) a task waits counts as one level up, so a LOW task
that waited 3 periods goes before a CRITICAL one that just arrived. Dequeue reads the head of the
index: its cost does not depend on the queue's depth.

Fair shares between locations (``fair_ranks``): within a level, a location's task ranks
``MEDAI_QUEUE_FAIR_TURN_SECONDS`` (1 s) after the last task that location already has queued at
that level, and never before its own enqueue time. One location's batch of 1,000 LOW tasks thus
spreads over 1,000 s of rank, and another location's LOW task submitted 5 s later goes behind only
the first 5 of them, not all 1,000 (start-time fair queueing on the rank, decided at enqueue with
one indexed read per location and level, so that dequeue stays one read of the head). The price:
a location's long backlog ages from its turns, not its submit time (its 1,000th task counts as
enqueued 1,000 s later for anti-starvation too), and a task put back after a lost entry
(``put_again``) ranks from its queue time again. Tasks without a location rank FIFO as before.

Delivery: the head rows are leased (``locked_until = now + lease``) in one statement,
``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`` on PostgreSQL (several
clusters never take the same row, nor wait for each other), the same without the row locks on
SQLite, whose write lock the statement holds (``QueueEntryQuerySet.deliver``; the queries on this
table are that queryset's). A worker that dies leaves the row leased, and it is
delivered again when its lease ends (at-least-once). Keep ``bulk`` and ``queue_limit`` at 1: work
prefetched into a cluster's local queue is no longer reordered.

An entry is never removed before its task reaches a final state. django-q2 acknowledges a
delivery from its monitor process once the task function returns, and also when it raised
(``ack_failure``) or failed ``max_attempts`` times; its pusher calls ``fail`` on a package it cannot
read (signed with another ``SECRET_KEY``, say). ``acknowledge`` and ``fail`` therefore delete only
entries whose task is finished (or gone, or that carry no task): a task still queued (sent back
by its worker) or processing (its worker raised before writing an outcome, or another worker
holds it after a re-delivery) keeps its entry, which is delivered again when its lease ends. An
unreadable package of a live task is signed again (it is rebuilt from the task id) and delivered.

Wake-ups: ``enqueue`` pushes to a Redis list after commit; an idle pusher waits on it with BLPOP
(at most ``poll`` seconds, which also bounds a lost wake-up), so idle pickup takes milliseconds.

No prefetch while every worker is busy: django-q2's pusher would otherwise lease the next entry
(and hold one more in its local queue) while all workers run long requests, and a CRITICAL task
arriving then would wait behind that prefetched work. Workers record themselves in a small
shared array while they run a task (``worker_busy``); the pusher claims only when one is free,
and a worker that finishes wakes it. A worker killed mid-task no longer counts (its pid is dead).
Meanwhile queued work stays in the table, where a worker draining its model takes more urgent
work at once (``apps.inference.queue.claim._claim_urgent``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from django_q.brokers import Broker
from django_q.conf import Conf
from django_q.signing import SignedPackage

from apps.audit import rows
from apps.inference.models import QueueEntry

logger = logging.getLogger("medai.queue")

# pids of this cluster's workers running a task. Created on import, which happens in qcluster's
# main process (django-q2 loads the broker class there) before it forks the sentinel, the workers
# and the pusher, so they all share this memory.
_busy = multiprocessing.Array("i", 64)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def worker_busy() -> Iterator[None]:
    """Mark this worker process busy in the cluster's shared array while a task runs; afterwards
    wake the pusher (a worker is free)."""
    pid = os.getpid()
    with _busy.get_lock():
        for i in range(len(_busy)):
            if _busy[i] in (0, pid) or not _alive(_busy[i]):
                _busy[i] = pid
                break
    try:
        yield
    finally:
        with _busy.get_lock():
            for i in range(len(_busy)):
                if _busy[i] == pid:
                    _busy[i] = 0
        wake(Conf.CLUSTER_NAME)  # the list key of this cluster's queue


def workers_busy() -> int:
    with _busy.get_lock():
        pids = [p for p in _busy[:] if p]
    return sum(1 for p in pids if _alive(p))


TASK_FUNC = "apps.inference.tasks.run_inference"


def task_package(task_id: Any, now: Any = None) -> str:
    """The signed django-q2 package that runs the inference task ``task_id`` (one per entry)."""
    task_id = task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))
    return SignedPackage.dumps(
        {
            "id": task_id.hex,
            "name": f"inference-{task_id}",
            "func": TASK_FUNC,
            "args": (str(task_id),),
            "kwargs": {},
            "ack_failure": True,
            "started": now or timezone.now(),
            "save": False,
        }
    )


def aging_seconds() -> float:
    return settings.MEDAI_QUEUE_AGING_SECONDS


def lease_seconds() -> float:
    return settings.MEDAI_QUEUE_LEASE_SECONDS  # 0 in the environment: settings made it Q_CLUSTER's retry


# 1 µs: far below any gap between two submits, and well above a float's resolution at today's epoch
FIFO_STEP = 1e-6


def rank_for(priority: int, when: Any) -> float:
    return when.timestamp() - int(priority) * aging_seconds()


def fair_ranks(list_key: str, items: list[tuple[int, int | None]], now: Any) -> list[float]:
    """Ranks for new entries ``(priority, location id)`` enqueued together at ``now``: FIFO among
    them, and each ``MEDAI_QUEUE_FAIR_TURN_SECONDS`` after the last entry its location already has
    at its level (one ``tail_rank`` read per location and level)."""
    turn = settings.MEDAI_QUEUE_FAIR_TURN_SECONDS
    tails: dict[tuple[int, int], float | None] = {}
    ranks: list[float] = []
    for i, (priority, location) in enumerate(items):
        rank = rank_for(priority, now) + i * FIFO_STEP
        if location is not None and turn > 0:
            at = (location, int(priority))
            if at not in tails:
                tails[at] = QueueEntry.objects.using(Conf.ORM).tail_rank(list_key, location, int(priority))
            tail = tails[at]
            if tail is not None:
                rank = max(rank, tail + turn)
            tails[at] = rank
        ranks.append(rank)
    return ranks


def wake_key(list_key: str) -> str:
    return f"medai:queue:wake:{list_key}"


_redis = None


def redis_client() -> Any:
    global _redis
    if _redis is None:
        # The wake-up wait is a BLPOP of up to ``poll`` seconds: its reads may take that much longer.
        options = {**settings.REDIS_OPTIONS}
        options["socket_timeout"] = options["socket_timeout"] + max(settings.MEDAI_QUEUE_POLL, 0.1)
        _redis = redis.Redis.from_url(settings.REDIS_URL, **options)
    return _redis


def wake(list_key: str, n: int = 1) -> None:
    """Tell idle pushers (up to ``n``) that work arrived (best effort: the poll bounds a lost wake-up)."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.lpush(wake_key(list_key), *([1] * min(n, 8)))
        pipe.ltrim(wake_key(list_key), 0, 63)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - Redis down only slows pickup to the poll interval
        logger.warning("queue wake-up failed: %s", exc)


def put(list_key: str, payload: str, *, priority: int = 1, task_id: Any = None, now: Any = None) -> int:
    """Insert a queue entry (inside the caller's transaction) and wake a pusher on commit."""
    now = now or timezone.now()
    entry = QueueEntry.objects.using(Conf.ORM).create(
        key=list_key,
        priority=int(priority),
        rank=rank_for(priority, now),
        enqueued_at=now,
        locked_until=now,
        task_id=task_id,
        payload=payload,
    )
    transaction.on_commit(lambda: wake(list_key), using=Conf.ORM)
    return entry.pk


def put_many(
    list_key: str, items: list[tuple[str, int, Any]], *, now: Any = None, locations: list[int | None] | None = None
) -> None:
    """Insert entries for ``(payload, priority, task_id)`` items with one multi-row INSERT (inside
    the caller's transaction) and wake a pusher once on commit. Items enqueued together keep their
    order within a level: each ranks ``FIFO_STEP`` after the previous one; with ``locations`` (each
    item's), each takes its location's next fair turn (``fair_ranks``)."""
    if not items:
        return
    now = now or timezone.now()
    where = locations if locations is not None else [None] * len(items)
    ranks = fair_ranks(
        list_key, [(int(priority), loc) for (_, priority, _), loc in zip(items, where, strict=True)], now
    )
    entries = [
        QueueEntry(
            key=list_key,
            priority=int(priority),
            rank=rank,
            enqueued_at=now,
            locked_until=now,
            task_id=task_id,
            location_id=location,
            payload=payload,
        )
        for (payload, priority, task_id), rank, location in zip(items, ranks, where, strict=True)
    ]
    if not rows.insert(QueueEntry, entries, Conf.ORM, with_pk=False):  # compiled once (apps/audit/rows.py)
        QueueEntry.objects.using(Conf.ORM).bulk_create(entries)
    transaction.on_commit(lambda: wake(list_key, len(entries)), using=Conf.ORM)


def put_again(list_key: str, items: list[tuple[str, int, Any, Any]], *, now: Any = None) -> None:
    """Re-insert entries for ``(payload, priority, task_id, queued_at)`` at the rank they were first
    given (a task sent back to the queue keeps its place), waking pushers on commit."""
    if not items:
        return
    now = now or timezone.now()
    QueueEntry.objects.using(Conf.ORM).bulk_create(
        [
            QueueEntry(
                key=list_key,
                priority=int(priority),
                rank=rank_for(priority, queued_at),
                enqueued_at=now,
                locked_until=now,
                task_id=task_id,
                payload=payload,
            )
            for payload, priority, task_id, queued_at in items
        ]
    )
    transaction.on_commit(lambda: wake(list_key, len(items)), using=Conf.ORM)


_inherited: list[Any] = []  # a parent's connections and pools, kept referenced so they are never closed here


def forget_inherited_connections() -> None:
    """In a forked child (django-q2 forks workers from the sentinel, also to replace a recycled or
    killed one): drop the database connections and psycopg pools inherited from the parent, without
    closing them (closing would end the parent's sessions on their shared sockets), so the child
    opens its own. Without this, a worker forked after the sentinel used the database (its
    scheduler does) shares the parent's pooled connections: interleaved protocol errors, and
    PoolTimeout because a pool's filler threads do not survive a fork."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _inherited.append(conn.connection)
            conn.connection = None
        conn.in_atomic_block = False
        conn.savepoint_ids = []
        conn.needs_rollback = False
        conn.run_on_commit = []
        conn.closed_in_transaction = False
    try:
        from django.db.backends.postgresql.base import DatabaseWrapper
    except ImportError:  # psycopg not installed: no pools
        return
    pools = DatabaseWrapper._connection_pools  # type: ignore[attr-defined]  # Django's private class dict
    _inherited.extend(pools.values())
    pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_inherited_connections)


class PriorityBroker(Broker):
    """django-q2 broker over ``QueueEntry``; see the module docstring for order and leases."""

    def info(self) -> str:
        return f"medai priority broker ({Conf.ORM})"

    def ping(self) -> bool:
        return True

    def enqueue(self, task: str) -> int:
        # A plain async_task(...): read an optional priority from the signed package.
        try:
            package = SignedPackage.loads(task)
            priority = int((package.get("kwargs") or {}).get("priority", 1))
        except Exception:  # noqa: BLE001
            priority = 1
        return put(self.list_key, task, priority=priority)

    def _claim(self) -> list[tuple[int, str]]:
        """Lease the head of the queue (``Conf.BULK`` entries) as a delivery: one statement
        (``QueueEntryQuerySet.deliver``); ``deliveries`` counts how often an entry was handed out (a
        re-delivery after a lease ends)."""
        now = timezone.now()
        until = now + timedelta(seconds=lease_seconds())
        return QueueEntry.objects.using(Conf.ORM).deliver(self.list_key, now, max(Conf.BULK, 1), until)

    def dequeue(self) -> list[tuple[int, str]] | None:
        if transaction.get_autocommit(using=Conf.ORM):
            close_old_connections()
        tasks = self._claim() if workers_busy() < Conf.WORKERS else None
        if tasks:
            return tasks
        try:
            redis_client().blpop([wake_key(self.list_key)], timeout=max(float(Conf.POLL), 0.1))
        except Exception:  # noqa: BLE001 - fall back to polling
            time.sleep(Conf.POLL)
        return None

    def queue_size(self) -> int:
        return QueueEntry.objects.using(Conf.ORM).ready(self.list_key, timezone.now()).count()

    def lock_size(self) -> int:
        return QueueEntry.objects.using(Conf.ORM).leased(self.list_key, timezone.now()).count()

    def purge_queue(self) -> Any:
        return QueueEntry.objects.using(Conf.ORM).in_queue(self.list_key).delete()

    def delete_queue(self) -> Any:
        return self.purge_queue()

    def delete(self, task_id: int) -> None:
        QueueEntry.objects.using(Conf.ORM).filter(pk=task_id).delete()

    def _delete_unless_live(self, entry_id: int) -> int:
        """Delete the entry unless its task is still queued or processing (one statement, so a
        concurrent claim or requeue is seen or waits); the number of rows deleted."""
        return QueueEntry.objects.using(Conf.ORM).delete_unless_live(entry_id)

    def acknowledge(self, task_id: int) -> None:
        # ``task_id`` is django-q2's name for the ack id: the QueueEntry's primary key
        self._delete_unless_live(task_id)

    def fail(self, task_id: int) -> None:
        """django-q2's pusher could not read the entry's package: drop it if its task is over,
        otherwise sign it again with this process's key and deliver it again."""
        if self._delete_unless_live(task_id):
            return
        entry = QueueEntry.objects.using(Conf.ORM).filter(pk=task_id).values_list("task_id", flat=True).first()
        if entry is not None:
            logger.warning("queue entry %s had an unreadable package: signed again", task_id)
            QueueEntry.objects.using(Conf.ORM).filter(pk=task_id).update(
                payload=task_package(entry), locked_until=timezone.now()
            )
            transaction.on_commit(lambda: wake(self.list_key), using=Conf.ORM)
