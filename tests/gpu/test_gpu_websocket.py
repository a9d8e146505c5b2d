"""``/ws/gpu/``: the current GPU status on connect, then the monitor's updates; 4401 without credentials,
4403 without the read scope."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from medai.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def test_without_credentials_the_socket_is_closed_4401():
    communicator = WebsocketCommunicator(application, "/ws/gpu/")
    connected, _ = await communicator.connect()
    assert connected  # the handshake completes, then the close carries the reason
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_a_credential_without_the_gpu_read_scope_is_closed_4403(alice, api_key_for):
    key = await sync_to_async(api_key_for)(alice, scopes=["chat"])
    communicator = WebsocketCommunicator(application, "/ws/gpu/", subprotocols=["bearer", key])
    connected, subprotocol = await communicator.connect()
    assert connected and subprotocol == "bearer"
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4403}


async def test_status_on_connect_then_live_updates_labelled_simulated(alice, token_for, fresh_view):
    monitor = Monitor(SimulatedProvider(), supervise=False)
    await sync_to_async(monitor.sample)()
    token = await sync_to_async(token_for)(alice)
    communicator = WebsocketCommunicator(application, f"/ws/gpu/?token={token}")
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from(timeout=5)
    assert first["type"] == "gpu.status" and first["data"]["simulated"] is True
    assert (first["data"]["stale"], first["data"]["monitor_running"]) == (False, True)
    assert first["data"]["pressure_level"] == "LOW"
    monitor.pushed = None  # force a push even though nothing changed
    await sync_to_async(monitor.sample)()
    update = await communicator.receive_json_from(timeout=5)
    assert update["type"] == "gpu.update" and update["data"]["simulated"] is True
    assert update["data"]["stale"] is False and update["data"]["age_seconds"] is not None
    assert update["data"]["policy"]["level"] == "LOW" and update["data"]["gpus"][0]["simulated"] is True
    await communicator.disconnect()


async def test_when_the_monitor_stops_publishing_the_socket_says_the_sample_is_stale(
    alice, token_for, fresh_view, settings
):
    settings.MEDAI_GPU_STALE_AFTER = 0.5
    await sync_to_async(Monitor(SimulatedProvider(), supervise=False).sample)()  # one sample, then silence
    token = await sync_to_async(token_for)(alice)
    communicator = WebsocketCommunicator(application, "/ws/gpu/", subprotocols=["bearer", token])
    assert (await communicator.connect())[0]
    first = await communicator.receive_json_from(timeout=5)
    assert first["type"] == "gpu.status"
    again = await communicator.receive_json_from(timeout=5)  # no update came: the status again, stale
    assert again["type"] == "gpu.status"
    assert (again["data"]["stale"], again["data"]["monitor_running"]) == (True, False)
    assert again["data"]["age_seconds"] >= 0.5
    await communicator.disconnect()
