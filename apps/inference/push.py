"""Task status pushed over websockets (Channels), batched, from one long-lived loop per process.

Groups: ``user.<id>`` (the owner's sockets), ``task.<uuid>`` and ``batch.<uuid>`` (sockets that
subscribed to that object; see ``apps.inference.consumers``), and ``queue``: every socket, told
which organizations' queues moved (``queue.moved``), so that a socket whose user has queued tasks
can send their new places (``task.positions``). A payload is ``{"type": "task.update",
"data": TaskUpdate}``, or ``{"type": "task.updates", "data": {"updates": [TaskUpdate, ...]}}`` when
several updates for one group are sent together; the consumer turns the latter back into one
``task.update`` frame per task, so clients see the same frames either way.

Why a loop of its own: ``async_to_sync`` per update made a new event loop, hence a new Redis
connection, for every status change (~10 ms each, the largest cost of a submit). Here callers only
append to a list (``send``); a daemon thread with one event loop and one channel-layer connection
pool drains it, coalescing whatever piled up meanwhile into one message per group, and skips the
groups nobody listens to with one pipelined ``ZCARD`` round trip. Best effort, like any push: a
failed send is logged, never raised, and the task's state in the database stays the truth.

What an update carries is what a live list needs, so that a page never reads the API again per
event: the status, ``changed_at`` (the server's time of the commit that made the change: ``send``
runs on commit), a queued task's ``position`` and its batch's progress counts (``batch``). The
last two are read after the commit, by the loop's database thread, and only when a group of the
update has listeners (the ``enrich`` hook: apps.inference.queue.notify), so a push nobody watches
costs no query.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypedDict

from channels.layers import get_channel_layer

from apps.inference.models import Priority

logger = logging.getLogger("medai.queue")


class BatchCounts(TypedDict):
    total: int
    completed: int
    failed: int
    cancelled: int
    expired: int
    processing: int
    queued: int
    progress_percent: float


class TaskUpdate(TypedDict):
    task_id: str
    status: str
    priority: str
    model: str
    agent_type: str
    batch_id: str | None
    changed_at: str | None  # ISO 8601 (UTC, ms) of the commit: set by ``send``
    position: int | None  # 1-based place in the queue while queued (read when sent)
    batch: BatchCounts | None  # the batch's progress when sent, for a task of a batch


QUEUE_GROUP = "queue"  # the sockets whose user has queued tasks (apps.inference.consumers)
MOVED_EVERY = 0.5  # seconds between two ``queue.moved`` from one process
# Statuses that enter or leave the queue: every other queued task's place may change.
MOVES_QUEUE = frozenset({"queued", "processing", "cancelled", "expired"})
# (updates to fill in, updates that moved a queue) -> the organization ids of the latter; fills in
# the former's ``position`` and ``batch``. Registered by apps.inference.queue.notify; runs in the
# pusher's database thread.
Enricher = Callable[[list[TaskUpdate], list[TaskUpdate]], set[int]]
_enrich: Enricher | None = None
# Whether the enricher must run in the caller's thread (on commit) instead of the loop's database
# thread: an in-memory SQLite database (shared cache) locks whole tables, so a read from another
# thread makes the caller's next write fail ("table is locked") instead of waiting.
_inline: Callable[[], bool] = lambda: False  # noqa: E731


def set_enricher(func: Enricher, inline: Callable[[], bool] | None = None) -> None:
    global _enrich, _inline
    _enrich = func
    if inline is not None:
        _inline = inline


def task_group(task_id: Any) -> str:
    return f"task.{task_id}"


def batch_group(batch_id: Any) -> str:
    return f"batch.{batch_id}"


def update_for(task: Any, status: str | None = None) -> tuple[int | None, TaskUpdate]:
    """(owner user id, payload) for an InferenceTask (or any object with the same fields)."""
    return task.user_id, {
        "task_id": str(task.id),
        "status": status or task.status,
        "priority": Priority(task.priority).name.lower(),
        "model": task.model_name or "",
        "agent_type": task.agent_type or "",
        "batch_id": str(task.batch_id) if task.batch_id else None,
        "changed_at": None,
        "position": None,
        "batch": None,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _groups(updates: Iterable[tuple[int | None, TaskUpdate]]) -> dict[str, list[TaskUpdate]]:
    groups: dict[str, list[TaskUpdate]] = defaultdict(list)
    for user_id, data in updates:
        if user_id:
            groups[f"user.{user_id}"].append(data)
        groups[task_group(data["task_id"])].append(data)
        if data["batch_id"]:
            groups[batch_group(data["batch_id"])].append(data)
    return groups


async def _listened(layer: Any, names: list[str]) -> list[str]:
    """The groups that have members: one pipelined ZCARD per Redis shard (channels_redis), instead
    of ``group_send``'s two round trips for every group, most of which nobody subscribed to."""
    try:
        by_shard: dict[int, list[str]] = defaultdict(list)
        for name in names:
            by_shard[layer.consistent_hash(name)].append(name)
        live: list[str] = []
        for shard, members in by_shard.items():
            pipe = layer.connection(shard).pipeline(transaction=False)
            for name in members:
                pipe.zcard(layer._group_key(name))
            counts = await pipe.execute()
            live += [name for name, n in zip(members, counts, strict=True) if n]
        return live
    except AttributeError:  # another channel layer: just send to every group
        return names


