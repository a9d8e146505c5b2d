"""Task status pushed over websockets (Channels), batched, from one long-lived loop per process.

Groups: ``user.<id>`` (the owner's sockets), ``task.<uuid>`` and ``batch.<uuid>`` (sockets that
subscribed to that object; see ``apps.inference.consumers``). A payload is ``{"type": "task.update",
"data": TaskUpdate}``, or ``{"type": "task.updates", "data": {"updates": [TaskUpdate, ...]}}`` when
several updates for one group are sent together; the consumer turns the latter back into one
``task.update`` frame per task, so clients see the same frames either way.

Why a loop of its own: ``async_to_sync`` per update made a new event loop, hence a new Redis
connection, for every status change (~10 ms each, the largest cost of a submit). Here callers only
append to a list (``send``); a daemon thread with one event loop and one channel-layer connection
pool drains it, coalescing whatever piled up meanwhile into one message per group, and skips the
groups nobody listens to with one pipelined ``ZCARD`` round trip. Best effort, like any push: a
failed send is logged, never raised, and the task's state in the database stays the truth.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, TypedDict

from channels.layers import get_channel_layer

from apps.inference.models import Priority

logger = logging.getLogger("medai.queue")


class TaskUpdate(TypedDict):
    task_id: str
    status: str
    priority: str
    model: str
    batch_id: str | None


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
        "batch_id": str(task.batch_id) if task.batch_id else None,
    }


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
        self.busy = False
        self.idle = threading.Event()
        self.idle.set()
        self.sent_messages = 0  # group messages sent (for tests and benchmarks)
        self.thread = threading.Thread(target=self.loop.run_forever, name="medai-push", daemon=True)
        self.thread.start()

    def send(self, updates: list[tuple[int | None, TaskUpdate]]) -> None:
        if not updates:
            return
        with self.lock:
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
                if not batch:
                    self.busy = False
                    self.idle.set()
                    return
            try:
                layer = get_channel_layer()
                if layer is None:
                    continue
                groups = _groups(batch)
                for name in await _listened(layer, list(groups)):
                    items = groups[name]
                    message = (
                        {"type": "task.update", "data": items[0]}
                        if len(items) == 1
                        else {"type": "task.updates", "data": {"updates": items}}
                    )
                    await layer.group_send(name, message)
                    self.sent_messages += 1
            except Exception as exc:  # noqa: BLE001 - a missed push must not fail anything
                logger.warning("task push failed: %s", exc)

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


def flush(timeout: float = 5.0) -> bool:
    p = _pusher
    return True if p is None or p.pid != os.getpid() else p.flush(timeout)


atexit.register(flush, 2.0)
