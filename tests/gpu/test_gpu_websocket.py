"""``/ws/gpu/``: the current GPU status on connect, then the monitor's updates; 4401 without credentials."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from medai.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def test_without_credentials_the_socket_is_closed_4401():  # type: ignore[no-untyped-def]
    connected, code = await WebsocketCommunicator(application, "/ws/gpu/").connect()
    assert not connected and code == 4401


async def test_status_on_connect_then_live_updates_labelled_simulated(alice, token_for, fresh_view):  # type: ignore[no-untyped-def]
    monitor = Monitor(SimulatedProvider(), supervise=False)
    await sync_to_async(monitor.sample)()
    token = await sync_to_async(token_for)(alice)
    communicator = WebsocketCommunicator(application, f"/ws/gpu/?token={token}")
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from(timeout=5)
    assert first["type"] == "gpu.status" and first["data"]["simulated"] is True
    assert first["data"]["pressure_level"] == "LOW"
    monitor.pushed = None  # force a push even though nothing changed
    await sync_to_async(monitor.sample)()
    update = await communicator.receive_json_from(timeout=5)
    assert update["type"] == "gpu.update" and update["data"]["simulated"] is True
    assert update["data"]["policy"]["level"] == "LOW" and update["data"]["gpus"][0]["simulated"] is True
    await communicator.disconnect()
