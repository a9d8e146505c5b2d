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
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from django_q.conf import Conf
from django_q.signing import SignedPackage

from apps.accounts.models import SCOPE_INFERENCE
from apps.accounts.services import Principal
from apps.audit.services import record_event
from apps.inference import broker, router, services
from apps.inference.api.errors import ApiError
from apps.inference.models import InferenceTask, Priority, QueueEntry, TaskBatch

logger = logging.getLogger("medai.queue")
S = InferenceTask.Status
LIVE = (S.QUEUED, S.PROCESSING)
FINISHED = (S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED)
TASK_FUNC = "apps.inference.tasks.run_inference"


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

    from django.db import close_old_connections, connection

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


def _prepare(auth_header: str | None, item: dict[str, Any], correlation_id: str) -> tuple[services.ChatPlan, dict[str, Any]]:
    if item.get("stream"):
        raise ApiError(400, "invalid_value", "stream is not available for async tasks; poll the result instead.",
                       "stream")
    deadline_s = item.get("deadline_s")
    if deadline_s is not None and (isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float))
                                   or not 1 <= deadline_s <= 7 * 86400):
        raise ApiError(400, "invalid_value", "deadline_s must be a number of seconds between 1 and 604800.",
                       "deadline_s")
    # begin_chat without its db_unit wrapper: connections are managed by unit_of_work here
    plan = services.begin_chat.__wrapped__(auth_header, json.dumps(item).encode(), correlation_id)
    spec = {"model": item.get("model") or "", "agent_type": item.get("agent_type") or "",
            "payload": plan.payload, "deadline_s": deadline_s}
    return plan, spec


def _admit(priority: int, incoming: int) -> None:
    """Overload: past MEDAI_QUEUE_MAX queued tasks only HIGH and CRITICAL are accepted (emergency
    mode); past twice that, nothing."""
    depth = InferenceTask.objects.filter(status=S.QUEUED, mode=InferenceTask.Mode.ASYNC).count()
    limit = queue_max()
    if depth + incoming <= limit:
        return
    retry = "30"
    if priority >= Priority.HIGH and depth + incoming <= 2 * limit:
        return
    if priority >= Priority.HIGH:
        raise ApiError(429, "queue_full", f"The queue is full ({depth} tasks waiting).", headers={"Retry-After": retry})
    raise ApiError(429, "queue_full", f"The queue holds {depth} tasks (limit {limit}): emergency mode accepts only "
                   "high and critical priority. Retry later.", headers={"Retry-After": retry})


def _create(plan: services.ChatPlan, spec: dict[str, Any], batch: TaskBatch | None, now: Any) -> Submitted:
    p = plan.principal
    key = dedup_key(p.location_pk, spec["model"], spec["agent_type"], spec["payload"])
    # Reused only for the same caller: a task is visible to its owner alone, and answering another
    # clinician with an existing task would tell them what a colleague asked (PHI).
    existing = (InferenceTask.objects.filter(location_id=p.location_pk, user_id=p.user_id, dedup_key=key,
                                             mode=InferenceTask.Mode.ASYNC)
                .filter(Q(status__in=LIVE) | Q(status=S.COMPLETED, result_expires_at__gt=now))
                .order_by("-created_at").first())
    if existing is not None and batch is None:
        return Submitted(existing, False)
    deadline = now + timedelta(seconds=spec["deadline_s"]) if spec["deadline_s"] else None
    task = InferenceTask.objects.create(
        mode=InferenceTask.Mode.ASYNC, status=S.QUEUED, priority=plan.priority, user_id=p.user_id,
        location_id=p.location_pk, api_key_id=p.api_key_id, agent_type=plan.route.agent_type,
        requested_model=plan.requested_model, request=spec, correlation_id=plan.correlation_id,
        created_at=now, queued_at=now, dedup_key=key, deadline=deadline, batch=batch)
    package = SignedPackage.dumps({
        "id": task.id.hex, "name": f"inference-{task.id}", "func": TASK_FUNC, "args": (str(task.id),), "kwargs": {},
        "ack_failure": True, "started": now, "save": False})
    broker.put(list_key(), package, priority=plan.priority, task_id=task.id, now=now)
    transaction.on_commit(lambda: push_update(task.id))
    return Submitted(task, True)


