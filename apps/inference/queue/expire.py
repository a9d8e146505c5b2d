"""Expiry, retention and recovery sweeps (run every minute by the worker cluster's schedule)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.inference import broker, retention
from apps.inference import metrics as inference_metrics
from apps.inference.models import InferenceTask, QueueEntry
from apps.inference.pipeline import record
from apps.inference.queue import hooks
from apps.inference.queue.common import _package, list_key, logger, result_ttl
from apps.inference.queue.notify import push_updates


def expire_and_purge(now: Any = None) -> dict[str, int]:
    """QUEUED past its deadline → EXPIRED (its prompt kept for the retention, for a retry); a finished task past its retention
    (``result_expires_at``) keeps its outcome — a purged COMPLETED task is still COMPLETED — and
    loses its content (prompt and result), the time of the purge recorded in ``content_purged_at``.
    Run every minute by the worker cluster's schedule (``apps.inference.tasks.expire_tasks``)."""
    now = now or timezone.now()
    with transaction.atomic():
        overdue, expired = InferenceTask.objects.expire_due(now, now + timedelta(seconds=result_ttl()))
        QueueEntry.objects.of_tasks(overdue).delete()
        if overdue:
            transaction.on_commit(lambda: push_updates(overdue))
            hooks.batch_tasks_ended(
                InferenceTask.objects.by_pk(overdue).exclude(batch=None).values_list("batch_id", flat=True).distinct()
            )
    inference_metrics.count_finished("async", "expired", expired)
    record.release_tasks(overdue)  # their quota holds (a task that ran meanwhile settled its own)
    # content past retention, except what a legal hold covers (apps/inference/retention.py)
    purged = retention.purge_content(now, retention.sync_retention_cutoff(now))
    return {"expired": expired, "purged": purged}


def recover_orphans(now: Any = None) -> int:
    """Send back to the queue, at their old place, live async tasks that have no queue entry (a
    task PROCESSING or QUEUED always has one until it ends, so such a task was lost: its entry
    deleted by an older version, or by hand). Run by the same schedule as ``expire_and_purge``."""
    now = now or timezone.now()
    with transaction.atomic():
        lost = list(
            InferenceTask.objects.live()
            .exclude(Exists(QueueEntry.objects.filter(task_id=OuterRef("id"))))  # lost: no entry
            .order_by()
            .only("id", "status", "priority", "queued_at", "created_at")
            .locked()[:1000]
        )
        if not lost:
            return 0
        InferenceTask.objects.by_pk([t.id for t in lost]).requeue()
        broker.put_again(
            list_key(), [(_package(t, now), t.priority, t.id, t.queued_at or t.created_at) for t in lost], now=now
        )
        transaction.on_commit(lambda: push_updates([t.id for t in lost]))
    logger.warning("sent %d task(s) without a queue entry back to the queue", len(lost))
    return len(lost)
