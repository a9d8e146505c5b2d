"""The clients' verbs of workflows: list the runnable workflows, start a run, read one, cancel one;
and the demo's workflow.

A run's first stage is queued in the transaction that creates it, through the queue's own batch
submit (``queue.submit_batch``: authorize, validate, rate limit, quota reserve, route, admission,
audit), into the run's ``TaskBatch``, without de-duplication (each step is a request of its own),
at the run's priority and with its deadline. The caller is authenticated once, here; the later
stages are submitted as that principal by apps.inference.workflows.advance.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.models import SCOPE_READ, SCOPE_SUBMIT
from apps.accounts.services import Principal, audit_marks
from apps.audit import actions
from apps.audit.services import record_event
from apps.inference import delegation, queue
from apps.inference.errors import ApiError
from apps.inference.filebatch import files
from apps.inference.filebatch.feed import holds_released_on_rollback
from apps.inference.models import AgentRoute, Priority, TaskBatch
from apps.inference.pipeline import gate
from apps.inference.validation import MAX_DEADLINE_S
from apps.inference.workflow_models import (
    DISCHARGE_SUMMARY,
    DISCHARGE_SUMMARY_DESCRIPTION,
    DISCHARGE_SUMMARY_STEPS,
    Workflow,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowStep,
)
from apps.inference.workflows import advance, shapes

R = WorkflowRun.Status
FIELDS = ("document", "priority", "deadline_s")
# What a workflow's name can be (its SlugField, 64 characters at most).
NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")
# The most characters of a document: a discharge note is a few pages; the body limit
# (MEDAI_MAX_BODY_BYTES) bounds it too, and each step's model its context.
DOCUMENT_MAX = 100_000


def _bad(field: str, message: str, code: str = "invalid_value", status: int = 400) -> ApiError:
    return ApiError(status, code, f"{field}: {message}", field)


def not_found(run_id: Any) -> ApiError:
    shown = str(run_id) if len(str(run_id)) <= 80 and str(run_id).isprintable() else "that id"
    return ApiError(404, "workflow_run_not_found", f"No such workflow run: '{shown}'.", "run_id")


# --- reads -----------------------------------------------------------------------------------------


def list_workflows(principal: Principal) -> list[Workflow]:
    """The active workflows with their steps (the same for every location: workflows are defined
    once, in admin, and every run is its caller's)."""
    gate.authorize(principal, SCOPE_READ)
    return list(Workflow.objects.active().prefetch_related("steps__agent_type"))


def get_run(principal: Principal, run_id: Any, *, content: bool = False) -> WorkflowRun:
    """The caller's run (a location admin's: any run of the location), or 404."""
    try:
        pk = uuid.UUID(str(run_id))
    except ValueError:
        raise not_found(run_id) from None
    qs = WorkflowRun.objects.visible_to(principal).select_related("workflow").filter(pk=pk)
    found = (qs if content else qs.defer("document", "result")).first()
    if found is None:
        raise not_found(run_id)
    return found


LIST_DEFAULT, LIST_MAX = 20, 100


def list_runs(
    principal: Principal,
    *,
    workflow: Any = None,
    status: Any = None,
    after: Any = None,
    limit: Any = None,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of the runs the caller may see (``visible_to``), newest first, after the cursor run
    ``after``, of one workflow (by name) and in one status if asked; and whether more follow. The
    items are the run objects without their result (the read of one run gives it, audited as a
    read of PHI); a bad parameter is a 400 naming it."""
    gate.authorize(principal, SCOPE_READ)
    size = files.page_size(limit, LIST_DEFAULT, LIST_MAX)
    visible = WorkflowRun.objects.visible_to(principal)
    qs = visible.select_related("workflow").defer("document", "result")
    if workflow not in (None, ""):
        if not isinstance(workflow, str) or not NAME.fullmatch(workflow):
            raise _bad("workflow", "must be a workflow's name (letters, digits, '-' and '_').")
        qs = qs.filter(workflow__name=workflow)
    if status not in (None, ""):
        if status not in R.values:
            raise _bad("status", f"must be one of {', '.join(R.values)}.")
        qs = qs.filter(status=status)
    if after not in (None, ""):
        try:
            pk: uuid.UUID | None = uuid.UUID(str(after))
        except ValueError:
            pk = None
        cursor = visible.filter(pk=pk).values("created_at", "pk").first() if pk else None
        if cursor is None:
            raise _bad("after", "names no workflow run of yours.")
        qs = qs.filter(Q(created_at__lt=cursor["created_at"]) | Q(created_at=cursor["created_at"], pk__lt=cursor["pk"]))
    found = list(qs.order_by("-created_at", "-pk")[: size + 1])
    page = found[:size]
    steps = shapes.steps_of_runs(page)
    return [shapes.run_object(run, steps.get(run.pk, []), with_result=False) for run in page], len(found) > size


def read_run(principal: Principal, run_id: Any) -> dict[str, Any]:
    """The run object, its result included once completed: the read of PHI, audited now."""
    gate.authorize(principal, SCOPE_READ)
    run = get_run(principal, run_id, content=True)
    body = shapes.run_object(run)
    record_event(
        actions.WORKFLOW_RUN_READ,
        actor=principal,
        obj=run,
        details={"status": body["status"], "result": body["result"] is not None, **(audit_marks(principal) or {})},
    )
    return body


# --- start -------------------------------------------------------------------------------------------


def _priority(value: Any) -> int:
    if value is None:
        return Priority.NORMAL
    if not isinstance(value, str) or value.strip().upper() not in Priority.names:
        names = ", ".join(n.lower() for n in Priority.names)
        raise _bad("priority", f"must be one of {names}.")
    return int(Priority[value.strip().upper()])


def _deadline_s(value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 1 <= value <= MAX_DEADLINE_S
    ):
        raise _bad("deadline_s", f"must be a number of seconds between 1 and {MAX_DEADLINE_S}.")
    return float(value)


def _document(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad("document", "this field is required (a non-empty string).")
    if "\x00" in value:
        raise _bad("document", "must not contain NUL characters.")
    if len(value) > DOCUMENT_MAX:
        raise _bad("document", f"{len(value)} characters; the limit is {DOCUMENT_MAX}.", "document_too_large", 413)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("document", "must be valid Unicode text (no lone surrogates).") from None
    return value


def start_run(
    principal: Principal, name: Any, data: Any, correlation_id: str = "", *, client_ip: str | None = None
) -> WorkflowRun:
    """Start a run of the active workflow ``name`` on ``data`` ``{document, priority, deadline_s}``:
    400 naming the field for bad input (413 for a document too large), 404 for no such workflow,
    the pipeline's 403/429/503 if its first stage cannot be queued now. Answers the run, queued."""
    gate.authorize(principal, SCOPE_SUBMIT)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
    for key in data:
        if key not in FIELDS:  # named in the answer: as text that encodes (a lone surrogate would not)
            shown = str(key)[:64].encode("utf-8", "replace").decode("utf-8")
            raise ApiError(400, "unknown_parameter", f"{shown}: not a field of a workflow run.", shown)
    document = _document(data.get("document"))
    priority = _priority(data.get("priority"))
    deadline_s = _deadline_s(data.get("deadline_s"))
    # only a name a workflow can have is looked up (a slug: a NUL, say, is refused by PostgreSQL)
    known = isinstance(name, str) and NAME.fullmatch(name) is not None
    workflow = Workflow.objects.active().filter(name=name).first() if known else None
    if workflow is None:
        shown = name if isinstance(name, str) and len(name) <= 64 and name.isprintable() else "that name"
        raise ApiError(404, "workflow_not_found", f"No such workflow: '{shown}'.", "name")
    steps = list(workflow.steps.select_related("agent_type").order_by("stage", "id"))
    if not steps:
        raise ApiError(409, "workflow_empty", f"Workflow '{workflow.name}' has no steps.")
    snapshot = delegation.snapshot(principal)
    with holds_released_on_rollback() as made, transaction.atomic():
        now = timezone.now()
        batch = TaskBatch.objects.create(
            user_id=principal.user_id, location_id=principal.location_pk, total=len(steps), holds_results=True
        )
        run = WorkflowRun.objects.create(
            task_batch=batch,
            workflow=workflow,
            user_id=principal.user_id,
            location_id=principal.location_pk,
            principal=snapshot,
            correlation_id=correlation_id[:64],
            priority=priority,
            stage=steps[0].stage,
            document=document,
            created_at=now,
            deadline=now + timedelta(seconds=deadline_s) if deadline_s else None,
        )
        WorkflowRunStep.objects.bulk_create(
            [
                WorkflowRunStep(
                    run=run,
                    name=s.name,
                    agent_type=s.agent_type.agent_type,
                    stage=s.stage,
                    prompt=s.prompt,
                    max_tokens=s.max_tokens,
                )
                for s in steps
            ]
        )
        record_event(
            actions.WORKFLOW_RUN_CREATE,
            actor=principal,
            obj=run,
            details={
                "workflow": workflow.name,
                "steps": len(steps),
                "priority": Priority(priority).name.lower(),
                "deadline_s": deadline_s,
                **(audit_marks(principal) or {}),
            },
        )
        made.extend(advance.submit_stage(run, principal, client_ip))  # raises the pipeline's refusal
        shapes.push_on_commit(run)
    return get_run(principal, run.pk)


# --- cancel --------------------------------------------------------------------------------------------


def cancel_run(principal: Principal, run_id: Any) -> WorkflowRun:
    """Cancel the caller's own run: its queued steps are cancelled, a running one finishes, no later
    stage is queued. 409 once it ended. A location admin reads the location's runs but cancels
    only theirs (as with a task's retry: acting on a run is its owner's)."""
    gate.authorize(principal, SCOPE_SUBMIT)
    with transaction.atomic():
        found = get_run(principal, run_id)
        run = WorkflowRun.objects.select_related("workflow").locked().get(pk=found.pk)
        if run.user_id != principal.user_id:
            raise not_found(run_id)
        if run.is_final:
            raise ApiError(
                409,
                "workflow_run_not_cancellable",
                f"Workflow run {run.pk} is {run.status}; it can no longer be cancelled.",
            )
        cancelled = queue.cancel_queued_of_batch(principal, run.pk)
        record_event(
            actions.WORKFLOW_RUN_CANCEL,
            actor=principal,
            obj=run,
            details={"cancelled_steps": len(cancelled), **(audit_marks(principal) or {})},
        )
        advance.end(run, R.CANCELLED, "workflow_run_cancelled", "The run was cancelled by its owner.")
    return get_run(principal, run.pk)


# --- the demo's workflow ---------------------------------------------------------------------------------


def ensure_discharge_summary() -> Workflow:
    """The demo's ``discharge-summary`` (idempotent: an existing one, edited in admin, is kept)."""
    with transaction.atomic():
        workflow, created = Workflow.objects.get_or_create(
            name=DISCHARGE_SUMMARY, defaults={"description": DISCHARGE_SUMMARY_DESCRIPTION}
        )
        if created:
            for name, agent_type, stage, prompt, max_tokens in DISCHARGE_SUMMARY_STEPS:
                route, _ = AgentRoute.objects.get_or_create(agent_type=agent_type)
                WorkflowStep.objects.create(
                    workflow=workflow, name=name, agent_type=route, stage=stage, prompt=prompt, max_tokens=max_tokens
                )
    return workflow