@unit_of_work
def submit_task(auth_header: str | None, item: dict[str, Any], correlation_id: str = "") -> Submitted:
    """Validate, route and queue one chat request; returns the new or the identical existing task."""
    plan, spec = _prepare(auth_header, item, correlation_id)
    try:
        with transaction.atomic():
            _admit(plan.priority, 1)
            submitted = _create(plan, spec, None, timezone.now())
            if submitted.created:
                record_event("inference.submit", actor=_actor(plan.principal), location=plan.principal.location_code,
                             obj=submitted.task, details={"priority": Priority(plan.priority).name.lower()})
    except DatabaseError as exc:
        raise _db_down(exc) from None
    return submitted


@unit_of_work
def submit_batch(auth_header: str | None, items: Any, correlation_id: str = "") -> tuple[TaskBatch, list[InferenceTask]]:
    """Queue up to MEDAI_BATCH_MAX requests as one batch, all or none."""
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid_value", "requests must be a non-empty list.", "requests")
    if len(items) > batch_max():
        raise ApiError(413, "batch_too_large", f"A batch holds at most {batch_max()} requests, got {len(items)}.",
                       "requests")
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
    try:
        with transaction.atomic():
            _admit(max(p.priority for p, _ in prepared), len(prepared))
            now = timezone.now()
            batch = TaskBatch.objects.create(user_id=principal.user_id, location_id=principal.location_pk,
                                             total=len(prepared))
            tasks = [_create(plan, spec, batch, now).task for plan, spec in prepared]
            record_event("inference.submit_batch", actor=_actor(principal), location=principal.location_code,
                         obj=batch, details={"total": len(tasks)})
    except DatabaseError as exc:
        raise _db_down(exc) from None
    return batch, tasks


def _actor(principal: Principal) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(pk=principal.user_id or None, username=principal.username)


def _db_down(exc: Exception) -> ApiError:
    logger.error("queue database error: %s", type(exc).__name__)
    return ApiError(503, "database_unavailable", "The task store is unavailable; nothing was queued. Retry shortly.",
                    headers={"Retry-After": "5"})


# --- reading -------------------------------------------------------------------------------------


def position(task: InferenceTask) -> int | None:
    """1-based place in the queue while queued (entries that the broker would deliver first)."""
    if task.status != S.QUEUED:
        return None
    entry = QueueEntry.objects.filter(task_id=task.id).only("rank").first()
    if entry is None:
        return None
    return QueueEntry.objects.filter(key=list_key(), rank__lt=entry.rank).count() + 1


def batch_progress(batch: TaskBatch) -> dict[str, Any]:
    counts = dict(batch.tasks.values_list("status").annotate(n=Count("id")))
    total = batch.total
    completed, failed = counts.get(S.COMPLETED, 0) + counts.get(S.EXPIRED, 0), counts.get(S.FAILED, 0)
    cancelled = counts.get(S.CANCELLED, 0)
    done = completed + failed + cancelled
    return {"batch_id": str(batch.id), "total": total, "completed": completed, "failed": failed,
            "cancelled": cancelled, "processing": counts.get(S.PROCESSING, 0), "queued": counts.get(S.QUEUED, 0),
            "progress_percent": round(100.0 * done / total, 1) if total else 100.0}


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
    return {"depth": depth, "queued": sum(depth.values()),
            "processing": InferenceTask.objects.filter(status=S.PROCESSING, mode=InferenceTask.Mode.ASYNC).count(),
            "oldest_wait_s": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
            "clusters_alive": len(stats), "workers_alive": workers, "queue_max": queue_max(),
            "emergency_mode": sum(depth.values()) >= queue_max()}


# --- cancel, expiry, retention ----------------------------------------------------------------


def cancel_task(principal: Principal, task: InferenceTask) -> InferenceTask:
    """Cancel a queued task (its queue entry goes too); a running or finished one answers 409."""
    with transaction.atomic():
        changed = InferenceTask.objects.filter(id=task.id, status=S.QUEUED).update(
            status=S.CANCELLED, finished_at=timezone.now(), request=None)
        if not changed:
            task.refresh_from_db()
            raise ApiError(409, "not_cancellable", f"Task {task.id} is {task.status}; only queued tasks can be cancelled.")
        QueueEntry.objects.filter(task_id=task.id).delete()
        record_event("inference.cancel", actor=_actor(principal), location=principal.location_code, obj=task)
        transaction.on_commit(lambda: push_update(task.id))
    task.refresh_from_db()
    return task


