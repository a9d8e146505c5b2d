"""django-q2 entry points for inference: they take ids and call a service (apps.inference.queue)."""

from __future__ import annotations

from apps.inference import quality, queue
from apps.inference.broker import worker_busy
from apps.inference.filebatch import feed
from apps.inference.workflows import advance as workflow_runs


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


def advance_workflow_runs() -> dict[str, int]:
    """Schedule: move every open workflow run that has something to do along (a stage held up by a
    limit, a hook a dead process never ran) and purge runs past their retention."""
    return workflow_runs.sweep()


def assess_quality() -> dict[str, int]:
    """Schedule (hourly): every model's weekly quality figures and drift verdicts (apps.inference.quality)."""
    reports = quality.assess()
    return {"models": len(reports), "drifted": sum(len(r.drifted) for r in reports)}
