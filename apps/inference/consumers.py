"""Websocket consumers: live status pushed to per-user groups (``user.<id>``), and on request to
per-task and per-batch groups (``task.<uuid>``, ``batch.<uuid>``).

One frame per status change, whatever the groups: apps.inference.push sends an update to every
group it concerns, so a socket in several of them (its owner's ``user.<id>`` and the task's
``task.<uuid>`` it subscribed to, or the batch's) receives it once per group. Only the socket
knows which groups it joined, so it drops the copies: an update equal to the last one it sent for
that task is not sent again (a task that really changes status always differs from its last one).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any

from channels.db import database_sync_to_async

from apps.accounts.websocket import AuthenticatedJsonConsumer
from apps.inference.models import InferenceTask, TaskBatch

# Last status sent per task, per socket: bounded (the oldest entries go first).
SENT_MEMORY = 4096


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class StatusConsumer(AuthenticatedJsonConsumer):
    """``/ws/status/``: task updates for the connected user (``read`` scope; 4401/4403 otherwise)."""

    def groups_for(self, principal: Any) -> list[str]:
        return [user_group(principal.user_id)]

    async def opened(self, principal: Any) -> None:
        await self.send_json(
            {"type": "hello", "data": {"user": principal.username, "location": principal.location_code}}
        )

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


async def _visible_group(principal: Any, kind: str, object_id: str) -> str | None:
    try:
        uuid.UUID(object_id)
    except ValueError:
        return None

    def lookup() -> bool:
        if kind == "task":
            return InferenceTask.objects.visible_to(principal).filter(id=object_id).exists()
        return TaskBatch.objects.visible_to(principal).filter(id=object_id).exists()

    return f"{kind}.{object_id}" if await database_sync_to_async(lookup)() else None