def expire_and_purge(now: Any = None) -> dict[str, int]:
    """QUEUED past its deadline → EXPIRED; finished results past retention → content purged,
    metadata kept (COMPLETED → EXPIRED). Run by the worker's schedule and on read."""
    now = now or timezone.now()
    with transaction.atomic():
        overdue = list(InferenceTask.objects.filter(status=S.QUEUED, deadline__lte=now).values_list("id", flat=True))
        expired = InferenceTask.objects.filter(id__in=overdue, status=S.QUEUED).update(
            status=S.EXPIRED, finished_at=now, error_code="deadline_exceeded",
            error_message="The task was still queued at its deadline.", request=None)
        QueueEntry.objects.filter(task_id__in=overdue).delete()
    purged = InferenceTask.objects.filter(
        mode=InferenceTask.Mode.ASYNC, status__in=(S.COMPLETED, S.FAILED, S.CANCELLED),
        result_expires_at__lte=now).update(status=S.EXPIRED, request=None, result=None)
    return {"expired": expired, "purged": purged}


# --- running (worker side) ---------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def _run(coro: Any) -> Any:
    # One loop per worker process: the backend client pool (one per loop) is reused across tasks.
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def _principal_for(task: InferenceTask) -> Principal:
    return Principal(user_id=task.user_id or 0, username="", role="", location_pk=task.location_id,
                     location_code="", organization_id=None, scopes=frozenset({SCOPE_INFERENCE}), method="queue",
                     api_key_id=task.api_key_id)


def _claim_task(task_id: Any, now: Any) -> tuple[InferenceTask | None, int, str]:
    """Move a live task to PROCESSING with attempts + 1 (the fencing token for its result)."""
    task = InferenceTask.objects.filter(id=task_id).first()
    if task is None or task.status not in LIVE:
        return None, 0, task.status if task else "missing"
    if task.status == S.QUEUED and task.deadline and task.deadline <= now:
        InferenceTask.objects.filter(id=task.id, status=S.QUEUED).update(
            status=S.EXPIRED, finished_at=now, error_code="deadline_exceeded",
            error_message="The task was still queued at its deadline.", request=None)
        push_update(task.id)
        return None, 0, S.EXPIRED
    attempt = task.attempts + 1
    claimed = InferenceTask.objects.filter(id=task.id, status__in=LIVE, attempts=task.attempts).update(
        status=S.PROCESSING, attempts=attempt, started_at=now,
        queue_wait_ms=int((now - (task.queued_at or task.created_at)).total_seconds() * 1000))
    if not claimed:
        return None, 0, "lost_claim"
    push_update(task.id)
    return task, attempt, S.PROCESSING


def _companions(task: InferenceTask, limit: int) -> list[int]:
    """Collation: lease up to ``limit`` more queued entries for the same model/agent from the head
    of the queue (priority order kept: they are the next work anyway). Returns their entry ids."""
    if limit <= 0:
        return []
    from django.db import connection

    now = timezone.now()
    with transaction.atomic():
        qs = QueueEntry.objects.filter(key=list_key(), locked_until__lte=now).order_by("rank").only("id", "task_id")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        head = list(qs[: limit * 4])
        if not head:
            return []
        same = set(InferenceTask.objects.filter(
            id__in=[e.task_id for e in head if e.task_id], status=S.QUEUED, requested_model=task.requested_model,
            agent_type=task.agent_type).values_list("id", flat=True))
        chosen = [e.id for e in head if e.task_id in same][:limit]
        if chosen:
            QueueEntry.objects.filter(id__in=chosen).update(locked_until=now + timedelta(seconds=broker.lease_seconds()))
    return chosen


def _route(task: InferenceTask) -> router.Route | router.RoutingError:
    """Resolved on the sync side: the router may query the database (not allowed on the loop)."""
    spec = task.request or {}
    try:
        return router.resolve(spec.get("model") or None, spec.get("agent_type") or None)
    except router.RoutingError as exc:
        return exc


async def _execute(task: InferenceTask, route: router.Route | router.RoutingError) -> dict[str, Any]:
    spec = task.request or {}
    try:
        if isinstance(route, router.RoutingError):
            raise route
        plan = services.ChatPlan(principal=_principal_for(task), route=route, payload=spec.get("payload") or {},
                                 stream=False, include_usage=False, priority=task.priority,
                                 requested_model=task.requested_model, correlation_id=task.correlation_id)
        data = await services.complete_chat(plan)
        return {"status": S.COMPLETED, "result": data, "http_status": 200, "error_code": "", "error_message": "",
                "prompt_tokens": plan.prompt_tokens, "completion_tokens": plan.completion_tokens,
                "endpoint_id": plan.endpoint.id if plan.endpoint else None,
                "model_name": plan.endpoint.name if plan.endpoint else ""}
    except (ApiError, router.RoutingError) as exc:
        return {"status": S.FAILED, "result": None, "http_status": exc.status_code,
                "error_code": exc.code, "error_message": exc.message[:2000]}


