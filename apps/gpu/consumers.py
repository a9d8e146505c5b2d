"""``/ws/gpu/``: live GPU state (the ``gpu`` group; the monitor publishes every 2 s, and on change).

Frames: ``gpu.status`` (the whole ``GET /v1/gpu/status`` payload) on connect, ``gpu.update`` for
each sample the monitor publishes. Each carries ``sampled_at``, ``age_seconds``, ``stale`` and
``monitor_running`` (``services.freshness``). When no update came for longer than the staleness
limit (the monitor stopped, or Redis is gone) the socket sends a ``gpu.status`` again, so a page
left open shows the sample as stale instead of a frozen, healthy-looking one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async

from apps.accounts.models import SCOPE_GPU_READ
from apps.accounts.websocket import AuthenticatedJsonConsumer
from apps.gpu import services

GPU_GROUP = "gpu"


class GpuConsumer(AuthenticatedJsonConsumer):
    """Needs the ``gpu:read`` scope (4403 without it; 4401 without credentials)."""

    required_scope = SCOPE_GPU_READ
    _staleness: asyncio.Task[None] | None = None

    def groups_for(self, principal: Any) -> list[str]:
        return [GPU_GROUP]

    async def opened(self, principal: Any) -> None:
        self._last_frame = asyncio.get_running_loop().time()
        await self._send_status()
        self._staleness = asyncio.get_running_loop().create_task(self._watch_staleness())

    async def disconnect(self, code: int) -> None:
        if self._staleness is not None:
            self._staleness.cancel()
        await super().disconnect(code)

    async def gpu_update(self, event: dict[str, Any]) -> None:
        data = {**event["data"], **services.freshness(event["data"].get("sampled_at"), bool(event["data"]))}
        self._last_frame = asyncio.get_running_loop().time()
        await self.send_json({"type": "gpu.update", "data": data})

    async def _send_status(self) -> None:
        self._last_frame = asyncio.get_running_loop().time()
        await self.send_json({"type": "gpu.status", "data": await sync_to_async(services.status_payload)()})

    async def _watch_staleness(self) -> None:
        limit = services.stale_after()
        try:
            while True:
                await asyncio.sleep(limit)
                if asyncio.get_running_loop().time() - self._last_frame >= limit:
                    await self._send_status()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket closed meanwhile: nothing left to tell
            return
