"""The async task queue: submit, batch, cancel, run, expire and purge (issue 3).

Requests are validated and routed by the same pipeline as sync chat (``services.begin_chat``);
the InferenceTask row and its broker entry are written in one transaction, so an accepted task
is never lost and a failed submission leaves nothing behind. Workers run ``run_task`` through
the django-q2 entry point in ``apps.inference.tasks``; the broker (``apps.inference.broker``) gives
the priority order, leases and re-delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import Case, Count, Exists, F, IntegerField, Min, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.conf import Conf
from django_q.exceptions import TimeoutException

from apps.accounts.models import SCOPE_INFERENCE
from apps.accounts.services import Principal
from apps.audit.services import record_event, record_events
from apps.inference import auditing, broker, push, router, services
from apps.inference import metrics as inference_metrics
from apps.inference.api.errors import ApiError
from apps.inference.models import InferenceTask, Priority, QueueEntry, TaskBatch

logger = logging.getLogger("medai.queue")
S = InferenceTask.Status
LIVE = (S.QUEUED, S.PROCESSING)
FINISHED = (S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED)
TASK_FUNC = broker.TASK_FUNC
# Admission answers that mean "not now" (every allowed model at its concurrency limit, the GPU
# policy holding new work): a queued task goes back to the queue in its place instead of failing.
WAIT_CODES = frozenset({"model_busy", "gpu_overloaded"})
REQUEUED = "requeued"


def result_ttl() -> int:
    return int(getattr(settings, "MEDAI_RESULT_TTL", 300))


def queue_max() -> int:
    return int(getattr(settings, "MEDAI_QUEUE_MAX", 1000))


def batch_max() -> int:
    return int(getattr(settings, "MEDAI_BATCH_MAX", 100))


def list_key() -> str:
    return Conf.CLUSTER_NAME


def unit_of_work(func: Any) -> Any:
    """Like services.db_unit (drop a stale connection before and after), but only outside an atomic
    block: the queue services also run inside a request or a caller's transaction, where closing
    the connection would break it."""
    import functools

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


# --- submission ----------------------------------------------------------------------------------


@dataclass
class Submitted:
    task: InferenceTask
    created: bool  # False: an identical live or retained task was returned (de-duplication)


def dedup_key(location_pk: int, requested: str, agent_type: str, payload: dict[str, Any]) -> str:
    """Same location, model/agent, messages and parameters → same key (never across locations)."""
    canon = json.dumps([location_pk, requested, agent_type, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _prepare(
    auth_header: str | None, item: dict[str, Any], correlation_id: str
) -> tuple[services.ChatPlan, dict[str, Any]]:
    if item.get("stream"):
        raise ApiError(
            400, "invalid_value", "stream is not available for async tasks; poll the result instead.", "stream"
        )
    deadline_s = item.get("deadline_s")
    if deadline_s is not None and (
        isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or not 1 <= deadline_s <= 7 * 86400
    ):
        raise ApiError(
            400, "invalid_value", "deadline_s must be a number of seconds between 1 and 604800.", "deadline_s"
        )
    # begin_chat without its db_unit wrapper: connections are managed by unit_of_work here
    # (deadline_s is the queue's own field, checked above: the chat validation refuses unknown fields)
    chat = {k: v for k, v in item.items() if k != "deadline_s"}
    plan = services.begin_chat.__wrapped__(auth_header, json.dumps(chat).encode(), correlation_id)
    spec = {
        "model": item.get("model") or "",
        "agent_type": item.get("agent_type") or "",
        "payload": plan.payload,
        "deadline_s": deadline_s,
    }
    return plan, spec


def room(priority: int, depth: int) -> int:
    """The overload rule, the one place it lives (admission and ``/v1/async/health``): how many
    more tasks of ``priority`` the queue accepts while ``depth`` async tasks are queued.

    Up to MEDAI_QUEUE_MAX queued tasks, every priority is accepted. Once the queue holds MAX
    (emergency mode) only HIGH and CRITICAL are, up to twice MAX; past that, nothing."""
    limit = queue_max()
    return max((2 * limit if priority >= Priority.HIGH else limit) - depth, 0)


def emergency_mode(depth: int) -> bool:
    """Whether a NORMAL or LOW submission is turned away at this depth (``room`` says so)."""
    return room(Priority.NORMAL, depth) == 0


def _admit(priorities: list[int]) -> None:
    """Admit new tasks of these priorities or answer 429 (``room``). Each task counts at its own
    priority, so a batch mixing HIGH and LOW items cannot carry LOW work into emergency mode."""
    depth = InferenceTask.objects.filter(status=S.QUEUED, mode=InferenceTask.Mode.ASYNC).count()
    retry = {"Retry-After": "30"}
    routine = sum(1 for p in priorities if p < Priority.HIGH)
    if len(priorities) > room(Priority.HIGH, depth):
        raise ApiError(429, "queue_full", f"The queue is full ({depth} tasks waiting).", headers=retry)
    if routine > room(Priority.NORMAL, depth):
        raise ApiError(
            429,
            "queue_full",
            f"The queue holds {depth} tasks (limit {queue_max()}): emergency mode "
            "accepts only high and critical priority. Retry later.",
            headers=retry,
        )


def _existing(p: Principal, keys: list[str], now: Any) -> dict[str, InferenceTask]:
    """The caller's live or retained task for each de-duplication key (the newest one)."""
    # Reused only for the same caller: a task is visible to its owner alone, and answering another
    # clinician with an existing task would tell them what a colleague asked (PHI). The lookup is by
    # key alone (its index; the key already includes the location), the rest is checked here: with
    # the owner in the WHERE clause SQLite picks the owner index and reads all the caller's tasks.
    rows = (
        InferenceTask.objects.filter(dedup_key__in=keys)
        .order_by()
        .values_list("dedup_key", "user_id", "location_id", "mode", "status", "result_expires_at", "created_at", "id")
    )
    best: dict[str, tuple[Any, Any]] = {}
    for key, user_id, location_id, mode, status, expires, created, pk in rows:
        if (user_id, location_id, mode) != (p.user_id, p.location_pk, InferenceTask.Mode.ASYNC):
            continue
        if status in LIVE or (status == S.COMPLETED and expires and expires > now):
            if key not in best or created > best[key][0]:
                best[key] = (created, pk)
    found = {t.id: t for t in _by_pk([pk for _, pk in best.values()])} if best else {}
    return {key: found[pk] for key, (_, pk) in best.items() if pk in found}


