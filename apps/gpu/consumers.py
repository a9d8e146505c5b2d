"""``/ws/gpu/``: live GPU state (the ``gpu`` group; the monitor publishes every 2 s)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

GPU_GROUP = "gpu"


class GpuConsumer(AsyncJsonWebsocketConsumer):
    """Sends the current status on connect, then each update. Closes 4401 without credentials."""

    async def connect(self) -> None:
        principal = self.scope.get("principal")
        if principal is None:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(GPU_GROUP, self.channel_name)
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept(subprotocol="bearer" if "bearer" in subprotocols else None)
        from asgiref.sync import sync_to_async

        from apps.gpu.services import status_payload

        await self.send_json({"type": "gpu.status", "data": await sync_to_async(status_payload)()})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GPU_GROUP, self.channel_name)

    async def gpu_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "gpu.update", "data": event["data"]})
