"""Websocket consumers: live status pushed to per-user groups (``user.<id>``)."""

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

    async def task_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "task.update", "data": event["data"]})