def _new_task(
    plan: services.ChatPlan, spec: dict[str, Any], key: str, batch: TaskBatch | None, now: Any
) -> InferenceTask:
    p = plan.principal
    deadline = now + timedelta(seconds=spec["deadline_s"]) if spec["deadline_s"] else None
    return InferenceTask(
        mode=InferenceTask.Mode.ASYNC,
        status=S.QUEUED,
        priority=plan.priority,
        user_id=p.user_id,
        location_id=p.location_pk,
        api_key_id=p.api_key_id,
        agent_type=plan.route.agent_type,
        requested_model=plan.requested_model,
        request=spec,
        correlation_id=plan.correlation_id,
        tools_offered=plan.tools_offered,
        end_user=plan.end_user,
        created_at=now,
        queued_at=now,
        dedup_key=key,
        deadline=deadline,
        batch=batch,
    )


def _package(task: InferenceTask, now: Any) -> str:
    return broker.task_package(task.id, now)


def _enqueue(tasks: list[InferenceTask], now: Any) -> None:
    """Write the tasks and their queue entries (inside the caller's transaction), push on commit."""
    if len(tasks) == 1:
        tasks[0].save(force_insert=True)
    else:
        InferenceTask.objects.bulk_create(tasks)
    broker.put_many(list_key(), [(_package(t, now), t.priority, t.id) for t in tasks], now=now)
    updates = [push.update_for(t) for t in tasks]
    transaction.on_commit(lambda: push.send(updates))


def _key(plan: services.ChatPlan, spec: dict[str, Any]) -> str:
    return dedup_key(plan.principal.location_pk, spec["model"], spec["agent_type"], spec["payload"])


@unit_of_work
def submit_task(auth_header: str | None, item: dict[str, Any], correlation_id: str = "") -> Submitted:
    """Validate, route and queue one chat request; returns the new or the identical existing task."""
    plan, spec = _prepare(auth_header, item, correlation_id)
    key = _key(plan, spec)
    try:
        with transaction.atomic():
            now = timezone.now()
            existing = _existing(plan.principal, [key], now).get(key)
            if existing is not None:
                return Submitted(existing, False)
            _admit([plan.priority])
            task = _new_task(plan, spec, key, None, now)
            _enqueue([task], now)
            record_event(
                "inference.submit",
                actor=_actor(plan.principal),
                location=plan.principal.location_code,
                obj=task,
                details={"priority": Priority(plan.priority).name.lower()},
            )
    except DatabaseError as exc:
        raise _db_down(exc) from None
    return Submitted(task, True)


@unit_of_work
def submit_batch(
    auth_header: str | None, items: Any, correlation_id: str = ""
) -> tuple[TaskBatch, list[InferenceTask]]:
    """Queue up to MEDAI_BATCH_MAX requests as one batch, all or none.

    Bulk: one transaction writes every task row (one multi-row INSERT), every queue entry (another)
    and one audit event for the batch. De-duplication applies per item, as for a single submit: an
    item identical to a live or retained task of the caller's, or to an earlier item of the same
    batch, is answered with that task (``task_ids`` keeps one id per item, in order); the batch
    counts such reused tasks in its progress. Within the batch, entries keep the items' order
    (FIFO within a level).
    """
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid_value", "requests must be a non-empty list.", "requests")
    if len(items) > batch_max():
        raise ApiError(
            413, "batch_too_large", f"A batch holds at most {batch_max()} requests, got {len(items)}.", "requests"
        )
    prepared = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, "invalid_value", f"requests[{i}] must be an object.", f"requests[{i}]")
        try:
            prepared.append(_prepare(auth_header, item, correlation_id))
        except ApiError as exc:
            if exc.status_code == 400:
                exc.message = f"requests[{i}]: {exc.message}"
                exc.param = f"requests[{i}].{exc.param}" if exc.param else f"requests[{i}]"
            raise
    principal = prepared[0][0].principal
    keys = [_key(plan, spec) for plan, spec in prepared]
    try:
        with transaction.atomic():
            now = timezone.now()
            reused = _existing(principal, list(set(keys)), now)
            fresh = [(plan, spec, k) for (plan, spec), k in zip(prepared, keys, strict=True) if k not in reused]
            if fresh:
                first: dict[str, int] = {}  # one new task per distinct item, at its first item's priority
                for plan, _, k in fresh:
                    first.setdefault(k, plan.priority)
                _admit(list(first.values()))
            batch = TaskBatch(user_id=principal.user_id, location_id=principal.location_pk)
            by_key: dict[str, InferenceTask] = dict(reused)
            new: list[InferenceTask] = []
            for plan, spec, k in fresh:
                if k not in by_key:
                    by_key[k] = _new_task(plan, spec, k, batch, now)
                    new.append(by_key[k])
            batch.total = len(by_key)
            batch.reused_task_ids = [str(t.id) for t in reused.values()]
            batch.save(force_insert=True)
            if new:
                _enqueue(new, now)
            record_event(
                "inference.submit_batch",
                actor=_actor(principal),
                location=principal.location_code,
                obj=batch,
                details={
                    "total": len(items),
                    "created": len(new),
                    "reused": len(reused),
                    "priority": Priority(max(p.priority for p, _ in prepared)).name.lower(),
                },
            )
    except DatabaseError as exc:
        raise _db_down(exc) from None
    return batch, [by_key[k] for k in keys]


