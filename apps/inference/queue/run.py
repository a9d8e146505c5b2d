"""The worker side: the event loop that runs a claimed group's requests concurrently, keeps a
draining worker's window full and writes the outcomes."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections, connection
from django_q.exceptions import TimeoutException

from apps.audit.context import set_correlation_id
from apps.gpu import policy
from apps.inference import router
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, Priority
from apps.inference.pipeline import gate
from apps.inference.pipeline.plan import task_plan
from apps.inference.pipeline.run import complete_chat
from apps.inference.queue.claim import _claim_group, _claim_urgent, _head_priority
from apps.inference.queue.common import (
    REQUEST_UNREADABLE,
    REQUEUED,
    TRANSIENT,
    WAIT_CODES,
    Claimed,
    S,
    _failed,
    _internal,
    drain_seconds,
    logger,
    unit_of_work,
)
from apps.inference.queue.finish import _fail_unclaimable, _finish_group, _finish_or_fail

# --- running (worker side) ---------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def _run(coro: Any) -> Any:
    # One loop per worker process: the backend client pool (one per loop) is reused across tasks.
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


URGENT_CHECK_SECONDS = 0.005
_UNREAD = object()  # the head of the queue not peeked at yet after this write
# A claim takes up to this many GPU batches of work for the worker's model; no more than one batch
# is ever in flight (the window), the rest waits in the worker's buffer, claimed and leased. A
# claim (one transaction, about seven statements) costs the same for 8 tasks as for 32, so a
# draining worker claims a quarter as often, and finished requests are replaced from the buffer
# at once instead of after a claim. The price: a buffered task shows PROCESSING for the few
# milliseconds it waits behind the window, and cannot be cancelled meanwhile.
CLAIM_BATCHES = 4
# Answers wait up to this long (or until half a batch has answered, or nothing else is in flight)
# to be written together: a result write (one transaction with the fence, the outcomes, the audit
# append and the quota settlement) costs about the same for one task as for eight. A worker killed
# meanwhile loses only answers not yet written: their tasks are delivered again when the lease
# ends, and the attempt fence still lets exactly one write land.
WRITE_LINGER_SECONDS = 0.005


def _route(task: InferenceTask) -> router.Route | Exception:
    """The pipeline's route step, again at run time, on the sync side: the router may query the
    database (not allowed on the loop)."""
    spec = task.request or {}
    try:
        return gate.route_sync(spec.get("model"), spec.get("agent_type"))
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
        plan = task_plan(task, route)
        data = await complete_chat(plan)  # the admit and dispatch steps
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
            **(plan.answer_features.fields() if plan.answer_features else {}),
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

    async def run_all() -> list[tuple[dict[str, Any], int]]:
        return await asyncio.gather(*(_timed(c.task, r) for c, r in zip(group, routes, strict=True)))

    return _run(run_all())


async def _timed(task: InferenceTask, route: Any) -> tuple[dict[str, Any], int]:
    """One task's request, under the task's correlation id (the submitting request's: every line
    logged while it runs names it), and one log line of how it ended. Each runs as its own asyncio
    task (``gather``, ``create_task``), so the id is this request's alone."""
    set_correlation_id(task.correlation_id or "")
    started = time.perf_counter()
    outcome = await _execute(task, route)
    ms = int((time.perf_counter() - started) * 1000)
    status = outcome.get("status")
    if status == S.COMPLETED:
        logger.info("task %s completed in %d ms by %s", task.id, ms, outcome.get("model_name") or "?")
    elif status == REQUEUED:
        logger.info("task %s back to the queue (%s)", task.id, outcome.get("error_code") or "busy")
    else:
        logger.info("task %s %s (%s) after %d ms", task.id, status, outcome.get("error_code") or "error", ms)
    return outcome, ms


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
    for its model, like a sliding window: each claim takes up to ``CLAIM_BATCHES`` batches into the
    worker's buffer, finished requests are replaced from the buffer at once and written (in one
    transaction per wake-up, while their successors run), and once less than a batch is buffered
    the buffer is refilled from the head of the queue in one claim, so the backend never idles on
    the slowest request of a group. It claims only while the head of the
    queue is for its model: any other work at the head (a CRITICAL task for another model, an
    entry already handed to a cluster) stops the refills, and the broker delivers it as usual. No
    more than the policy's batch size is ever in flight from one worker.

    More urgent work at the head of the queue (a CRITICAL task for another model, say) does not
    wait for this worker's window to drain: checked at most every ``URGENT_CHECK_SECONDS`` between
    answers, it is claimed and started at once, beside the requests in flight (``_claim_urgent``).

    A task that admission turns away for now (``WAIT_CODES``: its model at the concurrency limit
    after the policy's wait, or the GPU policy holding new work) is not failed: it goes back to the
    queue in its old place (``_requeue``), and so do the tasks still in the buffer; this worker
    stops claiming more for that model.
    """
    limit = max(policy.batch_size(), 1) if collate else 1
    try:
        group, state = _claim_group(task_id, None, limit, limit * (CLAIM_BATCHES - 1) if collate else 0)
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
    buffered: deque[Claimed] = deque(group)  # claimed, not sent yet: the window takes from here
    unwritten: dict[int, Claimed] = {}  # claimed by this run, outcome not written yet (by id())

    def start(claimed: list[Claimed]) -> None:
        for c in claimed:
            unwritten[id(c)] = c
            pending[loop.create_task(_timed(c.task, _route(c.task)))] = c

    def fill_window() -> None:
        # the GPU batch, enforced here: at most ``limit`` of the buffered tasks in flight
        while buffered and len(pending) < max(policy.batch_size(), 1):
            start([buffered.popleft()])

    def claim_more(claim: Callable[..., list[Claimed]], *args: Any) -> list[Claimed]:
        # more work for this run; if it cannot be claimed, this run just takes no more
        try:
            return _off_loop(loop, claim, *args)
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001
            logger.error("task claim failed (%s): no more work for this run", type(exc).__name__, exc_info=exc)
            return []

    def hand_back() -> list[str]:
        # the buffered tasks go back to the queue in their place (the model has no room for them now)
        back = list(buffered)
        buffered.clear()
        for c in back:
            unwritten.pop(id(c), None)
        return _off_loop(
            loop, _finish_or_fail, back, [({"status": REQUEUED, "error_code": "model_busy"}, 0)] * len(back)
        )

    result = state
    end = time.monotonic() + drain_seconds()
    refill = collate
    level = max(c.task.priority for c in group)  # more urgent work than this is started at once
    next_urgent_check = 0.0
    unwritten.update((id(c), c) for c in group)
    answered: list[tuple[Claimed, tuple[dict[str, Any], int]]] = []  # outcomes not written yet
    first_answer = 0.0
    try:
        fill_window()
        while pending or answered:
            linger = None if not answered else max(first_answer + WRITE_LINGER_SECONDS - time.monotonic(), 0.0)
            if pending:
                loop.run_until_complete(
                    asyncio.wait(list(pending), timeout=linger, return_when=asyncio.FIRST_COMPLETED)
                )
                # Let near-simultaneous answers join this write (and the requests that the finished
                # ones just handed their slots to go out).
                loop.run_until_complete(asyncio.sleep(0.001))
            ready = [t for t in pending if t.done()]  # in claim order
            if ready and not answered:
                first_answer = time.monotonic()
            answered += [(pending.pop(t), t.result()) for t in ready]
            fill_window()  # the freed slots work while the outcomes wait and are written
            if not answered or not (
                not pending
                or len(answered) >= (max(policy.batch_size(), 1) + 1) // 2
                or time.monotonic() - first_answer >= WRITE_LINGER_SECONDS
            ):
                continue
            finished, outcomes = [c for c, _ in answered], [o for _, o in answered]
            answered = []
            states = _off_loop(loop, _finish_or_fail, finished, outcomes)
            for c, st in zip(finished, states, strict=True):
                unwritten.pop(id(c), None)
                if c is delivered:
                    result = st
                if st == S.QUEUED:
                    refill = False  # the model has no room: hand back to the broker, do not claim more
            if not refill and buffered and S.QUEUED in states:
                for c, st in zip(list(buffered), hand_back(), strict=True):
                    if c is delivered:
                        result = st
            head: Any = _UNREAD  # the head's priority (None: nothing ready), read once for both questions
            if collate and level < Priority.CRITICAL and time.monotonic() >= next_urgent_check:
                next_urgent_check = time.monotonic() + URGENT_CHECK_SECONDS
                head = _off_loop(loop, _head_priority)
                if head is not None and head > level:
                    start(claim_more(_claim_urgent, level))
                    head = _UNREAD  # the head moved
            if refill:
                limit = max(policy.batch_size(), 1)
                if time.monotonic() >= end:
                    refill = False
                elif len(buffered) < limit and len(pending) + len(buffered) <= limit * (CLAIM_BATCHES - 1):
                    if head is _UNREAD:
                        head = _off_loop(loop, _head_priority)
                    if head is None:
                        refill = False  # nothing ready to refill from: what an empty refill would say
                    else:
                        more = claim_more(
                            _claim_refill, model, limit * CLAIM_BATCHES - len(pending) - len(buffered), limit
                        )
                        refill = bool(more)
                        buffered.extend(more)
                        unwritten.update((id(c), c) for c in more)
            fill_window()
    except (Exception, TimeoutException) as exc:
        # Unexpected, outside any one task's own steps (those end their task above): the tasks of
        # this run without an outcome end FAILED (those still buffered go back to the queue),
        # unless the database connection is what failed (then their entries, still leased,
        # deliver them again). A timeout is re-raised after, so that django-q2 replaces this
        # worker as it intends.
        _cancel(loop, pending)
        if unwritten and not isinstance(exc, TRANSIENT):
            known = {id(c): outcome for c, outcome in answered}  # answered: their own outcomes
            waiting = {id(c) for c in buffered}
            left = [c for c in unwritten.values() if id(c) not in waiting]
            outcomes = [known.get(id(c)) or (_internal(exc, c.task.id, "running it"), 0) for c in left]
            left += list(buffered)
            outcomes += [({"status": REQUEUED, "error_code": "worker_error"}, 0)] * len(buffered)
            states = _off_loop(loop, _finish_group, left, outcomes)
            result = next((st for c, st in zip(left, states, strict=True) if c is delivered), result)
        if isinstance(exc, (*TRANSIENT, TimeoutException)):
            raise
    finally:
        _cancel(loop, pending)  # KeyboardInterrupt, say: the rest goes back to the queue when its lease ends
    return result


def _claim_refill(model: tuple[str, str], n: int, batch: int) -> list[Claimed]:
    """Up to ``n`` more tasks for ``model``: a batch collated as usual, the rest from the head's run."""
    return _claim_group(None, model, min(n, batch), max(n - batch, 0))[0]


def _cancel(loop: asyncio.AbstractEventLoop, pending: dict[asyncio.Task[Any], Claimed]) -> None:
    if pending:
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        pending.clear()
