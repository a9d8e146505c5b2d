"""Websocket consumers: live status pushed to per-user groups (``user.<id>``), and on request to
per-task and per-batch groups (``task.<uuid>``, ``batch.<uuid>``). ``/ws/tasks/`` and the older
``/ws/status/`` are the same consumer.

Frames: ``hello`` on connect; ``task.update`` per status change (``apps.inference.push.TaskUpdate``:
status, ``changed_at``, a queued task's ``position``, its batch's counts); ``batch.update`` when a
file batch of the Batch API changes state (apps.inference.filebatch: its OpenAI status and
``request_counts``, its output and error files); ``task.positions``
(``{positions: {task_id: n}, changed_at}``) when the places of the user's queued tasks changed
because the queue moved (others' tasks started, left, or overtook them); ``subscribed``/``error``
answering a client's message.

Places: while its user has queued tasks a socket is in the ``queue`` group, which hears (at most
twice a second per process) which organizations' queues moved; it then reads its user's places
(one query, after a short pause that coalesces bursts) and sends them if they changed.

One frame per status change, whatever the groups: apps.inference.push sends an update to every
group it concerns, so a socket in several of them (its owner's ``user.<id>`` and the task's
``task.<uuid>`` it subscribed to, or the batch's) receives it once per group. Only the socket
knows which groups it joined, so it drops the copies: an update equal to the last one it sent for
that task is not sent again (a task that really changes status always differs from its last one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from typing import Any

from channels.db import database_sync_to_async

from apps.accounts.websocket import AuthenticatedJsonConsumer
from apps.inference import push
from apps.inference.filebatch_models import BATCH_PREFIX, FileBatch
from apps.inference.models import InferenceTask, TaskBatch
from apps.inference.queue import positions

# Last status sent per task, per socket: bounded (the oldest entries go first).
SENT_MEMORY = 4096
# How long a socket waits after a ``queue.moved`` before reading its places (bursts coalesce).
POSITIONS_PAUSE = 0.2
# The most queued tasks a socket reports places for (the oldest first: they move first).
POSITIONS_MAX = 500


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class StatusConsumer(AuthenticatedJsonConsumer):
    """``/ws/tasks/`` (and ``/ws/status/``): task updates for the connected user (``read`` scope;
    4401/4403 otherwise)."""

    _positions_due = False
    _places: dict[str, int] = {}  # the places last sent (replaced, never mutated)

    def groups_for(self, principal: Any) -> list[str]:
        return [user_group(principal.user_id)]

    async def opened(self, principal: Any) -> None:
        await self.send_json(
            {"type": "hello", "data": {"user": principal.username, "location": principal.location_code}}
        )
        if await database_sync_to_async(_own_queued(principal).exists)():
            await self._watch_queue(True)

    # --- the places of the user's queued tasks ---------------------------------------------------

    async def _watch_queue(self, on: bool) -> None:
        if on and push.QUEUE_GROUP not in self.joined:
            await self.join(push.QUEUE_GROUP)
        elif not on and push.QUEUE_GROUP in self.joined:
            self.joined.remove(push.QUEUE_GROUP)
            await self.channel_layer.group_discard(push.QUEUE_GROUP, self.channel_name)

    async def queue_moved(self, event: dict[str, Any]) -> None:
        if self.scope["principal"].organization_id not in event["data"].get("organizations", ()):
            return
        if self._positions_due:
            return
        self._positions_due = True
        loop = asyncio.get_running_loop()
        loop.call_later(POSITIONS_PAUSE, lambda: loop.create_task(self._send_positions()))

    async def _send_positions(self) -> None:
        self._positions_due = False
        if self._closing:
            return
        try:
            places = await database_sync_to_async(_places_of)(self.scope["principal"])
            if not places:
                await self._watch_queue(False)
            if places != self._places:
                self._places = places
                await self.send_json(
                    {"type": "task.positions", "data": {"positions": places, "changed_at": push.now_iso()}}
                )
        except Exception as exc:  # noqa: BLE001 - the socket closed meanwhile, or the database is gone
            if not self._closing:
                await self.close_unavailable(exc)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """``{"subscribe": {"task": "<uuid>"}}`` or ``{"subscribe": {"batch": "<uuid>"}}``: only the
        caller's own objects at their location; anything else answers an error frame."""
        sub = content.get("subscribe") if isinstance(content, dict) else None
        if not isinstance(sub, dict) or not ({"task", "batch"} & sub.keys()):
            await self.send_json(
                {
                    "type": "error",
                    "data": {"code": "bad_message", "message": 'send {"subscribe": {"task" | "batch": id}}'},
                }
            )
            return
        kind = "task" if "task" in sub else "batch"
        group = await _visible_group(self.scope["principal"], kind, str(sub[kind]))
        if group is None:
            await self.send_json(
                {"type": "error", "data": {"code": f"{kind}_not_found", "message": f"No such {kind}."}}
            )
            return
        if group not in self.joined:
            await self.join(group)
        await self.send_json({"type": "subscribed", "data": {kind: str(sub[kind])}})

    async def task_update(self, event: dict[str, Any]) -> None:
        await self._send_update(event["data"])

    async def batch_update(self, event: dict[str, Any]) -> None:
        """A file batch's state changed (the Batch API: status, request counts, its files), sent to
        its owner's group and its subscribers: the same frame once per socket."""
        data = event["data"]
        sent = self.__dict__.setdefault("_sent_batches", OrderedDict())
        if sent.get(data.get("id")) == data:
            return
        sent[data.get("id")] = data
        if len(sent) > SENT_MEMORY:
            sent.popitem(last=False)
        await self.send_json({"type": "batch.update", "data": data})

    async def task_updates(self, event: dict[str, Any]) -> None:
        """Several updates sent to a group at once (apps.inference.push): one frame per task."""
        for data in event["data"]["updates"]:
            await self._send_update(data)

    async def _send_update(self, data: dict[str, Any]) -> None:
        sent = self.__dict__.setdefault("_sent", OrderedDict())
        key = data.get("task_id")
        if sent.get(key) == data:
            return  # the same update through another of this socket's groups
        sent[key] = data
        sent.move_to_end(key)
        if len(sent) > SENT_MEMORY:
            sent.popitem(last=False)
        await self.send_json({"type": "task.update", "data": data})
        if data.get("status") == "queued" and push.QUEUE_GROUP not in self.joined:
            await self._watch_queue(True)


