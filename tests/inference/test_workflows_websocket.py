"""A workflow run's progress over the status websocket: its owner (and a socket subscribed to the
run) hears a ``workflow.update`` with every step's status when the run starts, when a stage is
queued and when it ends, and the steps' own ``task.update`` frames in between. Only those who may
read the run may subscribe to it."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.models import User
from apps.inference import consumers
from apps.inference.workflows import runs
from medai.asgi import application
from tests.conftest import _user, records_written, register_model
from tests.inference.batch_helpers import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_position_reads(monkeypatch):
    """A socket with queued tasks reads their places from another thread when the queue moves; on
    the in-memory SQLite of the fast suite that read locks the tables the worker, run by this test
    meanwhile, writes ("table is locked"). Places are not what these tests are about: put them off."""
    monkeypatch.setattr(consumers, "POSITIONS_PAUSE", 3600.0)


async def _socket(token: str) -> WebsocketCommunicator:
    """A socket, once what its opening reads and writes from other threads is done (the in-memory
    SQLite of the fast suite locks tables across threads): its own lookups (a message answered
    after them), its ``ws.open`` audit event (the background writer)."""
    ws = WebsocketCommunicator(application, "/ws/tasks/", subprotocols=["bearer", token])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from(timeout=5))["type"] == "hello"
    await ws.send_json_to({"hello": True})
    assert (await ws.receive_json_from(timeout=5))["type"] == "error"
    await sync_to_async(records_written)()
    return ws


async def _close(ws: WebsocketCommunicator) -> None:
    await ws.disconnect()
    await sync_to_async(records_written)()  # its ``ws.close`` event


async def _until(ws: WebsocketCommunicator, done: Any, limit: int = 200) -> list[dict[str, Any]]:
    frames = []
    for _ in range(limit):
        frame = await ws.receive_json_from(timeout=10)
        frames.append(frame)
        if done(frame):
            return frames
    raise AssertionError(f"no final frame among {frames[-5:]}")


def _start(client_for: Any, alice: User, stub_backend: str) -> str:
    register_model("stub-a", stub_backend, agents=("Clinical", "Documentation", "Billing"))
    runs.ensure_discharge_summary()
    response = client_for(alice).post(
        "/v1/workflows/discharge-summary/runs", {"document": "Mrs. Garcia, chest pain"}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _final(frame: dict[str, Any]) -> bool:
    return frame["type"] == "workflow.update" and frame["data"]["status"] == "completed"


async def test_the_owner_hears_each_stage_and_the_end_with_every_steps_status(
    alice, stub_backend, client_for, token_for
):
    ws = await _socket(await sync_to_async(token_for)(alice))
    run_id = await sync_to_async(_start)(client_for, alice, stub_backend)
    await sync_to_async(run_worker)()
    frames = await _until(ws, _final)
    await _close(ws)
    runs_frames = [f["data"] for f in frames if f["type"] == "workflow.update"]
    assert {d["id"] for d in runs_frames} == {run_id}
    first, last = runs_frames[0], runs_frames[-1]
    assert first["status"] == "queued" and {s["name"]: s["status"] for s in first["steps"]} == {
        "clinical": "queued",
        "documentation": "queued",
        "billing": "queued",
        "merge": "pending",
    }
    assert any(d["stage"] == 1 and d["status"] == "running" for d in runs_frames)  # the merge queued
    assert {s["status"] for s in last["steps"]} == {"completed"}
    assert all(s["duration_ms"] is not None for s in last["steps"])
    assert "Garcia" not in str(frames)  # no content over the socket (the document, the outputs)
    steps_done = [f for f in frames if f["type"] == "task.update" and f["data"]["status"] == "completed"]
    assert len(steps_done) == 4


async def test_only_those_who_may_read_the_run_may_subscribe_to_it(
    alice, bob, stub_backend, client_for, token_for, org, demo
):
    def setup() -> tuple[str, dict[str, str]]:
        dana = _user("dana", User.Role.ADMIN, org, demo)
        return _start(client_for, alice, stub_backend), {u.username: token_for(u) for u in (bob, dana)}

    run_id, tokens = await sync_to_async(setup)()
    for name, token in tokens.items():
        ws = await _socket(token)
        await ws.send_json_to({"subscribe": {"workflow_run": run_id}})
        answer = await ws.receive_json_from(timeout=5)
        if name == "bob":
            assert answer["type"] == "error" and answer["data"]["code"] == "workflow_run_not_found"
            await _close(ws)
            continue
        assert answer == {"type": "subscribed", "data": {"workflow_run": run_id}}
        await sync_to_async(run_worker)()
        frames = await _until(ws, _final)  # the location admin follows the run they may read
        assert any(f["type"] == "task.update" for f in frames)
        await _close(ws)
