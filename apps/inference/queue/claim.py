"""Claims: the delivered task with its companions for the same model (collation), a draining
worker's refills, and urgent work started beside a running window."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.inference import broker, push
from apps.inference import metrics as inference_metrics
from apps.inference.models import InferenceTask, QueueEntry
from apps.inference.queue.common import (
    LIVE,
    WORKER_LOST,
    Claimed,
    S,
    _failed,
    list_key,
    max_deliveries,
    result_ttl,
)
from apps.inference.queue.finish import _write_failures


def _delivered_waiting(rank: float, now: Any) -> bool:
    """Whether the broker already handed out an entry ahead of ``rank`` that no worker started yet
    (prefetched into a cluster's local queue, waiting for a free worker): a draining worker must
    stop for it. Leased entries are few (running groups and prefetches), and read from the index."""
    return QueueEntry.objects.handed_out_ahead(list_key(), now, rank)


def _lease_until(now: Any) -> Any:
    return now + timedelta(seconds=broker.lease_seconds())


def _claim_group(task_id: Any, model: tuple[str, str] | None, limit: int, extra: int = 0) -> tuple[list[Claimed], str]:
    """Claim, in one transaction, the delivered task (``task_id``) and up to ``limit`` - 1 queued tasks
    for the same model from the head of the queue (collation), or with ``task_id`` None the next
    ``limit`` tasks for ``model`` if the queue's head is for that model (a worker draining a deep
    queue). Each claimed task moves to PROCESSING with attempts + 1; companions' entries are leased
    like a delivery, so a dead worker's group is delivered again.

    ``extra``: up to that many more for the worker's buffer, but only from the run of entries for
    the same model at the very head of the queue (the first other entry ends it), and none while an
    entry ahead was handed out and waits for a worker: exactly what the refills that they save
    would have claimed one after another, so the order is the same as with ``extra`` 0.

    Lock order (PostgreSQL): the delivered task, then entries and companion tasks with SKIP LOCKED,
    so a concurrent cancel or claim is skipped, never waited for (no deadlock).
    """
    now = timezone.now()
    group: list[Claimed] = []
    expired: list[InferenceTask] = []
    delivered = None
    fast = None  # the delivered task, claimed by its one statement
    with transaction.atomic():
        if task_id is not None:
            claimed = InferenceTask.objects.claim_delivered(
                task_id, now, QueueEntry.objects.next_ready_sql(list_key(), now)
            )
            if claimed is not None:  # the usual case: it was QUEUED, before any deadline
                fast, ready = claimed
                group.append(Claimed(fast, fast.attempts, None))
                model, delivered = (fast.requested_model, fast.agent_type), fast.id
                if not ready:
                    limit = 0  # nothing else ready in the queue: no companions to look for
        if task_id is not None and fast is None:  # not QUEUED before its deadline: read it, locked, to say why
            task = InferenceTask.objects.filter(id=task_id).locked().first()
            if task is None or task.status not in LIVE:
                return [], task.status if task else "missing"
            deliveries = QueueEntry.objects.deliveries(task.id) if task.status == S.PROCESSING else 0
            if deliveries > max_deliveries():  # its earlier runs all ended without writing an outcome
                _write_failures(
                    [task],
                    _failed(
                        WORKER_LOST,
                        (
                            f"No worker could finish this task: it was started {deliveries - 1} times and each time its "
                            "worker stopped (it crashed, was killed or ran out of time) before writing an outcome. "
                            "It is not retried."
                        ),
                    ),
                    now,
                )
                return [], S.FAILED
            if task.status == S.QUEUED and task.deadline and task.deadline <= now:
                expired.append(task)
                limit = 0  # the delivery ends here, as it would have without collation
            else:
                group.append(Claimed(task, task.attempts + 1, None))
            model, delivered = (task.requested_model, task.agent_type), task.id
        assert model is not None
        if limit > len(group):
            head = list(
                QueueEntry.objects.ready(list_key(), now).only("id", "task_id", "rank").locked(skip=True)[: limit * 4]
            )
            ids = [e.task_id for e in head if e.task_id and e.task_id != delivered]
            window = {
                t.id: t
                for t in InferenceTask.objects.by_pk(ids)
                .only(  # and what an expired one's update names (push.update_for)
                    "id",
                    "status",
                    "priority",
                    "requested_model",
                    "agent_type",
                    "deadline",
                    "user_id",
                    "batch_id",
                    "model_name",
                )
                .locked(skip=True)
            }
            same = {
                k: t for k, t in window.items() if t.status == S.QUEUED and (t.requested_model, t.agent_type) == model
            }
            waiting: list[bool] = []  # whether work handed out ahead of the head waits (read once a claim)

            def handed_out() -> bool:
                if not waiting:
                    waiting.append(_delivered_waiting(head[0].rank, now))
                return waiting[0]

            if task_id is None and (not head or head[0].task_id not in same or handed_out()):
                return [], "head_is_other_work"  # strict order: leave it to the broker's next delivery
            first = window.get(head[0].task_id) if head and head[0].task_id else None
            if group and first is not None and first.id not in same and first.priority > group[0].task.priority:
                same = {}  # more urgent work for another model waits: run the delivered task alone, quickly
            chosen: list[tuple[Any, int]] = []
            for entry in head:
                other = same.get(entry.task_id) if entry.task_id else None
                if other is None or len(group) + len(chosen) >= limit:
                    continue
                if other.deadline and other.deadline <= now:
                    expired.append(other)
                else:
                    chosen.append((other.id, entry.id))
            if extra and head and len(group) + len(chosen) >= limit and not handed_out():
                taken = {t for t, _ in chosen} | {t.id for t in expired} | {delivered}
                for entry in head:  # the run of this model's entries at the head, in order
                    if entry.task_id in taken:
                        continue
                    other = same.get(entry.task_id) if entry.task_id else None
                    if other is None or len(group) + len(chosen) >= limit + extra:
                        break
                    if other.deadline and other.deadline <= now:
                        expired.append(other)
                    else:
                        chosen.append((other.id, entry.id))
            rows = {
                t.id: t for t in InferenceTask.objects.by_pk([t for t, _ in chosen])
            }  # whole rows (the request) of those alone
            group += [Claimed(rows[t], rows[t].attempts + 1, entry_id) for t, entry_id in chosen]
            leased = [c.entry_id for c in group if c.entry_id is not None]
            if leased:
                QueueEntry.objects.filter(id__in=leased).lease(_lease_until(now))
        if expired:
            InferenceTask.objects.by_pk([t.id for t in expired]).expire(
                now, now + timedelta(seconds=result_ttl())
            )  # checked QUEUED under the lock
            QueueEntry.objects.of_tasks([t.id for t in expired if t.id != delivered]).delete()
        others = [c for c in group if c.task is not fast]
        if others:
            # rows locked above (or the whole database on SQLite): attempts + 1 is exactly the token read
            waits = {
                c.task.id: int((now - (c.task.queued_at or c.task.created_at)).total_seconds() * 1000) for c in others
            }
            InferenceTask.objects.claim(now, waits)
        updates = [push.update_for(t, S.EXPIRED) for t in expired] + [
            push.update_for(c.task, S.PROCESSING) for c in group
        ]
        transaction.on_commit(lambda: push.send(updates))
    inference_metrics.count_finished("async", "expired", len(expired))
    for c in group:
        c.task.status, c.task.attempts, c.task.started_at = S.PROCESSING, c.attempt, now
    if not group:
        return [], S.EXPIRED if expired else "empty"
    return group, S.PROCESSING


def _head_priority() -> int | None:
    """The priority of the next entry the broker would deliver, None if no entry is ready (one
    indexed read, no lock): the peek a running worker shares between its two questions, whether
    more urgent work waits (``_urgent_head``) and whether there is anything to refill from."""
    return QueueEntry.objects.head_priority(list_key(), timezone.now())


def _urgent_head(above: int) -> bool:
    """Whether the next entry the broker would deliver is of a higher priority than ``above``."""
    head = _head_priority()
    return head is not None and head > above


def _claim_urgent(above: int) -> list[Claimed]:
    """Claim the head of the queue if it is more urgent than ``above``, whatever its model: a worker
    feeding a deep queue of less urgent work starts it at once, next to its requests in flight,
    instead of making it wait until its window drains and the broker delivers it. The entry is leased
    like a companion's (deleted with the result; delivered again if this worker dies)."""
    now = timezone.now()
    with transaction.atomic():
        entry = (
            QueueEntry.objects.ready(list_key(), now)
            .only("id", "task_id", "priority", "rank")
            .locked(skip=True)
            .first()
        )
        if entry is None or entry.priority <= above or entry.task_id is None or _delivered_waiting(entry.rank, now):
            return []
        task = InferenceTask.objects.by_pk([entry.task_id]).locked(skip=True).first()
        if task is None or task.status != S.QUEUED or (task.deadline and task.deadline <= now):
            return []  # the broker's delivery (or the expiry sweep) deals with it
        QueueEntry.objects.filter(id=entry.id).lease(_lease_until(now))
        wait = int((now - (task.queued_at or task.created_at)).total_seconds() * 1000)
        InferenceTask.objects.claim(now, {task.id: wait})
        update = push.update_for(task, S.PROCESSING)
        transaction.on_commit(lambda: push.send([update]))
    task.status, task.attempts, task.started_at = S.PROCESSING, task.attempts + 1, now
    return [Claimed(task, task.attempts, entry.id)]
