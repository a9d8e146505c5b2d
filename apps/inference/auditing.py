"""The audit event of an inference: exactly one per inference, sync or async, streamed or not,
whatever its outcome, written in the same transaction as the inference's InferenceTask record.

Where each is written:

* non-streamed sync chat: by the background record writer (apps/inference/recorder.py), in the
  batch transaction that inserts the records;
* streamed sync chat: by the same background writer (``pipeline.record.record_committed``), committed
  before ``[DONE]`` (``record_later`` after a client left mid-stream; ``record_outcome`` when the
  stream failed to open);
* async tasks: by the worker, in the transaction that writes the results (``queue.finish._finish_group``).

The event names who (user and API key), where (location), from where (IP, user agent: sync
requests only; the worker has no request), which model, the outcome, the HTTP status and the
correlation id. Its details carry codes and counts only: never the prompt, the answer or the
backend's error text (PHI can sit in any of them).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from apps.accounts.models import Location, User
from apps.audit.models import AuditEvent
from apps.audit.services import new_event
from apps.inference.models import InferenceTask, Priority

ACTION = "inference.complete"
S = InferenceTask.Status


def audit_outcome(status: str) -> str:
    if status == S.COMPLETED:
        return AuditEvent.Outcome.SUCCESS
    if status == S.CANCELLED:
        return AuditEvent.Outcome.CANCELLED
    return AuditEvent.Outcome.FAILURE


def inference_event(
    task: InferenceTask,
    *,
    username: str,
    location_code: str,
    ip: str | None = None,
    user_agent: str = "",
    break_glass: int | None = None,
) -> AuditEvent:
    """The (unsaved) audit event of a finished inference, for ``record_events``; ``break_glass``:
    the grant the caller acted under (Principal.break_glass_id), marked in the details."""
    try:
        priority = Priority(task.priority).name.lower()
    except ValueError:
        priority = str(task.priority)
    details: dict[str, Any] = {
        "mode": task.mode,
        "stream": task.stream,
        "status": task.status,
        "model": task.model_name,
        "requested_model": task.requested_model,
        "agent_type": task.agent_type,
        "priority": priority,
        "http_status": task.http_status,
        "error_code": task.error_code,
        "prompt_tokens": task.prompt_tokens,
        "completion_tokens": task.completion_tokens,
        "latency_ms": task.latency_ms,
    }
    if break_glass:
        details["break_glass"] = break_glass
    return new_event(
        ACTION,
        actor=SimpleNamespace(pk=task.user_id, username=username),
        api_key_id=task.api_key_id,
        location=location_code,
        ip=ip,
        user_agent=user_agent,
        obj=task,
        outcome=audit_outcome(task.status),
        correlation_id=task.correlation_id,
        created_at=task.finished_at,
        details=details,
    )


def identities(tasks: list[InferenceTask]) -> tuple[dict[int, str], dict[int, str]]:
    """Usernames by user id and location codes by location id for these tasks (two small queries):
    what the worker's events name, since a task row keeps only the ids."""
    user_ids = {t.user_id for t in tasks if t.user_id}
    location_ids = {t.location_id for t in tasks if t.location_id}
    users = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "username")) if user_ids else {}
    locations = dict(Location.objects.filter(pk__in=location_ids).values_list("pk", "code")) if location_ids else {}
    return users, locations
