"""The async task queue: submit, batch, cancel, run, expire and purge (issue 3).

Requests are validated and routed by the same pipeline as sync chat (apps/inference/pipeline/);
the InferenceTask row and its broker entry are written in one transaction, so an accepted task
is never lost and a failed submission leaves nothing behind. Workers run ``run_task`` through
the django-q2 entry point in ``apps.inference.tasks``; the broker (``apps.inference.broker``) gives
the priority order, leases and re-delivery.

The modules, by step of a task's life:

- ``submit``: one task or a batch, de-duplication, the overload rule (``room``);
- ``commit``: the group commit of single submits that arrive together (the submit view's path);
- ``read``: a queued task's position, a batch's progress, the queue's health;
- ``cancel`` and ``expire``: a caller's cancel; the minute sweep (expiry, content purge, orphans);
- ``retry``: a failed, cancelled or expired task queued again as a new task;
- ``claim``: the delivered task and its companions (collation), refills, urgent work;
- ``run``: the worker's event loop (``run_task``) and the call to the backend;
- ``finish``: result writes fenced by the attempt, failures, requeue of tasks turned away;
- ``notify``: websocket push wrappers; ``hooks``: after-commit callbacks of the transitions that
  end tasks (the Batch API's feed and write-out); ``common``: what they share.

The names below are the queue's interface (``from apps.inference import queue; queue.submit_task``).
"""

from apps.inference.queue.cancel import cancel_queued_of_batch, cancel_task
from apps.inference.queue.claim import _claim_group, _claim_urgent, _delivered_waiting, _urgent_head
from apps.inference.queue.commit import submit_task_async
from apps.inference.queue.common import (
    FINISHED,
    INTERNAL_ERROR,
    LIVE,
    REQUEST_UNREADABLE,
    REQUEUED,
    TASK_FUNC,
    TIMED_OUT,
    TRANSIENT,
    WAIT_CODES,
    WORKER_LOST,
    Claimed,
    batch_max,
    drain_seconds,
    list_key,
    max_deliveries,
    queue_max,
    result_ttl,
    unit_of_work,
)
from apps.inference.queue.expire import expire_and_purge, recover_orphans
from apps.inference.queue.finish import _finish_group, _finish_or_fail, _write_failures
from apps.inference.queue.notify import batch_group, push_update, task_group
from apps.inference.queue.read import batch_progress, health, position, positions
from apps.inference.queue.retry import retry_task
from apps.inference.queue.run import URGENT_CHECK_SECONDS, _execute, _execute_group, _timed, run_task
from apps.inference.queue.submit import Submitted, dedup_key, emergency_mode, room, submit_batch, submit_task

__all__ = [
    "FINISHED",
    "INTERNAL_ERROR",
    "LIVE",
    "REQUEST_UNREADABLE",
    "REQUEUED",
    "TASK_FUNC",
    "TIMED_OUT",
    "TRANSIENT",
    "URGENT_CHECK_SECONDS",
    "WAIT_CODES",
    "WORKER_LOST",
    "Claimed",
    "Submitted",
    "_claim_group",
    "_claim_urgent",
    "_delivered_waiting",
    "_execute",
    "_execute_group",
    "_finish_group",
    "_finish_or_fail",
    "_timed",
    "_urgent_head",
    "_write_failures",
    "batch_group",
    "batch_max",
    "batch_progress",
    "cancel_queued_of_batch",
    "cancel_task",
    "dedup_key",
    "drain_seconds",
    "emergency_mode",
    "expire_and_purge",
    "health",
    "list_key",
    "max_deliveries",
    "position",
    "positions",
    "push_update",
    "queue_max",
    "recover_orphans",
    "result_ttl",
    "retry_task",
    "room",
    "run_task",
    "submit_batch",
    "submit_task",
    "submit_task_async",
    "task_group",
    "unit_of_work",
]
