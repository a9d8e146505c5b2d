"""Websocket push wrappers (the groups a task's updates go to, a best-effort push of its status),
and what an update carries besides its status: a queued task's place and its batch's progress,
read after the commit by the pusher's database thread (``enrich``, registered with
apps.inference.push)."""

from __future__ import annotations

import time
from typing import Any

from django.db import close_old_connections, connection

from apps.inference import push
from apps.inference.models import InferenceTask, TaskBatch
from apps.inference.queue.common import TRANSIENT, S, logger
from apps.inference.queue.read import batch_progress, positions

# --- websocket push ----------------------------------------------------------------------------


def task_group(task_id: Any) -> str:
    return push.task_group(task_id)


def batch_group(batch_id: Any) -> str:
    return push.batch_group(batch_id)


def push_update(task_id: Any) -> None:
    """Send the task's current status to its groups (``user.<id>``, ``task.<uuid>``, ``batch.<uuid>``):
    best effort, queued to this process's pusher (apps.inference.push)."""
    push_updates([task_id])


def push_updates(task_ids: list[Any]) -> None:
    """``push_update`` for several tasks, read in one query."""
    if not task_ids:
        return
    try:
        tasks = InferenceTask.objects.by_pk(task_ids).only(
            "id", "status", "priority", "user_id", "batch_id", "model_name", "agent_type"
        )
        push.send([push.update_for(task) for task in tasks])
    except Exception as exc:  # noqa: BLE001 - a missed push must not fail the task
        logger.warning("task push failed: %s", exc)


def enrich(fill: list[push.TaskUpdate], moving: list[push.TaskUpdate]) -> set[int]:
    """Set ``position`` (queued tasks) and ``batch`` (tasks of a batch) of the updates in ``fill``,
    as the database has them now; return the organizations of the tasks in ``moving`` (their
    queues moved). A few queries whatever the number of updates: one for the tasks, one per
    location for the places, two per batch. The thread's connection may have been dropped by the
    server while idle, or (SQLite) a table be locked for a moment: then again, up to three times."""
    if _in_memory_sqlite():  # on commit, in the caller's thread and connection (push._inline)
        return _enrich(fill, moving)
    for attempt in range(3):
        try:
            close_old_connections()
            return _enrich(fill, moving)
        except TRANSIENT:
            if attempt == 2:
                raise
            connection.close()
            time.sleep(0.02 * (attempt + 1))
        finally:
            close_old_connections()  # back to the pool (PostgreSQL) between pushes
    raise AssertionError("unreachable")


def _enrich(fill: list[push.TaskUpdate], moving: list[push.TaskUpdate]) -> set[int]:
    queued = {u["task_id"] for u in fill if u["status"] == S.QUEUED}
    batch_ids = {u["batch_id"] for u in fill if u["batch_id"]}
    orgs: set[int] = set()
    if moving:
        orgs = {
            org
            for org in InferenceTask.objects.by_pk({u["task_id"] for u in moving})
            .values_list("location__organization_id", flat=True)
            .distinct()
            if org is not None
        }
    if queued:
        tasks = list(InferenceTask.objects.by_pk(queued).only("id", "status", "location_id"))
        places = {str(k): v for k, v in positions(tasks).items()}
        for u in fill:
            if u["status"] == S.QUEUED:
                u["position"] = places.get(u["task_id"])
    if batch_ids:
        counts: dict[str, push.BatchCounts] = {}
        for batch in TaskBatch.objects.filter(id__in=batch_ids):
            progress = batch_progress(batch)
            progress.pop("batch_id")
            counts[str(batch.id)] = progress  # type: ignore[assignment]
        for u in fill:
            if u["batch_id"] in counts:
                u["batch"] = counts[u["batch_id"]]
    return orgs


def _in_memory_sqlite() -> bool:
    return connection.vendor == "sqlite" and bool(connection.is_in_memory_db())  # type: ignore[attr-defined]


push.set_enricher(enrich, inline=_in_memory_sqlite)
