"""What the queue's modules share: settings, status groups, the task-row helpers (locks, lookups by
primary key), the claim record and the outcomes of unexpected errors."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django_q.conf import Conf
from django_q.exceptions import TimeoutException

from apps.accounts.services import Principal
from apps.inference import broker
from apps.inference.errors import ApiError
from apps.inference.models import LIVE_STATUSES, InferenceTask

logger = logging.getLogger("medai.queue")
S = InferenceTask.Status
LIVE = LIVE_STATUSES
FINISHED = (S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED)
TASK_FUNC = broker.TASK_FUNC
# Admission answers that mean "not now" (every allowed model at its concurrency limit, the GPU
# policy holding new work): a queued task goes back to the queue in its place instead of failing.
WAIT_CODES = frozenset({"model_busy", "gpu_overloaded"})
REQUEUED = "requeued"


def result_ttl() -> int:
    return settings.MEDAI_RESULT_TTL


def queue_max() -> int:
    return settings.MEDAI_QUEUE_MAX


def batch_max() -> int:
    return settings.MEDAI_BATCH_MAX


def list_key() -> str:
    return Conf.CLUSTER_NAME


def unit_of_work(func: Any) -> Any:
    """Like services.db_unit (drop a stale connection before and after), but only outside an atomic
    block: the queue services also run inside a request or a caller's transaction, where closing
    the connection would break it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outside = not connection.in_atomic_block
        if outside:
            close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            if outside and not connection.in_atomic_block:
                close_old_connections()

    return wrapper


def _package(task: InferenceTask, now: Any) -> str:
    return broker.task_package(task.id, now)


def _actor(principal: Principal) -> Any:
    return SimpleNamespace(pk=principal.user_id or None, username=principal.username)


def _db_down(exc: Exception) -> ApiError:
    logger.error("queue database error: %s", type(exc).__name__)
    return ApiError(
        503,
        "database_unavailable",
        "The task store is unavailable; nothing was queued. Retry shortly.",
        headers={"Retry-After": "5"},
    )


@dataclass
class Claimed:
    task: InferenceTask
    attempt: int  # the fencing token: only this claim may write the result
    entry_id: int | None  # a companion's queue entry (deleted with its result); None: the delivered task


def drain_seconds() -> float:
    return settings.MEDAI_QUEUE_DRAIN_SECONDS


def max_deliveries() -> int:
    """How many times a task is delivered to a worker that then never writes its outcome (killed,
    out of time, its database gone) before it is failed: django-q2's ``max_attempts``."""
    return int(Conf.MAX_ATTEMPTS or 3)


# --- unexpected errors: every task ends with an outcome ---------------------------------------
# An error that is not the backend's answer (a bug, a request that cannot be encoded, a row that
# cannot be written or read) ends the task FAILED with a message a user can read; the trace goes
# to the log (redacted), never into the API. Errors of the database connection itself are not the
# task's: the run stops, its entries stay leased and are delivered again when the lease ends
# (``max_deliveries`` bounds that); a task left PROCESSING without an entry is sent back to the
# queue by the sweep (``recover_orphans``).

INTERNAL_ERROR = "internal_error"
REQUEST_UNREADABLE = "request_unreadable"
WORKER_LOST = "worker_lost"
TIMED_OUT = "task_timeout"
TRANSIENT = (OperationalError, InterfaceError)


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"status": S.FAILED, "result": None, "http_status": None, "error_code": code, "error_message": message}


def _internal(exc: BaseException, task_id: Any, step: str) -> dict[str, Any]:
    """The outcome of a task that an unexpected error stopped while ``step``."""
    logger.error("task %s: unexpected %s while %s", task_id, type(exc).__name__, step, exc_info=exc)
    if isinstance(exc, TimeoutException):
        return _failed(
            TIMED_OUT,
            f"The task ran longer than the worker's time limit ({Conf.TIMEOUT} s) and was stopped. It is not retried.",
        )
    return _failed(
        INTERNAL_ERROR,
        f"An internal error ({type(exc).__name__}) stopped this task while {step}. "
        "It is not retried; medai's log has the details under this task's id.",
    )
