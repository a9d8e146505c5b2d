"""Result writes: a group's outcomes fenced by their attempt, failures of tasks that could not run,
and tasks that admission turned away sent back to the queue in their old place."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import record_events
from apps.inference import broker, push
from apps.inference import metrics as inference_metrics
from apps.inference.models import InferenceTask, QueueEntry
from apps.inference.pipeline import record
from apps.inference.queue import hooks
from apps.inference.queue.common import (
    LIVE,
    REQUEUED,
    TRANSIENT,
    Claimed,
    S,
    _internal,
    list_key,
    result_ttl,
)


class _Superseded(Exception):
    """The fenced write found a task that is no longer this claim's: its transaction is rolled back
    and the group written again with the fence read first."""


def _finish_group(group: list[Claimed], results: list[tuple[dict[str, Any], int]]) -> list[str]:
    """Write the group's results in one transaction: each fenced by its attempt (a task claimed again
    after this worker's lease ended is not overwritten: "superseded"), one audit write for all,
    the companions' entries deleted, the updates pushed on commit.

    The fence rides on the outcomes' UPDATE (``WHERE status = 'processing' AND attempts = …``) when
    no task goes back to the queue: if it wrote every row, nothing was superseded (the usual case,
    one statement for the fence and the outcomes); otherwise that transaction is rolled back before
    anything else was written and the group is written again with the fence read under the rows'
    locks first, which tells each task's state."""
    finished = timezone.now()
    expires = finished + timedelta(seconds=result_ttl())
    written: tuple[list[str], list[InferenceTask]] | None = None
    if not any(outcome["status"] == REQUEUED for outcome, _ in results):
        try:
            with transaction.atomic():
                written = _write_group(group, results, finished, expires, None)
        except _Superseded:
            written = None
    if written is not None:
        states, mine = written
    else:
        with transaction.atomic():
            # the fence, read under the rows' locks (the whole database's on SQLite) until the commit
            current = {
                pk: (status, attempts)
                for pk, status, attempts in InferenceTask.objects.by_pk([c.task.id for c in group])
                .locked()
                .values_list("id", "status", "attempts")
            }
            states, mine = _write_group(group, results, finished, expires, current)
    for task in mine:
        if task.started_at is not None:
            task.queue_wait_ms = int((task.started_at - (task.queued_at or task.created_at)).total_seconds() * 1000)
    if mine:
        record.observe_tasks(mine)  # the metrics step
    return states


def _write_group(
    group: list[Claimed],
    results: list[tuple[dict[str, Any], int]],
    finished: Any,
    expires: Any,
    current: dict[Any, tuple[str, int]] | None,
) -> tuple[list[str], list[InferenceTask]]:
    """``_finish_group``'s transaction: with ``current`` (the fence read), what it allows; without,
    every task as still this claim's, the fence checked by the outcomes' UPDATE (``_Superseded``)."""
    states: list[str] = []
    updates = []
    mine, requeued = [], []
    for c, (outcome, ms) in zip(group, results, strict=True):
        task = c.task
        if current is not None and current.get(task.id) != (S.PROCESSING, c.attempt):
            states.append("superseded")
            continue
        if outcome["status"] == REQUEUED:
            requeued.append(c)
            states.append(S.QUEUED)
            continue
        for name, value in {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "tool_calls": 0,
            "endpoint_id": None,
            "model_name": "",
            "answer_chars": None,
            "finish_reason": "",
            "refused": False,
            **outcome,
        }.items():
            setattr(task, name, value)
        task.finished_at, task.result_expires_at, task.inference_ms = finished, expires, ms
        task.latency_ms = int((finished - task.created_at).total_seconds() * 1000)
        mine.append(task)
        states.append(outcome["status"])
        updates.append(push.update_for(task, outcome["status"]))
    if mine:
        if current is None:
            attempts = [c.attempt for c in group]  # no requeued task here: ``mine`` is the whole group
            if InferenceTask.objects.write_outcomes(mine, attempts) != len(mine):
                raise _Superseded
        else:
            InferenceTask.objects.write_outcomes(mine)
    if requeued:
        _requeue(requeued, finished)
        updates += [push.update_for(c.task, S.QUEUED) for c in requeued]
    back = {id(c) for c in requeued}
    companions = [c.entry_id for c in group if c.entry_id is not None and id(c) not in back]
    if companions:
        QueueEntry.objects.filter(id__in=companions).delete()
    if mine:  # the pipeline's reconcile and audit steps: one event per finished task, appended last
        record.reconcile_tasks(mine)  # (the chain head stays locked to the commit)
        record_events(record.audit_events(mine))
    transaction.on_commit(lambda: push.send(updates))
    hooks.batch_tasks_ended(t.batch_id for t in mine)  # after the push: a batch's end follows its tasks
    return states, mine


