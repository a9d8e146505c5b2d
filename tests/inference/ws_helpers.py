"""The status websocket (``/ws/tasks/``) as the tests drive it, on both databases.

A socket's opening and closing read and write from other threads (its own lookups; its
``ws.open``/``ws.close`` audit events, appended by the background writer), and a socket with queued
tasks reads their places from a thread when the queue moves. On the in-memory SQLite of the fast
suite those reads lock the tables a test's worker writes meanwhile ("database table is locked"):
``socket`` and ``close`` return once that work is done, and ``no_position_reads`` puts the places
off for tests that are not about them."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.inference import consumers
from medai.asgi import application
from tests.conftest import records_written


def no_position_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets read no places for the rest of the test (for a test's autouse fixture)."""
    monkeypatch.setattr(consumers, "POSITIONS_PAUSE", 3600.0)


async def socket(token: str) -> WebsocketCommunicator:
    """An open socket, once what its opening does in other threads is done (a message answered
    after its own lookups; its ``ws.open`` event written)."""
    ws = WebsocketCommunicator(application, "/ws/tasks/", subprotocols=["bearer", token])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from(timeout=5))["type"] == "hello"
    await ws.send_json_to({"hello": True})
    assert (await ws.receive_json_from(timeout=5))["type"] == "error"
    await sync_to_async(records_written)()
    return ws


async def close(ws: WebsocketCommunicator) -> None:
    await ws.disconnect()
    await sync_to_async(records_written)()  # its ``ws.close`` event


async def frames_until(ws: WebsocketCommunicator, done: Any, limit: int = 200) -> list[dict[str, Any]]:
    """The frames received up to and with the first that ``done`` accepts."""
    frames = []
    for _ in range(limit):
        frame = await ws.receive_json_from(timeout=10)
        frames.append(frame)
        if done(frame):
            return frames
    raise AssertionError(f"no final frame among {frames[-5:]}")
