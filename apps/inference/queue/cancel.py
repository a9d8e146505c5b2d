"""Cancelling a queued task."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.accounts.services import Principal, audit_marks
from apps.audit import actions
from apps.audit.services import new_event, record_event, record_events
from apps.inference import metrics as inference_metrics
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, QueueEntry
from apps.inference.pipeline import record
from apps.inference.queue import hooks
from apps.inference.queue.common import _actor, result_ttl
from apps.inference.queue.notify import push_update, push_updates

# --- cancel, expiry, retention ----------------------------------------------------------------


def cancel_task(principal: Principal, task: InferenceTask) -> InferenceTask:
    """Cancel a queued task (its queue entry goes too); a running or finished one answers 409. Its
    prompt stays until the end of its retention, so that its owner may retry it."""
    with transaction.atomic():
        now = timezone.now()
        expires = now + timedelta(seconds=result_ttl())  # its prompt is kept until then (a retry)
        changed = InferenceTask.objects.filter(id=task.id).cancel(now, expires)  # only if still queued
        if not changed:
            task.refresh_from_db()
            raise ApiError(
                409, "not_cancellable", f"Task {task.id} is {task.status}; only queued tasks can be cancelled."
            )
        QueueEntry.objects.of_tasks([task.id]).delete()
        record_event(
            "inference.cancel",
            actor=_actor(principal),
            location=principal.location_code,
            obj=task,
            details=audit_marks(principal),
        )
        transaction.on_commit(lambda: push_update(task.id))
        transaction.on_commit(lambda: inference_metrics.count_finished("async", "cancelled"))
        transaction.on_commit(lambda: record.release_tasks([task.id]))  # its quota hold
        hooks.batch_tasks_ended([task.batch_id])
    task.refresh_from_db()
    return task


def cancel_queued_of_batch(principal: Principal, batch_id: Any) -> list[Any]:
    """Cancel every task of a batch that is still queued, at once (the Batch API's cancel): the
    same transition as ``cancel_task`` for each (CANCELLED, entry deleted, one ``inference.cancel``
    event each, quota holds released, pushed), in one transaction. Running tasks finish; the ids
    cancelled are returned. Inside a caller's transaction it joins it."""
    with transaction.atomic():
        now = timezone.now()
        expires = now + timedelta(seconds=result_ttl())
        ids = list(
            InferenceTask.objects.filter(batch_id=batch_id, status=InferenceTask.Status.QUEUED)
            .order_by()
            .locked()
            .values_list("id", flat=True)
        )
        if not ids:
            return []
        InferenceTask.objects.by_pk(ids).cancel(now, expires)
        QueueEntry.objects.of_tasks(ids).delete()
        record_events(
            [
                new_event(
                    actions.TASK_CANCEL,
                    actor=_actor(principal),
                    location=principal.location_code,
                    object_type=InferenceTask._meta.label_lower,
                    object_id=str(task_id),
                    details=audit_marks(principal),
                )
                for task_id in ids
            ]
        )
        transaction.on_commit(lambda: push_updates(ids))
        transaction.on_commit(lambda: inference_metrics.count_finished("async", "cancelled", len(ids)))
        transaction.on_commit(lambda: record.release_tasks(ids))
        hooks.batch_tasks_ended([batch_id])
    return ids
