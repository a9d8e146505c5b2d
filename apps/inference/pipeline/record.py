"""The steps after the backend: reconcile → audit → metrics. Every inference, sync or async,
streamed or not, whatever its outcome, settles its quota reservation, gets its record with exactly
one audit event (apps/inference/auditing.py) and is counted (apps/inference/metrics.py).

* a non-streamed sync request: ``record_later`` (the background writer, apps/inference/recorder.py);
* a stream: ``record_committed`` before ``[DONE]`` (the same writer; the stream awaits the commit);
* async tasks: the worker's ``reconcile_tasks`` / ``audit_events`` / ``observe_tasks``, in the
  transaction that writes their results (apps/inference/queue).
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.accounts import governance
from apps.audit.models import AuditEvent
from apps.audit.services import record_events
from apps.inference import auditing, conversations, recorder
from apps.inference import metrics as inference_metrics
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from apps.inference.pipeline import steps
from apps.inference.pipeline.plan import ChatPlan, task_principal
from apps.inference.services import db_unit

# The client went away before its answer (a clinician pressing Stop): recorded CANCELLED.
CLIENT_DISCONNECTED = "client_disconnected"
# HTTP status recorded for a non-streamed request whose client left before the answer (nginx's
# "client closed request"; no response was sent).
CLIENT_CLOSED_REQUEST = 499


# --- reconcile -----------------------------------------------------------------------------------


def reconcile(plan: ChatPlan, status: str) -> None:
    """The reconcile step: the real usage replaces the quota reservation."""
    steps.enter(steps.RECONCILE)
    governance.reconcile(
        plan.reservation,
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=plan.completion_tokens,
        completed=status == InferenceTask.Status.COMPLETED,
    )


def reconcile_tasks(tasks: list[InferenceTask]) -> None:
    """The reconcile step of finished async tasks: each settles the reservation made at submit."""
    steps.enter(steps.RECONCILE)
    governance.settle_many(
        [
            (
                governance.reservation_for(task_principal(task), action=governance.CHAT, ref=str(task.id)),
                task.prompt_tokens,
                task.completion_tokens,
                task.status == InferenceTask.Status.COMPLETED,
            )
            for task in tasks
        ]
    )


def release_tasks(task_ids: list[Any]) -> None:
    """The reconcile step of async tasks that will never run (cancelled, expired): the holds made
    at their submission are released (one round trip)."""
    if task_ids:
        steps.enter(steps.RECONCILE)
        governance.release_refs([str(i) for i in task_ids])


# --- audit and metrics -----------------------------------------------------------------------------


def audit_events(tasks: list[InferenceTask]) -> list[AuditEvent]:
    """The audit step of finished async tasks: their events (unsaved, for ``record_events``)."""
    steps.enter(steps.AUDIT)
    # the names the submit kept on each task; looked up (two small queries) only for tasks without
    kept = {id(t): auditing.submitted_identity(t) for t in tasks}
    missing = [t for t in tasks if kept[id(t)] is None]
    users, locations = auditing.identities(missing) if missing else ({}, {})
    events = []
    for t in tasks:
        who = kept[id(t)]
        if who is None:
            code, organization = locations.get(t.location_id, ("", None))
            who = (users.get(t.user_id, "") if t.user_id is not None else "", code, organization)
        events.append(
            auditing.inference_event(
                t,
                username=who[0],
                location_code=who[1],
                organization_id=who[2],
                break_glass=t.break_glass,  # as the sync event: the grant the caller submitted under
                purpose_of_use=t.purpose_of_use,
            )
        )
    return events


def observe_tasks(tasks: list[InferenceTask]) -> None:
    """The metrics step of finished async tasks."""
    steps.enter(steps.METRICS)
    for task in tasks:
        inference_metrics.observe(inference_metrics.task_fields(task))


def _record_fields(
    plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = ""
) -> dict[str, Any]:
    """The request's record: who, where, which model, tokens, timings and outcome."""
    now = timezone.now()
    total_ms = int((time.perf_counter() - plan.started) * 1000)
    inference_ms = int((time.perf_counter() - plan.backend_started) * 1000) if plan.backend_started else None
    p = plan.principal
    fields = dict(
        mode=InferenceTask.Mode.SYNC,
        kind=plan.kind,
        status=status,
        priority=plan.priority,
        user_id=p.user_id,
        location_id=p.location_pk,
        api_key_id=p.api_key_id,
        agent_type=plan.route.agent_type,
        requested_model=plan.requested_model,
        endpoint_id=plan.endpoint.id if plan.endpoint else None,  # (a cache hit names its model only)
        model_name=plan.endpoint.name if plan.endpoint else str((plan.cache_hit or {}).get("model", "")),
        cached=plan.cache_hit is not None,
        arm=plan.route.arm,
        stream=plan.stream,
        error_code=error_code,
        error_message=error_message[:2000],
        http_status=http_status,
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=plan.completion_tokens,
        attempts=len(plan.attempts),
        tools_offered=plan.tools_offered,
        tool_calls=plan.tool_calls,
        end_user=plan.end_user,
        correlation_id=plan.correlation_id,
        break_glass=p.break_glass_id,
        purpose_of_use=plan.purpose_of_use[:64],
        created_at=plan.created_at,
        started_at=plan.created_at,
        finished_at=now,
        queue_wait_ms=0,
        inference_ms=inference_ms,
        latency_ms=total_ms,
        **plan.record_extra,
    )
    if plan.answer_features is not None:  # what quality monitoring keeps of the answer
        fields.update(plan.answer_features.fields())
    if plan.storage is not None:  # store: true (apps/inference/conversations.py)
        fields.update(conversations.record_fields(plan.storage, plan.answer, now))
    return fields


