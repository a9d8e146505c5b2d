"""Cancelling a queued task."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.accounts.services import Principal, audit_marks
from apps.audit.services import record_event
from apps.inference import metrics as inference_metrics
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, QueueEntry
from apps.inference.pipeline import record
from apps.inference.queue.common import _actor, result_ttl
from apps.inference.queue.notify import push_update

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
    task.refresh_from_db()
    return task
