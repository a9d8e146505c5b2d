"""django-q2 entry points for inference: they take ids and call a service (apps.inference.queue)."""

from __future__ import annotations

from apps.inference import queue
from apps.inference.broker import worker_busy


def run_inference(task_id: str) -> str:
    """Run one async inference task (delivered by apps.inference.broker.PriorityBroker)."""
    with worker_busy():
        return queue.run_task(task_id)


def expire_tasks() -> dict[str, int]:
    """Schedule: expire overdue queued tasks, purge content past MEDAI_RESULT_TTL, and send tasks
    that lost their queue entry back to the queue."""
    return {**queue.expire_and_purge(), "recovered": queue.recover_orphans()}