def _actor(principal: Principal) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(pk=principal.user_id or None, username=principal.username)


def _db_down(exc: Exception) -> ApiError:
    logger.error("queue database error: %s", type(exc).__name__)
    return ApiError(
        503,
        "database_unavailable",
        "The task store is unavailable; nothing was queued. Retry shortly.",
        headers={"Retry-After": "5"},
    )


# --- reading -------------------------------------------------------------------------------------


def position(task: InferenceTask) -> int | None:
    """1-based place in the queue while queued (entries that the broker would deliver first)."""
    return positions([task]).get(task.id)


def positions(tasks: list[InferenceTask]) -> dict[Any, int]:
    """``position`` of each queued task in ``tasks``, by task id, in one query whatever their number:
    each entry's place is counted from the ``(key, rank)`` index by a correlated subquery."""
    queued = [t.id for t in tasks if t.status == S.QUEUED]
    if not queued:
        return {}
    ahead = (
        QueueEntry.objects.filter(key=list_key(), rank__lt=OuterRef("rank"))
        .order_by()
        .values("key")
        .annotate(n=Count("id"))
        .values("n")
    )
    rows = (
        QueueEntry.objects.filter(task_id__in=queued)
        .order_by()
        .annotate(ahead=Coalesce(Subquery(ahead, output_field=IntegerField()), 0))
        .values_list("task_id", "ahead")
    )
    return {task_id: n + 1 for task_id, n in rows}


def batch_progress(batch: TaskBatch) -> dict[str, Any]:
    members = InferenceTask.objects.filter(Q(batch=batch) | Q(id__in=batch.reused_task_ids or []))
    counts = dict(members.order_by().values_list("status").annotate(n=Count("id")))
    total = batch.total
    completed, failed = counts.get(S.COMPLETED, 0), counts.get(S.FAILED, 0)
    cancelled, expired = counts.get(S.CANCELLED, 0), counts.get(S.EXPIRED, 0)
    done = completed + failed + cancelled + expired
    return {
        "batch_id": str(batch.id),
        "total": total,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "expired": expired,
        "processing": counts.get(S.PROCESSING, 0),
        "queued": counts.get(S.QUEUED, 0),
        "progress_percent": round(100.0 * done / total, 1) if total else 100.0,
    }


def health() -> dict[str, Any]:
    """Depth per priority, the oldest wait, and the django-q2 clusters that reported recently."""
    from django_q.status import Stat

    now = timezone.now()
    queued = InferenceTask.objects.filter(status=S.QUEUED, mode=InferenceTask.Mode.ASYNC)
    depth = {p.name.lower(): 0 for p in Priority}
    for prio, n in queued.values_list("priority").annotate(n=Count("id")):
        depth[Priority(prio).name.lower()] = n
    oldest = queued.aggregate(m=Min("queued_at"))["m"]
    try:
        stats = Stat.get_all()
    except Exception:  # noqa: BLE001
        stats = []
    workers = sum(len(s.workers) for s in stats)
    return {
        "depth": depth,
        "queued": sum(depth.values()),
        "processing": InferenceTask.objects.filter(status=S.PROCESSING, mode=InferenceTask.Mode.ASYNC).count(),
        "oldest_wait_s": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
        "clusters_alive": len(stats),
        "workers_alive": workers,
        "queue_max": queue_max(),
        "emergency_mode": emergency_mode(sum(depth.values())),
    }


# --- cancel, expiry, retention ----------------------------------------------------------------


def cancel_task(principal: Principal, task: InferenceTask) -> InferenceTask:
    """Cancel a queued task (its queue entry goes too); a running or finished one answers 409."""
    with transaction.atomic():
        now = timezone.now()
        changed = InferenceTask.objects.filter(id=task.id, status=S.QUEUED).update(
            status=S.CANCELLED, finished_at=now, request=None, content_purged_at=now
        )
        if not changed:
            task.refresh_from_db()
            raise ApiError(
                409, "not_cancellable", f"Task {task.id} is {task.status}; only queued tasks can be cancelled."
            )
        QueueEntry.objects.filter(task_id=task.id).delete()
        record_event("inference.cancel", actor=_actor(principal), location=principal.location_code, obj=task)
        transaction.on_commit(lambda: push_update(task.id))
        transaction.on_commit(lambda: inference_metrics.count_finished("async", "cancelled"))
    task.refresh_from_db()
    return task


