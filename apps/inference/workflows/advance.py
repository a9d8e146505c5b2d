"""How a workflow run moves along once started: when the tasks of its running stage have all
ended, the next stage is queued with their outputs, or the run ends (completed with the last
stage's output; failed naming the step that failed; cancelled).

It is moved from the queue's after-commit hook of the transitions that end tasks
(apps.inference.queue.hooks: finish, fail, cancel, expire), in the process that ended them (a
worker, or the web process of a cancel), as a file batch is: no polling. The minute schedule
(``sweep``) steps every open run too, which catches what a dead process left and queues a stage
that was held up. A stage refused for now (a rate limit, a quota, a full queue: 429; the database:
503) waits, the reason shown in the run's ``waiting``, and is tried again by the schedule; a stage
refused for itself (a route gone, a prompt too long: 4xx) fails the run with that reason. A step's
own failover (the route's fallback models, the backend retries) happens inside its task's
dispatch; what reaches the run is the task's outcome.

The later stages are submitted as the run's owner (apps.inference.delegation), re-checked first:
a user deactivated, revoked or removed from the location since the run started gets no more of
its stages queued (the run fails with that reason).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.accounts.services import Principal
from apps.audit import actions
from apps.inference import delegation, queue, retention
from apps.inference.errors import ApiError
from apps.inference.filebatch.feed import holds_released_on_rollback
from apps.inference.models import LIVE_STATUSES, InferenceTask, Priority, TaskBatch
from apps.inference.queue import hooks
from apps.inference.workflow_models import WorkflowRun, WorkflowRunStep
from apps.inference.workflows import prompts, shapes

logger = logging.getLogger("medai.queue")
R = WorkflowRun.Status
T = InferenceTask.Status
WHAT = "workflow run"


# --- queueing a stage ------------------------------------------------------------------------------------


def _output(task: InferenceTask | None) -> str | None:
    """A completed step's answer (its task's message content), or None when it cannot be read."""
    result = task.result if task is not None else None
    try:
        content = result["choices"][0]["message"].get("content") if result else None
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return content if isinstance(content, str) else ("" if result else None)


def _earlier_outputs(run: WorkflowRun) -> list[prompts.Output]:
    """The outputs of every step of the stages before the run's current one (read under its lock)."""
    steps = list(
        WorkflowRunStep.objects.filter(run_id=run.pk, stage__lt=run.stage)
        .select_related("task")
        .order_by("stage", "id")
    )
    found = []
    for s in steps:
        text = _output(s.task)
        if text is None:
            raise ApiError(410, "step_output_unavailable", f"The output of step '{s.name}' can no longer be read.")
        found.append(prompts.Output(s.name, s.agent_type, text))
    return found


def submit_stage(run: WorkflowRun, principal: Principal, client_ip: str | None) -> list[Any]:
    """Queue the steps of the run's current stage (inside the caller's transaction, the run's row
    locked or new): one task each, through the queue's batch submit, into the run's batch. The
    tasks' ids; raises the pipeline's ApiError (nothing queued then)."""
    steps = list(WorkflowRunStep.objects.filter(run_id=run.pk, stage=run.stage).order_by("id"))
    outputs = _earlier_outputs(run) if run.stage > 0 else []
    items = []
    remaining = (run.deadline - timezone.now()).total_seconds() if run.deadline else None
    if remaining is not None and remaining < 1:
        raise ApiError(
            410, "deadline_exceeded", f"The run's deadline passed before its stage {run.stage} could be queued."
        )
    for s in steps:
        item: dict[str, Any] = {
            "agent_type": s.agent_type,
            "messages": [{"role": "user", "content": prompts.render(s.prompt, s.stage, run.document, outputs)}],
            "priority": Priority(run.priority).name.lower(),
        }
        if s.max_tokens:
            item["max_tokens"] = s.max_tokens
        if remaining is not None:
            item["deadline_s"] = remaining
        items.append(item)
    extras = [{"workflow_run": str(run.pk), "workflow_step": s.name} for s in steps]
    try:
        _, tasks = queue.submit_batch(
            principal,
            items,
            run.correlation_id,
            client_ip=client_ip,
            into=run.task_batch,
            dedup=False,
            extras=extras,
        )
    except ApiError as exc:
        index = _item_index(exc)
        if index is not None and index < len(steps):  # name the step (its prompt is made of the document)
            exc.message = f"step '{steps[index].name}': {exc.message.split(': ', 1)[-1]}"
            exc.param = "document"
        raise
    for s, task in zip(steps, tasks, strict=True):
        s.task = task
    WorkflowRunStep.objects.bulk_update(steps, ["task"])
    return [t.id for t in tasks]


def _item_index(exc: ApiError) -> int | None:
    param = exc.param or ""
    if param.startswith("requests[") and "]" in param:
        try:
            return int(param[len("requests[") : param.index("]")])
        except ValueError:
            return None
    return None


# --- ending a run ------------------------------------------------------------------------------------------


def end(run: WorkflowRun, status: str, code: str = "", message: str = "", result: dict[str, Any] | None = None) -> None:
    """End the run (inside the caller's transaction, its row locked): its outcome, its steps'
    queued tasks cancelled (a running one finishes, unused), its tasks' results left to the
    queue's retention, its own content kept ``MEDAI_RESULT_TTL``; audited, pushed on commit."""
    now = timezone.now()
    run.status, run.finished_at, run.waiting = status, now, ""
    run.result_expires_at = now + timedelta(seconds=queue.result_ttl())
    if status == R.COMPLETED:
        run.result = result
    else:
        run.error_code, run.error_message = code[:64], message
    run.save()
    TaskBatch.objects.filter(pk=run.pk).update(holds_results=False)
    if status != R.COMPLETED:
        queue.cancel_queued_of_batch(principal_of(run), run.pk)
    delegation.record_as_owner(
        actions.WORKFLOW_RUN_FINISH,
        run,
        {
            "status": status,
            "workflow": run.workflow.name,
            "error_code": run.error_code,
            "duration_ms": int((now - run.created_at).total_seconds() * 1000),
        },
    )
    shapes.push_on_commit(run)


