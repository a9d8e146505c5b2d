"""``/ws/tasks/`` (the same consumer as ``/ws/status/``): a task's events are sent when its change
commits, never for a rolled-back one; each carries what a live list shows (``changed_at``, a queued
task's place, its batch's counts), and the places of the user's queued tasks follow the queue."""

from __future__ import annotations

from datetime import datetime

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from medai.asgi import application
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)

ASK = {"agent_type": "Chat", "max_tokens": 4}


class Rollback(Exception):
    pass


def _principal(token: str):
    from apps.accounts.services import authenticate_header

    return authenticate_header(f"Bearer {token}")


def _models(backend: str) -> None:
    register_model("stub-a", backend)
    register_model("stub-b", backend, agents=("Other",))


def _submit(token: str, text: str, *, rollback: bool = False, agent_type: str = "Chat") -> str:
    from apps.inference import push, queue

    try:
        with transaction.atomic():
            task = queue.submit_task(
                _principal(token), {**ASK, "agent_type": agent_type, "messages": [{"role": "user", "content": text}]}
            ).task
            if rollback:
                raise Rollback
    except Rollback:
        pass
    assert push.flush(5)
    return str(task.id)


def _cancel(token: str, task_id: str, *, rollback: bool = False) -> None:
    from apps.inference import push, queue
    from apps.inference.models import InferenceTask

    try:
        with transaction.atomic():
            queue.cancel_task(_principal(token), InferenceTask.objects.get(id=task_id))
            if rollback:
                raise Rollback
    except Rollback:
        pass
    assert push.flush(5)


def _batch(token: str, n: int) -> tuple[str, list[str]]:
    from apps.inference import push, queue

    batch, tasks = queue.submit_batch(
        _principal(token), [{**ASK, "messages": [{"role": "user", "content": f"item {i}"}]} for i in range(n)]
    )
    assert push.flush(5)
    return str(batch.id), [str(t.id) for t in tasks]


def _run(task_id: str) -> str:
    from apps.inference import push, queue

    outcome = queue.run_task(task_id)
    assert push.flush(5)
    return outcome


async def _open(token: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/ws/tasks/", subprotocols=["bearer", token])
    connected, subprotocol = await ws.connect()
    assert connected and subprotocol == "bearer"
    assert (await ws.receive_json_from())["type"] == "hello"
    return ws


async def _frames(ws: WebsocketCommunicator, quiet: float = 0.8) -> list[dict]:
    frames = []
    while not await ws.receive_nothing(timeout=quiet):
        frames.append(await ws.receive_json_from())
    return frames


async def test_a_rolled_back_submit_or_cancel_sends_nothing_a_committed_one_does(alice, token_for):
    token = await sync_to_async(token_for)(alice)
    await sync_to_async(_models)("http://127.0.0.1:9/v1")
    ws = await _open(token)
    await sync_to_async(_submit)(token, "never happened", rollback=True)
    assert await _frames(ws) == []

    before = datetime.now().astimezone()
    task_id = await sync_to_async(_submit)(token, "What is a normal INR?")
    [frame] = await _frames(ws)
    after = datetime.now().astimezone()
    assert frame["type"] == "task.update"
    data = frame["data"]
    assert (data["task_id"], data["status"], data["position"], data["priority"], data["agent_type"]) == (
        task_id,
        "queued",
        1,
        "normal",
        "Chat",
    )
    assert before <= datetime.fromisoformat(data["changed_at"]) <= after  # the server's time of the commit

    await sync_to_async(_cancel)(token, task_id, rollback=True)
    assert await _frames(ws) == []
    await sync_to_async(_cancel)(token, task_id)
    assert [(f["data"]["task_id"], f["data"]["status"], f["data"]["position"]) for f in await _frames(ws)] == [
        (task_id, "cancelled", None)
    ]
    await ws.disconnect()


async def test_each_update_of_a_batch_carries_its_progress(alice, token_for, stub_backend):
    token = await sync_to_async(token_for)(alice)
    await sync_to_async(_models)(stub_backend)
    ws = await _open(token)
    batch_id, task_ids = await sync_to_async(_batch)(token, 3)
    queued = await _frames(ws)
    assert [f["data"]["position"] for f in queued] == [1, 2, 3]
    assert all(f["data"]["batch"]["queued"] == 3 and f["data"]["batch"]["total"] == 3 for f in queued)
    assert await sync_to_async(_run)(task_ids[0]) == "completed"  # its companions run with it (collation)
    frames = [f for f in await _frames(ws) if f["type"] == "task.update"]
    assert sorted(f["data"]["status"] for f in frames) == ["completed"] * 3 + ["processing"] * 3
    for f in frames:
        counts = f["data"]["batch"]
        assert f["data"]["batch_id"] == batch_id
        assert counts["queued"] + counts["processing"] + counts["completed"] == 3
    last = frames[-1]["data"]["batch"]
    assert (last["completed"], last["progress_percent"]) == (3, 100.0)
    await ws.disconnect()


async def test_the_places_of_queued_tasks_follow_the_queue(alice, token_for, stub_backend):
    token = await sync_to_async(token_for)(alice)
    await sync_to_async(_models)(stub_backend)
    first = await sync_to_async(_submit)(token, "first", agent_type="Chat")
    second = await sync_to_async(_submit)(token, "second", agent_type="Other")  # another model: not collated
    ws = await _open(token)  # opened with queued tasks: it listens to the queue at once
    assert await sync_to_async(_run)(first) == "completed"
    frames = await _frames(ws)
    updates = [(f["data"]["task_id"], f["data"]["status"]) for f in frames if f["type"] == "task.update"]
    assert updates == [(first, "processing"), (first, "completed")]
    places = [f["data"] for f in frames if f["type"] == "task.positions"]
    assert places and places[-1]["positions"] == {second: 1}
    datetime.fromisoformat(places[-1]["changed_at"])
    await ws.disconnect()


async def test_another_users_queue_moving_tells_this_socket_its_new_place(alice, bob, token_for, stub_backend):
    alice_token, bob_token = await sync_to_async(token_for)(alice), await sync_to_async(token_for)(bob)
    await sync_to_async(_models)(stub_backend)
    bobs = await sync_to_async(_submit)(bob_token, "bob first", agent_type="Other")
    alices = await sync_to_async(_submit)(alice_token, "alice second", agent_type="Chat")
    ws = await _open(alice_token)
    assert await sync_to_async(_run)(bobs) == "completed"
    frames = await _frames(ws)
    assert not [f for f in frames if f["type"] == "task.update"]  # bob's task is not alice's to see
    assert [f["data"]["positions"] for f in frames if f["type"] == "task.positions"] == [{alices: 1}]
    await ws.disconnect()
