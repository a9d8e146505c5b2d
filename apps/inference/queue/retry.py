"""Retrying a task that ended without an answer (failed, cancelled, expired): a new task with the
same request, queued like any submit (the same pipeline: scope, validation, limits, quota, route,
de-duplication), for the original's owner only.

The request comes from the original task, which keeps its prompt until the end of its retention
(``MEDAI_RESULT_TTL`` after it ended); once purged there is nothing to resubmit (410). The new
task is a task of its own (its id, its place in the queue, its audit trail); the original stays
as it ended. One ``inference.retry`` event names both.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.accounts.services import Principal, audit_marks
from apps.audit import actions
from apps.audit.services import record_event
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, Priority
from apps.inference.queue.common import S, _actor
from apps.inference.queue.submit import Submitted, submit_task

RETRYABLE = (S.FAILED, S.CANCELLED, S.EXPIRED)


def retry_item(task: InferenceTask, priority: Any = None) -> dict[str, Any]:
    """The submit request that asks again what ``task`` asked (its kept request)."""
    spec = task.request or {}
    item: dict[str, Any] = dict(spec.get("payload") or {})
    for name in ("model", "agent_type", "deadline_s"):
        if spec.get(name):
            item[name] = spec[name]
    item["priority"] = priority if priority is not None else Priority(task.priority).name.lower()
    return item


def retry_task(
    principal: Principal,
    task_id: Any,
    priority: Any = None,
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
) -> Submitted:
    """Queue again what the caller's own failed, cancelled or expired task asked, at its priority
    (or ``priority``). 404 for a task that is not the caller's own (a location admin sees others'
    tasks, but retries only theirs), 409 for one that has not ended so, 410 once its prompt was
    purged."""
    task = (
        InferenceTask.objects.filter(
            id=task_id, mode=InferenceTask.Mode.ASYNC, user_id=principal.user_id, location_id=principal.location_pk
        )
        .only("id", "status", "priority", "request", "content_purged_at", "finished_at")
        .first()
    )
    if task is None:
        raise ApiError(404, "task_not_found", f"Task '{task_id}' does not exist.")
    if task.status not in RETRYABLE:
        raise ApiError(
            409,
            "not_retryable",
            f"Task {task.id} is {task.status}; only failed, cancelled or expired tasks can be retried.",
        )
    if not task.request or not (task.request.get("payload") or {}).get("messages"):
        raise ApiError(
            410,
            "task_content_purged",
            f"Task {task.id}'s request was purged at the end of its retention; submit it again.",
        )
    with transaction.atomic():  # the new task and the event that links it to the original, or neither
        submitted = submit_task(principal, retry_item(task, priority), correlation_id, client_ip=client_ip)
        record_event(
            actions.TASK_RETRY,
            actor=_actor(principal),
            location=principal.location_code,
            obj=submitted.task,
            details={
                "retry_of": str(task.id),
                "retried_status": task.status,
                "deduplicated": not submitted.created,
                **(audit_marks(principal) or {}),
            },
        )
    return submitted
