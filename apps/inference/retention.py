"""Retention and legal holds: content past its retention is removed, metadata kept, except what a
legal hold covers.

What is content: a task's prompt (``request``), its result and its error text (a backend's error
may echo the prompt). What stays: who, where, when, which model, tokens, timings and the outcome
(a purged COMPLETED task is still COMPLETED; ``content_purged_at`` says since when). Async tasks
and stored sync exchanges (``store: true`` on chat completions, and stored responses: ``POST
/v1/responses`` with ``store: true``, the conversation and the Response on the request's record,
apps/inference/responses/store.py) are purged ``MEDAI_RESULT_TTL`` after they finish
(``result_expires_at``), other sync records lose an error text after the same time. The worker
cluster's minute schedule purges
(``apps.inference.tasks.expire_tasks``); ``manage.py purge`` does it at once.

A legal hold on a task, a user or a location suspends the purge of everything it covers until it
is released; placing and releasing one are audit events (``legal_hold.place``,
``legal_hold.release``) with the actor, the target and the reason. A hold is never deleted, so
the record of who held what, and for how long, stays in the table as well as in the audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from apps.accounts.models import Location, User
from apps.audit.services import record_event
from apps.inference.models import Feedback, InferenceTask, LegalHold, WorkflowRun


@dataclass(frozen=True)
class PurgeReport:
    purged: int
    held: int  # tasks past retention that a legal hold kept
    runs: int = 0  # workflow runs whose document and result were purged


def _due(now: datetime) -> tuple[Any, datetime]:
    sync_before = sync_retention_cutoff(now)
    S = InferenceTask.Status
    due = InferenceTask.objects.filter(  # async tasks, stored exchanges and stored responses
        result_expires_at__lte=now,
        content_purged_at__isnull=True,
        status__in=(S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED),
    )
    return due, sync_before


def purge(now: datetime | None = None, *, dry_run: bool = False) -> PurgeReport:
    """Remove the content of every task past its retention that no legal hold covers."""
    now = now or timezone.now()
    due, sync_before = _due(now)
    free = due.exclude(LegalHold.objects.covering_task())
    held = due.count() - free.count()
    if dry_run:
        return PurgeReport(free.count(), held, _runs_due(now).count())
    return PurgeReport(purge_content(now, sync_before), held, purge_workflow_runs(now))


def purge_content(now: datetime, sync_before: datetime | None) -> int:
    """The content past retention removed (``InferenceTaskQuerySet.purge_due``), except what an
    active legal hold covers, and the comments on the answers purged with them: how many tasks."""
    purged = InferenceTask.objects.purge_due(now, LegalHold.objects.covering_task(), sync_before=sync_before)
    # A comment on an answer goes with the answer (held exchanges are not purged, so theirs stay).
    Feedback.objects.filter(task__content_purged_at__isnull=False, comment_purged_at__isnull=True).exclude(
        comment=""
    ).update(comment="", comment_purged_at=now)
    return purged


def _runs_due(now: datetime) -> Any:
    holds = LegalHold.objects.active().filter(Q(user_id=OuterRef("user_id")) | Q(location_id=OuterRef("location_id")))
    return WorkflowRun.objects.filter(result_expires_at__lte=now, content_purged_at__isnull=True).exclude(Exists(holds))


def purge_workflow_runs(now: datetime) -> int:
    """Workflow runs past their retention (``MEDAI_RESULT_TTL`` after they ended) lose their document,
    result and error text, the outcome kept (``content_purged_at``), unless a legal hold covers
    their user or location. Their steps' tasks are purged as every task is."""
    return _runs_due(now).update(document="", result=None, error_message="", content_purged_at=now)


def sync_retention_cutoff(now: datetime) -> datetime:
    """Sync records that finished before this lose their error text."""
    return now - timedelta(seconds=settings.MEDAI_RESULT_TTL)


def place_hold(
    actor: User | None,
    *,
    reason: str,
    task: InferenceTask | None = None,
    user: User | None = None,
    location: Location | None = None,
) -> LegalHold:
    """Put a task, a user's tasks or a location's tasks under legal hold (audited)."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A legal hold needs a reason (a case number, an inquiry)."})
    if sum(x is not None for x in (task, user, location)) != 1:
        raise ValidationError("A legal hold covers exactly one of: a task, a user, a location.")
    with transaction.atomic():
        hold = LegalHold.objects.create(
            task=task, user=user, location=location, reason=reason, placed_at=timezone.now(), placed_by=actor
        )
        record_event(
            "legal_hold.place",
            actor=actor,
            obj=hold,
            location=location.code if location else "",
            details={"target": hold.target_label, "reason": reason},
        )
    return hold


def release_hold(actor: User | None, hold: LegalHold, *, reason: str = "") -> bool:
    """End a hold (audited); its content is purged by the next sweep if its retention is over.
    False when it was already released."""
    with transaction.atomic():
        now = timezone.now()
        released = (
            LegalHold.objects.active()
            .filter(pk=hold.pk)
            .update(released_at=now, released_by=actor, release_reason=(reason or "").strip())
        )
        if released:
            hold.refresh_from_db()
            record_event(
                "legal_hold.release",
                actor=actor,
                obj=hold,
                details={"target": hold.target_label, "reason": hold.release_reason},
            )
    return bool(released)