def principal_of(run: WorkflowRun) -> Principal:
    return delegation.principal_from(run.principal, run.user_id, run.location_id)


def _failure(step: WorkflowRunStep) -> tuple[str, str, str]:
    """(run status, code, message) for a step whose task ended without an answer."""
    task = step.task
    assert task is not None
    named = f"Step '{step.name}' ({step.agent_type})"
    if task.status == T.CANCELLED:
        return R.CANCELLED, "step_cancelled", f"{named} was cancelled."
    if task.status == T.EXPIRED:
        return R.FAILED, "deadline_exceeded", f"{named} was still queued at the run's deadline."
    reason = task.error_message or task.error_code or "no answer"
    return R.FAILED, "step_failed", f"{named} failed: {reason}"


# --- advancing a run ------------------------------------------------------------------------------------


def step(pk: Any) -> str | None:
    """Move one run along: queue its stage if it is held up, or, once the tasks of its stage all
    ended, queue the next stage or end the run. Its status after (None: no such run)."""
    with holds_released_on_rollback() as made, transaction.atomic():
        run = WorkflowRun.objects.select_related("workflow", "task_batch").locked().filter(pk=pk).first()
        if run is None or run.is_final:
            return run.status if run else None
        steps = shapes.steps_of(run)
        current = [s for s in steps if s.stage == run.stage]
        if any(s.task is None for s in current):  # held up earlier: try again
            _queue_stage(run, made)
            return run.status
        if any(s.task is not None and s.task.status in LIVE_STATUSES for s in current):
            return run.status
        bad = next((s for s in current if s.task is not None and s.task.status != T.COMPLETED), None)
        if bad is not None:
            end(run, *_failure(bad))
            return run.status
        later = sorted({s.stage for s in steps if s.stage > run.stage})
        if not later:
            end(run, R.COMPLETED, result=_result(run, current))
            return run.status
        run.stage, run.status = later[0], R.RUNNING
        _queue_stage(run, made)
        if not run.is_final:
            shapes.push_on_commit(run)
    return run.status


def _result(run: WorkflowRun, last: list[WorkflowRunStep]) -> dict[str, Any]:
    tasks = {t.id: t for t in InferenceTask.objects.by_pk([s.task_id for s in last]).only("id", "result")}
    outputs = [
        prompts.Output(s.name, s.agent_type, _output(tasks.get(s.task_id) if s.task_id else None) or "") for s in last
    ]
    return {"content": outputs[0].text if len(outputs) == 1 else prompts.outputs_text(outputs)}


def _queue_stage(run: WorkflowRun, made: list[Any]) -> None:
    """Queue the run's current stage as its owner (re-checked), or note why it waits, or end the
    run with the reason it never will be."""
    refused = delegation.refusal(run.principal, run.user_id, run.location_id, WHAT)
    if refused is not None:
        end(run, R.FAILED, *refused)
        return
    try:
        made.extend(submit_stage(run, principal_of(run), None))
    except ApiError as exc:
        if exc.status_code in (429, 503):
            run.waiting = f"Waiting to queue stage {run.stage}: {exc.message}"[:300]
            run.save(update_fields=["waiting", "stage", "status"])
            return
        end(run, R.FAILED, exc.code, f"Stage {run.stage} could not be queued: {exc.message}")
        return
    run.waiting = ""
    run.save(update_fields=["waiting", "stage", "status"])


_open_run = hooks.RowById(WorkflowRun, lambda pk: WorkflowRun.objects.open().filter(pk=pk).only("pk").order_by())


def advance(batch_ids: set[str]) -> None:
    """The queue's hook (tasks of these batches ended, committed): step each open run among them.
    It runs after every task's end of any batch (file batches' and plain submit batches' too), so
    whether a batch is an open run is one statement compiled once (``hooks.RowById``)."""
    for pk in hooks.batch_pks(batch_ids):
        try:
            if _open_run.get(pk) is not None:
                step(pk)
        except Exception:  # one run's trouble must not stop the others; the schedule retries
            logger.exception("workflow run %s: step failed", pk)


def _due(pk: Any) -> bool:
    """Whether ``step`` has something to do for the run (read without a lock)."""
    row = WorkflowRun.objects.filter(pk=pk).values("status", "stage").first()
    if row is None or row["status"] not in WorkflowRun.OPEN:
        return False
    tasks = WorkflowRunStep.objects.filter(run_id=pk, stage=row["stage"]).values_list("task__status", flat=True)
    return any(status is None or status not in LIVE_STATUSES for status in tasks)


def sweep() -> dict[str, int]:
    """Step every open run that has something to do (a stage held up, or a hook a dead process never
    ran), then purge the content of runs past their retention. Run every minute by the worker
    cluster (apps.inference.tasks)."""
    stepped = 0
    for pk in WorkflowRun.objects.open().order_by("created_at").values_list("pk", flat=True):
        try:
            if _due(pk):
                step(pk)
                stepped += 1
        except Exception:  # the next run still gets its turn; the next sweep retries this one
            logger.exception("workflow run %s: step failed", pk)
    return {"runs": stepped, "runs_purged": retention.purge_workflow_runs(timezone.now())}


hooks.on_batch_tasks_ended(advance)
