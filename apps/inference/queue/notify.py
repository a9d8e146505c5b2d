"""Websocket push wrappers (the groups a task's updates go to, a best-effort push of its status)."""

from __future__ import annotations

from typing import Any

from apps.inference import push
from apps.inference.models import InferenceTask
from apps.inference.queue.common import logger

# --- websocket push ----------------------------------------------------------------------------


def task_group(task_id: Any) -> str:
    return push.task_group(task_id)


def batch_group(batch_id: Any) -> str:
    return push.batch_group(batch_id)


def push_update(task_id: Any) -> None:
    """Send the task's current status to its groups (``user.<id>``, ``task.<uuid>``, ``batch.<uuid>``):
    best effort, queued to this process's pusher (apps.inference.push)."""
    try:
        task = (
            InferenceTask.objects.filter(id=task_id)
            .only("id", "status", "priority", "user_id", "batch_id", "model_name")
            .first()
        )
        if task is not None:
            push.send([push.update_for(task)])
    except Exception as exc:  # noqa: BLE001 - a missed push must not fail the task
        logger.warning("task push failed: %s", exc)
