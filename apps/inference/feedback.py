"""Feedback on answers: a clinician rates an exchange of their own history up or down, with an
optional comment and reason codes, kept against the model, route and A/B arm that answered
(``models.Feedback``, copied from the exchange's record), for quality monitoring
(apps/inference/quality.py).

One rating per user per exchange: rating again replaces it (the rating, the reasons and the
comment as now sent). Only the exchange's owner rates it (anyone else's is not found, as in the
history), and only an answered one (finished, its content still kept). Each rating is audited
(``feedback.create``) with the rating, the reason codes and whether there is a comment: never the
comment's words, which may name a patient (they are stored encrypted and purged with the
exchange's content).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit import actions
from apps.audit.services import record_event
from apps.inference import conversations
from apps.inference.errors import ApiError
from apps.inference.models import Feedback, InferenceTask

S = InferenceTask.Status
COMMENT_MAX = 2000
RATABLE = (S.COMPLETED, S.FAILED, S.CANCELLED)  # an answer, a failure, or what was streamed until Stop


@dataclass(frozen=True)
class Rated:
    feedback: Feedback
    created: bool  # False: an earlier rating of this exchange by this user was changed


def rate(
    principal: Any,
    exchange_id: uuid.UUID,
    rating: str,
    *,
    comment: str = "",
    reasons: list[str] | tuple[str, ...] = (),
) -> Rated:
    """Rate one of the caller's exchanges (validated input: ``rating`` a ``Feedback.Rating``,
    ``reasons`` distinct ``Feedback.Reason`` codes, ``comment`` stripped, at most COMMENT_MAX).
    ApiError 404 for an exchange that is not the caller's (or purged), 409 for one not answered yet."""
    with transaction.atomic():
        task = (
            conversations.history_of(principal)
            .filter(id=exchange_id)
            .only("id", "status", "location_id", "endpoint_id", "model_name", "agent_type", "arm")
            .first()
        )
        if task is None:
            raise ApiError(
                404,
                "exchange_not_found",
                f"Exchange '{exchange_id}' does not exist (or its retention ended).",
                "exchange_id",
            )
        if task.status not in RATABLE:
            raise ApiError(
                409,
                "exchange_not_answered",
                f"Exchange '{exchange_id}' is {task.status}: there is no answer to rate yet.",
            )
        now = timezone.now()
        feedback, created = Feedback.objects.update_or_create(
            task=task,
            user_id=principal.user_id,
            defaults={
                "rating": rating,
                "reasons": list(reasons),
                "comment": comment,
                "comment_purged_at": None,
                "location_id": task.location_id,
                "endpoint_id": task.endpoint_id,
                "model_name": task.model_name,
                "agent_type": task.agent_type,
                "arm": task.arm,
                "updated_at": now,
            },
            create_defaults={
                "rating": rating,
                "reasons": list(reasons),
                "comment": comment,
                "location_id": task.location_id,
                "endpoint_id": task.endpoint_id,
                "model_name": task.model_name,
                "agent_type": task.agent_type,
                "arm": task.arm,
                "created_at": now,
                "updated_at": now,
            },
        )
        record_event(
            actions.FEEDBACK_CREATE,
            actor=principal,
            obj=feedback,
            details={
                "exchange_id": str(task.id),
                "rating": rating,
                "reasons": list(reasons),
                "has_comment": bool(comment),
                "changed": not created,
                "model": task.model_name,
                "agent_type": task.agent_type,
            },
        )
    return Rated(feedback, created)