def _finish(task: InferenceTask, attempt: int, outcome: dict[str, Any], inference_ms: int) -> str:
    finished = timezone.now()
    written = InferenceTask.objects.filter(id=task.id, status=S.PROCESSING, attempts=attempt).update(
        finished_at=finished, inference_ms=inference_ms,
        latency_ms=int((finished - task.created_at).total_seconds() * 1000),
        result_expires_at=finished + timedelta(seconds=result_ttl()), **outcome)
    if not written:
        return "superseded"
    record_event("inference.complete", actor=_actor(_principal_for(task)), obj=task,
                 outcome="success" if outcome["status"] == S.COMPLETED else "failure",
                 details={"status": outcome["status"], "model": outcome.get("model_name", "")})
    push_update(task.id)
    return outcome["status"]


@unit_of_work
def run_task(task_id: str, collate: bool = True) -> str:
    """Run one delivered task, and with it (collation) up to the GPU policy's batch size - 1 queued
    tasks for the same model, concurrently, so the backend's continuous batching is fed.

    Claims are fenced by ``attempts``: a re-delivery after a dead worker's lease claims the task
    again and only the latest claim writes the result, once. Companion entries are leased like a
    delivery and deleted when their result is written; if this worker dies they are delivered again.
    """
    now = timezone.now()
    task, attempt, state = _claim_task(task_id, now)
    if task is None:
        return state
    work: list[tuple[InferenceTask, int, int | None]] = [(task, attempt, None)]
    if collate:
        from apps.gpu import policy

        for entry_id in _companions(task, policy.batch_size() - 1):
            entry = QueueEntry.objects.filter(id=entry_id).only("task_id").first()
            other, other_attempt, _ = _claim_task(entry.task_id, timezone.now()) if entry else (None, 0, "")
            if other is not None:
                work.append((other, other_attempt, entry_id))
            else:
                QueueEntry.objects.filter(id=entry_id).delete()

    async def run_all() -> list[tuple[dict[str, Any], int]]:
        async def one(t: InferenceTask, route: Any) -> tuple[dict[str, Any], int]:
            started = time.perf_counter()
            outcome = await _execute(t, route)
            return outcome, int((time.perf_counter() - started) * 1000)

        return await asyncio.gather(*(one(t, r) for (t, _, _), r in zip(work, routes, strict=True)))

    routes = [_route(t) for t, _, _ in work]

    results = _run(run_all())
    states = []
    for (t, a, entry_id), (outcome, ms) in zip(work, results, strict=True):
        states.append(_finish(t, a, outcome, ms))
        if entry_id is not None:
            QueueEntry.objects.filter(id=entry_id).delete()
    return states[0]


# --- websocket push ----------------------------------------------------------------------------


def task_group(task_id: Any) -> str:
    return f"task.{task_id}"


def batch_group(batch_id: Any) -> str:
    return f"batch.{batch_id}"


def push_update(task_id: Any) -> None:
    """Send the task's status to ``user.<id>``, ``task.<uuid>`` (and ``batch.<uuid>``): best effort."""
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        task = InferenceTask.objects.filter(id=task_id).only(
            "id", "status", "priority", "user_id", "batch_id", "model_name").first()
        layer = get_channel_layer()
        if task is None or layer is None:
            return
        data = {"task_id": str(task.id), "status": task.status, "priority": Priority(task.priority).name.lower(),
                "model": task.model_name, "batch_id": str(task.batch_id) if task.batch_id else None}
        groups = [f"user.{task.user_id}", task_group(task.id)]
        if task.batch_id:
            groups.append(batch_group(task.batch_id))

        async def send() -> None:
            for group in groups:
                await layer.group_send(group, {"type": "task.update", "data": data})

        try:
            asyncio.get_running_loop()
            return  # called on an event loop: the sync path cannot block it; skip the push
        except RuntimeError:
            async_to_sync(send)()
    except Exception as exc:  # noqa: BLE001 - a missed push must not fail the task
        logger.warning("task push failed: %s", exc)
