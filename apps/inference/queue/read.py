"""Reads: a queued task's place in the queue, a batch's progress, the queue's health."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, IntegerField, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.status import Stat

from apps.inference.models import InferenceTask, Priority, QueueEntry, TaskBatch
from apps.inference.queue.common import S, list_key, queue_max
from apps.inference.queue.submit import emergency_mode

# --- reading -------------------------------------------------------------------------------------


def position(task: InferenceTask) -> int | None:
    """1-based place in the queue while queued (entries that the broker would deliver first)."""
    return positions([task]).get(task.id)


def positions(tasks: list[InferenceTask]) -> dict[Any, int]:
    """``position`` of each queued task in ``tasks``, by task id, in one query whatever their number:
    each entry's place is counted from the ``(key, rank)`` index by a correlated subquery."""
    queued = [t.id for t in tasks if t.status == S.QUEUED]
    if not queued:
        return {}
    ahead = (
        QueueEntry.objects.in_queue(list_key())
        .ahead_of(OuterRef("rank"))
        .order_by()
        .values("key")
        .annotate(n=Count("id"))
        .values("n")
    )
    rows = (
        QueueEntry.objects.of_tasks(queued)
        .order_by()
        .annotate(ahead=Coalesce(Subquery(ahead, output_field=IntegerField()), 0))
        .values_list("task_id", "ahead")
    )
    return {task_id: n + 1 for task_id, n in rows}


def batch_progress(batch: TaskBatch) -> dict[str, Any]:
    members = InferenceTask.objects.filter(Q(batch=batch) | Q(id__in=batch.reused_task_ids or []))
    counts = dict(members.order_by().values_list("status").annotate(n=Count("id")))
    total = batch.total
    completed, failed = counts.get(S.COMPLETED, 0), counts.get(S.FAILED, 0)
    cancelled, expired = counts.get(S.CANCELLED, 0), counts.get(S.EXPIRED, 0)
    done = completed + failed + cancelled + expired
    return {
        "batch_id": str(batch.id),
        "total": total,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "expired": expired,
        "processing": counts.get(S.PROCESSING, 0),
        "queued": counts.get(S.QUEUED, 0),
        "progress_percent": round(100.0 * done / total, 1) if total else 100.0,
    }


def health() -> dict[str, Any]:
    """Depth per priority, the oldest wait, and the django-q2 clusters that reported recently."""
    now = timezone.now()
    queued = InferenceTask.objects.queued()
    depth = {p.name.lower(): 0 for p in Priority}
    for prio, n in queued.values_list("priority").annotate(n=Count("id")):
        depth[Priority(prio).name.lower()] = n
    oldest = queued.aggregate(m=Min("queued_at"))["m"]
    try:
        stats = Stat.get_all()
    except Exception:  # noqa: BLE001
        stats = []
    workers = sum(len(s.workers) for s in stats)
    return {
        "depth": depth,
        "queued": sum(depth.values()),
        "processing": InferenceTask.objects.processing().count(),
        "oldest_wait_s": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
        "clusters_alive": len(stats),
        "workers_alive": workers,
        "queue_max": queue_max(),
        "emergency_mode": emergency_mode(sum(depth.values())),
    }