def expire_and_purge(now: Any = None) -> dict[str, int]:
    """QUEUED past its deadline → EXPIRED (its prompt dropped); a finished task past its retention
    (``result_expires_at``) keeps its outcome — a purged COMPLETED task is still COMPLETED — and
    loses its content (prompt and result), the time of the purge recorded in ``content_purged_at``.
    Run every minute by the worker cluster's schedule (``apps.inference.tasks.expire_tasks``)."""
    now = now or timezone.now()
    with transaction.atomic():
        overdue = list(InferenceTask.objects.filter(status=S.QUEUED, deadline__lte=now).values_list("id", flat=True))
        expired = InferenceTask.objects.filter(id__in=overdue, status=S.QUEUED).update(
            status=S.EXPIRED,
            finished_at=now,
            error_code="deadline_exceeded",
            error_message="The task was still queued at its deadline.",
            request=None,
            content_purged_at=now,
        )
        QueueEntry.objects.filter(task_id__in=overdue).delete()
    inference_metrics.count_finished("async", "expired", expired)
    purged = InferenceTask.objects.filter(
        result_expires_at__lte=now,
        content_purged_at__isnull=True,
        mode=InferenceTask.Mode.ASYNC,
        status__in=(S.COMPLETED, S.FAILED, S.CANCELLED),
    ).update(request=None, result=None, content_purged_at=now)
    return {"expired": expired, "purged": purged}


def recover_orphans(now: Any = None) -> int:
    """Send back to the queue, at their old place, live async tasks that have no queue entry (a
    task PROCESSING or QUEUED always has one until it ends, so such a task was lost: its entry
    deleted by an older version, or by hand). Run by the same schedule as ``expire_and_purge``."""
    now = now or timezone.now()
    entry = QueueEntry.objects.filter(task_id=OuterRef("id"))
    with transaction.atomic():
        lost = list(
            _locked(
                InferenceTask.objects.filter(mode=InferenceTask.Mode.ASYNC, status__in=LIVE)
                .exclude(Exists(entry))
                .order_by()
                .only("id", "status", "priority", "queued_at", "created_at")
            )[:1000]
        )
        if not lost:
            return 0
        _by_pk([t.id for t in lost]).update(status=S.QUEUED, started_at=None, queue_wait_ms=None)
        broker.put_again(
            list_key(), [(_package(t, now), t.priority, t.id, t.queued_at or t.created_at) for t in lost], now=now
        )
    logger.warning("sent %d task(s) without a queue entry back to the queue", len(lost))
    return len(lost)


# --- running (worker side) ---------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def _run(coro: Any) -> Any:
    # One loop per worker process: the backend client pool (one per loop) is reused across tasks.
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def _principal_for(task: InferenceTask) -> Principal:
    return Principal(
        user_id=task.user_id or 0,
        username="",
        role="",
        location_pk=task.location_id,
        location_code="",
        organization_id=None,
        scopes=frozenset({SCOPE_INFERENCE}),
        method="queue",
        api_key_id=task.api_key_id,
    )


@dataclass
class Claimed:
    task: InferenceTask
    attempt: int  # the fencing token: only this claim may write the result
    entry_id: int | None  # a companion's queue entry (deleted with its result); None: the delivered task


def drain_seconds() -> float:
    return settings.MEDAI_QUEUE_DRAIN_SECONDS


def _locked(qs: Any, skip: bool = False) -> Any:
    """Row locks on PostgreSQL (SQLite's IMMEDIATE transaction already holds the write lock)."""
    from django.db import connection

    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=skip)
    return qs


def _by_pk(ids: list[Any]) -> Any:
    """Tasks by primary key alone, unordered. Filters on status here would let SQLite's planner pick
    the status index and scan every queued task: a cost growing with the queue's depth."""
    return InferenceTask.objects.filter(id__in=ids).order_by()


def _delivered_waiting(rank: float, now: Any) -> bool:
    """Whether the broker already handed out an entry ahead of ``rank`` that no worker started yet
    (prefetched into a cluster's local queue, waiting for a free worker): a draining worker must
    stop for it. Leased entries are few (running groups and prefetches), and read from the index."""
    leased = list(
        QueueEntry.objects.filter(key=list_key(), rank__lt=rank, locked_until__gt=now).values_list(
            "task_id", flat=True
        )[:256]
    )
    return S.QUEUED in set(_by_pk(leased).values_list("status", flat=True))


def max_deliveries() -> int:
    """How many times a task is delivered to a worker that then never writes its outcome (killed,
    out of time, its database gone) before it is failed: django-q2's ``max_attempts``."""
    return int(Conf.MAX_ATTEMPTS or 3)


def _deliveries(task_id: Any) -> int:
    return max(QueueEntry.objects.filter(task_id=task_id).values_list("deliveries", flat=True), default=0)


