"""Reads: a queued task's place in the queue, a batch's progress, the queue's health."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Min, Q
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
    """``position`` of each queued task in ``tasks``, by task id, in one query per location whatever
    their number: each entry's place is counted from the ``(key, rank)`` index by a correlated
    subquery. Only the queued work of the task's own organization counts as ahead of it: the
    queue is shared, and a place counted over every organization would tell each one how busy
    the others are. (The broker still serves them in one global order.)"""
    by_location: dict[int, list[Any]] = {}
    for t in tasks:
        if t.status == S.QUEUED:
            by_location.setdefault(t.location_id, []).append(t.id)
    places: dict[Any, int] = {}
    for location_id, queued in by_location.items():
        places.update(QueueEntry.objects.places(list_key(), location_id, queued))
    return places


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


def health(principal: Any) -> dict[str, Any]:
    """Depth per priority, the oldest wait, and the django-q2 clusters that reported recently.

    The counts are of what ``principal`` may see (``visible_to``: their own tasks, a location
    admin's location): the queue is shared by every organization, and its global depth would tell
    each how busy the others are. ``emergency_mode`` is the one global fact, as it decides whether
    the caller's routine work is accepted."""
    now = timezone.now()
    mine = InferenceTask.objects.visible_to(principal)
    queued = mine.queued()
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
        "processing": mine.processing().count(),
        "oldest_wait_s": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
        "clusters_alive": len(stats),
        "workers_alive": workers,
        "queue_max": queue_max(),
        "emergency_mode": emergency_mode(InferenceTask.objects.queued().count()),
    }
