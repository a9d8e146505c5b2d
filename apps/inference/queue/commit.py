"""Group commit of single submits: the submits that one web process receives together share one
transaction.

A single submit (``POST /v1/async/submit``) is planned on the event loop (authorize, validate, rate
limit and quota hold awaited on Redis, route from the registry snapshot: ``plan_task``), then
handed to this event loop's committer and awaited. The committer writes whatever is waiting in one
``write_submits`` call on the loop's thread pool: one transaction with one de-duplication read, one
INSERT of the tasks and one of their entries, one audit append (still one event per task, with its
own request's IP, user agent, purpose and correlation id), one push and one wake-up on commit, and
one position read per location for the answers. Submits that arrive while it writes wait for the
next write, which takes them all: there is no timer, so a lone submit is written at once, as
before, and under load a transaction serves as many submits as arrived during the previous one.
One group at a time: the positions of its answers, and the fair turns of its locations (each
task's rank after the last one its location has queued), are read with nothing of this process
written concurrently.

Durability is unchanged: an answer (202) is sent only after the transaction that holds its task,
its queue entry and its audit event committed. A client that goes away while its submit waits
does not stop the write (as before: a thread is not interrupted), and its task stays queued.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError

from apps.accounts.services import Principal
from apps.inference.errors import ApiError
from apps.inference.pipeline.plan import plan_task
from apps.inference.queue.read import positions
from apps.inference.queue.submit import Job, Submitted, job_for, write_submits

# At most this many submits in one transaction: the statements are multi-row, but a group's
# answers all wait for its commit.
GROUP_MAX = 64


def write_and_place(jobs: list[Job]) -> list[Submitted | ApiError]:
    """``write_submits``, then every answer's place in the queue (one read per location)."""
    outcomes = write_submits(jobs)
    answered = [o.task for o in outcomes if isinstance(o, Submitted)]
    try:
        places = positions(answered) if answered else {}
    except DatabaseError:
        places = {}  # queued all the same: the answer only lacks its place
    for o in outcomes:
        if isinstance(o, Submitted):
            o.position = places.get(o.task.id)
    return outcomes


class Committer:
    """One event loop's group commit: ``submit`` waits for the write that takes its job."""

    def __init__(self, writers: int = 1) -> None:
        self.pending: list[tuple[Job, asyncio.Future[Submitted]]] = []
        self.max_writers = writers
        self.writers: set[asyncio.Task[None]] = set()
        self.groups = 0  # transactions written (tests, benchmarks)

    async def submit(self, job: Job) -> Submitted:
        future: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self.pending.append((job, future))
        if len(self.writers) < self.max_writers:
            writer = asyncio.get_running_loop().create_task(self._write())
            self.writers.add(writer)
            writer.add_done_callback(self.writers.discard)
        return await future

    async def _write(self) -> None:
        try:
            while self.pending:
                group, self.pending = self.pending[:GROUP_MAX], self.pending[GROUP_MAX:]
                self.groups += 1
                try:
                    outcomes: list[Any] = await sync_to_async(write_and_place, thread_sensitive=False)(
                        [job for job, _ in group]
                    )
                except BaseException as exc:  # noqa: BLE001 - every waiting submit gets it
                    outcomes = [exc] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # its request was cancelled: the task is queued all the same
                        continue
                    if isinstance(outcome, asyncio.CancelledError):
                        future.cancel()
                    elif isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            if len(self.writers) <= 1:  # the last writer: what is left now (only if it was stopped) has none
                stranded, self.pending = self.pending, []
                for _, future in stranded:
                    future.cancel()


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Committer] = weakref.WeakKeyDictionary()


def committer() -> Committer:
    """The running event loop's committer (one per loop: uvicorn runs one per web process)."""
    loop = asyncio.get_running_loop()
    found = _committers.get(loop)
    if found is None:
        found = _committers[loop] = Committer()
    return found


async def submit_task_async(
    principal: Principal, item: dict[str, Any], correlation_id: str = "", *, client_ip: str | None = None
) -> Submitted:
    """``submit_task`` on the event loop: planned here, written in this loop's next group commit.
    The answer's task carries its ``position``. Raises ``ApiError`` as ``submit_task`` does."""
    plan, deadline_s = await plan_task(principal, item, correlation_id, client_ip=client_ip)
    return await committer().submit(job_for(plan, deadline_s, item))
