"""Submission: one task or a batch from an authenticated caller, planned by the pipeline
(``pipeline.plan.plan_tasks``: authorize, validate, rate limit, quota reserve, route, once per
request and each item once), written with its queue entry in one transaction (de-duplication and
the overload rule included)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, router, transaction
from django.utils import timezone

from apps.accounts.services import Principal, audit_marks
from apps.audit import rows
from apps.audit.models import AuditEvent
from apps.audit.services import new_event, record_event, record_events
from apps.inference import broker, push
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, Priority, TaskBatch
from apps.inference.pipeline import gate
from apps.inference.pipeline.plan import ChatPlan, plan_tasks
from apps.inference.queue.common import (
    LIVE,
    S,
    _actor,
    _db_down,
    _package,
    list_key,
    queue_max,
    unit_of_work,
)

# --- submission ----------------------------------------------------------------------------------


@dataclass
class Submitted:
    task: InferenceTask
    created: bool  # False: an identical live or retained task was returned (de-duplication)
    position: int | None = None  # its place in the queue when answered (``queue.commit``)


def dedup_key(location_pk: int, requested: str, agent_type: str, payload: dict[str, Any]) -> str:
    """Same location, model/agent, messages and parameters → same key (never across locations)."""
    canon = json.dumps([location_pk, requested, agent_type, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _spec(item: dict[str, Any], plan: ChatPlan, deadline_s: float | None) -> dict[str, Any]:
    """What the task row keeps of its request (``InferenceTask.request``, encrypted), for its worker:
    also who submitted it, where (``who``: the names its worker's audit event gives, as the sync
    path's event gives the caller's; ``auditing.submitted_identity``), so that the worker does not
    look them up for every result it writes."""
    p = plan.principal
    return {
        "model": item.get("model") or "",
        "agent_type": item.get("agent_type") or "",
        "payload": plan.payload,
        "deadline_s": deadline_s,
        "who": {"username": p.username, "location": p.location_code, "organization_id": p.organization_id},
    }


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


# The depth admission counts, kept for DEPTH_CACHE_SECONDS: a COUNT over the queued tasks is a
# statement per submit whose cost grows with the queue. Reused only while the queue is well below
# the limit (``_depth``), and raised by every task this process admits meanwhile, so the answer
# near the limit is always an exact count; far from it the cache can only miss what other
# processes queued in the last 100 ms (and it overstates, never understates, once tasks leave).
DEPTH_CACHE_SECONDS = 0.1
_depth_lock = threading.Lock()
_depth_seen: list[float] = [0.0, float("-inf")]  # [depth, monotonic time of the count]


def _depth(adding: int) -> int:
    """The queued depth for admitting ``adding`` more tasks: cached while that stays under 90% of
    MEDAI_QUEUE_MAX, else counted."""
    now = time.monotonic()
    with _depth_lock:
        depth, at = _depth_seen
        if now - at < DEPTH_CACHE_SECONDS and depth + adding < 0.9 * queue_max():
            _depth_seen[0] = depth + adding
            return int(depth)
    counted = InferenceTask.objects.queued().count()
    with _depth_lock:
        _depth_seen[:] = [counted + adding, now]
    return counted


_writer = threading.Lock()


@contextmanager
def _one_writer() -> Iterator[None]:
    """On SQLite, this process's submits write one at a time. SQLite has one writer; a transaction
    that finds the write lock taken sleeps in SQLite's busy handler (1, 2, 5, 10, 15 ... ms) rather
    than being woken when it is free, so the web process's own threads queueing on a lock of
    theirs instead of on SQLite's is what keeps concurrent submits from sleeping behind each other.
    PostgreSQL writers wait on row locks, which wake them: nothing to do there. Inside a caller's
    transaction (tests, a caller's atomic block) the caller already holds the write lock."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    with _writer:
        yield


def forget_depth() -> None:
    """Drop the cached depth (tests that change the queue behind the submit path's back)."""
    with _depth_lock:
        _depth_seen[:] = [0.0, float("-inf")]


def _admit(priorities: list[int]) -> None:
    """Admit new tasks of these priorities or answer 429 (``room``). Each task counts at its own
    priority, so a batch mixing HIGH and LOW items cannot carry LOW work into emergency mode."""
    refused = _refusal(priorities, _depth(len(priorities)))
    if refused is not None:
        raise refused


def _refusal(priorities: list[int], depth: int) -> ApiError | None:
    """The 429 for new tasks of these priorities while ``depth`` tasks are queued (``room``), or None."""
    retry = {"Retry-After": "30"}
    routine = sum(1 for p in priorities if p < Priority.HIGH)
    if len(priorities) > room(Priority.HIGH, depth):
        return ApiError(429, "queue_full", f"The queue is full ({depth} tasks waiting).", headers=retry)
    if routine > room(Priority.NORMAL, depth):
        return ApiError(
            429,
            "queue_full",
            f"The queue holds {depth} tasks (limit {queue_max()}): emergency mode "
            "accepts only high and critical priority. Retry later.",
            headers=retry,
        )
    return None


def _existing(p: Principal, keys: list[str], now: Any) -> dict[str, InferenceTask]:
    """The caller's live or retained task for each de-duplication key (the newest one)."""
    found = _existing_owned([(p, k) for k in keys], now)
    return {key: task for (key, _, _), task in found.items()}


def _existing_owned(wanted: list[tuple[Principal, str]], now: Any) -> dict[tuple[str, int, int], InferenceTask]:
    """For ``(caller, key)`` pairs (callers may differ: a group of submits), each caller's live or
    retained task for the key (the newest one), by ``(key, user id, location id)``; one read."""
    # Reused only for the same caller: a task is visible to its owner alone, and answering another
    # clinician with an existing task would tell them what a colleague asked (PHI). The lookup is by
    # key alone (its index; the key already includes the location), the rest is checked here: with
    # the owner in the WHERE clause SQLite picks the owner index and reads all the caller's tasks.
    owners = {(k, p.user_id, p.location_pk) for p, k in wanted}
    best: dict[tuple[str, int, int], tuple[Any, Any]] = {}
    for key, user_id, location_id, mode, status, expires, created, pk in InferenceTask.objects.dedup_candidates(
        list({k for k, _, _ in owners})
    ):
        owner = (key, user_id, location_id)
        if owner not in owners or mode != InferenceTask.Mode.ASYNC:
            continue
        if status in LIVE or (status == S.COMPLETED and expires and expires > now):
            if owner not in best or created > best[owner][0]:
                best[owner] = (created, pk)
    found = {t.id: t for t in InferenceTask.objects.by_pk([pk for _, pk in best.values()])} if best else {}
    return {owner: found[pk] for owner, (_, pk) in best.items() if pk in found}


def _new_task(plan: ChatPlan, spec: dict[str, Any], key: str, batch: TaskBatch | None, now: Any) -> InferenceTask:
    p = plan.principal
    deadline = now + timedelta(seconds=spec["deadline_s"]) if spec["deadline_s"] else None
    return InferenceTask(
        id=plan.task_id or uuid.uuid4(),  # the id its quota hold was made under (plan_tasks)
        mode=InferenceTask.Mode.ASYNC,
        status=S.QUEUED,
        priority=plan.priority,
        user_id=p.user_id,
        location_id=p.location_pk,
        api_key_id=p.api_key_id,
        agent_type=plan.route.agent_type,
        arm=plan.route.arm,
        requested_model=plan.requested_model,
        request=spec,
        correlation_id=plan.correlation_id,
        break_glass=p.break_glass_id,
        purpose_of_use=plan.purpose_of_use[:64],
        tools_offered=plan.tools_offered,
        end_user=plan.end_user,
        created_at=now,
        queued_at=now,
        dedup_key=key,
        deadline=deadline,
        batch=batch,
    )


def _enqueue(tasks: list[InferenceTask], now: Any) -> None:
    """Write the tasks and their queue entries (inside the caller's transaction), push on commit.
    The tasks' INSERT is compiled once per process and sent with one ``executemany``
    (apps/audit/rows.py, as the record writer does: Django's compiler cost more than the insert)."""
    using = router.db_for_write(InferenceTask)
    if not rows.insert(InferenceTask, tasks, using):
        InferenceTask.objects.using(using).bulk_create(tasks)
    broker.put_many(
        list_key(),
        [(_package(t, now), t.priority, t.id) for t in tasks],
        now=now,
        locations=[t.location_id for t in tasks],  # fair turns between locations (broker.fair_ranks)
    )
    updates = [push.update_for(t) for t in tasks]
    transaction.on_commit(lambda: push.send(updates))


def _key(plan: ChatPlan, spec: dict[str, Any]) -> str:
    return dedup_key(plan.principal.location_pk, spec["model"], spec["agent_type"], spec["payload"])


@dataclass
class Job:
    """One planned single submit, waiting for its write (``write_submits``)."""

    plan: ChatPlan
    spec: dict[str, Any]
    key: str
    event: AuditEvent  # its ``inference.submit`` event, resolved in the request's context


def job_for(plan: ChatPlan, deadline_s: float | None, item: dict[str, Any]) -> Job:
    """The write of one planned submit; its audit event is made now, where the request's context
    (IP, user agent, purpose of use, correlation id) is current, and appended if a task is made."""
    spec = _spec(item, plan, deadline_s)
    event = new_event(
        "inference.submit",
        actor=_actor(plan.principal),
        location=plan.principal.location_code,
        object_type=InferenceTask._meta.label_lower,
        object_id=str(plan.task_id),  # the new task's id (``_new_task``)
        details={"priority": Priority(plan.priority).name.lower(), **(audit_marks(plan.principal) or {})},
    )
    return Job(plan, spec, _key(plan, spec), event)


@unit_of_work
def submit_task(
    principal: Principal, item: dict[str, Any], correlation_id: str = "", *, client_ip: str | None = None
) -> Submitted:
    """Validate, route and queue one chat request (a parsed JSON object) of an authenticated
    caller; returns the new or the identical existing task."""
    [(plan, deadline_s)] = plan_tasks(principal, [item], correlation_id, client_ip=client_ip)
    [outcome] = write_submits([job_for(plan, deadline_s, item)])
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome


@unit_of_work
def write_submits(jobs: list[Job]) -> list[Submitted | ApiError]:
    """Write planned single submits, of one caller or several, in one transaction (a group commit:
    ``queue.committer`` hands it the submits of one web process that arrived together): one
    de-duplication read, one INSERT of the tasks and one of their entries, one audit append (one
    event per submit, a de-duplicated one included: it accessed that task), one push and one
    wake-up on commit.

    Each submit keeps its own answer: a new task, an identical task of the same caller (already
    queued or retained, or made by an earlier submit of the group), or an ``ApiError`` (429 for the
    overload rule, counted submit by submit in order; 503 if the database failed). A group whose
    write fails is written again submit by submit, so that one submit's trouble is its own. The
    holds of submits that queued nothing are released."""
    try:
        with _one_writer(), transaction.atomic():
            outcomes = _write_jobs(jobs)
    except DatabaseError as exc:
        for job in jobs:  # rolled back: its event was never written (its insert gave it a seq)
            job.event.pk, job.event._state.adding = None, True
        if len(jobs) > 1:
            return [outcome for job in jobs for outcome in write_submits([job])]
        gate.release(jobs[0].plan.reservation)  # nothing was queued: nothing stays held
        return [_db_down(exc)]
    except BaseException:
        gate.release_all([job.plan.reservation for job in jobs])
        raise
    made = {o.task.id for o in outcomes if isinstance(o, Submitted) and o.created}
    unused = [job.plan.reservation for job in jobs if job.plan.task_id not in made]
    if unused:  # reused (the existing task holds its own) or refused
        gate.release_all(unused)
    return outcomes


def _write_jobs(jobs: list[Job]) -> list[Submitted | ApiError]:
    now = timezone.now()
    existing = _existing_owned([(job.plan.principal, job.key) for job in jobs], now)
    outcomes: list[Submitted | ApiError] = []
    new: list[InferenceTask] = []
    events: list[AuditEvent] = []
    owners = [(job.key, job.plan.principal.user_id, job.plan.principal.location_pk) for job in jobs]
    # the overload rule, submit by submit in order, as if each were written alone: the depth once
    # for the group (its new tasks counted in, as ``_admit`` does), plus those admitted before it
    depth = _depth(len({o for o in owners if o not in existing}))
    for job, owner in zip(jobs, owners, strict=True):
        found = existing.get(owner)
        if found is not None:  # a de-duplication hit is an access to that task: audited as one
            job.event.object_id = str(found.id)
            job.event.details = {**job.event.details, "deduplicated": True}
            events.append(job.event)
            outcomes.append(Submitted(found, False))
            continue
        refused = _refusal([job.plan.priority], depth + len(new))
        if refused is not None:
            outcomes.append(refused)
            continue
        task = _new_task(job.plan, job.spec, job.key, None, now)
        existing[owner] = task  # an identical submit later in the group gets this task
        new.append(task)
        job.event.object_id = str(task.id)
        events.append(job.event)
        outcomes.append(Submitted(task, True))
    if new:
        _enqueue(new, now)
    if events:
        record_events(events)  # appended last: the chain head stays locked until the commit
    return outcomes


@unit_of_work
def submit_batch(
    principal: Principal,
    items: Any,
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    into: TaskBatch | None = None,
    dedup: bool = True,
    extras: list[dict[str, Any]] | None = None,
) -> tuple[TaskBatch, list[InferenceTask]]:
    """Queue up to MEDAI_BATCH_MAX requests (parsed JSON objects) of an authenticated caller as one
    batch, all or none: the caller authorized, rate-limited and reserved for once, each item
    validated and routed once.

    Bulk: one transaction writes every task row (one multi-row INSERT), every queue entry (another)
    and one audit event for the batch. De-duplication applies per item, as for a single submit: an
    item identical to a live or retained task of the caller's, or to an earlier item of the same
    batch, is answered with that task (``task_ids`` keeps one id per item, in order); the batch
    counts such reused tasks in its progress. Within the batch, entries keep the items' order
    (FIFO within a level).

    A batch fed in parts (the Batch API's file batches, apps.inference.filebatch) passes the batch
    its tasks join (``into``: its ``total`` is already the whole file's), ``dedup=False`` (every
    line is a request of its own, answered in the output file, even when two lines are identical)
    and ``extras``: per item, what its task's request keeps beside the payload (the line's number
    and ``custom_id``).
    """
    planned = plan_tasks(principal, items, correlation_id, batch=True, client_ip=client_ip)  # 400/413 naming the item
    prepared = [(plan, _spec(item, plan, deadline_s)) for item, (plan, deadline_s) in zip(items, planned, strict=True)]
    for (_, spec), extra in zip(prepared, extras or (), strict=False):
        spec.update(extra)
    # without de-duplication every item is its own task: keys that match nothing (and no later submit)
    keys = [_key(plan, spec) if dedup else "" for plan, spec in prepared]
    try:
        with _one_writer(), transaction.atomic():
            now = timezone.now()
            reused = _existing(principal, list(set(keys)), now) if dedup else {}
            fresh = [
                (plan, spec, k) for (plan, spec), k in zip(prepared, keys, strict=True) if not k or k not in reused
            ]
            if fresh:
                first: dict[str, int] = {}  # one new task per distinct item, at its first item's priority
                for i, (plan, _, k) in enumerate(fresh):
                    first.setdefault(k or str(i), plan.priority)
                _admit(list(first.values()))
            batch = into or TaskBatch(user_id=principal.user_id, location_id=principal.location_pk)
            by_key: dict[str, InferenceTask] = dict(reused)
            new: list[InferenceTask] = []
            for plan, spec, k in fresh:
                if not k or k not in by_key:
                    task = _new_task(plan, spec, k, batch, now)
                    if k:
                        by_key[k] = task
                    new.append(task)
            if into is None:
                batch.total = len(by_key)
                batch.reused_task_ids = [str(t.id) for t in reused.values()]
                batch.save(force_insert=True)
            if new:
                _enqueue(new, now)
            tasks: list[InferenceTask] = [by_key[k] for k in keys] if dedup else new
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
                    **(audit_marks(principal) or {}),
                },
            )
    except BaseException as exc:
        gate.release_all([plan.reservation for plan, _ in prepared])  # nothing was queued
        if isinstance(exc, DatabaseError):
            raise _db_down(exc) from None
        raise
    # the items that made no task of their own (reused, or repeated within the batch) hold nothing
    made = {t.id for t in new}
    gate.release_all([plan.reservation for plan, _ in prepared if plan.task_id not in made])
    return batch, tasks