def _finish_or_fail(group: list[Claimed], results: list[tuple[dict[str, Any], int]]) -> list[str]:
    """``_finish_group``; when the write fails for a reason other than the connection, each task is
    written on its own, and one whose outcome cannot be written is FAILED instead."""
    try:
        return _finish_group(group, results)
    except TRANSIENT:
        raise
    except Exception as exc:  # noqa: BLE001
        if len(group) > 1:
            return [state for c, r in zip(group, results, strict=True) for state in _finish_or_fail([c], [r])]
        return _finish_group(group, [(_internal(exc, group[0].task.id, "saving its outcome"), results[0][1])])


def _write_failures(tasks: list[InferenceTask], outcome: dict[str, Any], now: Any) -> None:
    """FAILED with ``outcome``, for tasks that were not claimed by this run (inside the caller's
    transaction, under the rows' locks): one UPDATE, their audit events, a push on commit."""
    expires = now + timedelta(seconds=result_ttl())
    for task in tasks:
        for name, value in {**outcome, "finished_at": now, "result_expires_at": expires}.items():
            setattr(task, name, value)
        task.latency_ms = int((now - task.created_at).total_seconds() * 1000)
    InferenceTask.objects.by_pk([t.id for t in tasks]).fail(
        outcome["error_code"], outcome["error_message"], now, expires
    )
    record.reconcile_tasks(tasks)
    record_events(record.audit_events(tasks))
    updates = [push.update_for(t, S.FAILED) for t in tasks]
    fields = [inference_metrics.task_fields(t) for t in tasks]
    transaction.on_commit(lambda: push.send(updates))
    hooks.batch_tasks_ended(t.batch_id for t in tasks)

    def observe() -> None:
        for f in fields:
            inference_metrics.observe(f)

    transaction.on_commit(observe)


def _fail_unclaimable(task_id: Any, exc: Exception) -> str:
    """The delivered task could not even be claimed (its row cannot be read, say): FAILED as it is,
    its columns read without its content."""
    outcome = _internal(exc, task_id, "starting it")
    with transaction.atomic():
        task = InferenceTask.objects.filter(id=task_id).defer("request", "result").locked().first()
        if task is None or task.status not in LIVE:
            return task.status if task else "missing"
        _write_failures([task], outcome, timezone.now())
    return S.FAILED


def _requeue(claimed: list[Claimed], now: Any) -> None:
    """Put tasks that admission turned away (WAIT_CODES) back in the queue, in their old place:
    QUEUED again and their entries unleased (the delivered task's too: django-q2's acknowledgement
    keeps the entry of a queued task, see apps.inference.broker), their delivery count reset (they
    did not fail). The attempt counter keeps its increment (it is the fencing token);
    ``started_at`` is cleared."""
    ids = [c.task.id for c in claimed]
    InferenceTask.objects.by_pk(ids).requeue()
    QueueEntry.objects.of_tasks(ids).release(now)
    transaction.on_commit(lambda: broker.wake(list_key(), len(ids)))
    for c in claimed:
        c.task.status, c.task.started_at = S.QUEUED, None
