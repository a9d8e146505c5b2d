"""Stored responses (``store: true``, OpenAI's default): kept on the request's own record.

A Responses request's InferenceTask record (``kind="response"``; its id is the response's,
``resp_<hex>``) keeps, encrypted like every prompt and result (apps/audit/fields.py):

    request   {"messages": the conversation so far, without the instructions}
    result    the Response object

until its retention ends (``result_expires_at``: ``MEDAI_RESULT_TTL`` after it finished), when the
retention sweep purges both as it purges an async task's content (legal holds included). A
response with ``store: false`` keeps no content: it cannot be continued or read back.

Only its owner reads, continues or deletes a stored response (the user, at the location of the
credential that asked): anyone else, a location admin included, gets the 404 of an id that
exists nowhere. Reads and deletions are audited (``inference.read_result``,
``inference.delete_response``). A deletion purges the content at once, or, under a legal hold,
hides it from the API and leaves it to the sweep once the hold is released.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.audit import actions
from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.inference import auditing
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, LegalHold
from apps.inference.responses import output

KIND = "response"


def retention_end(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.MEDAI_RESULT_TTL)


def _not_found(rid: str, param: str | None) -> ApiError:
    # One answer for an unknown id, another user's, a deleted or a purged one: nothing confirms it existed.
    return ApiError(
        404,
        "response_not_found",
        f"No stored response with id '{rid[:80]}' (unknown, not stored, deleted, or past its retention).",
        param,
    )


def _owned(principal: Any, rid: str, param: str | None) -> InferenceTask:
    task_id = output.task_id_of(rid)
    if task_id is None:
        raise _not_found(rid, param)
    task = (
        InferenceTask.objects.filter(
            id=task_id,
            kind=KIND,
            user_id=principal.user_id,
            location_id=principal.location_pk,
            content_purged_at__isnull=True,
            result_expires_at__gt=timezone.now(),
        )
        .only("id", "request", "result", "status", "user_id", "location_id", "api_key_id", "correlation_id")
        .first()
    )
    if task is None or not task.request or not task.result:  # unreadable: encrypted under a key now gone
        raise _not_found(rid, param)
    return task


def conversation(principal: Any, rid: str) -> list[dict[str, Any]]:
    """The conversation a stored response continues: its messages, then its answer as one assistant
    turn. ApiError 404 (``previous_response_id``) when the caller has no such stored response."""
    task = _owned(principal, rid, "previous_response_id")
    messages = list(task.request.get("messages") or [])
    return messages + output.as_messages(task.result.get("output") or [])


def content_fields(conversation: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    """The record fields that store a finished response (``ChatPlan.record_extra``)."""
    return {"request": {"messages": conversation}, "result": body, "result_expires_at": retention_end()}


def read(principal: Any, rid: str) -> dict[str, Any]:
    """``GET /v1/responses/{id}``: the caller's stored Response; the read of PHI, audited."""
    task = _owned(principal, rid, None)
    auditing.record_result_read(principal, task, outcome=AuditEvent.Outcome.SUCCESS)
    return dict(task.result)


def delete(principal: Any, rid: str) -> dict[str, Any]:
    """``DELETE /v1/responses/{id}``: the content purged now (under a legal hold: hidden, kept until
    the hold is released); the record of the request stays. Audited."""
    task = _owned(principal, rid, None)
    now = timezone.now()
    rows = InferenceTask.objects.filter(id=task.id)
    if (
        rows.exclude(LegalHold.objects.covering_task()).update(
            request=None, result=None, content_purged_at=now, result_expires_at=now
        )
        == 0
    ):
        rows.update(result_expires_at=now)  # held: out of the API's reach, purged when the hold ends
    record_event(actions.RESPONSE_DELETE, actor=principal, obj=task, outcome=AuditEvent.Outcome.SUCCESS, details={})
    return {"id": rid, "object": "response", "deleted": True}
