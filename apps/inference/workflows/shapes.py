"""What a client sees of a workflow run: the run object of ``GET /v1/workflows/runs/{id}`` (its
status, each step's status and timings from the step's task, the result once completed, the error
once failed), and the ``workflow.update`` websocket frame sent when a run or one of its steps
changes (``push_on_commit``: to the owner's sockets and the run's subscribers, after the commit,
as task updates are; metadata only, never the document or an output)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from apps.inference import push
from apps.inference.models import InferenceTask, Priority
from apps.inference.workflow_models import RUN_OBJECT, WorkflowRun, WorkflowRunStep

logger = logging.getLogger("medai.queue")
R = WorkflowRun.Status
PENDING, SKIPPED = "pending", "skipped"  # a step whose stage is not queued yet; one never queued


def run_group(run_id: Any) -> str:
    return f"workflow_run.{run_id}"


def steps_of(run: WorkflowRun) -> list[WorkflowRunStep]:
    """The run's steps with their tasks' status and timings (never their content)."""
    return list(
        WorkflowRunStep.objects.filter(run_id=run.pk)
        .select_related("task")
        .defer("task__request", "task__result")
        .order_by("stage", "id")
    )


def steps_of_runs(runs: list[WorkflowRun]) -> dict[Any, list[WorkflowRunStep]]:
    """``steps_of`` for a page of runs, in one query: each run's steps by its id."""
    found: dict[Any, list[WorkflowRunStep]] = {}
    if not runs:
        return found
    steps = (
        WorkflowRunStep.objects.filter(run_id__in=[r.pk for r in runs])
        .select_related("task")
        .defer("task__request", "task__result")
        .order_by("stage", "id")
    )
    for step in steps:
        found.setdefault(step.run_id, []).append(step)
    return found


def _ms(start: Any, end: Any) -> int | None:
    return int((end - start).total_seconds() * 1000) if start and end else None


def step_status(run: WorkflowRun, step: WorkflowRunStep) -> str:
    if step.task is not None:
        return step.task.status
    return SKIPPED if run.is_final else PENDING


def run_status(run: WorkflowRun, steps: list[WorkflowRunStep]) -> str:
    """The run's status: ``queued`` turns ``running`` as soon as one of its steps started."""
    if run.status == R.QUEUED and any(s.task is not None and s.task.started_at for s in steps):
        return R.RUNNING
    return run.status


def step_object(run: WorkflowRun, step: WorkflowRunStep) -> dict[str, Any]:
    task: InferenceTask | None = step.task
    return {
        "name": step.name,
        "agent_type": step.agent_type,
        "stage": step.stage,
        "status": step_status(run, step),
        "task_id": str(task.id) if task else None,
        "model": (task.model_name or None) if task else None,
        "queued_at": task.queued_at if task else None,
        "started_at": task.started_at if task else None,
        "finished_at": task.finished_at if task else None,
        "queue_wait_ms": task.queue_wait_ms if task else None,
        "duration_ms": _ms(task.started_at, task.finished_at) if task else None,
        "error": {"code": task.error_code, "message": task.error_message}
        if task is not None and task.error_code
        else None,
    }


def run_object(
    run: WorkflowRun, steps: list[WorkflowRunStep] | None = None, *, with_result: bool = True
) -> dict[str, Any]:
    """The run as ``GET /v1/workflows/runs/{id}`` answers it (its result: once completed, while
    kept; never ``with_result`` False, as the list of runs shows them)."""
    steps = steps_of(run) if steps is None else steps
    started = [s.task.started_at for s in steps if s.task is not None and s.task.started_at]
    result = None
    if with_result and run.status == R.COMPLETED and run.result and run.content_purged_at is None:
        result = {"content": run.result.get("content", "")}
    return {
        "id": str(run.pk),
        "object": RUN_OBJECT,
        "workflow": run.workflow.name,
        "status": run_status(run, steps),
        "priority": Priority(run.priority).name.lower(),
        "stage": run.stage,
        "created_at": run.created_at,
        "started_at": min(started) if started else None,
        "finished_at": run.finished_at,
        "deadline": run.deadline,
        "duration_ms": _ms(run.created_at, run.finished_at),
        "steps": [step_object(run, s) for s in steps],
        "result": result,
        "error": {"code": run.error_code, "message": run.error_message} if run.error_code else None,
        "waiting": run.waiting or None,
        "result_expires_at": run.result_expires_at,
        "content_purged_at": run.content_purged_at,
    }


def update_frame(run: WorkflowRun, steps: list[WorkflowRunStep]) -> dict[str, Any]:
    """The ``workflow.update`` frame's data: status and per-step status, no content."""
    return {
        "id": str(run.pk),
        "workflow": run.workflow.name,
        "status": run_status(run, steps),
        "stage": run.stage,
        "steps": [
            {
                "name": s.name,
                "stage": s.stage,
                "status": step_status(run, s),
                "task_id": str(s.task_id) if s.task_id else None,
                "duration_ms": _ms(s.task.started_at, s.task.finished_at) if s.task else None,
            }
            for s in steps
        ],
        "error": {"code": run.error_code} if run.error_code else None,
        "changed_at": push.now_iso(),
    }


def push_on_commit(run: WorkflowRun) -> None:
    """``workflow.update`` to the owner's sockets and the run's subscribers, once committed."""
    pk, user_id = run.pk, run.user_id

    def send() -> None:
        try:
            found = WorkflowRun.objects.select_related("workflow").defer("document", "result").filter(pk=pk).first()
            if found is None:
                return
            groups = [run_group(pk)] + ([push.user_group(user_id)] if user_id else [])
            push.send_event(groups, {"type": "workflow.update", "data": update_frame(found, steps_of(found))})
        except Exception as exc:  # noqa: BLE001 - a missed push must not fail the run
            logger.warning("workflow push failed: %s", type(exc).__name__)

    transaction.on_commit(send)