def _own_queued(principal: Any) -> Any:
    return InferenceTask.objects.queued().filter(user_id=principal.user_id, location_id=principal.location_pk)


def _places_of(principal: Any) -> dict[str, int]:
    tasks = list(_own_queued(principal).order_by("queued_at").only("id", "status", "location_id")[:POSITIONS_MAX])
    return {str(task_id): n for task_id, n in positions(tasks).items()}


async def _visible_group(principal: Any, kind: str, object_id: str) -> str | None:
    """The group of a task or batch the caller may see, else None. A batch is named by its id, or
    by the Batch API's ``batch_…`` id of a file batch, which only its owner may follow (as only
    they see it in /v1/batches)."""
    file_batch = kind == "batch" and object_id.startswith(BATCH_PREFIX)
    try:
        pk = uuid.UUID(object_id.removeprefix(BATCH_PREFIX) if file_batch else object_id)
    except ValueError:
        return None

    def lookup() -> bool:
        if kind == "task":
            return InferenceTask.objects.visible_to(principal).filter(id=pk).exists()
        if not TaskBatch.objects.visible_to(principal).filter(id=pk).exists():
            return False
        owned = FileBatch.objects.visible_to(principal).filter(pk=pk).exists()
        return owned or not (file_batch or FileBatch.objects.filter(pk=pk).exists())

    return f"{kind}.{pk}" if await database_sync_to_async(lookup)() else None