def _claim_group(task_id: Any, model: tuple[str, str] | None, limit: int) -> tuple[list[Claimed], str]:
    """Claim, in one transaction, the delivered task (``task_id``) and up to ``limit`` - 1 queued tasks
    for the same model from the head of the queue (collation), or with ``task_id`` None the next
    ``limit`` tasks for ``model`` if the queue's head is for that model (a worker draining a deep
    queue). Each claimed task moves to PROCESSING with attempts + 1; companions' entries are leased
    like a delivery, so a dead worker's group is delivered again.

    Lock order (PostgreSQL): the delivered task, then entries and companion tasks with SKIP LOCKED,
    so a concurrent cancel or claim is skipped, never waited for (no deadlock).
    """
    now = timezone.now()
    group: list[Claimed] = []
    expired: list[InferenceTask] = []
    delivered = None
    with transaction.atomic():
        if task_id is not None:
            task = _locked(InferenceTask.objects.filter(id=task_id)).first()
            if task is None or task.status not in LIVE:
                return [], task.status if task else "missing"
            deliveries = _deliveries(task.id) if task.status == S.PROCESSING else 0
            if deliveries > max_deliveries():  # its earlier runs all ended without writing an outcome
                _write_failures(
                    [task],
                    _failed(
                        WORKER_LOST,
                        (
                            f"No worker could finish this task: it was started {deliveries - 1} times and each time its "
                            "worker stopped (it crashed, was killed or ran out of time) before writing an outcome. "
                            "It is not retried."
                        ),
                    ),
                    now,
                )
                return [], S.FAILED
            if task.status == S.QUEUED and task.deadline and task.deadline <= now:
                expired.append(task)
                limit = 0  # the delivery ends here, as it would have without collation
            else:
                group.append(Claimed(task, task.attempts + 1, None))
            model, delivered = (task.requested_model, task.agent_type), task.id
        assert model is not None
        if limit > len(group):
            head = list(
                _locked(
                    QueueEntry.objects.filter(key=list_key(), locked_until__lte=now)
                    .order_by("rank")
                    .only("id", "task_id", "rank"),
                    skip=True,
                )[: limit * 4]
            )
            ids = [e.task_id for e in head if e.task_id and e.task_id != delivered]
            window = {
                t.id: t
                for t in _locked(
                    _by_pk(ids).only("id", "status", "priority", "requested_model", "agent_type", "deadline"), skip=True
                )
            }
            same = {
                k: t for k, t in window.items() if t.status == S.QUEUED and (t.requested_model, t.agent_type) == model
            }
            if task_id is None and (not head or head[0].task_id not in same or _delivered_waiting(head[0].rank, now)):
                return [], "head_is_other_work"  # strict order: leave it to the broker's next delivery
            first = window.get(head[0].task_id) if head else None
            if group and first is not None and first.id not in same and first.priority > group[0].task.priority:
                same = {}  # more urgent work for another model waits: run the delivered task alone, quickly
            chosen: list[tuple[Any, int]] = []
            for entry in head:
                other = same.get(entry.task_id)
                if other is None or len(group) + len(chosen) >= limit:
                    continue
                if other.deadline and other.deadline <= now:
                    expired.append(other)
                else:
                    chosen.append((other.id, entry.id))
            rows = {t.id: t for t in _by_pk([t for t, _ in chosen])}  # whole rows (the request) of those alone
            group += [Claimed(rows[t], rows[t].attempts + 1, entry_id) for t, entry_id in chosen]
            leased = [c.entry_id for c in group if c.entry_id is not None]
            if leased:
                QueueEntry.objects.filter(id__in=leased).update(
                    locked_until=now + timedelta(seconds=broker.lease_seconds())
                )
        if expired:
            _by_pk([t.id for t in expired]).update(  # checked QUEUED under the lock
                status=S.EXPIRED,
                finished_at=now,
                error_code="deadline_exceeded",
                error_message="The task was still queued at its deadline.",
                request=None,
                content_purged_at=now,
            )
            QueueEntry.objects.filter(task_id__in=[t.id for t in expired if t.id != delivered]).delete()
        if group:
            # rows locked above (or the whole database on SQLite): attempts + 1 is exactly the token read
            waits = {
                c.task.id: int((now - (c.task.queued_at or c.task.created_at)).total_seconds() * 1000) for c in group
            }
            _by_pk(list(waits)).update(
                status=S.PROCESSING,
                attempts=F("attempts") + 1,
                started_at=now,
                queue_wait_ms=Case(*(When(id=k, then=Value(v)) for k, v in waits.items()), output_field=IntegerField()),
            )
        updates = [push.update_for(t, S.EXPIRED) for t in expired] + [
            push.update_for(c.task, S.PROCESSING) for c in group
        ]
        transaction.on_commit(lambda: push.send(updates))
    inference_metrics.count_finished("async", "expired", len(expired))
    for c in group:
        c.task.status, c.task.attempts, c.task.started_at = S.PROCESSING, c.attempt, now
    if not group:
        return [], S.EXPIRED if expired else "empty"
    return group, S.PROCESSING


URGENT_CHECK_SECONDS = 0.005


def _urgent_head(above: int) -> bool:
    """Whether the next entry the broker would deliver is of a higher priority than ``above`` (one
    indexed read, no lock)."""
    head = (
        QueueEntry.objects.filter(key=list_key(), locked_until__lte=timezone.now())
        .order_by("rank")
        .values_list("priority", flat=True)
        .first()
    )
    return head is not None and head > above


