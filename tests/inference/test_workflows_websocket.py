"""A workflow run's progress over the status websocket: its owner (and a socket subscribed to the
run) hears a ``workflow.update`` with every step's status when the run starts, when a stage is
queued and when it ends, and the steps' own ``task.update`` frames in between. Only those who may
read the run may subscribe to it."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from apps.accounts.models import User
from apps.inference.workflows import runs
from tests.conftest import _user, register_model
from tests.inference.batch_helpers import run_worker
from tests.inference.ws_helpers import close as _close
from tests.inference.ws_helpers import frames_until as _until
from tests.inference.ws_helpers import no_position_reads
from tests.inference.ws_helpers import socket as _socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_position_reads(monkeypatch):
    no_position_reads(monkeypatch)  # places are not what these tests are about


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