class Pusher:
    """A daemon thread running one event loop that sends queued updates in batches."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.pending: list[tuple[int | None, TaskUpdate]] = []
        self.pending_events: list[tuple[list[str], dict[str, Any]]] = []  # ``send_event``'s frames
        self.busy = False
        self.idle = threading.Event()
        self.idle.set()
        self.sent_messages = 0  # group messages sent (for tests and benchmarks)
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medai-push-db")
        self.moved: set[int] = set()  # organizations whose queue moved, not told yet
        self.premoved: set[int] = set()  # the same, found on commit (``_inline``), not flushed yet
        self.moved_at = float("-inf")
        self.moved_timer: asyncio.TimerHandle | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, name="medai-push", daemon=True)
        self.thread.start()

    def send(self, updates: list[tuple[int | None, TaskUpdate]]) -> None:
        if not updates:
            return
        at = now_iso()
        for _, data in updates:
            if not data.get("changed_at"):
                data["changed_at"] = at
        moved: set[int] = set()
        if _enrich is not None and _inline():
            datas = [data for _, data in updates]
            try:
                moved = _enrich(datas, [d for d in datas if d["status"] in MOVES_QUEUE])
            except Exception as exc:  # noqa: BLE001 - the update goes out without them
                logger.warning("task push: positions and batch counts not read: %s", type(exc).__name__)
        with self.lock:
            self.premoved |= moved
            self.pending.extend(updates)
            if self.busy:
                return  # the running flush picks them up
            self.busy = True
            self.idle.clear()
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._flush()))

    async def _flush(self) -> None:
        while True:
            with self.lock:
                batch, self.pending = self.pending, []
                events, self.pending_events = self.pending_events, []
                if not batch and not events:
                    self.busy = False
                    self.idle.set()
                    return
            try:
                layer = get_channel_layer()
                if layer is None:
                    continue
                if events and not batch:
                    await self._send_events(layer, events)
                    continue
                groups = _groups(batch)
                live = await _listened(layer, [*groups, QUEUE_GROUP])
                moved = await self._enrich(groups, live)
                for name in live:
                    if name == QUEUE_GROUP:
                        continue
                    items = groups[name]
                    message = (
                        {"type": "task.update", "data": items[0]}
                        if len(items) == 1
                        else {"type": "task.updates", "data": {"updates": items}}
                    )
                    await layer.group_send(name, message)
                    self.sent_messages += 1
                if moved:  # after the updates: a socket reads the new places once it has them
                    self._queue_moved(layer, moved)
                if events:  # after the updates they follow (a batch's end after its last task's)
                    await self._send_events(layer, events)
            except Exception as exc:  # noqa: BLE001 - a missed push must not fail anything
                logger.warning("task push failed: %s", exc)

    def _queue_moved(self, layer: Any, orgs: set[int]) -> None:
        """Tell the ``queue`` group that these organizations' queues moved: at most once per
        MOVED_EVERY seconds from this process (the last change always goes out), as each listener
        answers it with a query of its user's places."""
        self.moved |= orgs
        if self.moved_timer is not None:
            return
        delay = max(self.moved_at + MOVED_EVERY - self.loop.time(), 0.0)
        self.moved_timer = self.loop.call_later(delay, lambda: self.loop.create_task(self._send_moved(layer)))

    async def _send_moved(self, layer: Any) -> None:
        orgs, self.moved, self.moved_timer = self.moved, set(), None
        self.moved_at = self.loop.time()
        try:
            await layer.group_send(QUEUE_GROUP, {"type": "queue.moved", "data": {"organizations": sorted(orgs)}})
            self.sent_messages += 1
        except Exception as exc:  # noqa: BLE001
            logger.warning("queue push failed: %s", exc)

    async def _enrich(self, groups: dict[str, list[TaskUpdate]], live: list[str]) -> set[int]:
        """Positions and batch counts for the updates some socket will receive (in the database
        thread, after the commit), and, if a socket listens to ``queue``, the organizations whose
        queues these updates moved."""
        if _enrich is None:
            return set()
        if _inline():  # read on commit already (``send``)
            with self.lock:
                moved, self.premoved = self.premoved, set()
            return moved if QUEUE_GROUP in live else set()
        fill = {id(data): data for name in live for data in groups.get(name, ())}
        moving = (
            {id(data): data for items in groups.values() for data in items if data["status"] in MOVES_QUEUE}
            if QUEUE_GROUP in live
            else {}
        )
        if not fill and not moving:
            return set()
        try:
            return await self.loop.run_in_executor(self.db, _enrich, list(fill.values()), list(moving.values()))
        except Exception as exc:  # noqa: BLE001 - the update goes out without them
            logger.warning("task push: positions and batch counts not read: %s", type(exc).__name__)
            return set()

    def send_event(self, groups: list[str], message: dict[str, Any]) -> None:
        """One frame that is not a task update (a file batch's state), to these groups, in order
        with the updates queued before it."""
        with self.lock:
            self.pending_events.append((groups, message))
            if self.busy:
                return
            self.busy = True
            self.idle.clear()
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._flush()))

    async def _send_events(self, layer: Any, events: list[tuple[list[str], dict[str, Any]]]) -> None:
        live = set(await _listened(layer, sorted({g for groups, _ in events for g in groups})))
        for groups, message in events:
            for name in groups:
                if name in live:
                    await layer.group_send(name, message)
                    self.sent_messages += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything sent so far has gone out (tests, process exit)."""
        return self.idle.wait(timeout)


_pusher: Pusher | None = None
_pusher_lock = threading.Lock()


def pusher() -> Pusher:
    """This process's pusher (a new one after a fork: threads do not survive it)."""
    global _pusher
    with _pusher_lock:
        if _pusher is None or _pusher.pid != os.getpid():
            _pusher = Pusher()
        return _pusher


def send(updates: list[tuple[int | None, TaskUpdate]]) -> None:
    """Queue updates for the websocket groups; returns at once."""
    try:
        pusher().send(updates)
    except Exception as exc:  # noqa: BLE001
        logger.warning("task push failed: %s", exc)


def send_event(groups: list[str], message: dict[str, Any]) -> None:
    """Queue one frame other than a task update for these groups (best effort); returns at once."""
    try:
        pusher().send_event(groups, message)
    except Exception as exc:  # noqa: BLE001
        logger.warning("push failed: %s", exc)


def user_group(user_id: Any) -> str:
    return f"user.{user_id}"


def flush(timeout: float = 5.0) -> bool:
    p = _pusher
    return True if p is None or p.pid != os.getpid() else p.flush(timeout)


atexit.register(flush, 2.0)