def _claim_urgent(above: int) -> list[Claimed]:
    """Claim the head of the queue if it is more urgent than ``above``, whatever its model: a worker
    feeding a deep queue of less urgent work starts it at once, next to its requests in flight,
    instead of making it wait until its window drains and the broker delivers it. The entry is leased
    like a companion's (deleted with the result; delivered again if this worker dies)."""
    now = timezone.now()
    with transaction.atomic():
        entry = _locked(
            QueueEntry.objects.filter(key=list_key(), locked_until__lte=now)
            .order_by("rank")
            .only("id", "task_id", "priority", "rank"),
            skip=True,
        ).first()
        if entry is None or entry.priority <= above or entry.task_id is None or _delivered_waiting(entry.rank, now):
            return []
        task = _locked(_by_pk([entry.task_id]), skip=True).first()
        if task is None or task.status != S.QUEUED or (task.deadline and task.deadline <= now):
            return []  # the broker's delivery (or the expiry sweep) deals with it
        QueueEntry.objects.filter(id=entry.id).update(locked_until=now + timedelta(seconds=broker.lease_seconds()))
        wait = int((now - (task.queued_at or task.created_at)).total_seconds() * 1000)
        _by_pk([task.id]).update(status=S.PROCESSING, attempts=F("attempts") + 1, started_at=now, queue_wait_ms=wait)
        update = push.update_for(task, S.PROCESSING)
        transaction.on_commit(lambda: push.send([update]))
    task.status, task.attempts, task.started_at = S.PROCESSING, task.attempts + 1, now
    return [Claimed(task, task.attempts, entry.id)]


def _route(task: InferenceTask) -> router.Route | Exception:
    """Resolved on the sync side: the router may query the database (not allowed on the loop)."""
    spec = task.request or {}
    try:
        return router.resolve(spec.get("model") or None, spec.get("agent_type") or None)
    except Exception as exc:  # noqa: BLE001 - a RoutingError is the task's answer; anything else fails it too
        return exc


async def _execute(task: InferenceTask, route: router.Route | Exception) -> dict[str, Any]:
    spec = task.request or {}
    if not spec.get("payload"):  # read as empty: encrypted under a key this installation no longer has
        return _failed(
            REQUEST_UNREADABLE,
            "This task's request can no longer be read (it was encrypted under a key "
            "this installation no longer has). Submit it again.",
        )
    try:
        if isinstance(route, Exception):
            raise route
        plan = services.ChatPlan(
            principal=_principal_for(task),
            route=route,
            payload=spec.get("payload") or {},
            stream=False,
            include_usage=False,
            priority=task.priority,
            requested_model=task.requested_model,
            correlation_id=task.correlation_id,
        )
        data = await services.complete_chat(plan)
        return {
            "status": S.COMPLETED,
            "result": data,
            "http_status": 200,
            "error_code": "",
            "error_message": "",
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "tool_calls": plan.tool_calls,
            "endpoint_id": plan.endpoint.id if plan.endpoint else None,
            "model_name": plan.endpoint.name if plan.endpoint else "",
        }
    except (ApiError, router.RoutingError) as exc:
        if exc.code in WAIT_CODES:
            return {"status": REQUEUED, "error_code": exc.code}
        return {
            "status": S.FAILED,
            "result": None,
            "http_status": exc.status_code,
            "error_code": exc.code,
            "error_message": exc.message[:2000],
        }
    except Exception as exc:  # noqa: BLE001 - whatever it is, it ends this task (FAILED), not the worker
        return _internal(exc, task.id, "running it")


def _execute_group(group: list[Claimed]) -> list[tuple[dict[str, Any], int]]:
    """Send the group's requests concurrently (the backend's continuous batching is fed)."""
    routes = [_route(c.task) for c in group]

    async def one(task: InferenceTask, route: Any) -> tuple[dict[str, Any], int]:
        started = time.perf_counter()
        outcome = await _execute(task, route)
        return outcome, int((time.perf_counter() - started) * 1000)

    async def run_all() -> list[tuple[dict[str, Any], int]]:
        return await asyncio.gather(*(one(c.task, r) for c, r in zip(group, routes, strict=True)))

    return _run(run_all())


RESULT_FIELDS = (
    "status",
    "result",
    "http_status",
    "error_code",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "tool_calls",
    "endpoint",
    "model_name",
    "finished_at",
    "inference_ms",
    "latency_ms",
    "result_expires_at",
)