def _audit_identity(plan: ChatPlan) -> dict[str, Any]:
    """The arguments of ``auditing.inference_event`` that the record's fields do not hold."""
    p = plan.principal
    return {
        "username": p.username,
        "location_code": p.location_code,
        "ip": plan.client_ip,
        "user_agent": plan.user_agent,
        "break_glass": p.break_glass_id,
        "purpose_of_use": plan.purpose_of_use,
        "organization_id": p.organization_id,
    }


@db_unit
def record_outcome(
    plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = ""
) -> None:
    """Reconcile, then write the request's record and its audit event now, in one transaction
    (sync: queries), then count it."""
    reconcile(plan, status)
    fields = _record_fields(plan, status, http_status, error_code, error_message)
    steps.enter(steps.AUDIT)
    with transaction.atomic():
        task = InferenceTask.objects.create(**fields)
        record_events([auditing.inference_event(task, **_audit_identity(plan))])
    steps.enter(steps.METRICS)
    inference_metrics.observe(fields)


def record_later(plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = "") -> None:
    """Reconcile, queue the request's record and its audit event for the background writer (in the
    database within about ``MEDAI_RECORD_LINGER_MS``, apps/inference/recorder.py), count it.
    Never blocks."""
    reconcile(plan, status)
    fields = _record_fields(plan, status, http_status, error_code, error_message)
    steps.enter(steps.AUDIT)
    recorder.writer.submit(fields, _audit_identity(plan))
    steps.enter(steps.METRICS)
    inference_metrics.observe(fields)


def record_committed(
    plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = ""
) -> concurrent.futures.Future[bool]:
    """As ``record_later``, for a stream that must not send ``[DONE]`` before its record is in the
    database: the future resolves True at the commit of the writer's batch that holds it (False
    when the record was given up on). Never blocks; the caller bounds its wait."""
    reconcile(plan, status)
    fields = _record_fields(plan, status, http_status, error_code, error_message)
    steps.enter(steps.AUDIT)
    committed = recorder.writer.committed(fields, _audit_identity(plan))
    steps.enter(steps.METRICS)
    inference_metrics.observe(fields)
    return committed


def ensure_recording_capacity() -> None:
    """503 before any backend call when this process holds MEDAI_RECORD_BACKLOG unwritten records
    (the database is down or cannot keep up): medai serves no request it cannot record."""
    if not recorder.writer.has_room():
        raise ApiError(
            503,
            "recording_unavailable",
            "Requests cannot be recorded right now (the database is "
            "unavailable or behind); nothing was sent to a model. Try again shortly.",
            headers={"Retry-After": "5"},
        )
