"""django-q2 entry points for inference: they take ids and call a service (apps.inference.queue)."""

from __future__ import annotations

from apps.inference import queue
from apps.inference.broker import worker_busy
from apps.inference.filebatch import feed


def run_inference(task_id: str) -> str:
    """Run one async inference task (delivered by apps.inference.broker.PriorityBroker)."""
    with worker_busy():
        return queue.run_task(task_id)


def expire_tasks() -> dict[str, int]:
    """Schedule: expire overdue queued tasks, purge content past MEDAI_RESULT_TTL, and send tasks
    that lost their queue entry back to the queue."""
    return {**queue.expire_and_purge(), "recovered": queue.recover_orphans()}


def advance_file_batches() -> dict[str, int]:
    """Schedule: move every open file batch of the Batch API along (top up its lines in the queue,
    expire it, write out what a dead process left) and purge files past their retention."""
    return feed.sweep()