def _write_results(tasks: list[InferenceTask]) -> None:
    """One parametrised UPDATE run for every row (``executemany``). The ORM would compile an UPDATE
    per row (most of a finished task's cost), and ``bulk_update``'s CASE expressions cost more to
    build than the statements they replace. Values go through each field's own ``get_db_prep_save``
    (encryption of the result included), so this writes exactly what ``save()`` would."""
    from django.db import connection

    meta = InferenceTask._meta
    fields = [meta.get_field(name) for name in RESULT_FIELDS]
    qn = connection.ops.quote_name
    sql = (
        f"UPDATE {qn(meta.db_table)} SET {', '.join(f'{qn(f.column)} = %s' for f in fields)} "
        f"WHERE {qn(meta.pk.column)} = %s"
    )
    params = [
        [f.get_db_prep_save(getattr(t, f.attname), connection) for f in fields]
        + [meta.pk.get_db_prep_value(t.pk, connection)]
        for t in tasks
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _outcome_events(tasks: list[InferenceTask]) -> list[Any]:
    """The audit events of these tasks' outcomes (unsaved, for ``record_events``)."""
    users, locations = auditing.identities(tasks)
    return [
        auditing.inference_event(t, username=users.get(t.user_id, ""), location_code=locations.get(t.location_id, ""))
        for t in tasks
    ]


def _finish_group(group: list[Claimed], results: list[tuple[dict[str, Any], int]]) -> list[str]:
    """Write the group's results in one transaction: each fenced by its attempt (a task claimed again
    after this worker's lease ended is not overwritten: "superseded"), one audit write for all,
    the companions' entries deleted, the updates pushed on commit."""
    finished = timezone.now()
    expires = finished + timedelta(seconds=result_ttl())
    states: list[str] = []
    updates = []
    with transaction.atomic():
        # the fence, read under the rows' locks (the whole database's on SQLite) until the commit
        current = {
            pk: (status, attempts)
            for pk, status, attempts in _locked(_by_pk([c.task.id for c in group])).values_list(
                "id", "status", "attempts"
            )
        }
        mine, requeued = [], []
        for c, (outcome, ms) in zip(group, results, strict=True):
            task = c.task
            if current.get(task.id) != (S.PROCESSING, c.attempt):
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
                **outcome,
            }.items():
                setattr(task, name, value)
            task.finished_at, task.result_expires_at, task.inference_ms = finished, expires, ms
            task.latency_ms = int((finished - task.created_at).total_seconds() * 1000)
            mine.append(task)
            states.append(outcome["status"])
            updates.append(push.update_for(task, outcome["status"]))
        if mine:
            _write_results(mine)
        if requeued:
            _requeue(requeued, finished)
            updates += [push.update_for(c.task, S.QUEUED) for c in requeued]
        back = {id(c) for c in requeued}
        companions = [c.entry_id for c in group if c.entry_id is not None and id(c) not in back]
        if companions:
            QueueEntry.objects.filter(id__in=companions).delete()
        if mine:  # one audit event per finished task, appended last: the chain head stays locked to the commit
            record_events(_outcome_events(mine))
        transaction.on_commit(lambda: push.send(updates))
    for task in mine:
        if task.started_at is not None:
            task.queue_wait_ms = int((task.started_at - (task.queued_at or task.created_at)).total_seconds() * 1000)
        inference_metrics.observe(inference_metrics.task_fields(task))
    return states


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
    _by_pk([t.id for t in tasks]).update(**outcome, finished_at=now, result_expires_at=expires)
    record_events(_outcome_events(tasks))
    updates = [push.update_for(t, S.FAILED) for t in tasks]
    fields = [inference_metrics.task_fields(t) for t in tasks]
    transaction.on_commit(lambda: push.send(updates))
    transaction.on_commit(lambda: [inference_metrics.observe(f) for f in fields])


def _fail_unclaimable(task_id: Any, exc: Exception) -> str:
    """The delivered task could not even be claimed (its row cannot be read, say): FAILED as it is,
    its columns read without its content."""
    outcome = _internal(exc, task_id, "starting it")
    with transaction.atomic():
        task = _locked(InferenceTask.objects.filter(id=task_id).defer("request", "result")).first()
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
    _by_pk(ids).update(status=S.QUEUED, started_at=None, queue_wait_ms=None)
    QueueEntry.objects.filter(task_id__in=ids).update(locked_until=now, deliveries=0)
    transaction.on_commit(lambda: broker.wake(list_key(), len(ids)))
    for c in claimed:
        c.task.status, c.task.started_at = S.QUEUED, None


async def _timed(task: InferenceTask, route: Any) -> tuple[dict[str, Any], int]:
    started = time.perf_counter()
    outcome = await _execute(task, route)
    return outcome, int((time.perf_counter() - started) * 1000)


_db_pool: ThreadPoolExecutor | None = None
_db_pool_pid: int | None = None


def _db_thread(func: Any, *args: Any) -> Any:
    close_old_connections()  # this thread's connection: drop it if broken or past CONN_MAX_AGE
    return func(*args)


def _off_loop(loop: asyncio.AbstractEventLoop, func: Any, *args: Any) -> Any:
    """Run a worker's database step (claim, result write) on this process's database thread while
    the loop keeps serving the requests in flight: a stopped loop would leave the model server's
    freed slots idle until the write ends. Inside a caller's transaction (tests, a caller's
    atomic block) the step runs inline, on the caller's connection."""
    global _db_pool, _db_pool_pid
    if connection.in_atomic_block:
        return func(*args)
    if _db_pool is None or _db_pool_pid != os.getpid():  # one per process (workers are forked)
        _db_pool, _db_pool_pid = ThreadPoolExecutor(1, thread_name_prefix="medai-queue-db"), os.getpid()
    return loop.run_until_complete(loop.run_in_executor(_db_pool, _db_thread, func, *args))


