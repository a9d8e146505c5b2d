"""``/ws/admin/dashboard/``: the dashboard's live figures (queue and GPUs), for staff admin pages.

Opened by the admin index page with the staff member's session (no token: ``accepts_session``;
the Origin is checked, apps/accounts/sessionauth.py). A JWT or an API key is refused 4403: the
figures follow the staff member's scope (``Scope.of(user)``), which only the admin knows. Frames:
``dashboard.live`` with ``queue`` and ``gpu`` on connect and every
``MEDAI_DASHBOARD_REFRESH_SECONDS``, and with ``gpu`` alone for each sample the monitor publishes
(the ``gpu`` group, every 2 s while it runs).
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from apps.accounts import sessionauth
from apps.accounts.models import SCOPE_GPU_READ, User
from apps.accounts.websocket import FORBIDDEN, AuthenticatedJsonConsumer
from apps.gpu.consumers import GPU_GROUP
from apps.inference import dashboard
from apps.inference.dashboard import figures


@database_sync_to_async
def _scope_of(user_id: int) -> figures.Scope:
    return figures.Scope.of(User.objects.select_related("organization").get(pk=user_id))


@database_sync_to_async
def _live(scope: figures.Scope) -> dict[str, Any]:
    return dashboard.live(scope)


def _gpu_only() -> dict[str, Any]:
    return {"at": timezone.now().isoformat(), "gpu": dashboard.live_gpu()}


class DashboardConsumer(AuthenticatedJsonConsumer):
    required_scope = SCOPE_GPU_READ
    accepts_session = True
    _refresh: asyncio.Task[None] | None = None

    @classmethod
    def refusal(cls, scope: dict[str, Any]) -> int | None:
        code = super().refusal(scope)
        if code is None and scope["principal"].method != sessionauth.METHOD:
            return FORBIDDEN  # the admin's page, not an API: its figures follow the admin's scope
        return code

    def groups_for(self, principal: Any) -> list[str]:
        return [GPU_GROUP]

    async def opened(self, principal: Any) -> None:
        self.figures_scope = await _scope_of(principal.user_id)
        await self._send_live()
        self._refresh = asyncio.get_running_loop().create_task(self._refresh_every())

    async def disconnect(self, code: int) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        await super().disconnect(code)

    async def gpu_update(self, event: dict[str, Any]) -> None:
        """A new GPU sample (the monitor's): the GPU figures again, from the shared state."""
        await self.send_json({"type": "dashboard.live", "data": await database_sync_to_async(_gpu_only)()})

    async def _send_live(self) -> None:
        await self.send_json({"type": "dashboard.live", "data": await _live(self.figures_scope)})

    async def _refresh_every(self) -> None:
        try:
            while True:
                await asyncio.sleep(settings.MEDAI_DASHBOARD_REFRESH_SECONDS)
                await self._send_live()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket closed meanwhile, or the database is gone
            await self.close_unavailable()
