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
requests only; the worker has no request), why (the ``X-Purpose-Of-Use`` of a sync request; an
async task's purpose is on its ``inference.submit`` event, which shares its correlation id), which
model, the outcome, the HTTP status and the correlation id. Its details carry codes and counts only: never the prompt, the answer or the
backend's error text (PHI can sit in any of them).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from apps.accounts.models import Location, User
from apps.audit import actions
from apps.audit.models import AuditEvent
from apps.audit.services import new_event, record_event, record_event_later
from apps.inference.models import InferenceTask, Priority

ACTION = actions.INFERENCE
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
    purpose_of_use: str = "",
    organization_id: int | None = None,
) -> AuditEvent:
    """The (unsaved) audit event of a finished inference, for ``record_events``; ``break_glass``:
    the grant the caller acted under (Principal.break_glass_id), marked in the details."""
    try:
        priority = Priority(task.priority).name.lower()
    except ValueError:
        priority = str(task.priority)
    details: dict[str, Any] = {
        "mode": task.mode,
        "kind": task.kind,
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
    if task.arm:
        details["arm"] = task.arm  # the A/B arm it was assigned (apps/inference/experiments.py)
    if task.cached:
        details["cached"] = True  # answered by the response cache: no model ran
    if break_glass:
        details["break_glass"] = break_glass
    return new_event(
        ACTION,
        actor=SimpleNamespace(pk=task.user_id, username=username),
        api_key_id=task.api_key_id,
        location=location_code,
        ip=ip or "",  # "": none (the worker, the record writer's thread), never the context's
        user_agent=user_agent,
        purpose_of_use=purpose_of_use,
        organization_id=organization_id,
        obj=task,
        outcome=audit_outcome(task.status),
        correlation_id=task.correlation_id,
        created_at=task.finished_at,
        details=details,
    )


def submitted_identity(task: InferenceTask) -> tuple[str, str, int | None] | None:
    """(username, location code, organization id) as the task's submit named them (kept in its
    request: ``queue.submit._spec``), or None: a task queued before they were kept, or whose
    request was not read (deferred) or was purged. Reads no column that was not loaded."""
    if "request" in task.get_deferred_fields():
        return None
    who = (task.request or {}).get("who") if isinstance(task.request, dict) else None
    if not isinstance(who, dict):
        return None
    return str(who.get("username") or ""), str(who.get("location") or ""), who.get("organization_id")


def identities(tasks: list[InferenceTask]) -> tuple[dict[int, str], dict[int, tuple[str, int | None]]]:
    """Usernames by user id, and (code, organization id) by location id, for these tasks (two small
    queries): what the worker's events name, since a task row keeps only the ids."""
    user_ids = {t.user_id for t in tasks if t.user_id}
    location_ids = {t.location_id for t in tasks if t.location_id}
    users = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "username")) if user_ids else {}
    locations: dict[int, tuple[str, int | None]] = {}
    if location_ids:
        rows = Location.objects.filter(pk__in=location_ids).values_list("pk", "code", "organization_id")
        locations = {pk: (code, org) for pk, code, org in rows}
    return users, locations


# --- reads: who saw what ------------------------------------------------------------------------


def record_result_read(principal: Any, task: InferenceTask, *, outcome: str, code: str = "") -> None:
    """A request for a task's result (the read of PHI): written now, before the answer leaves, so
    that no result is ever shown without its record. ``code``: why none was shown (409, 410...)."""
    record_event(
        actions.TASK_RESULT,
        actor=principal,
        obj=task,
        outcome=outcome,
        details={"status": task.status, "code": code} if code else {"status": task.status},
    )


def record_status_read(principal: Any, obj: Any, *, count: int | None = None) -> None:
    """A status read (a task's, a batch's, a page of the task list): metadata only, polled often, so
    written by the background writer (apps/audit/buffer.py), off the request."""
    details: dict[str, Any] = {"count": count} if count is not None else {}
    if obj is None:
        record_event_later(actions.TASK_STATUS, actor=principal, object_type="inference.inferencetask", details=details)
    else:
        record_event_later(actions.TASK_STATUS, actor=principal, obj=obj, details=details)


def record_history_read(principal: Any, what: str, *, count: int, conversation_id: Any = None) -> None:
    """A read of the caller's own stored exchanges (``what``: page, search or conversation; the
    read of PHI, decrypted for its owner): written now, before the answer leaves. Its details hold
    counts only, never a search's words (they may name a patient)."""
    record_event(
        actions.HISTORY_READ,
        actor=principal,
        object_type="inference.conversation" if conversation_id else "inference.inferencetask",
        object_id=str(conversation_id or ""),
        details={"read": what, "count": count},
    )