@unit_of_work
def run_task(task_id: str, collate: bool = True) -> str:
    """Run one delivered task, and with it (collation) up to the GPU policy's batch size - 1 queued
    tasks for the same model, concurrently, so the backend's continuous batching is fed.

    Claims are fenced by ``attempts``: a re-delivery after a dead worker's lease claims the task
    again and only the latest claim writes the result, once. Companion entries are leased like a
    delivery and deleted when their result is written; if this worker dies they are delivered again.

    A deep queue: for up to ``MEDAI_QUEUE_DRAIN_SECONDS`` the worker keeps the batch size in flight
    for its model, like a sliding window: finished requests are written (in one transaction per
    wake-up) and, once half the window is free, replaced from the head of the queue in one claim, so
    the backend never idles on the slowest request of a group. It claims only while the head of the
    queue is for its model: any other work at the head (a CRITICAL task for another model, an
    entry already handed to a cluster) stops the refills, and the broker delivers it as usual. No
    more than the policy's batch size is ever in flight from one worker.

    More urgent work at the head of the queue (a CRITICAL task for another model, say) does not
    wait for this worker's window to drain: checked at most every ``URGENT_CHECK_SECONDS`` between
    answers, it is claimed and started at once, beside the requests in flight (``_claim_urgent``).

    A task that admission turns away for now (``WAIT_CODES``: its model at the concurrency limit
    after the policy's wait, or the GPU policy holding new work) is not failed: it goes back to the
    queue in its old place (``_requeue``) and this worker stops claiming more for that model.
    """
    from apps.gpu import policy

    limit = max(policy.batch_size(), 1) if collate else 1
    try:
        group, state = _claim_group(task_id, None, limit)
    except TRANSIENT:
        raise  # the entry stays leased: delivered again when its lease ends
    except Exception as exc:  # noqa: BLE001 - a companion's row, or the task's own, could not be read
        logger.error("task %s: claim failed (%s); trying it alone", task_id, type(exc).__name__)
        try:
            group, state = _claim_group(task_id, None, 1)
        except TRANSIENT:
            raise
        except Exception as alone:  # noqa: BLE001
            return _fail_unclaimable(task_id, alone)
    if not group:
        return state
    delivered, model = group[0], (group[0].task.requested_model, group[0].task.agent_type)
    _run(asyncio.sleep(0))  # make sure this process's loop exists
    loop = _loop
    assert loop is not None
    pending: dict[asyncio.Task[Any], Claimed] = {}
    unwritten: dict[int, Claimed] = {}  # claimed by this run, outcome not written yet (by id())

    def start(claimed: list[Claimed]) -> None:
        for c in claimed:
            unwritten[id(c)] = c
            pending[loop.create_task(_timed(c.task, _route(c.task)))] = c

    def claim_more(claim: Callable[..., list[Claimed]], *args: Any) -> list[Claimed]:
        # more work for this run; if it cannot be claimed, this run just takes no more
        try:
            return _off_loop(loop, claim, *args)
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001
            logger.error("task claim failed (%s): no more work for this run", type(exc).__name__, exc_info=exc)
            return []

    result = state
    end = time.monotonic() + drain_seconds()
    refill = collate
    level = max(c.task.priority for c in group)  # more urgent work than this is started at once
    next_urgent_check = 0.0
    unwritten.update((id(c), c) for c in group)
    try:
        start(group)
        while pending:
            done, _ = loop.run_until_complete(asyncio.wait(list(pending), return_when=asyncio.FIRST_COMPLETED))
            # Let near-simultaneous answers join this write (and the requests that the finished ones
            # just handed their slots to go out).
            loop.run_until_complete(asyncio.sleep(0.001))
            done = {t for t in pending if t.done()}
            ready = [t for t in pending if t in done]  # in claim order
            finished = [pending.pop(t) for t in ready]
            states = _off_loop(loop, _finish_or_fail, finished, [t.result() for t in ready])
            for c, st in zip(finished, states, strict=True):
                unwritten.pop(id(c), None)
                if c is delivered:
                    result = st
                if st == S.QUEUED:
                    refill = False  # the model has no room: hand back to the broker, do not claim more
            if collate and level < Priority.CRITICAL and time.monotonic() >= next_urgent_check:
                next_urgent_check = time.monotonic() + URGENT_CHECK_SECONDS
                if _off_loop(loop, _urgent_head, level):
                    start(claim_more(_claim_urgent, level))
            if not refill:
                continue
            limit = max(policy.batch_size(), 1)
            free = limit - len(pending)
            if time.monotonic() >= end:
                refill = False
            elif free >= (limit + 1) // 2:
                more = claim_more(_claim_refill, model, free)
                refill = bool(more)
                start(more)
    except (Exception, TimeoutException) as exc:
        # Unexpected, outside any one task's own steps (those end their task above): the tasks of
        # this run without an outcome end FAILED, unless the database connection is what failed
        # (then their entries, still leased, deliver them again). A timeout is re-raised after, so
        # that django-q2 replaces this worker as it intends.
        _cancel(loop, pending)
        if unwritten and not isinstance(exc, TRANSIENT):
            left = list(unwritten.values())
            states = _off_loop(loop, _finish_group, left, [(_internal(exc, c.task.id, "running it"), 0) for c in left])
            result = next((st for c, st in zip(left, states, strict=True) if c is delivered), result)
        if isinstance(exc, (*TRANSIENT, TimeoutException)):
            raise
    finally:
        _cancel(loop, pending)  # KeyboardInterrupt, say: the rest goes back to the queue when its lease ends
    return result


def _claim_refill(model: tuple[str, str], n: int) -> list[Claimed]:
    return _claim_group(None, model, n)[0]


def _cancel(loop: asyncio.AbstractEventLoop, pending: dict[asyncio.Task[Any], Claimed]) -> None:
    if pending:
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        pending.clear()


# --- websocket push ----------------------------------------------------------------------------


def task_group(task_id: Any) -> str:
    return push.task_group(task_id)


def batch_group(batch_id: Any) -> str:
    return push.batch_group(batch_id)


def push_update(task_id: Any) -> None:
    """Send the task's current status to its groups (``user.<id>``, ``task.<uuid>``, ``batch.<uuid>``):
    best effort, queued to this process's pusher (apps.inference.push)."""
    try:
        task = (
            InferenceTask.objects.filter(id=task_id)
            .only("id", "status", "priority", "user_id", "batch_id", "model_name")
            .first()
        )
        if task is not None:
            push.send([push.update_for(task)])
    except Exception as exc:  # noqa: BLE001 - a missed push must not fail the task
        logger.warning("task push failed: %s", exc)
