"""Websocket consumers: live status pushed to per-user groups (``user.<id>``), and on request to
per-task and per-batch groups (``task.<uuid>``, ``batch.<uuid>``)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class StatusConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/status/``: task updates for the connected user. Closes 4401 without credentials."""

    async def connect(self) -> None:
        principal = self.scope.get("principal")
        if principal is None:
            await self.close(code=4401)
            return
        self.groups_joined = [user_group(principal.user_id)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept(subprotocol="bearer" if "bearer" in subprotocols else None)
        await self.send_json({"type": "hello", "data": {"user": principal.username, "location": principal.location_code}})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """``{"subscribe": {"task": "<uuid>"}}`` or ``{"subscribe": {"batch": "<uuid>"}}``: only the
        caller's own objects at their location; anything else answers an error frame."""
        sub = content.get("subscribe") if isinstance(content, dict) else None
        if not isinstance(sub, dict) or not ({"task", "batch"} & sub.keys()):
            await self.send_json({"type": "error", "data": {"code": "bad_message",
                                                            "message": "send {\"subscribe\": {\"task\" | \"batch\": id}}"}})
            return
        kind = "task" if "task" in sub else "batch"
        group = await _visible_group(self.scope["principal"], kind, str(sub[kind]))
        if group is None:
            await self.send_json({"type": "error", "data": {"code": f"{kind}_not_found",
                                                            "message": f"No such {kind}."}})
            return
        self.groups_joined.append(group)
        await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json({"type": "subscribed", "data": {kind: str(sub[kind])}})

    async def task_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "task.update", "data": event["data"]})

    async def task_updates(self, event: dict[str, Any]) -> None:
        """Several updates sent to a group at once (apps.inference.push): one frame per task."""
        for data in event["data"]["updates"]:
            await self.send_json({"type": "task.update", "data": data})


async def _visible_group(principal: Any, kind: str, object_id: str) -> str | None:
    import uuid

    from channels.db import database_sync_to_async

    from apps.inference.models import InferenceTask, TaskBatch

    try:
        uuid.UUID(object_id)
    except ValueError:
        return None

    def lookup() -> bool:
        if kind == "task":
            return InferenceTask.objects.visible_to(principal).filter(id=object_id).exists()
        return TaskBatch.objects.filter(id=object_id, user_id=principal.user_id,
                                        location_id=principal.location_pk).exists()

    return f"{kind}.{object_id}" if await database_sync_to_async(lookup)() else None
